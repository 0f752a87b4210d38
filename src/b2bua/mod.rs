//! The call controller: everything the engine decides about calls, sans-IO.
//!
//! ```text
//!  handle_message(now, bytes, flow) ─▶ ┌──────────── Controller ────────────┐ ─▶ poll_transmit (SIP out)
//!  handle_media_event(now, event)   ─▶ │ Endpoint (SIP transactions/dialogs)│ ─▶ poll_media (streams, prompts,
//!  handle_store_reply(now, reply)   ─▶ │ calls: inbound calls and the IVR   │      bridges, recordings)
//!  handle_timeout(now)              ─▶ │ dialing: callbacks, live callers   │ ─▶ poll_store (registrations,
//!  control: gates, pause, drain     ─▶ │ roster: agents and their REGISTERs │      claims, attempts, CDRs)
//!                                      └────────────────────────────────────┘ ─▶ poll_connection_hold (TCP
//!                                                                                  connections of registered
//!                                                                                  phones: not idle)
//!                                                                             ─▶ poll_timeout (next wake-up)
//! ```
//!
//! The controller binds no socket, holds no channel and reads no clock: time
//! comes in as `now` (monotonic) and through [`Controller::set_wall_clock`]
//! (the wall clock, for business hours and stored times). After every
//! `handle_*` call the caller drains every `poll_*` until `None` and sleeps
//! until [`Controller::poll_timeout`]. The engine does that over real
//! sockets and threads; tests do it with a fake clock, a fake media plane
//! and scripted SIP peers (see `tests/controller.rs`).
//!
//! Media: [`MediaCommand::Add`](media::MediaCommand::Add) carries the RTP
//! port the controller allocated; the one who carries it out binds the port
//! and answers with [`MediaEvent::Ready`](media::MediaEvent::Ready) (an
//! inbound call's 200 waits for it) or
//! [`MediaEvent::AddFailed`](media::MediaEvent::AddFailed) (another port is
//! tried). A port comes back to the pool on
//! [`MediaEvent::Removed`](media::MediaEvent::Removed), once its sockets are
//! closed.

pub mod agents;
pub mod calls;
pub mod dialing;
pub mod media;
pub mod store;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::info;

use crate::acd::agents::{AgentError, AgentId};
use crate::callback::hours::Gates;
use crate::callback::store::Registration;
use crate::callback::trunk::Target as TrunkTarget;
use crate::config::Settings;
use crate::media::prompt::PromptLibrary;
use crate::sip::endpoint::{
    CallKey, Destination, Endpoint, EndpointConfig, Event, Flow, Reason, Transmit,
};
use crate::sip::registrar::ConnectionHold;
use crate::sip::session_timer::SessionTimerConfig;
use crate::sip::transaction::TimerConfig;
use agents::{AgentStatus, Roster};
use calls::Calls;
use dialing::{Dialing, DialingSettings};
use media::{MediaCommand, MediaEvent};
use store::{StoreReply, StoreRequest};

/// The wall clock as of one reading of both clocks: wall-clock times of
/// later instants follow the monotonic clock from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// The monotonic instant of the reading.
    pub instant: Instant,
    /// The wall clock then.
    pub wall: Timestamp,
}

impl WallClock {
    /// The wall-clock time at `now`.
    pub fn at(&self, now: Instant) -> Timestamp {
        let since = now.saturating_duration_since(self.instant);
        let back = self.instant.saturating_duration_since(now);
        let signed = jiff::SignedDuration::try_from(since)
            .ok()
            .and_then(|s| s.checked_sub(jiff::SignedDuration::try_from(back).ok()?));
        signed
            .and_then(|d| self.wall.checked_add(d).ok())
            .unwrap_or(self.wall)
    }
}

/// Counters of live state, for tests, metrics and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// SIP endpoint state (calls, transactions, pending timers).
    pub sip: crate::sip::endpoint::Stats,
    /// Calls known to the call layer.
    pub calls: usize,
    /// RTP port pairs in use.
    pub rtp_ports: usize,
}

