//! SIP (RFC 3261 and friends), sans-IO.
//!
//! - [`message`] — parsing (our own tokenizer; URIs and name-addrs; bodies,
//!   multipart included) and building of requests and responses.
//! - [`framing`] — cutting messages out of a TCP byte stream.
//! - [`transaction`] — the four RFC 3261/6026 transaction machines and the
//!   UAS's 2xx retransmission.
//! - [`dialog`] — dialogs, route sets, in-dialog requests.
//! - [`sdp`] — SDP parsing and RFC 3264 offer/answer.
//! - [`session_timer`] — RFC 4028 session timers.
//! - [`endpoint`] — matching, stateless answers, calls as UAS and UAC (one
//!   state machine per role, split into files by role).
//! - [`uac`] — outbound calls: what the application passes, the state of
//!   the INVITE until its final, the INVITE and what derives from it.
//! - [`digest`] — HTTP Digest authentication (RFC 2617/7616/8760): answering
//!   challenges, issuing and verifying them.
//! - [`identity`] — the caller's number: P-Asserted-Identity from trusted
//!   sources, Privacy, anonymous From, Diversion / History-Info.
//! - [`registrar`] — REGISTER handling (RFC 3261 §10.3): bindings per user,
//!   with the source address kept for NAT.

pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod framing;
pub mod identity;
pub mod message;
pub mod registrar;
pub mod sdp;
pub mod session_timer;
pub mod transaction;
pub mod uac;
