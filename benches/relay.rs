//! RTP relay hot path: what one bridged packet costs, against a reference
//! measured beside it in the same run.
//!
//! - `send`: parse + rewrite (SSRC/seq/ts, payload type) + transcode or not +
//!   `send_to` on a real loopback UDP socket, against the same packets
//!   `send_to`'d unchanged (the reference: what the kernel costs anyway).
//! - `relay`: the whole receive path of the media thread — `recv_from` +
//!   the above — against `recv_from` + `send_to` unchanged.
//! - `rewrite`: parse + rewrite (+ transcode) alone, no system call.
//!
//! The packets are sipp-like 20 ms G.711 (172 octets). The sender and the
//! sink sockets' work is outside the timed region; packets are relayed in
//! batches of 64 queued on the socket, as the media thread drains a
//! readable socket. Run: `cargo bench --bench relay`. Medians of 7 rounds.
//! Under `cargo test` (no `--bench` argument) it runs nothing. With
//! `--smoke` (scripts/bench-load's CI smoke) it runs one round of a few
//! batches, checking the path works; its figures mean nothing.

use std::hint::black_box;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use callbackd::media::bridge::{LegCodecs, Relay};
use callbackd::media::g711::Law;
use callbackd::media::rtp::{PayloadType, RtpHeader, RtpPacket, SendStream, Ssrc, write_rtp};

/// Packets per batch queued on the receiving socket.
const BATCH: usize = 64;
/// Batches per round (a smoke run: 2).
fn batches() -> usize {
    if smoke() { 2 } else { 400 }
}

/// Rounds; the median is reported (a smoke run: 1).
fn rounds() -> usize {
    if smoke() { 1 } else { 7 }
}

/// A short run checking the path works (`--smoke`, from scripts/bench-load
/// --smoke).
fn smoke() -> bool {
    static SMOKE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SMOKE.get_or_init(|| std::env::args().any(|a| a == "--smoke"))
}
/// Context only: the CPU per relayed packet of rtpengine's userspace relay
/// measured on this kind of machine. Our ratios are against the in-run
/// reference, not against this figure.
const RTPENGINE_US: f64 = 9.2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward unchanged.
    Reference,
    /// Relay PCMU → PCMU.
    SameLaw,
    /// Relay PCMU → PCMA.
    Transcode,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // then the bench runs nothing.
    if !smoke() && !std::env::args().any(|a| a == "--bench") {
        println!("relay bench: not run under cargo test; run `cargo bench --bench relay`");
        return;
    }
    let pcmu = LegCodecs {
        law: Law::Ulaw,
        audio: PayloadType::PCMU,
        telephone_event: PayloadType::new(101).ok(),
        comfort_noise: None,
    };
    let pcma = LegCodecs {
        law: Law::Alaw,
        audio: PayloadType::PCMA,
        telephone_event: PayloadType::new(96).ok(),
        comfort_noise: None,
    };
    let relay_for = |mode: Mode| match mode {
        Mode::Transcode => Relay::new(pcmu, pcma),
        Mode::SameLaw | Mode::Reference => Relay::new(pcmu, pcmu),
    };

    // Pure rewrite: parse + relay into a reused buffer.
    let packets: Vec<Vec<u8>> = (0..4096u32).map(|i| packet(i as u16, i * 160)).collect();
    let mut rewrite = [Duration::ZERO; 2];
    for (slot, mode) in [(0, Mode::SameLaw), (1, Mode::Transcode)] {
        rewrite[slot] = median(|| {
            let mut relay = relay_for(mode);
            let mut out = SendStream::new(Ssrc(7), PayloadType::PCMA, 8000, 0, 0);
            let mut buf = Vec::with_capacity(2048);
            let t0 = Instant::now();
            for _ in 0..10 {
                for p in &packets {
                    let p = RtpPacket::parse(black_box(p)).expect("valid");
                    let _ = black_box(relay.relay(&p, &mut out, &mut buf));
                }
            }
            t0.elapsed() / (10 * packets.len() as u32)
        });
    }

    // With sockets.
    let sockets = Sockets::new();
    let mut send = [Duration::ZERO; 3];
    let mut full = [Duration::ZERO; 3];
    let modes = [Mode::Reference, Mode::SameLaw, Mode::Transcode];
    for (slot, mode) in modes.into_iter().enumerate() {
        send[slot] = median(|| sockets.round(mode, false, &mut relay_for(mode)));
        full[slot] = median(|| sockets.round(mode, true, &mut relay_for(mode)));
    }

    if smoke() {
        println!("relay bench smoke run: figures not meaningful; use cargo bench");
    }
    println!(
        "RTP relay, per packet (20 ms G.711, 172 octets; median of {} rounds):",
        rounds()
    );
    println!(
        "  rewrite only (parse + SSRC/seq/ts + PT, no syscall): same law {:>6.0} ns, PCMU→PCMA {:>6.0} ns",
        nanos(rewrite[0]),
        nanos(rewrite[1])
    );
    for (name, d, what) in [
        ("send path", &send, "send_to unchanged"),
        ("full relay", &full, "recv_from + send_to unchanged"),
    ] {
        println!(
            "  {name:<10}: reference ({what}) {:>5.2} µs; relay same law {:>5.2} µs (×{:.2}); \
             PCMU→PCMA {:>5.2} µs (×{:.2})",
            micros(d[0]),
            micros(d[1]),
            ratio(d[1], d[0]),
            micros(d[2]),
            ratio(d[2], d[0])
        );
    }
    println!(
        "  context: rtpengine's userspace relay measured {RTPENGINE_US} µs CPU per packet on this kind \
         of machine; ours (full relay, transcoding) {:.2} µs, of which {:.2} µs is our code over the \
         kernel's recv_from + send_to",
        micros(full[2]),
        micros(full[2]) - micros(full[0])
    );
}

