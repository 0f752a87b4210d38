//! The tokio shell: sockets, threads, clocks, around the sans-IO controller.
//!
//! ```text
//!   transport (UDP/TCP tasks) ──Inbound──▶ ┌──────────── core task ──────────────┐
//!   transport ◀──────────Transmit───────── │ b2bua::Controller (sans-IO)         │
//!   media thread ◀──Command (Add: ports ── │   poll_transmit / poll_media /      │
//!        bound here first; Play, Bridge…)  │   poll_store / poll_timeout         │
//!   media thread ───MediaEvent (digits…)─▶ │ one sleep: min(poll_timeout, stop)  │
//!   store thread ◀──StoreRequest────────── │ the clocks: now + a wall reading    │
//!   store thread ───StoreReply──────────▶  │   before every input                │
//!   admin API ──Control (stats, gates…)─▶  └─────────────────────────────────────┘
//! ```
//!
//! The core task owns the controller, and so every call's state; nothing is
//! shared behind a lock. It decides nothing itself: it reads an input, hands
//! it to the controller, and carries out what the controller asks — sends,
//! media commands (binding a new stream's RTP/RTCP ports, then telling the
//! controller whether that worked), store requests — until it asks for
//! nothing more. The media thread owns every RTP socket (see [`media`]), the
//! store thread the callback store (see [`store`]).

pub mod media;
pub mod organisation;
pub mod resolve;
mod send_batch;
pub mod store;
pub mod transport;
pub mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::acd::agents::AgentError;
use crate::b2bua::agents::AgentStatus;
use crate::b2bua::media::{MediaCommand, MediaEvent};
use crate::b2bua::telemetry::{Histogram, QueueEcbt};
use crate::b2bua::{Controller, Setup, WallClock};
use crate::callback::hours::Gates;
use crate::callback::store::{DEFAULT_LEASE, Recovery, SqliteStore};
use crate::callback::trunk::{
    Target as TrunkTarget, TerminationHost, TrunkSettings, TrunkTransport,
};
use crate::config::{Settings, Transport as ConfiguredTransport};
use crate::media::g711::Law;
use crate::media::prompt::{PromptError, PromptLibrary, Ptime};
use crate::sip::endpoint::{Destination, Flow, FlowTransport};
use transport::{
    Edge, EdgeSettings, EdgeTotals, Inbound, SendError, SendFailure, Target, Transport,
    TransportKind,
};

pub use crate::b2bua::{Stats as EngineStats, Totals as EngineTotals};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A prompt file could not be loaded.
    #[error("prompts: {0}")]
    Prompts(#[from] PromptError),
    /// A socket could not be bound.
    #[error("cannot bind SIP sockets on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The media thread could not start.
    #[error("cannot start the media thread: {0}")]
    Media(std::io::Error),
    /// The callback store could not be opened.
    #[error("callback store: {0}")]
    Store(#[from] crate::callback::store::StoreError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The stored organisation cannot be used.
    #[error("stored organisation (version {version}): {detail}")]
    Organisation {
        /// Its version.
        version: u64,
        /// Why (the field that fails, for a document this build refuses).
        detail: String,
    },
}

/// One consistent snapshot of a running engine, taken by the core task
/// (the media and store counters are as those threads last published
/// them).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStatus {
    /// Live state.
    pub stats: EngineStats,
    /// The registration and launch switches in effect.
    pub gates: Gates,
    /// Shutting down: calls are being hung up, new ones refused.
    pub draining: bool,
    /// Totals since start-up.
    pub totals: EngineTotals,
    /// The checks at the sockets: drops by reason, caps, overload.
    pub edge: EdgeTotals,
    /// Every queue's ECBT estimator now.
    pub queues: Vec<QueueEcbt>,
    /// The media thread's packet counters, loss and jitter.
    pub media: media::MediaTotals,
    /// The store thread's commit latencies, by request kind.
    pub commits: std::collections::BTreeMap<&'static str, Histogram>,
    /// Whether the SIP sockets are bound (UDP, TCP or both, as configured).
    pub sip_bound: bool,
}

