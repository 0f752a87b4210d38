//! SIP over UDP and TCP (RFC 3261 §18): the listening sockets, the TCP
//! connection table, and the hand-off of received messages to the SIP core.
//!
//! [`Transport::bind`] opens the sockets and returns the receiving end of one
//! bounded queue of [`Inbound`] messages. Tasks behind it:
//!
//! - one UDP receive loop: one datagram is one message (RFC 3261 §18.1);
//! - one TCP accept loop, and one task per connection (accepted or opened by
//!   [`Transport::send`]) that frames the byte stream with
//!   [`StreamFramer`](crate::sip::framing::StreamFramer) and writes what the
//!   core queues for that connection.
//!
//! Sending never blocks the caller: UDP datagrams leave from the listening
//! socket at once (responses and requests carry its port, RFC 3261 §18.2.2),
//! TCP messages go into a bounded per-connection queue; a full queue drops the
//! message with a warning and an error for the caller to count.
//!
//! Connections we open are kept alive and watched: TCP keepalive probes and
//! `TCP_USER_TIMEOUT` notice a peer that vanished, and an RFC 5626 §4.4.1
//! CRLF ping every 95–120 s keeps NATs and firewalls on the way open (a
//! peer's ping is answered with a pong on any connection).
//!
//! Nothing is lost silently (RFC 3261 §17.1.4, §18.4): what fails after
//! [`Transport::send`] said `Ok` — a TCP connect refused or timed out, a
//! write that fails or stalls, messages still queued on a connection that
//! ends, a UDP datagram that had to wait and then failed — is counted and
//! reported as a [`SendFailure`] on the queue [`Transport::take_failures`]
//! hands out, so the core can fail the transactions that used it.
//!
//! Back-pressure: when the inbound queue is full, UDP datagrams are dropped
//! (the peer retransmits, RFC 3261 §17) and TCP readers wait, which in turn
//! stalls the peer through TCP flow control.
//!
//! Framing errors on a connection (message too large, missing or invalid
//! Content-Length) close it after a log line. No 400/513 response is sent on
//! the way out: that would need a SIP parser here, and a peer that breaks
//! framing cannot be trusted to be in sync to read it anyway.
//!
//! The edge ([`Edge`]) is checked here, before anything is queued or
//! parsed: a datagram from outside every allow-list is dropped (or answered
//! with a stateless 403), a TCP connection from outside is closed at
//! accept; TCP connections are capped in total and per source, messages per
//! source per second; while the core falls behind (queue depth, or the
//! wait it reports) new INVITEs get a stateless 503 with Retry-After.
//! Every message let in carries its sender's [`Role`] to the core.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{debug, info, warn};

use crate::acl::{Acl, AclAction, RateLimiter, Role, Sources};
use crate::sip::framing::{self, Frame, FramingError, KeepAliveKind, StreamFramer};
use crate::sip::message::{self, Message, Method};

/// Capacity of the queue of received messages towards the SIP core.
pub const INBOUND_QUEUE: usize = 4096;
/// Capacity of each TCP connection's queue of messages to write.
pub const TCP_WRITE_QUEUE: usize = 256;
/// How long opening an outbound TCP connection may take.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity of the queue of [`SendFailure`]s towards the core.
pub const FAILURE_QUEUE: usize = 1024;
/// TCP keepalive on connections we open: the first probe after this long
/// without traffic…
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// … then one every this long…
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// … and the connection is dead after this many unanswered.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;
/// `TCP_USER_TIMEOUT` on connections we open: data unacknowledged this
/// long breaks the connection (64·T1 at the default T1: a transaction's
/// whole life) instead of the kernel's 15 minutes of retries.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(32);
/// RFC 5626 §4.4.1: the recommended keep-alive interval for connection
/// oriented transports; each ping goes after 80–100 % of it.
pub const CRLF_PING_INTERVAL: Duration = Duration::from_secs(120);
/// The RFC 5626 §4.4.1 ping: a double CRLF.
const PING: &[u8] = b"\r\n\r\n";

/// Identifies one TCP connection for as long as the transport lives; never
/// reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The transport a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// A UDP datagram on the listening socket.
    Udp,
    /// A TCP connection, accepted or opened by us.
    Tcp(ConnId),
}

/// Where a received message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The peer's address (for TCP: its end of the connection).
    pub remote: SocketAddr,
    /// Our address the message arrived on.
    pub local: SocketAddr,
    /// The transport, with the connection for TCP.
    pub transport: TransportKind,
}

/// One received SIP message, not parsed yet.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The whole message: one datagram, or one framed message off a stream.
    pub data: Bytes,
    /// Where it came from.
    pub source: Source,
    /// What the sender may do (checked at the socket).
    pub role: Role,
    /// When it was received: the core reports the wait to the [`Edge`].
    pub received: std::time::Instant,
}

/// Where to send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A UDP datagram from the listening socket to this address.
    Udp(SocketAddr),
    /// TCP: the connection `conn` if it is still open (RFC 3261 §18.2.2:
    /// responses go back on the request's connection), else any open
    /// connection to `remote`, else a new connection to `remote`.
    Tcp {
        /// The preferred connection, typically the one a request came on.
        conn: Option<ConnId>,
        /// The address to reuse a connection to, or to connect to.
        remote: SocketAddr,
    },
}

/// A message [`Transport::send`] accepted that the network did not take.
#[derive(Debug)]
pub struct SendFailure {
    /// Where it went: `Tcp` with the connection that failed (for a
    /// connection, every message queued on it), or `Udp`.
    pub target: Target,
    /// What failed.
    pub stage: FailedStage,
    /// The socket error.
    pub error: io::Error,
}

/// The step of sending that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedStage {
    /// Opening the TCP connection (refused, unreachable, timed out).
    Connect,
    /// Writing to the TCP connection, or it ended with messages unwritten.
    Write,
    /// A connection we opened broke (reset, keepalive probes or
    /// `TCP_USER_TIMEOUT` found the peer gone): what was written may not
    /// have arrived, and no answer can come back on it.
    Broken,
    /// A UDP datagram that waited for buffer space, then failed.
    Datagram,
}

