//! Acceptance 4 of issue 9: one call never hears another, through a storm of
//! `kill -9`s.
//!
//! sipp callers (`storm_caller.xml`) register callbacks, each keying its own
//! number (`play_dtmf="[field1]"` from `-inf`: 1, the number, 1). Meanwhile
//! the release `callbackd` is killed with SIGKILL at random moments and
//! started again at once on the same store: the killed engine's callers keep
//! keying into ports the new engine hands out again. Afterwards:
//!
//! - every caller who **heard "registered"** has its row, under its number
//!   and its Call-ID. What a caller hears is observed at the caller: the
//!   test binds every caller's SDP media port (sipp sends its DTMF from that
//!   port through a raw socket and binds nothing there) and counts the RTP
//!   payloads that only the `registered`/`registered_asap` prompts contain,
//!   encoded as the engine encodes them;
//! - no row holds a number its caller (the row's inbound Call-ID, per the
//!   callers' own `-trace_logs` record of what they keyed) did not key;
//! - no caller and no number is stored twice;
//! - `PRAGMA integrity_check` is ok;
//! - and no engine counted a digit a caller did not send (each call's digits
//!   in each engine's log are a subsequence of what its caller keyed): the
//!   defect's first symptom.
//!
//! `STORM_KILLS` (default 5, the short version `.ci/run` runs) sets the
//! number of kills; `STORM_SEED` repeats a storm's kill moments;
//! `scripts/storm.sh` runs the 100-kill version. The figures are printed.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use callbackd::media::g711::Law;
use callbackd::media::prompt::{PromptLibrary, Ptime, STANDARD_PROMPTS};
use callbackd::media::rtp::RtpPacket;

use support::{
    Engine, EngineConfig, Ports, Sipp, TestDir, interop_lock, log_field, parse_dtmf_line,
    repo_root, require_tools, scenario_file, stored_callbacks, write_inf,
};

/// Kills in the short version.
const SHORT_KILLS: u32 = 5;
/// New calls per second.
const RATE: u32 = 3;
/// The engine runs this long between kills, at random in between: long
/// enough, often, for a caller to key and hear "registered" (≈ 5 s).
const LIFE_MIN: Duration = Duration::from_millis(300);
const LIFE_MAX: Duration = Duration::from_secs(10);
/// Callers keep arriving this long after the last kill.
const TAIL: Duration = Duration::from_secs(8);
/// RTP payloads of "registered" a caller must receive to have heard it.
const HEARD_FRAMES: usize = 3;
/// sipp's `[auto_media_port]` repeats after this many calls.
const MEDIA_PORTS: u32 = 2500;
/// The number of call `i` (0-based): ten digits, each caller its own.
fn number(i: u32) -> String {
    format!("312555{i:04}")
}

