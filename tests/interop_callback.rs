//! Interop acceptance test of calling back (issue 4 point 9): the release
//! `callbackd` binary against three sipp roles on loopback —
//!
//! - the caller registers a callback through the IVR (`register_callback.xml`,
//!   `play_dtmf`);
//! - a sipp UAS plays the agent, a static `[[agents]]` URI
//!   (`uas_answer_with_audio.xml`: answers, sends sipp's `g711a.pcap`, waits
//!   for the engine's BYE);
//! - a sipp UAS on another loopback port plays the carrier at the trunk's
//!   termination URI (`uas_answer_audio_hangup.xml`: answers, sends a 440 Hz
//!   tone pcap, hangs up after 5 s).
//!
//! A tshark capture of the engine's SIP port, both UAS ports and the
//! engine's RTP range shows the order of the SIP messages (agent first), the
//! customer INVITE as the trunk wants it, each side's RTP reaching the other
//! through the engine, and the BYE ending both legs. Every sipp run must be
//! clean as issue 2 defines it; the store must hold the completed callback,
//! its answered attempt and a CDR row per outbound leg.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::Duration;

use callbackd::callback::cdr::{CdrRecord, Leg, LegOutcome};
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{
    LaunchStore, NewCallback, Registration, SqliteStore, Status, Store,
};
use callbackd::callback::{CallbackId, QueueId};
use callbackd::sip::message::{self, Message, Request, Response};

use support::{
    CallbackConfig, Capture, Engine, EngineConfig, Ports, RtpPacket, Sipp, TestDir, UdpPacket,
    assert_clean, interop_lock, read_rtp, read_udp, require_tools, scenario_file, stored_callbacks,
    write_inf, write_tone_pcap,
};

/// sipp's address (`-i`/`-mi`).
const SIPP_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The number the caller keys.
const NUMBER: &str = "3125550188";
/// The queue's callback number (caller ID).
const CALLER_ID: &str = "3125550100";

