//! SIP (RFC 3261 and friends), sans-IO.
pub mod sdp;
