//! Load generator for the harness (`scripts/bench-load`, issue 12): SIP
//! callers that send and receive G.711 RTP, agents that answer the engine's
//! calls, and the same RTP streams relayed through rtpengine for comparison.
//!
//! ```text
//! cargo bench --bench loadgen -- callers   [options]   N callers hearing prompts
//! cargo bench --bench loadgen -- bridged   [options]   N callers bridged to N agents
//! cargo bench --bench loadgen -- rtpengine [options]   N stream pairs via rtpengine (ng)
//! cargo bench --bench loadgen -- selftest              checks of the pure parts
//! ```
//!
//! Without a mode (`cargo bench`, `cargo test --all-targets`) it prints its
//! usage and exits 0: it never runs load under `cargo test`. Progress goes to
//! stderr; the one result line (`result mode=… key=value …`, plain numbers)
//! goes to stdout. Bad options: a message and exit status 2.
//!
//! Options (defaults in brackets):
//! `--sip 127.0.0.1:5060` the engine, `--local-ip 127.0.0.1`, `--sip-port 0`
//! (our caller SIP port, 0 = any), `--calls 100`, `--rate 200` (new calls/s),
//! `--warmup-s 5`, `--measure-s 10`, `--engine-pid PID` (the engine's, or
//! rtpengine's, CPU and RSS), `--to 1000` (dialled user), `--rtp-sockets K`
//! [ceil(calls/1000)] per side, `--agent-port 5090` (bridged), `--agent-prefix
//! agent` (bridged: agents are `<prefix>0 .. <prefix>N-1`), `--bridge-wait-s 60`
//! (bridged: how long to wait for every caller to be connected),
//! `--ng 127.0.0.1:2223` (rtpengine).
//!
//! Only IPv4. Each side uses K shared RTP sockets; call i sends from socket
//! i % K. Streams are told apart by (source address, SSRC) on receipt.
//!
//! # Result keys
//!
//! Counted over the measurement window (after the ramp, the bridging wait
//! and the warm-up), packets by their kernel receive timestamp:
//! - `streams`: (source, SSRC) pairs heard; `rx_stream_pps`: packets per
//!   stream per second (50 when a sender keeps 20 ms); `gaps`: consecutive
//!   pairs (seq + 1 and RTP timestamp + 160) whose arrival gap was measured;
//!   `gap_dev_p50_us`/`_p99_us`/`_max_us`: |gap − 20 ms|; `gap_out_2ms_pct`:
//!   share of gaps outside 20 ± 2 ms; `loss_pct`/`lost`: sequence numbers
//!   missing between each stream's first and last packet in the window.
//! - `transit_p50_us`/`_p99_us`/`_max_us` (relayed modes): arrival − send
//!   time of our own packets (stamped in the payload's last 12 octets),
//!   i.e. the relay's delay; the relay keeps the sender's timing, so the
//!   gap figures of relayed streams include our own send jitter, and this
//!   does not.
//! - `engine_cpu_us_per_call_s`, `engine_core_pct`, `relay_cpu_us_per_pkt`
//!   (CPU of `--engine-pid` over the window divided by calls up × seconds,
//!   by the window, by the packets received on either side), `rss_idle_kib`
//!   (before the first call), `rss_kib` (window end), `rss_per_call_kib`;
//!   only with `--engine-pid`.
//! - `gen_core_pct`: our own CPU over the window; near 100 the generator,
//!   not the engine, was the limit. `gen_us_per_pkt`: that CPU per packet
//!   sent or received in the window (`rtp_window_sent` + received): on
//!   loopback the sender's system call carries the packet into the
//!   receiver's socket, so this is mostly kernel time. `late_skipped`: 1 ms send slots dropped
//!   because we woke more than 20 ms late (CPU starvation).
//! - `retransmits` (INVITEs), `ok_retransmits` (200s retransmitted to us
//!   and re-ACKed, or by our agents for want of an ACK), `ended_by_peer`
//!   (BYEs from the engine), `bye_ok`/`bye_timeouts` (our BYEs at the end).
//!
//! # Engine configuration for `callers` (what the harness writes)
//!
//! ```toml
//! [sip]
//! bind = "127.0.0.1:5060"
//! transports = ["udp"]
//! [rtp]
//! port_min = 20000          # 2 ports (RTP, RTCP) per call, plus 2 per
//! port_max = 40999          # callback leg (2 x callbacks.max_lines)
//! rtp_timeout_s = 300
//! [call]
//! max_calls = 9800          # >= --calls (inbound calls only); see below
//! max_duration_s = 3600
//! [edge]
//! max_messages_per_source = 100000   # all our SIP comes from one address
//! overload_queue = 4096
//! max_tcp_connections = 16  # each is an fd the capacity check reserves
//! max_tcp_per_source = 16
//! [log]
//! level = "warn"
//! [api]
//! enabled = false
//! [store]
//! path = "/tmp/lg/load.sqlite"       # a fresh file every run
//! [prompts]
//! dir = "/path/to/repo/prompts"
//! ```
//!
//! Open files: the engine keeps 2 sockets per call and refuses a
//! `max_calls` its open-files limit cannot hold. Here the hard limit is
//! 20,000 and root cannot raise it (`ulimit -n` is refused in this
//! container): with the `[edge]` lines above, 9,834 calls is the most
//! (+30 callback legs); 10,000 needs a limit of about 20,400.
//!
//! # Engine configuration for `bridged`
//!
//! A caller is offered to a free agent once it waits in its queue: after
//! the greeting, the ECBT and the callback offer have played (about 10 s
//! with the shipped prompts; no digit needed; see
//! `Flow::is_waiting_in_queue`). The dialing loop runs
//! every `callbacks.poll_interval_ms` and rings one free agent per waiting
//! caller (`b2bua/dialing.rs`, `serve`); on the agent's 200 the caller is
//! bridged at once (no whisper for live callers). Static agents (`uri`)
//! need no REGISTER. The store keeps the organisation from its first start:
//! the harness must start from a fresh store file, or agents added later are
//! ignored. The `callers` configuration with these `[call]` and `[rtp]`
//! values, plus the sections after them:
//!
//! ```toml
//! [call]
//! max_calls = 2000          # >= --calls: agent legs are not counted here,
//! [rtp]                     # but take ports: 4 per bridged call
//! port_min = 20000
//! port_max = 28099          # 2,000 bridged calls + the callback legs
//! [callbacks]
//! poll_interval_ms = 200
//! [ivr]
//! announce_interval_s = 3600 # no re-announcement while waiting
//! [[queues]]
//! id = "support"
//! offer_after_s = 0
//! staffed_agents = 2000
//! agent_ring_timeout_s = 60
//! [[agents]]                # one per call, I = 0 .. N-1
//! id = "agentI"
//! uri = "sip:agentI@127.0.0.1:5090"   # --agent-port
//! queues = ["support"]
//! ```
//!
//! # rtpengine (userspace only) for `rtpengine`
//!
//! ```text
//! rtpengine --foreground --log-stderr --table=-1 --interface=127.0.0.1 \
//!   --listen-ng=127.0.0.1:2223 --port-min=42000 --port-max=61999 \
//!   --log-level=4 --pidfile=/tmp/lg/rtpengine.pid --num-threads=2 --delete-delay=0
//! ```
//!
//! Run as root, nothing else needed (`--table=-1`: no kernel forwarding;
//! this Debian build starts without the module). Each pair takes 4 ports
//! (RTP + RTCP on both sides): the range above holds 5,000 pairs; short of
//! ports, `offer` answers "Ran out of ports" and loadgen stops with it.
//! `--engine-pid` is rtpengine's pid (all its threads are in /proc/PID/stat).
//! `--delete-delay=0` frees the ports at `delete`, so runs can follow each
//! other.

use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{cmp::Reverse, mem};

use callbackd::media::g711::linear_to_ulaw;
use socket2::{Domain, Protocol, Socket, Type};

const USAGE: &str = "usage: cargo bench --bench loadgen -- <callers|bridged|rtpengine|selftest> [--calls N --rate R --warmup-s W --measure-s M --engine-pid PID ...] (see benches/loadgen.rs)";

/// G.711 payload octets per 20 ms packet.
const PAYLOAD: usize = 160;
/// RTP header + payload.
const PKT: usize = 12 + PAYLOAD;
/// Pacing slots per 20 ms period (one per millisecond).
const SLOTS: u64 = 20;
/// The packet period.
const PERIOD_NS: i64 = 20_000_000;
/// The last 12 payload octets of our packets: this magic and the send
/// time (CLOCK_REALTIME ns, big-endian). A relay passes the payload through,
/// so the receiver knows each relayed packet's transit time.
const STAMP_MAGIC: &[u8; 4] = b"LGts";
/// RFC 3261 T1 and T2.
const T1_MS: u32 = 500;
const T2_MS: u32 = 4000;
/// Give up a transaction after 64·T1.
const GIVE_UP: Duration = Duration::from_secs(32);
/// Messages per sendmmsg/recvmmsg call.
const BATCH: usize = 512;
/// Receive buffer per datagram (RTP only needs the header).
const RX_BUF: usize = 256;
/// Rate of BYEs at the end.
const BYE_RATE: f64 = 2000.0;

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let under_bench = raw.iter().any(|a| a == "--bench");
    let args: Vec<String> = raw.into_iter().filter(|a| a != "--bench").collect();
    let mode = args.first().map(String::as_str);
    let mode = match mode {
        Some(m @ ("callers" | "bridged" | "rtpengine" | "selftest")) => m.to_owned(),
        Some(other) if under_bench && !other.starts_with('-') => {
            eprintln!("loadgen: unknown mode {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
        // No mode (cargo bench without filter, cargo test): never load.
        _ => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
    };
    if mode == "selftest" {
        return selftest::run();
    }
    let opts = match Opts::parse(&mode, &args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match mode.as_str() {
        "rtpengine" => run_rtpengine(&opts),
        _ => Gen::new(opts, mode == "bridged").and_then(Gen::run),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Opts {
    sip: SocketAddrV4,
    local_ip: Ipv4Addr,
    sip_port: u16,
    calls: usize,
    rate: f64,
    warmup_s: f64,
    measure_s: f64,
    engine_pid: Option<i32>,
    to: String,
    rtp_sockets: usize,
    agent_port: u16,
    agent_prefix: String,
    bridge_wait_s: f64,
    ng: SocketAddrV4,
}

impl Opts {
    fn parse(mode: &str, args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            sip: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5060),
            local_ip: Ipv4Addr::LOCALHOST,
            sip_port: 0,
            calls: 100,
            rate: 200.0,
            warmup_s: 5.0,
            measure_s: 10.0,
            engine_pid: None,
            to: "1000".into(),
            rtp_sockets: 0,
            agent_port: 5090,
            agent_prefix: "agent".into(),
            bridge_wait_s: 60.0,
            ng: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2223),
        };
        let mut it = args.iter();
        while let Some(key) = it.next() {
            // Extra test-harness flags (e.g. --test-threads) never get here:
            // main only parses options after a mode.
            let Some(value) = it.next() else {
                return Err(format!("option {key} needs a value"));
            };
            let bad = |what: &str| format!("option {key}: {value:?} is not {what}");
            match key.as_str() {
                "--sip" => o.sip = value.parse().map_err(|_| bad("an IPv4 address:port"))?,
                "--ng" => o.ng = value.parse().map_err(|_| bad("an IPv4 address:port"))?,
                "--local-ip" => o.local_ip = value.parse().map_err(|_| bad("an IPv4 address"))?,
                "--sip-port" => o.sip_port = value.parse().map_err(|_| bad("a port"))?,
                "--agent-port" => o.agent_port = value.parse().map_err(|_| bad("a port"))?,
                "--calls" => o.calls = value.parse().map_err(|_| bad("a count"))?,
                "--rtp-sockets" => o.rtp_sockets = value.parse().map_err(|_| bad("a count"))?,
                "--rate" => o.rate = positive(value).ok_or_else(|| bad("a number > 0"))?,
                "--warmup-s" => o.warmup_s = non_negative(value).ok_or_else(|| bad("seconds"))?,
                "--measure-s" => o.measure_s = positive(value).ok_or_else(|| bad("seconds > 0"))?,
                "--bridge-wait-s" => {
                    o.bridge_wait_s = non_negative(value).ok_or_else(|| bad("seconds"))?
                }
                "--engine-pid" => {
                    let pid: i32 = value.parse().map_err(|_| bad("a pid"))?;
                    if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
                        return Err(format!("--engine-pid {pid}: no such process"));
                    }
                    o.engine_pid = Some(pid);
                }
                "--to" => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return Err(bad("a user part (letters and digits)"));
                    }
                    o.to = value.clone();
                }
                "--agent-prefix" => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(bad("letters"));
                    }
                    o.agent_prefix = value.clone();
                }
                _ => return Err(format!("unknown option {key} for mode {mode}")),
            }
        }
        if o.calls == 0 || o.calls > 100_000 {
            return Err("--calls must be 1..=100000".into());
        }
        if o.rtp_sockets == 0 {
            o.rtp_sockets = o.calls.div_ceil(1000);
        }
        if o.rtp_sockets > 64 {
            return Err("--rtp-sockets must be 1..=64".into());
        }
        Ok(o)
    }
}