#[test]
fn callback_calls_agent_first_then_customer_and_bridges() {
    let test = "callback_calls_agent_first_then_customer_and_bridges";
    if !require_tools(test, &["sipp", "tshark"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let main = Ports::allocate();
    let agent_ports = Ports::allocate();
    let carrier_ports = Ports::allocate();
    let agent_uri = format!("sip:alice@127.0.0.1:{}", agent_ports.sipp_sip);
    let mut config = EngineConfig::new(&main);
    config.callbacks = Some(CallbackConfig {
        termination: SocketAddr::from((Ipv4Addr::LOCALHOST, carrier_ports.sipp_sip)),
        agents: vec![("alice".into(), agent_uri.clone())],
        poll_interval_ms: 200,
        retry_time_s: 2,
        max_retries: 3,
        agent_ring_timeout_s: 10,
        customer_ring_timeout_s: 10,
        agent_cooldown_s: 60,
        callback_number: CALLER_ID.into(),
    });
    let capture = Capture::start_filter(
        &dir,
        "callback",
        &format!(
            "udp port {} or udp port {} or udp port {} or udp portrange {}-{}",
            main.engine_sip,
            agent_ports.sipp_sip,
            carrier_ports.sipp_sip,
            main.rtp_min,
            main.rtp_max
        ),
    );
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();
    std::fs::create_dir_all(dir.join("carrier")).expect("test dir is writable");
    write_tone_pcap(&dir.join("carrier").join("carrier_audio.pcap"), 440.0, 400);
    let inf = write_inf(&dir, "numbers.csv", &[NUMBER.to_owned()]);

    let (caller, agent, carrier) = thread::scope(|s| {
        let agent = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_with_audio.xml"),
                engine_addr,
                &agent_ports,
            )
            .arg("-aa")
            .timeout_s(90)
            .run(&dir, "agent")
        });
        let carrier = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_audio_hangup.xml"),
                engine_addr,
                &carrier_ports,
            )
            .arg("-aa")
            .timeout_s(90)
            .run(&dir, "carrier")
        });
        // Both UASes listen before the callback can be launched.
        thread::sleep(Duration::from_millis(500));
        let caller = Sipp::uac(scenario_file("register_callback.xml"), engine_addr, &main)
            .inf(&inf)
            .load(1, 1, 1)
            .run(&dir, "caller");
        let agent = agent.join().expect("agent sipp thread");
        let carrier = carrier.join().expect("carrier sipp thread");
        (caller, agent, carrier)
    });
    let pcap = capture.stop();
    assert_clean(&caller, 1);
    assert_clean(&agent, 1);
    assert_clean(&carrier, 1);
    let inbound_call_id = caller.call_id(1, SIPP_IP);

    // The store: one callback, completed after one answered attempt.
    let store_path = engine.store_path();
    let rows = wait_rows(&store_path, |r| r.status == Status::Completed);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = &rows[0];
    assert_eq!(row.number, NUMBER);
    assert_eq!(row.inbound_call_id, inbound_call_id);
    assert_eq!(row.attempts, 1);
    let store = SqliteStore::open(&store_path).expect("open the store");
    let attempts = store.attempts(row.id).expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].attempt.outcome, Outcome::Answered);
    assert_eq!(attempts[0].attempt.agent.as_deref(), Some("alice"));

    // SIP on the wire, in order.
    let sip = sip_messages(&pcap, main.engine_sip);
    let to_agent = |m: &&Sip| m.dst.port() == agent_ports.sipp_sip;
    let from_agent = |m: &&Sip| m.src.port() == agent_ports.sipp_sip;
    let to_carrier = |m: &&Sip| m.dst.port() == carrier_ports.sipp_sip;
    let from_carrier = |m: &&Sip| m.src.port() == carrier_ports.sipp_sip;
    let agent_invite = first_request(&sip, "INVITE", to_agent);
    let agent_ok = first_response(&sip, 200, "INVITE", from_agent);
    let customer_invite = first_request(&sip, "INVITE", to_carrier);
    let customer_ok = first_response(&sip, 200, "INVITE", from_carrier);
    assert!(
        agent_invite.0 < agent_ok.0 && agent_ok.0 < customer_invite.0,
        "the agent is INVITEd and answers before the customer is INVITEd"
    );
    assert_eq!(&*agent_invite.1.uri, agent_uri.as_str());
    let invite = &customer_invite.1;
    assert_eq!(
        &*invite.uri,
        format!(
            "sip:+1{NUMBER}@127.0.0.1:{};user=phone",
            carrier_ports.sipp_sip
        )
        .as_str(),
        "customer Request-URI"
    );
    let caller_id = format!("sip:+1{CALLER_ID}@127.0.0.1;user=phone");
    assert_eq!(&*invite.headers.from.uri, caller_id.as_str(), "From");
    assert_eq!(
        header(&invite.headers, "P-Asserted-Identity"),
        Some(format!("<{caller_id}>").as_str()),
        "P-Asserted-Identity"
    );
    // BYE from the carrier, then the engine's BYE to the agent; both 200.
    let carrier_bye = first_request(&sip, "BYE", from_carrier);
    let agent_bye = first_request(&sip, "BYE", to_agent);
    assert!(
        carrier_bye.0 < agent_bye.0,
        "the carrier's BYE ends the agent leg"
    );
    first_response(&sip, 200, "BYE", to_carrier);
    first_response(&sip, 200, "BYE", from_agent);
    assert!(
        !sip.iter().any(|m| from_agent(&m)
            && matches!(&m.message, Message::Request(r) if r.method.as_str() == "BYE")),
        "the agent never hung up by itself"
    );

    // RTP both ways through the engine's two legs, while bridged.
    let agent_leg = sdp_port(&agent_invite.1.body);
    let customer_leg = sdp_port(&invite.body);
    let agent_media = sdp_port(&agent_ok.1.body);
    let carrier_media = sdp_port(&customer_ok.1.body);
    let rtp = read_rtp(&pcap, main.rtp_min, main.rtp_max);
    let sent = |to: u16| -> Vec<&RtpPacket> { rtp.iter().filter(|p| p.dst.port() == to).collect() };
    let received = |from: u16, to: u16| -> Vec<&RtpPacket> {
        rtp.iter()
            .filter(|p| p.src.port() == from && p.dst.port() == to)
            .collect()
    };
    let by_carrier = sent(customer_leg);
    let by_agent = sent(agent_leg);
    let at_agent = received(agent_leg, agent_media);
    let at_carrier = received(customer_leg, carrier_media);
    let relayed_to_agent = relayed(&by_carrier, &at_agent);
    let relayed_to_carrier = relayed(&by_agent, &at_carrier);
    eprintln!(
        "RTP: carrier sent {}, agent sent {}; the agent got {} ({} of the carrier's audio), \
         the carrier got {} ({} of the agent's)",
        by_carrier.len(),
        by_agent.len(),
        at_agent.len(),
        relayed_to_agent,
        at_carrier.len(),
        relayed_to_carrier
    );
    // Each side's audio sent while both legs were up reaches the other
    // (the agent's g711a.pcap started at its own answer, so part of it was
    // spent on the whisper and the ringback).
    let bridged = |p: &&&RtpPacket| p.time_ns > customer_ok.0 && p.time_ns < carrier_bye.0;
    let carrier_bridged = by_carrier.iter().filter(bridged).count();
    let agent_bridged = by_agent.iter().filter(bridged).count();
    assert!(
        carrier_bridged >= 150 && agent_bridged >= 50,
        "both sides sent audio while bridged: carrier {carrier_bridged}, agent {agent_bridged}"
    );
    assert!(
        relayed_to_agent * 10 >= carrier_bridged * 9,
        "the carrier's audio reaches the agent: {relayed_to_agent} of {carrier_bridged}"
    );
    assert!(
        relayed_to_carrier * 10 >= agent_bridged * 9,
        "the agent's audio reaches the carrier: {relayed_to_carrier} of {agent_bridged}"
    );
    assert_eq!(
        relayed(&by_agent, &at_agent),
        0,
        "the agent's own audio must not come back to it"
    );
    assert_eq!(
        relayed(&by_carrier, &at_carrier),
        0,
        "the carrier's own audio must not come back to it"
    );

    // CDR: one row per outbound leg, linked to the callback and the
    // inbound call.
    let cdrs: Vec<CdrRecord> = store
        .cdrs(None, None)
        .expect("CDRs")
        .into_iter()
        .filter(|c| c.callback == Some(row.id))
        .collect();
    let of = |leg: Leg| -> &CdrRecord {
        let rows: Vec<&CdrRecord> = cdrs.iter().filter(|c| c.leg == leg).collect();
        assert_eq!(rows.len(), 1, "one {leg:?} row: {cdrs:#?}");
        rows[0]
    };
    let agent_cdr = of(Leg::Agent);
    let customer_cdr = of(Leg::Customer);
    for (cdr, peer) in [
        (agent_cdr, agent_uri.as_str()),
        (customer_cdr, &*invite.uri),
    ] {
        assert_eq!(cdr.inbound_call_id, inbound_call_id);
        assert_eq!(cdr.outcome, LegOutcome::Answered, "{cdr:?}");
        assert_eq!(cdr.sip_code, Some(200), "{cdr:?}");
        assert_eq!(cdr.peer, peer);
        let answer = cdr.answer.expect("answered");
        assert!(cdr.start <= answer && answer <= cdr.end, "{cdr:?}");
    }
    assert!(agent_cdr.start < customer_cdr.start);
    assert!(
        agent_cdr.answer < customer_cdr.answer,
        "the agent answered first: {cdrs:#?}"
    );

    engine.stop();
    engine.assert_no_panic();
}

