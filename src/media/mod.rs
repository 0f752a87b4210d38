//! Media, sans-IO: G.711, RTP, RFC 4733 DTMF, prompts and paced playback.

pub mod dtmf;
pub mod g711;
pub mod ports;
pub mod rtp;
