//! The short fuzz run of `.ci/run`: every cargo-fuzz target's property
//! (`fuzz/properties/`) over its committed seeds (`fuzz/corpus/<target>/seed-*`)
//! and a bounded number of mutations of them — bit flips, bytes SIP and SDP
//! parsers care about, insertions, deletions, repeats, truncations and
//! splices of two seeds. No sanitizer and no coverage feedback: this is what
//! a 10-minute `scripts/fuzz.sh` run does in depth, cut down to a few
//! seconds so that a broken property fails every CI run, not only the
//! fuzzing done by hand.
//!
//! `FUZZ_SMOKE_SEED` (default 1) varies the mutations, `FUZZ_SMOKE_RUNS`
//! (default 20,000 per target) their number. A failing input is written to
//! `target/fuzz-smoke/<target>-<n>` and named in the failure, ready for
//! `cargo fuzz run <target> <file>`.

#[path = "../fuzz/properties/mod.rs"]
#[allow(dead_code)]
mod properties;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

type Check = fn(&[u8]);

/// Every target of `fuzz/Cargo.toml`, with its property.
const TARGETS: &[(&str, Check)] = &[
    ("api_cursor", properties::api_cursor::check),
    ("api_token", properties::api_token::check),
    ("digest", properties::digest::check),
    ("inband", properties::inband::check),
    ("info_dtmf", properties::info_dtmf::check),
    ("rtcp", properties::rtcp::check),
    ("rtp", properties::rtp::check),
    ("sdp", properties::sdp::check),
    ("sip_message", properties::sip_message::check),
    ("sip_uri", properties::sip_uri::check),
    ("telephone_event", properties::telephone_event::check),
    ("webhook_signature", properties::webhook_signature::check),
];

/// Longest input a mutation may grow to (libFuzzer's default -max_len is
/// 4096 for a corpus of small seeds).
const MAX_LEN: usize = 8192;

/// Bytes the text parsers branch on.
const INTERESTING: &[u8] = b"\r\n\t :;,<>\"'=@/\\%?&[]0\x00\xff\x7f";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The committed seeds of `target`, in name order.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("fuzz/corpus").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("seed-"))
        .map(|entry| {
            let bytes = std::fs::read(entry.path())
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            (entry.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    seeds.sort();
    seeds
}

/// One to four random edits of `input`, `other` the splice partner.
fn mutate(rng: &mut fastrand::Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let len = data.len();
        match rng.u8(0..8) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                data[i] ^= 1 << rng.u8(0..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                data[i] = INTERESTING[rng.usize(..INTERESTING.len())];
            }
            2 => {
                let i = rng.usize(..=len);
                let byte = if rng.bool() {
                    INTERESTING[rng.usize(..INTERESTING.len())]
                } else {
                    rng.u8(..)
                };
                data.insert(i, byte);
            }
            3 if len > 0 => {
                let start = rng.usize(..len);
                let end = rng.usize(start..=len.min(start + 16));
                data.drain(start..end);
            }
            4 if len > 0 => {
                // Repeat a run: long lines, many headers, deep lists.
                let start = rng.usize(..len);
                let end = rng.usize(start..=len.min(start + 64));
                let run = data[start..end].to_vec();
                for _ in 0..rng.usize(1..=8) {
                    data.splice(end..end, run.iter().copied());
                }
            }
            5 => data.truncate(rng.usize(..=len)),
            6 if !other.is_empty() => {
                let cut = rng.usize(..=len);
                let from = rng.usize(..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                let i = rng.usize(..=len);
                let n = rng.usize(1..=8);
                data.splice(i..i, std::iter::repeat_with(|| rng.u8(..)).take(n));
            }
        }
        data.truncate(MAX_LEN);
    }
    data
}

/// Runs `check` on `data`; a panic is written out and reported.
fn run_one(target: &str, check: Check, n: u64, what: &str, data: &[u8]) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| check(data))) {
        Ok(()) => Ok(()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            let dir = repo().join("target/fuzz-smoke");
            let file: PathBuf = dir.join(format!("{target}-{n}"));
            let saved = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&file, data))
                .map(|()| file.display().to_string())
                .unwrap_or_else(|e| format!("(not saved: {e})"));
            Err(format!(
                "{target}: {what} broke the property: {message}\n  input saved to {saved} \
                 (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {saved})\n  bytes: {:?}",
                String::from_utf8_lossy(data)
            ))
        }
    }
}

#[test]
fn every_fuzz_target_holds_on_its_seeds_and_their_mutations() {
    let seed = env_number("FUZZ_SMOKE_SEED", 1);
    let runs = env_number("FUZZ_SMOKE_RUNS", 20_000);
    // The failures are reported below, with their inputs.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut checked = 0u64;
    for &(target, check) in TARGETS {
        let seeds = seeds(target);
        assert!(
            !seeds.is_empty(),
            "{target}: no fuzz/corpus/{target}/seed-* file"
        );
        let mut rng = fastrand::Rng::with_seed(seed);
        for (name, bytes) in &seeds {
            if let Err(e) = run_one(target, check, 0, &format!("seed {name}"), bytes) {
                failures.push(e);
            }
        }
        for n in 1..=runs {
            let (name, input) = &seeds[rng.usize(..seeds.len())];
            let other = &seeds[rng.usize(..seeds.len())].1;
            let data = mutate(&mut rng, input, other);
            let what = format!("mutation {n} of seed {name} (FUZZ_SMOKE_SEED={seed})");
            if let Err(e) = run_one(target, check, n, &what, &data) {
                failures.push(e);
                // One failure per target tells enough.
                break;
            }
            checked += 1;
        }
    }
    let _ = std::panic::take_hook();
    assert!(
        failures.is_empty(),
        "{} failures over {} targets:\n{}",
        failures.len(),
        TARGETS.len(),
        failures.join("\n")
    );
    assert!(checked >= runs * TARGETS.len() as u64, "every mutation ran");
}

/// Every target of `fuzz/Cargo.toml` is in [`TARGETS`]: a new fuzz target
/// gets its short run too.
#[test]
fn the_short_run_covers_every_fuzz_target() {
    let manifest =
        std::fs::read_to_string(repo().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut declared: Vec<&str> = manifest
        .lines()
        .filter_map(|line| line.strip_prefix("name = \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .filter(|name| *name != "callbackd-fuzz")
        .collect();
    declared.sort_unstable();
    let covered: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(declared, covered);
}