/// The customer does not answer (sipp rings, takes our CANCEL): retried
/// after retry_time (5 s) and answered the second time (another sipp on the
/// same port, started once the first has gone) → completed after two
/// attempts; the agent (one sipp, two calls) is told and hung up the first
/// time.
#[test]
fn no_answer_is_retried_after_retry_time_and_completed() {
    let test = "no_answer_is_retried_after_retry_time_and_completed";
    if !require_tools(test, &["sipp"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let config = dialing_config(&main, &agent_ports, &carrier_ports, 5, 3);
    let id = register_direct(&dir);
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();
    std::fs::create_dir_all(dir.join("answer")).expect("test dir is writable");
    write_tone_pcap(&dir.join("answer").join("carrier_audio.pcap"), 440.0, 400);

    let (agent, ring, answer) = thread::scope(|s| {
        let agent = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_with_audio.xml"),
                engine_addr,
                &agent_ports,
            )
            .load(2, 10, 10)
            .arg("-aa")
            .timeout_s(90)
            .run(&dir, "agent")
        });
        let ring = Sipp::uac(
            scenario_file("uas_ring_no_answer.xml"),
            engine_addr,
            &carrier_ports,
        )
        .timeout_s(60)
        .run(&dir, "ring");
        let answer = Sipp::uac(
            scenario_file("uas_answer_audio_hangup.xml"),
            engine_addr,
            &carrier_ports,
        )
        .arg("-aa")
        .timeout_s(60)
        .run(&dir, "answer");
        (agent.join().expect("agent sipp thread"), ring, answer)
    });
    assert_clean(&ring, 1);
    assert_clean(&answer, 1);
    assert_clean(&agent, 2);
    let rows = wait_rows(&engine.store_path(), |r| r.status == Status::Completed);
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].attempts, 2);
    let store = SqliteStore::open(&engine.store_path()).expect("open the store");
    let outcomes: Vec<Outcome> = store
        .attempts(id)
        .expect("attempts")
        .iter()
        .map(|a| a.attempt.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::NoAnswer, Outcome::Answered]);
    let attempts = store.attempts(id).expect("attempts");
    let pause = attempts[1]
        .attempt
        .started_at
        .duration_since(attempts[0].attempt.ended_at);
    assert!(
        pause.as_secs_f64() >= 4.9,
        "the retry started {pause:?} after the first attempt ended, retry_time is 5 s"
    );
    engine.stop();
    engine.assert_no_panic();
}

