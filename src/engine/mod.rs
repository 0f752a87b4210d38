//! The tokio shell: sockets, clocks, and the wiring of the sans-IO cores.
//!
//! ```text
//!   transport (UDP/TCP tasks) ──Inbound──▶ ┌──────────── core task ─────────────┐
//!                                          │ Endpoint (sip, sans-IO)            │
//!   transport ◀──────────Transmit───────── │ calls: SDP, RTP ports, call flow   │
//!                                          │ roster: agents and their REGISTERs │
//!                                          │ one sleep: min(poll_timeout, ...)  │
//!   media thread ◀──Command (Add/Play…)─── │                                    │
//!   media thread ───MediaEvent (digits…)─▶ └────────────────────────────────────┘
//! ```
//!
//! The core task owns the endpoint and every call's state; nothing is shared
//! behind a lock. The media thread owns every RTP socket (see [`media`]).

pub mod agents;
pub mod calls;
pub mod dialing;
pub mod media;
pub mod resolve;
pub mod store;
pub mod transport;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::acd::agents::{AgentError, AgentId};
use crate::callback::hours::Gates;
use crate::callback::scheduler::Scheduler;
use crate::callback::store::{DEFAULT_LEASE, Recovery, Registration, SqliteStore};
use crate::callback::trunk::{Target as TrunkTarget, TerminationHost, TrunkSettings};
use crate::config::{self, Config, Transport as ConfiguredTransport};
use crate::media::g711::Law;
use crate::media::ports::{PortPool, PortPoolError};
use crate::media::prompt::{PromptError, PromptLibrary, Ptime, STANDARD_PROMPTS};
use crate::sip::endpoint::{
    CallKey, Destination, Endpoint, EndpointConfig, Event, Flow, FlowTransport, Stats,
};
use crate::sip::session_timer::SessionTimerConfig;
use crate::sip::transaction::TimerConfig;
use agents::{AgentStatus, Roster};
use calls::Calls;
use transport::{Inbound, Target, Transport, TransportKind};

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
    /// The RTP port range is unusable.
    #[error("rtp port range: {0}")]
    Ports(#[from] PortPoolError),
    /// The callback store could not be opened.
    #[error("callback store: {0}")]
    Store(#[from] crate::callback::store::StoreError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The call layer refused its settings.
    #[error("{0}")]
    Setup(#[from] calls::SetupError),
    /// The queues' launch rules are inconsistent.
    #[error("scheduler: {0}")]
    Scheduler(#[from] crate::callback::scheduler::SchedulerError),
    /// The trunk settings are unusable.
    #[error("trunk: {0}")]
    Trunk(#[from] crate::callback::trunk::TrunkError),
    /// The agents could not be set up.
    #[error("{0}")]
    Agents(#[from] agents::RosterError),
}

/// Counters of live state, for tests, metrics and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// SIP endpoint state (calls, transactions, pending timers).
    pub sip: Stats,
    /// Calls known to the call layer.
    pub calls: usize,
    /// RTP port pairs in use.
    pub rtp_ports: usize,
}

/// Totals since start-up, counted by the core task (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineTotals {
    /// INVITEs that passed the SIP layer's checks and reached the call
    /// layer (one above `max_calls` is counted, then refused with 503).
    pub incoming_calls: u64,
    /// Callbacks durably registered.
    pub callbacks_registered: u64,
    /// Registrations that found an active callback for the same number in
    /// the same queue (nothing written).
    pub callbacks_already_scheduled: u64,
    /// Registrations the store failed to commit (the caller heard "unable
    /// to offer callbacks"; nothing written).
    pub registration_failures: u64,
}

/// One consistent snapshot of a running engine, taken by the core task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStatus {
    /// Live state.
    pub stats: EngineStats,
    /// The registration and launch switches in effect.
    pub gates: Gates,
    /// Shutting down: calls are being hung up, new ones refused.
    pub draining: bool,
    /// Totals since start-up.
    pub totals: EngineTotals,
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
    SetPaused {
        agent: String,
        paused: bool,
        reply: oneshot::Sender<Result<AgentStatus, AgentError>>,
    },
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
pub fn load_prompts(config: &Config, base_dir: &Path) -> Result<PromptLibrary, PromptError> {
    let files: Vec<(&str, std::path::PathBuf)> = STANDARD_PROMPTS
        .iter()
        .map(|name| (*name, config.prompts.file_path(base_dir, name)))
        .collect();
    let mut library = PromptLibrary::load_files(&files)?;
    let ptimes: Vec<Ptime> = (1..=6).filter_map(|i| Ptime::from_ms(i * 10)).collect();
    library.prepare(&[Law::Ulaw, Law::Alaw], &ptimes);
    Ok(library)
}

/// Starts the engine: binds sockets, opens the callback store named by the
/// configuration, starts the media and store threads and the core.
pub async fn start(config: Config, base_dir: &Path) -> Result<EngineHandle, EngineError> {
    let store = SqliteStore::open(&config.store_path(base_dir))?;
    start_with_store(config, base_dir, Box::new(store)).await
}

/// [`start`] with a callback store of the caller's choosing (another
/// [`LaunchStore`](crate::callback::store::LaunchStore) implementation, or a test double
/// such as one whose commits fail).
pub async fn start_with_store(
    config: Config,
    base_dir: &Path,
    store: Box<dyn crate::callback::store::LaunchStore>,
) -> Result<EngineHandle, EngineError> {
    let started = Instant::now();
    let prompts = Arc::new(load_prompts(&config, base_dir)?);
    let sip = &config.sip;
    let udp = sip.serves(ConfiguredTransport::Udp).then_some(sip.bind);
    let tcp = sip.serves(ConfiguredTransport::Tcp).then_some(sip.bind);
    let (transport, inbound) =
        Transport::bind(udp, tcp, sip.max_message_size, sip.tcp_idle_timeout())
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
    let roster = Roster::new(&config, agents::random_nonce_key(), started)?;
    let endpoint = Endpoint::new(EndpointConfig {
        timers: TimerConfig {
            t1: sip.t1(),
            t2: sip.t2(),
            t4: sip.t4(),
        },
        session: SessionTimerConfig {
            session_expires: sip.session_expires_s,
            min_se: sip.min_se_s,
        },
        advertised_host: sip
            .advertised_host()
            .to_string()
            .trim_matches(['[', ']'])
            .into(),
        advertised_port,
        user_agent: sip.user_agent.as_str().into(),
        acl: config.acl.sip_acl(),
        acl_action: config.acl.action,
        seed: fastrand::u64(..),
        registrar: roster.registrar_enabled(),
    });
    let (media_events_tx, media_events) = mpsc::unbounded_channel();
    let (media, _media_thread) = media::spawn(
        media::MediaConfig {
            acl: config.acl.rtp_acl(),
            rtp_timeout: config.rtp.rtp_timeout(),
        },
        prompts.clone(),
        media_events_tx,
    )
    .map_err(EngineError::Media)?;
    let ports = PortPool::new(config.rtp.port_min, config.rtp.port_max)?;
    let store_path = config.store_path(base_dir);

    // The dialing side's rules, and what an earlier process left behind.
    let org_hours = config
        .org
        .business_hours()
        .map_err(calls::SetupError::Hours)?;
    let schedules = config
        .queues
        .iter()
        .map(|q| q.schedule(&config.org))
        .collect::<Result<Vec<_>, _>>()
        .map_err(calls::SetupError::Hours)?;
    let scheduler = Scheduler::new(org_hours, schedules)?;
    let mut store = store;
    // This engine claims callbacks as its node (host and SIP address: the
    // same after a restart, different for a second engine on the store),
    // under a lease the store thread renews at every poll.
    let node = node_id(udp_addr.or(tcp_addr));
    let lease = claim_lease(config.callbacks.poll_interval());
    store.set_claimant(&node, lease);
    info!(%node, lease_s = lease.as_secs(), "claiming callbacks as");
    // Issue 4 point 8: a callback that was dialing when the process died is
    // pending again, with the attempt recorded as interrupted, and is not
    // redialed before its old legs could have stopped ringing.
    // A store that cannot do this leaves those rows `dialing`: never due, so
    // never dialed twice; the IVR still works. Logged, not fatal.
    match store.recover_interrupted(
        jiff::Timestamp::now(),
        scheduler.longest_ring(),
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
    let trunk = config.trunk.settings()?;
    let (trunk_targets, trunk_refresh) = resolve_trunk(&config.trunk, &trunk).await;
    let mut caller_ids = std::collections::HashMap::new();
    for q in &config.queues {
        match q.caller_id() {
            Ok(number) => {
                caller_ids.insert(q.id.clone(), number);
            }
            Err(e) => {
                warn!(queue = %q.id, error = %e, "queue callback number unusable; From falls back to ours")
            }
        }
    }
    let advertised = sip.advertised_host().to_string();
    if config.queues.iter().any(|q| q.recording)
        && let Err(e) = std::fs::create_dir_all(config.callbacks.recordings_dir(base_dir))
    {
        warn!(error = %e, "recordings directory cannot be created; recordings will fail");
    }

    let (store_replies_tx, store_replies) = mpsc::unbounded_channel();
    let (store, _store_thread) = store::spawn(store, scheduler.longest_ring(), store_replies_tx)
        .map_err(EngineError::Thread)?;
    let dialing = dialing::Dialing::new(
        dialing::DialingSettings {
            poll_interval: config.callbacks.poll_interval(),
            trunk,
            trunk_targets,
            caller_ids,
            policy: config.org.number_policy(),
            local_uri: format!("sip:callbackd@{advertised}:{advertised_port}"),
            recording: config
                .queues
                .iter()
                .map(|q| (q.id.clone(), (q.recording, q.recording_notice)))
                .collect(),
            recordings_dir: config.callbacks.recordings_dir(base_dir),
            recording_retention: config.callbacks.recording_retention(),
            agent_cooldowns: config
                .queues
                .iter()
                .map(|q| (q.id.clone(), q.agent_cooldown()))
                .collect(),
        },
        scheduler,
        config.org.launch_enabled,
        store.clone(),
        started,
    )?;
    let calls = Calls::new(&config, prompts, media, store, ports)?;

    info!(
        udp = ?udp_addr,
        tcp = ?tcp_addr,
        rtp = %format!("{}:{}-{}", config.rtp.bind_ip, config.rtp.port_min, config.rtp.port_max),
        sip_acl = %config.acl.sip_acl(),
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
    let core = Core {
        endpoint,
        calls,
        dialing,
        roster,
        transport,
        inbound,
        media_events,
        store_replies,
        control: control_rx,
        resolved_tx,
        resolved_rx,
        trunk_targets: trunk_rx,
        stopping: None,
        totals: EngineTotals::default(),
    };
    let task = tokio::spawn(core.run());
    Ok(EngineHandle {
        udp: udp_addr,
        tcp: tcp_addr,
        control,
        task,
    })
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

/// Resolves the trunk's termination once at start (RFC 3263), and gives the
/// background refresh for a host name (an IP literal needs none).
async fn resolve_trunk(
    config: &config::TrunkConfig,
    trunk: &TrunkSettings,
) -> (Vec<TrunkTarget>, Option<TrunkRefresh>) {
    let lookup = if config.dns_servers.is_empty() {
        resolve::HickoryLookup::from_system()
    } else {
        resolve::HickoryLookup::with_servers(&config.dns_servers)
    };
    let lookup = match lookup {
        Ok(lookup) => lookup,
        Err(e) => {
            warn!(error = %e, "no DNS configuration; only IP literals can be dialled");
            return (Vec::new(), None);
        }
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

struct Core {
    endpoint: Endpoint,
    calls: Calls,
    dialing: dialing::Dialing,
    roster: Roster,
    transport: Transport,
    inbound: mpsc::Receiver<Inbound>,
    media_events: mpsc::UnboundedReceiver<media::MediaEvent>,
    store_replies: mpsc::UnboundedReceiver<store::StoreReply>,
    control: mpsc::Receiver<Control>,
    /// DNS results for in-dialog requests to host names come back here.
    resolved_tx: mpsc::UnboundedSender<Resolved>,
    resolved_rx: mpsc::UnboundedReceiver<Resolved>,
    /// The trunk's termination, looked up again (see [`TrunkRefresh`]).
    trunk_targets: mpsc::UnboundedReceiver<Vec<TrunkTarget>>,
    /// Set when shutting down: stop once no call is left or at this instant.
    stopping: Option<Instant>,
    /// Totals since start-up.
    totals: EngineTotals,
}

/// The call an endpoint event is about (`None` for REGISTER).
fn event_call(event: &Event) -> Option<CallKey> {
    match event {
        Event::IncomingCall { call, .. }
        | Event::Confirmed { call, .. }
        | Event::Reoffer { call, .. }
        | Event::Info { call, .. }
        | Event::Ended { call, .. }
        | Event::Progress { call, .. }
        | Event::Answered { call, .. }
        | Event::Failed { call, .. } => Some(*call),
        Event::Register { .. } => None,
    }
}

/// A message whose next hop had to be resolved first.
type Resolved = (Target, bytes::Bytes);

/// How many more inbound messages are taken before outputs are flushed.
const BATCH: usize = 64;

impl Core {
    /// [`EngineControl::set_agent_paused`].
    fn set_paused(
        &mut self,
        now: Instant,
        agent: String,
        paused: bool,
    ) -> Result<AgentStatus, AgentError> {
        let id = AgentId(agent.into());
        let agents = self.roster.agents_mut();
        if paused {
            agents.pause(&id, now)?;
        } else {
            agents.unpause(&id, now)?;
        }
        info!(agent = %id, paused, "agent state set through the control channel");
        self.roster
            .status(now)
            .into_iter()
            .find(|a| a.id == id)
            .ok_or(AgentError::UnknownAgent(id))
    }

    async fn run(mut self) {
        loop {
            // Each branch below reads the clock itself, after its wait: a
            // value from before the wait may be seconds old and would
            // back-date every timer started while handling the event (a BYE's
            // Timer E already due: sent twice).
            let deadline = [
                self.endpoint.poll_timeout(),
                self.calls.poll_timeout(),
                self.roster.poll_timeout(),
                self.dialing.poll_timeout(),
                self.stopping,
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Stats(reply)) => {
                        let _ = reply.send(self.stats());
                    }
                    Some(Control::Status(reply)) => {
                        let _ = reply.send(EngineStatus {
                            stats: self.stats(),
                            gates: self.calls.gates(),
                            draining: self.stopping.is_some(),
                            totals: self.totals,
                        });
                    }
                    Some(Control::Agents(reply)) => {
                        let _ = reply.send(self.roster.status(Instant::now()));
                    }
                    Some(Control::SetGates(gates)) => {
                        self.dialing.set_launch_enabled(gates.launch_enabled);
                        self.calls.set_gates(gates);
                    }
                    Some(Control::SetPaused { agent, paused, reply }) => {
                        let now = Instant::now();
                        let _ = reply.send(self.set_paused(now, agent, paused));
                    }
                    Some(Control::Shutdown) | None => {
                        if self.stopping.is_none() {
                            info!(calls = self.calls.len(), "shutting down");
                            self.endpoint.set_draining(true);
                            let now = Instant::now();
                            self.calls.hangup_all(now, &mut self.endpoint);
                            self.stopping = Some(now + std::time::Duration::from_secs(3));
                        }
                    }
                },
                Some(message) = self.inbound.recv() => {
                    let now = Instant::now();
                    self.handle_inbound(now, message);
                    for _ in 0..BATCH {
                        let Ok(message) = self.inbound.try_recv() else { break };
                        self.handle_inbound(now, message);
                    }
                }
                Some(event) = self.media_events.recv() => {
                    let now = Instant::now();
                    self.media_event(now, event);
                    while let Ok(event) = self.media_events.try_recv() {
                        self.media_event(now, event);
                    }
                }
                Some(reply) = self.store_replies.recv() => {
                    self.count_store_reply(&reply);
                    let now = Instant::now();
                    match reply {
                        store::StoreReply::Due { .. }
                        | store::StoreReply::Claimed { .. }
                        | store::StoreReply::AttemptRecorded { .. } => {
                            let mut env = dialing::Env {
                                calls: &mut self.calls,
                                endpoint: &mut self.endpoint,
                                roster: &mut self.roster,
                            };
                            self.dialing.handle_store_reply(now, reply, &mut env);
                        }
                        reply @ (store::StoreReply::Registered { .. }
                        | store::StoreReply::PendingAhead { .. }) => {
                            self.calls.handle_store_reply(now, reply, &mut self.endpoint);
                        }
                    }
                }
                Some(targets) = self.trunk_targets.recv() => {
                    self.dialing.set_trunk_targets(targets);
                }
                Some((target, data)) = self.resolved_rx.recv() => {
                    if let Err(e) = self.transport.send(target, data) {
                        warn!(error = %e, "send failed");
                    }
                }
                () = sleep => {
                    let now = Instant::now();
                    self.endpoint.handle_timeout(now);
                    self.calls.handle_timeout(now, &mut self.endpoint);
                    self.roster.handle_timeout(now);
                    let mut env = dialing::Env {
                        calls: &mut self.calls,
                        endpoint: &mut self.endpoint,
                        roster: &mut self.roster,
                    };
                    self.dialing.handle_timeout(now, &mut env);
                }
            }
            self.flush(Instant::now());
            if let Some(limit) = self.stopping
                && (self.calls.is_empty() || Instant::now() >= limit)
            {
                info!("stopped");
                self.transport.shutdown();
                return;
            }
        }
    }

    /// A media event: the agent leg's prompts are the dialing side's;
    /// everything else (and port release for every stream) the call layer's.
    fn media_event(&mut self, now: Instant, event: media::MediaEvent) {
        // No RTP on a callback leg for rtp_timeout: hang it up; the dialer
        // then ends the other leg (issue 4 point 4).
        if let media::MediaEvent::RtpTimeout { key } = event
            && self.dialing.owns(CallKey(key))
        {
            info!(leg = key, "no RTP on a callback leg; hanging up");
            let _ = self.endpoint.hangup(now, CallKey(key));
            return;
        }
        if let media::MediaEvent::Idle { key, token } = event
            && self.dialing.owns(CallKey(key))
        {
            let mut env = dialing::Env {
                calls: &mut self.calls,
                endpoint: &mut self.endpoint,
                roster: &mut self.roster,
            };
            self.dialing.prompt_done(now, CallKey(key), token, &mut env);
            return;
        }
        self.calls
            .handle_media_event(now, event, &mut self.endpoint);
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            sip: self.endpoint.stats(),
            calls: self.calls.len(),
            rtp_ports: self.calls.ports_in_use(),
        }
    }

    /// Counts registrations as the store thread reports them.
    fn count_store_reply(&mut self, reply: &store::StoreReply) {
        let totals = &mut self.totals;
        match reply {
            store::StoreReply::Registered { result, .. } => match result {
                Ok(Registration::Registered(_)) => totals.callbacks_registered += 1,
                Ok(Registration::AlreadyScheduled(_)) => totals.callbacks_already_scheduled += 1,
                Err(_) => totals.registration_failures += 1,
            },
            store::StoreReply::PendingAhead { .. }
            | store::StoreReply::Due { .. }
            | store::StoreReply::Claimed { .. }
            | store::StoreReply::AttemptRecorded { .. } => {}
        }
    }

    fn handle_inbound(&mut self, now: Instant, message: Inbound) {
        let flow = Flow {
            remote: message.source.remote,
            transport: match message.source.transport {
                TransportKind::Udp => FlowTransport::Udp,
                TransportKind::Tcp(conn) => FlowTransport::Tcp(conn.0),
            },
        };
        self.endpoint.handle_message(now, &message.data, flow);
    }

    /// Drains the endpoint until it has nothing more to say (the calls layer
    /// may make it say more).
    fn flush(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.endpoint.poll_event() {
                progressed = true;
                match event {
                    Event::Register {
                        request,
                        source,
                        tx,
                    } => self.roster.answer_register(
                        now,
                        jiff::Timestamp::now(),
                        &request,
                        source,
                        tx,
                        &mut self.endpoint,
                    ),
                    event if event_call(&event).is_some_and(|c| self.dialing.owns(c)) => {
                        let mut env = dialing::Env {
                            calls: &mut self.calls,
                            endpoint: &mut self.endpoint,
                            roster: &mut self.roster,
                        };
                        self.dialing.handle_sip_event(now, event, &mut env);
                    }
                    event => {
                        if matches!(event, Event::IncomingCall { .. }) {
                            self.totals.incoming_calls += 1;
                        }
                        self.calls.handle_sip_event(now, event, &mut self.endpoint);
                    }
                }
            }
            while let Some(t) = self.endpoint.poll_transmit() {
                progressed = true;
                self.send(t.destination, t.data);
            }
            if !progressed {
                return;
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
            Destination::Resolve { host, port, tcp } => {
                let tx = self.resolved_tx.clone();
                tokio::spawn(async move {
                    match tokio::net::lookup_host((&*host, port)).await {
                        Ok(mut addrs) => {
                            if let Some(addr) = addrs.next() {
                                let target = if tcp {
                                    Target::Tcp {
                                        conn: None,
                                        remote: addr,
                                    }
                                } else {
                                    Target::Udp(addr)
                                };
                                let _ = tx.send((target, data));
                            }
                        }
                        Err(e) => warn!(%host, error = %e, "cannot resolve next hop"),
                    }
                });
                return;
            }
        };
        if let Err(e) = self.transport.send(target, data) {
            warn!(error = %e, "send failed");
        }
    }
}