/// Why [`Transport::send`] did not hand a message to the network.
#[derive(Debug, Error)]
pub enum SendError {
    /// Local configuration: no UDP socket was bound.
    #[error("no UDP socket bound")]
    NoUdpSocket,
    /// Local: the transport has been shut down.
    #[error("transport shut down")]
    ShutDown,
    /// Back-pressure: the connection's write queue is full; message dropped.
    #[error("TCP write queue to {remote} full, message dropped")]
    QueueFull {
        /// The connection's peer.
        remote: SocketAddr,
    },
    /// Back-pressure: too many datagrams wait for socket buffer space;
    /// message dropped.
    #[error("UDP socket backlogged, datagram to {remote} dropped")]
    UdpBacklog {
        /// The intended destination.
        remote: SocketAddr,
    },
    /// The kernel refused the datagram (too large, no route, …).
    #[error("UDP send to {remote} failed")]
    Udp {
        /// The intended destination.
        remote: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
}

/// Settings of the checks at the socket (from `[acl]` and `[edge]`).
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// The allow-lists by role (the resolved trunk targets are added by
    /// [`Edge::set_trunk_targets`]).
    pub sources: Sources,
    /// Outsiders' requests: stateless 403, or dropped.
    pub action: AclAction,
    /// Accepted TCP connections, all sources together.
    pub max_tcp_connections: usize,
    /// Accepted TCP connections from one address.
    pub max_tcp_per_source: usize,
    /// Messages per second from one address (bursts of twice that).
    pub max_messages_per_source: u32,
    /// Stateless answers per second, all together.
    pub max_stateless_per_s: u32,
    /// Queued messages beyond which new INVITEs get 503.
    pub overload_queue: usize,
    /// Queue wait beyond which the core counts as falling behind.
    pub overload_delay: Duration,
    /// `Retry-After` of the overload 503.
    pub retry_after_s: u32,
    /// `Server` of the stateless answers.
    pub user_agent: Box<str>,
}

impl EdgeSettings {
    /// Everything allowed, no cap that a test would notice: for transport
    /// tests and embedders that check sources themselves.
    pub fn open() -> EdgeSettings {
        let all = Acl::parse(&["0.0.0.0/0", "::/0"]).expect("literal CIDRs");
        EdgeSettings {
            sources: Sources::new(all, Acl::default()),
            action: AclAction::Drop,
            max_tcp_connections: 1 << 20,
            max_tcp_per_source: 1 << 20,
            max_messages_per_source: 1 << 30,
            max_stateless_per_s: 0,
            overload_queue: INBOUND_QUEUE,
            overload_delay: Duration::from_secs(3600),
            retry_after_s: 5,
            user_agent: "callbackd".into(),
        }
    }
}

/// Why a message or connection was not let in, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A UDP datagram from outside every allow-list (dropped or 403).
    Outsider,
    /// A TCP connection from outside every allow-list, closed at accept.
    OutsiderTcp,
    /// A TCP connection over `edge.max_tcp_connections`.
    TcpTotalCap,
    /// A TCP connection over `edge.max_tcp_per_source`.
    TcpSourceCap,
    /// A message over `edge.max_messages_per_source`.
    SourceRate,
    /// A new INVITE while overloaded (answered 503 when the stateless
    /// budget allows).
    Overload,
    /// The queue to the core was full (UDP only: TCP waits).
    QueueFull,
    /// A stateless answer (403, 503) not sent: over `edge.max_stateless_per_s`.
    StatelessCap,
}

impl DropReason {
    /// Every reason, in the order of [`EdgeTotals::dropped`].
    pub const ALL: [DropReason; 8] = [
        DropReason::Outsider,
        DropReason::OutsiderTcp,
        DropReason::TcpTotalCap,
        DropReason::TcpSourceCap,
        DropReason::SourceRate,
        DropReason::Overload,
        DropReason::QueueFull,
        DropReason::StatelessCap,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Outsider => "outsider",
            DropReason::OutsiderTcp => "outsider_tcp",
            DropReason::TcpTotalCap => "tcp_total_cap",
            DropReason::TcpSourceCap => "tcp_source_cap",
            DropReason::SourceRate => "source_rate",
            DropReason::Overload => "overload",
            DropReason::QueueFull => "queue_full",
            DropReason::StatelessCap => "stateless_cap",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The edge's counters since start-up, and its live state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeTotals {
    /// Per [`DropReason`], in [`DropReason::ALL`] order.
    pub dropped: [u64; 8],
    /// Stateless 403s sent to outsiders.
    pub rejected_403: u64,
    /// Stateless 503s sent while overloaded.
    pub overload_503: u64,
    /// Accepted TCP connections open now.
    pub tcp_connections: u64,
    /// Messages waiting for the core now.
    pub queue_depth: u64,
    /// 1 while the core is falling behind (new INVITEs get 503).
    pub overloaded: bool,
    /// Resolved trunk addresses allowed now.
    pub trunk_targets: u64,
    /// SIP messages that failed or were dropped on the way out (refused
    /// sends, TCP connects and writes that failed; filled in by the
    /// transport).
    pub send_failures: u64,
}

impl EdgeTotals {
    /// The count for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }
}

/// The checks at the socket, shared by the receive tasks and the core:
/// who may send (by role), caps, rates, overload, counters.
#[derive(Debug)]
pub struct Edge {
    settings: EdgeSettings,
    sources: RwLock<Sources>,
    limiter: Mutex<RateLimiter>,
    /// One bucket (keyed on the unspecified address) for stateless answers.
    stateless: Mutex<RateLimiter>,
    /// Set by the core when messages wait longer than the overload delay.
    lagging: AtomicBool,
    dropped: [AtomicU64; 8],
    rejected_403: AtomicU64,
    overload_503: AtomicU64,
}

/// What the socket does with a received message.
enum Verdict {
    /// Queue it for the core, with the sender's role.
    Queue(Role),
    /// Send this answer back (stateless), queue nothing.
    Answer(Bytes),
    /// Nothing.
    Drop,
}

/// Most sources the per-source rate table tracks.
const RATE_SOURCES: usize = 65_536;

impl Edge {
    /// The edge for `settings`.
    pub fn new(settings: EdgeSettings) -> Edge {
        let now = std::time::Instant::now();
        let rate = settings.max_messages_per_source;
        let stateless = settings.max_stateless_per_s;
        Edge {
            sources: RwLock::new(settings.sources.clone()),
            limiter: Mutex::new(RateLimiter::new(
                rate,
                rate.saturating_mul(2),
                RATE_SOURCES,
                now,
            )),
            stateless: Mutex::new(RateLimiter::new(stateless, stateless.max(1), 1, now)),
            lagging: AtomicBool::new(false),
            dropped: Default::default(),
            rejected_403: AtomicU64::new(0),
            overload_503: AtomicU64::new(0),
            settings,
        }
    }

