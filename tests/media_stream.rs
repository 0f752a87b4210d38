//! One stream of the real media thread (`engine::media::spawn`) on loopback,
//! and what it listens to (issue 9, point 7): latching to the exact SDP
//! address, digits only from the latched stream, in-band DTMF while
//! telephone-event is negotiated until the first RFC 4733 event, RTCP as life
//! for the RTP timeout, `a=rtcp` (RFC 3605), RTCP BYE when a stream ends.
//!
//! Every test has its own block of fixed ports from 38000: the engine's
//! stream at `base`/`base + 1`, the phone at `base + 2`/`base + 3`, other
//! sockets above.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use callbackd::acl::Acl;
use callbackd::engine::media::{self, Command, MediaConfig, MediaEvent, MediaHandle, StreamParams};
use callbackd::media::g711::Law;
use callbackd::media::prompt::{PromptLibrary, Ptime};
use callbackd::media::rtcp::{self, RtcpPacket};
use callbackd::media::rtp::{PayloadType, RtpHeader, Ssrc, write_rtp};

const KEY: u64 = 1;
const TE: u8 = 101;
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Longest wait for something that must come.
const WITHIN: Duration = Duration::from_secs(3);

fn prompts() -> Arc<PromptLibrary> {
    static LIB: OnceLock<Arc<PromptLibrary>> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let mut lib = PromptLibrary::load(&dir, &["welcome"]).expect("prompts/ has welcome");
        lib.prepare(&[Law::Ulaw], &[Ptime::DEFAULT]);
        Arc::new(lib)
    })
    .clone()
}

