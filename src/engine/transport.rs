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
//! Back-pressure: when the inbound queue is full, UDP datagrams are dropped
//! (the peer retransmits, RFC 3261 §17) and TCP readers wait, which in turn
//! stalls the peer through TCP flow control.
//!
//! Framing errors on a connection (message too large, missing or invalid
//! Content-Length) close it after a log line. No 400/513 response is sent on
//! the way out: that would need a SIP parser here, and a peer that breaks
//! framing cannot be trusted to be in sync to read it anyway. The source
//! address ACL is the endpoint's business, not this module's.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{debug, info, warn};

use crate::sip::framing::{self, Frame, FramingError, KeepAliveKind, StreamFramer};

/// Capacity of the queue of received messages towards the SIP core.
pub const INBOUND_QUEUE: usize = 4096;
/// Capacity of each TCP connection's queue of messages to write.
pub const TCP_WRITE_QUEUE: usize = 256;
/// How long opening an outbound TCP connection may take.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The SIP sockets. Dropping it shuts it down (see [`Transport::shutdown`]).
#[derive(Debug)]
pub struct Transport {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
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
        let udp = match udp {
            Some(addr) => Some(Arc::new(UdpSocket::bind(addr).await?)),
            None => None,
        };
        let listener = match tcp {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let inner = Arc::new(Inner {
            local_udp: udp.as_ref().map(|s| s.local_addr()).transpose()?,
            local_tcp: listener.as_ref().map(|l| l.local_addr()).transpose()?,
            udp: udp.clone(),
            max_message_size,
            tcp_idle_timeout,
            udp_pending: AtomicUsize::new(0),
            runtime: tokio::runtime::Handle::current(),
            table: Mutex::new(Table {
                inbound: Some(inbound_tx.clone()),
                next_id: 1,
                conns: HashMap::new(),
                by_remote: HashMap::new(),
            }),
        });
        let mut tasks = Vec::new();
        if let (Some(socket), Some(local)) = (udp, inner.local_udp) {
            tasks.push(tokio::spawn(udp_receive_loop(
                socket,
                local,
                inbound_tx,
                max_message_size,
            )));
        }
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(tcp_accept_loop(inner.clone(), listener)));
        }
        Ok((Transport { inner, tasks }, inbound_rx))
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
    /// or sent; a TCP connection that fails later (connect or write) is only
    /// logged, and the transaction layer's timers notice the loss.
    pub fn send(&self, target: Target, data: Bytes) -> Result<(), SendError> {
        match target {
            Target::Udp(remote) => self.send_udp(remote, data),
            Target::Tcp { conn, remote } => self.send_tcp(conn, remote, data),
        }
    }

    /// Open TCP connections (accepted, connecting or connected).
    pub fn connection_count(&self) -> usize {
        self.inner.table().conns.len()
    }

    /// Stops every task and closes every socket and connection; queued
    /// messages are dropped. Once the tasks are gone the inbound queue
    /// reports its end (`recv()` returns `None`). Idempotent.
    pub fn shutdown(&self) {
        let conns = {
            let mut table = self.inner.table();
            table.inbound = None;
            table.by_remote.clear();
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
                    if let Err(e) = socket.send_to(&data, remote).await {
                        debug!(%remote, error = %e, "UDP send failed");
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
    table: Mutex<Table>,
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
}

#[derive(Debug)]
struct Conn {
    remote: SocketAddr,
    writer: mpsc::Sender<Bytes>,
    task: AbortHandle,
}

/// How a connection task gets its stream.
enum Origin {
    Accepted(TcpStream),
    Outbound,
}

/// Why a connection task ended without an IO error.
#[derive(Debug)]
enum Closed {
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
            ))
            .abort_handle();
        table.conns.insert(
            id,
            Conn {
                remote,
                writer: writer.clone(),
                task,
            },
        );
        table.by_remote.insert(remote, id);
        Ok(writer)
    }

    fn forget_connection(&self, id: ConnId, remote: SocketAddr) {
        let mut table = self.table();
        table.conns.remove(&id);
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
) {
    // One byte over the limit detects oversize datagrams (the kernel
    // truncates to the buffer); no datagram exceeds 65,535 bytes.
    let mut buf = vec![0u8; max_message_size.saturating_add(1).min(65_536)];
    let mut dropped: u64 = 0;
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
        let message = Inbound {
            data: Bytes::copy_from_slice(datagram),
            source: Source {
                remote,
                local,
                transport: TransportKind::Udp,
            },
        };
        match inbound.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                dropped += 1;
                // Logged at 1, 2, 4, 8… drops: visible, never a log flood.
                if dropped.is_power_of_two() {
                    warn!(dropped, "inbound queue full, UDP datagrams dropped");
                }
            }
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
                let mut table = inner.table();
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
) {
    let _guard = ConnGuard {
        inner: inner.clone(),
        id,
        remote,
    };
    let stream = match origin {
        Origin::Accepted(stream) => stream,
        Origin::Outbound => match timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                warn!(conn = id.0, %remote, error = %e, "TCP connect failed, queued messages dropped");
                return;
            }
            Err(_) => {
                warn!(conn = id.0, %remote, "TCP connect timed out, queued messages dropped");
                return;
            }
        },
    };
    // SIP messages are complete units: do not let Nagle hold them back.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(conn = id.0, error = %e, "TCP_NODELAY not set");
    }
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => {
            debug!(conn = id.0, error = %e, "connection gone before it started");
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
    };
    match serve_connection(stream, source, limits, &mut writes, &inbound).await {
        Ok(Closed::ByPeer) => debug!(conn = id.0, %remote, "TCP connection closed by peer"),
        Ok(Closed::Idle) => debug!(conn = id.0, %remote, "idle TCP connection closed"),
        Ok(Closed::ShutDown) => {}
        Ok(Closed::Framing(e)) => {
            info!(conn = id.0, %remote, error = %e, "TCP framing error, connection closed");
        }
        Err(e) => debug!(conn = id.0, %remote, error = %e, "TCP connection failed"),
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_message_size: usize,
    idle_timeout: Duration,
}

/// Reads, frames and forwards; writes queued messages and pongs. Ends on
/// close, idle timeout, framing error, shutdown or a write stalled for the
/// idle timeout.
async fn serve_connection(
    mut stream: TcpStream,
    source: Source,
    limits: Limits,
    writes: &mut mpsc::Receiver<Bytes>,
    inbound: &mpsc::Sender<Inbound>,
) -> io::Result<Closed> {
    let (mut reader, mut writer) = stream.split();
    let mut framer = StreamFramer::new(limits.max_message_size);
    let mut chunk = [0u8; TCP_READ_CHUNK];
    let idle = sleep_until(Instant::now() + limits.idle_timeout);
    tokio::pin!(idle);
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
                            // Back-pressure: wait for the core, stalling the peer.
                            if inbound.send(Inbound { data, source }).await.is_err() {
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
                write_bounded(&mut writer, &data, limits.idle_timeout).await?;
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
            }
            () = &mut idle => return Ok(Closed::Idle),
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