    /// The role of a source address now.
    pub fn classify(&self, ip: IpAddr) -> Role {
        self.sources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .classify(ip)
    }

    /// The allow-lists were reloaded: `sources`' trunk and agent lists from
    /// now on, with the trunk targets resolved so far.
    pub fn set_sources(&self, mut sources: Sources) {
        let mut current = self.sources.write().unwrap_or_else(PoisonError::into_inner);
        sources.set_trunk_targets(current.trunk_targets().to_vec());
        *current = sources;
    }

    /// The trunk's termination resolved to `targets`: they are trunks from
    /// now on (the previous resolved set is replaced).
    pub fn set_trunk_targets(&self, targets: impl IntoIterator<Item = IpAddr>) {
        let mut sources = self.sources.write().unwrap_or_else(PoisonError::into_inner);
        if sources.set_trunk_targets(targets) {
            info!(targets = ?sources.trunk_targets(), "trunk addresses allowed");
        }
    }

    /// The core reports how long a message waited for it: past the overload
    /// delay new INVITEs get 503 at the socket until a wait under half of it.
    pub fn report_wait(&self, waited: Duration) {
        let delay = self.settings.overload_delay;
        if waited > delay {
            if !self.lagging.swap(true, Ordering::Relaxed) {
                warn!(
                    waited_ms = waited.as_millis() as u64,
                    "core falling behind: new INVITEs get 503"
                );
            }
        } else if waited < delay / 2 && self.lagging.swap(false, Ordering::Relaxed) {
            info!("core caught up: INVITEs accepted again");
        }
    }

    /// Counters and live state (`queue_depth` and `tcp_connections` are
    /// filled in by the transport).
    pub fn totals(&self) -> EdgeTotals {
        let mut dropped = [0; 8];
        for (out, counter) in dropped.iter_mut().zip(&self.dropped) {
            *out = counter.load(Ordering::Relaxed);
        }
        EdgeTotals {
            dropped,
            rejected_403: self.rejected_403.load(Ordering::Relaxed),
            overload_503: self.overload_503.load(Ordering::Relaxed),
            tcp_connections: 0,
            queue_depth: 0,
            overloaded: self.lagging.load(Ordering::Relaxed),
            trunk_targets: self
                .sources
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .trunk_targets()
                .len() as u64,
            send_failures: 0,
        }
    }

    /// Counts a drop; logs at the 1st, 2nd, 4th, 8th … of each reason, so a
    /// flood is visible without flooding the log.
    fn count(&self, reason: DropReason, remote: SocketAddr) {
        let n = self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(reason = reason.label(), total = n, last = %remote, "edge: dropped");
        }
    }

    /// Decides about one message from `remote` (UDP datagram or TCP
    /// message); `queued` is how many messages wait for the core.
    fn screen(&self, data: &[u8], remote: SocketAddr, role: Role, queued: usize) -> Verdict {
        let ip = remote.ip();
        if !role.is_allowed() {
            self.count(DropReason::Outsider, remote);
            if self.settings.action == AclAction::Reject
                && let Some(answer) = self.stateless_answer(data, remote, 403, None)
            {
                self.rejected_403.fetch_add(1, Ordering::Relaxed);
                return Verdict::Answer(answer);
            }
            return Verdict::Drop;
        }
        let now = std::time::Instant::now();
        if !self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(ip, now)
        {
            self.count(DropReason::SourceRate, remote);
            return Verdict::Drop;
        }
        let overloaded =
            queued >= self.settings.overload_queue || self.lagging.load(Ordering::Relaxed);
        if overloaded && is_new_invite(data) {
            self.count(DropReason::Overload, remote);
            let retry = self.settings.retry_after_s.to_string();
            if let Some(answer) = self.stateless_answer(data, remote, 503, Some(&retry)) {
                self.overload_503.fetch_add(1, Ordering::Relaxed);
                return Verdict::Answer(answer);
            }
            return Verdict::Drop;
        }
        Verdict::Queue(role)
    }

    /// A stateless answer to a request (never to an ACK or a response),
    /// within the stateless budget.
    fn stateless_answer(
        &self,
        data: &[u8],
        remote: SocketAddr,
        status: u16,
        retry_after: Option<&str>,
    ) -> Option<Bytes> {
        if self.settings.max_stateless_per_s == 0 || starts_with_method(data, b"ACK ") {
            return None;
        }
        // The budget before the parse: a flood beyond it costs no parsing.
        let key = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        let now = std::time::Instant::now();
        if !self
            .stateless
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(key, now)
        {
            self.count(DropReason::StatelessCap, remote);
            return None;
        }
        let Ok(Message::Request(req)) = message::parse(data) else {
            return None;
        };
        if req.method == Method::Ack {
            return None;
        }
        // A To-tag from the request, so retransmissions get the same answer.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        req.headers.call_id.hash(&mut h);
        req.headers.from.tag.hash(&mut h);
        req.headers.cseq.seq.hash(&mut h);
        let tag = format!("{:016x}", h.finish());
        let mut answer = req
            .response(status, Some(&tag))
            .header("Server", &self.settings.user_agent);
        if let Some(seconds) = retry_after {
            answer = answer.header("Retry-After", seconds);
        }
        Some(answer.finish(None, b""))
    }
}

/// Whether `data` starts a new call: an INVITE whose To has no tag. Looks
/// only at the start line first, so only INVITEs are parsed.
fn is_new_invite(data: &[u8]) -> bool {
    starts_with_method(data, b"INVITE ")
        && matches!(message::parse(data), Ok(Message::Request(req)) if req.headers.to.tag.is_none())
}

/// Whether the start line (after any CRLFs, RFC 3261 §7.5) begins with
/// `method` and a space.
fn starts_with_method(data: &[u8], method: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    data[start..].starts_with(method)
}

/// The SIP sockets. Dropping it shuts it down (see [`Transport::shutdown`]).
#[derive(Debug)]
pub struct Transport {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    failures: Mutex<Option<mpsc::Receiver<SendFailure>>>,
}

impl Transport {
    /// Binds the UDP socket and/or TCP listener (port 0 picks a free port;
    /// see [`Self::local_udp_addr`]) and starts receiving. Messages larger
    /// than `max_message_size` are dropped (UDP) or close their connection
    /// (TCP); TCP connections without traffic for `tcp_idle_timeout` are
    /// closed. Must be called inside a tokio runtime, which runs every task.
    pub async fn bind(
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
        max_message_size: usize,
        tcp_idle_timeout: Duration,
    ) -> io::Result<(Transport, mpsc::Receiver<Inbound>)> {
        let edge = Arc::new(Edge::new(EdgeSettings::open()));
        Transport::bind_with_edge(udp, tcp, max_message_size, tcp_idle_timeout, edge).await
    }

