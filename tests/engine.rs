//! The whole engine in-process: a hand-written SIP UA and RTP sockets on
//! loopback against `engine::start` (SIP on 127.0.0.1:0, each test its own
//! RTP port range `31000 + 100·n`). Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::time::timeout;
use tracing_subscriber::EnvFilter;

use callbackd::config::Config;
use callbackd::engine::{self, EngineStats};
use callbackd::media::g711::Law;
use callbackd::media::prompt::{PromptLibrary, Ptime};
use callbackd::sip::message::Message;

use common::*;

/// Upper bound for a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// How long a call's timers may take to run out (64·T1 = 3.2 s, plus slack).
const IDLE_WITHIN: Duration = Duration::from_secs(5);

fn library(config: &Config) -> PromptLibrary {
    let settings = config.clone().check(repo()).expect("valid config");
    engine::load_prompts(&settings).expect("prompts load")
}

/// What a new caller hears first, nobody being ahead: the greeting, the
/// ECBT ("your estimated wait time is about one minute") and the callback
/// offer, in one play list; hold music follows once it has been said.
const GREETING: [&str; 6] = [
    "welcome",
    "ecbt_intro",
    "ecbt_about",
    "number_1",
    "minute",
    "callback_offer",
];

/// The frames the engine must send first: the greeting's prompts back to
/// back (the packets compared never reach the hold music that follows).
fn expected_frames(lib: &PromptLibrary, law: Law, ptime: Ptime, count: usize) -> Vec<Vec<u8>> {
    let frames: Vec<Vec<u8>> = GREETING
        .iter()
        .flat_map(|name| {
            let id = lib.id(name).unwrap_or_else(|| panic!("{name} prompt"));
            let frames = lib.frames(id, law, ptime).expect("prepared");
            frames.iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
        })
        .collect();
    assert!(
        frames.len() >= count,
        "the greeting ({} frames) covers the {count} packets compared",
        frames.len()
    );
    frames.into_iter().take(count).collect()
}

/// Checks one engine-to-us stream: payload type, sequence +1, timestamp
/// +samples, one SSRC, marker only on the first packet, and every payload
/// equal to the expected pre-encoded frame.
fn check_stream(packets: &[Rtp], pt: u8, expected: &[Vec<u8>]) {
    assert!(!packets.is_empty(), "no RTP received");
    let first = &packets[0];
    assert!(
        first.marker,
        "first packet of the talk spurt carries the marker"
    );
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.pt, pt, "payload type of packet {i}");
        assert_eq!(p.ssrc, first.ssrc, "SSRC changed at packet {i}");
        assert_eq!(
            p.seq,
            first.seq.wrapping_add(i as u16),
            "sequence of packet {i} (loss or reorder on loopback?)"
        );
        let samples = expected[0].len() as u32;
        assert_eq!(
            p.ts,
            first.ts.wrapping_add(i as u32 * samples),
            "timestamp of packet {i}"
        );
        if i > 0 {
            assert!(!p.marker, "marker on packet {i} of a continuous stream");
        }
        assert!(
            p.payload == expected[i],
            "payload of packet {i} differs from the pre-encoded prompt frame"
        );
    }
}

/// Inter-arrival gaps in ms.
fn gaps_ms(packets: &[Rtp]) -> Vec<f64> {
    packets
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64() * 1000.0)
        .collect()
}

