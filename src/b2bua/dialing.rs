//! Calling back: the scheduler's launches turned into SIP legs and media.
//!
//! Every `poll_interval` the store thread is asked for due callbacks; the
//! [`Scheduler`] decides which to launch with which free agent; each launch
//! is claimed in the store (pending → dialing, one transaction, so a
//! callback is never dialed twice at once), then a [`Dialer`] runs the
//! attempt: INVITE the agent, whisper "callback for" + the number, INVITE
//! the customer through the trunk (CPS cap, target failover on 503/408
//! before ringing), ringback or early media to the agent, bridge. When the
//! dialer finishes, the attempt and the callback's next step (completed,
//! retry, failover, failed, expired) are written in one transaction, with a
//! CDR row per leg, and the agent is released (or cools down).
//!
//! Legs are outbound [`Endpoint`] calls; their media streams live in the
//! media thread like every other call's, with ports from the call layer's
//! pool ([`Calls::open_leg`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use tracing::{debug, info, warn};

use crate::acd::CallerId;
use crate::acd::agents::{AgentId, Agents, Work};
use crate::b2bua::agents::Roster;
use crate::b2bua::calls::Calls;
use crate::b2bua::store::{StoreReply, StoreRequest};
use crate::b2bua::telemetry::{self, CallDirection};
use crate::callback::cdr::{CdrRecord, Leg, LegOutcome};
use crate::callback::dialer::{self, Dialer, DialerSettings, Outcome};
use crate::callback::number::NumberPolicy;
use crate::callback::number::own_number;
use crate::callback::number::{PhoneNumber, validate};
use crate::callback::rules::{RuleBook, TaskSettings};
use crate::callback::scheduler::{Action as Plan, Scheduler, Snapshot, task_of};
use crate::callback::store::{Attempt, CallbackRow, NextStep, Recorded, Source, TaskFilter};
use crate::callback::trunk::{
    CpsLimiter, Target, TargetFailure, TargetHealth, TargetList, TrunkSettings,
    customer_request_uri, from_header, order_for_call, pai_header, presented_caller_id,
};
use crate::callback::{CallbackId, QueueId};
use crate::config::Settings;
use crate::sip::endpoint::{CallKey, Destination, EndReason, Endpoint, Event, Reason};
use crate::sip::uac::{OutboundInvite, Party};

/// What the dialing side works with, lent by the core for each call.
pub struct Env<'a> {
    /// Media for the legs (ports, streams, prompts, bridges).
    pub calls: &'a mut Calls,
    /// The SIP endpoint (the legs are its outbound calls).
    pub endpoint: &'a mut Endpoint,
    /// The agents and their registrations.
    pub roster: &'a mut Roster,
}

/// Settings of the dialing side.
pub struct DialingSettings {
    /// How often due callbacks are looked up.
    pub poll_interval: Duration,
    /// The trunk.
    pub trunk: TrunkSettings,
    /// The trunk's resolved targets (RFC 3263), in order.
    pub trunk_targets: Vec<Target>,
    /// Caller ID per queue (the queue's callback number).
    pub caller_ids: HashMap<QueueId, PhoneNumber>,
    /// `[org] callback_numbers` (empty: no central list): a callback's
    /// asked caller ID no longer in it is not presented.
    pub callback_numbers: Vec<PhoneNumber>,
    /// Number rules (a stored number is re-validated before dialing).
    pub policy: NumberPolicy,
    /// Our identity for the agent leg's From.
    pub local_uri: String,
    /// The agent's cool-down after not answering, per queue (default 60 s).
    pub agent_cooldowns: HashMap<QueueId, Duration>,
    /// Queues whose bridged calls are recorded: (record, notice first).
    pub recording: HashMap<QueueId, (bool, bool)>,
    /// Where recordings go.
    pub recordings_dir: std::path::PathBuf,
    /// Recordings older than this are deleted.
    pub recording_retention: Duration,
    /// The missed-call rules, the calling window and the freeze.
    pub rules: RuleBook,
    /// Automatic callback calls at once.
    pub auto_lines: u32,
}

/// Per-queue maps of `settings` for [`DialingSettings`]: caller IDs,
/// recording (record, notice first), agent cool-downs.
#[allow(clippy::type_complexity)]
pub fn queue_maps(
    settings: &Settings,
) -> (
    HashMap<QueueId, PhoneNumber>,
    HashMap<QueueId, (bool, bool)>,
    HashMap<QueueId, Duration>,
) {
    let queues = settings.queues();
    (
        queues
            .iter()
            .map(|q| (q.id.clone(), q.caller_id.clone()))
            .collect(),
        queues
            .iter()
            .map(|q| (q.id.clone(), (q.recording, q.recording_notice)))
            .collect(),
        queues
            .iter()
            .map(|q| (q.id.clone(), q.agent_cooldown))
            .collect(),
    )
}

/// The dialing side of the engine.
pub struct Dialing {
    settings: DialingSettings,
    scheduler: Scheduler,
    launch_enabled: bool,
    /// Shutting down: no new callback is launched (live callers already
    /// waiting are still connected).
    draining: bool,
    cps: CpsLimiter,
    health: TargetHealth,
    next_poll: Instant,
    next_purge: Instant,
    polling: bool,
    next_id: u64,
    attempts: HashMap<u64, AttemptCtx>,
    live: HashMap<u64, LiveCtx>,
    legs: HashMap<CallKey, (u64, Side)>,
    /// Draws each call's RFC 2782 order of the trunk's targets.
    rng: fastrand::Rng,
    /// "No trunk target" was logged (once per outage).
    trunk_down_logged: bool,
    /// Automatic tasks to cancel, and why: sent with the next timer run.
    cancels: Vec<(TaskFilter, &'static str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Agent,
    Customer,
    /// An agent rung for a live caller waiting in a queue.
    LiveAgent,
}

/// A live caller being connected to an agent.
struct LiveCtx {
    caller: CallKey,
    queue: QueueId,
    agent: AgentId,
    leg: Option<CallKey>,
    /// When the agent answered: the handle time runs from here.
    answered: Option<Instant>,
    /// When the agent must have answered; taken when the CANCEL goes out,
    /// so an agent that ignores the CANCEL arms no timer in the past.
    ring_deadline: Option<Instant>,
}

struct AttemptCtx {
    callback: CallbackRow,
    /// An automatic task's settings, as its attempt was scheduled.
    task: Option<TaskSettings>,
    number: PhoneNumber,
    agent: AgentId,
    dialer: Option<Dialer>,
    settings: DialerSettings,
    started_at: Timestamp,
    agent_leg: Option<LegCtx>,
    customer_leg: Option<LegCtx>,
    customer_targets: Option<TargetList>,
    /// Waiting for the CPS cap before inviting the customer.
    customer_wait: Option<Instant>,
    /// When this attempt's first customer INVITE went out.
    customer_dialed_at: Option<Timestamp>,
    rang: bool,
    play_token: u32,
    claimed: bool,
}

struct LegCtx {
    call: CallKey,
    call_id: String,
    peer: String,
    started: Timestamp,
    answered: Option<Timestamp>,
    status: Option<u16>,
    ended: bool,
}

impl Dialing {
    /// The dialing side; agents come from the roster lent in [`Env`].
    pub fn new(
        settings: DialingSettings,
        scheduler: Scheduler,
        launch_enabled: bool,
        now: Instant,
    ) -> Result<Dialing, crate::callback::trunk::TrunkError> {
        Ok(Dialing {
            cps: settings.trunk.cps_limiter()?,
            health: settings.trunk.target_health(),
            next_poll: now,
            next_purge: now,
            settings,
            scheduler,
            launch_enabled,
            draining: false,
            polling: false,
            next_id: 1,
            attempts: HashMap::new(),
            live: HashMap::new(),
            legs: HashMap::new(),
            rng: fastrand::Rng::new(),
            trunk_down_logged: false,
            cancels: Vec::new(),
        })
    }