    /// [`Transport::bind`] with the checks of `edge` at the sockets.
    pub async fn bind_with_edge(
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
        max_message_size: usize,
        tcp_idle_timeout: Duration,
        edge: Arc<Edge>,
    ) -> io::Result<(Transport, mpsc::Receiver<Inbound>)> {
        let udp = match udp {
            Some(addr) => {
                let socket = UdpSocket::bind(addr).await?;
                // The kernel's default (about 200 datagrams) lasts a few
                // milliseconds of a flood: a hiccup of the receive loop
                // would drop legitimate requests with the junk before the
                // checks here could tell them apart. Linux caps the request
                // at net.core.rmem_max.
                let sock = socket2::SockRef::from(&socket);
                if let Err(e) = sock.set_recv_buffer_size(UDP_RECV_BUFFER) {
                    warn!(error = %e, "SIP UDP receive buffer not enlarged");
                }
                debug!(bytes = ?sock.recv_buffer_size().ok(), "SIP UDP receive buffer");
                Some(Arc::new(socket))
            }
            None => None,
        };
        let listener = match tcp {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (failures, failures_rx) = mpsc::channel(FAILURE_QUEUE);
        let inner = Arc::new(Inner {
            local_udp: udp.as_ref().map(|s| s.local_addr()).transpose()?,
            local_tcp: listener.as_ref().map(|l| l.local_addr()).transpose()?,
            udp: udp.clone(),
            max_message_size,
            tcp_idle_timeout,
            udp_pending: AtomicUsize::new(0),
            runtime: tokio::runtime::Handle::current(),
            edge,
            table: Mutex::new(Table {
                inbound: Some(inbound_tx.clone()),
                next_id: 1,
                conns: HashMap::new(),
                by_remote: HashMap::new(),
                accepted: 0,
                accepted_from: HashMap::new(),
            }),
            failures,
            send_failures: AtomicU64::new(0),
            ping_interval_ms: AtomicU64::new(CRLF_PING_INTERVAL.as_millis() as u64),
        });
        let mut tasks = Vec::new();
        if let (Some(socket), Some(local)) = (udp, inner.local_udp) {
            tasks.push(tokio::spawn(udp_receive_loop(
                socket,
                local,
                inbound_tx,
                max_message_size,
                inner.edge.clone(),
            )));
        }
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(tcp_accept_loop(inner.clone(), listener)));
        }
        let failures = Mutex::new(Some(failures_rx));
        Ok((
            Transport {
                inner,
                tasks,
                failures,
            },
            inbound_rx,
        ))
    }

    /// The bound UDP address, if UDP is enabled.
    pub fn local_udp_addr(&self) -> Option<SocketAddr> {
        self.inner.local_udp
    }

    /// The bound TCP listening address, if TCP is enabled.
    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.local_tcp
    }

    /// Hands a message to the network without blocking. `Ok` means queued
    /// or sent; what fails later (a TCP connect or write, a delayed
    /// datagram) comes out of [`Transport::take_failures`]'s queue. Every
    /// failure, now or later, is counted ([`Transport::send_failures`]).
    pub fn send(&self, target: Target, data: Bytes) -> Result<(), SendError> {
        let sent = match target {
            Target::Udp(remote) => self.send_udp(remote, data),
            Target::Tcp { conn, remote } => self.send_tcp(conn, remote, data),
        };
        if let Err(e) = &sent
            && !matches!(e, SendError::ShutDown)
        {
            self.inner.send_failures.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// The queue of [`SendFailure`]s: what [`Transport::send`] accepted and
    /// the network then refused. Handed out once (`None` after); while
    /// nobody holds it, failures are only counted and logged.
    pub fn take_failures(&self) -> Option<mpsc::Receiver<SendFailure>> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Messages that failed or were dropped on the way out since start
    /// (refused by [`Transport::send`], or reported as a [`SendFailure`]).
    pub fn send_failures(&self) -> u64 {
        self.inner.send_failures.load(Ordering::Relaxed)
    }

    /// The interval of the RFC 5626 CRLF pings on connections opened from
    /// now on ([`CRLF_PING_INTERVAL`] by default; each ping goes after 80–
    /// 100 % of it). For tests, and embedders whose middleboxes forget
    /// connections sooner.
    pub fn set_ping_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.inner.ping_interval_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks connection `id` as carrying a registered phone's binding
    /// (`held`), or no longer: a held connection is not closed as idle. An
    /// id that is gone is ignored.
    pub fn hold_connection(&self, id: ConnId, held: bool) {
        if let Some(conn) = self.inner.table().conns.get(&id) {
            conn.held.store(held, Ordering::Relaxed);
        }
    }

    /// Open TCP connections (accepted, connecting or connected).
    pub fn connection_count(&self) -> usize {
        self.inner.table().conns.len()
    }

    /// The checks at the sockets.
    pub fn edge(&self) -> &Arc<Edge> {
        &self.inner.edge
    }

    /// The edge's counters, with the accepted connections open now.
    pub fn edge_totals(&self) -> EdgeTotals {
        let mut totals = self.inner.edge.totals();
        totals.tcp_connections = self.inner.table().accepted as u64;
        totals.send_failures = self.send_failures();
        totals
    }

    /// Stops every task and closes every socket and connection; queued
    /// messages are dropped. Once the tasks are gone the inbound queue
    /// reports its end (`recv()` returns `None`). Idempotent.
    pub fn shutdown(&self) {
        let conns = {
            let mut table = self.inner.table();
            table.inbound = None;
            table.by_remote.clear();
            table.accepted = 0;
            table.accepted_from.clear();
            std::mem::take(&mut table.conns)
        };
        // Aborted outside the lock: each task's cleanup takes it.
        for conn in conns.values() {
            conn.task.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }

    fn send_udp(&self, remote: SocketAddr, data: Bytes) -> Result<(), SendError> {
        let Some(socket) = &self.inner.udp else {
            return Err(SendError::NoUdpSocket);
        };
        match socket.try_send_to(&data, remote) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Socket buffer full: finish asynchronously, but bounded.
                let pending = &self.inner.udp_pending;
                if pending.fetch_add(1, Ordering::Relaxed) >= UDP_MAX_PENDING_SENDS {
                    pending.fetch_sub(1, Ordering::Relaxed);
                    warn!(%remote, "UDP socket backlogged, datagram dropped");
                    return Err(SendError::UdpBacklog { remote });
                }
                let socket = socket.clone();
                let inner = self.inner.clone();
                self.inner.runtime.spawn(async move {
                    if let Err(error) = socket.send_to(&data, remote).await {
                        inner.report(SendFailure {
                            target: Target::Udp(remote),
                            stage: FailedStage::Datagram,
                            error,
                        });
                    }
                    inner.udp_pending.fetch_sub(1, Ordering::Relaxed);
                });
                Ok(())
            }
            Err(source) => Err(SendError::Udp { remote, source }),
        }
    }

    fn send_tcp(
        &self,
        conn: Option<ConnId>,
        remote: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        let mut table = self.inner.table();
        if table.inbound.is_none() {
            return Err(SendError::ShutDown);
        }
        let existing = conn
            .filter(|id| table.conns.contains_key(id))
            .or_else(|| table.by_remote.get(&remote).copied());
        let data = match existing.and_then(|id| table.conns.get(&id)) {
            Some(open) => match open.writer.try_send(data) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => {
                    warn!(remote = %open.remote, "TCP write queue full, message dropped");
                    return Err(SendError::QueueFull {
                        remote: open.remote,
                    });
                }
                // The connection's task is ending; its cleanup is racing us.
                Err(TrySendError::Closed(data)) => data,
            },
            None => data,
        };
        let writer = self
            .inner
            .open_connection(&mut table, remote, Origin::Outbound)?;
        writer
            .try_send(data)
            .map_err(|_| SendError::QueueFull { remote })
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The receive buffer asked for on the SIP UDP socket.
const UDP_RECV_BUFFER: usize = 8 << 20;
/// Datagrams allowed to wait for UDP socket buffer space at once.
const UDP_MAX_PENDING_SENDS: usize = 1024;
/// Bytes read from a TCP connection per read call.
const TCP_READ_CHUNK: usize = 8 * 1024;
/// Pause after a socket error that is not about one peer (EMFILE, ENOBUFS…),
/// so a persistent error does not spin a core.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// State shared by the handle and every task.
#[derive(Debug)]
struct Inner {
    udp: Option<Arc<UdpSocket>>,
    local_udp: Option<SocketAddr>,
    local_tcp: Option<SocketAddr>,
    max_message_size: usize,
    tcp_idle_timeout: Duration,
    udp_pending: AtomicUsize,
    runtime: tokio::runtime::Handle,
    edge: Arc<Edge>,
    table: Mutex<Table>,
    /// Where [`SendFailure`]s go (see [`Transport::take_failures`]).
    failures: mpsc::Sender<SendFailure>,
    /// Messages that failed or were dropped on the way out, since start.
    send_failures: AtomicU64,
    /// Between CRLF pings on connections we open (see
    /// [`Transport::set_ping_interval`]), in milliseconds.
    ping_interval_ms: AtomicU64,
}

/// The TCP connection table.
#[derive(Debug)]
struct Table {
    /// Where received messages go; `None` once shut down.
    inbound: Option<mpsc::Sender<Inbound>>,
    next_id: u64,
    conns: HashMap<ConnId, Conn>,
    /// The connection to reuse for each peer address (the newest one).
    by_remote: HashMap<SocketAddr, ConnId>,
    /// Accepted connections open (the caps count these).
    accepted: usize,
    /// Accepted connections open per source address.
    accepted_from: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Conn {
    remote: SocketAddr,
    writer: mpsc::Sender<Bytes>,
    task: AbortHandle,
    accepted: bool,
    /// Carries a registered phone's binding: not closed as idle.
    held: Arc<AtomicBool>,
}

/// How a connection task gets its stream.
enum Origin {
    Accepted(TcpStream),
    Outbound,
}

/// Why a connection task ended without a read error.
#[derive(Debug)]
enum Closed {
    /// A queued message could not be written (error, or the peer stopped
    /// reading for the idle timeout).
    WriteFailed(io::Error),
    /// The peer closed its side.
    ByPeer,
    /// No traffic for the idle timeout.
    Idle,
    /// The peer broke framing; the stream cannot be resynchronised.
    Framing(FramingError),
    /// The transport is shutting down (queues closed).
    ShutDown,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent at every await-free step; a panic
        // elsewhere while holding it leaves nothing half-updated.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection and spawns its task. Takes the locked table so
    /// that the lookup that chose to connect and the insertion are atomic.
    fn open_connection(
        self: &Arc<Self>,
        table: &mut Table,
        remote: SocketAddr,
        origin: Origin,
    ) -> Result<mpsc::Sender<Bytes>, SendError> {
        let Some(inbound) = table.inbound.clone() else {
            return Err(SendError::ShutDown);
        };
        let id = ConnId(table.next_id);
        table.next_id += 1;
        let (writer, writes) = mpsc::channel(TCP_WRITE_QUEUE);
        let accepted = matches!(origin, Origin::Accepted(..));
        let held = Arc::new(AtomicBool::new(false));
        // tokio::spawn never polls the task inline, so the table lock held
        // here cannot deadlock with the task's own cleanup.
        let task = self
            .runtime
            .spawn(run_connection(
                self.clone(),
                id,
                remote,
                origin,
                writes,
                inbound,
                held.clone(),
            ))
            .abort_handle();
        table.conns.insert(
            id,
            Conn {
                remote,
                writer: writer.clone(),
                task,
                accepted,
                held,
            },
        );
        if accepted {
            table.accepted += 1;
            *table.accepted_from.entry(remote.ip()).or_default() += 1;
        }
        table.by_remote.insert(remote, id);
        Ok(writer)
    }

    /// Counts a failure, logs it (the 1st, 2nd, 4th, 8th … at warn, the
    /// rest at debug: visible, never a flood) and hands it to the core.
    fn report(&self, failure: SendFailure) {
        let n = self.send_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let SendFailure {
            target,
            stage,
            error,
        } = &failure;
        if n.is_power_of_two() {
            warn!(?target, ?stage, %error, failures_so_far = n, "SIP message not delivered");
        } else {
            debug!(?target, ?stage, %error, "SIP message not delivered");
        }
        if let Err(TrySendError::Full(_)) = self.failures.try_send(failure) {
            debug!("send failure queue full; failure only counted");
        }
    }

    fn forget_connection(&self, id: ConnId, remote: SocketAddr) {
        let mut table = self.table();
        if table.conns.remove(&id).is_some_and(|conn| conn.accepted) {
            table.accepted = table.accepted.saturating_sub(1);
            if let Some(n) = table.accepted_from.get_mut(&remote.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    table.accepted_from.remove(&remote.ip());
                }
            }
        }
        if table.by_remote.get(&remote) == Some(&id) {
            table.by_remote.remove(&remote);
            // Another connection to the same peer may remain reusable.
            let other = table
                .conns
                .iter()
                .filter(|(_, conn)| conn.remote == remote)
                .map(|(other, _)| *other)
                .max();
            if let Some(other) = other {
                table.by_remote.insert(remote, other);
            }
        }
    }
}

/// Removes a connection from the table when its task ends, however it ends
/// (return, IO error or abort).
struct ConnGuard {
    inner: Arc<Inner>,
    id: ConnId,
    remote: SocketAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.inner.forget_connection(self.id, self.remote);
    }
}