fn positive(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0)
}

fn non_negative(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

// ---------------------------------------------------------------------------
// Sockets

fn udp_socket(addr: SocketAddrV4, rcvbuf: usize) -> Result<UdpSocket, String> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| format!("socket: {e}"))?;
    s.bind(&SocketAddr::V4(addr).into())
        .map_err(|e| format!("bind {addr}: {e}"))?;
    s.set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    let fd = s.as_raw_fd();
    // Root may exceed rmem_max/wmem_max (FORCE); otherwise the plain
    // option gives what the limit allows.
    if !setsockopt_int(fd, libc::SO_RCVBUFFORCE, rcvbuf as i32) {
        let _ = s.set_recv_buffer_size(rcvbuf);
    }
    if !setsockopt_int(fd, libc::SO_SNDBUFFORCE, rcvbuf as i32) {
        let _ = s.set_send_buffer_size(rcvbuf);
    }
    Ok(s.into())
}

fn setsockopt_int(fd: i32, opt: i32, value: i32) -> bool {
    // SAFETY: a valid fd and a pointer to an int of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        ) == 0
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn local_port(s: &UdpSocket) -> u16 {
    s.local_addr().map(|a| a.port()).unwrap_or(0)
}

fn realtime_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// RTP sending: every stream sends one packet per 20 ms in its slot
// (stream id % 20 → millisecond within the period); a slot's packets for one
// socket go out in one sendmmsg.

#[derive(Clone)]
struct TxStream {
    dst: libc::sockaddr_in,
    sock: usize,
    ssrc: u32,
    seq: u16,
    ts0: u32,
    /// The period of the first packet; the timestamp is ts0 + 160·(p − p0),
    /// so periods skipped when late show as timestamp gaps, not as bursts.
    p0: u64,
    active: bool,
    in_slot: bool,
    first: bool,
}

struct Sender {
    streams: Vec<TxStream>,
    slots: Vec<Vec<u32>>,
    /// Per-socket scratch of stream ids for the slot being sent.
    by_sock: Vec<Vec<u32>>,
    bufs: Box<[[u8; PKT]]>,
    names: Box<[libc::sockaddr_in]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    payload: [u8; PAYLOAD],
    sent: u64,
    dropped: u64,
}

impl Sender {
    fn new(streams: usize, sockets: usize, salt: u32) -> Sender {
        let mut payload = [0u8; PAYLOAD];
        for (n, b) in payload.iter_mut().enumerate() {
            // A quiet 400 Hz tone: 20 samples a cycle, 8 cycles a packet.
            let x = (n as f64 * 2.0 * std::f64::consts::PI / 20.0).sin() * 1000.0;
            *b = linear_to_ulaw(x as i16);
        }
        let tx = (0..streams)
            .map(|i| TxStream {
                dst: sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
                sock: 0,
                ssrc: salt ^ (0x1000_0000 | i as u32),
                seq: (i as u16).wrapping_mul(7919),
                ts0: (i as u32).wrapping_mul(104_729),
                p0: 0,
                active: false,
                in_slot: false,
                first: true,
            })
            .collect();
        // SAFETY (zeroed): plain C structs; pointers are set before use.
        Sender {
            streams: tx,
            slots: vec![Vec::new(); SLOTS as usize],
            by_sock: vec![Vec::new(); sockets],
            bufs: vec![[0u8; PKT]; BATCH].into_boxed_slice(),
            names: vec![sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); BATCH]
                .into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            hdrs: (0..BATCH)
                .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
                .collect(),
            payload,
            sent: 0,
            dropped: 0,
        }
    }

    fn start(&mut self, id: usize, sock: usize, dst: SocketAddrV4, period: u64) {
        let s = &mut self.streams[id];
        s.dst = sockaddr(dst);
        s.sock = sock;
        s.p0 = period;
        s.active = true;
        s.first = true;
        if !s.in_slot {
            s.in_slot = true;
            self.slots[id % SLOTS as usize].push(id as u32);
        }
    }

    fn stop(&mut self, id: usize) {
        self.streams[id].active = false;
    }

    /// Sends slot `tick % 20` of period `tick / 20`.
    fn send_tick(&mut self, tick: u64, socks: &[UdpSocket]) {
        let slot = (tick % SLOTS) as usize;
        let period = tick / SLOTS;
        let streams = &mut self.streams;
        let list = &mut self.slots[slot];
        list.retain(|&id| {
            let s = &mut streams[id as usize];
            s.in_slot = s.active;
            s.active
        });
        for b in &mut self.by_sock {
            b.clear();
        }
        for &id in list.iter() {
            let s = &self.streams[id as usize];
            if period >= s.p0 {
                self.by_sock[s.sock].push(id);
            }
        }
        for (k, sock) in socks.iter().enumerate().take(self.by_sock.len()) {
            let ids = mem::take(&mut self.by_sock[k]);
            for chunk in ids.chunks(BATCH) {
                self.send_batch(chunk, period, sock);
            }
            self.by_sock[k] = ids;
        }
    }

    fn send_batch(&mut self, ids: &[u32], period: u64, sock: &UdpSocket) {
        let stamp = realtime_ns().to_be_bytes();
        for (k, &id) in ids.iter().enumerate() {
            let s = &mut self.streams[id as usize];
            let ts = s
                .ts0
                .wrapping_add((period - s.p0).wrapping_mul(PAYLOAD as u64) as u32);
            let b = &mut self.bufs[k];
            b[0] = 0x80;
            b[1] = if s.first { 0x80 } else { 0 }; // marker, PT 0 (PCMU)
            b[2..4].copy_from_slice(&s.seq.to_be_bytes());
            b[4..8].copy_from_slice(&ts.to_be_bytes());
            b[8..12].copy_from_slice(&s.ssrc.to_be_bytes());
            b[12..].copy_from_slice(&self.payload);
            b[PKT - 12..PKT - 8].copy_from_slice(STAMP_MAGIC);
            b[PKT - 8..].copy_from_slice(&stamp);
            s.seq = s.seq.wrapping_add(1);
            s.first = false;
            self.names[k] = s.dst;
            self.iovs[k] = libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: PKT,
            };
            let h = &mut self.hdrs[k].msg_hdr;
            h.msg_name = (&mut self.names[k] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[k];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        }
        let mut done = 0;
        while done < ids.len() {
            // SAFETY: hdrs[done..len] point into bufs/names/iovs, which live
            // (boxed, not moved) for the duration of the call.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs[done..].as_mut_ptr(),
                    (ids.len() - done) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let err = std::io::Error::last_os_error();
                if n < 0 && err.kind() == ErrorKind::Interrupted {
                    continue;
                }
                // Full buffer or an ICMP error queued for one destination:
                // skip that packet and go on with the rest.
                self.dropped += 1;
                done += 1;
                continue;
            }
            done += n as usize;
            self.sent += n as u64;
        }
    }
}

// ---------------------------------------------------------------------------
// RTP receiving and the statistics

/// A latency histogram in µs: 1 µs buckets below 100 ms, 1 ms buckets
/// up to 100 s, larger values in the last (reported as the maximum).
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

/// Below this, 1 µs buckets.
const FINE_US: u64 = 100_000;
/// Width and number of the coarse buckets.
const COARSE_US: u64 = 1000;
const COARSE_N: u64 = 99_900;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: vec![0; (FINE_US + COARSE_N + 1) as usize],
            count: 0,
            max: 0,
        }
    }

    fn index(us: u64) -> usize {
        if us < FINE_US {
            us as usize
        } else {
            (FINE_US + ((us - FINE_US) / COARSE_US).min(COARSE_N)) as usize
        }
    }

    fn record(&mut self, us: u64) {
        self.buckets[Self::index(us)] += 1;
        self.count += 1;
        self.max = self.max.max(us);
    }

    /// The smallest bucket value v with at least q of the samples ≤ v (0 if
    /// empty); in the overflow bucket, the maximum.
    fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let last = self.buckets.len() - 1;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let i = i as u64;
                return match i {
                    _ if i as usize == last => self.max,
                    _ if i < FINE_US => i,
                    _ => FINE_US + (i - FINE_US) * COARSE_US,
                };
            }
        }
        self.max
    }

    /// Samples above `us` (exact below 100 ms; by bucket above).
    fn above(&self, us: u64) -> u64 {
        self.buckets[Self::index(us) + 1..].iter().sum()
    }
}

/// Where sending resumes when the loop wakes at `now_tick` with
/// `next_tick` the first slot not yet sent: (first tick to send, ticks
/// skipped). Less than one period late, every missed slot is sent (each
/// stream at most once); later, the older slots are dropped, so no stream
/// sends a burst and the skipped periods show as timestamp gaps.
fn catch_up(next_tick: u64, now_tick: u64) -> (u64, u64) {
    if now_tick >= next_tick + SLOTS {
        let first = now_tick + 1 - SLOTS;
        (first, first - next_tick)
    } else {
        (next_tick, 0)
    }
}

/// One received stream, keyed by (source, SSRC).
#[derive(Debug, Clone)]
struct RxStream {
    src: u64,
    ssrc: u32,
    have_last: bool,
    last_ext: i64,
    last_ts: u32,
    last_ns: i64,
    win_first: i64,
    win_max: i64,
    win_count: u64,
}

/// Extended sequence number of `seq` next to the previous `last_ext`.
fn extend_seq(last_ext: i64, seq: u16) -> i64 {
    let delta = seq.wrapping_sub(last_ext as u16) as i16;
    last_ext + i64::from(delta)
}

