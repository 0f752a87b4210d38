//! Interop acceptance tests: the release `callbackd` binary against sipp,
//! tshark and raw sockets over loopback.
//!
//! Each test starts its own engine on its own ports (see `support::Ports`)
//! and holds `support::interop_lock()` while it runs, so RTP pacing is never
//! measured with another sipp load running beside it. Files of a failing
//! test (engine log, config, sipp statistics and error log, captures) are
//! kept under `target/tmp/interop/`.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Capture, Engine, EngineConfig, Ports, SIPP_PCAP_DIR, Scenario, Sipp, TestDir, assert_clean,
    assert_paced_audio, check_config, insert_in_table, interop_lock, is_call_started_line,
    parse_dtmf_line, read_rtp, require_tools, rtp_streams, scenario_file, tcp_options, udp_options,
};

/// sipp's stock UAC over UDP: INVITE, ACK, BYE right away, 100 calls at
/// 50 calls/s. The engine answers, starts its prompt and takes the BYE.
#[test]
fn sipp_uac_udp_100_calls() {
    uac_100_calls("sipp_uac_udp_100_calls", "u1");
}

/// The same over TCP, all calls on one connection (`-t t1`).
#[test]
fn sipp_uac_tcp_100_calls() {
    uac_100_calls("sipp_uac_tcp_100_calls", "t1");
}

/// sipp's stock media UAC: offers PCMA and telephone-event/101, plays
/// g711a.pcap for ~8 s, sends DTMF `1` from dtmf_2833_1.pcap, then BYE.
/// 100 calls at 10 calls/s (about 90 at once at the peak, ~20 s in all).
/// Besides a clean sipp run, the capture of the engine's RTP range must show
/// one paced PCMA stream of real audio per call, and the log exactly one
/// digit `1` per call.
#[test]
fn sipp_uac_pcap_100_calls() {
    let test = "sipp_uac_pcap_100_calls";
    let g711a = format!("{SIPP_PCAP_DIR}/g711a.pcap");
    let dtmf1 = format!("{SIPP_PCAP_DIR}/dtmf_2833_1.pcap");
    if !require_tools(test, &["sipp", "tshark", &g711a, &dtmf1]) {
        return;
    }
    const CALLS: u64 = 100;
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let ports = Ports::allocate();
    let mut engine = Engine::start(&EngineConfig::new(&ports), &dir);
    let capture = Capture::start(&dir, "rtp", ports.rtp_min, ports.rtp_max);

    let run = Sipp::uac(Scenario::Builtin("uac_pcap"), engine.sip_addr(), &ports)
        .load(100, 10, 100)
        .run(&dir, "sipp");
    let pcap = capture.stop();
    engine.stop();
    assert_clean(&run, CALLS);
    engine.assert_no_panic();

    // The engine's side of the media: packets leaving its RTP range.
    let engine_range = ports.rtp_min..=ports.rtp_max;
    let packets = read_rtp(&pcap, ports.rtp_min, ports.rtp_max);
    let streams = rtp_streams(&packets, 20, |p| engine_range.contains(&p.src.port()));
    let calls_with_audio: BTreeSet<SocketAddr> = streams.iter().map(|s| s.src).collect();
    assert_eq!(
        calls_with_audio.len() as u64,
        CALLS,
        "engine RTP source addresses (one per call) in {} packets",
        packets.len()
    );
    // sipp offers [auto_media_port] = mp + 4·(call − 1): the engine must
    // send to the SDP address, nowhere else.
    let sipp_media = ports.sipp_media..ports.sipp_media + 4 * CALLS as u16;
    for s in &streams {
        for dst in &s.dst {
            assert!(
                dst.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) && sipp_media.contains(&dst.port()),
                "engine stream from {} sent to {dst}, not to a port sipp offered",
                s.src
            );
        }
    }
    // At least one second of audio per stream: a stream of a handful of
    // packets would pass the per-packet checks vacuously.
    assert_paced_audio(&streams, 8, 50);

    let lines = engine.log_lines();
    let digits: Vec<_> = lines.iter().filter_map(|l| parse_dtmf_line(l)).collect();
    let wrong: Vec<_> = digits.iter().filter(|d| d.digit != "1").collect();
    assert!(wrong.is_empty(), "digits other than 1 logged: {wrong:?}");
    let call_ids: BTreeSet<&str> = digits.iter().map(|d| d.call_id.as_str()).collect();
    assert_eq!(
        (digits.len() as u64, call_ids.len() as u64),
        (CALLS, CALLS),
        "expected one `1` per call: {} digit lines over {} calls (log: {})",
        digits.len(),
        call_ids.len(),
        engine.log_path().display()
    );
}

