//! Interop with linphone-cli 5.1 (issue 9, acceptance point 3): the release
//! `callbackd` binary against Debian's `linphone-daemon`, a second real
//! softphone beside baresip —
//!
//! - as callers: one phone keys with RFC 4733 telephone-events, another
//!   (at the same time) with SIP INFO; each registers a callback for the
//!   number it keyed, and the engine's log names the DTMF source per call;
//! - as a registered agent: the phone REGISTERs with digest auth, answers
//!   the engine's INVITE by itself and the callback completes with a sipp
//!   UAS as the carrier.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::Duration;

use callbackd::callback::QueueId;
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{
    LaunchStore, NewCallback, Registration, SqliteStore, Status, Store,
};

use support::linphone::{Dtmf, Linphone};
use support::{
    CallbackConfig, Engine, EngineConfig, IvrConfig, Ports, Sipp, TestDir, assert_clean,
    interop_lock, log_field, require_tools, scenario_file, stored_callbacks, wait_udp_bound,
    write_tone_pcap,
};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Two linphone callers at once, one per DTMF method: each presses 1 at the
/// offer, keys its own number and confirms with 1; the engine stores both
/// numbers and hangs up both calls.
#[test]
fn linphone_callers_register_callbacks_with_rfc4733_and_sip_info() {
    let test = "linphone_callers_register_callbacks_with_rfc4733_and_sip_info";
    if !require_tools(test, &["linphone-daemon"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let main = Ports::allocate();
    let (p4733, pinfo) = (Ports::allocate(), Ports::allocate());
    let mut config = EngineConfig::new(&main);
    config.ivr = IvrConfig {
        first_digit_timeout_s: 8,
        inter_digit_timeout_s: 4,
        ..IvrConfig::default()
    };
    let mut engine = Engine::start(&config, &dir);
    let target = engine.sip_addr();
    let callers = [
        ("rfc", Dtmf::Rfc4733, p4733, "3125550188", "rfc4733"),
        ("info", Dtmf::Info, pinfo, "3125550199", "info"),
    ];
    thread::scope(|s| {
        for (name, dtmf, ports, number, _) in &callers {
            let dir = &dir;
            s.spawn(move || {
                let mut phone = Linphone::start(dir, name, ports, LO, *dtmf, false);
                phone.ok(&format!("call sip:service@{target}"));
                phone.wait_call_state("LinphoneCallStreamsRunning", Duration::from_secs(10));
                // Barge-in: 1 during the offer, the number, then 1 to
                // confirm during the read-back.
                phone.keys("1", Duration::from_millis(700));
                phone.keys(number, Duration::from_millis(400));
                thread::sleep(Duration::from_millis(700));
                phone.keys("1", Duration::from_millis(0));
                // "Scheduled", goodbye, then the engine's BYE.
                phone.wait_no_call(Duration::from_secs(30));
            });
        }
    });

    let rows = stored_callbacks(&engine.store_path());
    let log = engine.log_lines();
    for (name, _, _, number, source) in &callers {
        // The call this phone placed (its From user is its name).
        let call_id = log
            .iter()
            .filter(|l| l.contains(": call started "))
            .find(|l| log_field(l, "from").is_some_and(|f| f.starts_with(&format!("sip:{name}@"))))
            .and_then(|l| log_field(l, "call_id"))
            .unwrap_or_else(|| panic!("no call from linphone {name} in {}", engine.log_tail(60)))
            .to_owned();
        let sources: Vec<&str> = log
            .iter()
            .filter(|l| l.contains(": dtmf ") && log_field(l, "call_id") == Some(&call_id))
            .filter_map(|l| log_field(l, "source"))
            .collect();
        assert_eq!(
            sources.len(),
            12,
            "linphone {name} keyed 12 digits, the engine counted {sources:?}"
        );
        assert!(
            sources.iter().all(|s| s == source),
            "linphone {name} keys with {source}: {sources:?}"
        );
        let row = rows
            .iter()
            .find(|r| r.inbound_call_id == call_id)
            .unwrap_or_else(|| panic!("no callback stored for {name}'s call: {rows:#?}"));
        assert_eq!(row.number, *number, "the number linphone {name} keyed");
        assert_eq!(row.status, Status::Pending);
    }
    assert_eq!(rows.len(), 2, "{rows:#?}");
    engine.stop();
    engine.assert_no_panic();
}

/// linphone as alice's phone: REGISTERs (digest) with callbackd, answers
/// the callback's INVITE by itself; the carrier (sipp) answers, talks 5 s
/// and hangs up; the engine ends linphone's call and records the callback
/// completed after one answered attempt with alice.
#[test]
fn linphone_agent_completes_a_callback() {
    let test = "linphone_agent_completes_a_callback";
    if !require_tools(test, &["linphone-daemon", "sipp"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let mut config = EngineConfig::new(&main);
    config.callbacks = Some(CallbackConfig {
        termination: SocketAddr::new(LO, carrier_ports.sipp_sip),
        agents: Vec::new(),
        poll_interval_ms: 200,
        retry_time_s: 60,
        max_retries: 1,
        agent_ring_timeout_s: 10,
        customer_ring_timeout_s: 10,
        agent_cooldown_s: 60,
        callback_number: "3125550100".into(),
        registered_agents: vec![("alice".into(), "alice".into(), "phone-Secret-7".into())],
        digest_algorithms: Vec::new(),
    });
    let id = register_direct(&dir.join("callbackd.sqlite"), "3125550177");
    std::fs::create_dir_all(dir.join("carrier")).expect("test dir is writable");
    write_tone_pcap(&dir.join("carrier").join("carrier_audio.pcap"), 440.0, 400);
    // The carrier listens before the engine can launch the callback.
    let carrier = thread::scope(|s| {
        let carrier = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_audio_hangup.xml"),
                SocketAddr::new(LO, main.engine_sip),
                &carrier_ports,
            )
            .arg("-aa")
            .timeout_s(60)
            .run(&dir, "carrier")
        });
        wait_udp_bound(carrier_ports.sipp_sip, Duration::from_secs(10));
        let mut engine = Engine::start(&config, &dir);
        let mut phone = Linphone::start(&dir, "alice", &agent_ports, LO, Dtmf::Rfc4733, true);
        phone.register("alice", engine.sip_addr(), "phone-Secret-7");
        // alice is reachable: the engine calls her, she answers by herself.
        phone.wait_call_state("LinphoneCallStreamsRunning", Duration::from_secs(20));
        // The carrier hangs up after 5 s; the engine ends alice's call.
        phone.wait_no_call(Duration::from_secs(20));
        let carrier = carrier.join().expect("carrier sipp thread");
        let rows = wait_status(&engine.store_path(), Status::Completed);
        assert_eq!(rows[0].id, id);
        assert_eq!(rows[0].attempts, 1);
        let store = SqliteStore::open(&engine.store_path()).expect("open the store");
        let attempts = store.attempts(id).expect("attempts");
        assert_eq!(attempts.len(), 1, "{attempts:#?}");
        assert_eq!(attempts[0].attempt.outcome, Outcome::Answered);
        assert_eq!(attempts[0].attempt.agent.as_deref(), Some("alice"));
        let log = engine.log_lines();
        assert!(
            log.iter().any(|l| l.contains("agent registration changed")
                && log_field(l, "agent") == Some("alice")
                && log_field(l, "reachable") == Some("true")),
            "alice's registration is not in the log:\n{}",
            engine.log_tail(40)
        );
        engine.stop();
        engine.assert_no_panic();
        carrier
    });
    assert_clean(&carrier, 1);
}

/// A due callback for `number` in the store at `path`, before the engine
/// starts (as if a caller had registered it).
fn register_direct(path: &Path, number: &str) -> callbackd::callback::CallbackId {
    let mut store = SqliteStore::open(path).expect("open the store");
    let now = jiff::Timestamp::now();
    let new = NewCallback {
        queue: QueueId("support".into()),
        number: number.into(),
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

/// The store's rows once one of them has `status` (the engine records the
/// attempt right after the last BYE); panics after 10 s.
fn wait_status(path: &Path, status: Status) -> Vec<callbackd::callback::store::CallbackRow> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = stored_callbacks(path);
        if rows.iter().any(|r| r.status == status) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no callback reached {status:?}: {rows:#?}"
        );
        // Poll interval: the engine is another process.
        thread::sleep(Duration::from_millis(100));
    }
}