/// All receive statistics; `window` is [start, end) in CLOCK_REALTIME ns.
struct RxStats {
    streams: Vec<RxStream>,
    index: HashMap<(u64, u32), usize>,
    by_port: Vec<u32>,
    hist: Histogram,
    /// Arrival − send time of our own (relayed) packets, µs.
    transit: Histogram,
    window: (i64, i64),
    received: u64,
    win_received: u64,
    malformed: u64,
    rtcp: u64,
}

impl RxStats {
    fn new() -> RxStats {
        RxStats {
            streams: Vec::new(),
            index: HashMap::new(),
            by_port: vec![0; 65536],
            hist: Histogram::new(),
            transit: Histogram::new(),
            window: (i64::MAX, i64::MAX),
            received: 0,
            win_received: 0,
            malformed: 0,
            rtcp: 0,
        }
    }

    /// One datagram from `src` (ip << 16 | port) that arrived at `at_ns`.
    fn packet(&mut self, src: u64, at_ns: i64, data: &[u8]) {
        self.received += 1;
        if data.len() < 12 || data[0] >> 6 != 2 {
            self.malformed += 1;
            return;
        }
        // RTCP (packet types 192..=223 where RTP has marker + PT) on a
        // socket that happens to sit at someone's RTP port + 1.
        if (192..=223).contains(&data[1]) {
            self.rtcp += 1;
            return;
        }
        let seq = u16::from_be_bytes([data[2], data[3]]);
        let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        let port = (src & 0xffff) as usize;
        let hint = self.by_port[port] as usize;
        let idx = if hint > 0 && {
            let s = &self.streams[hint - 1];
            s.src == src && s.ssrc == ssrc
        } {
            hint - 1
        } else {
            let next = self.streams.len();
            let idx = *self.index.entry((src, ssrc)).or_insert(next);
            if idx == next {
                self.streams.push(RxStream {
                    src,
                    ssrc,
                    have_last: false,
                    last_ext: 0,
                    last_ts: 0,
                    last_ns: 0,
                    win_first: i64::MAX,
                    win_max: i64::MIN,
                    win_count: 0,
                });
            }
            self.by_port[port] = idx as u32 + 1;
            idx
        };
        let (ws, we) = self.window;
        let s = &mut self.streams[idx];
        let ext = if s.have_last {
            extend_seq(s.last_ext, seq)
        } else {
            i64::from(seq)
        };
        if at_ns >= ws && at_ns < we {
            if data.len() >= PKT && &data[PKT - 12..PKT - 8] == STAMP_MAGIC {
                let mut sent = [0u8; 8];
                sent.copy_from_slice(&data[PKT - 8..PKT]);
                let transit = at_ns - i64::from_be_bytes(sent);
                self.transit.record((transit.max(0) / 1000) as u64);
            }
            self.win_received += 1;
            s.win_count += 1;
            s.win_first = s.win_first.min(ext);
            s.win_max = s.win_max.max(ext);
            if s.have_last
                && ext == s.last_ext + 1
                && ts.wrapping_sub(s.last_ts) == PAYLOAD as u32
                && s.last_ns >= ws
            {
                let dev = ((at_ns - s.last_ns) - PERIOD_NS).unsigned_abs() / 1000;
                self.hist.record(dev);
            }
        }
        if !s.have_last || ext > s.last_ext {
            s.have_last = true;
            s.last_ext = ext;
            s.last_ts = ts;
            s.last_ns = at_ns;
        }
    }

    /// (expected, lost, streams seen in the window).
    fn loss(&self) -> (u64, u64, u64) {
        let mut expected = 0;
        let mut lost = 0;
        let mut streams = 0;
        for s in self.streams.iter().filter(|s| s.win_count > 0) {
            let e = (s.win_max - s.win_first + 1).max(0) as u64;
            expected += e;
            lost += e.saturating_sub(s.win_count);
            streams += 1;
        }
        (expected, lost, streams)
    }
}

/// K sockets read with recvmmsg, kernel receive timestamps per datagram.
struct Receiver {
    bufs: Box<[[u8; RX_BUF]]>,
    names: Box<[libc::sockaddr_in]>,
    iovs: Box<[libc::iovec]>,
    ctrl: Box<[[u64; 8]]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            bufs: vec![[0u8; RX_BUF]; BATCH].into_boxed_slice(),
            names: vec![sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); BATCH]
                .into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            ctrl: vec![[0u64; 8]; BATCH].into_boxed_slice(),
            // SAFETY: plain C structs; every pointer is set before use.
            hdrs: (0..BATCH)
                .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
                .collect(),
        }
    }

    /// Reads `sock` until it is empty (or 16 batches), feeding `stats`.
    fn drain(&mut self, sock: &UdpSocket, stats: &mut RxStats) {
        for _ in 0..16 {
            for k in 0..BATCH {
                self.iovs[k] = libc::iovec {
                    iov_base: self.bufs[k].as_mut_ptr().cast(),
                    iov_len: RX_BUF,
                };
                let h = &mut self.hdrs[k].msg_hdr;
                h.msg_name = (&mut self.names[k] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = &mut self.iovs[k];
                h.msg_iovlen = 1;
                h.msg_control = self.ctrl[k].as_mut_ptr().cast();
                h.msg_controllen = mem::size_of::<[u64; 8]>() as _;
                h.msg_flags = 0;
                self.hdrs[k].msg_len = 0;
            }
            // SAFETY: every header points into boxed buffers owned by self.
            let n = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return;
            }
            let fallback = realtime_ns();
            for k in 0..n as usize {
                let h = &self.hdrs[k].msg_hdr;
                let at = kernel_timestamp(h).unwrap_or(fallback);
                let name = &self.names[k];
                let src = (u64::from(u32::from_be(name.sin_addr.s_addr)) << 16)
                    | u64::from(u16::from_be(name.sin_port));
                let len = (self.hdrs[k].msg_len as usize).min(RX_BUF);
                stats.packet(src, at, &self.bufs[k][..len]);
            }
            if (n as usize) < BATCH {
                return;
            }
        }
    }
}

/// The SCM_TIMESTAMPNS of a received message, in ns since the epoch.
fn kernel_timestamp(h: &libc::msghdr) -> Option<i64> {
    // SAFETY: the control buffer and its length were filled by recvmmsg;
    // CMSG_* walk within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

fn rtp_socket(ip: Ipv4Addr) -> Result<UdpSocket, String> {
    let s = udp_socket(SocketAddrV4::new(ip, 0), 32 << 20)?;
    if !setsockopt_int(s.as_raw_fd(), libc::SO_TIMESTAMPNS, 1) {
        return Err("SO_TIMESTAMPNS refused".into());
    }
    Ok(s)
}

// ---------------------------------------------------------------------------
// SIP: a tolerant reader (never panics on bad bytes) and message builders

#[derive(Debug)]
enum Start<'a> {
    Request { method: &'a str, uri: &'a str },
    Response { code: u16 },
}

#[derive(Debug)]
struct Msg<'a> {
    start: Start<'a>,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
}

/// The long form of a compact header name (RFC 3261 §7.3.3).
fn long_name(name: &str) -> &str {
    match name {
        "i" | "I" => "call-id",
        "t" | "T" => "to",
        "f" | "F" => "from",
        "m" | "M" => "contact",
        "v" | "V" => "via",
        "l" | "L" => "content-length",
        "c" | "C" => "content-type",
        _ => name,
    }
}

fn parse_msg(buf: &[u8]) -> Option<Msg<'_>> {
    let (head_end, body_start) = find_blank(buf)?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next()?.trim();
    let start = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        let code = rest.get(..3)?.parse().ok()?;
        Start::Response { code }
    } else {
        let mut p = first.split(' ');
        let method = p.next()?;
        let uri = p.next()?;
        if !p.next()?.starts_with("SIP/2.0") || method.is_empty() {
            return None;
        }
        Start::Request { method, uri }
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            continue; // folded continuation: we need none of those values
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        headers.push((long_name(name.trim()), value.trim()));
    }
    let mut body = &buf[body_start..];
    let msg = Msg {
        start,
        headers,
        body,
    };
    if let Some(len) = msg
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        && len <= body.len()
    {
        body = &body[..len];
    }
    Some(Msg { body, ..msg })
}

/// (end of head, start of body): the first empty line.
fn find_blank(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

impl<'a> Msg<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn all(&self, name: &'a str) -> impl Iterator<Item = &'a str> + '_ {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// (number, method) of the CSeq.
    fn cseq(&self) -> Option<(u32, &'a str)> {
        let v = self.get("cseq")?;
        let mut p = v.split_whitespace();
        Some((p.next()?.parse().ok()?, p.next()?))
    }
}

/// The `tag` parameter of a From/To value.
fn tag_of(value: &str) -> Option<&str> {
    // Parameters follow the URI (after '>' when the URI is bracketed).
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("tag").then(|| v.trim())
    })
}

/// The URI of a Contact value (`<uri>;params`, or a bare `uri;params`).
fn contact_uri(value: &str) -> Option<&str> {
    if let Some(start) = value.find('<') {
        let rest = &value[start + 1..];
        return rest.find('>').map(|end| &rest[..end]);
    }
    let uri = value.split(';').next()?.trim();
    (!uri.is_empty()).then_some(uri)
}

/// The user part of a sip: URI.
fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("SIP:"))?;
    let (user, _) = rest.split_once('@')?;
    Some(user.split(';').next().unwrap_or(user))
}

/// The audio address of an SDP: media-level c= over session-level, the
/// first m=audio port.
fn sdp_audio(body: &[u8]) -> Option<SocketAddrV4> {
    let text = std::str::from_utf8(body).ok()?;
    let mut session_ip = None;
    let mut media_ip = None;
    let mut port = None;
    let mut in_audio = false;
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // only the first audio stream
            }
            let mut p = m.split_whitespace();
            in_audio = p.next() == Some("audio");
            if in_audio {
                port = p.next().and_then(|v| v.parse::<u16>().ok());
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .strip_prefix("IN IP4 ")
                .and_then(|a| a.split('/').next()?.trim().parse::<Ipv4Addr>().ok());
            if port.is_none() && !in_audio {
                session_ip = ip;
            } else if in_audio {
                media_ip = ip;
            }
        }
    }
    let ip = media_ip.or(session_ip)?;
    let port = port.filter(|p| *p != 0)?;
    Some(SocketAddrV4::new(ip, port))
}

fn sdp(ip: Ipv4Addr, port: u16, id: usize) -> String {
    format!(
        "v=0\r\no=loadgen {id} 1 IN IP4 {ip}\r\ns=loadgen\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// A response to `req`: its Vias, From, To (with `to_tag` added when the To
/// has none), Call-ID and CSeq copied.
fn response(
    req: &Msg<'_>,
    code: u16,
    reason: &str,
    to_tag: &str,
    tail: &str,
    body: &str,
) -> Vec<u8> {
    let mut r = String::with_capacity(512 + body.len());
    let _ = write!(r, "SIP/2.0 {code} {reason}\r\n");
    for v in req.all("via") {
        let _ = write!(r, "Via: {v}\r\n");
    }
    if let Some(f) = req.get("from") {
        let _ = write!(r, "From: {f}\r\n");
    }
    if let Some(t) = req.get("to") {
        if tag_of(t).is_none() && !to_tag.is_empty() {
            let _ = write!(r, "To: {t};tag={to_tag}\r\n");
        } else {
            let _ = write!(r, "To: {t}\r\n");
        }
    }
    if let Some(c) = req.get("call-id") {
        let _ = write!(r, "Call-ID: {c}\r\n");
    }
    if let Some(c) = req.get("cseq") {
        let _ = write!(r, "CSeq: {c}\r\n");
    }
    r.push_str(tail);
    if !body.is_empty() {
        r.push_str("Content-Type: application/sdp\r\n");
    }
    let _ = write!(r, "Content-Length: {}\r\n\r\n{body}", body.len());
    r.into_bytes()
}

// ---------------------------------------------------------------------------
// Process figures

#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    cpu_us: f64,
    rss_kib: u64,
}

fn proc_sample(pid: i32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `after` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_us: ticks / hz * 1e6,
        rss_kib,
    })
}

