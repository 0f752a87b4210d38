//! SIP (RFC 3261 and friends), sans-IO.
//!
//! - [`message`]: parsing (rsip wrapped, its defects worked around) and
//!   building of requests and responses.
//! - [`framing`]: cutting messages out of a TCP byte stream.
//! - [`dialog`]: dialogs, route sets, in-dialog requests.
//! - [`session_timer`]: RFC 4028 session timers.

pub mod dialog;
pub mod framing;
pub mod message;
pub mod session_timer;
