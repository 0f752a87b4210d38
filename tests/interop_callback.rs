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
//!
//! Beside it: the same loop with baresip as the agent (auto-answer, its
//! `aubridge` sending back what it hears), the retry and failure paths, and
//! live callers (`caller_holds.xml`, no digit) reaching one agent in the
//! order they arrived.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::Duration;

use callbackd::callback::cdr::{CdrRecord, Leg, LegOutcome};
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{
    CallbackRow, LaunchStore, NewCallback, Registration, SqliteStore, Status, Store,
};
use callbackd::callback::{CallbackId, QueueId};
use callbackd::sip::message::{self, Message, Request, Response};

use support::{
    Baresip, CallbackConfig, Capture, Engine, EngineConfig, Ports, RtpPacket, Sipp, TestDir,
    UdpPacket, assert_clean, interop_lock, is_call_started_line, log_field, read_rtp, read_udp,
    require_tools, scenario_file, stored_callbacks, wait_udp_bound, write_inf, write_tone_pcap,
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
        registered_agents: Vec::new(),
        digest_algorithms: Vec::new(),
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
        wait_udp_bound(agent_ports.sipp_sip, Duration::from_secs(10));
        wait_udp_bound(carrier_ports.sipp_sip, Duration::from_secs(10));
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
    let (row, store) = completed_once(&engine.store_path(), &inbound_call_id);
    let row = &row;
    assert_eq!(row.number, NUMBER);

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

    // `callbackd cdr` writes the same rows as CSV: the inbound leg, then
    // agent and customer (by start time); `--since` filters by start.
    let csv = cdr_csv(engine.config_path(), &[]);
    let want_header = callbackd::callback::cdr::CSV_HEADER.join(",");
    assert_eq!(csv[0].join(","), want_header);
    let legs: Vec<(&str, &str, &str, &str)> = csv[1..]
        .iter()
        .map(|r| (r[2].as_str(), r[3].as_str(), r[7].as_str(), r[8].as_str()))
        .collect();
    assert_eq!(
        legs,
        [
            ("inbound", inbound_call_id.as_str(), "answered", "200"),
            ("agent", agent_cdr.call_id.as_str(), "answered", "200"),
            ("customer", customer_cdr.call_id.as_str(), "answered", "200"),
        ],
        "{csv:?}"
    );
    for r in &csv[2..] {
        assert_eq!(r[0], row.id.to_string(), "linked to the callback: {r:?}");
        assert_eq!(r[1], inbound_call_id, "linked to the inbound call: {r:?}");
        assert_eq!(r[11], "ivr", "the callback's type: {r:?}");
    }
    let since = callbackd::callback::cdr::utc_millis(customer_cdr.start);
    let later = cdr_csv(engine.config_path(), &["--since", &since]);
    assert_eq!(later.len(), 2, "header and the customer leg: {later:?}");
    assert_eq!(later[1][2], "customer");

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
    // That nothing more is dialed later is tests/controller.rs's (busy
    // until 1 + max_retries attempts, then failed).
    assert_eq!(store.attempts(id).expect("attempts").len(), 2);
    engine.stop();
    engine.assert_no_panic();
}

