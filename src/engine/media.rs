//! The media thread: every RTP stream of the process on one OS thread, paced
//! by one clock.
//!
//! There is no task and no timer per stream. The thread owns all RTP/RTCP
//! sockets through one `mio::Poll`; a single min-heap of send deadlines is the
//! pacing clock: the thread sleeps until the earliest deadline (or until a
//! socket is readable, or a command arrives), sends every frame that is due,
//! and pushes each stream's next deadline at `due + ptime` (never `now +
//! ptime`, so lateness does not accumulate). Frames come pre-encoded from the
//! shared [`PromptLibrary`]; the send and receive buffers are reused.
//!
//! Security: we send to the SDP address and latch to the source of incoming
//! RTP only when that source's IP is the SDP address's or the signalling
//! peer's (no RTP-Bleed); the RTP allow-list is checked first. Send errors
//! (ICMP port unreachable included) are counted and never end a stream.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, trace, warn};

use crate::acl::Acl;
use crate::media::dtmf::{DtmfDigit, DtmfReceiver};
use crate::media::g711::Law;
use crate::media::inband::InbandDetector;
use crate::media::player::{Item, Player, PlayerEvent};
use crate::media::prompt::{PromptId, PromptLibrary, Ptime};
use crate::media::rtp::{PayloadType, RtpPacket, SendStream, Ssrc, write_rtp};

/// Identifies a stream: the engine's call key.
pub type StreamKey = u64;

/// How a stream sends and what it accepts.
#[derive(Debug, Clone)]
pub struct StreamParams {
    /// The negotiated G.711 law.
    pub law: Law,
    /// Its payload type (0, 8, or the offerer's dynamic number).
    pub payload_type: u8,
    /// The negotiated telephone-event payload type, if any.
    pub telephone_event: Option<u8>,
    /// Packet time we send at.
    pub ptime: Ptime,
    /// Where to send (the SDP address); `None` while on hold.
    pub remote: Option<SocketAddr>,
    /// The signalling peer's IP, also accepted as an RTP source for latching.
    pub signalling_peer: IpAddr,
    /// Whether we may send (the peer's direction allows receiving).
    pub send: bool,
    /// Whether RTP is expected from the peer (pauses the RTP timeout when not).
    pub receive: bool,
}

/// Commands from the engine to the media thread.
#[derive(Debug)]
pub enum Command {
    /// Start a stream on these (already bound) sockets.
    Add {
        /// The call's key.
        key: StreamKey,
        /// The SIP Call-ID, for logs.
        call_id: Arc<str>,
        /// The RTP socket (even port).
        rtp: std::net::UdpSocket,
        /// The RTCP socket (RTP port + 1); read and discarded for now.
        rtcp: std::net::UdpSocket,
        /// Parameters.
        params: StreamParams,
    },
    /// New parameters after a re-INVITE/UPDATE (re-latches).
    Update {
        /// The call's key.
        key: StreamKey,
        /// Parameters.
        params: StreamParams,
    },
    /// Replace what the stream plays (an empty list stops playback).
    Play {
        /// The call's key.
        key: StreamKey,
        /// The play list.
        items: Vec<Item>,
        /// Echoed in [`MediaEvent::Idle`], so a play list that was replaced
        /// can never be mistaken for the current one finishing.
        token: u32,
    },
    /// Stop and drop a stream (its sockets close).
    Remove {
        /// The call's key.
        key: StreamKey,
    },
}

/// Reports from the media thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A digit started (RFC 4733 event, or in-band tones).
    Digit {
        /// The call's key.
        key: StreamKey,
        /// The digit.
        digit: DtmfDigit,
        /// Whether it came as an RFC 4733 event or was heard in the audio.
        inband: bool,
    },
    /// A prompt finished playing.
    PromptFinished {
        /// The call's key.
        key: StreamKey,
        /// Which prompt.
        prompt: PromptId,
    },
    /// The play list ran out.
    Idle {
        /// The call's key.
        key: StreamKey,
        /// The token of the play list that ran out.
        token: u32,
    },
    /// No RTP arrived for the configured time.
    RtpTimeout {
        /// The call's key.
        key: StreamKey,
    },
    /// The stream is gone (after [`Command::Remove`]); its ports may be reused.
    Removed {
        /// The call's key.
        key: StreamKey,
    },
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
}