async fn udp_receive_loop(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    max_message_size: usize,
    edge: Arc<Edge>,
) {
    // One byte over the limit detects oversize datagrams (the kernel
    // truncates to the buffer); no datagram exceeds 65,535 bytes.
    let mut buf = vec![0u8; max_message_size.saturating_add(1).min(65_536)];
    loop {
        let (len, remote) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors for an earlier send (port unreachable…) surface
            // here on some systems; they concern that peer, not this loop.
            Err(e) if is_peer_error(&e) => {
                debug!(error = %e, "UDP receive error from an earlier send, ignored");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "UDP receive failed");
                sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        if datagram.is_empty() || framing::is_keepalive(datagram) {
            continue;
        }
        if len > max_message_size {
            debug!(%remote, max_message_size, "oversize UDP datagram dropped");
            continue;
        }
        let queued = inbound.max_capacity() - inbound.capacity();
        let role = match edge.screen(datagram, remote, edge.classify(remote.ip()), queued) {
            Verdict::Queue(role) => role,
            Verdict::Answer(answer) => {
                if let Err(e) = socket.try_send_to(&answer, remote) {
                    debug!(%remote, error = %e, "stateless answer not sent");
                }
                continue;
            }
            Verdict::Drop => continue,
        };
        let message = Inbound {
            data: Bytes::copy_from_slice(datagram),
            source: Source {
                remote,
                local,
                transport: TransportKind::Udp,
            },
            role,
            received: std::time::Instant::now(),
        };
        match inbound.try_send(message) {
            Ok(()) => {}
            // Logged at 1, 2, 4, 8… drops: visible, never a log flood.
            Err(TrySendError::Full(_)) => edge.count(DropReason::QueueFull, remote),
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn tcp_accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                // Checked before the connection gets a task or a buffer;
                // dropping the stream closes it.
                if !inner.edge.classify(remote.ip()).is_allowed() {
                    inner.edge.count(DropReason::OutsiderTcp, remote);
                    continue;
                }
                let mut table = inner.table();
                if table.accepted >= inner.edge.settings.max_tcp_connections {
                    drop(table);
                    inner.edge.count(DropReason::TcpTotalCap, remote);
                    continue;
                }
                let from_source = table.accepted_from.get(&remote.ip()).copied().unwrap_or(0);
                if from_source >= inner.edge.settings.max_tcp_per_source {
                    drop(table);
                    inner.edge.count(DropReason::TcpSourceCap, remote);
                    continue;
                }
                if inner
                    .open_connection(&mut table, remote, Origin::Accepted(stream))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "TCP accept failed");
                sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

async fn run_connection(
    inner: Arc<Inner>,
    id: ConnId,
    remote: SocketAddr,
    origin: Origin,
    mut writes: mpsc::Receiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
    held: Arc<AtomicBool>,
) {
    let _guard = ConnGuard {
        inner: inner.clone(),
        id,
        remote,
    };
    let failed = |stage, error| SendFailure {
        target: Target::Tcp {
            conn: Some(id),
            remote,
        },
        stage,
        error,
    };
    let origin_kind = match origin {
        Origin::Accepted(_) => OriginKind::Accepted,
        Origin::Outbound => OriginKind::Outbound,
    };
    let stream = match origin {
        Origin::Accepted(stream) => stream,
        Origin::Outbound => match timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                end_connection(
                    &inner,
                    id,
                    remote,
                    &mut writes,
                    Some(failed(FailedStage::Connect, e)),
                );
                return;
            }
            Err(_) => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out");
                end_connection(
                    &inner,
                    id,
                    remote,
                    &mut writes,
                    Some(failed(FailedStage::Connect, e)),
                );
                return;
            }
        },
    };
    // SIP messages are complete units: do not let Nagle hold them back.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(conn = id.0, error = %e, "TCP_NODELAY not set");
    }
    let ours = matches!(origin_kind, OriginKind::Outbound);
    if ours && let Err(e) = watch_connection(&stream) {
        debug!(conn = id.0, error = %e, "TCP keepalive or user timeout not set");
    }
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => {
            debug!(conn = id.0, error = %e, "connection gone before it started");
            end_connection(&inner, id, remote, &mut writes, None);
            return;
        }
    };
    debug!(conn = id.0, %remote, %local, "TCP connection open");
    let source = Source {
        remote,
        local,
        transport: TransportKind::Tcp(id),
    };
    let limits = Limits {
        max_message_size: inner.max_message_size,
        idle_timeout: inner.tcp_idle_timeout,
        ping_interval: ours
            .then(|| Duration::from_millis(inner.ping_interval_ms.load(Ordering::Relaxed))),
    };
    // A connection we opened is to an address we chose to talk to: its
    // answers and in-dialog requests come in even when it is in no list
    // (it still cannot start a call).
    let role = match inner.edge.classify(remote.ip()) {
        Role::Outsider => Role::Agent,
        role => role,
    };
    let peer = Peer {
        source,
        role,
        edge: &inner.edge,
        held: &held,
    };
    let failure = match serve_connection(stream, peer, limits, &mut writes, &inbound).await {
        Ok(Closed::ByPeer) => {
            debug!(conn = id.0, %remote, "TCP connection closed by peer");
            None
        }
        Ok(Closed::Idle) => {
            debug!(conn = id.0, %remote, "idle TCP connection closed");
            None
        }
        Ok(Closed::ShutDown) => return,
        Ok(Closed::Framing(e)) => {
            info!(conn = id.0, %remote, error = %e, "TCP framing error, connection closed");
            None
        }
        Ok(Closed::WriteFailed(e)) => Some(failed(FailedStage::Write, e)),
        // Our requests went out on it; their answers cannot come back.
        Err(e) if ours => Some(failed(FailedStage::Broken, e)),
        Err(e) => {
            debug!(conn = id.0, %remote, error = %e, "TCP connection failed");
            None
        }
    };
    end_connection(&inner, id, remote, &mut writes, failure);
}