/// Issue 4: live callers reach a free agent in line order. Two callers
/// (two sipp UACs, B once A's call has started, `caller_holds.xml`: no digit, each sends
/// its own tone) hear the greeting, the ECBT and the offer, then hold; one
/// static agent (a sipp UAS taking two calls, `uas_answer_audio_hangup.xml`:
/// answers, sends its own tone, hangs up after 5 s) is rung for the first
/// caller, talks, hangs up — the engine ends that caller's call — and is
/// then rung for the second. The engine's "ringing an agent" lines name the
/// callers' Call-IDs in arrival order, the capture shows the first caller's
/// BYE before the agent's second INVITE, and each side's audio reaching the
/// other through the engine (and never the caller who is not connected).
#[test]
fn live_callers_reach_a_free_agent_in_order() {
    let test = "live_callers_reach_a_free_agent_in_order";
    if !require_tools(test, &["sipp", "tshark"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    // `main`: the engine and caller A; the trunk is configured but never
    // dialled (no callback exists).
    let (main, b_ports, agent_ports, carrier_ports) = (
        Ports::allocate(),
        Ports::allocate(),
        Ports::allocate(),
        Ports::allocate(),
    );
    let config = dialing_config(&main, &agent_ports, &carrier_ports, 60, 3);
    let capture = Capture::start_filter(
        &dir,
        "live",
        &format!(
            "udp port {} or udp portrange {}-{}",
            main.engine_sip, main.rtp_min, main.rtp_max
        ),
    );
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();
    // Three tones, so the capture tells whose audio went where (none a
    // multiple of 50 Hz: every 20 ms payload differs from the next).
    for (name, file, hz) in [
        ("caller_a", "caller_audio.pcap", 523.0),
        ("caller_b", "caller_audio.pcap", 659.0),
        ("agent", "carrier_audio.pcap", 1013.0),
    ] {
        std::fs::create_dir_all(dir.join(name)).expect("test dir is writable");
        // 40 s for the callers (talking outlasts the queue), 8 s for the
        // agent (it hangs up after 5 s).
        let packets = if name == "agent" { 400 } else { 2000 };
        write_tone_pcap(&dir.join(name).join(file), hz, packets);
    }

    let started = std::time::Instant::now();
    let (caller_a, caller_b, agent) = thread::scope(|s| {
        let agent = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_audio_hangup.xml"),
                engine_addr,
                &agent_ports,
            )
            .load(2, 10, 10)
            .arg("-aa")
            .timeout_s(90)
            .run(&dir, "agent")
        });
        wait_udp_bound(agent_ports.sipp_sip, Duration::from_secs(10));
        let caller_a = s.spawn(|| {
            Sipp::uac(scenario_file("caller_holds.xml"), engine_addr, &main)
                .timeout_s(90)
                .run(&dir, "caller_a")
        });
        // Caller A is first in line once the engine has its call.
        assert!(
            engine
                .wait_for_line(Duration::from_secs(10), is_call_started_line)
                .is_some(),
            "caller A's call never started"
        );
        let caller_b = Sipp::uac(scenario_file("caller_holds.xml"), engine_addr, &b_ports)
            .timeout_s(90)
            .run(&dir, "caller_b");
        (
            caller_a.join().expect("caller A sipp thread"),
            caller_b,
            agent.join().expect("agent sipp thread"),
        )
    });
    eprintln!("callers and agent done after {:?}", started.elapsed());
    let pcap = capture.stop();
    assert_clean(&caller_a, 1);
    assert_clean(&caller_b, 1);
    assert_clean(&agent, 2);
    let a_id = caller_a.call_id(1, SIPP_IP);
    let b_id = caller_b.call_id(1, SIPP_IP);

    // The engine rang the agent for A, then for B, and connected them in
    // that order.
    let log = engine.log_lines();
    let call_ids_of = |event: &str| -> Vec<String> {
        log.iter()
            .filter(|l| l.contains(&format!(": {event}")))
            .filter_map(|l| log_field(l, "call_id").map(str::to_owned))
            .collect()
    };
    assert_eq!(
        call_ids_of("ringing an agent for a live caller"),
        [a_id.clone(), b_id.clone()],
        "the agent is rung for the first caller, then the second"
    );
    assert_eq!(
        call_ids_of("caller connected to an agent"),
        [a_id.clone(), b_id.clone()],
        "both callers were connected, in arrival order"
    );

    // SIP on the wire, in order.
    let sip = sip_messages(&pcap, main.engine_sip);
    let port_is = |port: u16| move |m: &&Sip| m.dst.port() == port;
    let from_port = |port: u16| move |m: &&Sip| m.src.port() == port;
    let agent_invites = requests(&sip, "INVITE", port_is(agent_ports.sipp_sip));
    let agent_byes = requests(&sip, "BYE", from_port(agent_ports.sipp_sip));
    assert_eq!(agent_invites.len(), 2, "two agent INVITEs");
    assert_eq!(agent_byes.len(), 2, "the agent hung up twice");
    for (invite, bye) in agent_invites.iter().zip(&agent_byes) {
        assert_eq!(
            invite.1.headers.call_id, bye.1.headers.call_id,
            "each agent call ends before the next starts"
        );
    }
    let a_invite = first_request(&sip, "INVITE", from_port(main.sipp_sip));
    let b_invite = first_request(&sip, "INVITE", from_port(b_ports.sipp_sip));
    assert_eq!(a_invite.1.headers.call_id.as_str(), a_id);
    assert_eq!(b_invite.1.headers.call_id.as_str(), b_id);
    let bye_to_a = first_request(&sip, "BYE", port_is(main.sipp_sip));
    let bye_to_b = first_request(&sip, "BYE", port_is(b_ports.sipp_sip));
    let times = [
        ("A's INVITE", a_invite.0),
        ("B's INVITE", b_invite.0),
        ("the agent's first INVITE", agent_invites[0].0),
        ("the agent's first BYE", agent_byes[0].0),
        ("the engine's BYE to A", bye_to_a.0),
        ("the agent's second INVITE", agent_invites[1].0),
        ("the agent's second BYE", agent_byes[1].0),
        ("the engine's BYE to B", bye_to_b.0),
    ];
    for pair in times.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "{} comes before {}: {times:?}",
            pair[0].0,
            pair[1].0
        );
    }
    eprintln!(
        "agent rung for A {:.1} s after A called, for B {:.1} s after A's BYE",
        (agent_invites[0].0 - a_invite.0) as f64 / 1e9,
        (agent_invites[1].0 - bye_to_a.0) as f64 / 1e9
    );
    first_response(&sip, 200, "BYE", from_port(main.sipp_sip));
    first_response(&sip, 200, "BYE", from_port(b_ports.sipp_sip));
    first_response(&sip, 200, "BYE", port_is(agent_ports.sipp_sip));
    for port in [main.sipp_sip, b_ports.sipp_sip] {
        assert!(
            requests(&sip, "BYE", from_port(port)).is_empty(),
            "a caller never hangs up by itself"
        );
    }

    // RTP: while each agent call lasts, the agent's tone reaches its
    // caller and the caller's tone reaches the agent; nothing reaches the
    // other caller.
    let rtp = read_rtp(&pcap, main.rtp_min, main.rtp_max);
    let agent_ok = |n: usize| {
        let call_id = agent_invites[n].1.headers.call_id.as_str();
        first_response(&sip, 200, "INVITE", |m: &&Sip| {
            m.src.port() == agent_ports.sipp_sip && sip_call_id(m) == call_id
        })
    };
    let a_ok = first_response(&sip, 200, "INVITE", port_is(main.sipp_sip));
    let b_ok = first_response(&sip, 200, "INVITE", port_is(b_ports.sipp_sip));
    // (engine port, peer port) of each call.
    let a_call = (sdp_port(&a_ok.1.body), sdp_port(&a_invite.1.body));
    let b_call = (sdp_port(&b_ok.1.body), sdp_port(&b_invite.1.body));
    for (n, (caller, other), name) in [(0, (a_call, b_call), "A"), (1, (b_call, a_call), "B")] {
        let ok = agent_ok(n);
        let agent_call = (sdp_port(&agent_invites[n].1.body), sdp_port(&ok.1.body));
        let (from, to) = (ok.0, agent_byes[n].0);
        let window = |p: &&RtpPacket| p.time_ns > from && p.time_ns < to;
        let sent_to = |(engine, _): (u16, u16)| -> Vec<&RtpPacket> {
            rtp.iter()
                .filter(|p| p.dst.port() == engine)
                .filter(window)
                .collect()
        };
        let got_by = |(engine, peer): (u16, u16)| -> Vec<&RtpPacket> {
            rtp.iter()
                .filter(|p| p.src.port() == engine && p.dst.port() == peer)
                .filter(window)
                .collect()
        };
        let (by_agent, by_caller) = (sent_to(agent_call), sent_to(caller));
        let (at_agent, at_caller) = (got_by(agent_call), got_by(caller));
        let to_caller = relayed(&by_agent, &at_caller);
        let to_agent = relayed(&by_caller, &at_agent);
        eprintln!(
            "agent call {} (caller {name}): agent sent {}, {to_caller} reached the caller; \
             caller sent {}, {to_agent} reached the agent",
            n + 1,
            by_agent.len(),
            by_caller.len()
        );
        assert!(
            by_agent.len() >= 150 && by_caller.len() >= 150,
            "both sides talked during agent call {}: agent {}, caller {name} {}",
            n + 1,
            by_agent.len(),
            by_caller.len()
        );
        assert!(
            to_caller * 10 >= by_agent.len() * 9,
            "the agent's audio reaches caller {name}: {to_caller} of {}",
            by_agent.len()
        );
        assert!(
            to_agent * 10 >= by_caller.len() * 9,
            "caller {name}'s audio reaches the agent: {to_agent} of {}",
            by_caller.len()
        );
        assert_eq!(
            relayed(&by_agent, &got_by(other)),
            0,
            "the agent's audio must not reach the other caller"
        );
        assert_eq!(
            relayed(&sent_to(other), &at_agent),
            0,
            "the other caller's audio must not reach the agent"
        );
    }

    engine.stop();
    engine.assert_no_panic();
}

