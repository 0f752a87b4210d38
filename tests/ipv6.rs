//! SIP and RTP over IPv6 (issue 9, point 8), on `[::1]` with the release
//! binary: the engine binds `[::1]` (SIP and RTP, ACL `::1/128`); a sipp
//! caller over `[::1]` offers `c=IN IP6 ::1`, hears the IVR over IPv6,
//! keys its number with RFC 4733 and so registers a callback; the callback
//! then calls a sipp agent at `sip:alice@[::1]:…` and a sipp carrier at the
//! trunk's `[::1]` termination, and bridges them. A tshark capture shows
//! every SIP message and every RTP packet on IPv6, the engine's SDP with
//! `c=IN IP6 ::1`, the prompts reaching the caller, and the carrier's
//! audio reaching the agent through the engine.

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{LaunchStore, SqliteStore, Status};

use support::{
    CallbackConfig, Capture, Engine, EngineConfig, IvrConfig, Ports, Sipp, TestDir, assert_clean,
    interop_lock, require_tools, scenario_file, stored_callbacks, write_inf, write_tone_pcap,
};

const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const NUMBER: &str = "3125550166";

#[test]
fn ipv6_caller_registers_a_callback_that_is_bridged_over_ipv6() {
    let test = "ipv6_caller_registers_a_callback_that_is_bridged_over_ipv6";
    if !require_tools(test, &["sipp", "tshark"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let agent_uri = format!("sip:alice@[::1]:{}", agent_ports.sipp_sip);
    let mut config = EngineConfig::new(&main);
    config.ip = V6;
    config.acl_sip = vec!["::1/128".into()];
    config.acl_rtp = vec!["::1/128".into()];
    config.ivr = IvrConfig {
        first_digit_timeout_s: 8,
        inter_digit_timeout_s: 4,
        ..IvrConfig::default()
    };
    config.callbacks = Some(CallbackConfig {
        termination: SocketAddr::new(V6, carrier_ports.sipp_sip),
        agents: vec![("alice".into(), agent_uri.clone())],
        poll_interval_ms: 200,
        retry_time_s: 60,
        max_retries: 1,
        agent_ring_timeout_s: 10,
        customer_ring_timeout_s: 10,
        agent_cooldown_s: 60,
        callback_number: "3125550100".into(),
        registered_agents: Vec::new(),
        digest_algorithms: Vec::new(),
    });
    let capture = Capture::start_filter(
        &dir,
        "ipv6",
        // IPv6 only: other tests on this machine may use the same ports on
        // 127.0.0.1; the engine binds ::1 alone, so nothing of its traffic
        // can be IPv4.
        &format!(
            "ip6 and (udp port {} or udp port {} or udp port {} or udp portrange {}-{})",
            main.engine_sip,
            agent_ports.sipp_sip,
            carrier_ports.sipp_sip,
            main.rtp_min,
            main.rtp_max
        ),
    );
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();
    assert_eq!(engine_addr.ip(), V6);
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
            .ip(V6)
            .arg("-aa")
            .timeout_s(60)
            .run(&dir, "agent")
        });
        let carrier = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_audio_hangup.xml"),
                engine_addr,
                &carrier_ports,
            )
            .ip(V6)
            .arg("-aa")
            .timeout_s(60)
            .run(&dir, "carrier")
        });
        support::wait_udp_bound(agent_ports.sipp_sip, Duration::from_secs(10));
        support::wait_udp_bound(carrier_ports.sipp_sip, Duration::from_secs(10));
        let caller = Sipp::uac(scenario_file("register_callback.xml"), engine_addr, &main)
            .ip(V6)
            .inf(&inf)
            .timeout_s(60)
            .run(&dir, "caller");
        (
            caller,
            agent.join().expect("agent sipp thread"),
            carrier.join().expect("carrier sipp thread"),
        )
    });
    assert_clean(&caller, 1);
    assert_clean(&agent, 1);
    assert_clean(&carrier, 1);

    // The store: the keyed number, completed after one answered attempt.
    let rows = wait_completed(&engine.store_path());
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].number, NUMBER, "the number keyed over IPv6");
    assert_eq!(rows[0].inbound_call_id, caller.call_id(1, V6));
    let store = SqliteStore::open(&engine.store_path()).expect("open the store");
    let attempts = store.attempts(rows[0].id).expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].attempt.outcome, Outcome::Answered);
    let pcap = capture.stop();
    engine.stop();
    engine.assert_no_panic();

    // SIP over IPv6: the three dialogs (caller, agent, carrier), each with
    // INVITE, 200, ACK, BYE and 200; the engine's SDP (its 200 to the
    // caller, its INVITEs to agent and carrier) says IP6.
    let sip = tshark_fields(
        &pcap,
        None,
        &format!("udp.port=={} && sip", main.engine_sip),
        &[
            "ip.src",
            "ipv6.src",
            "sip.Method",
            "sip.Status-Code",
            "sdp.connection_info",
        ],
    );
    let count = |method: &str| sip.iter().filter(|f| f[2] == method).count();
    assert!(
        count("INVITE") >= 3 && count("ACK") >= 3 && count("BYE") >= 3,
        "the three dialogs over IPv6: {sip:?}"
    );
    let engine_sdp: Vec<&str> = sip
        .iter()
        .filter(|f| f[1] == "::1" && !f[4].is_empty())
        .map(|f| f[4].as_str())
        .collect();
    assert!(
        engine_sdp.len() >= 3,
        "the engine's SDP bodies (200 to the caller, INVITE to agent and carrier): {sip:?}"
    );
    for c in &engine_sdp {
        assert_eq!(*c, "IN IP6 ::1", "the engine's c= line");
    }

    // RTP over IPv6. The caller (its media port: sipp's -mp for call 1)
    // hears the prompts; the carrier's tone reaches the agent.
    let decode = format!("udp.port=={}-{},rtp", main.rtp_min, main.rtp_max);
    let rtp = tshark_fields(
        &pcap,
        Some(&decode),
        "rtp.version==2",
        &[
            "ip.src",
            "udp.srcport",
            "udp.dstport",
            "rtp.p_type",
            "rtp.payload",
        ],
    );
    let in_range = |p: &str| {
        p.parse::<u16>()
            .is_ok_and(|p| (main.rtp_min..=main.rtp_max).contains(&p))
    };
    let to = |port: u16| -> Vec<&Vec<String>> {
        rtp.iter()
            .filter(|f| in_range(&f[1]) && f[2] == port.to_string())
            .collect()
    };
    let from = |port: u16| -> Vec<&Vec<String>> {
        rtp.iter()
            .filter(|f| f[1] == port.to_string() && in_range(&f[2]))
            .collect()
    };
    let prompts = to(main.sipp_media);
    let distinct: HashSet<&str> = prompts
        .iter()
        .filter(|f| f[3] == "0")
        .flat_map(|f| f[4].split(':'))
        .collect();
    assert!(
        prompts.len() >= 200 && distinct.len() > 16,
        "the IVR's audio reaches the caller over IPv6: {} packets, {} distinct bytes",
        prompts.len(),
        distinct.len()
    );
    let carrier_sent = from(carrier_ports.sipp_media);
    // The 440 Hz tone repeats every 5 packets: a set of 5 payloads.
    let carrier_audio: HashSet<&str> = carrier_sent.iter().map(|f| f[4].as_str()).collect();
    let relayed = to(agent_ports.sipp_media)
        .iter()
        .filter(|f| carrier_audio.contains(f[4].as_str()))
        .count();
    eprintln!(
        "IPv6 RTP: {} packets to the caller, carrier sent {}, {relayed} of them reached the agent",
        prompts.len(),
        carrier_sent.len()
    );
    assert!(
        carrier_sent.len() >= 150 && relayed * 10 >= carrier_sent.len() * 9,
        "the carrier's audio reaches the agent over IPv6: carrier sent {}, {relayed} relayed",
        carrier_sent.len()
    );
}

/// The store's rows once one is completed; panics after 10 s.
fn wait_completed(path: &Path) -> Vec<callbackd::callback::store::CallbackRow> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = stored_callbacks(path);
        if rows.iter().any(|r| r.status == Status::Completed) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the callback did not complete: {rows:#?}"
        );
        // Poll interval: the engine is another process.
        thread::sleep(Duration::from_millis(100));
    }
}

/// `fields` of every packet of `pcap` matching `filter` (`decode_as`: a
/// tshark `-d` rule), tab-separated by tshark.
fn tshark_fields(
    pcap: &Path,
    decode_as: Option<&str>,
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap);
    if let Some(d) = decode_as {
        cmd.args(["-d", d]);
    }
    cmd.args(["-Y", filter, "-T", "fields", "-E", "separator=/t"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("tshark can be spawned");
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut v: Vec<String> = l.split('\t').map(str::to_owned).collect();
            v.resize(fields.len(), String::new());
            v
        })
        .collect()
}