async fn full_call(slot: u16, law: Law) {
    let _shared = TIMING.read().await;
    let config = config(slot, |_| {});
    let lib = library(&config);
    let engine = start(config).await;
    let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
    let rtp = RtpSock::bind("127.0.0.1");
    let offer = match law {
        Law::Ulaw => pcmu_offer(rtp.port()),
        Law::Alaw => pcma_offer(rtp.port()),
    };
    let mut dialog = ua.dialog();
    ua.send(dialog.invite(1, &branch(), Some(&offer))).await;
    let trying = ua
        .recv_where(
            "100 Trying",
            |m| matches!(m, Message::Response(r) if r.status == 100),
        )
        .await;
    let Message::Response(trying) = trying else {
        unreachable!()
    };
    assert_eq!(trying.headers.cseq.seq, 1);
    let ok = ua.final_response(1, "INVITE").await;
    assert_eq!(ok.status, 200);
    assert!(
        ok.headers.content_type_is("application/sdp"),
        "200 carries SDP"
    );
    let answer = SdpInfo::parse(&ok.body);
    assert_eq!(answer.connection, "127.0.0.1", "c= is the advertised IP");
    let base = rtp_base(slot);
    assert!(
        (base..=base + 99).contains(&answer.port) && answer.port.is_multiple_of(2),
        "m=audio port {} is an even port of the configured range",
        answer.port
    );
    let pt = law.payload_type();
    assert_eq!(answer.formats.first(), Some(&pt), "chosen codec first");
    assert!(!answer.formats.contains(&(pt ^ 8)), "only the offered law");
    assert!(answer.formats.contains(&101), "telephone-event accepted");
    dialog.learn_tag(&ok);
    assert!(contact(&ok.headers).is_some(), "200 has a Contact");

    let ear = Listener::start(&rtp, TEST_LIMIT);
    ua.send(dialog.request("ACK", 1, &branch(), None)).await;
    wait_until(WAIT, "160 packets of the greeting", || ear.len() >= 160).await;
    let packets = ear.with(<[Rtp]>::to_vec);
    drop(ear);
    assert!(
        packets.iter().all(|p| p.from == media_addr(&answer)),
        "RTP comes from the m=/c= address"
    );
    let expected = expected_frames(&lib, law, Ptime::DEFAULT, packets.len());
    assert_eq!(expected[0].len(), 160);
    check_stream(&packets, pt, &expected);

    // Pacing: a sanity bound only, that packets go out at the 20 ms ptime
    // and not at twice or half of it (the median shrugs off a late wake-up
    // of a busy machine). Jitter and drift are measurements, not tests.
    let p50 = percentile(&gaps_ms(&packets[5..]), 50.0);
    assert!(
        (15.0..=25.0).contains(&p50),
        "median gap {p50:.2} ms at ptime 20"
    );

    ua.bye(&dialog, 2).await;
    // No more RTP once the call is over (allow packets already in flight).
    let after = rtp
        .capture(Duration::from_millis(300))
        .await
        .expect("capture");
    assert!(after.len() <= 2, "RTP after BYE: {} packets", after.len());
    wait_idle(&engine, IDLE_WITHIN).await;
    assert_eq!(engine.stats().await, Some(EngineStats::default()));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call_plays_the_greeting_pcmu() {
    timeout(TEST_LIMIT, full_call(0, Law::Ulaw))
        .await
        .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call_plays_the_greeting_pcma() {
    timeout(TEST_LIMIT, full_call(1, Law::Alaw))
        .await
        .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptime_30_offer_gets_240_byte_frames() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let config = config(2, |_| {});
        let lib = library(&config);
        let engine = start(config).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let offer = sdp(
            1,
            rtp.port(),
            "0 101",
            &[
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=ptime:30",
            ],
        );
        let ear = Listener::start(&rtp, TEST_LIMIT);
        let (dialog, ok) = ua.call(Some(&offer)).await;
        let answer = SdpInfo::parse(&ok.body);
        assert!(
            answer.has("ptime:30"),
            "ptime echoed: {:?}",
            answer.attributes
        );
        wait_until(WAIT, "40 packets", || ear.len() >= 40).await;
        let packets = ear.with(<[Rtp]>::to_vec);
        drop(ear);
        assert!(
            packets.iter().all(|p| p.payload.len() == 240),
            "240-byte payloads"
        );
        let expected = expected_frames(
            &lib,
            Law::Ulaw,
            Ptime::from_ms(30).expect("30 ms"),
            packets.len(),
        );
        check_stream(&packets, 0, &expected);
        let gaps = gaps_ms(&packets[3..]);
        let p50 = percentile(&gaps, 50.0);
        // A sanity bound: 30 ms, not 20 or 40 (pacing is measured elsewhere).
        assert!(
            (25.0..=35.0).contains(&p50),
            "median gap {p50:.2} ms at ptime 30"
        );
        ua.bye(&dialog, 2).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_call_length_sends_bye() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let engine = start(config(3, |c| c.call.max_duration_s = 2)).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let (dialog, _ok) = ua.call(Some(&pcmu_offer(rtp.port()))).await;
        // When the BYE comes (max_duration_s after the answer) is asserted
        // to the instant by tests/controller.rs; here: that it comes.
        let bye = ua.request("BYE").await;
        assert_eq!(bye.headers.call_id.as_str(), dialog.call_id);
        assert_eq!(
            bye.headers.to.tag.as_deref(),
            Some(dialog.from_tag.as_str()),
            "BYE To is our From"
        );
        assert_eq!(
            bye.headers.from.tag.as_deref(),
            dialog.to_tag.as_deref(),
            "BYE From is the engine's tag"
        );
        assert!(
            bye.uri.contains(&ua.local.to_string()),
            "BYE goes to our Contact, got {}",
            bye.uri
        );
        ua.send(response_to(&bye, 200, "OK")).await;
        // The media stops with the call: once its stream is gone, nothing
        // more arrives.
        wait_stats(&engine, IDLE_WITHIN, "call and stream released", |s| {
            s.calls == 0 && s.rtp_ports == 0
        })
        .await;
        rtp.drain();
        let late = rtp
            .capture(Duration::from_millis(300))
            .await
            .expect("capture");
        assert!(late.is_empty(), "RTP after the BYE: {} packets", late.len());
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_for_unknown_transaction_gets_481() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let engine = start(config(4, |_| {})).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let dialog = ua.dialog();
        ua.send(dialog.request("CANCEL", 1, &branch(), None)).await;
        let r = ua.final_response(1, "CANCEL").await;
        assert_eq!(r.status, 481);
        assert_eq!(engine.stats().await.expect("stats").calls, 0);
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmitted_invite_after_200_resends_200_without_second_call() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        // T1 = 2 s here, so the engine's own 2xx retransmissions are rare.
        // That the 200 answers the retransmitted INVITE at once (not at the
        // next Timer G) is asserted to the instant by the endpoint's sans-IO
        // test retransmitted_invite_gets_the_last_provisional_then_the_2xx_and_no_second_call.
        let engine = start(config(5, |c| {
            c.sip.t1_ms = 2000;
            c.sip.t2_ms = 4000;
        }))
        .await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let mut dialog = ua.dialog();
        let invite_branch = branch();
        let invite = dialog.invite(1, &invite_branch, Some(&pcmu_offer(rtp.port())));
        ua.send(&invite).await;
        let ok = ua.final_response(1, "INVITE").await;
        assert_eq!(ok.status, 200);
        dialog.learn_tag(&ok);
        ua.send(&invite).await;
        let again = ua.final_response(1, "INVITE").await;
        assert_eq!(again.status, 200);
        assert_eq!(again.headers.to.tag, ok.headers.to.tag, "same dialog");
        assert_eq!(again.body, ok.body, "same answer");
        let stats = engine.stats().await.expect("stats");
        assert_eq!(
            (stats.calls, stats.sip.calls, stats.rtp_ports),
            (1, 1, 1),
            "{stats:?}"
        );

        // RFC 3261 §9.2: a CANCEL after the final response has no effect.
        let untagged = Dialog {
            to_tag: None,
            ..dialog.clone()
        };
        ua.send(untagged.request("CANCEL", 1, &invite_branch, None))
            .await;
        let cancel = ua.final_response(1, "CANCEL").await;
        assert!(
            matches!(cancel.status, 200 | 481),
            "CANCEL got {}",
            cancel.status
        );
        while let Some(m) = ua.try_recv(Duration::from_millis(150)).await {
            if let Message::Response(r) = m {
                assert_ne!(r.status, 487, "answered call cancelled");
            }
        }
        assert_eq!(engine.stats().await.expect("stats").calls, 1);

        ua.send(dialog.request("ACK", 1, &branch(), None)).await;
        // After the ACK the retransmission is absorbed: still one call. The
        // engine reads its socket in order, so once it has answered an
        // OPTIONS sent after the INVITE, it has handled the INVITE.
        ua.send(&invite).await;
        let probe = ua.dialog();
        ua.send(probe.request("OPTIONS", 1, &branch(), None)).await;
        assert_eq!(ua.final_response(1, "OPTIONS").await.status, 200);
        let stats = engine.stats().await.expect("stats");
        assert_eq!(
            (stats.calls, stats.sip.calls, stats.rtp_ports),
            (1, 1, 1),
            "{stats:?}"
        );
        ua.bye(&dialog, 2).await;
        wait_stats(&engine, IDLE_WITHIN, "call and ports released", |s| {
            s.calls == 0 && s.sip.calls == 0 && s.rtp_ports == 0
        })
        .await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

/// Sends INVITE with `body`, expects final `status`, ACKs it (same branch,
/// RFC 3261 §17.1.1.3), and checks the engine forgets everything.
async fn rejected_invite(slot: u16, content_type: &str, body: &str, status: u16) {
    let engine = start(config(slot, |_| {})).await;
    let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
    let mut dialog = ua.dialog();
    let branch = branch();
    ua.send(dialog.request("INVITE", 1, &branch, Some((content_type, body))))
        .await;
    let r = ua.final_response(1, "INVITE").await;
    assert_eq!(r.status, status, "{}", r.reason);
    dialog.learn_tag(&r);
    ua.send(dialog.request("ACK", 1, &branch, None)).await;
    let stats = engine.stats().await.expect("stats");
    assert_eq!(
        (stats.calls, stats.rtp_ports),
        (0, 0),
        "nothing kept: {stats:?}"
    );
    wait_idle(&engine, IDLE_WITHIN).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_common_codec_gets_488() {
    let _shared = TIMING.read().await;
    let offer = sdp(1, 4000, "18", &["a=rtpmap:18 G729/8000"]);
    timeout(
        TEST_LIMIT,
        rejected_invite(6, "application/sdp", &offer, 488),
    )
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sdp_gets_400() {
    let _shared = TIMING.read().await;
    let body = "v=0\r\nthis is not SDP at all\r\nm=audio banana RTP/AVP 0\r\n";
    timeout(TEST_LIMIT, rejected_invite(7, "application/sdp", body, 400))
        .await
        .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_offer_gets_our_offer_and_answer_in_ack() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let config = config(8, |_| {});
        let lib = library(&config);
        let engine = start(config).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let mut dialog = ua.dialog();
        ua.send(dialog.invite(1, &branch(), None)).await;
        let ok = ua.final_response(1, "INVITE").await;
        assert_eq!(ok.status, 200);
        dialog.learn_tag(&ok);
        let offer = SdpInfo::parse(&ok.body);
        assert_eq!(
            offer.formats,
            vec![0, 8, 101],
            "PCMU, PCMA, telephone-event"
        );
        assert_eq!(offer.rtpmap(0).as_deref(), Some("PCMU/8000"));
        assert_eq!(offer.rtpmap(8).as_deref(), Some("PCMA/8000"));
        assert_eq!(offer.rtpmap(101).as_deref(), Some("TELEPHONE-EVENT/8000"));
        assert!(offer.has("sendrecv"));
        // No RTP before the answer.
        let early = rtp
            .capture(Duration::from_millis(200))
            .await
            .expect("capture");
        assert!(early.is_empty(), "RTP before the answer in the ACK");

        let answer = sdp(
            1,
            rtp.port(),
            "8 101",
            &[
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=sendrecv",
            ],
        );
        let capture = rtp.capture(Duration::from_millis(1000));
        ua.send(dialog.request("ACK", 1, &branch(), Some(("application/sdp", &answer))))
            .await;
        let packets = capture.await.expect("capture");
        assert!(
            packets.len() >= 40,
            "RTP after the ACK's answer, got {}",
            packets.len()
        );
        let expected = expected_frames(&lib, Law::Alaw, Ptime::DEFAULT, packets.len());
        check_stream(&packets, 8, &expected);
        assert!(packets.iter().all(|p| p.from == media_addr(&offer)));
        ua.bye(&dialog, 2).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[test]
fn config_requires_a_port_pair_per_call_and_callback_leg() {
    // 4 pairs; each callback line dials an agent leg and a customer leg.
    let text = |max_calls: u32, max_lines: u32| {
        format!(
            "[rtp]\nport_min = 40000\nport_max = 40007\n[call]\nmax_calls = {max_calls}\n\
             [callbacks]\nmax_lines = {max_lines}\n"
        )
    };
    let err =
        Config::from_toml_str(&text(3, 1), "test.toml").expect_err("3 calls + 2 legs, 4 pairs");
    assert!(err.to_string().contains("call.max_calls"), "{err}");
    assert!(err.to_string().contains("2 callback legs"), "{err}");
    let err =
        Config::from_toml_str(&text(1, 2), "test.toml").expect_err("1 call + 4 legs, 4 pairs");
    assert!(err.to_string().contains("call.max_calls"), "{err}");
    let ok = Config::from_toml_str(&text(2, 1), "test.toml").expect("2 calls + 2 legs, 4 pairs");
    assert_eq!(ok.rtp.port_pairs(), 4);
}

/// An INVITE from a fresh dialog; returns its final response and dialog.
async fn try_call(ua: &Ua, rtp_port: u16) -> (Dialog, callbackd::sip::message::Response) {
    let mut dialog = ua.dialog();
    let branch = branch();
    ua.send(dialog.invite(1, &branch, Some(&pcmu_offer(rtp_port))))
        .await;
    let r = ua.final_response(1, "INVITE").await;
    dialog.learn_tag(&r);
    if r.status >= 300 {
        ua.send(dialog.request("ACK", 1, &branch, None)).await;
    } else {
        ua.send(dialog.request("ACK", 1, &self::branch(), None))
            .await;
    }
    (dialog, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_limit_gets_503_and_ports_are_reused() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let base = rtp_base(9);
        // Four pairs: two for the calls, two kept for one callback line's
        // legs. Other programs "hold" those two, so the calls have exactly
        // two pairs and a third call must come from a released one.
        let _squatters = [base + 4, base + 6]
            .map(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).expect("bind a pair"));
        let engine = start(config(9, |c| {
            c.rtp.port_max = base + 7;
            c.call.max_calls = 2;
            c.callbacks.max_lines = 1;
        }))
        .await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let (d1, r1) = try_call(&ua, rtp.port()).await;
        let (d2, r2) = try_call(&ua, rtp.port()).await;
        assert_eq!((r1.status, r2.status), (200, 200));
        let mut ports = [SdpInfo::parse(&r1.body).port, SdpInfo::parse(&r2.body).port];
        ports.sort_unstable();
        assert_eq!(
            ports,
            [base, base + 2],
            "both free pairs of the range in use"
        );
        let (_, r3) = try_call(&ua, rtp.port()).await;
        assert_eq!(r3.status, 503, "third call over max_calls");
        assert!(
            header(&r3.headers, "Retry-After").is_some(),
            "503 says when to retry"
        );
        ua.bye(&d1, 2).await;
        ua.bye(&d2, 2).await;
        wait_stats(&engine, IDLE_WITHIN, "ports released", |s| {
            s.rtp_ports == 0 && s.calls == 0
        })
        .await;
        // Both pairs are free again.
        let (d4, r4) = try_call(&ua, rtp.port()).await;
        let (d5, r5) = try_call(&ua, rtp.port()).await;
        assert_eq!(
            (r4.status, r5.status),
            (200, 200),
            "ports reused after the BYEs"
        );
        let mut again = [SdpInfo::parse(&r4.body).port, SdpInfo::parse(&r5.body).port];
        again.sort_unstable();
        assert_eq!(again, [base, base + 2]);
        ua.bye(&d4, 2).await;
        ua.bye(&d5, 2).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_rtp_port_is_skipped_and_exhaustion_gets_503() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let base = rtp_base(10);
        // Another "process" holds the first RTP port of the range, and two
        // more pairs (the range also counts one callback line's two legs).
        let squatter = std::net::UdpSocket::bind(("127.0.0.1", base)).expect("bind the first port");
        let _others = [base + 4, base + 6]
            .map(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).expect("bind a pair"));
        let engine = start(config(10, |c| {
            c.rtp.port_max = base + 7;
            c.call.max_calls = 2;
            c.callbacks.max_lines = 1;
        }))
        .await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let (d1, r1) = try_call(&ua, rtp.port()).await;
        assert_eq!(r1.status, 200);
        assert_eq!(SdpInfo::parse(&r1.body).port, base + 2, "busy pair skipped");
        // Below max_calls, but no pair can be bound.
        let (_, r2) = try_call(&ua, rtp.port()).await;
        assert_eq!(r2.status, 503, "no RTP port free");
        assert_eq!(engine.stats().await.expect("stats").rtp_ports, 1);
        // Once the port is free again it is used.
        drop(squatter);
        let (d3, r3) = try_call(&ua, rtp.port()).await;
        assert_eq!(r3.status, 200);
        assert_eq!(
            SdpInfo::parse(&r3.body).port,
            base,
            "freed port taken again"
        );
        ua.bye(&d1, 2).await;
        ua.bye(&d3, 2).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_latching_refuses_other_sources() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let engine = start(config(11, |c| {
            c.acl.rtp = vec!["127.0.0.0/8".parse().expect("CIDR")];
        }))
        .await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let sdp_sock = RtpSock::bind("127.0.0.1");
        let outsider = RtpSock::bind("127.0.0.2");
        let moved = RtpSock::bind("127.0.0.1");
        let (dialog, ok) = ua.call(Some(&pcmu_offer(sdp_sock.port()))).await;
        let media = media_addr(&SdpInfo::parse(&ok.body));
        let first = sdp_sock
            .capture(Duration::from_millis(300))
            .await
            .expect("capture");
        assert!(first.len() >= 10, "RTP to the SDP address");

        // RTP from another IP (allowed by the ACL) must not steal the stream:
        // watched from before it is sent.
        let at_sdp = sdp_sock.capture(Duration::from_millis(400));
        let at_outsider = outsider.capture(Duration::from_millis(400));
        outsider.send_rtp(media, 0x1111, 0, 5);
        let (at_sdp, at_outsider) = (
            at_sdp.await.expect("capture"),
            at_outsider.await.expect("capture"),
        );
        assert!(
            at_outsider.is_empty(),
            "engine latched to 127.0.0.2: {} packets",
            at_outsider.len()
        );
        assert!(
            at_sdp.len() >= 15,
            "still sending to the SDP address: {}",
            at_sdp.len()
        );

        // RTP from the SDP IP on another port (a sender that does not send
        // from where it receives, or NAT rebinding) while nothing came from
        // the SDP address: latched only once several packets of one SSRC
        // came and the SDP address has been silent for a grace period
        // (`media::latch`; a leftover stream of another call must not win
        // the race against the call's own first packet). Once a packet has
        // reached the new port, none may go to the old one.
        let at_moved = Listener::start(&moved, TEST_LIMIT);
        wait_until(WAIT, "RTP at the rebound port", || {
            moved.send_rtp(media, 0x2222, 0, 1);
            !at_moved.is_empty()
        })
        .await;
        sdp_sock.drain();
        let at_sdp = sdp_sock
            .capture(Duration::from_millis(400))
            .await
            .expect("capture");
        let at_moved = at_moved.with(<[Rtp]>::to_vec);
        assert!(
            at_moved.len() >= 15,
            "latched to the source port: {} packets",
            at_moved.len()
        );
        assert!(
            at_sdp.is_empty(),
            "still sending to the SDP port: {}",
            at_sdp.len()
        );
        // The same stream continues (only the destination moved).
        let before = first.last().expect("packets");
        let after = &at_moved[0];
        assert_eq!(after.ssrc, before.ssrc);
        assert!(after.seq.wrapping_sub(before.seq) < 100);

        ua.bye(&dialog, 2).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_reinvite_stops_and_resumes_rtp() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let engine = start(config(12, |_| {})).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let ear = Listener::start(&rtp, TEST_LIMIT);
        let (dialog, _) = ua.call(Some(&pcmu_offer(rtp.port()))).await;
        wait_until(WAIT, "20 packets before the hold", || ear.len() >= 20).await;

        let hold = sdp(
            2,
            rtp.port(),
            "0 101",
            &[
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=sendonly",
            ],
        );
        ua.send(dialog.invite(2, &branch(), Some(&hold))).await;
        let ok = ua.final_response(2, "INVITE").await;
        let held_at = Instant::now();
        assert_eq!(ok.status, 200);
        let answer = SdpInfo::parse(&ok.body);
        assert!(
            answer.has("recvonly"),
            "sendonly answered recvonly: {:?}",
            answer.attributes
        );
        ua.send(dialog.request("ACK", 2, &branch(), None)).await;
        // The peer's script, not a wait for the engine: it stays on hold for
        // a second, so silence while held and the timestamp jump over the
        // pause (a media-thread property) can be seen.
        tokio::time::sleep(Duration::from_millis(1000)).await;

        let resume = sdp(
            3,
            rtp.port(),
            "0 101",
            &[
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=sendrecv",
            ],
        );
        let resume_sent = Instant::now();
        ua.send(dialog.invite(3, &branch(), Some(&resume))).await;
        let ok = ua.final_response(3, "INVITE").await;
        assert_eq!(ok.status, 200);
        assert!(SdpInfo::parse(&ok.body).has("sendrecv"));
        ua.send(dialog.request("ACK", 3, &branch(), None)).await;
        wait_until(WAIT, "20 packets after resuming", || {
            ear.with(|p| p.iter().filter(|p| p.at > resume_sent).count() >= 20)
        })
        .await;

        let packets = ear.with(<[Rtp]>::to_vec);
        drop(ear);
        let before: Vec<&Rtp> = packets.iter().filter(|p| p.at < held_at).collect();
        let during = packets
            .iter()
            .filter(|p| p.at > held_at + Duration::from_millis(50) && p.at < resume_sent)
            .count();
        let after: Vec<&Rtp> = packets.iter().filter(|p| p.at > resume_sent).collect();
        assert!(before.len() >= 20, "RTP before the hold: {}", before.len());
        assert_eq!(during, 0, "RTP while the peer is sendonly");
        assert!(after.len() >= 20, "RTP after resuming: {}", after.len());
        // The last packet sent before the hold and the first after it.
        let last = packets
            .iter()
            .rfind(|p| p.at < resume_sent)
            .expect("packets before");
        let next = after[0];
        assert_eq!(next.ssrc, last.ssrc, "same stream");
        assert_eq!(next.seq, last.seq.wrapping_add(1), "sequence continues");
        assert!(
            next.marker,
            "RFC 3551 §4.1: first packet after the pause is marked"
        );
        assert!(
            after[1..].iter().all(|p| !p.marker),
            "one marker per talk spurt"
        );
        let ts_ms = f64::from(next.ts.wrapping_sub(last.ts)) / 8.0;
        let wall_ms = (next.at - last.at).as_secs_f64() * 1000.0;
        assert!(
            ts_ms > 900.0,
            "timestamp jumped by the hold time: {ts_ms} ms"
        );
        assert!(
            (ts_ms - wall_ms).abs() <= 30.0,
            "timestamp jump {ts_ms:.0} ms vs {wall_ms:.0} ms elapsed"
        );
        for w in after.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
        }
        ua.bye(&dialog, 4).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_and_garbage() {
    let _shared = TIMING.read().await;
    let logs = logs();
    timeout(TEST_LIMIT, async {
        let engine = start(config(13, |_| {})).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let full = ua.dialog().invite(1, &branch(), Some(&pcmu_offer(4000)));
        let junk: Vec<Vec<u8>> = vec![
            b"garbage\r\n\r\n".to_vec(),
            vec![0u8; 1400],
            vec![0xff; 3],
            b"\r\n\r\n".to_vec(),
            full.as_bytes()[..full.len() / 2].to_vec(),
            // Body shorter than Content-Length says.
            full.as_bytes()[..full.len() - 20].to_vec(),
            b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
            b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
            vec![b'x'; 65_507],
        ];
        for j in &junk {
            ua.send(j).await;
        }
        // Bigger than any UDP datagram: the kernel refuses it here.
        let too_big = vec![b'y'; 70_000];
        assert!(ua.sock.send_to(&too_big, ua.engine).await.is_err());

        let dialog = ua.dialog();
        ua.send(dialog.request("OPTIONS", 1, &branch(), None)).await;
        let r = ua.final_response(1, "OPTIONS").await;
        assert_eq!(r.status, 200);
        let allow = header(&r.headers, "Allow").unwrap_or_default();
        assert!(
            allow.contains("INVITE") && allow.contains("BYE"),
            "Allow: {allow}"
        );
        let stats = engine.stats().await.expect("stats");
        assert_eq!(
            (stats.calls, stats.rtp_ports),
            (0, 0),
            "no call from junk: {stats:?}"
        );
        // Refusals are logged at warn with the reason, but rate-limited:
        // the 1st, 2nd, 4th, 8th … of the junk above, not every one.
        let me = ua.sock.local_addr().expect("bound").to_string();
        let warned = logs.lines(&["malformed SIP message refused", &me]);
        assert!(
            (2..=4).contains(&warned.len()),
            "{} warnings for {} junk messages: {warned:?}",
            warned.len(),
            junk.len()
        );
        assert!(warned.iter().all(|l| l.contains("reason=")), "{warned:?}");
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_call() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let config = config(14, |c| c.call.max_duration_s = 2);
        let lib = library(&config);
        let engine = start(config).await;
        let mut ua = TcpUa::connect(engine.tcp_addr().expect("TCP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let mut dialog = ua.dialog();
        ua.send(dialog.invite(1, &branch(), Some(&pcmu_offer(rtp.port()))))
            .await;
        let first = ua.recv().await;
        assert!(
            matches!(&first, Message::Response(r) if r.status == 100),
            "100 Trying first"
        );
        let ok = ua.final_response(1, "INVITE").await;
        assert_eq!(ok.status, 200);
        assert!(
            contact(&ok.headers).is_some_and(|c| c.to_ascii_lowercase().contains("transport=tcp")),
            "Contact for TCP: {:?}",
            contact(&ok.headers)
        );
        dialog.learn_tag(&ok);
        let ear = Listener::start(&rtp, TEST_LIMIT);
        ua.send(dialog.request("ACK", 1, &branch(), None)).await;
        wait_until(WAIT, "40 packets on a TCP-signalled call", || {
            ear.len() >= 40
        })
        .await;
        let packets = ear.with(<[Rtp]>::to_vec);
        drop(ear);
        let expected = expected_frames(&lib, Law::Ulaw, Ptime::DEFAULT, packets.len());
        check_stream(&packets, 0, &expected);

        // The engine's BYE at max_duration comes on this connection (when:
        // tests/controller.rs, to the instant).
        let bye = loop {
            match ua.recv().await {
                Message::Request(r) if r.method.as_str() == "BYE" => break r,
                _ => continue,
            }
        };
        assert_eq!(bye.headers.call_id.as_str(), dialog.call_id);
        assert!(
            bye.headers.vias[0]
                .raw
                .to_ascii_uppercase()
                .contains("SIP/2.0/TCP")
        );
        ua.send(response_to(&bye, 200, "OK")).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

/// The engine's call-layer log lines, captured in-process (the digits are
/// reported only there).
fn logs() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .with_env_filter(EnvFilter::new(
                "callbackd::b2bua::calls=info,callbackd::sip::endpoint=warn",
            ))
            .try_init()
            .expect("the only subscriber of this test binary");
        buf
    })
}

/// Sends one RFC 4733 event as a real sender does: a start packet with the
/// marker, two updates, and the end packet three times, all with the
/// event's timestamp (RFC 4733 §2.5).
fn send_digit(sock: &RtpSock, to: SocketAddr, pt: u8, event: u8, seq: &mut u16, ts: u32) {
    let durations = [160u16, 320, 480, 640, 640, 640];
    for (i, duration) in durations.into_iter().enumerate() {
        let end = i >= 3;
        let mut packet = vec![0x80, pt | if i == 0 { 0x80 } else { 0 }];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&ts.to_be_bytes());
        packet.extend_from_slice(&0x4242_4242u32.to_be_bytes());
        packet.extend_from_slice(&[event, if end { 0x80 | 10 } else { 10 }]);
        packet.extend_from_slice(&duration.to_be_bytes());
        sock.sock
            .send_to(&packet, to)
            .expect("send telephone-event");
        *seq = seq.wrapping_add(1);
        // The sending phone's pacing (an event's packets are spread over
        // its duration), not a wait.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_rfc4733_and_info_are_logged() {
    let _shared = TIMING.read().await;
    let logs = logs();
    timeout(TEST_LIMIT, async {
        let engine = start(config(15, |_| {})).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        // telephone-event offered at 101.
        let (dialog, ok) = ua.call(Some(&pcmu_offer(rtp.port()))).await;
        let media = media_addr(&SdpInfo::parse(&ok.body));
        let mut seq = 7000;
        send_digit(&rtp, media, 101, 5, &mut seq, 160_000);
        // Not negotiated: an event on PT 96 is not DTMF for this call. Sent
        // before '#' on the same stream, so by the time '#' is logged a
        // wrongly accepted 7 would have been logged too.
        send_digit(&rtp, media, 96, 7, &mut seq, 168_000);
        send_digit(&rtp, media, 101, 11, &mut seq, 176_000); // '#'
        // SIP INFO (application/dtmf-relay).
        ua.send(dialog.request(
            "INFO",
            2,
            &branch(),
            Some(("application/dtmf-relay", "Signal=3\r\nDuration=160\r\n")),
        ))
        .await;
        let r = ua.final_response(2, "INFO").await;
        assert_eq!(r.status, 200);

        let dtmf_lines = || -> Vec<String> {
            logs.lines(&[&dialog.call_id])
                .into_iter()
                .filter(|l| l.contains(" dtmf"))
                .collect()
        };
        wait_until(WAIT, "'#' and the INFO digit logged", || {
            let lines = dtmf_lines();
            lines.iter().any(|l| l.contains("digit=#"))
                && lines.iter().any(|l| l.contains("digit=3"))
        })
        .await;
        let digits = dtmf_lines();
        let all = logs.lines(&[&dialog.call_id]);
        assert!(
            !all.iter().any(|l| l.contains("digit=7")),
            "PT 96 event taken as DTMF"
        );
        assert_eq!(digits.len(), 3, "three digits logged: {digits:#?}");
        assert!(
            digits[0].contains("digit=5") && digits[0].contains("source=\"rfc4733\""),
            "{}",
            digits[0]
        );
        assert!(
            digits[1].contains("digit=#") && digits[1].contains("source=\"rfc4733\""),
            "{}",
            digits[1]
        );
        assert!(
            digits[2].contains("digit=3") && digits[2].contains("source=\"info\""),
            "{}",
            digits[2]
        );
        ua.bye(&dialog, 3).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_changing_codec_and_ptime_keeps_playing() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let engine = start(config(16, |_| {})).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let ear = Listener::start(&rtp, TEST_LIMIT);
        let (dialog, _) = ua.call(Some(&pcmu_offer(rtp.port()))).await;
        wait_until(WAIT, "20 PCMU packets", || ear.len() >= 20).await;
        let pcma30 = sdp(
            2,
            rtp.port(),
            "8 101",
            &[
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=ptime:30",
            ],
        );
        ua.send(dialog.invite(2, &branch(), Some(&pcma30))).await;
        let ok = ua.final_response(2, "INVITE").await;
        assert_eq!(ok.status, 200);
        let answer = SdpInfo::parse(&ok.body);
        assert_eq!(answer.formats.first(), Some(&8), "PCMA chosen");
        ua.send(dialog.request("ACK", 2, &branch(), None)).await;
        wait_until(WAIT, "30 PCMA packets", || {
            ear.with(|p| p.iter().filter(|p| p.pt == 8).count() >= 30)
        })
        .await;
        let packets = ear.with(<[Rtp]>::to_vec);
        drop(ear);
        let switch = packets
            .iter()
            .position(|p| p.pt == 8)
            .expect("RTP goes on in PCMA after the re-INVITE");
        assert!(switch >= 20, "PCMU before the re-INVITE: {switch} packets");
        let pcma = &packets[switch..];
        assert!(
            pcma.len() >= 30,
            "PCMA packets after the switch: {}",
            pcma.len()
        );
        let (last, first) = (&packets[switch - 1], &pcma[0]);
        assert_eq!(first.ssrc, last.ssrc, "same stream");
        assert_eq!(first.seq, last.seq.wrapping_add(1), "sequence continues");
        assert_eq!(first.ts, last.ts.wrapping_add(160), "timestamp continues");
        for w in pcma.windows(2) {
            assert_eq!((w[1].pt, w[1].payload.len()), (8, 240));
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].ts, w[0].ts.wrapping_add(240));
        }
        ua.bye(&dialog, 3).await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hangs_up_calls_and_refuses_new_ones() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let engine = start(config(17, |_| {})).await;
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let (dialog, _) = ua.call(Some(&pcmu_offer(rtp.port()))).await;
        // Draining hangs calls up (when: tests/controller.rs, draining).
        let stopped = tokio::spawn(engine.shutdown());
        let bye = ua.request("BYE").await;
        assert_eq!(bye.headers.call_id.as_str(), dialog.call_id);

        // Draining: new calls are refused, so a dispatcher moves on.
        let (_, refused) = try_call(&ua, rtp.port()).await;
        assert_eq!(refused.status, 503);

        ua.send(response_to(&bye, 200, "OK")).await;
        timeout(Duration::from_secs(2), stopped)
            .await
            .expect("engine stops once its calls are gone")
            .expect("engine task");
        let probe = ua.dialog();
        ua.send(probe.request("OPTIONS", 1, &branch(), None)).await;
        assert!(
            ua.try_recv(Duration::from_millis(300)).await.is_none(),
            "a stopped engine answers nothing"
        );
    })
    .await
    .expect("test within its time limit");
}

/// Threads of this process named `name` (Linux `/proc`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_media_thread() {
    // Alone, so no other test starts an engine while we count threads.
    let _alone = TIMING.write().await;
    timeout(TEST_LIMIT, async {
        // Holding the lock exclusively, no other engine of this binary is
        // running: the media threads of those shut down earlier must end.
        let none_left = |what: &'static str| {
            wait_until(Duration::from_secs(3), what, || {
                threads_named("callbackd-media") == 0
            })
        };
        none_left("media threads of earlier engines still running").await;
        let engine = start(config(18, |_| {})).await;
        // The thread names itself once it runs: wait for it.
        wait_until(WAIT, "no media thread", || {
            threads_named("callbackd-media") > 0
        })
        .await;
        assert_eq!(threads_named("callbackd-media"), 1, "one media thread");
        engine.shutdown().await;
        none_left("media thread still running 3 s after shutdown").await;
    })
    .await
    .expect("test within its time limit");
}
