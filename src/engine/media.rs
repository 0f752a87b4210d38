//! The media thread: every RTP stream of the process on one OS thread, paced
//! by one clock.
//!
//! There is no task and no timer per stream. The thread owns all RTP/RTCP
//! sockets through one `mio::Poll`; a single min-heap of send deadlines is the
//! pacing clock: the thread sleeps until the earliest deadline (or until a
//! socket is readable, or a command arrives), sends every frame that is due,
//! and pushes each stream's next deadline at `due + ptime` (never `now +
//! ptime`, so lateness does not accumulate). The frames of one such pass go
//! to the kernel together at its end, in one io_uring submission where the
//! kernel allows it (`engine/send_batch.rs`), else one
//! `sendto` each. Frames come pre-encoded from the shared
//! [`PromptLibrary`]; the send and receive buffers are reused.
//!
//! Bridging ([`Command::Bridge`]): two streams relay to each other in the
//! receive path — a packet read on one leg is rewritten by its
//! [`Relay`](crate::media::bridge::Relay) and sent on the other leg's socket
//! at once (no pacing, no queue), from the thread's two reused buffers. The
//! pacing clock keeps ticking for bridged streams: it advances each leg's
//! media clock while the leg is silent and plays prompts (the recording
//! notice); while a leg plays, relaying to it pauses. RTCP is terminated per
//! leg: reports read on a leg feed that leg's statistics and go nowhere else,
//! and each leg gets our own SR/RR every 2.5–7.5 s. Recording decodes what
//! each leg receives into fixed-size chunks sent over a bounded channel to a
//! recorder thread that owns the file; a full channel drops and counts.
//!
//! Security: we send to the SDP address and latch by [`Latch`]'s rule: the
//! exact SDP address at once, another source of the expected IP (the SDP
//! address's or the signalling peer's; never any other: no RTP-Bleed) only
//! after several packets of one SSRC. Only the latched stream is heard —
//! audio, digits, life for the RTP timeout; the packets of another call that
//! reach the port (a leftover stream of a killed process's call on a port
//! handed out again) are counted as `foreign` and dropped. RTCP is ours when
//! it comes from the address we expect (`a=rtcp`, RFC 3605, or RTP + 1) or
//! carries the latched SSRC; it keeps the stream alive too. A stream that
//! ends says so with an RTCP BYE (RFC 3550 §6.6). The RTP allow-list is
//! checked first. Send errors (ICMP port unreachable included) are counted
//! and never end a stream.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, trace, warn};

use crate::acl::Acl;
use crate::b2bua::media::MediaCommand;
pub use crate::b2bua::media::{ExtraParams, MediaEvent, StreamKey, StreamParams};
use crate::b2bua::telemetry::Histogram;
use crate::engine::send_batch::SendBatch;
use crate::media::bridge::{Dropped, LegCodecs, Relay};
use crate::media::dtmf::DtmfReceiver;
use crate::media::g711::Law;
use crate::media::inband::InbandDetector;
use crate::media::latch::{Latch, Verdict};
use crate::media::player::{Item, Player, PlayerEvent};
use crate::media::prompt::{PromptId, PromptLibrary};
use crate::media::recorder::{self, Channel, Chunk, Placement, RecorderError, StereoWriter};
use crate::media::rtcp::{self, ReceiveStats, RtcpPacket, SenderInfo};
use crate::media::rtp::{PayloadType, RtpPacket, SendStream, Ssrc, write_rtp};

/// A command as the media thread takes it: a new stream's ports already
/// bound (see [`bind`]).
pub type Command = MediaCommand<BoundPorts>;

/// A stream's sockets: RTP on an even port, RTCP on the next.
#[derive(Debug)]
pub struct BoundPorts {
    /// The RTP socket.
    pub rtp: std::net::UdpSocket,
    /// The RTCP socket (RTP port + 1).
    pub rtcp: std::net::UdpSocket,
}

/// Binds RTP on `port` and RTCP on `port + 1` at `ip`.
pub fn bind(ip: IpAddr, port: u16) -> io::Result<BoundPorts> {
    let rtp = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
    let rtcp = std::net::UdpSocket::bind(SocketAddr::new(
        ip,
        port.checked_add(1).ok_or(io::ErrorKind::InvalidInput)?,
    ))?;
    Ok(BoundPorts { rtp, rtcp })
}

/// Settings of the media thread.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// RTP source allow-list.
    pub acl: Acl,
    /// Hang-up time without RTP.
    pub rtp_timeout: Duration,
}

/// The engine's handle on the media thread.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    totals: Arc<Mutex<MediaTotals>>,
}

/// Upper bounds of the jitter histogram, in seconds.
pub const JITTER_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];

/// What the media thread counted since start, for metrics. The packet
/// path bumps plain counters of its own; they are copied here once per
/// check period ([`TIMEOUT_CHECK`], 1 s), so a scrape is up to that late.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaTotals {
    /// RTP packets sent (prompts, DTMF, comfort noise).
    pub rtp_sent: u64,
    /// RTP packets relayed across a bridge.
    pub rtp_relayed: u64,
    /// Datagrams read from the RTP sockets.
    pub rtp_received: u64,
    /// Of those and of RTCP, refused: outside the RTP allow-list, not from
    /// the latched peer, or another source of the expected address.
    pub rtp_refused: u64,
    /// RTP and RTCP sends that failed.
    pub send_errors: u64,
    /// RTCP compound packets sent and accepted.
    pub rtcp_sent: u64,
    /// RTCP compound packets received and accepted.
    pub rtcp_received: u64,
    /// Packets lost in the streams we receive (RFC 3550 A.3: expected minus
    /// received), summed over streams as their counts grew at each of our
    /// reports; a count that goes down (late duplicates, a new source) is
    /// not taken back.
    pub rtp_lost: u64,
    /// The interarrival jitter (RFC 3550 A.8) of each stream we receive,
    /// one observation per RTCP report we send, in seconds.
    pub jitter: Histogram,
}