/// Totals since start-up (for metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
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
    /// The registrar's brute-force protection.
    pub auth: crate::sip::registrar::GuardStats,
    /// SIP responses by code and method, retransmissions.
    pub sip: crate::sip::endpoint::Totals,
    /// Calls ended, digits, ECBT errors, scheduler lag.
    pub calls: telemetry::Telemetry,
}

/// What the controller needs besides the configuration; the engine finds
/// these out by IO (binding, reading prompt files, DNS).
pub struct Setup {
    /// The prompts, loaded and pre-encoded.
    pub prompts: Arc<PromptLibrary>,
    /// The SIP port to advertise (the bound one when bound to port 0).
    pub advertised_port: u16,
    /// The trunk's targets as first resolved (RFC 3263), in order.
    pub trunk_targets: Vec<TrunkTarget>,
    /// Key of the registrar's self-verifying nonces.
    pub nonce_key: [u8; 32],
    /// Seed of the endpoint's tags and branches.
    pub seed: u64,
    /// The clocks at start.
    pub clock: WallClock,
    /// Where recordings go (the configuration's, resolved against its
    /// directory).
    pub recordings_dir: std::path::PathBuf,
}

/// The call controller (see the module documentation).
pub struct Controller {
    endpoint: Endpoint,
    calls: Calls,
    dialing: Dialing,
    roster: Roster,
    totals: Totals,
    draining: bool,
    /// The RTP allow-list in force (the media plane's reload carries it).
    rtp_acl: crate::acl::Acl,
    /// While draining: when the calls still in progress are hung up.
    drain_deadline: Option<Instant>,
    longest_ring: Duration,
}