/// Issue 4 with a real softphone as the agent: the loop of
/// [`callback_calls_agent_first_then_customer_and_bridges`] (the caller
/// registers a callback with sipp's `play_dtmf`, the callback is launched,
/// the agent is called first, then the customer at the carrier sipp UAS,
/// and both are bridged), but the agent is baresip 1.0.0 answering by
/// itself (`answermode=auto`). Its `aubridge` plays what it hears back as
/// its microphone, so the carrier's 440 Hz tone comes back from baresip:
/// the capture shows the tone reaching baresip and baresip's audio (the
/// tone) reaching the carrier, both through the engine. The carrier hangs
/// up; the engine ends baresip's leg.
#[test]
fn baresip_agent_completes_the_callback() {
    let test = "baresip_agent_completes_the_callback";
    if !require_tools(
        test,
        &[
            "sipp",
            "tshark",
            "baresip",
            "/usr/lib/baresip/modules/aubridge.so",
        ],
    ) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let mut config = dialing_config(&main, &agent_ports, &carrier_ports, 60, 3);
    if let Some(c) = config.callbacks.as_mut() {
        // alice's phone REGISTERs (digest); libre 1.1 needs MD5 alone
        // (see Baresip::agent).
        c.agents = Vec::new();
        c.registered_agents = vec![("alice".into(), "alice".into(), "phone-Secret-7".into())];
        c.digest_algorithms = vec!["MD5".into()];
        c.customer_ring_timeout_s = 10;
    }
    let capture = Capture::start_filter(
        &dir,
        "baresip",
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
    let mut phone = Baresip::agent(&dir, &agent_ports, "alice", engine_addr, "phone-Secret-7");
    assert!(
        phone.wait_output(Duration::from_secs(10), "baresip is ready"),
        "baresip did not start:\n{}",
        phone.output()
    );
    assert!(
        phone.wait_output(Duration::from_secs(10), "200 OK"),
        "baresip did not register:\n{}",
        phone.output()
    );
    std::fs::create_dir_all(dir.join("carrier")).expect("test dir is writable");
    write_tone_pcap(&dir.join("carrier").join("carrier_audio.pcap"), 440.0, 400);
    let inf = write_inf(&dir, "numbers.csv", &[NUMBER.to_owned()]);

    let (caller, carrier) = thread::scope(|s| {
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
        // The carrier UAS listens before the callback can be launched.
        wait_udp_bound(carrier_ports.sipp_sip, Duration::from_secs(10));
        let caller = Sipp::uac(scenario_file("register_callback.xml"), engine_addr, &main)
            .inf(&inf)
            .load(1, 1, 1)
            .run(&dir, "caller");
        (caller, carrier.join().expect("carrier sipp thread"))
    });
    assert_clean(&caller, 1);
    assert_clean(&carrier, 1);
    let ended = phone.wait_output(Duration::from_secs(10), "terminated");
    let pcap = capture.stop();
    let output = phone.quit();
    assert!(ended, "baresip's call did not end:\n{output}");
    // answermode=auto: baresip answers the engine's INVITE by itself.
    assert!(
        output.contains("answering call") && output.contains("Call established"),
        "baresip did not answer:\n{output}"
    );
    for line in output.lines().filter(|l| !l.contains("audio=")) {
        eprintln!("baresip: {line}");
    }
    let inbound_call_id = caller.call_id(1, SIPP_IP);

    // The store: completed after one answered attempt with alice.
    let (row, store) = completed_once(&engine.store_path(), &inbound_call_id);
    let row = &row;

    // SIP: baresip answers before the customer is called; the carrier's
    // BYE ends baresip's leg, which baresip accepts.
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
        "baresip is INVITEd and answers before the customer is INVITEd"
    );
    // The phone registered with digest auth (401 with MD5, then 200),
    // and the agent leg went to the Contact it registered.
    let registers = requests(&sip, "REGISTER", from_agent);
    assert!(registers.len() >= 2, "REGISTER, then with credentials");
    let challenge = first_response(&sip, 401, "REGISTER", to_agent);
    let first_challenge = header(&challenge.1.headers, "WWW-Authenticate").unwrap_or_default();
    assert!(
        first_challenge.contains("algorithm=MD5"),
        "MD5 offered: {first_challenge}"
    );
    let registered = first_response(&sip, 200, "REGISTER", to_agent);
    assert!(challenge.0 < registered.0 && registered.0 < agent_invite.0);
    let authorized = registers
        .iter()
        .find(|r| header(&r.1.headers, "Authorization").is_some())
        .expect("a REGISTER with Authorization");
    let contact = header(&authorized.1.headers, "Contact").expect("REGISTER Contact");
    let agent_uri = contact
        .trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        &*agent_invite.1.uri,
        agent_uri.as_str(),
        "INVITE to the registered Contact"
    );
    let carrier_bye = first_request(&sip, "BYE", from_carrier);
    let agent_bye = first_request(&sip, "BYE", to_agent);
    assert!(
        carrier_bye.0 < agent_bye.0,
        "the carrier's BYE ends baresip's leg"
    );
    let agent_bye_ok = first_response(&sip, 200, "BYE", from_agent);
    assert!(agent_bye.0 < agent_bye_ok.0);
    assert!(
        requests(&sip, "BYE", from_agent).is_empty(),
        "baresip never hung up by itself"
    );

    // RTP while bridged: the carrier's tone reaches baresip unchanged (both
    // legs PCMA), baresip sends it back (aubridge) and that reaches the
    // carrier unchanged.
    let agent_leg = sdp_port(&agent_invite.1.body);
    let customer_leg = sdp_port(&customer_invite.1.body);
    let baresip_media = sdp_port(&agent_ok.1.body);
    let carrier_media = sdp_port(&customer_ok.1.body);
    let rtp = read_rtp(&pcap, main.rtp_min, main.rtp_max);
    let bridged = |p: &&RtpPacket| p.time_ns > customer_ok.0 && p.time_ns < carrier_bye.0;
    let flow = |from: u16, to: u16| -> Vec<&RtpPacket> {
        rtp.iter()
            .filter(|p| p.src.port() == from && p.dst.port() == to)
            .filter(bridged)
            .collect()
    };
    let by_carrier = flow(carrier_media, customer_leg);
    let at_baresip = flow(agent_leg, baresip_media);
    let by_baresip = flow(baresip_media, agent_leg);
    let at_carrier = flow(customer_leg, carrier_media);
    let to_baresip = relayed(&by_carrier, &at_baresip);
    let to_carrier = relayed(&by_baresip, &at_carrier);
    // baresip's echo lags what it hears: judge its audio from 0.5 s on.
    let echo_from = customer_ok.0 + 500_000_000;
    let echoed: Vec<&RtpPacket> = by_baresip
        .iter()
        .copied()
        .filter(|p| p.time_ns > echo_from)
        .collect();
    let with_tone = echoed
        .iter()
        .filter(|p| p.pt == 8 && tone_share(&p.payload, 440.0) > 0.8)
        .count();
    eprintln!(
        "RTP while bridged: carrier sent {}, {to_baresip} reached baresip; baresip sent {} \
         ({with_tone} of {} after 0.5 s carry the 440 Hz tone), {to_carrier} reached the carrier",
        by_carrier.len(),
        by_baresip.len(),
        echoed.len()
    );
    assert!(
        by_carrier.len() >= 150,
        "the carrier sent audio: {}",
        by_carrier.len()
    );
    assert!(
        to_baresip * 10 >= by_carrier.len() * 9,
        "the carrier's audio reaches baresip: {to_baresip} of {}",
        by_carrier.len()
    );
    assert!(
        echoed.len() >= 150 && with_tone * 10 >= echoed.len() * 9,
        "baresip sends the carrier's tone back: {with_tone} of {} packets",
        echoed.len()
    );
    assert!(
        to_carrier * 10 >= by_baresip.len() * 9,
        "baresip's audio reaches the carrier: {to_carrier} of {}",
        by_baresip.len()
    );

    // CDR: an answered row per leg, linked to the callback.
    let cdrs: Vec<CdrRecord> = store
        .cdrs(None, None)
        .expect("CDRs")
        .into_iter()
        .filter(|c| c.callback == Some(row.id))
        .collect();
    for (leg, peer) in [
        (Leg::Agent, agent_uri.as_str()),
        (Leg::Customer, &*customer_invite.1.uri),
    ] {
        let rows: Vec<&CdrRecord> = cdrs.iter().filter(|c| c.leg == leg).collect();
        assert_eq!(rows.len(), 1, "one {leg:?} row: {cdrs:#?}");
        let cdr = rows[0];
        assert_eq!(cdr.outcome, LegOutcome::Answered, "{cdr:?}");
        assert_eq!(cdr.sip_code, Some(200), "{cdr:?}");
        assert_eq!(cdr.peer, peer);
        assert_eq!(cdr.inbound_call_id, inbound_call_id);
    }

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
        registered_agents: Vec::new(),
        digest_algorithms: Vec::new(),
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
        sip_context: None,
    };
    match store.register(&new).expect("register") {
        Registration::Registered(id) => id,
        other => panic!("not registered: {other:?}"),
    }
}