/// max_retries = 1 and the customer is busy (486) every time: two
/// attempts, then failed; the agent is told and hung up both times.
#[test]
fn busy_customer_exhausts_retries_and_fails() {
    let test = "busy_customer_exhausts_retries_and_fails";
    if !require_tools(test, &["sipp"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let config = dialing_config(&main, &agent_ports, &carrier_ports, 2, 1);
    let id = register_direct(&dir);
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();

    let (agent, carrier) = thread::scope(|s| {
        let agent = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_with_audio.xml"),
                engine_addr,
                &agent_ports,
            )
            .load(2, 10, 10)
            .arg("-aa")
            .timeout_s(60)
            .run(&dir, "agent")
        });
        let carrier = Sipp::uac(scenario_file("uas_busy.xml"), engine_addr, &carrier_ports)
            .load(2, 10, 10)
            .timeout_s(60)
            .run(&dir, "carrier");
        (agent.join().expect("agent sipp thread"), carrier)
    });
    assert_clean(&carrier, 2);
    assert_clean(&agent, 2);
    let rows = wait_rows(&engine.store_path(), |r| r.status == Status::Failed);
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].attempts, 2);
    let store = SqliteStore::open(&engine.store_path()).expect("open the store");
    let got: Vec<(Outcome, Option<u16>)> = store
        .attempts(id)
        .expect("attempts")
        .iter()
        .map(|a| (a.attempt.outcome, a.attempt.sip_status))
        .collect();
    assert_eq!(
        got,
        [(Outcome::Busy, Some(486)), (Outcome::Busy, Some(486))]
    );
    // Nothing more is dialed (the carrier sipp has exited: a third INVITE
    // would fail as a transport error and be recorded).
    thread::sleep(Duration::from_secs(3));
    assert_eq!(store.attempts(id).expect("attempts").len(), 2);
    engine.stop();
    engine.assert_no_panic();
}

/// The dialing configuration of the retry tests: the agent and the carrier
/// are sipp UASes on their own port blocks.
fn dialing_config(
    main: &Ports,
    agent: &Ports,
    carrier: &Ports,
    retry_time_s: u64,
    max_retries: u32,
) -> EngineConfig {
    let mut config = EngineConfig::new(main);
    config.callbacks = Some(CallbackConfig {
        termination: SocketAddr::from((Ipv4Addr::LOCALHOST, carrier.sipp_sip)),
        agents: vec![(
            "alice".into(),
            format!("sip:alice@127.0.0.1:{}", agent.sipp_sip),
        )],
        poll_interval_ms: 200,
        retry_time_s,
        max_retries,
        agent_ring_timeout_s: 10,
        customer_ring_timeout_s: 3,
        agent_cooldown_s: 60,
        callback_number: CALLER_ID.into(),
    });
    config
}

