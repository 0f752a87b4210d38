//! The fuzz targets' properties, one module per target of
//! `fuzz/Cargo.toml`: `check(data)` panics when `data` breaks the property.
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and the short
//! run in `tests/fuzz_smoke.rs`.

pub mod api_cursor;
pub mod api_token;
pub mod digest;
pub mod inband;
pub mod info_dtmf;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod sip_message;
pub mod sip_uri;
pub mod telephone_event;
pub mod webhook_signature;
