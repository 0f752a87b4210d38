//! cargo-fuzz target; the property is `fuzz/properties/api_cursor.rs`, which
//! `tests/fuzz_smoke.rs` also runs over the seeds and their mutations.
#![no_main]

#[path = "../properties/api_cursor.rs"]
mod property;

libfuzzer_sys::fuzz_target!(|data: &[u8]| property::check(data));