/// A running engine.
pub struct EngineHandle {
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

/// A cloneable remote control of a running engine (the admin API holds
/// one). Every call is a message to the core task, which owns all state, and
/// a oneshot reply; `None` means the engine has stopped. Holding one does
/// not keep the engine running past [`EngineHandle::shutdown`].
#[derive(Debug, Clone)]
pub struct EngineControl {
    control: mpsc::Sender<Control>,
}

#[derive(Debug)]
enum Control {
    Stats(oneshot::Sender<EngineStats>),
    Status(oneshot::Sender<EngineStatus>),
    Agents(oneshot::Sender<Vec<AgentStatus>>),
    SetGates(Gates),
    /// The engine's settings, reloaded (SIGHUP), with their prompts.
    Reload(Box<Settings>, Arc<PromptLibrary>, oneshot::Sender<()>),
    /// A new organisation (the admin API changed it): applied, then acked.
    ApplySettings(
        Box<Settings>,
        Option<Arc<PromptLibrary>>,
        oneshot::Sender<()>,
    ),
    SetPaused {
        agent: String,
        paused: bool,
        reply: oneshot::Sender<Result<AgentStatus, AgentError>>,
    },
    /// Drain for up to the grace time, then hang up and stop.
    Drain(Duration),
    Shutdown,
}

impl EngineControl {
    /// Current counters.
    pub async fn stats(&self) -> Option<EngineStats> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Counters, gates, draining flag and totals in one snapshot.
    pub async fn status(&self) -> Option<EngineStatus> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// The registration and launch switches in effect.
    pub async fn gates(&self) -> Option<Gates> {
        self.status().await.map(|s| s.gates)
    }

    /// Every configured agent with its state and whether it can be called
    /// (static, or registered now), in id order.
    pub async fn agents(&self) -> Option<Vec<AgentStatus>> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::Agents(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Switches callback registration and launching at run time and returns
    /// the gates in effect afterwards (the control channel is in order, so
    /// this change or a later one).
    pub async fn set_gates(&self, gates: Gates) -> Option<Gates> {
        self.control.send(Control::SetGates(gates)).await.ok()?;
        self.gates().await
    }

    /// Takes the engine's settings of `settings` again — the allow-lists
    /// (signalling, media), the trunk (resolved again) and the prompts
    /// (loaded again from their files first) — for what comes next; calls
    /// in progress go on. The organisation is not touched. Fails, keeping
    /// the running settings, when a prompt file cannot be loaded or the
    /// engine has stopped.
    pub async fn reload(&self, settings: Settings) -> Result<(), String> {
        let (settings, prompts) = tokio::task::spawn_blocking(move || {
            let prompts = load_prompts(&settings);
            (settings, prompts)
        })
        .await
        .map_err(|e| format!("loading prompts failed: {e}"))?;
        let prompts = prompts.map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Reload(Box::new(settings), Arc::new(prompts), tx))
            .await
            .map_err(|_| "the engine has stopped".to_owned())?;
        rx.await.map_err(|_| "the engine has stopped".to_owned())
    }

    /// Applies the organisation of `settings` (see
    /// [`Controller::apply_settings`]); true once the engine has taken it,
    /// false when it has stopped. When its missed-call rules name prompts
    /// of their own, the prompts are loaded again first (a file that cannot
    /// be loaded keeps the running prompts and is logged: the files were
    /// checked to exist by [`Settings::with_organisation`]).
    pub async fn apply_settings(&self, settings: Settings) -> bool {
        let (settings, prompts) = if settings.prompt_files().len()
            > crate::config::PROMPT_NAMES.len()
        {
            let loaded = tokio::task::spawn_blocking(move || {
                let prompts = load_prompts(&settings);
                (settings, prompts)
            })
            .await;
            let Ok((settings, prompts)) = loaded else {
                return false;
            };
            let prompts = prompts
                .map_err(|e| tracing::warn!(error = %e, "rule prompts not loaded; keeping the running prompts"))
                .ok()
                .map(Arc::new);
            (settings, prompts)
        } else {
            (settings, None)
        };
        let (tx, rx) = oneshot::channel();
        if self
            .control
            .send(Control::ApplySettings(Box::new(settings), prompts, tx))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.is_ok()
    }

