//! Durable registrations: how many callback registrations per second the
//! store commits, and each commit's latency, against a reference measured
//! beside it in the same run.
//!
//! - `ours`: [`Store::register`] on a [`SqliteStore`] file (WAL,
//!   `synchronous=FULL`: the caller hears "scheduled" only after this
//!   returns), one registration per transaction, one after the other, as
//!   the store thread commits them.
//! - `reference`: the floor on the same disk — one bare SQLite connection in
//!   the same directory, same pragmas, one 2-column row per transaction.
//!
//! The store file lives under `--dir` (default `target/bench-load`), on the
//! disk the engine would use: not `/dev/shm`, where an fsync costs nothing.
//! Run: `cargo bench --bench store -- [--count N] [--dir DIR]`; prints one
//! `result mode=registrations …` line (scripts/bench-load parses it).
//! Under `cargo test` it runs nothing; `--smoke` is a short run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use callbackd::callback::QueueId;
use callbackd::callback::store::{NewCallback, Registration, SqliteStore, Store};
use jiff::Timestamp;

struct Args {
    count: usize,
    dir: PathBuf,
}

fn parse_args() -> Result<Option<Args>, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let smoke = argv.iter().any(|a| a == "--smoke");
    if !smoke && !argv.iter().any(|a| a == "--bench") {
        return Ok(None);
    }
    let mut args = Args {
        count: if smoke { 200 } else { 3_000 },
        dir: PathBuf::from("target/bench-load"),
    };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" | "--smoke" => {}
            "--count" => {
                let v = it.next().ok_or("--count needs a value")?;
                args.count = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("--count: not a positive integer: {v}"))?;
            }
            "--dir" => args.dir = it.next().ok_or("--dir needs a value")?.into(),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("store bench: not run under cargo test; run `cargo bench --bench store`");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("store bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let ours_path = args.dir.join("registrations.sqlite");
    let ref_path = args.dir.join("reference.sqlite");
    for p in [&ours_path, &ref_path] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
        }
    }

    let mut store = SqliteStore::open(&ours_path).map_err(|e| format!("open store: {e}"))?;
    let reference = rusqlite::Connection::open(&ref_path).map_err(|e| e.to_string())?;
    reference
        .pragma_update(None, "journal_mode", "WAL")
        .and_then(|_| reference.pragma_update(None, "synchronous", "FULL"))
        .and_then(|_| {
            reference.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, number TEXT)")
        })
        .map_err(|e| e.to_string())?;

    // Interleaved in rounds of 100, so drift on a busy machine hits both.
    let mut ours = Vec::with_capacity(args.count);
    let mut refs = Vec::with_capacity(args.count);
    let now = Timestamp::now();
    let (mut ours_total, mut ref_total) = (Duration::ZERO, Duration::ZERO);
    let mut i = 0;
    while i < args.count {
        let end = (i + 100).min(args.count);
        let t = Instant::now();
        for n in i..end {
            let new = registration(n, now);
            let t0 = Instant::now();
            match store.register(&new) {
                Ok(Registration::Registered { .. }) => {}
                Ok(other) => return Err(format!("registration {n}: {other:?}")),
                Err(e) => return Err(format!("registration {n}: {e}")),
            }
            ours.push(t0.elapsed());
        }
        ours_total += t.elapsed();
        let t = Instant::now();
        for n in i..end {
            let t0 = Instant::now();
            reference
                .execute("INSERT INTO t (number) VALUES (?1)", [format!("312{n:07}")])
                .map_err(|e| e.to_string())?;
            refs.push(t0.elapsed());
        }
        ref_total += t.elapsed();
        i = end;
    }
    let listed = store.list().map_err(|e| e.to_string())?.len();
    if listed != args.count {
        return Err(format!(
            "{listed} callbacks stored, {} registered",
            args.count
        ));
    }
    let per_s = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "result mode=registrations commits={} per_s={:.0} p50_us={} p99_us={} max_us={} \
         ref_per_s={:.0} ref_p50_us={} ref_p99_us={}",
        args.count,
        per_s(args.count, ours_total),
        percentile_us(&mut ours, 0.50),
        percentile_us(&mut ours, 0.99),
        percentile_us(&mut ours, 1.0),
        per_s(args.count, ref_total),
        percentile_us(&mut refs, 0.50),
        percentile_us(&mut refs, 0.99),
    );
    Ok(())
}

/// The `n`th registration: its own number (the store refuses a second
/// pending callback for the same number and queue).
fn registration(n: usize, now: Timestamp) -> NewCallback {
    NewCallback {
        queue: QueueId("support".into()),
        number: format!("312{n:07}"),
        caller_ani: format!("+1312{n:07}"),
        called_number: "8005550199".to_owned(),
        priority: 5,
        queued_at: now,
        registered_at: now,
        ecbt_quoted_minutes: 12,
        expires_at: now + jiff::SignedDuration::from_hours(8),
        inbound_call_id: format!("bench-{n}@127.0.0.1"),
        sip_context: None,
    }
}

/// The `q` quantile (nearest rank) in whole microseconds.
fn percentile_us(samples: &mut [Duration], q: f64) -> u128 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1].as_micros()
}