#[test]
fn kill_storm_keeps_every_caller_to_their_own_number() {
    let test = "kill_storm_keeps_every_caller_to_their_own_number";
    if !require_tools(test, &["sipp"]) {
        return;
    }
    let kills: u32 = std::env::var("STORM_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SHORT_KILLS);
    let seed: u64 = std::env::var("STORM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("storm: {kills} kills, STORM_SEED={seed}");
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let ports = Ports::allocate();
    let mut config = EngineConfig::new(&ports);
    config.rtp_timeout_s = 10;

    // The kill moments, drawn up front: the callers' count follows.
    let mut rng = fastrand::Rng::with_seed(seed);
    let lives: Vec<Duration> = (0..kills)
        .map(|_| LIFE_MIN + (LIFE_MAX - LIFE_MIN).mul_f64(rng.f64()))
        .collect();
    // Callers keep coming for TAIL after the last kill: the last engine,
    // started on the storm's store, serves them whole. However the kill
    // moments fall (five short lives let nobody finish), some callers hear
    // "registered" and the checks below have something to check.
    let storm: Duration = lives.iter().sum::<Duration>() + TAIL;
    let calls = u32::try_from((storm.as_secs_f64() * f64::from(RATE)).ceil() as u64)
        .expect("calls fit u32")
        .max(RATE);
    assert!(
        calls <= MEDIA_PORTS,
        "{calls} calls: sipp's media ports would repeat"
    );
    let rows: Vec<String> = (0..calls)
        .map(|i| format!("{};1{}1", number(i), number(i)))
        .collect();
    let inf = write_inf(&dir, "numbers.csv", &rows);

    // The callers' ears: every caller's SDP media port.
    let ear = Ear::bind(ports.sipp_media, calls, registered_frames());

    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();
    let mut engine_logs: Vec<Vec<String>> = Vec::new();
    let started = Instant::now();
    let run = thread::scope(|s| {
        let callers = s.spawn(|| {
            Sipp::uac(scenario_file("storm_caller.xml"), engine_addr, &ports)
                .inf(&inf)
                .load(calls, RATE, 200)
                .timeout_s(u32::try_from(storm.as_secs()).unwrap_or(u32::MAX) + 120)
                .arg("-trace_logs")
                .run(&dir, "callers")
        });
        for life in &lives {
            thread::sleep(*life);
            let _ = Command::new("kill")
                .args(["-KILL", &engine.pid().to_string()])
                .stdin(Stdio::null())
                .status();
            engine.stop();
            engine_logs.push(engine.log_lines());
            engine = Engine::start(&config, &dir);
        }
        callers.join().expect("the callers' sipp thread")
    });
    engine.assert_no_panic();
    engine.stop();
    engine_logs.push(engine.log_lines());
    let heard = ear.stop();
    eprintln!(
        "storm: {kills} kills, {calls} calls in {:.0?}; sipp exit {}",
        started.elapsed(),
        run.status
    );

    // What each caller keyed, from the callers' own record.
    let logs = std::fs::read_dir(dir.join("callers"))
        .expect("sipp's directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_logs.log"))
        .expect("sipp wrote its -trace_logs file");
    let text = std::fs::read_to_string(&logs).expect("readable sipp log");
    let mut keyed: HashMap<String, Keyed> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("keyed ")) {
        let field = |k| log_field(line, k).map(str::to_owned);
        let (Some(call_id), Some(n), Some(number), Some(digits)) = (
            field("call_id"),
            field("call_number").and_then(|n| n.parse::<u32>().ok()),
            field("number"),
            field("digits"),
        ) else {
            panic!("unreadable caller record {line:?}");
        };
        keyed.insert(
            call_id,
            Keyed {
                call_number: n,
                number,
                digits,
            },
        );
    }
    assert!(!keyed.is_empty(), "no caller keyed anything");
    let keyed_numbers: HashSet<&str> = keyed.values().map(|k| k.number.as_str()).collect();

    // The store.
    let store = engine.store_path();
    let integrity: String = rusqlite::Connection::open(&store)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
        .expect("integrity_check runs");
    let stored = stored_callbacks(&store);
    let by_call: HashMap<&str, Vec<&str>> = stored.iter().fold(HashMap::new(), |mut m, r| {
        m.entry(r.inbound_call_id.as_str())
            .or_default()
            .push(r.number.as_str());
        m
    });
    let mut numbers_seen: HashMap<&str, u32> = HashMap::new();
    for r in &stored {
        *numbers_seen.entry(r.number.as_str()).or_default() += 1;
    }

    // Rows against the callers' records.
    let mut wrong_rows = Vec::new();
    for r in &stored {
        match keyed.get(&r.inbound_call_id) {
            Some(k) if k.number == r.number => {}
            Some(k) => wrong_rows.push(format!(
                "{} holds {} but its caller keyed {}",
                r.inbound_call_id, r.number, k.number
            )),
            None => wrong_rows.push(format!(
                "{} holds {}: no caller with that Call-ID keyed anything",
                r.inbound_call_id, r.number
            )),
        }
    }
    let nobody_keyed = stored
        .iter()
        .filter(|r| !keyed_numbers.contains(r.number.as_str()))
        .count();
    let twice: Vec<String> = by_call
        .iter()
        .filter(|(_, numbers)| numbers.len() > 1)
        .map(|(call, numbers)| format!("{call} stored {} times", numbers.len()))
        .chain(
            numbers_seen
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(number, n)| format!("{number} stored {n} times")),
        )
        .collect();

    // Callers who heard "registered" against the rows.
    let by_number: BTreeMap<u32, (&String, &Keyed)> =
        keyed.iter().map(|(c, k)| (k.call_number, (c, k))).collect();
    let mut heard_callers = 0;
    let mut unobserved = 0;
    let mut heard_without_row = Vec::new();
    for (&n, (call_id, k)) in &by_number {
        match heard.get(&media_port(ports.sipp_media, n)) {
            Some(Hearing::Unbound) => unobserved += 1,
            Some(Hearing::Frames(f)) if *f >= HEARD_FRAMES => {
                heard_callers += 1;
                if by_call.get(call_id.as_str()) != Some(&vec![k.number.as_str()]) {
                    heard_without_row.push(format!(
                        "{call_id} heard \"registered\" but the store holds {:?} for it",
                        by_call.get(call_id.as_str())
                    ));
                }
            }
            Some(Hearing::Frames(_)) | None => {}
        }
    }

    // Digits each engine counted per call, against what the caller keyed.
    let mut counted_calls = 0;
    let mut foreign_digit_calls = Vec::new();
    for (life, lines) in engine_logs.iter().enumerate() {
        let mut digits: BTreeMap<String, String> = BTreeMap::new();
        for d in lines.iter().filter_map(|l| parse_dtmf_line(l)) {
            digits.entry(d.call_id).or_default().push_str(&d.digit);
        }
        for (call_id, got) in digits {
            counted_calls += 1;
            let sent = keyed.get(&call_id).map_or("", |k| k.digits.as_str());
            if !is_subsequence(&got, sent) {
                foreign_digit_calls.push(format!(
                    "engine {life}: {call_id} counted {got:?}, its caller keyed {sent:?}"
                ));
            }
        }
    }

    eprintln!(
        "storm figures: kills {kills}; callers {calls}, keyed {}; engine calls with digits \
         {counted_calls}, with digits their caller never sent {}; rows {}, under a number \
         nobody keyed {nobody_keyed}, not their caller's number {}, stored twice {}; callers \
         who heard \"registered\" {heard_callers} (ports not observable {unobserved}), of them \
         without their row {}; integrity_check {integrity}",
        keyed.len(),
        foreign_digit_calls.len(),
        stored.len(),
        wrong_rows.len(),
        twice.len(),
        heard_without_row.len(),
    );
    // Every failure names the seed that replays its kill moments.
    let show = |v: &[String]| {
        let mut lines: Vec<String> = v.iter().take(20).cloned().collect();
        lines.push(format!("(replay: STORM_SEED={seed} STORM_KILLS={kills})"));
        lines.join("\n  ")
    };
    assert!(
        heard_callers > 0 || kills == 0,
        "no caller heard \"registered\": the storm checked nothing (engine log {}; \
         replay: STORM_SEED={seed} STORM_KILLS={kills})",
        engine.log_path().display()
    );
    assert_eq!(
        integrity, "ok",
        "PRAGMA integrity_check (replay: STORM_SEED={seed})"
    );
    assert!(
        heard_without_row.is_empty(),
        "callers who heard \"registered\" without their row:\n  {}",
        show(&heard_without_row)
    );
    assert!(
        wrong_rows.is_empty(),
        "rows not holding their caller's number:\n  {}",
        show(&wrong_rows)
    );
    assert!(twice.is_empty(), "stored twice:\n  {}", show(&twice));
    assert!(
        foreign_digit_calls.is_empty(),
        "calls that counted digits their caller never sent:\n  {}",
        show(&foreign_digit_calls)
    );
}