/// A connection's task ends: no more messages are queued on it, and those
/// still queued are a failure too (RFC 3261 §18.4: never dropped silently).
/// The connection leaves the table before the failure is reported, so what
/// the core sends after hearing of it opens a new connection.
fn end_connection(
    inner: &Inner,
    id: ConnId,
    remote: SocketAddr,
    writes: &mut mpsc::Receiver<Bytes>,
    failure: Option<SendFailure>,
) {
    inner.forget_connection(id, remote);
    writes.close();
    let mut unsent = 0u64;
    while writes.try_recv().is_ok() {
        unsent += 1;
    }
    let failure = failure.or_else(|| {
        (unsent > 0).then(|| SendFailure {
            target: Target::Tcp {
                conn: Some(id),
                remote,
            },
            stage: FailedStage::Write,
            error: io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection ended with messages unwritten",
            ),
        })
    });
    if let Some(failure) = failure {
        // The failure counts once; the other unsent messages each too.
        inner
            .send_failures
            .fetch_add(unsent.saturating_sub(1), Ordering::Relaxed);
        inner.report(failure);
    }
}

/// Who is on the other end of a connection, and the checks for it.
struct Peer<'a> {
    source: Source,
    role: Role,
    edge: &'a Edge,
    /// Set while the connection carries a registered phone's binding.
    held: &'a AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_message_size: usize,
    idle_timeout: Duration,
    /// RFC 5626 CRLF pings, about this often (connections we open).
    ping_interval: Option<Duration>,
}

