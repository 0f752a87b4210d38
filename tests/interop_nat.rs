//! An agent's phone behind NAT (issue 9, acceptance point 3): baresip in a
//! network namespace with a private address REGISTERs with the release
//! `callbackd` binary through a masquerading router namespace, receives a
//! callback and talks past 64·T1 (32 s: baresip's T1 is 500 ms, so a phone
//! that got no ACK for its 200 would have hung up by then); the carrier
//! (sipp, beside the engine) hangs up, and the engine's BYE ends the
//! phone's call. The capture on the engine's side shows the INVITE, the
//! ACK and the BYE sent to the NAT's public address and port — the flow
//! the REGISTER came from — never to the private Contact (unreachable from
//! the engine's namespace); the capture on the phone's side shows the ACK
//! and the BYE arriving. The NAT forgets an idle UDP mapping after 30 s
//! (Linux's default), and neither the phone nor the call's media touch the
//! SIP mapping during the call: the BYE reaches the phone only because the
//! engine's keep-alive OPTIONS (`[registrar] nat_keepalive_s`, 20 s) keep
//! it open — with `nat_keepalive_s = 0` this test fails (the BYE is
//! dropped at the NAT). See `support::netns` for the topology. Needs root
//! (namespaces, veths, nft).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::Duration;

use callbackd::callback::QueueId;
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{
    LaunchStore, NewCallback, Registration, SqliteStore, Status, Store,
};
use callbackd::sip::message::{self, Message};

use support::netns::NatLab;
use support::{
    Baresip, CallbackConfig, Capture, Engine, EngineConfig, Ports, Sipp, TestDir, assert_clean,
    interop_lock, read_udp, require_tools, scenario_file, stored_callbacks, write_tone_pcap,
};

/// How long the carrier talks after its ACK: past 64·T1 = 32 s.
const TALK_MS: u32 = 36_000;