/// One caller's record: what it keyed.
#[derive(Debug)]
struct Keyed {
    call_number: u32,
    number: String,
    digits: String,
}

/// sipp's `[auto_media_port]` of call `n` (1-based): `mp + 4·(n−1) mod
/// 10000` (sipp 3.6 `call.cpp`).
fn media_port(base: u16, n: u32) -> u16 {
    base + u16::try_from((4 * (n - 1)) % 10_000).expect("below 10000")
}

/// Whether `a`'s characters appear in `b` in order.
fn is_subsequence(a: &str, b: &str) -> bool {
    let mut rest = b.chars();
    a.chars().all(|c| rest.any(|d| d == c))
}

/// The 20 ms PCMU payloads the engine sends for "registered" or
/// "registered_asap" and for no other standard prompt.
fn registered_frames() -> HashSet<Vec<u8>> {
    let mut lib = PromptLibrary::load(&repo_root().join("prompts"), &STANDARD_PROMPTS)
        .expect("the repository's prompts load");
    lib.prepare(&[Law::Ulaw], &[Ptime::DEFAULT]);
    let mut ours = HashSet::new();
    let mut others = HashSet::new();
    for (id, name) in lib.iter() {
        let frames = lib
            .frames(id, Law::Ulaw, Ptime::DEFAULT)
            .expect("prepared for PCMU at 20 ms");
        let set = if matches!(name, "registered" | "registered_asap") {
            &mut ours
        } else {
            &mut others
        };
        set.extend(frames.iter().map(<[u8]>::to_vec));
    }
    ours.retain(|f| !others.contains(f));
    assert!(ours.len() > 20, "too few frames tell \"registered\" apart");
    ours
}