/// Whether we opened a connection or accepted it.
#[derive(Debug, Clone, Copy)]
enum OriginKind {
    Accepted,
    Outbound,
}

/// TCP keepalive and `TCP_USER_TIMEOUT` on a connection we opened, so a
/// peer that vanished (power cut, NAT state lost) breaks the connection
/// within about a minute instead of the kernel's default two hours (idle)
/// or fifteen minutes (unacknowledged data).
fn watch_connection(stream: &TcpStream) -> io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_PROBES);
    sock.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))?;
    Ok(())
}

/// When the next CRLF ping goes: 80–100 % of `interval` from now (RFC
/// 5626 §4.4.1), or never.
fn next_ping(interval: Option<Duration>) -> Instant {
    match interval {
        Some(interval) => Instant::now() + interval.mul_f64(0.8 + 0.2 * fastrand::f64()),
        // Far enough never to fire: a connection does not live this long.
        None => Instant::now() + Duration::from_secs(86_400 * 365),
    }
}

/// Reads, frames and forwards; writes queued messages and pongs. Ends on
/// close, idle timeout, framing error, shutdown or a write stalled for the
/// idle timeout.
async fn serve_connection(
    mut stream: TcpStream,
    peer: Peer<'_>,
    limits: Limits,
    writes: &mut mpsc::Receiver<Bytes>,
    inbound: &mpsc::Sender<Inbound>,
) -> io::Result<Closed> {
    let (mut reader, mut writer) = stream.split();
    let mut framer = StreamFramer::new(limits.max_message_size);
    let mut chunk = [0u8; TCP_READ_CHUNK];
    let idle = sleep_until(Instant::now() + limits.idle_timeout);
    tokio::pin!(idle);
    let ping = sleep_until(next_ping(limits.ping_interval));
    tokio::pin!(ping);
    loop {
        tokio::select! {
            read = reader.read(&mut chunk) => {
                let len = read?;
                let Some(bytes) = chunk.get(..len).filter(|b| !b.is_empty()) else {
                    return Ok(Closed::ByPeer);
                };
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                framer.push(bytes);
                while let Some(frame) = framer.next() {
                    match frame {
                        Ok(Frame::Message(data)) => {
                            let queued = inbound.max_capacity() - inbound.capacity();
                            let role = match peer.edge.screen(&data, peer.source.remote, peer.role, queued) {
                                Verdict::Queue(role) => role,
                                Verdict::Answer(answer) => {
                                    write_bounded(&mut writer, &answer, limits.idle_timeout).await?;
                                    continue;
                                }
                                Verdict::Drop => continue,
                            };
                            let message = Inbound {
                                data,
                                source: peer.source,
                                role,
                                received: std::time::Instant::now(),
                            };
                            // Back-pressure: wait for the core, stalling the peer.
                            if inbound.send(message).await.is_err() {
                                return Ok(Closed::ShutDown);
                            }
                        }
                        // RFC 5626 §4.4.1: answer a double-CRLF ping with a CRLF pong.
                        Ok(Frame::KeepAlive(KeepAliveKind::Ping)) => {
                            write_bounded(&mut writer, framing::PONG, limits.idle_timeout).await?;
                        }
                        // RFC 3261 §7.5: stray CRLFs are ignored.
                        Ok(Frame::KeepAlive(KeepAliveKind::Pong)) => {}
                        Err(e) => return Ok(Closed::Framing(e)),
                    }
                }
            }
            queued = writes.recv() => {
                let Some(data) = queued else {
                    return Ok(Closed::ShutDown);
                };
                if let Err(e) = write_bounded(&mut writer, &data, limits.idle_timeout).await {
                    return Ok(Closed::WriteFailed(e));
                }
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
            }
            () = &mut idle => {
                // A registered phone's connection is how it is reached:
                // quiet is normal (its refreshes may be an hour apart).
                if peer.held.load(Ordering::Relaxed) {
                    idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                    continue;
                }
                return Ok(Closed::Idle);
            }
            // RFC 5626 §4.4.1: keeps NATs and firewalls on the way open;
            // not traffic for the idle timeout (the pong is).
            () = &mut ping => {
                if let Err(e) = write_bounded(&mut writer, PING, limits.idle_timeout).await {
                    return Ok(Closed::WriteFailed(e));
                }
                ping.as_mut().reset(next_ping(limits.ping_interval));
            }
        }
    }
}