/// A 20 ms PCMU packet.
fn packet(seq: u16, ts: u32) -> Vec<u8> {
    let header = RtpHeader {
        payload_type: PayloadType::PCMU,
        marker: false,
        sequence: seq,
        timestamp: ts,
        ssrc: Ssrc(0x0e05_384e),
    };
    let payload: Vec<u8> = (0..160).map(|i| (i * 7) as u8).collect();
    let mut buf = Vec::new();
    write_rtp(&mut buf, &header, &payload);
    buf
}

struct Sockets {
    /// The far end of leg A (untimed sender).
    source: UdpSocket,
    /// Our leg A socket (timed receive).
    leg_a: UdpSocket,
    /// Our leg B socket (timed send).
    leg_b: UdpSocket,
    /// The far end of leg B (untimed, drained after each batch).
    sink: UdpSocket,
}

impl Sockets {
    fn new() -> Sockets {
        let bind = || UdpSocket::bind("127.0.0.1:0").expect("loopback socket");
        let s = Sockets {
            source: bind(),
            leg_a: bind(),
            leg_b: bind(),
            sink: bind(),
        };
        s.sink
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        s
    }

    /// One round; the time per packet. With `receive`, the packets are
    /// queued on leg A first and `recv_from` is timed too; without, they
    /// are taken from memory.
    fn round(&self, mode: Mode, receive: bool, relay: &mut Relay) -> Duration {
        let leg_a = self.leg_a.local_addr().expect("bound");
        let sink = self.sink.local_addr().expect("bound");
        let mut out = SendStream::new(Ssrc(7), PayloadType::PCMA, 8000, 0, 0);
        let mut batch: Vec<Vec<u8>> = (0..BATCH).map(|_| packet(0, 0)).collect();
        let mut recv_buf = vec![0u8; 2048];
        let mut send_buf = Vec::with_capacity(2048);
        let mut timed = Duration::ZERO;
        for b in 0..batches() {
            for (i, p) in batch.iter_mut().enumerate() {
                let n = (b * BATCH + i) as u32;
                p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                p[4..8].copy_from_slice(&(n * 160).to_be_bytes());
                if receive {
                    self.source.send_to(p, leg_a).expect("send to leg A");
                }
            }
            let t0 = Instant::now();
            for p in &batch {
                let datagram: &[u8] = if receive {
                    let (len, _) = self.leg_a.recv_from(&mut recv_buf).expect("queued");
                    &recv_buf[..len]
                } else {
                    p
                };
                if mode == Mode::Reference {
                    self.leg_b.send_to(datagram, sink).expect("send");
                    continue;
                }
                let Ok(packet) = RtpPacket::parse(datagram) else {
                    continue;
                };
                if relay.relay(&packet, &mut out, &mut send_buf).is_ok() {
                    self.leg_b.send_to(&send_buf, sink).expect("send");
                }
            }
            timed += t0.elapsed();
            for _ in 0..BATCH {
                self.sink.recv_from(&mut recv_buf).expect("relayed packet");
            }
        }
        timed / (batches() * BATCH) as u32
    }
}

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..rounds()).map(|_| f()).collect();
    v.sort();
    v[rounds() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