impl Controller {
    /// A controller for `settings`. Infallible: everything that could be
    /// wrong with a configuration was refused by [`Config::check`](crate::config::Config::check).
    pub fn new(settings: &Settings, setup: Setup) -> Controller {
        let now = setup.clock.instant;
        let sip = settings.sip();
        let roster = Roster::new(settings, setup.nonce_key, now);
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
            advertised_port: setup.advertised_port,
            user_agent: sip.user_agent.as_str().into(),
            acl: settings.acl().sip_acl(),
            acl_action: settings.acl().action,
            seed: setup.seed,
            registrar: roster.registrar_enabled(),
            max_forwards: sip.max_forwards,
        });
        let scheduler = settings.scheduler();
        let longest_ring = scheduler.longest_ring();
        let advertised = sip.advertised_host().to_string();
        let (caller_ids, recording, agent_cooldowns) = dialing::queue_maps(settings);
        let dialing = Dialing::new(
            DialingSettings {
                poll_interval: settings.callbacks().poll_interval(),
                trunk: settings.trunk().clone(),
                trunk_targets: setup.trunk_targets,
                caller_ids,
                callback_numbers: settings.org().callback_numbers.clone(),
                policy: settings.org().number_policy.clone(),
                local_uri: format!("sip:callbackd@{advertised}:{}", setup.advertised_port),
                recording,
                recordings_dir: setup.recordings_dir,
                recording_retention: settings.callbacks().recording_retention(),
                agent_cooldowns,
                rules: settings.org().rule_book(),
                auto_lines: settings.org().auto_callback_lines,
            },
            scheduler,
            settings.org().gates.launch_enabled,
            now,
        )
        // trunk.cps_limit passed the same CpsLimiter::new in Config::check.
        .expect("trunk.cps_limit was checked");
        let calls = Calls::new(settings, setup.prompts, setup.clock);
        Controller {
            endpoint,
            calls,
            dialing,
            roster,
            totals: Totals::default(),
            draining: false,
            rtp_acl: settings.acl().rtp_acl(),
            drain_deadline: None,
            longest_ring,
        }
    }

    // -----------------------------------------------------------------
    // Inputs

    /// A new reading of the wall clock (the engine gives one before each
    /// input; a test sets it once and lets it follow the fake clock).
    pub fn set_wall_clock(&mut self, clock: WallClock) {
        self.calls.set_clock(clock);
    }

    /// A SIP message from the network.
    pub fn handle_message(&mut self, now: Instant, data: &[u8], source: Flow) {
        self.roster.heard_from(now, source);
        self.endpoint.handle_message(now, data, source);
        self.process(now);
    }

    /// A SIP message whose source the engine already checked against the
    /// allow-lists at the socket; `may_call` is false for an agent's phone,
    /// whose new INVITEs get 403.
    pub fn handle_screened_message(
        &mut self,
        now: Instant,
        data: &[u8],
        source: Flow,
        may_call: bool,
    ) {
        self.roster.heard_from(now, source);
        self.endpoint.handle_screened(now, data, source, may_call);
        self.process(now);
    }

    /// The transport could not deliver what was sent to `destination`
    /// (connection refused or broken, no route, a name that did not
    /// resolve): the client transactions sending there fail at once
    /// (RFC 3261 §17.1.4), so a customer INVITE goes to the next trunk
    /// target without waiting for Timer B (RFC 3263 §4.3). See
    /// [`Endpoint::handle_transport_error`].
    pub fn handle_transport_error(&mut self, now: Instant, destination: &Destination) {
        self.endpoint.handle_transport_error(now, destination);
        self.process(now);
    }

    /// The engine resolved the next-hop name `name` to `addr`: the
    /// transactions sending there keep that address (see
    /// [`Endpoint::handle_resolved`]).
    pub fn handle_resolved(&mut self, name: &Destination, addr: SocketAddr) {
        self.endpoint.handle_resolved(name, addr);
    }

    /// An event from the media plane.
    pub fn handle_media_event(&mut self, now: Instant, event: MediaEvent) {
        match event {
            // No RTP on a callback leg for rtp_timeout: hang it up; the
            // dialer then ends the other leg.
            MediaEvent::RtpTimeout { key } if self.dialing.owns(CallKey(key)) => {
                info!(leg = key, "no RTP on a callback leg; hanging up");
                let mut env = dialing::Env {
                    calls: &mut self.calls,
                    endpoint: &mut self.endpoint,
                    roster: &mut self.roster,
                };
                self.dialing
                    .hang_up(now, CallKey(key), Reason::TIMER_EXPIRY, &mut env);
            }
            MediaEvent::Idle { key, token } if self.dialing.owns(CallKey(key)) => {
                let mut env = dialing::Env {
                    calls: &mut self.calls,
                    endpoint: &mut self.endpoint,
                    roster: &mut self.roster,
                };
                self.dialing.prompt_done(now, CallKey(key), token, &mut env);
            }
            event => self
                .calls
                .handle_media_event(now, event, &mut self.endpoint),
        }
        self.process(now);
    }

    /// An answer from the store.
    pub fn handle_store_reply(&mut self, now: Instant, reply: StoreReply) {
        match &reply {
            StoreReply::Registered { result, .. } => match result {
                Ok(Registration::Registered(_)) => self.totals.callbacks_registered += 1,
                Ok(Registration::AlreadyScheduled(_)) => {
                    self.totals.callbacks_already_scheduled += 1
                }
                Err(_) => self.totals.registration_failures += 1,
            },
            StoreReply::PendingAhead { .. }
            | StoreReply::Due { .. }
            | StoreReply::Claimed { .. }
            | StoreReply::AttemptRecorded { .. } => {}
        }
        match reply {
            StoreReply::Due { .. }
            | StoreReply::Claimed { .. }
            | StoreReply::AttemptRecorded { .. } => {
                let mut env = dialing::Env {
                    calls: &mut self.calls,
                    endpoint: &mut self.endpoint,
                    roster: &mut self.roster,
                };
                self.dialing.handle_store_reply(now, reply, &mut env);
            }
            reply @ (StoreReply::Registered { .. } | StoreReply::PendingAhead { .. }) => {
                self.calls
                    .handle_store_reply(now, reply, &mut self.endpoint, self.roster.agents());
            }
        }
        self.process(now);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drain_deadline_reached(now);
        self.endpoint.handle_timeout(now);
        self.calls.handle_timeout(now, &mut self.endpoint);
        self.roster.handle_timeout(now);
        while let Some(keepalive) = self.roster.poll_keepalive() {
            self.endpoint
                .send_keepalive(&keepalive.contact, keepalive.flow);
        }
        let mut env = dialing::Env {
            calls: &mut self.calls,
            endpoint: &mut self.endpoint,
            roster: &mut self.roster,
        };
        self.dialing.handle_timeout(now, &mut env);
        self.process(now);
    }

    /// The trunk's termination was looked up again: calls from now on use
    /// `targets`; attempts under way keep the list they started with.
    pub fn set_trunk_targets(&mut self, targets: Vec<TrunkTarget>) {
        self.dialing.set_trunk_targets(targets);
    }

    /// Takes the organisation of `settings` (changed at run time through
    /// the admin API): switches, hours, number rules, queues and agents,
    /// effective for the next call and the next launch; calls and attempts
    /// in progress go on as they started. Everything else in `settings`
    /// (listeners, media, trunk, limits) is ignored here.
    pub fn apply_settings(&mut self, now: Instant, settings: &Settings) {
        self.calls.apply_settings(settings);
        self.dialing.apply_settings(settings);
        self.roster.apply_settings(now, settings);
        self.endpoint
            .set_registrar_enabled(self.roster.registrar_enabled());
        self.longest_ring = self.dialing.scheduler().longest_ring();
        self.process(now);
    }

    /// Plays prompts from `prompts` from now on, in the call layer and the
    /// media plane (a missed-call rule named prompts of its own).
    pub fn set_prompts(&mut self, prompts: Arc<PromptLibrary>) {
        self.calls.set_prompts(prompts.clone());
        self.calls.media_command(MediaCommand::Reload {
            acl: self.rtp_acl.clone(),
            prompts,
        });
    }

    /// Takes the engine's settings of `settings` again (SIGHUP): the
    /// signalling allow-list, the trunk (its new targets follow with
    /// [`Controller::set_trunk_targets`]) and `prompts`, for the RTP
    /// allow-list and prompts of the media plane too. Calls in progress go
    /// on. The organisation is not touched (see
    /// [`Controller::apply_settings`]).
    pub fn reload(&mut self, now: Instant, settings: &Settings, prompts: Arc<PromptLibrary>) {
        let acl = settings.acl();
        self.endpoint.set_acl(acl.sip_acl(), acl.action);
        // trunk.cps_limit passed the same check in Config::check.
        if let Err(e) = self.dialing.set_trunk(settings.trunk().clone()) {
            tracing::warn!(error = %e, "trunk settings not reloaded");
        }
        self.calls.set_prompts(prompts.clone());
        self.rtp_acl = acl.rtp_acl();
        self.calls.media_command(MediaCommand::Reload {
            acl: acl.rtp_acl(),
            prompts,
        });
        info!("engine settings reloaded");
        self.process(now);
    }

    /// Switches callback registration and launching.
    pub fn set_gates(&mut self, gates: Gates) {
        self.dialing.set_launch_enabled(gates.launch_enabled);
        self.calls.set_gates(gates);
    }

    /// Pauses an agent (no work is offered to it) or makes it available
    /// again, and gives its state afterwards. A ringing or talking agent
    /// cannot be paused ([`AgentError::Busy`]).
    pub fn set_agent_paused(
        &mut self,
        now: Instant,
        agent: &str,
        paused: bool,
    ) -> Result<AgentStatus, AgentError> {
        let id = AgentId(agent.into());
        let agents = self.roster.agents_mut();
        if paused {
            agents.pause(&id, now)?;
        } else {
            agents.unpause(&id, now)?;
        }
        info!(agent = %id, paused, "agent state set");
        self.roster
            .status(now)
            .into_iter()
            .find(|a| a.id == id)
            .ok_or(AgentError::UnknownAgent(id))
    }

    /// Starts shutting down gracefully: from now on OPTIONS and new INVITEs
    /// get 503 (a dispatcher in front marks this node down and sends new
    /// calls elsewhere) and no new callback is launched, while the calls in
    /// progress go on — the IVR, registrations, bridged callbacks — for up
    /// to `grace`; whatever is still up then is hung up. A zero `grace`
    /// hangs up at once; a second call can only shorten the deadline.
    pub fn drain(&mut self, now: Instant, grace: Duration) {
        let deadline = now + grace;
        if !self.draining {
            info!(
                calls = self.calls.len(),
                grace_s = grace.as_secs_f64(),
                "draining: new calls refused, calls in progress may finish"
            );
            self.draining = true;
            self.endpoint.set_draining(true);
            self.dialing.set_draining();
        }
        if self.drain_deadline.is_none_or(|d| deadline < d) {
            self.drain_deadline = Some(deadline);
        }
        self.drain_deadline_reached(now);
        self.process(now);
    }

    /// Hangs up every call and leg once the drain deadline has come.
    fn drain_deadline_reached(&mut self, now: Instant) {
        if self.drain_deadline.is_none_or(|d| d > now) {
            return;
        }
        // Hung up once; the calls' BYE transactions finish by themselves.
        self.drain_deadline = None;
        info!(
            calls = self.calls.len(),
            "drain time over; hanging up the calls still in progress"
        );
        self.calls.hangup_all(now, &mut self.endpoint);
        let mut env = dialing::Env {
            calls: &mut self.calls,
            endpoint: &mut self.endpoint,
            roster: &mut self.roster,
        };
        self.dialing.hang_up_all(now, &mut env);
    }

    // -----------------------------------------------------------------
    // Outputs

    /// The next SIP message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    /// The next TCP connection that started carrying a registered phone's
    /// binding (the transport must not close it as idle) or stopped.
    pub fn poll_connection_hold(&mut self) -> Option<ConnectionHold> {
        self.roster.poll_connection_hold()
    }

    /// The next command for the media plane.
    pub fn poll_media(&mut self) -> Option<MediaCommand> {
        self.calls.poll_media()
    }

    /// The next request for the store.
    pub fn poll_store(&mut self) -> Option<StoreRequest> {
        self.calls.poll_store()
    }

    /// When [`Controller::handle_timeout`] is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.endpoint.poll_timeout(),
            self.calls.poll_timeout(),
            self.roster.poll_timeout(),
            self.dialing.poll_timeout(),
            self.drain_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // -----------------------------------------------------------------
    // State

    /// Counters of live state.
    pub fn stats(&self) -> Stats {
        Stats {
            sip: self.endpoint.stats(),
            calls: self.calls.len(),
            rtp_ports: self.calls.ports_in_use(),
        }
    }

    /// Totals since start-up.
    pub fn totals(&self) -> Totals {
        Totals {
            auth: self.roster.guard_stats(),
            sip: self.endpoint.totals().clone(),
            calls: self.calls.telemetry().clone(),
            ..self.totals.clone()
        }
    }

    /// Every queue's ECBT estimator as it stands now.
    pub fn queue_ecbts(&self) -> Vec<telemetry::QueueEcbt> {
        self.calls.queue_ecbts(self.roster.agents())
    }

    /// The registration and launch switches in effect.
    pub fn gates(&self) -> Gates {
        self.calls.gates()
    }

    /// Whether [`Controller::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Whether no call is in progress.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty() && self.dialing.is_idle()
    }

    /// Every configured agent with its state, in id order.
    pub fn agents(&self, now: Instant) -> Vec<AgentStatus> {
        self.roster.status(now)
    }

    /// The longest ring time of any queue: a lapsed claim's callback is not
    /// dialed again before its old legs could have stopped ringing.
    pub fn longest_ring(&self) -> Duration {
        self.longest_ring
    }

    /// Hands every event the endpoint has to the layer it is for, until it
    /// has nothing more to say (the layers may make it say more).
    fn process(&mut self, now: Instant) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Register {
                    request,
                    source,
                    tx,
                } => {
                    let wall = self.calls.wall(now);
                    self.roster.answer_register(
                        now,
                        wall,
                        &request,
                        source,
                        tx,
                        &mut self.endpoint,
                    );
                }
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
    }
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