/// Writes all of `data`, failing if the peer has not taken it within `limit`
/// (a peer that stops reading must not pin the connection forever).
async fn write_bounded(
    writer: &mut (impl AsyncWriteExt + Unpin),
    data: &[u8],
    limit: Duration,
) -> io::Result<()> {
    match timeout(limit, writer.write_all(data)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer stopped reading",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EdgeSettings {
        let trunks = Acl::parse(&["127.0.0.1"]).expect("acl");
        let agents = Acl::parse(&["127.0.0.7"]).expect("acl");
        EdgeSettings {
            sources: Sources::new(trunks, agents),
            action: AclAction::Reject,
            max_tcp_connections: 8,
            max_tcp_per_source: 2,
            max_messages_per_source: 1000,
            max_stateless_per_s: 100,
            overload_queue: 100,
            overload_delay: Duration::from_millis(200),
            retry_after_s: 7,
            user_agent: "callbackd-test".into(),
        }
    }

    fn request(method: &str, to_tag: &str) -> Vec<u8> {
        format!(
            "{method} sip:100@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1\r\n\
             From: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:100@127.0.0.1>{to_tag}\r\n\
             Call-ID: c1@test\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn answer(verdict: Verdict) -> String {
        match verdict {
            Verdict::Answer(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Verdict::Queue(role) => panic!("queued as {role:?}"),
            Verdict::Drop => panic!("dropped"),
        }
    }

    const TRUNK: &str = "127.0.0.1:5099";

    #[test]
    fn new_invites_get_503_with_retry_after_when_the_queue_is_deep() {
        let edge = Edge::new(settings());
        let from: SocketAddr = TRUNK.parse().expect("addr");
        let invite = request("INVITE", "");
        assert!(matches!(
            edge.screen(&invite, from, Role::Trunk, 99),
            Verdict::Queue(Role::Trunk)
        ));
        let text = answer(edge.screen(&invite, from, Role::Trunk, 100));
        assert!(text.starts_with("SIP/2.0 503 "), "{text}");
        assert!(text.contains("\r\nRetry-After: 7\r\n"), "{text}");
        assert!(text.contains("To: <sip:100@127.0.0.1>;tag="), "{text}");
        // Calls in progress go on: in-dialog requests and other methods
        // are queued.
        let reinvite = request("INVITE", ";tag=ours");
        assert!(matches!(
            edge.screen(&reinvite, from, Role::Trunk, 1000),
            Verdict::Queue(_)
        ));
        for method in ["BYE", "ACK", "OPTIONS", "INFO"] {
            assert!(
                matches!(
                    edge.screen(&request(method, ";tag=x"), from, Role::Trunk, 1000),
                    Verdict::Queue(_)
                ),
                "{method}"
            );
        }
        let totals = edge.totals();
        assert_eq!(totals.overload_503, 1);
        assert_eq!(totals.dropped(DropReason::Overload), 1);
    }

    #[test]
    fn a_core_falling_behind_turns_new_invites_away_until_it_catches_up() {
        let edge = Edge::new(settings());
        let from: SocketAddr = TRUNK.parse().expect("addr");
        let invite = request("INVITE", "");
        edge.report_wait(Duration::from_millis(250));
        assert!(edge.totals().overloaded);
        assert!(answer(edge.screen(&invite, from, Role::Trunk, 0)).starts_with("SIP/2.0 503 "));
        // Between half the delay and the delay: still behind (hysteresis).
        edge.report_wait(Duration::from_millis(150));
        assert!(edge.totals().overloaded);
        edge.report_wait(Duration::from_millis(20));
        assert!(!edge.totals().overloaded);
        assert!(matches!(
            edge.screen(&invite, from, Role::Trunk, 0),
            Verdict::Queue(_)
        ));
    }

    #[test]
    fn outsiders_get_403_within_the_stateless_budget_and_acks_nothing() {
        let mut s = settings();
        s.max_stateless_per_s = 2;
        let edge = Edge::new(s);
        let from: SocketAddr = "127.0.0.2:5099".parse().expect("addr");
        let role = edge.classify(from.ip());
        assert_eq!(role, Role::Outsider);
        let text = answer(edge.screen(&request("OPTIONS", ""), from, role, 0));
        assert!(text.starts_with("SIP/2.0 403 "), "{text}");
        assert!(matches!(
            edge.screen(&request("ACK", ";tag=x"), from, role, 0),
            Verdict::Drop
        ));
        // The budget: 2 a second (a burst of 2), then only drops.
        let _ = edge.screen(&request("OPTIONS", ""), from, role, 0);
        assert!(matches!(
            edge.screen(&request("OPTIONS", ""), from, role, 0),
            Verdict::Drop
        ));
        let totals = edge.totals();
        assert_eq!(totals.rejected_403, 2);
        assert_eq!(totals.dropped(DropReason::Outsider), 4);
        assert_eq!(totals.dropped(DropReason::StatelessCap), 1);
        // Garbage from an outsider is never parsed into an answer.
        assert!(matches!(
            edge.screen(b"\x00\x01garbage", from, role, 0),
            Verdict::Drop
        ));
    }

    /// Connections we open: keepalive probes after 30 s idle, every 10 s,
    /// three of them; unacknowledged data breaks it after 32 s.
    #[tokio::test]
    async fn connections_we_open_are_watched_by_keepalive_and_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let sock = socket2::SockRef::from(&stream);
        assert!(!sock.keepalive().expect("SO_KEEPALIVE"), "off by default");
        watch_connection(&stream).expect("options set");
        assert!(sock.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(sock.tcp_keepalive_time().expect("idle"), TCP_KEEPALIVE_IDLE);
        assert_eq!(
            sock.tcp_keepalive_interval().expect("interval"),
            TCP_KEEPALIVE_INTERVAL
        );
        assert_eq!(
            sock.tcp_keepalive_retries().expect("probes"),
            TCP_KEEPALIVE_PROBES
        );
        assert_eq!(
            sock.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(TCP_USER_TIMEOUT)
        );
    }

    #[test]
    fn resolved_trunk_targets_become_trunks_and_agents_may_not_call() {
        let edge = Edge::new(settings());
        assert_eq!(
            edge.classify("127.0.0.5".parse().expect("ip")),
            Role::Outsider
        );
        edge.set_trunk_targets(["127.0.0.5".parse().expect("ip")]);
        assert_eq!(edge.classify("127.0.0.5".parse().expect("ip")), Role::Trunk);
        assert_eq!(edge.totals().trunk_targets, 1);
        assert_eq!(edge.classify("127.0.0.7".parse().expect("ip")), Role::Agent);
        assert!(!Role::Agent.may_call());
    }
}
