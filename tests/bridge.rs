//! The bridge in-process: the real media thread (`engine::media::spawn`) with
//! two streams on loopback sockets, and two test "phones" — plain UDP sockets
//! on 127.0.0.1 — as the far ends of the agent leg (A: PCMU, telephone-event
//! 101) and the customer leg (B: PCMA, telephone-event 96, comfort noise).
//!
//! Every test has its own block of fixed ports from 37000 (RTCP is RTP + 1,
//! so the phones' RTCP sockets are where our reports must arrive).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use callbackd::acl::Acl;
use callbackd::engine::media::{
    self, Command, ExtraParams, MediaConfig, MediaEvent, MediaHandle, StreamParams,
};
use callbackd::media::g711::Law;
use callbackd::media::player::Item;
use callbackd::media::prompt::{PromptLibrary, Ptime};
use callbackd::media::rtcp::{self, RtcpPacket};
use callbackd::media::rtp::{PayloadType, RtpHeader, RtpPacket, Ssrc, write_rtp};

const A: u64 = 1;
const B: u64 = 2;
const TE_A: u8 = 101;
const TE_B: u8 = 96;
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Longest wait for a packet that must come.
const WITHIN: Duration = Duration::from_secs(2);
/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(300);

fn prompts() -> Arc<PromptLibrary> {
    static LIB: OnceLock<Arc<PromptLibrary>> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let mut lib = PromptLibrary::load(&dir, &["recording_notice", "agent_whisper"])
            .expect("prompts/ has the recording notice and the whisper");
        lib.prepare(&[Law::Ulaw, Law::Alaw], &[Ptime::DEFAULT]);
        Arc::new(lib)
    })
    .clone()
}