/// Issue 11 acceptance 2, end to end: a manager creates a callback through
/// `POST /v1/callbacks` scheduled a few seconds ahead; the engine launches
/// it at its time — not before — agent first (sipp UAS), then the carrier
/// (sipp UAS), and it completes.
#[test]
fn a_callback_created_through_the_api_launches_at_its_scheduled_time() {
    let test = "a_callback_created_through_the_api_launches_at_its_scheduled_time";
    if !require_tools(test, &["sipp"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let mut config = dialing_config(&main, &agent_ports, &carrier_ports, 5, 1);
    let api_port = main.engine_sip + 2;
    config.api_port = Some(api_port);
    let token = manager_token(&dir);
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();
    std::fs::create_dir_all(dir.join("carrier")).expect("test dir is writable");
    write_tone_pcap(&dir.join("carrier").join("carrier_audio.pcap"), 440.0, 400);

    let (agent, carrier, scheduled_for, id) = thread::scope(|s| {
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
        wait_udp_bound(agent_ports.sipp_sip, Duration::from_secs(10));
        wait_udp_bound(carrier_ports.sipp_sip, Duration::from_secs(10));
        let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
        let scheduled_for = jiff::Timestamp::from_second(ahead.as_second()).expect("whole seconds");
        let body = format!(
            r#"{{"queue":"support","number":"{NUMBER}","scheduled_for":"{scheduled_for}"}}"#
        );
        let (status, answer) = http_post(api_port, "/v1/callbacks", &token, &body);
        assert_eq!(status, 201, "{answer}");
        let created: serde_json::Value = serde_json::from_str(&answer).expect("a JSON callback");
        let id = CallbackId(created["id"].as_i64().expect("id"));
        let row = stored_callbacks(&engine.store_path())
            .into_iter()
            .find(|r| r.id == id)
            .expect("stored");
        assert_eq!(row.next_attempt_at, Some(scheduled_for));
        let agent = agent.join().expect("agent sipp thread");
        let carrier = carrier.join().expect("carrier sipp thread");
        (agent, carrier, scheduled_for, id)
    });
    assert_clean(&agent, 1);
    assert_clean(&carrier, 1);
    let rows = wait_rows(&engine.store_path(), |r| {
        r.id == id && r.status == Status::Completed
    });
    assert_eq!(rows.len(), 1);
    let store = SqliteStore::open(&engine.store_path()).expect("open the store");
    let attempts = store.attempts(id).expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attempt.outcome, Outcome::Answered);
    assert!(
        attempts[0].attempt.started_at >= scheduled_for,
        "launched at {} for {scheduled_for}",
        attempts[0].attempt.started_at
    );
    engine.stop();
    engine.assert_no_panic();
}

/// A token of manager `ann`, whose unit `east` groups the queue `support`,
/// written to the test's store file before the engine starts.
fn manager_token(dir: &TestDir) -> String {
    use callbackd::callback::store::{AccountStore, Change, Role, testing::user_with_token};
    let mut store = SqliteStore::open(&dir.join("callbackd.sqlite")).expect("open the store");
    let change = Change {
        actor: "test".into(),
        at: jiff::Timestamp::now(),
    };
    store
        .create_unit("east", &[QueueId("support".into())], &change)
        .expect("unit");
    user_with_token(&mut store, "ann", Role::Manager, &["east"])
}

/// Issue 11 acceptance 3: with the engine running, a manager switches
/// registration off for their queue through the API; the next sipp caller
/// is answered, hears "unable" (the IVR starts without the offer) and gets
/// the engine's BYE, and nothing is stored. The switch is stored with the
/// organisation (`callbackd export` shows it); switched back on, the next
/// caller is offered a callback again. No restart.
#[test]
fn a_queue_switched_off_through_the_api_tells_the_next_caller_unable() {
    let test = "a_queue_switched_off_through_the_api_tells_the_next_caller_unable";
    if !require_tools(test, &["sipp"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let mut config = dialing_config(&main, &agent_ports, &carrier_ports, 5, 1);
    let api_port = main.engine_sip + 2;
    config.api_port = Some(api_port);
    let token = manager_token(&dir);
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();

    let (status, answer) = http(
        api_port,
        "PUT",
        "/v1/queues/support/switches",
        &token,
        r#"{"registration_enabled":false}"#,
    );
    assert_eq!(status, 200, "{answer}");
    let switches: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(switches["queues"]["support"]["registration_enabled"], false);

    let off = Sipp::uac(scenario_file("caller_hears_unable.xml"), engine_addr, &main)
        .timeout_s(40)
        .run(&dir, "caller-off");
    assert_clean(&off, 1);
    let ivr_start = |call_id: &str| {
        engine
            .log_lines()
            .into_iter()
            .find(|l| support::is_call_event(l, "IVR starts", call_id))
            .unwrap_or_else(|| panic!("no \"IVR starts\" for {call_id}: {}", engine.log_tail(30)))
    };
    let line = ivr_start(&off.call_id(1, SIPP_IP));
    assert_eq!(log_field(&line, "offer_callbacks"), Some("false"), "{line}");
    assert!(stored_callbacks(&engine.store_path()).is_empty());

    // Stored: the export of the organisation in force shows the switch.
    let export = std::process::Command::new(support::callbackd_bin())
        .arg("--config")
        .arg(engine.config_path())
        .arg("export")
        .output()
        .expect("callbackd export runs");
    assert!(export.status.success(), "{export:?}");
    let text = String::from_utf8_lossy(&export.stdout);
    let exported =
        callbackd::config::Config::from_toml_str(&text, "export").expect("export parses");
    let support = exported
        .queues
        .iter()
        .find(|q| q.id.as_str() == "support")
        .expect("support exported");
    assert!(!support.registration_enabled, "{text}");

    let (status, answer) = http(
        api_port,
        "PUT",
        "/v1/queues/support/switches",
        &token,
        r#"{"registration_enabled":true}"#,
    );
    assert_eq!(status, 200, "{answer}");
    let on = Sipp::uac(scenario_file("hangup_mid_entry.xml"), engine_addr, &main)
        .timeout_s(40)
        .run(&dir, "caller-on");
    assert_clean(&on, 1);
    let line = ivr_start(&on.call_id(1, SIPP_IP));
    assert_eq!(log_field(&line, "offer_callbacks"), Some("true"), "{line}");
    engine.stop();
    engine.assert_no_panic();
}

/// `POST path` with a bearer token and a JSON body to the API.
fn http_post(port: u16, path: &str, token: &str, body: &str) -> (u16, String) {
    support::api_request(port, "POST", path, token, Some(body))
}

/// `method path` with a bearer token and a JSON body to the API.
fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    support::api_request(port, method, path, token, Some(body))
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

/// Every request `method` that `pick` selects, in capture order.
fn requests<'a>(
    sip: &'a [Sip],
    method: &str,
    pick: impl Fn(&&Sip) -> bool,
) -> Vec<(i128, &'a Request)> {
    sip.iter()
        .filter(|m| pick(m))
        .filter_map(|m| match &m.message {
            Message::Request(r) if r.method.as_str() == method => Some((m.time_ns, r)),
            _ => None,
        })
        .collect()
}

/// The Call-ID of a captured message.
fn sip_call_id(m: &Sip) -> &str {
    match &m.message {
        Message::Request(r) => r.headers.call_id.as_str(),
        Message::Response(r) => r.headers.call_id.as_str(),
    }
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

/// The one stored callback, once completed: registered by the call
/// `inbound_call_id`, one answered attempt with alice. With the store, for
/// further reads.
fn completed_once(store_path: &Path, inbound_call_id: &str) -> (CallbackRow, SqliteStore) {
    let mut rows = wait_rows(store_path, |r| r.status == Status::Completed);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = rows.remove(0);
    assert_eq!(row.inbound_call_id, inbound_call_id);
    assert_eq!(row.attempts, 1);
    let store = SqliteStore::open(store_path).expect("open the store");
    let attempts = store.attempts(row.id).expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].attempt.outcome, Outcome::Answered);
    assert_eq!(attempts[0].attempt.agent.as_deref(), Some("alice"));
    (row, store)
}

/// Runs `callbackd cdr --config <config> <args>` and splits its CSV (no
/// field here holds a comma or a quote).
fn cdr_csv(config: &Path, args: &[&str]) -> Vec<Vec<String>> {
    let out = std::process::Command::new(support::callbackd_bin())
        .arg("cdr")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("callbackd can be spawned");
    assert!(
        out.status.success(),
        "callbackd cdr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("CSV is UTF-8");
    assert!(text.ends_with("\r\n"), "RFC 4180 CRLF line ends: {text:?}");
    text.split_terminator("\r\n")
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
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

/// The share of a PCMA payload's energy at `hz` (single-bin DFT): near 1
/// for a pure tone at that frequency, near 0 for other sounds or silence.
fn tone_share(payload: &[u8], hz: f64) -> f64 {
    let samples: Vec<f64> = payload
        .iter()
        .map(|&b| f64::from(callbackd::media::g711::Law::Alaw.decode(b)))
        .collect();
    let total: f64 = samples.iter().map(|x| x * x).sum();
    if total < 1.0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (re, im) = samples
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(re, im), (n, x)| {
            let phase = w * n as f64;
            (re + x * phase.cos(), im + x * phase.sin())
        });
    2.0 * (re * re + im * im) / samples.len() as f64 / total
}

/// The store's rows once `done` holds for one of them (the engine records
/// the attempt right after the last BYE).
fn wait_rows(path: &Path, done: impl Fn(&CallbackRow) -> bool) -> Vec<CallbackRow> {
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
        // Poll interval: the engine is another process.
        thread::sleep(Duration::from_millis(100));
    }
}