/// Our own CPU time (user + system), µs.
fn self_cpu_us() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What was measured over the window.
struct Window {
    start: Instant,
    secs: f64,
    engine0: Option<ProcSample>,
    engine1: Option<ProcSample>,
    gen_cpu_us: f64,
    /// Packets we sent in the window (at its start: the count so far).
    sent: u64,
    live_at_start: usize,
    bridged_at_start: usize,
}

/// Our own cost: `gen_core_pct`, and CPU µs per packet we sent or received
/// in the window (on loopback the sender pays the delivery, so this is
/// mostly the kernel's).
fn gen_keys(out: &mut String, w: &Window, received: u64) {
    let _ = write!(
        out,
        " gen_core_pct={} gen_us_per_pkt={} rtp_window_sent={}",
        fmt_f(w.gen_cpu_us / (w.secs * 1e6) * 100.0),
        fmt_f(w.gen_cpu_us / (w.sent + received).max(1) as f64),
        w.sent
    );
}

fn fmt_f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "0".into()
    }
}

/// The pacing/loss keys shared by every mode. `rx_stream_pps` is what one
/// stream delivered per second of the window (50 at 20 ms): packets a
/// sender skipped without using a sequence number show here, not as loss,
/// and their timestamp jumps keep them out of the gap figures.
fn rx_keys(out: &mut String, rx: &RxStats, secs: f64) {
    let (expected, lost, streams) = rx.loss();
    let h = &rx.hist;
    let out_pct = if h.count > 0 {
        h.above(2000) as f64 * 100.0 / h.count as f64
    } else {
        0.0
    };
    let loss_pct = if expected > 0 {
        lost as f64 * 100.0 / expected as f64
    } else {
        0.0
    };
    let _ = write!(
        out,
        " streams={streams} rx_stream_pps={} gaps={} gap_dev_p50_us={} gap_dev_p99_us={} gap_dev_max_us={} gap_out_2ms_pct={} loss_pct={} lost={lost}",
        fmt_f(rx.win_received as f64 / (streams.max(1) as f64 * secs)),
        h.count,
        h.quantile(0.5),
        h.quantile(0.99),
        h.max,
        fmt_f(out_pct),
        fmt_f(loss_pct),
    );
    // Relayed packets of ours only (bridged, rtpengine): the relay's delay,
    // which the generator's own send lateness does not enter.
    let t = &rx.transit;
    if t.count > 0 {
        let _ = write!(
            out,
            " transit_p50_us={} transit_p99_us={} transit_max_us={}",
            t.quantile(0.5),
            t.quantile(0.99),
            t.max
        );
    }
}

// ---------------------------------------------------------------------------
// The SIP generator (callers, bridged)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CState {
    Idle,
    Inviting,
    Up,
    Failed,
    EndedByPeer,
    Byeing,
    Done,
}

struct Caller {
    state: CState,
    /// Next retransmission (INVITE: timer A; BYE: timer E), and interval.
    next: Option<Instant>,
    interval_ms: u32,
    since: Instant,
    provisional: bool,
    to_tag: String,
    target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AState {
    Idle,
    Answered,
    Up,
}

struct Agent {
    state: AState,
    call_id: String,
    ok: Vec<u8>,
    from: SocketAddr,
    remote: Option<SocketAddrV4>,
    next: Option<Instant>,
    interval_ms: u32,
    since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Caller,
    Agent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    Bridging,
    Warmup,
    Measure,
    Teardown,
}

struct Gen {
    o: Opts,
    bridged_mode: bool,
    run: String,
    sip: UdpSocket,
    sip_port: u16,
    agent_sip: Option<UdpSocket>,
    /// Caller-side RTP sockets, then agent-side ones.
    rtp: Vec<UdpSocket>,
    rtp_ports: Vec<u16>,
    callers: Vec<Caller>,
    agents: Vec<Agent>,
    agent_by_call_id: HashMap<String, usize>,
    timers: BinaryHeap<Reverse<(Instant, Timer, u32)>>,
    tx: Sender,
    rx: RxStats,
    rx_side: [u64; 2],
    recv: Receiver,
    t0: Instant,
    next_tick: u64,
    late_skipped: u64,
    // counters
    started: usize,
    up: usize,
    failed: usize,
    retransmits: u64,
    ok_retransmits: u64,
    ended_by_peer: usize,
    agent_ended: usize,
    agent_answered: usize,
    bye_sent: usize,
    bye_cursor: usize,
    bye_ok: usize,
    bye_timeouts: usize,
    sip_malformed: u64,
    /// Which poll fds were readable after the last sleep (empty: all).
    ready: Vec<bool>,
    /// Callers and agents in each state.
    caller_states: [usize; 7],
    agent_states: [usize; 3],
    sip_buf: Vec<u8>,
}

impl Gen {
    fn new(o: Opts, bridged_mode: bool) -> Result<Gen, String> {
        let sip = udp_socket(SocketAddrV4::new(o.local_ip, o.sip_port), 16 << 20)?;
        let sip_port = local_port(&sip);
        let agent_sip = if bridged_mode {
            Some(udp_socket(
                SocketAddrV4::new(o.local_ip, o.agent_port),
                16 << 20,
            )?)
        } else {
            None
        };
        let k = o.rtp_sockets;
        let sides = if bridged_mode { 2 } else { 1 };
        let rtp = (0..k * sides)
            .map(|_| rtp_socket(o.local_ip))
            .collect::<Result<Vec<_>, _>>()?;
        let rtp_ports = rtp.iter().map(local_port).collect();
        let now = Instant::now();
        let n = o.calls;
        let salt = std::process::id().wrapping_mul(2_654_435_761);
        Ok(Gen {
            run: format!("{:x}", salt & 0xffffff),
            tx: Sender::new(n * sides, k * sides, salt),
            callers: (0..n)
                .map(|_| Caller {
                    state: CState::Idle,
                    next: None,
                    interval_ms: T1_MS,
                    since: now,
                    provisional: false,
                    to_tag: String::new(),
                    target: String::new(),
                })
                .collect(),
            agents: (0..if bridged_mode { n } else { 0 })
                .map(|_| Agent {
                    state: AState::Idle,
                    call_id: String::new(),
                    ok: Vec::new(),
                    from: SocketAddr::V4(o.sip),
                    remote: None,
                    next: None,
                    interval_ms: T1_MS,
                    since: now,
                })
                .collect(),
            o,
            bridged_mode,
            sip,
            sip_port,
            agent_sip,
            rtp,
            rtp_ports,
            agent_by_call_id: HashMap::new(),
            timers: BinaryHeap::new(),
            rx: RxStats::new(),
            rx_side: [0; 2],
            recv: Receiver::new(),
            t0: now,
            next_tick: 0,
            late_skipped: 0,
            started: 0,
            up: 0,
            failed: 0,
            retransmits: 0,
            ok_retransmits: 0,
            ended_by_peer: 0,
            agent_ended: 0,
            agent_answered: 0,
            bye_sent: 0,
            bye_cursor: 0,
            bye_ok: 0,
            bye_timeouts: 0,
            sip_malformed: 0,
            ready: Vec::new(),
            caller_states: [n, 0, 0, 0, 0, 0, 0],
            agent_states: [if bridged_mode { n } else { 0 }, 0, 0],
            sip_buf: vec![0u8; 65536],
        })
    }

    fn run(mut self) -> Result<String, String> {
        let n = self.o.calls;
        let pid = self.o.engine_pid;
        let idle = pid.and_then(proc_sample);
        eprintln!(
            "loadgen: {} calls at {}/s to {} (sip port {}, {} rtp sockets per side, run {})",
            n, self.o.rate, self.o.sip, self.sip_port, self.o.rtp_sockets, self.run
        );
        self.t0 = Instant::now();
        let ramp_start = self.t0;
        let ramp_deadline = ramp_start + Duration::from_secs_f64(n as f64 / self.o.rate + 40.0);
        let mut phase = Phase::Ramp;
        let mut phase_end = ramp_deadline;
        let mut window: Option<Window> = None;
        let mut teardown_start = ramp_start;
        let mut teardown_deadline = ramp_start;
        let mut report = Instant::now() + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            self.pace(now);
            self.poll_io();
            self.fire_timers(now);
            match phase {
                Phase::Ramp => {
                    let due = ((now - ramp_start).as_secs_f64() * self.o.rate) as usize + 1;
                    while self.started < due.min(n) {
                        self.invite(self.started, now);
                        self.started += 1;
                    }
                    let resolved = self.started == n
                        && self.caller_states[CState::Idle as usize] == 0
                        && self.caller_states[CState::Inviting as usize] == 0;
                    if resolved || now >= ramp_deadline {
                        if !resolved {
                            eprintln!("loadgen: ramp deadline passed with calls unanswered");
                        }
                        if self.bridged_mode {
                            phase = Phase::Bridging;
                            phase_end = now + Duration::from_secs_f64(self.o.bridge_wait_s);
                        } else {
                            phase = Phase::Warmup;
                            phase_end = now + Duration::from_secs_f64(self.o.warmup_s);
                        }
                        eprintln!("loadgen: ramp done: {} up, {} failed", self.up, self.failed);
                    }
                }
                Phase::Bridging => {
                    let live = self.live_callers();
                    if (self.bridged() >= live && live > 0) || now >= phase_end {
                        if now >= phase_end {
                            eprintln!(
                                "loadgen: bridge wait over with {} of {live} bridged",
                                self.bridged()
                            );
                        }
                        phase = Phase::Warmup;
                        phase_end = now + Duration::from_secs_f64(self.o.warmup_s);
                    }
                }
                Phase::Warmup => {
                    if now >= phase_end {
                        phase = Phase::Measure;
                        phase_end = now + Duration::from_secs_f64(self.o.measure_s);
                        let ws = realtime_ns();
                        self.rx.window = (ws, ws + (self.o.measure_s * 1e9) as i64);
                        window = Some(Window {
                            start: now,
                            secs: 0.0,
                            engine0: pid.and_then(proc_sample),
                            engine1: None,
                            gen_cpu_us: self_cpu_us(),
                            sent: self.tx.sent,
                            live_at_start: self.live_callers(),
                            bridged_at_start: self.bridged(),
                        });
                        eprintln!("loadgen: measuring {} s", self.o.measure_s);
                    }
                }
                Phase::Measure => {
                    if now >= phase_end {
                        if let Some(w) = &mut window {
                            w.engine1 = pid.and_then(proc_sample);
                            w.gen_cpu_us = self_cpu_us() - w.gen_cpu_us;
                            w.sent = self.tx.sent - w.sent;
                            w.secs = (now - w.start).as_secs_f64();
                        }
                        // Packets stamped before the end may still be queued.
                        for i in 0..self.rtp.len() {
                            self.drain_rtp(i);
                        }
                        phase = Phase::Teardown;
                        teardown_start = now;
                        teardown_deadline = now
                            + Duration::from_secs_f64(n as f64 / BYE_RATE)
                            + GIVE_UP
                            + Duration::from_secs(3);
                        eprintln!("loadgen: hanging up");
                    }
                }
                Phase::Teardown => {
                    let due = ((now - teardown_start).as_secs_f64() * BYE_RATE) as usize + 1;
                    let mut i = self.bye_cursor;
                    while self.bye_sent < due && i < n {
                        if self.callers[i].state == CState::Up {
                            self.bye(i, now);
                            self.bye_sent += 1;
                        }
                        i += 1;
                    }
                    self.bye_cursor = i;
                    let pending = self.bye_cursor < n
                        || self.caller_states[CState::Byeing as usize] > 0
                        || self.agent_states[AState::Idle as usize] < self.agents.len();
                    if !pending || now >= teardown_deadline {
                        break;
                    }
                }
            }
            if now >= report {
                report = now + Duration::from_secs(1);
                eprintln!(
                    "loadgen: {:?} started={} up={} failed={} bridged={} retx={} rtp_sent={} rtp_recv={} late_skipped={}",
                    phase,
                    self.started,
                    self.up,
                    self.failed,
                    self.bridged(),
                    self.retransmits,
                    self.tx.sent,
                    self.rx.received,
                    self.late_skipped
                );
            }
            self.sleep();
        }
        let w = window.ok_or("the measurement window never started")?;
        Ok(self.result(&w, idle))
    }

