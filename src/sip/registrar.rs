//! REGISTER handling (RFC 3261 §10.3), sans-IO.
