//! SIP (RFC 3261 and friends), sans-IO.

pub mod dialog;
pub mod message;
pub mod session_timer;
