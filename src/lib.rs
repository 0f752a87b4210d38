//! callbackd — an embedded SIP/RTP engine for contact-center callbacks.
//!
//! A carrier's SIP trunk points at callbackd. It answers the call, plays
//! prompts over G.711 RTP, offers a callback instead of waiting on hold,
//! collects a number over RFC 4733 DTMF, stores the request durably and later
//! calls agent and customer back and bridges them.
//!
//! # Layers
//!
//! Dependencies point down only. Everything above `engine` is *sans-IO*: it
//! never reads a clock, never touches a socket and never spawns a task. Time
//! comes in as an argument (`now: Instant`), bytes come in through `handle_*`
//! and leave through `poll_*`, which the caller drains until `None`.
//!
//! | module | owns | IO / clock |
//! |---|---|---|
//! | [`config`] | TOML schema, defaults, validation with field-level errors | reads the file |
//! | [`acl`] | CIDR allow-lists for signalling and media | pure |
//! | [`sip`] | messages (rsip wrapped), SDP offer/answer, the four RFC 3261/6026 transaction machines, dialogs, session timers, the endpoint (UAS and UAC), digest auth, registrar | sans-IO |
//! | [`media`] | G.711, RTP/RTCP, DTMF (RFC 4733, in-band, merged with SIP INFO), prompts (WAV → 8 kHz → pre-encoded frames), paced playback, the relay bridge, recorder, RTP port pool | sans-IO |
//! | [`ivr`] | the caller's registration flow as a pure state machine; the ECBT estimator | pure |
//! | [`callback`] | callback domain: validated numbers, business-hours gates, the durable store, the launch scheduler, one agent-first attempt (dialer), trunk dialing rules, CDRs | store only |
//! | [`acd`] | queues (order: priority, then original entry time; positions) and agents | pure |
//! | [`engine`] | tokio shell: SIP over UDP/TCP, the media thread (one pacing clock for every stream), the store thread, the agent roster, call orchestration (IVR calls, callback dialing) | all IO lives here |
//! | [`api`] | admin HTTP API (axum): health, statistics, runtime gates, stored callbacks, Prometheus metrics | HTTP |
//!
//! The binary (`src/main.rs`) is a thin CLI over [`engine`] and [`config`].
#![forbid(unsafe_code)]

pub mod acd;
pub mod acl;
pub mod api;
pub mod b2bua;
pub mod callback;
pub mod config;
pub mod engine;
pub mod ivr;
pub mod media;
pub mod sip;