/// An INVITE from 127.0.0.2 when the ACL allows only 127.0.0.1/32 gets 403
/// before any call exists: the custom scenario passes only on 403 (a 2xx
/// fails it), `-max_invite_retrans 1` bounds a silent drop, and the engine
/// logs no call.
#[test]
fn acl_outsider_gets_403() {
    let test = "acl_outsider_gets_403";
    if !require_tools(test, &["sipp"]) {
        return;
    }
    const CALLS: u64 = 10;
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let ports = Ports::allocate();
    let mut engine = Engine::start(&EngineConfig::new(&ports), &dir);

    let outsider = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let run = Sipp::uac(
        scenario_file("uac_expect_403.xml"),
        engine.sip_addr(),
        &ports,
    )
    .ip(outsider)
    .load(CALLS as u32, 10, 10)
    .arg("-max_invite_retrans")
    .arg("1")
    .run(&dir, "sipp");
    engine.stop();
    assert_clean(&run, CALLS);
    engine.assert_no_panic();
    let started: Vec<String> = engine
        .log_lines()
        .into_iter()
        .filter(|l| is_call_started_line(l))
        .collect();
    assert!(
        started.is_empty(),
        "calls created for an ACL outsider:\n{}",
        started.join("\n")
    );
}

/// Truncated, garbage, NUL-filled and oversized datagrams, then oversized
/// TCP messages: the engine stays up and still answers OPTIONS with 200 on
/// UDP and on a fresh TCP connection.
#[test]
fn garbage_then_options() {
    let test = "garbage_then_options";
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let ports = Ports::allocate();
    let mut config = EngineConfig::new(&ports);
    config.max_message_size = Some(MAX_MESSAGE);
    let mut engine = Engine::start(&config, &dir);
    let target = engine.sip_addr();

    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP on loopback");
    for datagram in garbage_datagrams() {
        udp.send_to(&datagram, target)
            .expect("loopback accepts the datagram");
    }
    send_oversized_tcp(target, OversizedTcp::EndlessHeaders);
    send_oversized_tcp(target, OversizedTcp::HugeContentLength);
    // No pause before the probes: the UDP probe is read after the garbage on
    // the same socket, and each TCP probe needs the listener to accept it
    // while the oversized connections are being cut.

    assert_eq!(udp_options(target, "after-garbage-udp"), Ok(200));
    assert_eq!(tcp_options(target, "after-garbage-tcp"), Ok(200));
    assert!(engine.is_running(), "the engine exited");
    engine.stop();
    engine.assert_no_panic();
}

/// `check-config` refuses each bad file with a non-zero exit and names the
/// file and the field on stderr; `run` refuses to start on one; the shipped
/// `config.toml` and the harness's own config pass.
#[test]
fn check_config_rejects_bad_field() {
    let dir = TestDir::new("check_config_rejects_bad_field");
    let ports = Ports::allocate();
    let good = EngineConfig::new(&ports);

    let shipped = support::repo_root().join("config.toml");
    let out = check_config(&shipped);
    assert!(
        out.status.success(),
        "shipped config.toml refused ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The configurations the other tests run with.
    let garbage = EngineConfig {
        max_message_size: Some(MAX_MESSAGE),
        ..good.clone()
    };
    for (name, config) in [("harness.toml", &good), ("harness-garbage.toml", &garbage)] {
        let out = check_config(&config.write(&dir, name));
        assert!(
            out.status.success(),
            "the harness's {name} is refused; adjust support::config_toml ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Prompts directory with every file but welcome.wav.
    let partial = dir.join("prompts-without-welcome");
    std::fs::create_dir_all(&partial).expect("test dir is writable");
    for entry in std::fs::read_dir(&good.prompts_dir).expect("repository has prompts/") {
        let path = entry.expect("readable prompts/").path();
        if path.file_name().is_some_and(|n| n != "welcome.wav") {
            let name = path.file_name().expect("file has a name");
            std::os::unix::fs::symlink(&path, partial.join(name)).expect("symlink in test dir");
        }
    }

    let text = support::config_toml(&good);
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "unknown-key.toml",
            insert_in_table(&text, "sip", "bind_adress = \"127.0.0.1:5060\""),
            &["bind_adress"],
        ),
        (
            "bad-cidr.toml",
            support::config_toml(&EngineConfig {
                acl_sip: vec!["127.0.0.1/33".into()],
                ..good.clone()
            }),
            &["acl.sip"],
        ),
        (
            "inverted-rtp-range.toml",
            support::config_toml(&EngineConfig {
                rtp_min: 31000,
                rtp_max: 30000,
                ..good.clone()
            }),
            &["rtp.port_min", "rtp.port_max"],
        ),
        (
            "missing-prompt.toml",
            support::config_toml(&EngineConfig {
                prompts_dir: partial.clone(),
                ..good.clone()
            }),
            &["welcome.wav"],
        ),
    ];
    for (file, text, any_of) in &cases {
        let path = dir.join(file);
        std::fs::write(&path, text).expect("test dir is writable");
        let out = check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "check-config accepted {file}:\n{text}"
        );
        assert!(
            stderr.contains(&path.display().to_string()),
            "{file}: stderr does not name the file:\n{stderr}"
        );
        assert!(
            any_of.iter().any(|field| stderr.contains(field)),
            "{file}: stderr names none of {any_of:?}:\n{stderr}"
        );
    }

    // `run` must refuse the same way instead of starting half-configured.
    let bad = dir.join(cases[0].0);
    let mut child = Command::new(support::callbackd_bin())
        .arg("run")
        .arg("--config")
        .arg(&bad)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("callbackd can be spawned");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait on callbackd") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("callbackd run kept running with {}", bad.display());
        }
        // Poll interval: a child's exit is not waited for with a deadline.
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr);
    assert!(!status.success(), "run accepted {}", bad.display());
    assert!(
        stderr.contains("bind_adress"),
        "run's stderr does not name the field:\n{stderr}"
    );
}