    fn live_callers(&self) -> usize {
        self.caller_states[CState::Up as usize]
    }

    fn bridged(&self) -> usize {
        self.agent_states[AState::Up as usize]
    }

    /// Moves caller `i` to `state`, keeping the per-state counts.
    fn set_caller(&mut self, i: usize, state: CState) {
        let c = &mut self.callers[i];
        self.caller_states[c.state as usize] -= 1;
        self.caller_states[state as usize] += 1;
        c.state = state;
    }

    /// Moves agent `j` to `state`, keeping the per-state counts.
    fn set_agent(&mut self, j: usize, state: AState) {
        let a = &mut self.agents[j];
        self.agent_states[a.state as usize] -= 1;
        self.agent_states[state as usize] += 1;
        a.state = state;
    }

    fn result(&self, w: &Window, idle: Option<ProcSample>) -> String {
        let mode = if self.bridged_mode {
            "bridged"
        } else {
            "callers"
        };
        let mut out = format!(
            "result mode={mode} calls={} up={} failed={} retransmits={} ended_by_peer={}",
            self.o.calls, self.up, self.failed, self.retransmits, self.ended_by_peer
        );
        if self.bridged_mode {
            let _ = write!(
                out,
                " bridged={} agent_answered={} agent_ended={}",
                w.bridged_at_start, self.agent_answered, self.agent_ended
            );
            // Everything received in the window, on both sides: relayed
            // when every caller was bridged (bridged = up), else the
            // unbridged callers' prompts are in it too.
            let relayed = self.rx.win_received;
            let _ = write!(
                out,
                " relayed={relayed} relayed_pps={} relayed_caller_side={} relayed_agent_side={}",
                fmt_f(relayed as f64 / w.secs),
                self.rx_side[0],
                self.rx_side[1]
            );
            if let (Some(a), Some(b)) = (w.engine0, w.engine1) {
                let _ = write!(
                    out,
                    " relay_cpu_us_per_pkt={}",
                    fmt_f((b.cpu_us - a.cpu_us) / relayed.max(1) as f64)
                );
            }
        }
        rx_keys(&mut out, &self.rx, w.secs);
        let _ = write!(
            out,
            " rtp_sent={} rtp_send_dropped={} rtp_received={} rtp_window_received={} late_skipped={}",
            self.tx.sent,
            self.tx.dropped,
            self.rx.received,
            self.rx.win_received,
            self.late_skipped
        );
        if let (Some(a), Some(b)) = (w.engine0, w.engine1) {
            let cpu = b.cpu_us - a.cpu_us;
            let calls = w.live_at_start.max(1) as f64;
            let _ = write!(
                out,
                " engine_cpu_us_per_call_s={} engine_core_pct={}",
                fmt_f(cpu / (calls * w.secs)),
                fmt_f(cpu / (w.secs * 1e6) * 100.0)
            );
            if let Some(i) = idle {
                let _ = write!(
                    out,
                    " rss_idle_kib={} rss_kib={} rss_per_call_kib={}",
                    i.rss_kib,
                    b.rss_kib,
                    fmt_f((b.rss_kib as f64 - i.rss_kib as f64) / calls)
                );
            }
        }
        gen_keys(&mut out, w, self.rx.win_received);
        let _ = write!(
            out,
            " window_s={} bye_ok={} bye_timeouts={} ok_retransmits={} sip_malformed={}",
            fmt_f(w.secs),
            self.bye_ok,
            self.bye_timeouts,
            self.ok_retransmits,
            self.sip_malformed
        );
        out
    }

    /// Sends every pacing slot due by `now` (see [`catch_up`]).
    fn pace(&mut self, now: Instant) {
        let now_tick = (now - self.t0).as_millis() as u64;
        let (first, skipped) = catch_up(self.next_tick, now_tick);
        self.next_tick = first;
        self.late_skipped += skipped;
        while self.next_tick <= now_tick {
            self.tx.send_tick(self.next_tick, &self.rtp);
            self.next_tick += 1;
        }
    }

    fn period_now(&self) -> u64 {
        self.next_tick / SLOTS + 1
    }

    /// Waits for input or the next slot.
    fn sleep(&mut self) {
        let next = self.t0 + Duration::from_millis(self.next_tick);
        let now = Instant::now();
        if next <= now {
            return;
        }
        let wait = next - now;
        let mut fds = self.poll_fds();
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of pollfd for the call's duration.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        self.ready = fds.iter().map(|f| f.revents != 0).collect();
    }