/// What arrived at one caller's media port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hearing {
    /// Another program held the port: this caller cannot be observed.
    Unbound,
    /// Payloads of "registered" received.
    Frames(usize),
}

/// The callers' ears: one UDP socket per caller's media port, read by one
/// thread through `mio`, counting payloads of "registered" per port.
struct Ear {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<HashMap<u16, Hearing>>,
}

impl Ear {
    fn bind(base: u16, calls: u32, registered: HashSet<Vec<u8>>) -> Ear {
        let stop = Arc::new(AtomicBool::new(false));
        let mut poll = mio::Poll::new().expect("mio poll");
        let mut heard: HashMap<u16, Hearing> = HashMap::new();
        let mut sockets = Vec::new();
        // Call 1's port is `-mp` itself, which sipp binds for its own
        // audio socket: that caller is not observed.
        heard.insert(media_port(base, 1), Hearing::Unbound);
        for n in 2..=calls {
            let port = media_port(base, n);
            let addr = SocketAddr::from((IpAddr::V4(Ipv4Addr::LOCALHOST), port));
            match mio::net::UdpSocket::bind(addr) {
                Ok(mut sock) => {
                    poll.registry()
                        .register(
                            &mut sock,
                            mio::Token(sockets.len()),
                            mio::Interest::READABLE,
                        )
                        .expect("register an ear socket");
                    sockets.push((port, sock));
                    heard.insert(port, Hearing::Frames(0));
                }
                Err(_) => {
                    heard.insert(port, Hearing::Unbound);
                }
            }
        }
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut events = mio::Events::with_capacity(1024);
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                // The stop flag is looked at between polls.
                let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
                for event in &events {
                    let (port, sock) = &sockets[event.token().0];
                    while let Ok(len) = sock.recv(&mut buf) {
                        if let Ok(p) = RtpPacket::parse(&buf[..len])
                            && registered.contains(p.payload())
                            && let Some(Hearing::Frames(n)) = heard.get_mut(port)
                        {
                            *n += 1;
                        }
                    }
                }
            }
            heard
        });
        Ear { stop, thread }
    }

    fn stop(self) -> HashMap<u16, Hearing> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the ear thread")
    }
}

#[test]
fn subsequence_and_media_ports_are_what_the_checks_assume() {
    assert!(is_subsequence("1312", "131255501881"));
    assert!(is_subsequence("", "1"));
    assert!(!is_subsequence("19", "131255501881"));
    assert!(!is_subsequence("11", "1"));
    assert_eq!(media_port(40000, 1), 40000);
    assert_eq!(media_port(40000, 3), 40008);
    assert_eq!(media_port(40000, 2501), 40000, "sipp wraps at 10000 ports");
    assert_eq!(number(7), "3125550007");
}