    /// The trunk's termination was looked up again (DNS changed, or it
    /// resolves now): calls from now on use `targets`; attempts under way
    /// keep the list they started with.
    pub fn set_trunk_targets(&mut self, targets: Vec<Target>) {
        self.settings.trunk_targets = targets;
    }

    /// The trunk's settings were reloaded (SIGHUP): numbering, caller-ID
    /// headers, credentials, CPS cap and failover for calls from now on;
    /// attempts under way keep theirs. The new termination's targets come
    /// with [`Dialing::set_trunk_targets`] once resolved.
    pub fn set_trunk(
        &mut self,
        trunk: TrunkSettings,
    ) -> Result<(), crate::callback::trunk::TrunkError> {
        self.cps = trunk.cps_limiter()?;
        self.health = trunk.target_health();
        self.settings.trunk = trunk;
        Ok(())
    }

    /// Takes the organisation of `settings` (changed at run time): caller
    /// IDs, number rules, cool-downs, recording and the scheduler (hours,
    /// priorities, retries, per-queue launch switches) for attempts from
    /// now on; attempts under way keep what they started with.
    pub fn apply_settings(&mut self, settings: &Settings) {
        let (caller_ids, recording, agent_cooldowns) = queue_maps(settings);
        self.settings.caller_ids = caller_ids;
        self.settings.callback_numbers = settings.org().callback_numbers.clone();
        self.settings.recording = recording;
        self.settings.agent_cooldowns = agent_cooldowns;
        self.settings.policy = settings.org().number_policy.clone();
        let old_queues: Vec<QueueId> = self.scheduler.queue_ids().cloned().collect();
        self.scheduler = settings.scheduler();
        self.launch_enabled = settings.org().gates.launch_enabled;
        self.settings.auto_lines = settings.org().auto_callback_lines;
        let rules = settings.org().rule_book();
        // Issue 13 point 3: the pending tasks of a rule switched off or
        // deleted, of a queue deleted, or of every rule when the
        // organisation is frozen, are cancelled as the change is applied
        // (sent to the store with the next timer run, which has the clock).
        let old = &self.settings.rules;
        if rules.frozen && !old.frozen {
            self.cancels.push((TaskFilter::All, "org_frozen"));
        }
        for rule in &old.rules {
            match rules.rule(&rule.id) {
                None => self
                    .cancels
                    .push((TaskFilter::Rule(rule.id.clone()), "rule_deleted")),
                Some(r) if !r.enabled && rule.enabled => self
                    .cancels
                    .push((TaskFilter::Rule(rule.id.clone()), "rule_disabled")),
                Some(_) => {}
            }
        }
        for queue in old_queues {
            if self.scheduler.queue(&queue).is_none() {
                self.cancels
                    .push((TaskFilter::Queue(queue), "queue_deleted"));
            }
        }
        self.settings.rules = rules;
    }

    /// The scheduler in use.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The launch switch (issue 4: stops new launches at once).
    pub fn set_launch_enabled(&mut self, enabled: bool) {
        self.launch_enabled = enabled;
    }

    /// Shutting down: launches no new callback from now on.
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    /// Hangs up every leg (the end of a drain); each attempt then ends as
    /// its legs' BYEs complete and is recorded as usual.
    pub fn hang_up_all(&mut self, now: Instant, env: &mut Env<'_>) {
        for call in self.legs.keys().copied().collect::<Vec<_>>() {
            let _ = env
                .endpoint
                .hangup_because(now, call, Reason::TEMPORARY_FAILURE);
        }
    }

    /// Whether no callback attempt and no live caller's agent leg is in
    /// progress.
    pub fn is_idle(&self) -> bool {
        self.attempts.is_empty() && self.live.is_empty() && self.legs.is_empty()
    }

    /// Whether `call` is one of our legs.
    pub fn owns(&self, call: CallKey) -> bool {
        self.legs.contains_key(&call)
    }

    /// The next wake-up: the poll, a dialer's ring timeout, a CPS wait.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Each attempt's ring deadline and CPS wait, whichever is set
        // (`Option::min` would take `None` for the smaller).
        let dialers = self
            .attempts
            .values()
            .flat_map(|a| {
                [
                    a.dialer.as_ref().and_then(Dialer::poll_timeout),
                    a.customer_wait,
                ]
            })
            .flatten()
            .min();
        let poll = (!self.polling).then_some(self.next_poll);
        let live = self
            .live
            .values()
            .filter(|l| l.answered.is_none())
            .filter_map(|l| l.ring_deadline)
            .min();
        [dialers, poll, live].into_iter().flatten().min()
    }