/// A due callback for [`NUMBER`] in the test's store file (as if a caller
/// had registered it), before the engine starts.
fn register_direct(dir: &TestDir) -> CallbackId {
    let mut store = SqliteStore::open(&dir.join("callbackd.sqlite")).expect("open the store");
    let now = jiff::Timestamp::now();
    let new = NewCallback {
        queue: QueueId("support".into()),
        number: NUMBER.into(),
        caller_ani: "3125550111".into(),
        called_number: "8005550100".into(),
        priority: 0,
        queued_at: now,
        registered_at: now,
        ecbt_quoted_minutes: 1,
        expires_at: now + jiff::SignedDuration::from_hours(1),
        inbound_call_id: "inbound@test".into(),
    };
    match store.register(&new).expect("register") {
        Registration::Registered(id) => id,
        other => panic!("not registered: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One SIP message from the capture.
struct Sip {
    time_ns: i128,
    src: SocketAddr,
    dst: SocketAddr,
    message: Message,
}

/// Every SIP message to or from the engine's port, in capture order.
fn sip_messages(pcap: &Path, engine_port: u16) -> Vec<Sip> {
    read_udp(pcap, &format!("udp.port=={engine_port}"))
        .into_iter()
        .filter_map(
            |UdpPacket {
                 time_ns,
                 src,
                 dst,
                 payload,
             }| {
                let message = message::parse(&payload).ok()?;
                Some(Sip {
                    time_ns,
                    src,
                    dst,
                    message,
                })
            },
        )
        .collect()
}

fn first_request<'a>(
    sip: &'a [Sip],
    method: &str,
    pick: impl Fn(&&Sip) -> bool,
) -> (i128, &'a Request) {
    sip.iter()
        .filter(|m| pick(m))
        .find_map(|m| match &m.message {
            Message::Request(r) if r.method.as_str() == method => Some((m.time_ns, r)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {method} in the capture"))
}

fn first_response<'a>(
    sip: &'a [Sip],
    status: u16,
    method: &str,
    pick: impl Fn(&&Sip) -> bool,
) -> (i128, &'a Response) {
    sip.iter()
        .filter(|m| pick(m))
        .find_map(|m| match &m.message {
            Message::Response(r)
                if r.status == status && r.headers.cseq.method.as_str() == method =>
            {
                Some((m.time_ns, r))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {status} to {method} in the capture"))
}

/// A header's first value by name, case-insensitively.
fn header<'a>(headers: &'a message::Headers, name: &str) -> Option<&'a str> {
    headers
        .fields()
        .iter()
        .find(|f| {
            f.name.as_str().eq_ignore_ascii_case(name)
                || f.other_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|f| &*f.value)
}

/// The m=audio port of an SDP body.
fn sdp_port(body: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio port in {text}"))
}

/// How many of `got` carry a payload one of `sent` carried (audio relayed
/// unchanged: both legs negotiated PCMA).
fn relayed(sent: &[&RtpPacket], got: &[&RtpPacket]) -> usize {
    let payloads: std::collections::HashSet<&[u8]> = sent
        .iter()
        // Constant payloads (digital silence) also occur in prompts.
        .filter(|p| p.payload.len() >= 80 && p.payload.iter().any(|&b| b != p.payload[0]))
        .map(|p| p.payload.as_slice())
        .collect();
    got.iter()
        .filter(|p| payloads.contains(p.payload.as_slice()))
        .count()
}

/// The store's rows once `done` holds for one of them (the engine records
/// the attempt right after the last BYE).
fn wait_rows(
    path: &Path,
    done: impl Fn(&callbackd::callback::store::CallbackRow) -> bool,
) -> Vec<callbackd::callback::store::CallbackRow> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = stored_callbacks(path);
        if rows.iter().any(&done) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the callback did not reach its state: {rows:#?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}