    fn poll_fds(&self) -> Vec<libc::pollfd> {
        let mut fds = vec![libc::pollfd {
            fd: self.sip.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(a) = &self.agent_sip {
            fds.push(libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for s in &self.rtp {
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        fds
    }

    fn poll_io(&mut self) {
        let ready = mem::take(&mut self.ready);
        let all = ready.is_empty();
        let is = |i: usize| all || ready.get(i).copied().unwrap_or(true);
        let sip_fds = 1 + usize::from(self.agent_sip.is_some());
        for i in 0..self.rtp.len() {
            if is(sip_fds + i) {
                self.drain_rtp(i);
            }
        }
        if is(0) {
            self.drain_sip(false);
        }
        if self.agent_sip.is_some() && is(1) {
            self.drain_sip(true);
        }
    }

    fn drain_rtp(&mut self, i: usize) {
        let before = self.rx.win_received;
        self.recv.drain(&self.rtp[i], &mut self.rx);
        let side = usize::from(i >= self.o.rtp_sockets);
        self.rx_side[side] += self.rx.win_received - before;
    }

    fn drain_sip(&mut self, agent_side: bool) {
        let mut buf = mem::take(&mut self.sip_buf);
        for _ in 0..1024 {
            let sock = match (&self.agent_sip, agent_side) {
                (Some(a), true) => a,
                _ => &self.sip,
            };
            let (len, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let now = Instant::now();
            let Some(msg) = parse_msg(&buf[..len]) else {
                self.sip_malformed += 1;
                continue;
            };
            if agent_side {
                self.agent_message(&msg, from, now);
            } else {
                self.caller_message(&msg, from);
            }
        }
        self.sip_buf = buf;
    }

    fn send_sip(&self, agent_side: bool, bytes: &[u8], to: SocketAddr) {
        let sock = match (&self.agent_sip, agent_side) {
            (Some(a), true) => a,
            _ => &self.sip,
        };
        let _ = sock.send_to(bytes, to);
    }

    // --- callers (UAC) ---------------------------------------------------

    fn call_id(&self, i: usize) -> String {
        format!("lg{}-{i}@{}", self.run, self.o.local_ip)
    }

    fn caller_index(&self, call_id: &str) -> Option<usize> {
        let rest = call_id
            .strip_prefix("lg")?
            .strip_prefix(self.run.as_str())?;
        let rest = rest.strip_prefix('-')?;
        let i: usize = rest.split('@').next()?.parse().ok()?;
        (i < self.callers.len()).then_some(i)
    }

    fn caller_sock(&self, i: usize) -> usize {
        i % self.o.rtp_sockets
    }

    fn invite_bytes(&self, i: usize) -> Vec<u8> {
        let (lip, lport, e) = (self.o.local_ip, self.sip_port, self.o.sip);
        let body = sdp(lip, self.rtp_ports[self.caller_sock(i)], i);
        format!(
            "INVITE sip:{to}@{e} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {lip}:{lport};branch=z9hG4bK{run}i{i};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:3125550{n:03}@{lip}>;tag=f{run}{i}\r\n\
             To: <sip:{to}@{e}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:lg{i}@{lip}:{lport}>\r\n\
             Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO\r\n\
             User-Agent: callbackd-loadgen\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            to = self.o.to,
            run = self.run,
            n = i % 1000,
            cid = self.call_id(i),
            len = body.len(),
        )
        .into_bytes()
    }

    fn invite(&mut self, i: usize, now: Instant) {
        let bytes = self.invite_bytes(i);
        self.send_sip(false, &bytes, SocketAddr::V4(self.o.sip));
        self.set_caller(i, CState::Inviting);
        let c = &mut self.callers[i];
        c.since = now;
        c.interval_ms = T1_MS;
        let at = now + Duration::from_millis(T1_MS.into());
        c.next = Some(at);
        self.timers.push(Reverse((at, Timer::Caller, i as u32)));
    }

    fn ack(&self, i: usize, uri: &str, to: &str, branch: &str) {
        let (lip, lport) = (self.o.local_ip, self.sip_port);
        let msg = format!(
            "ACK {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {lip}:{lport};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:3125550{n:03}@{lip}>;tag=f{run}{i}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 ACK\r\n\
             Content-Length: 0\r\n\r\n",
            run = self.run,
            n = i % 1000,
            cid = self.call_id(i),
        );
        self.send_sip(false, msg.as_bytes(), SocketAddr::V4(self.o.sip));
    }

    fn bye_bytes(&self, i: usize) -> Vec<u8> {
        let (lip, lport) = (self.o.local_ip, self.sip_port);
        let c = &self.callers[i];
        format!(
            "BYE {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {lip}:{lport};branch=z9hG4bK{run}b{i};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:3125550{n:03}@{lip}>;tag=f{run}{i}\r\n\
             To: <sip:{to}@{e}>;tag={tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 2 BYE\r\n\
             Content-Length: 0\r\n\r\n",
            target = c.target,
            tag = c.to_tag,
            to = self.o.to,
            e = self.o.sip,
            run = self.run,
            n = i % 1000,
            cid = self.call_id(i),
        )
        .into_bytes()
    }

    fn bye(&mut self, i: usize, now: Instant) {
        self.tx.stop(i);
        let bytes = self.bye_bytes(i);
        self.send_sip(false, &bytes, SocketAddr::V4(self.o.sip));
        self.set_caller(i, CState::Byeing);
        let c = &mut self.callers[i];
        c.since = now;
        c.interval_ms = T1_MS;
        let at = now + Duration::from_millis(T1_MS.into());
        c.next = Some(at);
        self.timers.push(Reverse((at, Timer::Caller, i as u32)));
    }

    fn caller_message(&mut self, msg: &Msg<'_>, from: SocketAddr) {
        let Some(i) = msg.get("call-id").and_then(|c| self.caller_index(c)) else {
            // Not one of ours: answer requests so nothing retransmits.
            if let Start::Request { method, .. } = msg.start
                && method != "ACK"
            {
                let r = response(msg, 481, "Call/Transaction Does Not Exist", "", "", "");
                self.send_sip(false, &r, from);
            }
            return;
        };
        match msg.start {
            Start::Response { code } => {
                let Some((_, method)) = msg.cseq() else {
                    self.sip_malformed += 1;
                    return;
                };
                match method {
                    "INVITE" => self.invite_response(i, code, msg),
                    "BYE" if code >= 200 && self.callers[i].state == CState::Byeing => {
                        self.set_caller(i, CState::Done);
                        self.callers[i].next = None;
                        self.bye_ok += 1;
                    }
                    _ => {}
                }
            }
            Start::Request { method, .. } => self.caller_request(i, method, msg, from),
        }
    }

    fn invite_response(&mut self, i: usize, code: u16, msg: &Msg<'_>) {
        let to = msg.get("to").unwrap_or("");
        let state = self.callers[i].state;
        if code < 200 {
            if state == CState::Inviting {
                // RFC 3261 §17.1.1.2: a provisional stops timer A.
                self.callers[i].provisional = true;
                self.callers[i].next = None;
            }
            return;
        }
        if code >= 300 {
            // ACK the final answer on the INVITE's branch (§17.1.1.3).
            let uri = format!("sip:{}@{}", self.o.to, self.o.sip);
            let branch = format!("z9hG4bK{}i{i}", self.run);
            self.ack(i, &uri, to, &branch);
            if state == CState::Inviting {
                self.set_caller(i, CState::Failed);
                self.callers[i].next = None;
                self.failed += 1;
            }
            return;
        }
        // 2xx: ACK it (again, for a retransmission: §13.2.2.4).
        let target = msg
            .get("contact")
            .and_then(contact_uri)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sip:{}@{}", self.o.to, self.o.sip));
        let branch = format!("z9hG4bK{}a{i}", self.run);
        self.ack(i, &target, to, &branch);
        if state != CState::Inviting {
            self.ok_retransmits += 1;
            return;
        }
        self.set_caller(i, CState::Up);
        let c = &mut self.callers[i];
        c.next = None;
        c.to_tag = tag_of(to).unwrap_or("").to_owned();
        c.target = target;
        self.up += 1;
        match sdp_audio(msg.body) {
            Some(dst) => {
                let p = self.period_now();
                self.tx.start(i, self.caller_sock(i), dst, p);
            }
            None => eprintln!("loadgen: call {i}: 200 without a usable SDP"),
        }
    }

    fn caller_request(&mut self, i: usize, method: &str, msg: &Msg<'_>, from: SocketAddr) {
        let lip = self.o.local_ip;
        let contact = format!("Contact: <sip:lg{i}@{lip}:{}>\r\n", self.sip_port);
        let r = match method {
            "ACK" => return,
            "BYE" => {
                if self.callers[i].state == CState::Up {
                    self.set_caller(i, CState::EndedByPeer);
                    self.ended_by_peer += 1;
                    self.tx.stop(i);
                }
                response(msg, 200, "OK", "", "", "")
            }
            "INVITE" | "UPDATE" => {
                if let Some(dst) = sdp_audio(msg.body)
                    && self.callers[i].state == CState::Up
                {
                    self.tx.streams[i].dst = sockaddr(dst);
                }
                let body = if method == "INVITE" || !msg.body.is_empty() {
                    sdp(lip, self.rtp_ports[self.caller_sock(i)], i)
                } else {
                    String::new()
                };
                response(msg, 200, "OK", "", &contact, &body)
            }
            "OPTIONS" | "INFO" | "NOTIFY" => response(msg, 200, "OK", "", "", ""),
            _ => response(msg, 405, "Method Not Allowed", "", "", ""),
        };
        self.send_sip(false, &r, from);
    }

    // --- agents (UAS) ----------------------------------------------------

    fn agent_sock(&self, j: usize) -> usize {
        self.o.rtp_sockets + j % self.o.rtp_sockets
    }

    fn agent_message(&mut self, msg: &Msg<'_>, from: SocketAddr, now: Instant) {
        let Start::Request { method, uri } = msg.start else {
            return; // we send no requests as an agent
        };
        let call_id = msg.get("call-id").unwrap_or("");
        let known = self.agent_by_call_id.get(call_id).copied();
        let lip = self.o.local_ip;
        let port = self.o.agent_port;
        match (method, known) {
            ("INVITE", None) => {
                let j = uri_user(uri)
                    .and_then(|u| u.strip_prefix(self.o.agent_prefix.as_str()))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|j| *j < self.agents.len());
                let Some(j) = j else {
                    let r = response(msg, 404, "Not Found", "x", "", "");
                    self.send_sip(true, &r, from);
                    return;
                };
                if self.agents[j].state != AState::Idle {
                    let r = response(msg, 486, "Busy Here", "x", "", "");
                    self.send_sip(true, &r, from);
                    return;
                }
                let tag = format!("a{}{j}", self.run);
                let ringing = response(msg, 180, "Ringing", &tag, "", "");
                self.send_sip(true, &ringing, from);
                let contact = format!("Contact: <sip:{}{j}@{lip}:{port}>\r\n", self.o.agent_prefix);
                let body = sdp(lip, self.rtp_ports[self.agent_sock(j)], j);
                let ok = response(msg, 200, "OK", &tag, &contact, &body);
                self.send_sip(true, &ok, from);
                self.agent_by_call_id.insert(call_id.to_owned(), j);
                self.agent_answered += 1;
                self.set_agent(j, AState::Answered);
                let a = &mut self.agents[j];
                a.call_id = call_id.to_owned();
                a.ok = ok;
                a.from = from;
                a.remote = sdp_audio(msg.body);
                a.since = now;
                a.interval_ms = T1_MS;
                let at = now + Duration::from_millis(T1_MS.into());
                a.next = Some(at);
                self.timers.push(Reverse((at, Timer::Agent, j as u32)));
            }
            ("INVITE", Some(j)) => {
                let a = &self.agents[j];
                if a.state == AState::Answered && tag_of(msg.get("to").unwrap_or("")).is_none() {
                    // A retransmitted INVITE: the same 200 again.
                    self.send_sip(true, &a.ok, from);
                    return;
                }
                // re-INVITE (session refresh, re-latch).
                if let Some(dst) = sdp_audio(msg.body) {
                    self.agents[j].remote = Some(dst);
                    let id = self.o.calls + j;
                    if self.tx.streams[id].active {
                        self.tx.streams[id].dst = sockaddr(dst);
                    }
                }
                let contact = format!("Contact: <sip:{}{j}@{lip}:{port}>\r\n", self.o.agent_prefix);
                let body = sdp(lip, self.rtp_ports[self.agent_sock(j)], j);
                let r = response(msg, 200, "OK", "", &contact, &body);
                self.send_sip(true, &r, from);
            }
            ("ACK", Some(j)) => {
                if self.agents[j].state != AState::Answered {
                    return;
                }
                if let Some(dst) = sdp_audio(msg.body) {
                    self.agents[j].remote = Some(dst);
                }
                self.set_agent(j, AState::Up);
                let a = &mut self.agents[j];
                a.next = None;
                a.ok = Vec::new();
                match a.remote {
                    Some(dst) => {
                        let p = self.period_now();
                        let sock = self.agent_sock(j);
                        self.tx.start(self.o.calls + j, sock, dst, p);
                    }
                    None => eprintln!("loadgen: agent {j}: no SDP from the engine"),
                }
            }
            ("BYE" | "CANCEL", Some(j)) => {
                let r = response(msg, 200, "OK", "", "", "");
                self.send_sip(true, &r, from);
                if method == "CANCEL" && self.agents[j].state != AState::Answered {
                    return;
                }
                self.end_agent(j);
                self.agent_ended += 1;
            }
            ("ACK", None) => {}
            (_, Some(_)) | ("OPTIONS", None) => {
                let r = response(msg, 200, "OK", "", "", "");
                self.send_sip(true, &r, from);
            }
            (_, None) => {
                let r = response(msg, 481, "Call/Transaction Does Not Exist", "", "", "");
                self.send_sip(true, &r, from);
            }
        }
    }

    fn end_agent(&mut self, j: usize) {
        self.set_agent(j, AState::Idle);
        let a = &mut self.agents[j];
        a.next = None;
        a.ok = Vec::new();
        let call_id = mem::take(&mut a.call_id);
        self.agent_by_call_id.remove(&call_id);
        self.tx.stop(self.o.calls + j);
    }

    // --- timers ------------------------------------------------------------

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, kind, id))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let id = id as usize;
            match kind {
                Timer::Caller => self.caller_timer(id, at, now),
                Timer::Agent => self.agent_timer(id, at, now),
            }
        }
    }

    fn caller_timer(&mut self, i: usize, at: Instant, now: Instant) {
        let c = &self.callers[i];
        if c.next != Some(at) {
            return; // stale
        }
        let state = c.state;
        if now.duration_since(c.since) >= GIVE_UP {
            self.callers[i].next = None;
            match state {
                CState::Inviting => {
                    self.set_caller(i, CState::Failed);
                    self.failed += 1;
                }
                CState::Byeing => {
                    self.set_caller(i, CState::Done);
                    self.bye_timeouts += 1;
                }
                _ => {}
            }
            return;
        }
        let bytes = match state {
            CState::Inviting => self.invite_bytes(i),
            CState::Byeing => self.bye_bytes(i),
            _ => return,
        };
        self.send_sip(false, &bytes, SocketAddr::V4(self.o.sip));
        self.retransmits += u64::from(state == CState::Inviting);
        let c = &mut self.callers[i];
        // Timer A doubles without a cap; timer E is capped at T2.
        c.interval_ms = if state == CState::Inviting {
            c.interval_ms * 2
        } else {
            (c.interval_ms * 2).min(T2_MS)
        };
        let next = now + Duration::from_millis(c.interval_ms.into());
        c.next = Some(next);
        self.timers.push(Reverse((next, Timer::Caller, i as u32)));
    }

    fn agent_timer(&mut self, j: usize, at: Instant, now: Instant) {
        let a = &self.agents[j];
        if a.next != Some(at) || a.state != AState::Answered {
            return;
        }
        if now.duration_since(a.since) >= GIVE_UP {
            eprintln!("loadgen: agent {j}: no ACK for the 200");
            self.end_agent(j);
            return;
        }
        self.send_sip(true, &a.ok, a.from);
        self.ok_retransmits += 1;
        let a = &mut self.agents[j];
        a.interval_ms = (a.interval_ms * 2).min(T2_MS);
        let next = now + Duration::from_millis(a.interval_ms.into());
        a.next = Some(next);
        self.timers.push(Reverse((next, Timer::Agent, j as u32)));
    }
}

// ---------------------------------------------------------------------------
// rtpengine: the same stream pairs relayed by rtpengine (ng protocol)

/// A bencode value (the ng protocol's encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ben {
    Int(i64),
    Str(Vec<u8>),
    List(Vec<Ben>),
    Dict(Vec<(Vec<u8>, Ben)>),
}

