//! cargo-fuzz target; the property is `fuzz/properties/webhook_signature.rs`,
//! which `tests/fuzz_smoke.rs` also runs over the seeds and their mutations.
#![no_main]

#[path = "../properties/webhook_signature.rs"]
mod property;

libfuzzer_sys::fuzz_target!(|data: &[u8]| property::check(data));