#[test]
fn agent_behind_nat_gets_ack_and_bye_on_its_registered_flow() {
    let test = "agent_behind_nat_gets_ack_and_bye_on_its_registered_flow";
    if !require_tools(
        test,
        &[
            "sipp",
            "tshark",
            "baresip",
            "ip",
            "nft",
            "/usr/lib/baresip/modules/aubridge.so",
        ],
    ) {
        return;
    }
    let _serial = interop_lock();
    // The NAT keeps an idle UDP mapping 30 s (Linux's default, the
    // original defect: "agents behind NAT drop at 32 s"). The engine's BYE
    // comes ~38 s after the last SIP packet of the call on the flow, and
    // baresip sends no keep-alive: only the engine's OPTIONS keep the
    // mapping open.
    let lab = match NatLab::create(30) {
        Ok(lab) => lab,
        Err(why) => {
            let why = format!("{test}: cannot build the NAT lab (root needed): {why}");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {why}"
            );
            eprintln!("SKIPPED {why}");
            return;
        }
    };
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let server_ip = IpAddr::V4(lab.server_ip());
    let public_ip = IpAddr::V4(lab.public_ip());
    let private_ip = IpAddr::V4(lab.agent_ip());
    let in_server = NatLab::exec_in(&lab.server_ns());
    let in_agent = NatLab::exec_in(&lab.agent_ns());
    let mut config = EngineConfig::new(&main);
    config.ip = server_ip;
    let public_net = format!("{}/24", lab.server_ip());
    config.acl_sip = vec![public_net.clone()];
    config.acl_rtp = vec![public_net];
    config.callbacks = Some(CallbackConfig {
        termination: SocketAddr::new(server_ip, carrier_ports.sipp_sip),
        agents: Vec::new(),
        poll_interval_ms: 200,
        retry_time_s: 60,
        max_retries: 1,
        agent_ring_timeout_s: 10,
        customer_ring_timeout_s: 10,
        agent_cooldown_s: 60,
        callback_number: "3125550100".into(),
        registered_agents: vec![("alice".into(), "alice".into(), "phone-Secret-7".into())],
        // Debian's baresip (libre 1.1) needs MD5 alone (see Baresip::agent).
        digest_algorithms: vec!["MD5".into()],
    });
    let id = register_direct(&dir.join("callbackd.sqlite"), "3125550155");
    std::fs::create_dir_all(dir.join("carrier")).expect("test dir is writable");
    write_tone_pcap(
        &dir.join("carrier").join("carrier_audio.pcap"),
        440.0,
        2_000,
    );

    let server_capture = Capture::start_on(&dir, "server", &in_server, &lab.server_iface(), "udp");
    let agent_capture = Capture::start_on(&dir, "agent", &in_agent, &lab.agent_iface(), "udp");
    let mut engine = Engine::start_wrapped(&config, &dir, &as_strs(&in_server));
    let engine_addr = engine.sip_addr();
    let carrier = thread::scope(|s| {
        let carrier = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_audio_hangup_after.xml"),
                engine_addr,
                &carrier_ports,
            )
            .ip(server_ip)
            .wrapped(&in_server)
            .arg("-aa")
            .arg("-d")
            .arg(&TALK_MS.to_string())
            .timeout_s(90)
            .run(&dir, "carrier")
        });
        NatLab::wait_udp_bound(
            &lab.server_ns(),
            carrier_ports.sipp_sip,
            Duration::from_secs(10),
        );
        // The phone registers only now: the callback is due at once.
        let mut phone = Baresip::agent_at(
            &dir,
            &agent_ports,
            private_ip,
            &as_strs(&in_agent),
            "alice",
            engine_addr,
            "phone-Secret-7",
        );
        let registered = phone.wait_output(Duration::from_secs(15), "200 OK");
        assert!(registered, "baresip did not register:\n{}", phone.output());
        let carrier = carrier.join().expect("carrier sipp thread");
        let ended = phone.wait_output(Duration::from_secs(10), "terminated");
        let output = phone.kill();
        assert!(ended, "baresip's call did not end:\n{output}");
        carrier
    });
    assert_clean(&carrier, 1);
    let rows = wait_status(&engine.store_path(), Status::Completed);
    assert_eq!(rows[0].id, id);
    let store = SqliteStore::open(&engine.store_path()).expect("open the store");
    let attempts = store.attempts(id).expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].attempt.outcome, Outcome::Answered);
    assert_eq!(attempts[0].attempt.agent.as_deref(), Some("alice"));
    let server_pcap = server_capture.stop();
    let agent_pcap = agent_capture.stop();
    engine.stop();
    engine.assert_no_panic();

    // The engine's side: the REGISTER came from the NAT's public flow with
    // a private Contact.
    let sip = sip_messages(&server_pcap, main.engine_sip);
    let from_phone = |m: &&Sip| m.src.ip() == public_ip;
    let to_phone = |m: &&Sip| m.dst.ip() == public_ip;
    let register = sip
        .iter()
        .filter(from_phone)
        .find(|m| is_request(m, "REGISTER") && header(m, "Authorization").is_some())
        .unwrap_or_else(|| panic!("no authorized REGISTER from {public_ip}: {sip:#?}"));
    let flow = register.src;
    let contact = header(register, "Contact").unwrap_or_default();
    assert!(
        contact.contains(&private_ip.to_string()),
        "the phone registers its private Contact: {contact}"
    );
    assert_ne!(
        flow.port(),
        agent_ports.sipp_sip,
        "the NAT maps the phone's port"
    );
    // INVITE, ACK and BYE toward the phone: all to that flow.
    let to_flow = |method: &str| -> Vec<&Sip> {
        sip.iter()
            .filter(to_phone)
            .filter(|m| is_request(m, method))
            .collect()
    };
    for method in ["INVITE", "ACK", "BYE"] {
        let sent = to_flow(method);
        assert!(
            !sent.is_empty(),
            "no {method} to the phone's public side {flow}: {sip:#?}"
        );
        for m in &sent {
            assert_eq!(m.dst, flow, "{method} to the REGISTER's flow");
        }
    }
    let ok = sip
        .iter()
        .filter(from_phone)
        .find(|m| is_response(m, 200, "INVITE"))
        .expect("the phone's 200 to the INVITE");
    // The keep-alives: OPTIONS through the same flow, answered by the
    // phone, and one of them during the call.
    let pings = to_flow("OPTIONS");
    for m in &pings {
        assert_eq!(m.dst, flow, "OPTIONS to the REGISTER's flow");
    }
    let bye = to_flow("BYE")[0];
    assert!(
        pings
            .iter()
            .any(|m| m.time_ns > ok.time_ns && m.time_ns < bye.time_ns),
        "a keep-alive during the call: {sip:#?}"
    );
    assert!(
        sip.iter()
            .filter(from_phone)
            .any(|m| is_response(m, 200, "OPTIONS")),
        "the phone answers the keep-alives"
    );
    let talked = (bye.time_ns - ok.time_ns) as f64 / 1e9;
    eprintln!("the phone's call lasted {talked:.1} s; flow {flow}, private Contact {contact}");
    assert!(
        talked > 32.0,
        "the call must outlast 64·T1 = 32 s (it lasted {talked:.1} s)"
    );
    assert!(
        !sip.iter().filter(from_phone).any(|m| is_request(m, "BYE")),
        "the phone hung up by itself (no ACK for its 200?)"
    );
    assert!(
        sip.iter()
            .filter(from_phone)
            .any(|m| is_response(m, 200, "BYE")),
        "the phone answered the engine's BYE"
    );
    // The phone's side: the ACK and the BYE reached its private address.
    let at_phone = sip_messages(&agent_pcap, agent_ports.sipp_sip);
    for method in ["ACK", "BYE"] {
        assert!(
            at_phone
                .iter()
                .any(|m| m.dst.ip() == private_ip && is_request(m, method)),
            "no {method} reached the phone at {private_ip}"
        );
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One SIP message from a capture.
#[derive(Debug)]
struct Sip {
    time_ns: i128,
    src: SocketAddr,
    dst: SocketAddr,
    message: Message,
}

fn sip_messages(pcap: &Path, port: u16) -> Vec<Sip> {
    read_udp(pcap, &format!("udp.port=={port}"))
        .into_iter()
        .filter_map(|p| {
            Some(Sip {
                time_ns: p.time_ns,
                src: p.src,
                dst: p.dst,
                message: message::parse(&p.payload).ok()?,
            })
        })
        .collect()
}

fn is_request(m: &Sip, method: &str) -> bool {
    matches!(&m.message, Message::Request(r) if r.method.as_str() == method)
}

fn is_response(m: &Sip, status: u16, method: &str) -> bool {
    matches!(&m.message, Message::Response(r)
        if r.status == status && r.headers.cseq.method.as_str() == method)
}

fn header<'a>(m: &'a Sip, name: &str) -> Option<&'a str> {
    let headers = match &m.message {
        Message::Request(r) => &r.headers,
        Message::Response(r) => &r.headers,
    };
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

/// A due callback for `number` in the store at `path`.
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