    /// Runs timers: polls the store, ring timeouts, delayed customer INVITEs.
    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env<'_>) {
        self.flush_cancels(now, env);
        if now >= self.next_purge {
            self.next_purge = now + PURGE_INTERVAL;
            env.calls.store(StoreRequest::PurgeRecordings {
                dir: self.settings.recordings_dir.clone(),
                retention: self.settings.recording_retention,
            });
            // Each rule's recordings are kept for the rule's own period.
            for rule in &self.settings.rules.rules {
                env.calls.store(StoreRequest::PurgeRecordings {
                    dir: rule_recordings_dir(&self.settings.recordings_dir, &rule.id),
                    retention: rule.recording_retention,
                });
            }
        }
        if !self.polling && now >= self.next_poll {
            env.calls.store(StoreRequest::Due {
                now: env.calls.wall(now),
            });
            self.polling = true;
            self.next_poll = now + self.settings.poll_interval;
        }
        for live in self.live.values_mut() {
            if live.answered.is_none()
                && live.ring_deadline.is_some_and(|d| d <= now)
                && let Some(leg) = live.leg
            {
                // The agent did not answer in time: CANCEL once; the leg's
                // end (Failed/Ended) finishes the connection attempt.
                live.ring_deadline = None;
                let _ = env.endpoint.hangup_because(now, leg, Reason::NO_ANSWER);
            }
        }
        let ids: Vec<u64> = self.attempts.keys().copied().collect();
        for id in ids {
            let Some(a) = self.attempts.get_mut(&id) else {
                continue;
            };
            if a.customer_wait.is_some_and(|w| w <= now) {
                a.customer_wait = None;
                self.invite_customer(now, id, env);
            }
            if let Some(a) = self.attempts.get_mut(&id)
                && let Some(d) = &mut a.dialer
            {
                d.handle_timeout(now);
            }
            self.drive(now, id, env);
        }
    }

    /// Sends the cancellations [`Dialing::apply_settings`] (or a launch
    /// that found a task's rule off) queued.
    fn flush_cancels(&mut self, now: Instant, env: &mut Env<'_>) {
        for (which, reason) in self.cancels.drain(..) {
            env.calls.store(StoreRequest::CancelTasks {
                which,
                reason: reason.to_owned(),
                now: env.calls.wall(now),
            });
        }
    }

    /// A store reply for the dialing side.
    pub fn handle_store_reply(&mut self, now: Instant, reply: StoreReply, env: &mut Env<'_>) {
        match reply {
            StoreReply::Due { rows } => {
                self.polling = false;
                self.plan(now, rows, env);
            }
            StoreReply::Claimed { attempt, id, won } => {
                let Some(a) = self.attempts.get_mut(&attempt) else {
                    return;
                };
                if !won {
                    // Another node (or an earlier attempt) has it: give the
                    // agent back.
                    debug!(callback = %id, "claim lost");
                    let agent = a.agent.clone();
                    self.attempts.remove(&attempt);
                    let _ = env.roster.agents_mut().released(&agent, now);
                    return;
                }
                a.claimed = true;
                info!(callback = %id, agent = %a.agent, number = %a.number.as_digits(), "callback launched");
                let prompt = a
                    .task
                    .as_ref()
                    .map_or(dialer::WHISPER_PROMPT, |t| t.agent_prompt.as_str());
                a.dialer = Some(Dialer::start_with(
                    now,
                    a.settings,
                    prompt,
                    &a.number.as_digits(),
                ));
                self.drive(now, attempt, env);
            }
            StoreReply::AttemptRecorded { id, result } => match result {
                Ok(Recorded::Applied(status)) => {
                    info!(callback = %id, status = status.as_str(), "attempt recorded")
                }
                Ok(Recorded::FailoverDuplicate { existing }) => {
                    info!(callback = %id, %existing, "failover queue already holds this number; marked failed")
                }
                Err(e) => warn!(callback = %id, error = %e, "attempt not recorded"),
            },
            StoreReply::Registered { .. } | StoreReply::PendingAhead { .. } => {}
        }
    }

    /// A SIP event on one of our legs.
    pub fn handle_sip_event(&mut self, now: Instant, event: Event, env: &mut Env<'_>) {
        let call = match &event {
            Event::Progress { call, .. }
            | Event::Answered { call, .. }
            | Event::Failed { call, .. }
            | Event::Ended { call, .. }
            | Event::Reoffer { call, .. }
            | Event::Info { call, .. }
            | Event::Confirmed { call, .. }
            | Event::IncomingCall { call, .. } => *call,
            // REGISTER is the roster's, never a leg's.
            Event::Register { .. } => return,
        };
        let Some(&(id, side)) = self.legs.get(&call) else {
            return;
        };
        if side == Side::LiveAgent {
            self.live_event(now, id, call, event, env);
            return;
        }
        let input = match event {
            Event::Progress { status, sdp, .. } => {
                let early = sdp.as_ref().is_some_and(|s| !s.is_empty());
                if let Some(sdp) = sdp.filter(|s| !s.is_empty()) {
                    env.calls.leg_answered(now, call, &sdp);
                }
                match side {
                    Side::Agent | Side::LiveAgent => None,
                    Side::Customer => {
                        if let Some(a) = self.attempts.get_mut(&id) {
                            a.rang |= status >= 180;
                            // The target answered: its hold-down ends.
                            if let Some(t) =
                                a.customer_targets.as_ref().and_then(TargetList::current)
                            {
                                self.health.mark_alive(t);
                            }
                        }
                        Some(dialer::Input::CustomerProgress {
                            status,
                            early_media: early,
                        })
                    }
                }
            }
            Event::Answered { sdp, .. } => {
                if !sdp.is_empty() {
                    env.calls.leg_answered(now, call, &sdp);
                }
                if side == Side::Customer
                    && let Some(t) = self
                        .attempts
                        .get(&id)
                        .and_then(|a| a.customer_targets.as_ref())
                        .and_then(TargetList::current)
                {
                    self.health.mark_alive(t);
                }
                let wall = env.calls.wall(now);
                if let Some(leg) = self.leg_mut(id, side) {
                    leg.answered = Some(wall);
                    leg.status = Some(200);
                }
                Some(match side {
                    Side::Agent | Side::LiveAgent => dialer::Input::AgentAnswered,
                    Side::Customer => dialer::Input::CustomerAnswered,
                })
            }
            Event::Failed {
                status,
                retry_after,
                received,
                ..
            } => {
                if let Some(leg) = self.leg_mut(id, side) {
                    leg.status = Some(status);
                    leg.ended = true;
                }
                self.end_leg(call, env);
                if side == Side::Customer
                    && self.failover(now, id, (status, retry_after, received), env)
                {
                    return;
                }
                Some(match side {
                    Side::Agent | Side::LiveAgent => dialer::Input::AgentFailed(status),
                    Side::Customer => dialer::Input::CustomerFailed(status),
                })
            }
            Event::Ended { reason, .. } => {
                if let Some(leg) = self.leg_mut(id, side) {
                    leg.ended = true;
                }
                self.end_leg(call, env);
                Some(match side {
                    // The agent's own BYE, or the leg lost under them.
                    Side::Agent | Side::LiveAgent if reason == EndReason::RemoteBye => {
                        dialer::Input::AgentEnded
                    }
                    Side::Agent | Side::LiveAgent => dialer::Input::AgentLost,
                    Side::Customer => dialer::Input::CustomerEnded,
                })
            }
            Event::Reoffer { method, sdp, .. } => {
                // Hold, resume, a refresh: answered, the leg's media follows
                // (a leg on hold gets nothing relayed; RFC 3264 §8.4).
                env.calls
                    .leg_reoffer(now, call, &method, &sdp, env.endpoint);
                None
            }
            Event::Confirmed { body, .. } => {
                // The ACK of our 2xx to a re-INVITE without SDP carries the
                // answer to the offer that 2xx held (RFC 3264 §4).
                if !body.is_empty() {
                    env.calls.leg_answered(now, call, &body);
                }
                None
            }
            Event::Info { .. } | Event::IncomingCall { .. } | Event::Register { .. } => None,
        };
        if let Some(input) = input
            && let Some(d) = self.attempts.get_mut(&id).and_then(|a| a.dialer.as_mut())
        {
            d.handle(now, input);
        }
        self.drive(now, id, env);
    }

    /// Hangs up one of our legs (its RTP stopped, its port is lost) and
    /// treats it as ended at once: the dialer reacts now (the other leg's
    /// BYE leaves in the same instant), not when the BYE transaction ends —
    /// a dead phone never answers it, and 64·T1 of silence is what the
    /// other party would hear.
    pub fn hang_up(&mut self, now: Instant, call: CallKey, why: Reason, env: &mut Env<'_>) {
        if !self.owns(call) {
            return;
        }
        let _ = env.endpoint.hangup_because(now, call, why);
        let reason = EndReason::LocalHangup;
        self.handle_sip_event(now, Event::Ended { call, reason }, env);
    }

    /// The agent leg's play list finished (media Idle with its token).
    pub fn prompt_done(&mut self, now: Instant, call: CallKey, token: u32, env: &mut Env<'_>) {
        let Some(&(id, Side::Agent)) = self.legs.get(&call) else {
            return;
        };
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        if a.play_token != token {
            return;
        }
        if let Some(d) = &mut a.dialer {
            d.handle(now, dialer::Input::AgentPromptDone);
        }
        self.drive(now, id, env);
    }

    fn plan(&mut self, now: Instant, rows: Vec<CallbackRow>, env: &mut Env<'_>) {
        // A caller whose agent is ringing waits for that agent's answer or
        // ring timeout: one agent rung at a time per caller.
        let mut live = env.calls.live_callers();
        live.retain(|c| !self.live.values().any(|l| l.caller.0 == c.caller.0));
        let free = env.roster.agents().free_agents(now);
        // Automatic tasks have lines of their own: the ones in progress
        // do not take the queues' lines.
        let auto_busy = self
            .attempts
            .values()
            .filter(|a| a.callback.source == Source::MissedCall)
            .count();
        let auto_busy = u32::try_from(auto_busy).unwrap_or(u32::MAX);
        let free_lines = env.roster.agents().free_lines().saturating_add(auto_busy);
        let free_auto_lines = self.settings.auto_lines.saturating_sub(auto_busy);
        // Callbacks already being dialed by this process are not due again;
        // a task whose rule is off or gone (or the organisation frozen) is
        // cancelled, not dialed.
        let mut retired = Vec::new();
        let rows: Vec<CallbackRow> = rows
            .into_iter()
            .filter(|r| !self.attempts.values().any(|a| a.callback.id == r.id))
            .filter(|r| {
                let Some(task) = task_of(r) else {
                    return true;
                };
                let Some(cancel) = self
                    .task_retired(&task)
                    .or_else(|| agent_gone(r, &task, env.roster.agents()))
                else {
                    return true;
                };
                if !retired.contains(&cancel) {
                    retired.push(cancel);
                }
                false
            })
            .collect();
        for cancel in retired {
            if !self.cancels.contains(&cancel) {
                self.cancels.push(cancel);
            }
        }
        // No trunk target (the termination does not resolve yet): ringing
        // an agent would only end in a failed customer attempt; callbacks
        // wait, live callers are still served.
        let trunk_down = self.settings.trunk_targets.is_empty();
        if trunk_down && !rows.is_empty() && !self.trunk_down_logged {
            warn!(
                due = rows.len(),
                "no trunk target; callbacks wait until the termination resolves"
            );
            self.trunk_down_logged = true;
        }
        if !trunk_down {
            self.trunk_down_logged = false;
        }
        let plan = self.scheduler.decide(
            env.calls.wall(now),
            &Snapshot {
                launch_enabled: self.launch_enabled
                    && !self.draining
                    && !self.settings.rules.frozen,
                callbacks: if trunk_down { &[] } else { &rows },
                live: &live,
                free_agents: &free,
                free_lines,
                free_auto_lines,
            },
        );
        // A task whose queue was deleted does not start (issue 13 point 3).
        for id in &plan.stranded {
            if let Some(row) = rows
                .iter()
                .find(|r| r.id == *id && r.source == Source::MissedCall)
            {
                let cancel = (TaskFilter::Queue(row.queue.clone()), "queue_deleted");
                if !self.cancels.contains(&cancel) {
                    self.cancels.push(cancel);
                }
            }
        }
        let mut serves = Vec::new();
        let launches: Vec<(CallbackId, QueueId, AgentId)> = plan
            .actions
            .into_iter()
            .filter_map(|action| match action {
                Plan::Launch {
                    callback,
                    queue,
                    agent,
                } => Some((callback, queue, agent)),
                Plan::Serve {
                    caller,
                    agent,
                    queue,
                } => {
                    serves.push((caller, agent, queue));
                    None
                }
                // Expiry is the store's (due() expires first).
                Plan::Expire(_) => None,
            })
            .collect();
        drop(free);
        self.flush_cancels(now, env);
        for (caller, agent, queue) in serves {
            self.serve(now, CallKey(caller.0), agent, queue, env);
        }
        for (callback, queue, agent) in launches {
            let Some(row) = rows.iter().find(|r| r.id == callback).cloned() else {
                continue;
            };
            let Ok(number) = validate(&row.number, &self.settings.policy) else {
                warn!(%callback, number = %row.number, "stored number no longer valid; skipped");
                continue;
            };
            let Some(policy) = self.scheduler.queue(&queue).map(|q| q.policy.clone()) else {
                continue;
            };
            let task = task_of(&row);
            if env
                .roster
                .agents_mut()
                .reserve(&agent, Work::Callback(callback), now)
                .is_err()
            {
                continue;
            }
            // Due → launched: hours, agents, lines and the poll all count.
            let launched = env.calls.wall(now);
            if let Some(due) = row.next_attempt_at {
                let lag = launched.duration_since(due).as_secs_f64().max(0.0);
                env.calls.telemetry_mut().scheduler_lag.observe(lag);
            }
            let id = self.next_id;
            self.next_id += 1;
            self.attempts.insert(
                id,
                AttemptCtx {
                    callback: row,
                    number,
                    agent,
                    dialer: None,
                    settings: DialerSettings {
                        agent_ring_timeout: policy.agent_ring_timeout,
                        customer_ring_timeout: task
                            .as_ref()
                            .map_or(policy.customer_ring_timeout, TaskSettings::wait_for_answer),
                    },
                    task,
                    started_at: env.calls.wall(now),
                    agent_leg: None,
                    customer_leg: None,
                    customer_targets: None,
                    customer_wait: None,
                    customer_dialed_at: None,
                    rang: false,
                    play_token: 0,
                    claimed: false,
                },
            );
            env.calls.store(StoreRequest::Claim {
                attempt: id,
                id: callback,
                now: env.calls.wall(now),
            });
        }
    }

    /// Rings `agent` for the live caller `caller` (issue 4: live callers
    /// reach a free agent in line order, interleaved with callbacks).
    fn serve(
        &mut self,
        now: Instant,
        caller: CallKey,
        agent: AgentId,
        queue: QueueId,
        env: &mut Env<'_>,
    ) {
        if env
            .roster
            .agents_mut()
            .reserve(&agent, Work::Live(CallerId(caller.0)), now)
            .is_err()
        {
            return;
        }
        let target = match env.roster.dial_target(&agent, now) {
            Ok(t) => t,
            Err(e) => {
                warn!(%agent, error = %e, "agent cannot be dialled");
                let _ = env.roster.agents_mut().released(&agent, now);
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let ring = self.scheduler.longest_ring().min(Duration::from_secs(60));
        self.live.insert(
            id,
            LiveCtx {
                caller,
                queue,
                agent: agent.clone(),
                leg: None,
                answered: None,
                ring_deadline: Some(now + ring),
            },
        );
        let invite = OutboundInvite {
            request_uri: target.request_uri.clone(),
            from: Party {
                display: Some("queue".into()),
                uri: self.settings.local_uri.clone(),
            },
            to: Party {
                display: None,
                uri: target.request_uri.clone(),
            },
            p_asserted_identity: None,
            next_hop: target.next_hop.clone(),
            stay_on_flow: target.stay_on_flow,
            sdp_offer: Bytes::new(),
            extra_headers: Vec::new(),
            credentials: None,
        };
        info!(
            %agent,
            call_id = %env.calls.call_id_of(caller).unwrap_or("-"),
            "ringing an agent for a live caller"
        );
        if self
            .open_leg(now, id, Side::LiveAgent, invite, &target.request_uri, env)
            .is_err()
        {
            self.live.remove(&id);
            let _ = env.roster.agents_mut().released(&agent, now);
        }
    }

    /// An event on a live caller's agent leg.
    fn live_event(
        &mut self,
        now: Instant,
        id: u64,
        call: CallKey,
        event: Event,
        env: &mut Env<'_>,
    ) {
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        match event {
            Event::Progress { sdp: Some(sdp), .. } if !sdp.is_empty() => {
                env.calls.leg_answered(now, call, &sdp)
            }
            Event::Answered { sdp, .. } => {
                if !sdp.is_empty() {
                    env.calls.leg_answered(now, call, &sdp);
                }
                live.answered = Some(now);
                let _ = env.roster.agents_mut().answered(&live.agent, now);
                if !env.calls.connect_to_agent(now, live.caller, call) {
                    // The caller left (or started registering) meanwhile.
                    let _ = env.endpoint.hangup(now, call);
                }
            }
            Event::Failed { .. } | Event::Ended { .. } => {
                // No CDR row for a live caller's agent leg: counted here.
                let outcome = match &event {
                    Event::Failed { status, .. } => leg_outcome(false, Some(*status)),
                    _ if live.answered.is_some() => LegOutcome::Answered,
                    _ => LegOutcome::Cancelled,
                };
                env.calls
                    .telemetry_mut()
                    .call_ended(CallDirection::OutboundAgent, outcome);
                let live = self.live.remove(&id).expect("looked up above");
                self.legs.remove(&call);
                env.calls.close_leg(call);
                if let Some(answered) = live.answered {
                    let _ = env.roster.agents_mut().released(&live.agent, now);
                    // A live call's talk time is a handle time of its queue,
                    // as a bridged callback's is.
                    env.calls
                        .record_handle_time(&live.queue, now.duration_since(answered));
                    // The agent hung up: the caller's call ends too.
                    let _ = env.endpoint.hangup(now, live.caller);
                } else {
                    let cooldown = self.cooldown(&live.queue);
                    let _ = env
                        .roster
                        .agents_mut()
                        .no_answer(&live.agent, now, cooldown);
                    // Should the caller now hang up, this agent missed it.
                    env.calls.agent_missed(live.caller, live.agent.as_str());
                }
            }
            Event::Reoffer { method, sdp, .. } => {
                env.calls
                    .leg_reoffer(now, call, &method, &sdp, env.endpoint)
            }
            Event::Confirmed { body, .. } if !body.is_empty() => {
                env.calls.leg_answered(now, call, &body);
            }
            Event::Progress { .. }
            | Event::Info { .. }
            | Event::Confirmed { .. }
            | Event::IncomingCall { .. }
            | Event::Register { .. } => {}
        }
    }

    fn drive(&mut self, now: Instant, id: u64, env: &mut Env<'_>) {
        loop {
            let Some(a) = self.attempts.get_mut(&id) else {
                return;
            };
            let Some(action) = a.dialer.as_mut().and_then(Dialer::poll_action) else {
                return;
            };
            match action {
                dialer::Action::InviteAgent => self.invite_agent(now, id, env),
                dialer::Action::CancelAgent | dialer::Action::HangupAgent => {
                    let why = match action {
                        dialer::Action::CancelAgent => Reason::NO_ANSWER,
                        _ => Reason::NORMAL_CLEARING,
                    };
                    if let Some(leg) = a.agent_leg.as_ref().filter(|l| !l.ended) {
                        let _ = env.endpoint.hangup_because(now, leg.call, why);
                    }
                }
                dialer::Action::CancelCustomer { .. } | dialer::Action::HangupCustomer => {
                    let why = match action {
                        dialer::Action::CancelCustomer { ring_timeout: true } => Reason::NO_ANSWER,
                        _ => Reason::NORMAL_CLEARING,
                    };
                    if let Some(leg) = a.customer_leg.as_ref().filter(|l| !l.ended) {
                        let _ = env.endpoint.hangup_because(now, leg.call, why);
                    }
                    a.customer_wait = None;
                }
                dialer::Action::PlayToAgent(names) => {
                    if let Some(leg) = &a.agent_leg {
                        a.play_token = a.play_token.wrapping_add(1);
                        env.calls.play_names(leg.call, &names, a.play_token);
                    }
                }
                dialer::Action::PlayRingbackToAgent => {
                    if let Some(leg) = &a.agent_leg {
                        a.play_token = a.play_token.wrapping_add(1);
                        env.calls.play_loop(leg.call, "ringback", a.play_token);
                    }
                }
                dialer::Action::RelayEarlyMedia => {
                    if let (Some(agent), Some(customer)) = (&a.agent_leg, &a.customer_leg) {
                        env.calls.bridge(agent.call, customer.call);
                    }
                }
                dialer::Action::Bridge => {
                    if let (Some(agent), Some(customer)) = (&a.agent_leg, &a.customer_leg) {
                        env.calls.bridge(agent.call, customer.call);
                        if a.claimed {
                            env.calls.store(StoreRequest::Connected {
                                id: a.callback.id,
                                at: env.calls.wall(now),
                                agent: a.agent.as_str().to_owned(),
                            });
                        }
                        // Issue 4 point 7: the bridged call as a stereo WAV,
                        // after the notice to the customer when configured.
                        let name = format!(
                            "callback-{}-{}.wav",
                            a.callback.id,
                            env.calls.wall(now).as_second()
                        );
                        // An automatic task records by its rule (into the
                        // rule's directory, after the rule's notice); any
                        // other callback by its queue.
                        let recording = match &a.task {
                            Some(task) => task.recording_notice.as_ref().map(|notice| {
                                (
                                    rule_recordings_dir(&self.settings.recordings_dir, &task.rule)
                                        .join(&name),
                                    Some(notice.as_str().into()),
                                )
                            }),
                            None => match self.settings.recording.get(&a.callback.queue) {
                                Some(&(true, notice)) => Some((
                                    self.settings.recordings_dir.join(&name),
                                    notice.then(|| "recording_notice".into()),
                                )),
                                _ => None,
                            },
                        };
                        if let Some((path, notice)) = recording {
                            info!(callback = %a.callback.id, path = %path.display(), "recording");
                            env.calls.record(agent.call, customer.call, path, notice);
                        }
                    }
                }
                dialer::Action::InviteCustomer => match self.cps.try_acquire(now) {
                    Ok(()) => self.invite_customer(now, id, env),
                    Err(wait) => {
                        debug!(
                            wait_ms = wait.as_millis() as u64,
                            "trunk CPS cap: customer INVITE delayed"
                        );
                        a.customer_wait = Some(now + wait);
                    }
                },
                dialer::Action::Finished {
                    outcome,
                    customer_status,
                } => {
                    self.finish(now, id, outcome, customer_status, env);
                    return;
                }
            }
        }
    }

    fn invite_agent(&mut self, now: Instant, id: u64, env: &mut Env<'_>) {
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        let target = match env.roster.dial_target(&a.agent, now) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(agent = %a.agent, error = %e, "agent cannot be dialled");
                None
            }
        };
        let Some(target) = target else {
            if let Some(d) = &mut a.dialer {
                d.handle(now, dialer::Input::AgentFailed(480));
            }
            return;
        };
        let invite = OutboundInvite {
            request_uri: target.request_uri.clone(),
            from: Party {
                display: Some("callback".into()),
                uri: self.settings.local_uri.clone(),
            },
            to: Party {
                display: None,
                uri: target.request_uri.clone(),
            },
            p_asserted_identity: None,
            next_hop: target.next_hop.clone(),
            stay_on_flow: target.stay_on_flow,
            sdp_offer: Bytes::new(),
            extra_headers: Vec::new(),
            credentials: None,
        };
        match self.open_leg(now, id, Side::Agent, invite, &target.request_uri, env) {
            Ok(()) => {}
            Err(status) => {
                if let Some(d) = self.attempts.get_mut(&id).and_then(|a| a.dialer.as_mut()) {
                    d.handle(now, dialer::Input::AgentFailed(status));
                }
            }
        }
    }

    fn invite_customer(&mut self, now: Instant, id: u64, env: &mut Env<'_>) {
        let trunk = &self.settings.trunk;
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        let targets = a.customer_targets.get_or_insert_with(|| {
            TargetList::new(
                order_for_call(&self.settings.trunk_targets, &mut self.rng),
                trunk.max_targets,
            )
        });
        let Some(target) = targets
            .first(now, &self.health)
            .cloned()
            .or_else(|| targets.current().cloned())
        else {
            warn!("the trunk has no target");
            if let Some(d) = &mut a.dialer {
                d.handle(now, dialer::Input::CustomerFailed(503));
            }
            return;
        };
        self.invite_customer_at(now, id, target.destination(), env);
    }

    fn invite_customer_at(
        &mut self,
        now: Instant,
        id: u64,
        next_hop: Destination,
        env: &mut Env<'_>,
    ) {
        let trunk = &self.settings.trunk;
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        let request_uri = customer_request_uri(&a.number, trunk);
        let agent_numbers = env
            .roster
            .agents()
            .get(&a.agent)
            .map_or(&[][..], |agent| agent.callback_numbers());
        let asked = a.callback.caller_id.as_deref();
        // An automatic task presents its rule's number, or the number the
        // customer dialed (ours: the DID), whatever the lists say.
        let task_caller_id = a
            .task
            .as_ref()
            .and_then(|t| t.caller_id.as_deref())
            .and_then(|digits| own_number(digits).ok());
        let caller_id = task_caller_id.or_else(|| {
            presented_caller_id(
                asked,
                self.settings.caller_ids.get(&a.callback.queue),
                agent_numbers,
                &self.settings.callback_numbers,
            )
        });
        if let Some(asked) = asked
            && !caller_id.as_ref().is_some_and(|c| c.has_digits(asked))
        {
            warn!(
                callback = %a.callback.id,
                asked,
                "the callback's caller ID is no longer one this agent may present; \
                 presenting the queue's or the agent's"
            );
        }
        let (from, pai) = match &caller_id {
            Some(id) => (strip_angle(&from_header(id, trunk)), pai_header(id, trunk)),
            None => (self.settings.local_uri.clone(), None),
        };
        let invite = OutboundInvite {
            request_uri: request_uri.clone(),
            from: Party {
                display: None,
                uri: from,
            },
            to: Party {
                display: None,
                uri: request_uri.clone(),
            },
            p_asserted_identity: pai,
            next_hop,
            stay_on_flow: false,
            sdp_offer: Bytes::new(),
            extra_headers: Vec::new(),
            credentials: trunk.credentials.as_ref().map(|c| {
                Box::new(crate::sip::digest::DigestAuthenticator::new(
                    &c.username,
                    c.password.expose(),
                    fastrand::u64(..),
                )) as Box<dyn crate::sip::uac::Authenticator>
            }),
        };
        if let Err(status) = self.open_leg(now, id, Side::Customer, invite, &request_uri, env)
            && let Some(d) = self.attempts.get_mut(&id).and_then(|a| a.dialer.as_mut())
        {
            d.handle(now, dialer::Input::CustomerFailed(status));
        }
    }

    /// Binds media, builds the offer, sends the INVITE, remembers the leg.
    #[allow(clippy::too_many_arguments)]
    fn open_leg(
        &mut self,
        now: Instant,
        id: u64,
        side: Side,
        mut invite: OutboundInvite,
        peer: &str,
        env: &mut Env<'_>,
    ) -> Result<(), u16> {
        let Some(leg) = env.calls.reserve_leg(now) else {
            warn!("no RTP port for an outbound leg");
            return Err(503);
        };
        invite.sdp_offer = Bytes::from(leg.offer.clone());
        let hop_ip = match &invite.next_hop {
            Destination::Udp(a) | Destination::Tcp { remote: a, .. } => Some(a.ip()),
            Destination::Resolve { .. } => None,
        };
        let call = match env.endpoint.invite(now, invite) {
            Ok(call) => call,
            Err(e) => {
                warn!(error = %e, "outbound INVITE refused");
                env.calls.release_leg(now, leg);
                return Err(500);
            }
        };
        // The leg's own SIP Call-ID, for logs and its CDR row.
        let call_id = env
            .endpoint
            .call_id(call)
            .map_or_else(|| format!("leg-{}", call.0), str::to_owned);
        env.calls
            .attach_leg(call, Arc::from(call_id.as_str()), leg, hop_ip);
        self.legs.insert(call, (id, side));
        let ctx = LegCtx {
            call,
            call_id,
            peer: peer.to_owned(),
            started: env.calls.wall(now),
            answered: None,
            status: None,
            ended: false,
        };
        match side {
            Side::LiveAgent => {
                if let Some(live) = self.live.get_mut(&id) {
                    live.leg = Some(call);
                }
            }
            Side::Agent | Side::Customer => {
                if let Some(a) = self.attempts.get_mut(&id) {
                    if side == Side::Agent {
                        a.agent_leg = Some(ctx);
                    } else {
                        if a.customer_dialed_at.is_none() {
                            a.customer_dialed_at = Some(ctx.started);
                            // The first dial of this callback ever: how far
                            // the announced ECBT was off, in the queue that
                            // announced it.
                            let cb = &a.callback;
                            if cb.customer_dialed_at.is_none()
                                && let Some(error) = telemetry::ecbt_error(
                                    cb.registered_at,
                                    cb.ecbt_quoted_minutes,
                                    ctx.started,
                                )
                            {
                                let queue = cb.moved_from.as_ref().unwrap_or(&cb.queue);
                                info!(callback = %cb.id, %queue, error_s = error.as_secs_f64(), "customer dialed; ECBT error");
                                env.calls.telemetry_mut().ecbt_error(queue, error);
                            }
                        }
                        a.customer_leg = Some(ctx);
                    }
                }
            }
        }
        Ok(())
    }

    /// A 503, or no answer at all (Timer B, a transport error), before the
    /// customer rang: the next trunk target (RFC 3263 failover). Returns
    /// true when retried.
    fn failover(
        &mut self,
        now: Instant,
        id: u64,
        (status, retry_after, received): (u16, Option<Duration>, bool),
        env: &mut Env<'_>,
    ) -> bool {
        let Some(a) = self.attempts.get_mut(&id) else {
            return false;
        };
        let Some(failure) = TargetFailure::from_response(status, retry_after, a.rang, received)
        else {
            return false;
        };
        let Some(targets) = a.customer_targets.as_mut() else {
            return false;
        };
        let Some(next) = targets.next_after(failure, now, &mut self.health).cloned() else {
            return false;
        };
        info!(status, next = %next.addr, "trunk target failed; trying the next");
        a.customer_leg = None;
        self.invite_customer_at(now, id, next.destination(), env);
        true
    }

    fn finish(
        &mut self,
        now: Instant,
        id: u64,
        outcome: Outcome,
        customer_status: Option<u16>,
        env: &mut Env<'_>,
    ) {
        let Some(a) = self.attempts.remove(&id) else {
            return;
        };
        let ended_at = env.calls.wall(now);
        // The agent: back to work, or cooling down when it did not answer.
        let agent_answered = a.agent_leg.as_ref().is_some_and(|l| l.answered.is_some());
        if outcome == Outcome::AgentNoAnswer && !agent_answered {
            let cooldown = self.cooldown(&a.callback.queue);
            let _ = env.roster.agents_mut().no_answer(&a.agent, now, cooldown);
        } else {
            let _ = env.roster.agents_mut().released(&a.agent, now);
        }
        for leg in [&a.agent_leg, &a.customer_leg].into_iter().flatten() {
            if !leg.ended {
                let _ = env.endpoint.hangup(now, leg.call);
            }
        }
        // A bridged callback's talk time is a handle time of its queue.
        if let Some(answered) = a.customer_leg.as_ref().and_then(|l| l.answered)
            && outcome == Outcome::Answered
        {
            let talk = ended_at.duration_since(answered);
            env.calls
                .record_handle_time(&a.callback.queue, talk.unsigned_abs());
        }
        let bridged = a
            .customer_leg
            .as_ref()
            .and_then(|l| l.answered)
            .map(|answered| ended_at.duration_since(answered));
        let (outcome, next) = self.after_attempt(&a, outcome, bridged, ended_at);
        info!(
            callback = %a.callback.id,
            outcome = outcome.as_str(),
            customer_status,
            ?next,
            "callback attempt finished"
        );
        if a.claimed {
            env.calls.store(StoreRequest::RecordAttempt {
                id: a.callback.id,
                attempt: Box::new(Attempt {
                    started_at: a.started_at,
                    ended_at,
                    outcome,
                    sip_status: customer_status,
                    agent: Some(a.agent.as_str().to_owned()),
                    customer_dialed_at: a.customer_dialed_at,
                }),
                next: Box::new(next),
            });
        }
        for (leg, kind) in [(&a.agent_leg, Leg::Agent), (&a.customer_leg, Leg::Customer)] {
            let Some(leg) = leg else { continue };
            env.calls.store(StoreRequest::WriteCdr(Box::new(CdrRecord {
                callback: Some(a.callback.id),
                source: Some(a.callback.source),
                inbound_call_id: a.callback.inbound_call_id.clone(),
                leg: kind,
                call_id: leg.call_id.clone(),
                start: leg.started,
                answer: leg.answered,
                end: ended_at,
                outcome: leg_outcome(leg.answered.is_some(), leg.status),
                sip_code: leg.status,
                peer: leg.peer.clone(),
                redirected_from: None,
            })));
        }
    }

    /// What an attempt's end means. A plain callback: the scheduler's
    /// table. An automatic task (issue 13 point 6): answered counts only
    /// when the customer stayed bridged `success_after` (shorter is a
    /// [`Outcome::ShortCall`], a failed attempt); a failed attempt is
    /// followed by the next interval of the rule as it is now
    /// ([`RuleBook::next_attempt`]), or none.
    fn after_attempt(
        &self,
        a: &AttemptCtx,
        outcome: Outcome,
        bridged: Option<jiff::SignedDuration>,
        ended_at: Timestamp,
    ) -> (Outcome, NextStep) {
        let Some(task) = &a.task else {
            return (
                outcome,
                self.scheduler.after_attempt(&a.callback, outcome, ended_at),
            );
        };
        let short = bridged.is_some_and(|b| b.unsigned_abs() < task.success_after());
        let outcome = match outcome {
            Outcome::Answered | Outcome::AgentLost if short => Outcome::ShortCall,
            other => other,
        };
        let next = match outcome {
            Outcome::Answered | Outcome::AgentLost => NextStep::Completed,
            Outcome::InvalidNumber => NextStep::Failed,
            // Not a customer attempt: the same settings, another agent.
            Outcome::AgentNoAnswer | Outcome::Interrupted => {
                self.scheduler.after_attempt(&a.callback, outcome, ended_at)
            }
            Outcome::Busy | Outcome::NoAnswer | Outcome::Failure | Outcome::ShortCall => {
                match self.settings.rules.next_attempt(task, &a.number, ended_at) {
                    Some((at, settings)) if at < a.callback.expires_at => NextStep::Retry {
                        at,
                        task: Some(settings.to_json()),
                    },
                    Some(_) => NextStep::Expired,
                    None => NextStep::Failed,
                }
            }
        };
        (outcome, next)
    }

    /// Why an automatic task must be cancelled rather than dialed: its
    /// rule was switched off or deleted, or the organisation frozen.
    fn task_retired(&self, task: &TaskSettings) -> Option<(TaskFilter, &'static str)> {
        let rules = &self.settings.rules;
        if rules.frozen {
            return Some((TaskFilter::All, "org_frozen"));
        }
        let by_rule = || TaskFilter::Rule(task.rule.clone());
        match rules.rule(&task.rule) {
            None => Some((by_rule(), "rule_deleted")),
            Some(rule) if !rule.enabled => Some((by_rule(), "rule_disabled")),
            Some(_) => None,
        }
    }

    fn end_leg(&mut self, call: CallKey, env: &mut Env<'_>) {
        self.legs.remove(&call);
        env.calls.close_leg(call);
    }

    fn cooldown(&self, queue: &QueueId) -> Duration {
        self.settings
            .agent_cooldowns
            .get(queue)
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }

    fn leg_mut(&mut self, id: u64, side: Side) -> Option<&mut LegCtx> {
        let a = self.attempts.get_mut(&id)?;
        match side {
            Side::Agent | Side::LiveAgent => a.agent_leg.as_mut(),
            Side::Customer => a.customer_leg.as_mut(),
        }
    }
}