    /// Pauses an agent (no callback or live caller is offered to it) or
    /// makes it available again, and returns its state afterwards. A
    /// ringing or talking agent cannot be paused ([`AgentError::Busy`]):
    /// pause it after the call. `None`: the engine has stopped.
    pub async fn set_agent_paused(
        &self,
        agent: &str,
        paused: bool,
    ) -> Option<Result<AgentStatus, AgentError>> {
        let (reply, rx) = oneshot::channel();
        let agent = agent.to_owned();
        self.control
            .send(Control::SetPaused {
                agent,
                paused,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Starts a graceful stop (SIGTERM): OPTIONS and new INVITEs get 503 and
    /// no callback is launched, while calls in progress go on for up to
    /// `grace`; then the rest are hung up and the engine stops (at once when
    /// the last call ends). Calling it again can only shorten the grace; a
    /// zero `grace` hangs up now. False when the engine has stopped.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.control.send(Control::Drain(grace)).await.is_ok()
    }
}

impl EngineHandle {
    /// The bound UDP address (useful with port 0).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Current counters.
    pub async fn stats(&self) -> Option<EngineStats> {
        self.control().stats().await
    }

    /// Counters, gates, draining flag and totals in one snapshot.
    pub async fn status(&self) -> Option<EngineStatus> {
        self.control().status().await
    }

    /// The registration and launch switches in effect.
    pub async fn gates(&self) -> Option<Gates> {
        self.control().gates().await
    }

    /// Every configured agent with its state and reachability.
    pub async fn agents(&self) -> Option<Vec<AgentStatus>> {
        self.control().agents().await
    }

    /// A cloneable remote control for other tasks (the admin API).
    pub fn control(&self) -> EngineControl {
        EngineControl {
            control: self.control.clone(),
        }
    }

    /// Switches callback registration and launching at run time (the
    /// configuration's `[org]` values apply at start).
    pub async fn set_gates(&self, gates: Gates) -> bool {
        self.control.send(Control::SetGates(gates)).await.is_ok()
    }

    /// Hangs up every call, waits briefly for the BYEs, and stops.
    pub async fn shutdown(self) {
        let _ = self.control.send(Control::Shutdown).await;
        let _ = self.task.await;
    }

    /// Waits until the engine stops by itself (it does not, unless shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Loads the prompts the configuration names, pre-encoded for both laws at
/// every packet time we may negotiate (10–60 ms).
pub fn load_prompts(settings: &Settings) -> Result<PromptLibrary, PromptError> {
    let mut library = PromptLibrary::load_files(settings.prompt_files())?;
    let ptimes: Vec<Ptime> = (1..=6).filter_map(|i| Ptime::from_ms(i * 10)).collect();
    library.prepare(&[Law::Ulaw, Law::Alaw], &ptimes);
    Ok(library)
}

/// Starts the engine: binds sockets, opens the callback store named by the
/// configuration, starts the media and store threads and the core. Only a
/// configuration that passed [`Config::check`](crate::config::Config::check)
/// is accepted.
pub async fn start(settings: Settings) -> Result<EngineHandle, EngineError> {
    let store = SqliteStore::open(settings.store_path())?;
    // A second connection for the reads calls wait on (see [`store`]).
    let reader = SqliteStore::open(settings.store_path())?;
    start_with_stores(settings, Box::new(store), Some(Box::new(reader))).await
}

/// [`start`] with a callback store of the caller's choosing (another
/// [`LaunchStore`](crate::callback::store::LaunchStore) implementation, or a test double
/// such as one whose commits fail).
pub async fn start_with_store(
    settings: Settings,
    store: Box<dyn crate::callback::store::LaunchStore>,
) -> Result<EngineHandle, EngineError> {
    start_with_stores(settings, store, None).await
}

/// [`start_with_store`] with a second connection to the same store for the
/// reads a call waits on, so they do not queue behind writes.
pub async fn start_with_stores(
    settings: Settings,
    store: Box<dyn crate::callback::store::LaunchStore>,
    reader: Option<Box<dyn crate::callback::store::LaunchStore>>,
) -> Result<EngineHandle, EngineError> {
    let started = Instant::now();
    // The binary raises the limit and refuses a `max_calls` over the
    // capacity before it gets here; an embedding program is told.
    if let Some(open_files) = open_files_limit() {
        match settings.check_capacity(open_files) {
            Ok(capacity) => info!(open_files, "{capacity}"),
            Err(e) => warn!("{e}"),
        }
    }
    let prompts = Arc::new(load_prompts(&settings)?);
    let sip = settings.sip();
    let udp = sip.serves(ConfiguredTransport::Udp).then_some(sip.bind);
    let tcp = sip.serves(ConfiguredTransport::Tcp).then_some(sip.bind);
    let edge = Arc::new(Edge::new(edge_settings(&settings)));
    let (transport, inbound) = Transport::bind_with_edge(
        udp,
        tcp,
        sip.max_message_size,
        sip.tcp_idle_timeout(),
        edge.clone(),
    )
    .await
    .map_err(|source| EngineError::Bind {
        addr: sip.bind,
        source,
    })?;
    let udp_addr = transport.local_udp_addr();
    let tcp_addr = transport.local_tcp_addr();
    let advertised_port = match (sip.advertised_port, udp_addr.or(tcp_addr)) {
        (Some(p), _) => p,
        // Bound to port 0 (tests): advertise the port we actually got.
        (None, Some(bound)) if sip.bind.port() == 0 => bound.port(),
        (None, _) => sip.advertised_port(),
    };
    let dns = dns_lookup(settings.trunk_dns_servers());
    let (trunk_targets, trunk_refresh) = resolve_trunk(dns.clone(), settings.trunk()).await;
    // The trunk's addresses may send (and answer) without being listed.
    edge.set_trunk_targets(trunk_targets.iter().map(|t| t.addr.ip()));
    let recordings_dir = settings.recordings_dir();
    if settings.queues().iter().any(|q| q.recording)
        && let Err(e) = std::fs::create_dir_all(&recordings_dir)
    {
        warn!(error = %e, "recordings directory cannot be created; recordings will fail");
    }
    let controller = Controller::new(
        &settings,
        Setup {
            prompts: prompts.clone(),
            advertised_port,
            trunk_targets,
            nonce_key: crate::b2bua::agents::random_nonce_key(),
            seed: fastrand::u64(..),
            clock: WallClock {
                instant: started,
                wall: jiff::Timestamp::now(),
            },
            recordings_dir,
        },
    );
    let (media_events_tx, media_events) = mpsc::unbounded_channel();
    let (media, _media_thread) = media::spawn(
        media::MediaConfig {
            acl: settings.acl().rtp_acl(),
            rtp_timeout: settings.rtp().rtp_timeout(),
        },
        prompts,
        media_events_tx,
    )
    .map_err(EngineError::Media)?;
    let store_path = settings.store_path();

    let mut store = store;
    // This engine claims callbacks as its node (host and SIP address: the
    // same after a restart, different for a second engine on the store),
    // under a lease the store thread renews at every poll.
    let node = node_id(udp_addr.or(tcp_addr));
    let lease = claim_lease(settings.callbacks().poll_interval());
    store.set_claimant(&node, lease);
    info!(%node, lease_s = lease.as_secs(), "claiming callbacks as");
    // Issue 4 point 8: a callback that was dialing when the process died is
    // pending again, with the attempt recorded as interrupted, and is not
    // redialed before its old legs could have stopped ringing.
    // A store that cannot do this leaves those rows `dialing`: never due, so
    // never dialed twice; the IVR still works. Logged, not fatal.
    match store.recover_interrupted(
        jiff::Timestamp::now(),
        controller.longest_ring(),
        Recovery::AtStart,
    ) {
        Ok(recovered) if !recovered.is_empty() => {
            info!(
                count = recovered.len(),
                "interrupted callbacks are pending again"
            );
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "interrupted callbacks could not be recovered"),
    }
    let (store_replies_tx, store_replies) = mpsc::unbounded_channel();
    let (store, _store_thread) =
        store::spawn(store, reader, controller.longest_ring(), store_replies_tx)
            .map_err(EngineError::Thread)?;

    info!(
        udp = ?udp_addr,
        tcp = ?tcp_addr,
        rtp = %format!("{}:{}-{}", settings.rtp().bind_ip, settings.rtp().port_min, settings.rtp().port_max),
        sip_acl = %settings.acl().sip_acl(),
        store = %store_path.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "callbackd listening"
    );
    let (control, control_rx) = mpsc::channel(16);
    let (resolved_tx, resolved_rx) = mpsc::unbounded_channel();
    let (trunk_tx, trunk_rx) = mpsc::unbounded_channel();
    if let Some(refresh) = trunk_refresh {
        tokio::spawn(refresh.run(trunk_tx));
    }
    // Taken once, here: nobody else reads the transport's failures.
    let failures = transport
        .take_failures()
        .expect("a new transport still holds its failure queue");
    let core = Core {
        controller,
        failures,
        failed: Vec::new(),
        transport,
        media,
        store,
        rtp_bind: settings.rtp().bind_ip,
        inbound,
        media_events,
        store_replies,
        control: control_rx,
        dns,
        resolving: HashMap::new(),
        resolved_tx,
        resolved_rx,
        trunk_targets: trunk_rx,
        stopping: None,
    };
    let task = tokio::spawn(core.run());
    Ok(EngineHandle {
        udp: udp_addr,
        tcp: tcp_addr,
        control,
        task,
    })
}

/// The soft open-files limit of this process (`/proc/self/limits`), when
/// it can be read and is not unlimited.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The checks at the sockets, from `[acl]` and `[edge]`.
fn edge_settings(settings: &Settings) -> EdgeSettings {
    let acl = settings.acl();
    let edge = settings.edge();
    EdgeSettings {
        sources: acl.sources(),
        action: acl.action,
        max_tcp_connections: edge.max_tcp_connections as usize,
        max_tcp_per_source: edge.max_tcp_per_source as usize,
        max_messages_per_source: edge.max_messages_per_source,
        max_stateless_per_s: edge.max_stateless_per_s,
        overload_queue: edge.overload_queue as usize,
        overload_delay: Duration::from_millis(edge.overload_delay_ms),
        retry_after_s: edge.overload_retry_after_s,
        user_agent: settings.sip().user_agent.as_str().into(),
    }
}

/// This engine's name in the store's claims: the host name and the SIP
/// listener, e.g. `pbx1/127.0.0.1:5060`.
fn node_id(sip: Option<SocketAddr>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    match sip {
        Some(addr) => format!("{host}/{addr}"),
        None => host,
    }
}

/// How long a claim holds unrenewed: renewed at every poll, so three polls
/// may be missed (a slow disk) before another node takes the callback back;
/// never under [`DEFAULT_LEASE`].
fn claim_lease(poll_interval: Duration) -> Duration {
    DEFAULT_LEASE.max(poll_interval.saturating_mul(3))
}

/// How often a trunk termination that resolved is looked up again: DNS
/// changes (a carrier moving its SBCs) reach new calls within this, and
/// hickory's cache still honours the records' TTLs in between.
const TRUNK_REFRESH: Duration = Duration::from_secs(30);
/// How often a termination that did not resolve is tried again.
const TRUNK_RETRY: Duration = Duration::from_secs(5);

/// The DNS resolver of the trunk's termination and of next hops named by
/// host: `dns_servers` (`[trunk] dns_servers`), else the system's. `None`
/// when the system's configuration cannot be read: only IP literals work.
fn dns_lookup(dns_servers: &[SocketAddr]) -> Option<resolve::HickoryLookup> {
    let lookup = if dns_servers.is_empty() {
        resolve::HickoryLookup::from_system()
    } else {
        resolve::HickoryLookup::with_servers(dns_servers)
    };
    match lookup {
        Ok(lookup) => Some(lookup),
        Err(e) => {
            warn!(error = %e, "no DNS configuration; only IP literals can be dialled");
            None
        }
    }
}

/// Resolves the trunk's termination once at start (RFC 3263), and gives the
/// background refresh for a host name (an IP literal needs none).
async fn resolve_trunk(
    lookup: Option<resolve::HickoryLookup>,
    trunk: &TrunkSettings,
) -> (Vec<TrunkTarget>, Option<TrunkRefresh>) {
    let Some(lookup) = lookup else {
        return (Vec::new(), None);
    };
    let (targets, resolved) =
        match resolve::resolve_termination(&lookup, trunk, &mut fastrand::Rng::new()).await {
            Ok(list) => (list.targets().to_vec(), true),
            Err(e) => {
                warn!(error = %e, "trunk termination not resolved; trying again every 5 s");
                (Vec::new(), false)
            }
        };
    let refresh =
        matches!(trunk.termination.host, TerminationHost::Name(_)).then(|| TrunkRefresh {
            lookup,
            trunk: trunk.clone(),
            resolved,
            last: targets.clone(),
        });
    (targets, refresh)
}

/// Looks the trunk's termination up again, every [`TRUNK_REFRESH`] (every
/// [`TRUNK_RETRY`] while it does not resolve), and hands a changed target
/// list to the core. A failed lookup keeps the last good list.
struct TrunkRefresh {
    lookup: resolve::HickoryLookup,
    trunk: TrunkSettings,
    resolved: bool,
    last: Vec<TrunkTarget>,
}

impl TrunkRefresh {
    async fn run(mut self, tx: mpsc::UnboundedSender<Vec<TrunkTarget>>) {
        let mut rng = fastrand::Rng::new();
        loop {
            let wait = if self.resolved {
                TRUNK_REFRESH
            } else {
                TRUNK_RETRY
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = tx.closed() => return,
            }
            match resolve::resolve_termination(&self.lookup, &self.trunk, &mut rng).await {
                Ok(list) => {
                    let targets = list.targets().to_vec();
                    if !self.resolved || !same_targets(&targets, &self.last) {
                        info!(targets = targets.len(), "trunk termination resolved");
                        if tx.send(targets.clone()).is_err() {
                            return;
                        }
                    }
                    self.resolved = true;
                    self.last = targets;
                }
                Err(e) => {
                    warn!(error = %e, "trunk termination lookup failed; keeping the last targets");
                    self.resolved = !self.last.is_empty();
                }
            }
        }
    }
}

/// The same targets, whatever their (random, per-lookup) weighted order.
fn same_targets(a: &[TrunkTarget], b: &[TrunkTarget]) -> bool {
    a.len() == b.len() && a.iter().all(|t| b.contains(t))
}

/// The core task: the controller and what it asks for, carried out.
struct Core {
    controller: Controller,
    transport: Transport,
    media: media::MediaHandle,
    store: store::StoreHandle,
    /// Where RTP ports are bound.
    rtp_bind: std::net::IpAddr,
    inbound: mpsc::Receiver<Inbound>,
    media_events: mpsc::UnboundedReceiver<MediaEvent>,
    store_replies: mpsc::UnboundedReceiver<crate::b2bua::store::StoreReply>,
    control: mpsc::Receiver<Control>,
    /// What the transport accepted and then could not deliver.
    failures: mpsc::Receiver<SendFailure>,
    /// Destinations the transport refused during this flush, reported to
    /// the controller once its transmits are drained.
    failed: Vec<Destination>,
    /// The resolver of next hops named by host (`None`: no DNS).
    dns: Option<resolve::HickoryLookup>,
    /// Next hops being looked up, with the messages waiting for the answer:
    /// a retransmission (or another transaction to the same name) sent
    /// before the answer joins the lookup in flight instead of starting
    /// another.
    resolving: HashMap<Destination, Vec<bytes::Bytes>>,
    /// DNS results for requests to host names come back here.
    resolved_tx: mpsc::UnboundedSender<Resolved>,
    resolved_rx: mpsc::UnboundedReceiver<Resolved>,
    /// The trunk's termination, looked up again (see [`TrunkRefresh`]).
    trunk_targets: mpsc::UnboundedReceiver<Vec<TrunkTarget>>,
    /// Set when shutting down: stop once no call is left or at this instant.
    stopping: Option<Instant>,
}

/// The answer for a next hop named by host: the name, and where its
/// messages go now (the controller is told, so the transactions'
/// retransmissions go there without another lookup), or nothing (a
/// transport error for them, RFC 3263 §4.3).
type Resolved = (Destination, Option<Target>);

/// How many more inbound messages are taken before outputs are flushed.
const BATCH: usize = 64;

/// After the drain deadline, how long the hung-up calls' BYEs may take
/// before the engine stops regardless.
const BYE_GRACE: Duration = Duration::from_secs(3);

impl Core {
    /// See [`EngineControl::reload`]: the allow-lists at the socket, the
    /// controller's (signalling ACL, trunk, prompts, media plane), and the
    /// trunk's termination resolved again on a task of its own (its targets
    /// arrive as a refresh does; the old refresh task stops with its
    /// channel).
    fn reload(&mut self, now: Instant, settings: &Settings, prompts: Arc<PromptLibrary>) {
        self.transport.edge().set_sources(settings.acl().sources());
        self.controller.reload(now, settings, prompts);
        let (tx, rx) = mpsc::unbounded_channel();
        self.trunk_targets = rx;
        let dns = self.dns.clone();
        let trunk = settings.trunk().clone();
        tokio::spawn(async move {
            let (targets, refresh) = resolve_trunk(dns, &trunk).await;
            if tx.send(targets).is_err() {
                return;
            }
            if let Some(refresh) = refresh {
                refresh.run(tx).await;
            }
        });
    }

    /// Reads both clocks: `now` for the controller's timers, and the wall
    /// clock it follows from there.
    fn now(&mut self) -> Instant {
        let now = Instant::now();
        self.controller.set_wall_clock(WallClock {
            instant: now,
            wall: jiff::Timestamp::now(),
        });
        now
    }

    async fn run(mut self) {
        loop {
            // Each branch below reads the clock itself, after its wait: a
            // value from before the wait may be seconds old and would
            // back-date every timer started while handling the event (a BYE's
            // Timer E already due: sent twice).
            let deadline = [self.controller.poll_timeout(), self.stopping]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Not `biased`: tokio polls the arms from a random one each
            // time, so a flood on one input (SIP) cannot starve the others
            // (timers, media events, store replies); each arm takes a
            // bounded batch.
            tokio::select! {
                control = self.control.recv() => match control {
                    Some(Control::Stats(reply)) => {
                        let _ = reply.send(self.controller.stats());
                    }
                    Some(Control::Status(reply)) => {
                        let _ = reply.send(EngineStatus {
                            stats: self.controller.stats(),
                            gates: self.controller.gates(),
                            draining: self.controller.is_draining(),
                            totals: self.controller.totals(),
                            edge: EdgeTotals {
                                queue_depth: self.inbound.len() as u64,
                                ..self.transport.edge_totals()
                            },
                            queues: self.controller.queue_ecbts(),
                            media: self.media.totals(),
                            commits: self.store.commit_times(),
                            sip_bound: self.transport.local_udp_addr().is_some()
                                || self.transport.local_tcp_addr().is_some(),
                        });
                    }
                    Some(Control::Agents(reply)) => {
                        let now = self.now();
                        let _ = reply.send(self.controller.agents(now));
                    }
                    Some(Control::SetGates(gates)) => self.controller.set_gates(gates),
                    Some(Control::Reload(settings, prompts, reply)) => {
                        let now = self.now();
                        self.reload(now, &settings, prompts);
                        let _ = reply.send(());
                    }
                    Some(Control::ApplySettings(settings, prompts, reply)) => {
                        let now = self.now();
                        if let Some(prompts) = prompts {
                            self.controller.set_prompts(prompts);
                        }
                        self.controller.apply_settings(now, &settings);
                        let _ = reply.send(());
                    }
                    Some(Control::SetPaused { agent, paused, reply }) => {
                        let now = self.now();
                        let _ = reply.send(self.controller.set_agent_paused(now, &agent, paused));
                    }
                    Some(Control::Drain(grace)) => {
                        let now = self.now();
                        self.drain(now, grace);
                    }
                    Some(Control::Shutdown) | None => {
                        let now = self.now();
                        self.drain(now, Duration::ZERO);
                    }
                },
                Some(message) = self.inbound.recv() => {
                    let now = self.now();
                    self.handle_inbound(now, message);
                    for _ in 0..BATCH {
                        let Ok(message) = self.inbound.try_recv() else { break };
                        self.handle_inbound(now, message);
                    }
                }
                Some(event) = self.media_events.recv() => {
                    let now = self.now();
                    self.controller.handle_media_event(now, event);
                    for _ in 0..BATCH {
                        let Ok(event) = self.media_events.try_recv() else { break };
                        self.controller.handle_media_event(now, event);
                    }
                }
                Some(reply) = self.store_replies.recv() => {
                    let now = self.now();
                    self.controller.handle_store_reply(now, reply);
                }
                Some(targets) = self.trunk_targets.recv() => {
                    self.transport
                        .edge()
                        .set_trunk_targets(targets.iter().map(|t| t.addr.ip()));
                    self.controller.set_trunk_targets(targets);
                }
                Some((name, target)) = self.resolved_rx.recv() => {
                    let waiting = self.resolving.remove(&name).unwrap_or_default();
                    match target {
                        Some(target) => {
                            let remote = match target {
                                Target::Udp(remote) | Target::Tcp { remote, .. } => remote,
                            };
                            self.controller.handle_resolved(&name, remote);
                            for data in waiting {
                                if let Err(e) = self.transport.send(target, data) {
                                    warn!(error = %e, "send failed");
                                    if let Some(destination) = failed_destination(target, &e) {
                                        self.failed.push(destination);
                                    }
                                    break;
                                }
                            }
                        }
                        None => self.failed.push(name),
                    }
                }
                Some(failure) = self.failures.recv() => {
                    let now = self.now();
                    self.controller
                        .handle_transport_error(now, &destination_of(failure.target));
                    for _ in 0..BATCH {
                        let Ok(failure) = self.failures.try_recv() else { break };
                        self.controller
                            .handle_transport_error(now, &destination_of(failure.target));
                    }
                }
                () = sleep => {
                    let now = self.now();
                    self.controller.handle_timeout(now);
                }
            }
            self.flush();
            if let Some(limit) = self.stopping
                && (self.controller.is_idle() || Instant::now() >= limit)
            {
                info!("stopped");
                self.transport.shutdown();
                return;
            }
        }
    }

    /// Drains for `grace`, then allows the calls' BYEs a few seconds before
    /// stopping regardless.
    fn drain(&mut self, now: Instant, grace: Duration) {
        self.controller.drain(now, grace);
        let limit = now + grace + BYE_GRACE;
        if self.stopping.is_none_or(|s| limit < s) {
            self.stopping = Some(limit);
        }
    }

    fn handle_inbound(&mut self, now: Instant, message: Inbound) {
        self.transport
            .edge()
            .report_wait(now.saturating_duration_since(message.received));
        let flow = Flow {
            remote: message.source.remote,
            transport: match message.source.transport {
                TransportKind::Udp => FlowTransport::Udp,
                TransportKind::Tcp(conn) => FlowTransport::Tcp(conn.0),
            },
        };
        // The sources were checked at the socket; an agent's phone may not
        // start a call.
        self.controller
            .handle_screened_message(now, &message.data, flow, message.role.may_call());
    }

    /// Carries out everything the controller asks for until it asks for
    /// nothing more (binding a stream's ports answers it at once, which may
    /// make it say more).
    fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(command) = self.controller.poll_media() {
                progressed = true;
                self.media_command(command);
            }
            while let Some(request) = self.controller.poll_store() {
                progressed = true;
                if !self.store.send(request) {
                    warn!("store thread gone");
                }
            }
            while let Some(t) = self.controller.poll_transmit() {
                progressed = true;
                self.send(t.destination, t.data);
            }
            while let Some(hold) = self.controller.poll_connection_hold() {
                self.transport
                    .hold_connection(transport::ConnId(hold.conn), hold.held);
            }
            // RFC 3261 §17.1.4: what could not be sent fails its
            // transactions now, not at their timeout.
            if !self.failed.is_empty() {
                progressed = true;
                let now = self.now();
                for destination in std::mem::take(&mut self.failed) {
                    self.controller.handle_transport_error(now, &destination);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// One media command: a new stream's port is bound here (RTP on it,
    /// RTCP on the next) and the controller told at once whether it could be.
    fn media_command(&mut self, command: MediaCommand) {
        let key = match &command {
            MediaCommand::Add { key, .. } => Some(*key),
            _ => None,
        };
        let rtp_bind = self.rtp_bind;
        match command.map_ports(|port| media::bind(rtp_bind, port)) {
            Ok(command) => {
                if !self.media.send(command) {
                    warn!("media thread gone");
                }
                if let Some(key) = key {
                    let now = self.now();
                    self.controller
                        .handle_media_event(now, MediaEvent::Ready { key });
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "RTP port cannot be bound");
                if let Some(key) = key {
                    let now = self.now();
                    self.controller
                        .handle_media_event(now, MediaEvent::AddFailed { key });
                }
            }
        }
    }

    fn send(&mut self, destination: Destination, data: bytes::Bytes) {
        let target = match destination {
            Destination::Udp(addr) => Target::Udp(addr),
            Destination::Tcp { conn, remote } => Target::Tcp {
                conn: conn.map(transport::ConnId),
                remote,
            },
            Destination::Resolve { .. } => {
                self.resolve(destination, data);
                return;
            }
        };
        if let Err(e) = self.transport.send(target, data) {
            warn!(error = %e, "send failed");
            if failed_destination(target, &e).is_some() {
                self.failed.push(destination);
            }
        }
    }
}

impl Core {
    /// Sends `data` once `name` (a [`Destination::Resolve`]) is looked up
    /// (RFC 3263 §4: SRV of the transport when the URI has no port, then
    /// A/AAAA); joins a lookup of the same name already in flight.
    fn resolve(&mut self, name: Destination, data: bytes::Bytes) {
        if let Some(waiting) = self.resolving.get_mut(&name) {
            // A retransmission repeats the bytes waiting already.
            if !waiting.contains(&data) {
                waiting.push(data);
            }
            return;
        }
        let Destination::Resolve { host, port, tcp } = &name else {
            return;
        };
        let (host, port, tcp) = (host.clone(), *port, *tcp);
        self.resolving.insert(name.clone(), vec![data]);
        let tx = self.resolved_tx.clone();
        let dns = self.dns.clone();
        tokio::spawn(async move {
            let transport = if tcp {
                TrunkTransport::Tcp
            } else {
                TrunkTransport::Udp
            };
            let remote = match dns {
                Some(dns) => {
                    let mut rng = fastrand::Rng::new();
                    resolve::resolve_next_hop(&dns, &host, port, transport, &mut rng)
                        .await
                        .inspect_err(|e| warn!(error = %e, "cannot resolve next hop"))
                        .ok()
                }
                None => None,
            };
            let target = remote.map(|remote| {
                if tcp {
                    Target::Tcp { conn: None, remote }
                } else {
                    Target::Udp(remote)
                }
            });
            let _ = tx.send((name, target));
        });
    }
}

/// The destination a send error fails, if it is a transport error for the
/// transactions using it (RFC 3261 §17.1.4): not while shutting down, and
/// not a datagram dropped for a full socket buffer (the transaction's
/// retransmissions cover that, as they cover loss).
fn failed_destination(target: Target, error: &SendError) -> Option<Destination> {
    match error {
        SendError::ShutDown | SendError::UdpBacklog { .. } => None,
        SendError::NoUdpSocket | SendError::QueueFull { .. } | SendError::Udp { .. } => {
            Some(destination_of(target))
        }
    }
}

/// The endpoint's name for a transport target.
fn destination_of(target: Target) -> Destination {
    match target {
        Target::Udp(remote) => Destination::Udp(remote),
        Target::Tcp { conn, remote } => Destination::Tcp {
            conn: conn.map(|c| c.0),
            remote,
        },
    }
}