impl MediaHandle {
    /// Sends a command; returns false if the media thread is gone.
    pub fn send(&self, command: Command) -> bool {
        if self.tx.send(command).is_err() {
            return false;
        }
        self.waker.wake().is_ok()
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
    let handle = MediaHandle {
        tx,
        waker: waker.clone(),
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
                recv_buf: vec![0u8; 2048],
                send_buf: Vec::with_capacity(1500),
                next_timeout_check: Instant::now(),
                stats: Counters::default(),
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
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    next_timeout_check: Instant,
    stats: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    sent: u64,
    send_errors: u64,
    received: u64,
    refused: u64,
}

struct Stream {
    key: StreamKey,
    generation: u32,
    call_id: Arc<str>,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    params: StreamParams,
    target: Option<SocketAddr>,
    latched: bool,
    send: SendStream,
    player: Player,
    /// The play list as last given, minus prompts already finished: played
    /// again by the new player when a re-INVITE changes law or packet time.
    items: Vec<Item>,
    /// A tick passed without sending (on hold): the next packet starts a
    /// talk spurt (RFC 3551 §4.1 marker), as after an idle player.
    gap: bool,
    dtmf: DtmfReceiver,
    /// In-band detection, only when no telephone-event was negotiated.
    inband: Option<Box<InbandDetector>>,
    inband_ssrc: Option<Ssrc>,
    last_rx: Instant,
    next_due: Instant,
    play_token: u32,
}

impl MediaThread {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
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
                self.next_timeout_check = now + TIMEOUT_CHECK;
            }
        }
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
                rtp,
                rtcp,
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
                s.target = params.remote;
                s.latched = false;
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
                s.params = params;
                s.last_rx = now;
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
                if let Some(slot) = self.index.remove(&key)
                    && let Some(mut s) = self.streams[slot].take()
                {
                    let _ = self.poll.registry().deregister(&mut s.rtp);
                    let _ = self.poll.registry().deregister(&mut s.rtcp);
                    self.free.push(slot);
                }
                let _ = self.events.send(MediaEvent::Removed { key });
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
            latched: false,
            send: SendStream::from_seed(fastrand::u64(..), pt, 8000),
            player: Player::new(params.law, params.ptime),
            items: Vec::new(),
            gap: false,
            dtmf: DtmfReceiver::new(),
            inband: None,
            inband_ssrc: None,
            last_rx: now,
            next_due: now,
            play_token: 0,
            params,
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
        let Some(Some(s)) = self.streams.get_mut(slot) else {
            return;
        };
        if rtcp {
            // RTCP is terminated here: read and discard (RR/SR handling is
            // the bridge's, issue 4).
            while s.rtcp.recv_from(&mut self.recv_buf).is_ok() {}
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
            // Latch only to the expected peer (SDP address or signalling
            // source): anything else could be an RTP-Bleed attempt.
            let expected = s.params.remote.map(|r| r.ip()) == Some(src.ip())
                || s.params.signalling_peer == src.ip();
            if !expected {
                self.stats.refused += 1;
                continue;
            }
            if !s.latched && s.params.remote.is_some() {
                if s.target != Some(src) {
                    debug!(call_id = %s.call_id, from = ?s.target, to = %src, "RTP latched");
                }
                s.target = Some(src);
                s.latched = true;
            }
            s.last_rx = now;
            let pt = packet.payload_type().get();
            if Some(pt) == s.params.telephone_event {
                match s.dtmf.handle_packet(now, &packet) {
                    Ok(Some(digit)) => {
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
            // Without telephone-event, digits can only be heard in the
            // audio (our codec's payload type; comfort noise, PT 13, and
            // un-negotiated types such as sipp's PT 97 filler are never
            // decoded as audio). The detector is made on first use.
            else if s.params.telephone_event.is_none() && pt == s.params.payload_type {
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
                drain_player(s, &self.events);
                continue;
            };
            let (payload, marker) = (frame.payload, frame.marker);
            let target = if s.params.send { s.target } else { None };
            let Some(target) = target else {
                // On hold: time moves on, nothing is sent.
                s.send.skip(samples);
                s.gap = true;
                drain_player(s, &self.events);
                continue;
            };
            let marker = marker || std::mem::take(&mut s.gap);
            let header = s.send.next_header(samples, marker);
            write_rtp(&mut self.send_buf, &header, payload);
            match s.rtp.send_to(&self.send_buf, target) {
                Ok(_) => self.stats.sent += 1,
                Err(e) => {
                    self.stats.send_errors += 1;
                    trace!(error = %e, %target, "RTP send error ignored");
                }
            }
            drain_player(s, &self.events);
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        for s in self.streams.iter_mut().flatten() {
            if !s.params.receive {
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

fn drain_player(s: &mut Stream, events: &UnboundedSender<MediaEvent>) {
    while let Some(ev) = s.player.poll_event() {
        let ev = match ev {
            PlayerEvent::Finished(prompt) => {
                if s.items.first() == Some(&Item::Prompt(prompt)) {
                    s.items.remove(0);
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