impl Default for MediaTotals {
    fn default() -> MediaTotals {
        MediaTotals {
            rtp_sent: 0,
            rtp_relayed: 0,
            rtp_received: 0,
            rtp_refused: 0,
            send_errors: 0,
            rtcp_sent: 0,
            rtcp_received: 0,
            rtp_lost: 0,
            jitter: Histogram::new(JITTER_BOUNDS),
        }
    }
}

impl MediaHandle {
    /// Sends a command; returns false if the media thread is gone.
    pub fn send(&self, command: Command) -> bool {
        if self.tx.send(command).is_err() {
            return false;
        }
        self.waker.wake().is_ok()
    }

    /// The media thread's counters as last published (at most
    /// [`TIMEOUT_CHECK`] old).
    pub fn totals(&self) -> MediaTotals {
        // A poisoned lock: the media thread panicked mid-copy; the copy
        // is plain numbers, still worth showing.
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Starts the media thread.
pub fn spawn(
    cfg: MediaConfig,
    prompts: Arc<PromptLibrary>,
    events: UnboundedSender<MediaEvent>,
) -> io::Result<(MediaHandle, thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    let published = Arc::new(Mutex::new(MediaTotals::default()));
    let handle = MediaHandle {
        tx,
        waker: waker.clone(),
        totals: published.clone(),
    };
    let thread = thread::Builder::new()
        .name("callbackd-media".into())
        .spawn(move || {
            let mut media = MediaThread {
                poll,
                commands: rx,
                events,
                prompts,
                cfg,
                streams: Vec::new(),
                free: Vec::new(),
                index: HashMap::new(),
                pacing: BinaryHeap::new(),
                batch: SendBatch::new(true),
                recv_buf: vec![0u8; 2048],
                send_buf: Vec::with_capacity(2048),
                next_timeout_check: Instant::now(),
                stats: Counters::default(),
                published,
                record_starts: Vec::new(),
            };
            media.run();
        })?;
    Ok((handle, thread))
}

const WAKER: Token = Token(usize::MAX);
/// Frames due within this much of now are sent in this wake-up: epoll's
/// millisecond timeout would otherwise make every packet up to 1 ms late.
const EARLY: Duration = Duration::from_micros(500);
/// How often RTP timeouts are checked.
const TIMEOUT_CHECK: Duration = Duration::from_secs(1);
/// A stream more than this many packets behind is resynchronised instead of
/// bursting to catch up.
const MAX_CATCH_UP: u32 = 3;
/// Recording chunks queued for the recorder thread (256 × 60 ms: 15 s of one
/// channel, 7.5 s of both) before the media thread drops them.
const RECORD_QUEUE: usize = 256;
/// The prompt played to the customer before a recording starts.
const RECORDING_NOTICE: &str = "recording_notice";
/// What the other party hears while a bridged leg holds the call.
const HOLD_MUSIC: &str = "hold_music";
/// The play token of music on hold, which the engine's owners of play
/// lists never use (theirs count up from 0 and would need 2³² plays on one
/// leg to reach it).
const MOH_TOKEN: u32 = u32::MAX;

struct MediaThread {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    events: UnboundedSender<MediaEvent>,
    prompts: Arc<PromptLibrary>,
    cfg: MediaConfig,
    streams: Vec<Option<Stream>>,
    free: Vec<usize>,
    index: HashMap<StreamKey, usize>,
    /// (deadline, slot, generation): the one pacing clock.
    pacing: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// The frames of one pacing pass, sent together at its end:
    /// (slot, generation, payload octets) of each.
    batch: SendBatch<(usize, u32, u32)>,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    next_timeout_check: Instant,
    stats: Counters,
    /// Where `stats` is copied once per check period.
    published: Arc<Mutex<MediaTotals>>,
    /// Recordings whose notice finished in this pacing round.
    record_starts: Vec<PendingRecord>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Packets lost, summed (see [`MediaTotals::rtp_lost`]).
    lost: u64,
    /// Jitter at each report (see [`MediaTotals::jitter`]); `None` until
    /// the first.
    jitter: Option<Histogram>,
    sent: u64,
    send_errors: u64,
    received: u64,
    refused: u64,
    /// From an expected IP, but not the latched stream (another call's).
    foreign: u64,
    relayed: u64,
    rtcp_received: u64,
    rtcp_sent: u64,
}

struct Stream {
    key: StreamKey,
    generation: u32,
    call_id: Arc<str>,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    params: StreamParams,
    /// Where we send: the latched source, else the SDP address.
    target: Option<SocketAddr>,
    latch: Latch,
    send: SendStream,
    player: Player,
    /// The play list as last given, minus prompts already finished: played
    /// again by the new player when a re-INVITE changes law or packet time.
    items: Vec<Item>,
    /// A tick passed without sending (on hold): the next packet starts a
    /// talk spurt (RFC 3551 §4.1 marker), as after an idle player.
    gap: bool,
    dtmf: DtmfReceiver,
    /// An RFC 4733 event arrived: in-band detection stops for good.
    rfc4733_seen: bool,
    /// In-band detection, until the first RFC 4733 event (carriers that
    /// negotiate telephone-event and send tones anyway).
    inband: Option<Box<InbandDetector>>,
    inband_ssrc: Option<Ssrc>,
    last_rx: Instant,
    next_due: Instant,
    play_token: u32,
    extra: ExtraParams,
    /// The bridge this stream is in: RTP received here goes to the peer.
    bridge: Option<BridgeLeg>,
    /// The recording of what this stream receives.
    tap: Option<Tap>,
    /// A recording that starts when this prompt (the notice) has played here.
    notice: Option<(PromptId, PendingRecord)>,
    rtcp_target: Option<SocketAddr>,
    rtcp_latched: bool,
    /// What we received on this leg, for our report blocks.
    rx_stats: ReceiveStats,
    /// The cumulative loss of our last report on this leg (for the totals).
    reported_lost: i64,
    /// Sent on this leg, for our SRs (RFC 3550 §6.4.1: they wrap).
    sent_packets: u32,
    sent_octets: u32,
    sent_since_report: bool,
    next_report: Instant,
    /// Our RTCP CNAME on this leg (RFC 7022: random per session).
    cname: [u8; 16],
}

/// One side of a bridge.
struct BridgeLeg {
    peer: usize,
    peer_generation: u32,
    peer_key: StreamKey,
    /// Rewrites what this stream receives for the peer.
    relay: Relay,
}

/// The recording tap on one stream.
struct Tap {
    tx: mpsc::SyncSender<Chunk>,
    channel: Channel,
    law: Law,
    placement: Placement,
    /// Chunks dropped on a full queue, shared by both taps and the writer.
    dropped: Arc<AtomicU64>,
}

/// A recording to start once the notice has played.
#[derive(Debug, Clone)]
struct PendingRecord {
    a: StreamKey,
    b: StreamKey,
    path: PathBuf,
}

impl Stream {
    /// What the relay needs from this stream's negotiation.
    fn codecs(&self) -> LegCodecs {
        LegCodecs {
            law: self.params.law,
            audio: PayloadType::new(self.params.payload_type)
                .unwrap_or(PayloadType::from(self.params.law)),
            telephone_event: self
                .params
                .telephone_event
                .and_then(|pt| PayloadType::new(pt).ok()),
            comfort_noise: self
                .extra
                .comfort_noise
                .and_then(|pt| PayloadType::new(pt).ok()),
        }
    }

    /// Whether this leg is on hold (RFC 3264 §8.4: sendonly, recvonly,
    /// inactive, or a hold address): a bridge with it pauses RTP timeouts.
    fn held(&self) -> bool {
        !self.params.send || !self.params.receive || self.params.remote.is_none()
    }

    /// Whether the far end of this leg holds the call: we may not send to
    /// it (it offered `sendonly` or `inactive`, or a hold address).
    fn holding(&self) -> bool {
        !self.params.send || self.params.remote.is_none()
    }

    /// Where our RTCP goes: the latched source, else where we expect it.
    fn rtcp_destination(&self) -> Option<SocketAddr> {
        if self.rtcp_latched {
            return self.rtcp_target;
        }
        self.rtcp_expected()
    }

    /// Where the peer's RTCP is: `a=rtcp` (RFC 3605), or RTP port + 1.
    fn rtcp_expected(&self) -> Option<SocketAddr> {
        let remote = self.params.remote?;
        Some(
            self.params
                .rtcp
                .unwrap_or_else(|| SocketAddr::new(remote.ip(), remote.port().wrapping_add(1))),
        )
    }
}

impl MediaThread {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        debug!(io_uring = self.batch.uses_ring(), "media thread starts");
        loop {
            let now = Instant::now();
            let timeout = self
                .pacing
                .peek()
                .map(|Reverse((at, _, _))| at.saturating_duration_since(now + EARLY))
                .unwrap_or(TIMEOUT_CHECK)
                .min(self.next_timeout_check.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                warn!(error = %e, "media poll failed");
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        if !self.drain_commands(now) {
                            return;
                        }
                    }
                    Token(t) => self.readable(now, t / 2, t % 2 == 1),
                }
            }
            self.pace(Instant::now());
            if now >= self.next_timeout_check {
                // The engine may be gone without a wake-up (the waker fires
                // on commands, not when the last handle drops): notice it
                // here, so the thread ends within a check period.
                if !self.drain_commands(now) {
                    return;
                }
                self.check_timeouts(now);
                self.publish();
                self.next_timeout_check = now + TIMEOUT_CHECK;
            }
        }
    }

    /// Copies the counters where [`MediaHandle::totals`] reads them.
    fn publish(&self) {
        let c = &self.stats;
        let mut out = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *out = MediaTotals {
            rtp_sent: c.sent,
            rtp_relayed: c.relayed,
            rtp_received: c.received,
            rtp_refused: c.refused + c.foreign,
            send_errors: c.send_errors,
            rtcp_sent: c.rtcp_sent,
            rtcp_received: c.rtcp_received,
            rtp_lost: c.lost,
            jitter: c
                .jitter
                .clone()
                .unwrap_or_else(|| Histogram::new(JITTER_BOUNDS)),
        };
    }

    /// Returns false when the engine is gone (the thread then ends).
    fn drain_commands(&mut self, now: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(command) => self.command(now, command),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => {
                    debug!(
                        sent = self.stats.sent,
                        received = self.stats.received,
                        relayed = self.stats.relayed,
                        refused = self.stats.refused,
                        foreign = self.stats.foreign,
                        send_errors = self.stats.send_errors,
                        rtcp_sent = self.stats.rtcp_sent,
                        rtcp_received = self.stats.rtcp_received,
                        "media thread stops"
                    );
                    return false;
                }
            }
        }
    }

    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Add {
                key,
                call_id,
                ports: BoundPorts { rtp, rtcp },
                params,
            } => {
                if let Err(e) = self.add(now, key, call_id, rtp, rtcp, params) {
                    warn!(error = %e, "cannot register RTP sockets");
                    let _ = self.events.send(MediaEvent::RtpTimeout { key });
                }
            }
            Command::Update { key, params } => {
                let Some(s) = self.stream_mut(key) else {
                    return;
                };
                let was_holding = s.holding();
                s.target = params.remote;
                s.latch.reset(now, params.remote, params.signalling_peer);
                if s.params.law != params.law || s.params.ptime != params.ptime {
                    // A player encodes one law at one packet time: start a
                    // new one on what is still to play (a looping item
                    // restarts from its beginning), not on silence.
                    s.player = Player::new(params.law, params.ptime);
                    s.player.play(s.items.iter().copied());
                }
                s.send = SendStream::new(
                    s.send.ssrc(),
                    PayloadType::new(params.payload_type).unwrap_or(s.send.payload_type()),
                    8000,
                    s.send.next_sequence(),
                    s.send.next_timestamp(),
                );
                if let Some(tap) = &mut s.tap {
                    tap.law = params.law;
                }
                s.params = params;
                s.last_rx = now;
                s.rtcp_latched = false;
                let holding = s.holding();
                let peer = s.bridge.as_ref().map(|b| b.peer_key);
                self.refresh_bridge(key);
                if let Some(peer) = peer
                    && holding != was_holding
                {
                    self.music_on_hold(peer, holding);
                }
            }
            Command::Play { key, items, token } => {
                let Some(s) = self.stream_mut(key) else {
                    return;
                };
                s.play_token = token;
                s.items.clone_from(&items);
                if items.is_empty() {
                    s.player.stop();
                } else {
                    s.player.play(items);
                }
            }
            Command::Remove { key } => {
                if let Some(peer) = self.stream_mut(key).and_then(|s| s.bridge.as_ref()) {
                    let peer = peer.peer_key;
                    self.unbridge(key, peer);
                }
                if let Some(slot) = self.index.remove(&key)
                    && let Some(mut s) = self.streams[slot].take()
                {
                    send_report(now, &mut s, &mut self.send_buf, &mut self.stats, true);
                    let _ = self.poll.registry().deregister(&mut s.rtp);
                    let _ = self.poll.registry().deregister(&mut s.rtcp);
                    self.free.push(slot);
                }
                let _ = self.events.send(MediaEvent::Removed { key });
            }
            Command::Extra { key, extra } => {
                let Some(s) = self.stream_mut(key) else {
                    return;
                };
                s.extra = extra;
                self.refresh_bridge(key);
            }
            Command::Reload { acl, prompts } => {
                self.cfg.acl = acl;
                self.prompts = prompts;
                info!("media: RTP allow-list and prompts reloaded");
            }
            Command::Bridge { a, b } => self.bridge(a, b),
            Command::Unbridge { a, b } => self.unbridge(a, b),
            Command::Record { a, b, path, notice } => {
                let pending = PendingRecord { a, b, path };
                let wanted = notice.is_some();
                let name = notice.as_deref().unwrap_or(RECORDING_NOTICE);
                let notice = self.prompts.id(name);
                match (wanted, notice, self.stream_mut(b)) {
                    (true, Some(notice), Some(s)) => {
                        // The notice replaces whatever the customer hears;
                        // relaying to them pauses until it has played.
                        s.items = vec![Item::Prompt(notice)];
                        s.player.play([Item::Prompt(notice)]);
                        s.notice = Some((notice, pending));
                    }
                    (true, None, _) => {
                        warn!(
                            prompt = name,
                            "no such notice prompt; recording without the notice"
                        );
                        self.start_recording(now, pending);
                    }
                    (_, _, _) => self.start_recording(now, pending),
                }
            }
        }
    }

    /// The other leg of a bridge was put on hold (RFC 3264 §8.4: it
    /// sends `sendonly`/`inactive` or a hold address) or resumed: `peer`
    /// hears the `hold_music` loop meanwhile instead of silence (relaying
    /// to it pauses while it plays), and the relay again afterwards. A
    /// recording notice in progress is left to finish.
    fn music_on_hold(&mut self, peer: StreamKey, on: bool) {
        let hold = self.prompts.id(HOLD_MUSIC);
        let Some(p) = self.stream_mut(peer) else {
            return;
        };
        if p.notice.is_some() {
            return;
        }
        match (on, hold) {
            (true, Some(hold)) => {
                // Not the owner's play list: its Idle must not read as the
                // end of something the call layer or the dialer played.
                p.play_token = MOH_TOKEN;
                p.items = vec![Item::Loop(hold)];
                p.player.play([Item::Loop(hold)]);
            }
            (true, None) => {}
            (false, _) => {
                if p.items
                    .iter()
                    .any(|i| matches!(i, Item::Loop(id) if Some(*id) == hold))
                {
                    p.items.clear();
                    p.player.stop();
                }
            }
        }
    }

    /// Connects `a` and `b` (see [`Command::Bridge`]).
    fn bridge(&mut self, a: StreamKey, b: StreamKey) {
        let (Some(&sa), Some(&sb)) = (self.index.get(&a), self.index.get(&b)) else {
            warn!(a, b, "bridge of an unknown stream ignored");
            return;
        };
        if sa == sb {
            warn!(a, "a stream cannot be bridged to itself");
            return;
        }
        for key in [a, b] {
            if let Some(peer) = self.stream_mut(key).and_then(|s| s.bridge.as_ref()) {
                let peer = peer.peer_key;
                self.unbridge(key, peer);
            }
        }
        let Ok([Some(x), Some(y)]) = self.streams.get_disjoint_mut([sa, sb]) else {
            return;
        };
        for s in [&mut *x, &mut *y] {
            s.player.stop();
            s.items.clear();
            s.notice = None;
            // Relayed packets are not checked for in-band digits: they are
            // heard by the other party as they are.
            s.inband = None;
            s.inband_ssrc = None;
        }
        x.bridge = Some(BridgeLeg {
            peer: sb,
            peer_generation: y.generation,
            peer_key: b,
            relay: Relay::new(x.codecs(), y.codecs()),
        });
        y.bridge = Some(BridgeLeg {
            peer: sa,
            peer_generation: x.generation,
            peer_key: a,
            relay: Relay::new(y.codecs(), x.codecs()),
        });
        debug!(a_call = %x.call_id, b_call = %y.call_id, "bridged");
    }

    /// Disconnects `a` and `b`; their recording ends.
    fn unbridge(&mut self, a: StreamKey, b: StreamKey) {
        for (key, peer) in [(a, b), (b, a)] {
            let Some(s) = self.stream_mut(key) else {
                continue;
            };
            if s.bridge.as_ref().is_some_and(|l| l.peer_key == peer)
                && let Some(leg) = s.bridge.take()
            {
                let st = leg.relay.stats();
                debug!(
                    call_id = %s.call_id,
                    audio = st.audio,
                    transcoded = st.transcoded,
                    events = st.events,
                    comfort_noise = st.comfort_noise,
                    dropped = st.dropped,
                    resyncs = st.resyncs,
                    "unbridged"
                );
            }
            // Dropping the taps closes the recorder's queue: it finishes
            // the file once both are gone.
            s.tap = None;
            s.notice = None;
        }
    }

    /// Re-reads both legs' codecs after a re-INVITE on `key`.
    fn refresh_bridge(&mut self, key: StreamKey) {
        let Some(&slot) = self.index.get(&key) else {
            return;
        };
        let Some(peer) = self.streams[slot].as_ref().and_then(|s| s.bridge.as_ref()) else {
            return;
        };
        let peer = peer.peer;
        let Ok([Some(x), Some(y)]) = self.streams.get_disjoint_mut([slot, peer]) else {
            return;
        };
        let (cx, cy) = (x.codecs(), y.codecs());
        if let Some(leg) = &mut x.bridge {
            leg.relay.set_legs(cx, cy);
        }
        if let Some(leg) = &mut y.bridge {
            leg.relay.set_legs(cy, cx);
        }
    }

    /// Starts recording `a` (left) and `b` (right) on a thread of its own.
    fn start_recording(&mut self, now: Instant, pending: PendingRecord) {
        let PendingRecord { a, b, path } = pending;
        if !self.index.contains_key(&a) || !self.index.contains_key(&b) {
            warn!(a, b, path = %path.display(), "recording of an unknown stream ignored");
            return;
        }
        let (tx, rx) = mpsc::sync_channel::<Chunk>(RECORD_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer_dropped = dropped.clone();
        let spawned = thread::Builder::new()
            .name("callbackd-rec".into())
            .spawn(move || match write_recording(&path, rx) {
                Ok((frames, late)) => info!(
                    path = %path.display(),
                    seconds = frames / u64::from(crate::media::prompt::SAMPLE_RATE),
                    dropped_chunks = writer_dropped.load(Ordering::Relaxed),
                    late_samples = late,
                    "recording written"
                ),
                Err(e) => warn!(path = %path.display(), error = %e, "recording failed"),
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the recorder thread");
            return;
        }
        for (key, channel) in [(a, Channel::Left), (b, Channel::Right)] {
            if let Some(s) = self.stream_mut(key) {
                s.tap = Some(Tap {
                    tx: tx.clone(),
                    channel,
                    law: s.params.law,
                    placement: Placement::new(now),
                    dropped: dropped.clone(),
                });
            }
        }
    }

    fn add(
        &mut self,
        now: Instant,
        key: StreamKey,
        call_id: Arc<str>,
        rtp: std::net::UdpSocket,
        rtcp: std::net::UdpSocket,
        params: StreamParams,
    ) -> io::Result<()> {
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        let mut rtp = UdpSocket::from_std(rtp);
        let mut rtcp = UdpSocket::from_std(rtcp);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.streams.push(None);
                self.streams.len() - 1
            }
        };
        self.poll
            .registry()
            .register(&mut rtp, Token(slot * 2), Interest::READABLE)?;
        self.poll
            .registry()
            .register(&mut rtcp, Token(slot * 2 + 1), Interest::READABLE)?;
        let generation = fastrand::u32(..);
        let pt = PayloadType::new(params.payload_type)
            .unwrap_or(PayloadType::new(0).expect("0 is a valid payload type"));
        let stream = Stream {
            key,
            generation,
            call_id,
            rtp,
            rtcp,
            target: params.remote,
            latch: Latch::new(now, params.remote, params.signalling_peer),
            send: SendStream::from_seed(fastrand::u64(..), pt, 8000),
            player: Player::new(params.law, params.ptime),
            items: Vec::new(),
            gap: false,
            dtmf: DtmfReceiver::new(),
            rfc4733_seen: false,
            inband: None,
            inband_ssrc: None,
            last_rx: now,
            next_due: now,
            play_token: 0,
            params,
            extra: ExtraParams::default(),
            bridge: None,
            tap: None,
            notice: None,
            rtcp_target: None,
            rtcp_latched: false,
            rx_stats: ReceiveStats::default(),
            reported_lost: 0,
            sent_packets: 0,
            sent_octets: 0,
            sent_since_report: false,
            next_report: now + rtcp::report_interval(fastrand::f64()),
            cname: cname(),
        };
        self.pacing.push(Reverse((now, slot, generation)));
        self.streams[slot] = Some(stream);
        self.index.insert(key, slot);
        Ok(())
    }

    fn stream_mut(&mut self, key: StreamKey) -> Option<&mut Stream> {
        let slot = *self.index.get(&key)?;
        self.streams.get_mut(slot)?.as_mut()
    }

    fn readable(&mut self, now: Instant, slot: usize, rtcp: bool) {
        // The peer's slot, when bridged to a live stream: both are borrowed
        // for the whole read loop (the relay writes with the peer's state
        // and sends on the peer's socket).
        let peer_slot = match self.streams.get(slot) {
            Some(Some(s)) => s.bridge.as_ref().map(|l| (l.peer, l.peer_generation)),
            _ => return,
        };
        let (s, mut peer) = match peer_slot {
            Some((p, generation)) if p != slot => match self.streams.get_disjoint_mut([slot, p]) {
                Ok([Some(s), Some(peer)]) if peer.generation == generation => (s, Some(peer)),
                Ok([Some(s), _]) => (s, None),
                _ => return,
            },
            _ => match self.streams.get_mut(slot) {
                Some(Some(s)) => (s, None),
                _ => return,
            },
        };
        if rtcp {
            read_rtcp(now, s, &mut self.recv_buf, &self.cfg.acl, &mut self.stats);
            return;
        }
        loop {
            let (len, src) = match s.rtp.recv_from(&mut self.recv_buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors surface here on some systems: never fatal.
                Err(e) => {
                    trace!(error = %e, "RTP receive error ignored");
                    continue;
                }
            };
            self.stats.received += 1;
            if !self.cfg.acl.allows(src.ip()) {
                self.stats.refused += 1;
                continue;
            }
            let Ok(packet) = RtpPacket::parse(&self.recv_buf[..len]) else {
                trace!(%src, len, "not RTP, dropped");
                continue;
            };
            // Only the latched stream is heard (see `Latch`): another
            // IP could be an RTP-Bleed attempt, another source of the
            // expected IP another call's stream.
            match s.latch.on_packet(now, src, packet.ssrc()) {
                Verdict::Refused => {
                    self.stats.refused += 1;
                    continue;
                }
                Verdict::Foreign => {
                    self.stats.foreign += 1;
                    trace!(call_id = %s.call_id, %src, ssrc = %packet.ssrc(), "RTP of another source ignored");
                    continue;
                }
                Verdict::Accept { latched } => {
                    // On hold (no SDP address) nothing is sent, latched or not.
                    if latched && s.params.remote.is_some() {
                        if s.target != Some(src) {
                            debug!(call_id = %s.call_id, from = ?s.target, to = %src, "RTP latched");
                        }
                        s.target = Some(src);
                    }
                }
            }
            s.last_rx = now;
            let pt = packet.payload_type().get();
            let audio = pt == s.params.payload_type;
            s.rx_stats.on_rtp(now, &packet.header(), audio, 8000);
            if Some(pt) == s.params.telephone_event {
                match s.dtmf.handle_packet(now, &packet) {
                    Ok(Some(digit)) => {
                        // The sender uses RFC 4733: its audio is no longer
                        // listened to for tones (the controller's merger
                        // pairs a first press heard both ways).
                        s.rfc4733_seen = true;
                        s.inband = None;
                        let _ = self.events.send(MediaEvent::Digit {
                            key: s.key,
                            digit,
                            inband: false,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => trace!(error = %e, "bad telephone-event payload"),
                }
            }
            // Digits may be heard in the audio: without telephone-event,
            // and with it until its first event (carriers that offer it and
            // send tones anyway). Only our codec's payload type; comfort
            // noise, PT 13, and un-negotiated types such as sipp's PT 97
            // filler are never decoded as audio. The detector is made on
            // first use. Not while bridged: the other party hears the tones
            // themselves.
            else if !s.rfc4733_seen && audio && s.bridge.is_none() {
                let detector = s
                    .inband
                    .get_or_insert_with(|| Box::new(InbandDetector::new()));
                if s.inband_ssrc != Some(packet.ssrc()) {
                    // A new source: its audio does not continue the old one.
                    detector.reset();
                    s.inband_ssrc = Some(packet.ssrc());
                }
                let mut digit = detector.push_g711(now, s.params.law, packet.payload());
                while let Some(d) = digit {
                    let _ = self.events.send(MediaEvent::Digit {
                        key: s.key,
                        digit: d,
                        inband: true,
                    });
                    digit = detector.poll_digit();
                }
            }
            if audio
                && let Some(tap) = &mut s.tap
                && !record(now, tap, packet.payload())
            {
                s.tap = None;
            }
            let (Some(leg), Some(peer)) = (&mut s.bridge, peer.as_deref_mut()) else {
                continue;
            };
            // Hold: nothing is sent to a leg that does not receive; it
            // restarts its timing (and marks a talk spurt) on resume. A leg
            // playing a prompt (the recording notice) is not relayed to.
            let target = if peer.params.send { peer.target } else { None };
            let Some(target) = target else {
                leg.relay.resync();
                continue;
            };
            if !peer.player.is_idle() {
                leg.relay.resync();
                continue;
            }
            match leg.relay.relay(&packet, &mut peer.send, &mut self.send_buf) {
                Ok(_) => match peer.rtp.send_to(&self.send_buf, target) {
                    Ok(_) => {
                        self.stats.relayed += 1;
                        peer.sent_packets = peer.sent_packets.wrapping_add(1);
                        peer.sent_octets =
                            peer.sent_octets.wrapping_add(packet.payload().len() as u32);
                        peer.sent_since_report = true;
                    }
                    Err(e) => {
                        self.stats.send_errors += 1;
                        trace!(error = %e, %target, "RTP send error ignored");
                    }
                },
                Err(Dropped::UnknownPayloadType(pt)) => {
                    trace!(call_id = %s.call_id, %pt, "payload type not relayed");
                }
                Err(reason) => trace!(call_id = %s.call_id, %reason, "not relayed"),
            }
        }
    }

    fn pace(&mut self, now: Instant) {
        let horizon = now + EARLY;
        while let Some(&Reverse((due, slot, generation))) = self.pacing.peek() {
            if due > horizon {
                break;
            }
            self.pacing.pop();
            let Some(Some(s)) = self.streams.get_mut(slot) else {
                continue;
            };
            if s.generation != generation {
                continue;
            }
            let ptime = Duration::from_millis(u64::from(s.params.ptime.ms()));
            let samples = u32::from(s.params.ptime.ms()) * 8;
            // One frame per deadline. If the thread was stalled for several
            // packets, resynchronise rather than burst (the timestamp jumps
            // by the missed time, as RFC 3550 §5.1 expects).
            let mut next = due + ptime;
            if now.saturating_duration_since(due) > ptime * MAX_CATCH_UP {
                let missed = (now - due).as_millis() as u32 / u32::from(s.params.ptime.ms());
                s.send.skip(missed * samples);
                next = now + ptime;
            }
            s.next_due = next;
            self.pacing.push(Reverse((next, slot, generation)));

            let Some(frame) = s.player.next_frame(&self.prompts) else {
                // Idle: nothing sent, but the timestamp keeps time (RFC
                // 3550 §5.1) for the next talk spurt.
                s.send.skip(samples);
                drain_player(s, &self.events, &mut self.record_starts);
                continue;
            };
            let (payload, marker) = (frame.payload, frame.marker);
            let target = if s.params.send { s.target } else { None };
            let Some(target) = target else {
                // On hold: time moves on, nothing is sent.
                s.send.skip(samples);
                s.gap = true;
                drain_player(s, &self.events, &mut self.record_starts);
                continue;
            };
            let marker = marker || std::mem::take(&mut s.gap);
            let header = s.send.next_header(samples, marker);
            write_rtp(&mut self.send_buf, &header, payload);
            // Sent with the rest of the pass (see `flush_sends`).
            self.batch.push(
                s.rtp.as_raw_fd(),
                target,
                &self.send_buf,
                (slot, generation, payload.len() as u32),
            );
            drain_player(s, &self.events, &mut self.record_starts);
        }
        self.flush_sends();
        // Recording notices that finished: their recordings start now.
        while let Some(pending) = self.record_starts.pop() {
            self.start_recording(now, pending);
        }
    }

    /// Sends the frames queued by this pacing pass, in one system call
    /// where io_uring is there, and counts them per stream. The sockets are
    /// open: streams are only removed by commands, never during a pass.
    fn flush_sends(&mut self) {
        let MediaThread {
            batch,
            streams,
            stats,
            ..
        } = self;
        batch.flush(|(slot, generation, octets), result| match result {
            Ok(_) => {
                stats.sent += 1;
                if let Some(Some(s)) = streams.get_mut(slot)
                    && s.generation == generation
                {
                    s.sent_packets = s.sent_packets.wrapping_add(1);
                    s.sent_octets = s.sent_octets.wrapping_add(octets);
                    s.sent_since_report = true;
                }
            }
            Err(e) => {
                stats.send_errors += 1;
                trace!(error = %e, slot, "RTP send error ignored");
            }
        });
    }

    fn check_timeouts(&mut self, now: Instant) {
        for slot in 0..self.streams.len() {
            // RFC 3264 §8.4 hold on either leg of a bridge pauses both legs'
            // RTP timeouts: the held party's phone may send nothing.
            let peer_held = match &self.streams[slot] {
                Some(s) => s.bridge.as_ref().is_some_and(|leg| {
                    matches!(self.streams.get(leg.peer), Some(Some(p))
                        if p.generation == leg.peer_generation && p.held())
                }),
                None => continue,
            };
            let Some(s) = self.streams[slot].as_mut() else {
                continue;
            };
            if now >= s.next_report {
                send_report(now, s, &mut self.send_buf, &mut self.stats, false);
                s.next_report = now + rtcp::report_interval(fastrand::f64());
            }
            if s.held() || peer_held {
                s.last_rx = now;
                continue;
            }
            if now.saturating_duration_since(s.last_rx) >= self.cfg.rtp_timeout {
                debug!(call_id = %s.call_id, "RTP timeout");
                let _ = self.events.send(MediaEvent::RtpTimeout { key: s.key });
                // Report once per timeout period.
                s.last_rx = now;
            }
        }
    }
}

/// Reads and consumes RTCP from a leg (RFC 3550 §6): SRs feed the LSR/DLSR
/// of our reports on that leg; nothing is forwarded to the other leg. RTCP
/// of this leg's stream (see [`Latch::accepts_rtcp`]) is life for the RTP
/// timeout: a peer that sends only RTCP (silence suppression without comfort
/// noise) is still there.
fn read_rtcp(now: Instant, s: &mut Stream, buf: &mut [u8], acl: &Acl, stats: &mut Counters) {
    loop {
        let (len, src) = match s.rtcp.recv_from(buf) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                trace!(error = %e, "RTCP receive error ignored");
                continue;
            }
        };
        if !acl.allows(src.ip()) || !s.latch.expects_ip(src.ip()) {
            stats.refused += 1;
            continue;
        }
        // RFC 3550 §6.1: a compound packet starts with an SR or RR, whose
        // SSRC is the sender's.
        let sender = match rtcp::parse_compound(&buf[..len]).next() {
            Some(Ok(
                RtcpPacket::SenderReport { ssrc, .. } | RtcpPacket::ReceiverReport { ssrc, .. },
            )) => Some(ssrc),
            _ => None,
        };
        if !s.latch.accepts_rtcp(src, s.rtcp_expected(), sender) {
            stats.foreign += 1;
            trace!(call_id = %s.call_id, %src, "RTCP of another source ignored");
            continue;
        }
        stats.rtcp_received += 1;
        s.last_rx = now;
        if !s.rtcp_latched && s.params.remote.is_some() {
            s.rtcp_target = Some(src);
            s.rtcp_latched = true;
        }
        let ours = s.send.ssrc();
        for packet in rtcp::parse_compound(&buf[..len]) {
            match packet {
                Ok(RtcpPacket::SenderReport { info, blocks, .. }) => {
                    s.rx_stats.on_sender_report(now, &info);
                    trace_blocks(&s.call_id, ours, blocks.iter());
                }
                Ok(RtcpPacket::ReceiverReport { blocks, .. }) => {
                    trace_blocks(&s.call_id, ours, blocks.iter());
                }
                Ok(RtcpPacket::Bye { .. }) => trace!(call_id = %s.call_id, "RTCP BYE"),
                Ok(RtcpPacket::SourceDescription { .. } | RtcpPacket::Other { .. }) => {}
                Err(e) => {
                    trace!(call_id = %s.call_id, error = %e, "malformed RTCP");
                    break;
                }
            }
        }
    }
}