fn bind(port: u16) -> UdpSocket {
    let s = UdpSocket::bind((LOCAL, port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// The media thread with one stream (PCMU, telephone-event 101 unless
/// `te` is `None`) whose SDP address is the phone's socket.
struct Rig {
    media: MediaHandle,
    events: UnboundedReceiver<MediaEvent>,
    /// The phone: RTP at the SDP address, RTCP at port + 1.
    phone: UdpSocket,
    phone_rtcp: UdpSocket,
    /// Where the stream receives RTP and RTCP.
    rtp_at: SocketAddr,
    rtcp_at: SocketAddr,
}

impl Rig {
    fn new(base: u16, rtp_timeout: Duration, te: Option<u8>, rtcp: Option<SocketAddr>) -> Rig {
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
        let (rtp, rtcp_sock) = (bind(base), bind(base + 1));
        let (rtp_at, rtcp_at) = (rtp.local_addr().unwrap(), rtcp_sock.local_addr().unwrap());
        let phone = bind(base + 2);
        let phone_rtcp = bind(base + 3);
        let params = StreamParams {
            law: Law::Ulaw,
            payload_type: 0,
            telephone_event: te,
            ptime: Ptime::DEFAULT,
            remote: Some(phone.local_addr().unwrap()),
            signalling_peer: LOCAL,
            send: true,
            receive: true,
            rtcp,
        };
        assert!(media.send(Command::Add {
            key: KEY,
            call_id: "call".into(),
            ports: media::BoundPorts {
                rtp,
                rtcp: rtcp_sock,
            },
            params,
        }));
        Rig {
            media,
            events,
            phone,
            phone_rtcp,
            rtp_at,
            rtcp_at,
        }
    }

    /// Waits for an event matching `pred` (others are dropped).
    fn event(
        &mut self,
        within: Duration,
        pred: impl Fn(&MediaEvent) -> bool,
    ) -> Option<MediaEvent> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            match self.events.try_recv() {
                Ok(ev) if pred(&ev) => return Some(ev),
                Ok(_) => {}
                // Poll interval: no blocking receive with a deadline here.
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        None
    }

    /// Every digit reported until the media thread has carried out all
    /// commands and packets sent before (a removal of an unknown key is
    /// answered in order).
    fn digits_until_idle(&mut self) -> Vec<(char, bool)> {
        // Packets on loopback are read before a later command is: give the
        // thread one poll round by asking for a barrier twice.
        let mut digits = Vec::new();
        for barrier in [9_001, 9_002] {
            assert!(self.media.send(Command::Remove { key: barrier }));
            let end = Instant::now() + WITHIN;
            loop {
                match self.events.try_recv() {
                    Ok(MediaEvent::Removed { key }) if key == barrier => break,
                    Ok(MediaEvent::Digit { digit, inband, .. }) => {
                        digits.push((digit.as_char(), inband))
                    }
                    Ok(_) => {}
                    Err(_) => {
                        assert!(Instant::now() < end, "media thread did not answer");
                        // Poll interval, as in `event`.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        digits
    }
}

fn rtp(pt: u8, ssrc: u32, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = RtpHeader {
        payload_type: PayloadType::new(pt).unwrap(),
        marker: false,
        sequence: seq,
        timestamp: ts,
        ssrc: Ssrc(ssrc),
    };
    write_rtp(&mut buf, &header, payload);
    buf
}

/// The three packets of one RFC 4733 event (digit `event`), the end packet
/// last.
fn event(ssrc: u32, seq: u16, ts: u32, event: u8) -> Vec<Vec<u8>> {
    (0..3u16)
        .map(|i| {
            let duration = (160 * (i + 1)).to_be_bytes();
            let end = if i == 2 { 0x8a } else { 0x0a };
            rtp(
                TE,
                ssrc,
                seq + i,
                ts,
                &[event, end, duration[0], duration[1]],
            )
        })
        .collect()
}

/// `n` 20 ms PCMU packets of the DTMF tone pair (row, column Hz), `start`
/// frames into the tone.
fn dtmf_audio(ssrc: u32, seq: u16, low: f64, high: f64, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|f| {
            let payload: Vec<u8> = (0..160)
                .map(|i| {
                    let t = (f * 160 + i) as f64 / 8000.0;
                    let tau = 2.0 * std::f64::consts::PI;
                    let v = 6000.0 * ((tau * low * t).sin() + (tau * high * t).sin());
                    Law::Ulaw.encode(v as i16)
                })
                .collect();
            rtp(0, ssrc, seq + f as u16, 160 * f as u32, &payload)
        })
        .collect()
}

/// `n` 20 ms packets of PCMU silence.
fn silence(ssrc: u32, seq: u16, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|f| rtp(0, ssrc, seq + f as u16, 160 * f as u32, &[0xff; 160]))
        .collect()
}

fn send_all(from: &UdpSocket, to: SocketAddr, packets: &[Vec<u8>]) {
    for p in packets {
        from.send_to(p, to).unwrap();
    }
}

/// An RR from `ssrc` with no block, as a phone sends it.
fn receiver_report(ssrc: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    rtcp::write_report(&mut buf, Ssrc(ssrc), None, None, b"phone");
    buf
}

#[test]
fn a_second_stream_from_the_same_ip_cannot_inject_digits() {
    let rig_base = 38000;
    let mut rig = Rig::new(rig_base, Duration::from_secs(60), Some(TE), None);
    // The defect: a leftover stream of another call (same IP, another
    // port), here even before the call's own first packet.
    let other = bind(rig_base + 10);
    for (k, digit) in [9u8, 8, 7].into_iter().enumerate() {
        send_all(
            &other,
            rig.rtp_at,
            &event(0xbad, 100 + 3 * k as u16, 1000 * k as u32, digit),
        );
    }
    // The call's own stream from its SDP address: its digit counts.
    send_all(&rig.phone, rig.rtp_at, &event(0x600d, 1, 5000, 4));
    // And the other stream again, after the latch.
    send_all(&other, rig.rtp_at, &event(0xbad, 200, 9000, 6));
    assert_eq!(rig.digits_until_idle(), [('4', false)]);
}

#[test]
fn the_latched_address_may_change_ssrc() {
    // sipp's uac_pcap: audio, then a DTMF pcap with another SSRC and
    // sequence, from the same address.
    let mut rig = Rig::new(38020, Duration::from_secs(60), Some(TE), None);
    send_all(&rig.phone, rig.rtp_at, &silence(0x1111, 10, 5));
    send_all(&rig.phone, rig.rtp_at, &event(0x0e05_384e, 9000, 4242, 1));
    assert_eq!(rig.digits_until_idle(), [('1', false)]);
}

#[test]
fn in_band_digits_count_while_telephone_event_is_negotiated_until_an_event_arrives() {
    let mut rig = Rig::new(38040, Duration::from_secs(60), Some(TE), None);
    let (phone, to) = (rig.phone.try_clone().unwrap(), rig.rtp_at);
    // '5' (770 + 1336 Hz) as tones, 100 ms, then a pause.
    send_all(&phone, to, &dtmf_audio(0x77, 1, 770.0, 1336.0, 5));
    send_all(&phone, to, &silence(0x77, 6, 5));
    let first = rig.digits_until_idle();
    assert_eq!(
        first,
        [('5', true)],
        "tones heard with telephone-event negotiated"
    );
    // The sender turns out to use RFC 4733: its tones are no longer heard.
    send_all(&phone, to, &event(0x77, 20, 8000, 2));
    send_all(&phone, to, &dtmf_audio(0x77, 30, 852.0, 1209.0, 5));
    send_all(&phone, to, &silence(0x77, 40, 5));
    assert_eq!(rig.digits_until_idle(), [('2', false)]);
}

#[test]
fn rtcp_keeps_a_stream_alive_and_another_sources_rtcp_does_not() {
    let timeout = Duration::from_secs(1);
    let mut rig = Rig::new(38060, timeout, Some(TE), None);
    send_all(&rig.phone, rig.rtp_at, &silence(0x42, 1, 3));
    // Only RTCP from here on, from the phone's RTCP address (RTP + 1):
    // three timeout periods without an RtpTimeout.
    let end = Instant::now() + 3 * timeout;
    while Instant::now() < end {
        rig.phone_rtcp
            .send_to(&receiver_report(0x42), rig.rtcp_at)
            .unwrap();
        assert_eq!(
            rig.event(Duration::from_millis(200), |e| matches!(
                e,
                MediaEvent::RtpTimeout { .. }
            )),
            None,
            "RTCP is life"
        );
    }
    // Reports of another source (another port, another SSRC) are not.
    let other = bind(38070);
    let end = Instant::now() + 4 * timeout;
    let mut timed_out = false;
    while Instant::now() < end && !timed_out {
        other.send_to(&receiver_report(0xbad), rig.rtcp_at).unwrap();
        timed_out = rig
            .event(Duration::from_millis(200), |e| {
                matches!(e, MediaEvent::RtpTimeout { .. })
            })
            .is_some();
    }
    assert!(timed_out, "another source's RTCP kept the stream alive");
}

#[test]
fn a_rtcp_address_is_where_rtcp_goes_and_comes_from_and_a_bye_ends_the_stream() {
    let base = 38080;
    let rtcp_elsewhere = bind(base + 10);
    let timeout = Duration::from_secs(1);
    let mut rig = Rig::new(
        base,
        timeout,
        Some(TE),
        Some(rtcp_elsewhere.local_addr().unwrap()),
    );
    send_all(&rig.phone, rig.rtp_at, &silence(0x42, 1, 3));
    // RTCP from the a=rtcp address keeps the stream alive.
    let end = Instant::now() + 3 * timeout;
    while Instant::now() < end {
        rtcp_elsewhere
            .send_to(&receiver_report(0x4343), rig.rtcp_at)
            .unwrap();
        assert_eq!(
            rig.event(Duration::from_millis(200), |e| matches!(
                e,
                MediaEvent::RtpTimeout { .. }
            )),
            None,
            "RTCP from the a=rtcp address is life"
        );
    }
    // The stream ends: an RTCP BYE of our SSRC reaches the a=rtcp address,
    // not RTP + 1.
    assert!(rig.media.send(Command::Remove { key: KEY }));
    assert!(
        rig.event(WITHIN, |e| matches!(e, MediaEvent::Removed { key: KEY }))
            .is_some()
    );
    let mut buf = [0u8; 1500];
    let mut bye = None;
    let end = Instant::now() + WITHIN;
    while bye.is_none() && Instant::now() < end {
        if let Ok(len) = rtcp_elsewhere.recv(&mut buf) {
            let packets: Vec<_> = rtcp::parse_compound(&buf[..len]).collect();
            bye = packets.iter().find_map(|p| match p {
                Ok(RtcpPacket::Bye { sources }) => Some(sources.iter().collect::<Vec<_>>()),
                _ => None,
            });
        }
    }
    let bye = bye.expect("an RTCP BYE at the a=rtcp address");
    assert_eq!(bye.len(), 1, "our one SSRC says goodbye");
    let mut stray = [0u8; 1500];
    while let Ok(len) = rig.phone_rtcp.recv(&mut stray) {
        let none_bye =
            rtcp::parse_compound(&stray[..len]).all(|p| !matches!(p, Ok(RtcpPacket::Bye { .. })));
        assert!(none_bye, "BYE sent to RTP + 1 despite a=rtcp");
    }
}
