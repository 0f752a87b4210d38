//! callbackd — an embedded SIP/RTP engine for contact-center callbacks.
//!
//! A carrier's SIP trunk points at callbackd. It answers the call, plays
//! prompts over G.711 RTP, offers a callback instead of waiting on hold,
//! collects a number over RFC 4733 DTMF, stores the request durably and later
//! calls agent and customer back and bridges them.
//!
//! # Layers
//!
//! Dependencies point down only: a module uses only the modules in the rows
//! below its own (`tests/layers.rs` checks every `crate::` path outside test
//! modules). Everything below `engine` is *sans-IO*: it never reads a clock,
//! never touches a socket and never spawns a task. Time comes in as an
//! argument (`now: Instant`), bytes come in through `handle_*` and leave
//! through `poll_*`, which the caller drains until `None`.
//!
//! | module | owns | IO / clock |
//! |---|---|---|
//! | [`api`] | admin HTTP API (axum): health, statistics, runtime gates, stored callbacks, webhook subscriptions, Prometheus metrics; the web console at `/` ([`api::console`]: server-rendered pages, sign-in sessions, htmx embedded) | HTTP |
//! | [`engine`] | tokio shell: SIP over UDP/TCP, the media thread (one pacing clock for every stream, binds the ports the controller allocates), the store thread, DNS, the webhook delivery worker, the clock; reads inputs, feeds the controller, carries out its outputs | all IO lives here |
//! | [`b2bua`] | the call controller: inbound calls and their IVR, outbound legs, agents and their REGISTERs, bridging, callbacks, live callers — `handle_*(now, …)`, then `poll_transmit` / `poll_media` / `poll_store` / `poll_timeout` (tested on a fake clock in `tests/controller.rs`) | sans-IO |
//! | [`config`] | TOML schema, defaults, validation with field-level errors; converts sections into the settings types of the layers below; read by `engine`, `api`, `b2bua` and the binary | reads the file |
//! | [`acd`] | queues (order: priority, then original entry time; positions) and agents | pure |
//! | [`callback`] | callback domain: business-hours gates, the durable store (with the webhooks' outbox), the launch scheduler, one agent-first attempt (dialer), trunk dialing rules, CDRs | store only |
//! | [`ivr`] | the caller's registration flow as a pure state machine; the ECBT estimator | pure |
//! | [`sip`] | messages (our own tokenizer), SDP offer/answer, the four RFC 3261/6026 transaction machines, dialogs, session timers, the endpoint (UAS and UAC), digest auth, registrar | sans-IO |
//! | [`media`] | G.711, RTP/RTCP, DTMF (RFC 4733, in-band, merged with SIP INFO), prompts (WAV → 8 kHz → pre-encoded frames), paced playback, the relay bridge, recorder, RTP port pool | sans-IO |
//! | [`acl`] | CIDR allow-lists for signalling and media | pure |
//! | [`domain`] | the shared vocabulary: queue, callback and caller ids, validated phone numbers | pure |
//!
//! The binary (`src/main.rs`) is a thin CLI over [`engine`] and [`config`].
#![deny(unsafe_code)]

pub mod acd;
pub mod acl;
pub mod api;
pub mod b2bua;
pub mod callback;
pub mod config;
pub mod domain;
pub mod engine;
pub mod ivr;
pub mod media;
pub mod sip;