fn trace_blocks(call_id: &str, ours: Ssrc, blocks: impl Iterator<Item = rtcp::ReportBlock>) {
    for b in blocks.filter(|b| b.ssrc == ours) {
        trace!(
            call_id,
            fraction_lost = b.fraction_lost,
            cumulative_lost = b.cumulative_lost,
            jitter = b.jitter,
            "RTCP report on our stream"
        );
    }
}

/// Sends our SR (when we sent since the last report) or RR on a leg; with
/// `bye`, when the stream ends, followed by a BYE of our SSRC (RFC 3550
/// §6.6: a BYE goes in a compound packet after a report and the CNAME) and
/// sent even with nothing to report.
fn send_report(now: Instant, s: &mut Stream, buf: &mut Vec<u8>, stats: &mut Counters, bye: bool) {
    let Some(dest) = s.rtcp_destination() else {
        return;
    };
    let block = s.rx_stats.report_block(now);
    if let Some(b) = &block {
        // G.711 and telephone-event run at 8 kHz (see `on_rtp`).
        stats
            .jitter
            .get_or_insert_with(|| Histogram::new(JITTER_BOUNDS))
            .observe(f64::from(b.jitter) / 8000.0);
        let lost = i64::from(b.cumulative_lost);
        // Only growth counts; a count that went down (a late duplicate, a
        // new source starting over) is the new baseline.
        if lost > s.reported_lost {
            stats.lost += (lost - s.reported_lost).unsigned_abs();
        }
        s.reported_lost = lost;
    }
    if block.is_none() && !s.sent_since_report && !bye {
        // Nothing sent, nothing heard: nothing to report.
        return;
    }
    let sender = s.sent_since_report.then(|| {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SenderInfo {
            ntp: rtcp::ntp_timestamp(since_epoch),
            // The media clock the pacing keeps in real time.
            rtp_timestamp: s.send.next_timestamp(),
            packets: s.sent_packets,
            octets: s.sent_octets,
        }
    });
    s.sent_since_report = false;
    rtcp::write_report(
        buf,
        s.send.ssrc(),
        sender.as_ref(),
        block.as_ref(),
        &s.cname,
    );
    if bye {
        rtcp::append_bye(buf, s.send.ssrc());
    }
    match s.rtcp.send_to(buf, dest) {
        Ok(_) => stats.rtcp_sent += 1,
        Err(e) => {
            stats.send_errors += 1;
            trace!(error = %e, %dest, "RTCP send error ignored");
        }
    }
}

