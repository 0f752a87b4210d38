//! Media, sans-IO: G.711, RTP, RFC 4733 DTMF, prompts and paced playback.
//!
//! - [`g711`] — µ-law/A-law.
//! - [`rtp`] — RTP packet view and writer, the send-side sequence/timestamp.
//! - [`dtmf`] — RFC 4733 telephone-event receiver and sender.
//! - [`digits`] — one call's digits merged from RFC 4733, SIP INFO and in-band.
//! - [`inband`] — in-band DTMF detection (Goertzel) in G.711 audio.
//! - [`latch`] — which source a stream listens to (symmetric RTP latching).
//! - [`prompt`] — WAV prompts loaded once, resampled to 8 kHz, pre-encoded.
//! - [`player`] — per-call playback state driven by the shared pacing clock.
//! - [`ports`] — the RTP port pool.
//! - [`bridge`] — the RTP relay between two bridged legs (rewrite, remap, transcode).
//! - [`rtcp`] — RTCP SR/RR, terminated per leg.
//! - [`recorder`] — a bridged call as a stereo WAV.

pub mod bridge;
pub mod digits;
pub mod dtmf;
pub mod g711;
pub mod inband;
pub mod latch;
pub mod player;
pub mod ports;
pub mod prompt;
pub mod recorder;
pub mod rtcp;
pub mod rtp;