/// `sip.max_message_size` for `garbage_then_options`: anything larger is
/// refused before parsing.
const MAX_MESSAGE: u32 = 4096;

fn uac_100_calls(test: &str, transport: &'static str) {
    if !require_tools(test, &["sipp"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let ports = Ports::allocate();
    let mut engine = Engine::start(&EngineConfig::new(&ports), &dir);
    let run = Sipp::uac(Scenario::Builtin("uac"), engine.sip_addr(), &ports)
        .transport(transport)
        .load(100, 50, 50)
        .run(&dir, "sipp");
    engine.stop();
    assert_clean(&run, 100);
    engine.assert_no_panic();
}

/// Datagrams no SIP parser may choke on.
fn garbage_datagrams() -> Vec<Vec<u8>> {
    let invite = "INVITE sip:cb@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-garbage\r\n\
        From: <sip:x@127.0.0.1>;tag=g\r\n\
        To: <sip:cb@127.0.0.1>\r\n\
        Call-ID: garbage@test\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\r\n";
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    // Truncated at several points, down to the request line alone.
    for cut in [8, 20, 60, 100, invite.len() - 3] {
        datagrams.push(invite.as_bytes()[..cut].to_vec());
    }
    // Headers without a request line, a response to nothing, CRLFs only.
    datagrams.push(invite.as_bytes()[invite.find('\n').expect("has lines") + 1..].to_vec());
    datagrams.push(b"SIP/2.0 200 OK\r\n\r\n".to_vec());
    datagrams.push(b"\r\n\r\n".to_vec());
    // Content-Length larger than the datagram.
    datagrams.push(
        invite
            .replace("Content-Length: 0", "Content-Length: 900")
            .into_bytes(),
    );
    // Pseudo-random bytes (fixed seed, so a failure reproduces).
    let mut x: u32 = 0x1234_5678;
    let noise: Vec<u8> = (0..1400)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    datagrams.push(noise);
    // NUL bytes, alone and inside a header.
    datagrams.push(vec![0u8; 1200]);
    datagrams.push(
        invite
            .replace("Call-ID: garbage", "Call-ID: gar\0bage")
            .into_bytes(),
    );
    // Larger than sip.max_message_size, close to the UDP maximum.
    let mut oversized = invite.replace("\r\n\r\n", "\r\n").into_bytes();
    oversized.extend_from_slice(b"X-Padding: ");
    oversized.resize(60_000, b'a');
    oversized.extend_from_slice(b"\r\n\r\n");
    datagrams.push(oversized);
    datagrams
}

/// The two ways a TCP message can exceed `sip.max_message_size`.
enum OversizedTcp {
    /// Header bytes with no blank line, well past the limit.
    EndlessHeaders,
    /// A Content-Length far beyond the limit, body never sent in full.
    HugeContentLength,
}

/// Sends one oversized message on a new TCP connection, then reads what the
/// engine does (a 513, or closing the connection) for up to a second.
/// Write errors are expected: the engine may close the connection mid-way.
fn send_oversized_tcp(target: SocketAddr, kind: OversizedTcp) {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
        .expect("the engine accepts TCP connections");
    let head = format!(
        "OPTIONS sip:ping@{target} SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-oversized\r\n\
         From: <sip:x@127.0.0.1>;tag=o\r\n\
         To: <sip:ping@{target}>\r\n\
         Call-ID: oversized@test\r\n\
         CSeq: 1 OPTIONS\r\n"
    );
    let mut bytes = head.into_bytes();
    match kind {
        OversizedTcp::EndlessHeaders => {
            bytes.extend_from_slice(b"X-Padding: ");
            bytes.resize(MAX_MESSAGE as usize * 8, b'a');
        }
        OversizedTcp::HugeContentLength => {
            bytes.extend_from_slice(b"Content-Length: 100000000\r\n\r\n");
            bytes.resize(MAX_MESSAGE as usize * 4, b'b');
        }
    }
    let _ = stream.write_all(&bytes);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