/// A task sent back to the agent that missed the call, whose agent was
/// deleted or no longer serves the queue: it does not start.
fn agent_gone(
    row: &CallbackRow,
    task: &TaskSettings,
    agents: &Agents,
) -> Option<(TaskFilter, &'static str)> {
    let name = task.agent.as_deref()?;
    let serves = agents
        .get(&AgentId(name.into()))
        .is_some_and(|a| a.serves(&row.queue));
    (!serves).then_some((TaskFilter::Id(row.id), "agent_deleted"))
}

/// Where the recordings of a missed-call rule's calls go (each rule's
/// directory is purged with its own retention).
pub fn rule_recordings_dir(dir: &std::path::Path, rule: &str) -> std::path::PathBuf {
    dir.join("rules").join(rule)
}

/// How often old recordings are looked for.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// A leg's CDR outcome from whether it was answered and its final status.
fn leg_outcome(answered: bool, status: Option<u16>) -> LegOutcome {
    if answered {
        return LegOutcome::Answered;
    }
    match status {
        Some(486 | 600) => LegOutcome::Busy,
        Some(408 | 480) => LegOutcome::NoAnswer,
        Some(404 | 484 | 604) => LegOutcome::InvalidNumber,
        // Our own CANCEL (ring timeout, or the other leg went away).
        Some(487) | None => LegOutcome::Cancelled,
        Some(_) => LegOutcome::Failure,
    }
}

/// `<sip:…>` → `sip:…` (the UAC adds its own brackets and tag).
fn strip_angle(value: &str) -> String {
    value
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leg_outcomes_follow_the_final_status() {
        assert_eq!(leg_outcome(true, Some(200)), LegOutcome::Answered);
        assert_eq!(leg_outcome(false, Some(486)), LegOutcome::Busy);
        assert_eq!(leg_outcome(false, Some(480)), LegOutcome::NoAnswer);
        assert_eq!(leg_outcome(false, Some(604)), LegOutcome::InvalidNumber);
        assert_eq!(leg_outcome(false, Some(487)), LegOutcome::Cancelled);
        assert_eq!(leg_outcome(false, None), LegOutcome::Cancelled);
        assert_eq!(leg_outcome(false, Some(503)), LegOutcome::Failure);
    }
}