impl Ben {
    fn s(v: &str) -> Ben {
        Ben::Str(v.as_bytes().to_vec())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Ben::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Ben::Str(s) => {
                out.extend_from_slice(format!("{}:", s.len()).as_bytes());
                out.extend_from_slice(s);
            }
            Ben::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Ben::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Ben::Str(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// One value from the front of `buf`, and the rest.
    fn decode(buf: &[u8]) -> Option<(Ben, &[u8])> {
        Self::decode_depth(buf, 0)
    }

    fn decode_depth(buf: &[u8], depth: u32) -> Option<(Ben, &[u8])> {
        if depth > 32 {
            return None;
        }
        match *buf.first()? {
            b'i' => {
                let end = buf.iter().position(|&b| b == b'e')?;
                let n = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
                Some((Ben::Int(n), &buf[end + 1..]))
            }
            b'l' => {
                let mut rest = &buf[1..];
                let mut items = Vec::new();
                while *rest.first()? != b'e' {
                    let (v, r) = Self::decode_depth(rest, depth + 1)?;
                    items.push(v);
                    rest = r;
                }
                Some((Ben::List(items), &rest[1..]))
            }
            b'd' => {
                let mut rest = &buf[1..];
                let mut items = Vec::new();
                while *rest.first()? != b'e' {
                    let (Ben::Str(k), r) = Self::decode_depth(rest, depth + 1)? else {
                        return None;
                    };
                    let (v, r) = Self::decode_depth(r, depth + 1)?;
                    items.push((k, v));
                    rest = r;
                }
                Some((Ben::Dict(items), &rest[1..]))
            }
            b'0'..=b'9' => {
                let colon = buf.iter().position(|&b| b == b':')?;
                let len: usize = std::str::from_utf8(&buf[..colon]).ok()?.parse().ok()?;
                let data = buf.get(colon + 1..colon + 1 + len)?;
                Some((Ben::Str(data.to_vec()), &buf[colon + 1 + len..]))
            }
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&Ben> {
        let Ben::Dict(d) = self else { return None };
        d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v)
    }

    fn str(&self) -> Option<&str> {
        match self {
            Ben::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }
}

/// One ng request and its reply (`cookie d...e`), retried 3 times.
fn ng(
    sock: &UdpSocket,
    to: SocketAddrV4,
    cookie: &str,
    dict: Vec<(&str, Ben)>,
) -> Result<Ben, String> {
    let mut msg = format!("{cookie} ").into_bytes();
    Ben::Dict(
        dict.into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
    .encode(&mut msg);
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        sock.send_to(&msg, to)
            .map_err(|e| format!("ng send: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                break; // the read timeout
            };
            let reply = &buf[..len];
            let Some(rest) = reply
                .strip_prefix(cookie.as_bytes())
                .and_then(|r| r.strip_prefix(b" "))
            else {
                continue; // a late reply to an earlier cookie
            };
            let (v, _) = Ben::decode(rest).ok_or("ng: undecodable reply")?;
            return match v.get("result").and_then(Ben::str) {
                Some("ok") => Ok(v),
                other => Err(format!(
                    "ng {cookie}: result {other:?}: {:?}",
                    v.get("error-reason").and_then(Ben::str)
                )),
            };
        }
    }
    Err(format!("ng {cookie}: no reply from {to}"))
}

fn run_rtpengine(o: &Opts) -> Result<String, String> {
    let n = o.calls;
    let k = o.rtp_sockets;
    let rtp = (0..2 * k)
        .map(|_| rtp_socket(o.local_ip))
        .collect::<Result<Vec<_>, _>>()?;
    let ports: Vec<u16> = rtp.iter().map(local_port).collect();
    let ctl =
        UdpSocket::bind(SocketAddrV4::new(o.local_ip, 0)).map_err(|e| format!("ng socket: {e}"))?;
    ctl.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let salt = std::process::id().wrapping_mul(2_654_435_761);
    let run = format!("{:x}", salt & 0xffffff);
    let mut tx = Sender::new(2 * n, 2 * k, salt);
    let mut rx = RxStats::new();
    let mut recv = Receiver::new();
    let idle = o.engine_pid.and_then(proc_sample);
    eprintln!("loadgen: {n} stream pairs through rtpengine at {}", o.ng);
    let t0 = Instant::now();
    // Setup at --rate pairs/s: offer A's SDP, answer with B's, and read
    // rtpengine's ports: A sends to the answer's, B to the offer's.
    let mut dsts = Vec::with_capacity(n);
    for i in 0..n {
        let due = t0 + Duration::from_secs_f64(i as f64 / o.rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let call_id = format!("lg{run}-{i}");
        let (ftag, ttag) = (format!("a{i}"), format!("b{i}"));
        let a_sdp = sdp(o.local_ip, ports[i % k], i);
        let b_sdp = sdp(o.local_ip, ports[k + i % k], i);
        let offer = ng(
            &ctl,
            o.ng,
            &format!("{run}o{i}"),
            vec![
                ("command", Ben::s("offer")),
                ("call-id", Ben::s(&call_id)),
                ("from-tag", Ben::s(&ftag)),
                ("sdp", Ben::s(&a_sdp)),
            ],
        )?;
        let answer = ng(
            &ctl,
            o.ng,
            &format!("{run}a{i}"),
            vec![
                ("command", Ben::s("answer")),
                ("call-id", Ben::s(&call_id)),
                ("from-tag", Ben::s(&ftag)),
                ("to-tag", Ben::s(&ttag)),
                ("sdp", Ben::s(&b_sdp)),
            ],
        )?;
        let b_dst = offer
            .get("sdp")
            .and_then(Ben::str)
            .and_then(|s| sdp_audio(s.as_bytes()))
            .ok_or("offer reply without a usable SDP")?;
        let a_dst = answer
            .get("sdp")
            .and_then(Ben::str)
            .and_then(|s| sdp_audio(s.as_bytes()))
            .ok_or("answer reply without a usable SDP")?;
        dsts.push((a_dst, b_dst));
    }
    eprintln!(
        "loadgen: {n} pairs set up in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    for (i, (a_dst, b_dst)) in dsts.iter().enumerate() {
        tx.start(i, i % k, *a_dst, 1);
        tx.start(n + i, k + i % k, *b_dst, 1);
    }
    let mut next_tick = 0u64;
    let mut late_skipped = 0u64;
    let warm_end = t0 + Duration::from_secs_f64(o.warmup_s);
    let end = warm_end + Duration::from_secs_f64(o.measure_s);
    let mut window: Option<Window> = None;
    let mut report = t0 + Duration::from_secs(1);
    let mut fds: Vec<libc::pollfd> = rtp
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let now = Instant::now();
        let now_tick = (now - t0).as_millis() as u64;
        let (first, skipped) = catch_up(next_tick, now_tick);
        next_tick = first;
        late_skipped += skipped;
        while next_tick <= now_tick {
            tx.send_tick(next_tick, &rtp);
            next_tick += 1;
        }
        for (f, s) in fds.iter().zip(&rtp) {
            if f.revents != 0 {
                recv.drain(s, &mut rx);
            }
        }
        if window.is_none() && now >= warm_end {
            let ws = realtime_ns();
            rx.window = (ws, ws + (o.measure_s * 1e9) as i64);
            window = Some(Window {
                start: now,
                secs: 0.0,
                engine0: o.engine_pid.and_then(proc_sample),
                engine1: None,
                gen_cpu_us: self_cpu_us(),
                sent: tx.sent,
                live_at_start: n,
                bridged_at_start: n,
            });
            eprintln!("loadgen: measuring {} s", o.measure_s);
        }
        if now >= end {
            if let Some(w) = &mut window {
                w.engine1 = o.engine_pid.and_then(proc_sample);
                w.gen_cpu_us = self_cpu_us() - w.gen_cpu_us;
                w.sent = tx.sent - w.sent;
                w.secs = (now - w.start).as_secs_f64();
            }
            for s in &rtp {
                recv.drain(s, &mut rx);
            }
            break;
        }
        if now >= report {
            report = now + Duration::from_secs(1);
            eprintln!(
                "loadgen: rtp_sent={} rtp_recv={} late_skipped={late_skipped}",
                tx.sent, rx.received
            );
        }
        let wait =
            (t0 + Duration::from_millis(next_tick)).saturating_duration_since(Instant::now());
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        fds.iter_mut().for_each(|f| f.revents = 0);
        // SAFETY: fds is a valid pollfd array for the call's duration.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
    }
    let mut deleted = 0;
    for i in 0..n {
        let r = ng(
            &ctl,
            o.ng,
            &format!("{run}d{i}"),
            vec![
                ("command", Ben::s("delete")),
                ("call-id", Ben::s(&format!("lg{run}-{i}"))),
                ("from-tag", Ben::s(&format!("a{i}"))),
            ],
        );
        deleted += usize::from(r.is_ok());
    }
    let w = window.ok_or("no window")?;
    let relayed = rx.win_received;
    let mut out = format!(
        "result mode=rtpengine calls={n} relayed={relayed} relayed_pps={}",
        fmt_f(relayed as f64 / w.secs)
    );
    if let (Some(a), Some(b)) = (w.engine0, w.engine1) {
        let cpu = b.cpu_us - a.cpu_us;
        let _ = write!(
            out,
            " relay_cpu_us_per_pkt={} engine_core_pct={}",
            fmt_f(cpu / relayed.max(1) as f64),
            fmt_f(cpu / (w.secs * 1e6) * 100.0)
        );
        if let Some(i) = idle {
            let _ = write!(
                out,
                " rss_idle_kib={} rss_kib={} rss_per_call_kib={}",
                i.rss_kib,
                b.rss_kib,
                fmt_f((b.rss_kib as f64 - i.rss_kib as f64) / n as f64)
            );
        }
    }
    rx_keys(&mut out, &rx, w.secs);
    let _ = write!(
        out,
        " rtp_sent={} rtp_send_dropped={} rtp_received={} late_skipped={late_skipped}",
        tx.sent, tx.dropped, rx.received,
    );
    gen_keys(&mut out, &w, rx.win_received);
    let _ = write!(out, " window_s={} deleted={deleted}", fmt_f(w.secs));
    Ok(out)
}

// ---------------------------------------------------------------------------
// selftest: checks of the pure parts (bench targets are not run by
// `cargo test`; CI runs `cargo bench --bench loadgen -- selftest`).

mod selftest {
    use super::*;

    struct Checks {
        failed: u32,
        run: u32,
    }

    impl Checks {
        fn check(&mut self, name: &str, ok: bool) {
            self.run += 1;
            if !ok {
                self.failed += 1;
                eprintln!("selftest FAILED: {name}");
            }
        }
    }

    pub fn run() -> ExitCode {
        let mut c = Checks { failed: 0, run: 0 };
        histogram(&mut c);
        sequence(&mut c);
        pacing_and_loss(&mut c);
        sip(&mut c);
        sdp_checks(&mut c);
        bencode(&mut c);
        g711(&mut c);
        options(&mut c);
        if c.failed > 0 {
            eprintln!("selftest: {} of {} checks failed", c.failed, c.run);
            return ExitCode::FAILURE;
        }
        println!("selftest ok: {} checks", c.run);
        ExitCode::SUCCESS
    }

    fn histogram(c: &mut Checks) {
        let mut h = Histogram::new();
        c.check("empty quantile is 0", h.quantile(0.99) == 0);
        for v in 1..=100 {
            h.record(v);
        }
        c.check("p50 of 1..100", h.quantile(0.5) == 50);
        c.check("p99 of 1..100", h.quantile(0.99) == 99);
        c.check("p100 of 1..100", h.quantile(1.0) == 100);
        c.check("above 90", h.above(90) == 10);
        c.check("above 2000 exact", h.above(2000) == 0);
        for _ in 0..200 {
            h.record(2_345_678);
        }
        c.check("coarse bucket", h.quantile(0.9) == 2_345_000);
        h.record(500_000_000);
        c.check(
            "overflow keeps max",
            h.max == 500_000_000 && h.quantile(1.0) == 500_000_000,
        );
        c.check("above counts coarse", h.above(2000) == 201);
        c.check("catch up on time", catch_up(100, 100) == (100, 0));
        c.check("catch up 19 late", catch_up(100, 119) == (100, 0));
        c.check("skip 20 late", catch_up(100, 120) == (101, 1));
        c.check("skip far", catch_up(100, 1000) == (981, 881));
    }

    fn sequence(c: &mut Checks) {
        c.check("seq +1", extend_seq(10, 11) == 11);
        c.check("seq wraps forward", extend_seq(65535, 0) == 65536);
        c.check("seq wraps twice", extend_seq(131_071, 1) == 131_073);
        c.check("seq reorder back", extend_seq(65536, 65535) == 65535);
    }

    fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0u8; PKT];
        p[0] = 0x80;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    fn pacing_and_loss(c: &mut Checks) {
        let ms = 1_000_000i64;
        let mut rx = RxStats::new();
        rx.window = (1000 * ms, 2000 * ms);
        let src = (0x7f00_0001u64 << 16) | 20000;
        // Before the window: not counted.
        rx.packet(src, 980 * ms, &rtp(65534, 0, 7));
        // In the window: 20 ms, 23 ms (dev 3000 µs), a lost packet (seq
        // 2 missing: 40 ms gap, not a consecutive pair), 20 ms, then an idle
        // gap (seq +1 but timestamp +8000: skipped), across the seq wrap.
        rx.packet(src, 1000 * ms, &rtp(65535, 160, 7));
        rx.packet(src, 1023 * ms, &rtp(0, 320, 7));
        rx.packet(src, 1043 * ms + 500_000, &rtp(1, 480, 7));
        rx.packet(src, 1083 * ms, &rtp(3, 800, 7));
        rx.packet(src, 1103 * ms, &rtp(4, 960, 7));
        rx.packet(src, 1500 * ms, &rtp(5, 8960, 7));
        // After the window: not counted.
        rx.packet(src, 2000 * ms, &rtp(6, 9120, 7));
        // Another SSRC from the same source is another stream.
        rx.packet(src, 1500 * ms, &rtp(100, 0, 8));
        rx.packet(src, 1520 * ms, &rtp(101, 160, 8));
        // Garbage is counted as malformed, never a panic.
        rx.packet(src, 1500 * ms, &[0x80, 0]);
        rx.packet(src, 1500 * ms, &[0u8; 40]);
        c.check("malformed counted", rx.malformed == 2);
        // An RTCP receiver report is not a stream.
        let mut rr = rtp(0, 0, 9);
        rr[1] = 201;
        rx.packet(src, 1500 * ms, &rr);
        c.check("rtcp set apart", rx.rtcp == 1);
        c.check("no transit without stamps", rx.transit.count == 0);
        // Gaps: 980→1000 has its first packet outside the window (skipped);
        // 1000→1023 (3000 µs), 1023→1043.5 (500 µs), 1083→1103 (0 µs),
        // ssrc 8: 0 µs. Four in all.
        c.check("four gaps", rx.hist.count == 4);
        c.check("one gap outside 2 ms", rx.hist.above(2000) == 1);
        c.check("max dev 3000", rx.hist.max == 3000);
        c.check("p50 dev", rx.hist.quantile(0.5) == 0);
        let (expected, lost, streams) = rx.loss();
        // ssrc 7: ext 65535..65541 (7 expected, 6 received); ssrc 8: 2/2.
        c.check("expected", expected == 9);
        c.check("one lost", lost == 1);
        c.check("two streams", streams == 2);
        c.check("window count", rx.win_received == 8);
        let mut rx2 = RxStats::new();
        rx2.window = (1000 * ms, 2000 * ms);
        let mut stamped = rtp(200, 0, 10);
        stamped[PKT - 12..PKT - 8].copy_from_slice(STAMP_MAGIC);
        stamped[PKT - 8..].copy_from_slice(&(1500 * ms - 250_000).to_be_bytes());
        rx2.packet(src, 1500 * ms, &stamped);
        c.check(
            "transit of a stamped packet",
            rx2.transit.count == 1 && rx2.transit.max == 250,
        );
    }

    fn sip(c: &mut Checks) {
        let raw = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK2\r\n\
            f: <sip:a@x>;tag=1\r\nt: \"Q\" <sip:b@y;lr>;tag=abc\r\ni: call-1\r\n\
            CSeq: 1 INVITE\r\nm: <sip:1000@127.0.0.1:5060;transport=udp>\r\nl: 4\r\n\r\nbodyEXTRA";
        let Some(m) = parse_msg(raw) else {
            c.check("parses a response", false);
            return;
        };
        c.check("status", matches!(m.start, Start::Response { code: 200 }));
        c.check("compact call-id", m.get("Call-ID") == Some("call-1"));
        c.check("two vias", m.all("via").count() == 2);
        c.check("cseq", m.cseq() == Some((1, "INVITE")));
        c.check("to tag", tag_of(m.get("to").unwrap_or("")) == Some("abc"));
        c.check(
            "tag not in uri params",
            tag_of("<sip:b@y;tag=no>").is_none(),
        );
        c.check(
            "contact uri",
            m.get("contact").and_then(contact_uri) == Some("sip:1000@127.0.0.1:5060;transport=udp"),
        );
        c.check(
            "bare contact",
            contact_uri("sip:x@h:5;ob") == Some("sip:x@h:5"),
        );
        c.check("content-length body", m.body == b"body");
        let req = b"BYE sip:lg1@127.0.0.1:5000 SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nFrom: <sip:a@b>;tag=9\nTo: <sip:c@d>;tag=8\nCall-ID: z\nCSeq: 7 BYE\n\n";
        match parse_msg(req) {
            Some(m) => {
                c.check(
                    "request line",
                    matches!(
                        m.start,
                        Start::Request {
                            method: "BYE",
                            uri: "sip:lg1@127.0.0.1:5000"
                        }
                    ),
                );
                let r = response(&m, 200, "OK", "new", "", "");
                let text = String::from_utf8_lossy(&r);
                c.check(
                    "response copies headers",
                    text.contains("CSeq: 7 BYE\r\n")
                        && text.contains("Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"),
                );
                c.check(
                    "existing to tag kept",
                    text.contains("To: <sip:c@d>;tag=8\r\n") && !text.contains("new"),
                );
                c.check("parses own response", parse_msg(&r).is_some());
            }
            None => c.check("parses LF-only request", false),
        }
        c.check(
            "user part",
            uri_user("sip:agent12@127.0.0.1:5090") == Some("agent12"),
        );
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"SIP/2.0 2\r\n\r\n",
            b"INVITE\r\n\r\n",
            b"INVITE sip:x HTTP/1.1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nx",
        ] {
            let parsed = parse_msg(bad);
            c.check(
                "rejects or tolerates bad bytes",
                parsed.is_none() || parsed.is_some_and(|m| m.cseq().is_none()),
            );
        }
    }

    fn sdp_checks(c: &mut Checks) {
        let s = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\n";
        c.check(
            "media c= wins",
            sdp_audio(s)
                == Some(
                    "127.0.0.1:20000"
                        .parse()
                        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 1)),
                ),
        );
        let s = b"v=0\nc=IN IP4 127.0.0.2\nm=video 4000 RTP/AVP 96\nm=audio 30002 RTP/AVP 0 101\n";
        c.check(
            "session c=, audio m=",
            sdp_audio(s).map(|a| (a.ip().octets(), a.port())) == Some(([127, 0, 0, 2], 30002)),
        );
        c.check(
            "port 0 refused",
            sdp_audio(b"c=IN IP4 1.2.3.4\nm=audio 0 RTP/AVP 0\n").is_none(),
        );
        c.check("no c=", sdp_audio(b"m=audio 5 RTP/AVP 0\n").is_none());
        c.check("garbage", sdp_audio(b"\xff\xffm=audio x").is_none());
        let ours = sdp(Ipv4Addr::LOCALHOST, 4242, 1);
        c.check(
            "our sdp round-trips",
            sdp_audio(ours.as_bytes()).map(|a| a.port()) == Some(4242),
        );
    }

