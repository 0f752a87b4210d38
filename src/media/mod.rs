//! Media, sans-IO: G.711, RTP, RFC 4733 DTMF, prompts and paced playback.

pub mod g711;
pub mod player;
pub mod prompt;