/// One far end: an RTP socket and the RTCP socket at port + 1.
struct Phone {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

/// The media thread with legs A and B added (not bridged yet).
struct Rig {
    media: MediaHandle,
    events: UnboundedReceiver<MediaEvent>,
    /// Events that came while [`Rig::sync`] waited.
    early: VecDeque<MediaEvent>,
    /// Barriers sent so far (each removes a key of its own).
    syncs: u64,
    a: Phone,
    b: Phone,
    /// Where the media thread receives each leg's RTP and RTCP.
    a_media: (SocketAddr, SocketAddr),
    b_media: (SocketAddr, SocketAddr),
}

fn bind_pair(port: u16) -> (UdpSocket, UdpSocket) {
    let rtp = UdpSocket::bind((LOCAL, port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
    let rtcp =
        UdpSocket::bind((LOCAL, port + 1)).unwrap_or_else(|e| panic!("bind {}: {e}", port + 1));
    for s in [&rtp, &rtcp] {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }
    (rtp, rtcp)
}

fn params(law: Law, te: u8, remote: SocketAddr) -> StreamParams {
    StreamParams {
        law,
        payload_type: law.payload_type(),
        telephone_event: Some(te),
        ptime: Ptime::DEFAULT,
        remote: Some(remote),
        signalling_peer: LOCAL,
        send: true,
        receive: true,
        rtcp: None,
    }
}

impl Rig {
    fn new(base: u16, rtp_timeout: Duration) -> Rig {
        let (tx, events) = unbounded_channel();
        let (media, _thread) = media::spawn(
            MediaConfig {
                acl: Acl::parse(&["127.0.0.0/8"]).unwrap(),
                rtp_timeout,
            },
            prompts(),
            tx,
        )
        .unwrap();
        let (ma_rtp, ma_rtcp) = bind_pair(base);
        let (mb_rtp, mb_rtcp) = bind_pair(base + 2);
        let (pa_rtp, pa_rtcp) = bind_pair(base + 4);
        let (pb_rtp, pb_rtcp) = bind_pair(base + 6);
        let a_media = (ma_rtp.local_addr().unwrap(), ma_rtcp.local_addr().unwrap());
        let b_media = (mb_rtp.local_addr().unwrap(), mb_rtcp.local_addr().unwrap());
        let a_params = params(Law::Ulaw, TE_A, pa_rtp.local_addr().unwrap());
        let b_params = params(Law::Alaw, TE_B, pb_rtp.local_addr().unwrap());
        for (key, rtp, rtcp, params) in [
            (A, ma_rtp, ma_rtcp, a_params),
            (B, mb_rtp, mb_rtcp, b_params),
        ] {
            assert!(media.send(Command::Add {
                key,
                call_id: format!("call-{key}").into(),
                ports: media::BoundPorts { rtp, rtcp },
                params,
            }));
        }
        // B accepts comfort noise; A does not.
        assert!(media.send(Command::Extra {
            key: B,
            extra: ExtraParams {
                comfort_noise: Some(13),
            },
        }));
        Rig {
            media,
            events,
            early: VecDeque::new(),
            syncs: 0,
            a: Phone {
                rtp: pa_rtp,
                rtcp: pa_rtcp,
            },
            b: Phone {
                rtp: pb_rtp,
                rtcp: pb_rtcp,
            },
            a_media,
            b_media,
        }
    }

    fn send(&self, command: Command) {
        assert!(self.media.send(command), "media thread gone");
    }

    /// Waits for a media event matching `pred` (events before it are
    /// dropped).
    fn event(
        &mut self,
        within: Duration,
        pred: impl Fn(&MediaEvent) -> bool,
    ) -> Option<MediaEvent> {
        while let Some(ev) = self.early.pop_front() {
            if pred(&ev) {
                return Some(ev);
            }
        }
        let end = Instant::now() + within;
        while Instant::now() < end {
            match self.events.try_recv() {
                Ok(ev) if pred(&ev) => return Some(ev),
                Ok(_) => {}
                // Poll interval: the channel has no blocking receive with a
                // deadline on a plain thread.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    }

    /// Returns once the media thread has carried out every command sent
    /// before: it takes commands in order and answers the removal of a
    /// stream it does not have with `Removed`. Other events that come
    /// meanwhile are kept for [`Rig::event`].
    fn sync(&mut self) {
        let key = 1_000 + self.syncs;
        self.syncs += 1;
        self.send(Command::Remove { key });
        let end = Instant::now() + WITHIN;
        loop {
            match self.events.try_recv() {
                Ok(MediaEvent::Removed { key: k }) if k == key => return,
                Ok(ev) => self.early.push_back(ev),
                Err(_) => {
                    assert!(Instant::now() < end, "media thread did not answer");
                    // Poll interval, as in `event`.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

/// A file in the temporary directory, removed when dropped (the test passed
/// or failed).
struct TempFile(PathBuf);

impl TempFile {
    /// `<tmp>/<stem>-<pid>.wav`, not there yet.
    fn new(stem: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("{stem}-{}.wav", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An RTP packet from a phone.
fn rtp(pt: u8, ssrc: u32, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = RtpHeader {
        payload_type: PayloadType::new(pt).unwrap(),
        marker,
        sequence: seq,
        timestamp: ts,
        ssrc: Ssrc(ssrc),
    };
    write_rtp(&mut buf, &header, payload);
    buf
}

/// The next RTP packet on `sock` within `within`.
fn recv_rtp(sock: &UdpSocket, within: Duration) -> Option<(RtpHeader, Vec<u8>)> {
    let end = Instant::now() + within;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && let Ok(p) = RtpPacket::parse(&buf[..len])
        {
            return Some((p.header(), p.payload().to_vec()));
        }
    }
    None
}

/// Every RTP packet on `sock` until it is quiet for [`QUIET`].
fn drain_rtp(sock: &UdpSocket) -> Vec<(RtpHeader, Vec<u8>)> {
    let mut all = Vec::new();
    while let Some(p) = recv_rtp(sock, QUIET) {
        all.push(p);
    }
    all
}

/// A 1 kHz tone, 20 ms, in `law`.
fn tone(law: Law, frame: usize) -> Vec<u8> {
    (0..160)
        .map(|i| {
            let t = (frame * 160 + i) as f64 / 8000.0;
            law.encode((8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16)
        })
        .collect()
}

#[test]
fn relays_both_ways_with_one_clean_stream_per_leg() {
    let mut rig = Rig::new(37000, Duration::from_secs(60));
    // B first hears a prompt from us: the relay must continue its numbering.
    let whisper = prompts().id("agent_whisper").unwrap();
    rig.send(Command::Play {
        key: B,
        items: vec![Item::Loop(whisper)],
        token: 1,
    });
    let first = recv_rtp(&rig.b.rtp, WITHIN).expect("B hears the prompt");
    rig.send(Command::Bridge { a: A, b: B });
    let prompt_packets = drain_rtp(&rig.b.rtp);
    let (last, _) = prompt_packets.last().cloned().unwrap_or(first);
    let b_ssrc = last.ssrc;

    // A talks (PCMU): B gets PCMA on its own SSRC, numbering continued.
    let mut expect_seq = last.sequence.wrapping_add(1);
    let mut last_ts = last.timestamp;
    let a_media = rig.a_media.0;
    for i in 0..10u16 {
        let payload = tone(Law::Ulaw, i.into());
        let packet = rtp(
            0,
            0xaaaa,
            100 + i,
            8000 + 160 * u32::from(i),
            i == 0,
            &payload,
        );
        rig.a.rtp.send_to(&packet, a_media).unwrap();
        let (h, got) = recv_rtp(&rig.b.rtp, WITHIN).expect("A's audio reaches B");
        assert_eq!(h.payload_type, PayloadType::PCMA);
        assert_eq!(h.ssrc, b_ssrc, "B must see one SSRC");
        assert_eq!(h.sequence, expect_seq);
        if i == 0 {
            assert!(h.marker, "first relayed packet starts a talk spurt");
            assert!(
                h.timestamp.wrapping_sub(last_ts) as i32 >= 160,
                "timestamp went back"
            );
        } else {
            assert_eq!(h.timestamp, last_ts.wrapping_add(160));
        }
        let transcoded: Vec<u8> = payload
            .iter()
            .map(|&c| Law::Ulaw.transcode(Law::Alaw, c))
            .collect();
        assert_eq!(got, transcoded);
        expect_seq = expect_seq.wrapping_add(1);
        last_ts = h.timestamp;
    }

    // DTMF '5' from A: B gets it on its own telephone-event type.
    let event_ts = 8000 + 160 * 10;
    for (i, end) in [false, false, true].into_iter().enumerate() {
        let duration = (160 * (i as u16 + 1)).to_be_bytes();
        let payload = [5u8, if end { 0x8a } else { 0x0a }, duration[0], duration[1]];
        let packet = rtp(TE_A, 0xaaaa, 110 + i as u16, event_ts, i == 0, &payload);
        rig.a.rtp.send_to(&packet, a_media).unwrap();
        let (h, got) = recv_rtp(&rig.b.rtp, WITHIN).expect("the event reaches B");
        assert_eq!(h.payload_type.get(), TE_B);
        assert_eq!((h.ssrc, h.sequence), (b_ssrc, expect_seq));
        assert_eq!(h.marker, i == 0);
        assert_eq!(got, payload);
        expect_seq = expect_seq.wrapping_add(1);
    }
    let digit = rig.event(WITHIN, |e| matches!(e, MediaEvent::Digit { key: A, .. }));
    assert!(
        matches!(digit, Some(MediaEvent::Digit { digit, inband: false, .. }) if digit.as_char() == '5'),
        "digit reported on A: {digit:?}"
    );

    // Comfort noise from A: B negotiated CN, so it passes, undecoded.
    rig.a
        .rtp
        .send_to(&rtp(13, 0xaaaa, 113, 9800, false, &[0x40]), a_media)
        .unwrap();
    let (h, got) = recv_rtp(&rig.b.rtp, WITHIN).expect("CN reaches B");
    assert_eq!(
        (h.payload_type, got.as_slice()),
        (PayloadType::CN, &[0x40u8][..])
    );
    expect_seq = expect_seq.wrapping_add(1);

    // An un-negotiated type (sipp's PT 97 filler) is dropped; then A
    // switches SSRC with unrelated numbers: B's stream stays continuous.
    rig.a
        .rtp
        .send_to(&rtp(97, 0xaaaa, 114, 9800, false, &[0; 4]), a_media)
        .unwrap();
    let payload = tone(Law::Ulaw, 0);
    rig.a
        .rtp
        .send_to(
            &rtp(0, 0xbbbb, 50_000, 3_000_000_000, false, &payload),
            a_media,
        )
        .unwrap();
    let (h, _) = recv_rtp(&rig.b.rtp, WITHIN).expect("the new source reaches B");
    assert_eq!(h.payload_type, PayloadType::PCMA, "PT 97 was relayed");
    assert_eq!((h.ssrc, h.sequence), (b_ssrc, expect_seq));
    assert!(h.marker, "a new source starts a talk spurt");
    assert!(
        h.timestamp.wrapping_sub(last_ts) as i32 >= 160,
        "timestamp went back"
    );

    // B talks (PCMA) and sends CN: A gets PCMU, and no CN (A has none).
    let b_media = rig.b_media.0;
    rig.b
        .rtp
        .send_to(&rtp(13, 0xcccc, 1, 0, false, &[0x40]), b_media)
        .unwrap();
    let payload = tone(Law::Alaw, 3);
    rig.b
        .rtp
        .send_to(&rtp(8, 0xcccc, 2, 160, false, &payload), b_media)
        .unwrap();
    let (h, got) = recv_rtp(&rig.a.rtp, WITHIN).expect("B's audio reaches A");
    assert_eq!(
        h.payload_type,
        PayloadType::PCMU,
        "CN was relayed to a leg without it"
    );
    assert_ne!(h.ssrc, b_ssrc);
    let transcoded: Vec<u8> = payload
        .iter()
        .map(|&c| Law::Alaw.transcode(Law::Ulaw, c))
        .collect();
    assert_eq!(got, transcoded);
}

#[test]
fn hold_stops_relaying_and_rtcp_is_terminated_per_leg() {
    let mut rig = Rig::new(37020, Duration::from_secs(2));
    rig.send(Command::Bridge { a: A, b: B });
    let a_media = rig.a_media;
    let mut seq = 0u16;
    let mut send_a = |rig: &Rig| {
        let packet = rtp(0, 0xaaaa, seq, u32::from(seq) * 160, false, &[0xff; 160]);
        rig.a.rtp.send_to(&packet, a_media.0).unwrap();
        seq += 1;
    };
    for _ in 0..3 {
        send_a(&rig);
    }
    let before: Vec<_> = (0..3)
        .map(|_| recv_rtp(&rig.b.rtp, WITHIN).expect("relayed before hold").0)
        .collect();
    let b_ssrc = before[0].ssrc;

    // B puts the call on hold (a=sendonly): we may not send to B.
    let mut held = params(Law::Alaw, TE_B, rig.b.rtp.local_addr().unwrap());
    held.send = false;
    rig.send(Command::Update {
        key: B,
        params: held.clone(),
    });
    rig.sync();
    for _ in 0..5 {
        send_a(&rig);
    }
    assert_eq!(
        recv_rtp(&rig.b.rtp, QUIET),
        None,
        "RTP sent to a leg on hold"
    );

    // A's RTCP SR goes to A's RTCP port; it must never reach B.
    let mut sr = Vec::new();
    let info = rtcp::SenderInfo {
        ntp: 0x1234_5678_0000_0000,
        rtp_timestamp: 0,
        packets: 8,
        octets: 1280,
    };
    rtcp::write_report(&mut sr, Ssrc(0xaaaa), Some(&info), None, b"phone-a");
    rig.a.rtcp.send_to(&sr, a_media.1).unwrap();

    // Our own reports (every 2.5–7.5 s): an SR to B from B's SSRC about the
    // 3 packets relayed to it, and to A one with a block about A's source.
    let mut b_report = None;
    let mut a_report = None;
    let end = Instant::now() + Duration::from_secs(9);
    let mut buf = [0u8; 1500];
    while Instant::now() < end && (b_report.is_none() || a_report.is_none()) {
        if let Ok((len, _)) = rig.b.rtcp.recv_from(&mut buf) {
            for p in rtcp::parse_compound(&buf[..len]).map(Result::unwrap) {
                match p {
                    RtcpPacket::SenderReport { ssrc, info, .. } => {
                        assert_ne!(ssrc, Ssrc(0xaaaa), "A's RTCP was forwarded to B");
                        b_report = Some((ssrc, info));
                    }
                    RtcpPacket::ReceiverReport { ssrc, .. } => {
                        assert_ne!(ssrc, Ssrc(0xaaaa), "A's RTCP was forwarded to B");
                    }
                    _ => {}
                }
            }
        }
        if let Ok((len, _)) = rig.a.rtcp.recv_from(&mut buf) {
            for p in rtcp::parse_compound(&buf[..len]).map(Result::unwrap) {
                if let RtcpPacket::ReceiverReport { blocks, .. }
                | RtcpPacket::SenderReport { blocks, .. } = p
                {
                    a_report = blocks.iter().next();
                }
            }
        }
    }
    let (ssrc, info) = b_report.expect("our SR on leg B");
    assert_eq!(ssrc, b_ssrc);
    assert_eq!((info.packets, info.octets), (3, 480));
    let block = a_report.expect("our report on leg A");
    assert_eq!(block.ssrc, Ssrc(0xaaaa));
    assert_eq!((block.highest_seq, block.cumulative_lost), (7, 0));
    assert_eq!(block.lsr, 0x5678_0000, "LSR from A's SR");

    // The metrics: what the media thread counted, published once a second
    // (wait for the report on A to be in them, bounded).
    let end = Instant::now() + Duration::from_secs(3);
    let totals = loop {
        let t = rig.media.totals();
        if t.jitter.count() >= 1 || Instant::now() >= end {
            break t;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        totals.jitter.count() >= 1,
        "jitter at our report: {totals:?}"
    );
    assert_eq!(
        (totals.rtp_received, totals.rtp_relayed),
        (8, 3),
        "{totals:?}"
    );
    assert!(
        totals.rtcp_received >= 1 && totals.rtcp_sent >= 2,
        "{totals:?}"
    );
    assert_eq!(totals.rtp_lost, 0, "A's packets came in order: {totals:?}");

    // A sent nothing for longer than the 2 s timeout, but the call is on
    // hold: no timeout.
    while let Ok(ev) = rig.events.try_recv() {
        assert!(
            !matches!(ev, MediaEvent::RtpTimeout { .. }),
            "RTP timeout while on hold: {ev:?}"
        );
    }

    // Resume: relaying continues B's numbering, marked.
    held.send = true;
    rig.send(Command::Update {
        key: B,
        params: held,
    });
    rig.sync();
    send_a(&rig);
    let (h, _) = recv_rtp(&rig.b.rtp, WITHIN).expect("relayed after resume");
    assert_eq!(
        (h.ssrc, h.sequence),
        (b_ssrc, before[2].sequence.wrapping_add(1))
    );
    assert!(h.marker);
    // And off hold the timeout is back.
    assert!(
        rig.event(Duration::from_secs(4), |e| matches!(
            e,
            MediaEvent::RtpTimeout { .. }
        ))
        .is_some(),
        "no RTP timeout once resumed"
    );
}

#[test]
fn records_a_stereo_wav_with_the_agent_left() {
    let mut rig = Rig::new(37040, Duration::from_secs(60));
    let file = TempFile::new("callbackd-bridge");
    let path = file.0.clone();
    rig.send(Command::Bridge { a: A, b: B });
    rig.send(Command::Record {
        a: A,
        b: B,
        path: path.clone(),
        notice: None,
    });
    rig.sync();
    // One second: A (the agent) says a 1 kHz tone, B (the customer) is silent.
    let t0 = Instant::now();
    for i in 0..50u16 {
        // The phones' pacing: one packet each every 20 ms.
        let due = t0 + Duration::from_millis(20 * u64::from(i));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let ts = u32::from(i) * 160;
        rig.a
            .rtp
            .send_to(
                &rtp(0, 1, i, ts, false, &tone(Law::Ulaw, i.into())),
                rig.a_media.0,
            )
            .unwrap();
        rig.b
            .rtp
            .send_to(
                &rtp(8, 2, i, ts, false, &[Law::Alaw.silence(); 160]),
                rig.b_media.0,
            )
            .unwrap();
    }
    // The media thread has taken A's last packet once it has relayed it.
    for n in 0..50 {
        if recv_rtp(&rig.b.rtp, WITHIN).is_none() {
            panic!("{n} of A's 50 packets relayed to B");
        }
    }
    rig.send(Command::Unbridge { a: A, b: B });
    // The recorder thread finishes the file once both taps are gone.
    let end = Instant::now() + Duration::from_secs(5);
    let reader = loop {
        if let Ok(r) = hound::WavReader::open(&path)
            && r.len() > 0
        {
            break r;
        }
        assert!(
            Instant::now() < end,
            "no finished recording at {}",
            path.display()
        );
        // Poll interval: nothing signals the finished file.
        std::thread::sleep(Duration::from_millis(20));
    };
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let samples: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
    let frames = samples.len() / 2;
    assert!(
        (7_200..=10_400).contains(&frames),
        "{frames} frames for 1 s of audio"
    );
    let rms = |ch: usize| {
        let sum: f64 = samples
            .iter()
            .skip(ch)
            .step_by(2)
            .map(|&s| f64::from(s).powi(2))
            .sum();
        (sum / frames as f64).sqrt()
    };
    let (left, right) = (rms(0), rms(1));
    assert!(
        left > 4000.0,
        "agent's tone not in the left channel (rms {left})"
    );
    assert!(
        right < 50.0,
        "customer's silence not in the right channel (rms {right})"
    );
}

#[test]
fn recording_notice_plays_to_the_customer_before_recording() {
    let mut rig = Rig::new(37060, Duration::from_secs(60));
    let file = TempFile::new("callbackd-notice");
    let path = file.0.clone();
    rig.send(Command::Bridge { a: A, b: B });
    rig.send(Command::Record {
        a: A,
        b: B,
        path: path.clone(),
        notice: Some("recording_notice".into()),
    });
    let lib = prompts();
    let notice = lib.id("recording_notice").unwrap();
    let frames = lib.frames(notice, Law::Alaw, Ptime::DEFAULT).unwrap();
    rig.sync();
    // The agent talks meanwhile: the customer hears the notice, not the agent.
    for i in 0..5u16 {
        let packet = rtp(
            0,
            1,
            i,
            u32::from(i) * 160,
            false,
            &tone(Law::Ulaw, i.into()),
        );
        rig.a.rtp.send_to(&packet, rig.a_media.0).unwrap();
        let (h, payload) = recv_rtp(&rig.b.rtp, WITHIN).expect("B hears the notice");
        assert_eq!(h.payload_type, PayloadType::PCMA);
        assert_eq!(
            payload,
            frames.frame(usize::from(i)),
            "packet {i} is not the notice"
        );
    }
    // Ended before the notice did: nothing was recorded.
    rig.send(Command::Unbridge { a: A, b: B });
    rig.sync();
    // A recording started by mistake would create its file on a thread of
    // its own, which nothing here can wait for: watch that it does not
    // appear for a while (the one "nothing happens" window of this file).
    std::thread::sleep(Duration::from_millis(200));
    assert!(!path.exists(), "recording started before the notice ended");
}