    fn bencode(c: &mut Checks) {
        let v = Ben::Dict(vec![
            (b"command".to_vec(), Ben::s("offer")),
            (b"n".to_vec(), Ben::Int(-42)),
            (b"flags".to_vec(), Ben::List(vec![Ben::s("a"), Ben::s("")])),
        ]);
        let mut enc = Vec::new();
        v.encode(&mut enc);
        c.check("encode", enc == b"d7:command5:offer1:ni-42e5:flagsl1:a0:ee");
        c.check(
            "decode round-trip",
            Ben::decode(&enc).map(|(d, rest)| (d, rest.len())) == Some((v.clone(), 0)),
        );
        c.check("get", v.get("command").and_then(Ben::str) == Some("offer"));
        for bad in [
            &b"d3:abc"[..],
            b"l",
            b"i12",
            b"5:abc",
            b"x",
            b"d1:ai1ei2e1:be",
            b"99999999999999999999999:a",
        ] {
            c.check("bad bencode refused", Ben::decode(bad).is_none());
        }
        let deep = vec![b'l'; 100];
        c.check("deep nesting refused", Ben::decode(&deep).is_none());
    }

    fn g711(c: &mut Checks) {
        c.check("ulaw 0", linear_to_ulaw(0) == 0xff);
        c.check("ulaw max", linear_to_ulaw(i16::MAX) == 0x80);
        c.check("ulaw min", linear_to_ulaw(i16::MIN) == 0x00);
        c.check("ulaw -1", linear_to_ulaw(-1) == 0x7f);
        let s = Sender::new(1, 1, 0);
        c.check(
            "tone is not silence",
            s.payload.iter().any(|&b| b != 0xff && b != 0x7f),
        );
    }

    fn options(c: &mut Checks) {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        c.check(
            "defaults",
            Opts::parse("callers", &[]).is_ok_and(|o| o.rtp_sockets == 1),
        );
        c.check(
            "k from calls",
            Opts::parse("callers", &args(&["--calls", "2500"])).is_ok_and(|o| o.rtp_sockets == 3),
        );
        c.check(
            "unknown option",
            Opts::parse("callers", &args(&["--nope", "1"])).is_err(),
        );
        c.check(
            "missing value",
            Opts::parse("callers", &args(&["--calls"])).is_err(),
        );
        c.check(
            "bad number",
            Opts::parse("callers", &args(&["--rate", "-1"])).is_err(),
        );
        c.check(
            "bad address",
            Opts::parse("callers", &args(&["--sip", "localhost"])).is_err(),
        );
        c.check(
            "zero calls",
            Opts::parse("callers", &args(&["--calls", "0"])).is_err(),
        );
    }
}