/// Decodes a received payload into the recording; false when the recorder
/// is gone (it failed), so the tap can be dropped.
fn record(now: Instant, tap: &mut Tap, payload: &[u8]) -> bool {
    let position = tap.placement.place(now, payload.len());
    for chunk in recorder::chunks(tap.channel, position, tap.law, payload) {
        match tap.tx.try_send(chunk) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                tap.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
    true
}

/// The recorder thread's body: chunks until both taps are gone, then the
/// file is finished. Returns frames written and late samples dropped.
fn write_recording(
    path: &Path,
    chunks: mpsc::Receiver<Chunk>,
) -> Result<(u64, u64), RecorderError> {
    let file = std::fs::File::create(path).map_err(hound::Error::from)?;
    let mut writer = StereoWriter::new(io::BufWriter::new(file))?;
    for chunk in chunks {
        writer.push(&chunk)?;
    }
    let late = writer.late_samples();
    Ok((writer.finish()?, late))
}

/// A random RTCP CNAME (RFC 7022 §4.2: per session), 16 hex digits.
fn cname() -> [u8; 16] {
    let v = fastrand::u64(..);
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

fn drain_player(
    s: &mut Stream,
    events: &UnboundedSender<MediaEvent>,
    record_starts: &mut Vec<PendingRecord>,
) {
    while let Some(ev) = s.player.poll_event() {
        let ev = match ev {
            PlayerEvent::Finished(prompt) => {
                if s.items.first() == Some(&Item::Prompt(prompt)) {
                    s.items.remove(0);
                }
                if s.notice
                    .as_ref()
                    .is_some_and(|(notice, _)| *notice == prompt)
                    && let Some((_, pending)) = s.notice.take()
                {
                    record_starts.push(pending);
                }
                MediaEvent::PromptFinished { key: s.key, prompt }
            }
            PlayerEvent::Idle => MediaEvent::Idle {
                key: s.key,
                token: s.play_token,
            },
            PlayerEvent::NotPrepared(prompt) => {
                warn!(?prompt, "prompt not prepared for this codec/ptime");
                continue;
            }
        };
        let _ = events.send(ev);
    }
}
