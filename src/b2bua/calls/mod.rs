//! The call layer: what happens to an answered call.
//!
//! `INVITE → 100 → 200 (SDP) → ACK`, then the caller is in its queue (place
//! in line = arrival time) and the IVR [`Flow`] takes over: greeting, ECBT,
//! callback offer, number entry, read-back, durable registration, goodbye.
//! This layer is the flow's hands: it plays what the flow asks (play lists
//! carry a token so only the current one can report "done"), feeds it digits
//! (RFC 4733 events and SIP INFO), asks the store thread for the ECBT's
//! pending callbacks and for the commit, and hangs up when told — or when the
//! configured maximum call length passes.
//!
//! Port life: allocated when the INVITE is accepted, handed to the media
//! thread with the stream, and returned to the pool only when the media
//! thread confirms the stream (and its sockets) are gone — so a port is never
//! reused while a socket still holds it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{debug, info, warn};

use crate::acd::agents::Agents;
use crate::acd::{Acd, CallerId};
use crate::b2bua::WallClock;
use crate::b2bua::media::{MediaCommand, MediaEvent, StreamParams};
use crate::b2bua::store::{StoreReply, StoreRequest};
use crate::b2bua::telemetry::{CallDirection, QueueEcbt, Telemetry};
use crate::callback::CallbackId;
use crate::callback::QueueId;
use crate::callback::cdr::{CdrRecord, Leg, LegOutcome};
use crate::callback::hours::{BusinessHours, GateDecision, Gates, registration_gate};
use crate::callback::number::national_from_ani;
use crate::callback::rules::{MissKind, Missed, MissedCall, RuleBook};
use crate::callback::scheduler::LiveCaller;
use crate::callback::store::{NewCallback, Registration, Source, TaskFilter};
use crate::callback::webhook::SipContext;
use crate::config::{Codec, Routes, Settings};
use crate::ivr::Ecbt;
use crate::ivr::ecbt::{Estimator, callers_ahead};
use crate::ivr::flow::{Action, CallInfo, Flow, FlowSettings, Input, Prompt, RegistrationOutcome};
use crate::media::digits::{DigitMerger, DigitSource, parse_info_digit};
use crate::media::dtmf::DtmfDigit;
use crate::media::g711::Law;
use crate::media::player::Item;
use crate::media::ports::PortPool;
use crate::media::prompt::{PromptId, PromptLibrary, Ptime};
use crate::sip::endpoint::{CallKey, EndReason, Endpoint, Event, Reason};
use crate::sip::identity::{CallerIdentity, user_part};
use crate::sip::message::{Method, Request};
mod legs;

use legs::LegMedia;
pub use legs::ReservedLeg;

use crate::sip::sdp::{
    self, LocalMedia, NegotiatedMedia, NegotiationError, SessionDescription, SessionVersion,
};

/// Every call the engine is handling.
pub struct Calls {
    calls: HashMap<CallKey, CallCtx>,
    /// Ports whose stream is being removed: released on `Removed`.
    closing: HashMap<u64, u16>,
    /// Outbound legs' media (the dialing side's calls).
    legs: HashMap<CallKey, LegMedia>,
    /// Per-call wake-ups (flow timers, maximum length); an entry is stale
    /// unless it equals the call's `scheduled`.
    deadlines: BinaryHeap<Reverse<(Instant, CallKey)>>,
    ports: PortPool,
    /// Commands for the media plane, drained by the controller.
    media: VecDeque<MediaCommand>,
    /// Requests for the store, drained by the controller.
    store: VecDeque<StoreRequest>,
    /// The wall clock, as of the controller's last reading.
    clock: WallClock,
    prompts: Arc<PromptLibrary>,
    hold: Option<PromptId>,
    acd: Acd,
    gates: Gates,
    org_hours: BusinessHours,
    queues: Vec<QueueRuntime>,
    /// DID routing: the queue (index into `queues`) of a called number.
    routes: Routes,
    flow_settings: FlowSettings,
    rtp_advertised: IpAddr,
    codecs: Vec<Law>,
    ptime_ms: u32,
    max_calls: usize,
    max_duration: Duration,
    /// Counters for metrics (see [`Telemetry`]).
    telemetry: Telemetry,
    /// The missed-call rules and the calling window.
    rules: RuleBook,
}

struct CallCtx {
    call_id: Arc<str>,
    port: u16,
    local: LocalMedia,
    version: SessionVersion,
    signalling_peer: IpAddr,
    /// The media in use, once negotiated.
    media: Option<NegotiatedMedia>,
    /// Our offer awaiting an answer in the ACK (late offer).
    awaiting_answer: bool,
    stream_added: bool,
    /// Index into `Calls::queues`.
    queue: usize,
    /// Arrival: the place in line (monotonic for the queue, wall clock for
    /// the store).
    arrived: Instant,
    arrived_at: Timestamp,
    ani: Option<String>,
    /// Where the call was redirected from (Diversion / History-Info), for
    /// its CDR.
    redirected_from: Option<String>,
    /// Diversion, History-Info and User-to-User of the INVITE, stored with
    /// the callback it registers (webhook payloads carry them).
    sip_context: SipContext,
    called: String,
    /// The IVR, once the call is confirmed.
    flow: Option<Flow>,
    /// Waiting for the store's pending-callback count before `Start`.
    starting: bool,
    /// The flow was started with ECBT announcements (launching enabled):
    /// only then is an estimate quoted, and stored as quoted.
    announces_ecbt: bool,
    /// Token of the play list the flow last asked for.
    play_token: u32,
    /// One digit per key press across RFC 4733, INFO and in-band.
    digits: DigitMerger,
    /// The agent leg this caller is talking to (the IVR is then detached).
    connected_to: Option<CallKey>,
    /// The callback this call registered, for its CDR row.
    callback: Option<CallbackId>,
    /// The caller reached the queue's hold (a hang-up from then on is
    /// missed in the contact center, before it in the IVR).
    was_queued: bool,
    /// The caller needs no automatic callback: it registered one, already
    /// had one, or talked to an agent.
    settled: bool,
    /// An agent rung for this caller who did not answer.
    missed_agent: Option<String>,
    /// The caller (From URI), for its CDR row.
    from: String,
    max_deadline: Option<Instant>,
    scheduled: Option<Instant>,
    /// Until the media plane has bound the port: the offer (if any) and how
    /// many ports were tried. The 200 is sent on [`MediaEvent::Ready`].
    binding: Option<Binding>,
}

/// An inbound call whose RTP port is being bound.
struct Binding {
    offer: Option<SessionDescription>,
    tries: u8,
    /// The 200's SDP.
    body: String,
}

/// The outcome of negotiating an inbound call's session on one port.
struct Negotiated {
    local: LocalMedia,
    version: SessionVersion,
    body: String,
    media: Option<NegotiatedMedia>,
}

/// How many ports an inbound call tries before it is refused with 503.
const BIND_TRIES: u8 = 16;

/// A queue's settings as the call layer uses them.
struct QueueRuntime {
    id: QueueId,
    priority: i32,
    offer_after: Duration,
    expiry: Duration,
    hours: Option<BusinessHours>,
    /// The queue's own switches (each applies with the organisation's).
    gates: Gates,
    /// The queue was deleted from the organisation at run time: calls in
    /// it go on, no new call is routed to it. Kept so that the indices of
    /// the calls in progress stay valid.
    retired: bool,
    /// The queue's rolling handle time, fed by its bridged calls.
    estimator: Estimator,
    /// The ECBT last announced to a registering caller, in minutes.
    last_quoted: Option<u32>,
}

impl Calls {
    /// The call layer for `settings`.
    pub fn new(settings: &Settings, prompts: Arc<PromptLibrary>, clock: WallClock) -> Calls {
        let org = settings.org();
        let queues = settings
            .queues()
            .iter()
            .map(|q| QueueRuntime {
                id: q.id.clone(),
                priority: q.priority,
                offer_after: q.offer_after,
                expiry: q.callback_expiry,
                hours: q.hours.clone(),
                gates: q.gates,
                retired: false,
                estimator: settings.estimator(),
                last_quoted: None,
            })
            .collect();
        let ivr = settings.ivr();
        let flow_settings = FlowSettings {
            first_digit_timeout: ivr.first_digit_timeout(),
            inter_digit_timeout: ivr.inter_digit_timeout(),
            max_invalid: ivr.max_invalid,
            offer_after: Duration::ZERO,
            announce_interval: ivr.announce_interval(),
            policy: org.number_policy.clone(),
            spoken_international_prefix: org.spoken_international_prefix,
        };
        Calls {
            calls: HashMap::new(),
            closing: HashMap::new(),
            legs: HashMap::new(),
            deadlines: BinaryHeap::new(),
            ports: settings.rtp_ports(),
            media: VecDeque::new(),
            store: VecDeque::new(),
            clock,
            hold: prompts.id("hold_music"),
            prompts,
            acd: settings.acd(),
            gates: org.gates,
            org_hours: org.hours.clone(),
            queues,
            routes: settings.routes(),
            flow_settings,
            rtp_advertised: settings.rtp().advertised_ip(),
            codecs: settings
                .media()
                .codecs
                .iter()
                .map(|c| match c {
                    Codec::Pcmu => Law::Ulaw,
                    Codec::Pcma => Law::Alaw,
                })
                .collect(),
            ptime_ms: settings.media().ptime_ms,
            max_calls: settings.call().max_calls as usize,
            max_duration: settings.call().max_duration(),
            telemetry: Telemetry::default(),
            rules: org.rule_book(),
        }
    }

    /// The runtime registration switches (the configuration gives the
    /// initial values).
    pub fn set_gates(&mut self, gates: Gates) {
        info!(?gates, "gates changed");
        self.gates = gates;
    }

    /// Queues a command for the media plane.
    pub fn media_command(&mut self, command: MediaCommand) {
        self.media.push_back(command);
    }

    /// Plays prompts from `prompts` from now on (reloaded files).
    pub fn set_prompts(&mut self, prompts: Arc<PromptLibrary>) {
        self.hold = prompts.id("hold_music");
        self.prompts = prompts;
    }

    /// Takes the organisation of `settings` (changed at run time): the
    /// organisation's switches, hours and number rules, and every queue's
    /// settings, effective for the next call. Calls in progress keep their
    /// queue; a queue that is gone is retired (no call is routed to it),
    /// a new one is added; a kept queue keeps its callers and its learned
    /// handle time.
    pub fn apply_settings(&mut self, settings: &Settings) {
        let org = settings.org();
        self.gates = org.gates;
        self.org_hours = org.hours.clone();
        self.flow_settings.policy = org.number_policy.clone();
        self.flow_settings.spoken_international_prefix = org.spoken_international_prefix;
        let mut index = Vec::with_capacity(settings.queues().len());
        for q in settings.queues() {
            let i = match self.queues.iter().position(|r| r.id == q.id) {
                Some(i) => i,
                None => {
                    self.queues.push(QueueRuntime {
                        id: q.id.clone(),
                        priority: q.priority,
                        offer_after: q.offer_after,
                        expiry: q.callback_expiry,
                        hours: q.hours.clone(),
                        gates: q.gates,
                        retired: false,
                        estimator: settings.estimator(),
                        last_quoted: None,
                    });
                    self.queues.len() - 1
                }
            };
            let runtime = &mut self.queues[i];
            runtime.priority = q.priority;
            runtime.offer_after = q.offer_after;
            runtime.expiry = q.callback_expiry;
            runtime.hours = q.hours.clone();
            runtime.gates = q.gates;
            runtime.retired = false;
            self.acd.configure(&q.id, q.priority, q.staffed_agents);
            index.push(i);
        }
        for (i, runtime) in self.queues.iter_mut().enumerate() {
            if !index.contains(&i) {
                runtime.retired = true;
            }
        }
        self.routes = settings.routes().renumbered(&index);
        self.rules = org.rule_book();
        info!(queues = index.len(), "organisation applied");
    }

    /// The current gates.
    pub fn gates(&self) -> Gates {
        self.gates
    }

    /// The next command for the media plane.
    pub fn poll_media(&mut self) -> Option<MediaCommand> {
        self.media.pop_front()
    }

    /// The next request for the store. A CDR row on its way counts its
    /// call as ended.
    pub fn poll_store(&mut self) -> Option<StoreRequest> {
        let request = self.store.pop_front()?;
        if let StoreRequest::WriteCdr(cdr) = &request {
            self.telemetry
                .call_ended(CallDirection::of_leg(cdr.leg), cdr.outcome);
        }
        Some(request)
    }

    /// The counters of the call layer (the dialing side's too).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The counters, to bump.
    pub fn telemetry_mut(&mut self) -> &mut Telemetry {
        &mut self.telemetry
    }

    /// Every queue's estimator as it stands, with the staffing an estimate
    /// would use now (see [`Calls::estimate`]).
    pub fn queue_ecbts(&self, agents: &Agents) -> Vec<QueueEcbt> {
        self.queues
            .iter()
            .filter(|q| !q.retired)
            .map(|q| QueueEcbt {
                queue: q.id.clone(),
                average_handle_time: q.estimator.average_handle_time(),
                staffed_agents: self.staffed(&q.id, agents),
                last_announced_minutes: q.last_quoted,
            })
            .collect()
    }

    /// Queues a request for the store (the dialing side's too, so the store
    /// sees every request in the order it was made).
    pub fn store(&mut self, request: StoreRequest) {
        self.store.push_back(request);
    }

    /// The wall clock: the controller's latest reading.
    pub fn set_clock(&mut self, clock: WallClock) {
        self.clock = clock;
    }

    /// The wall-clock time at `now`.
    pub fn wall(&self, now: Instant) -> Timestamp {
        self.clock.at(now)
    }

    /// A call of `queue` handled by an agent for `d` (a bridged callback, a
    /// live caller connected to an agent): it feeds the queue's rolling
    /// average handle time, and so every ECBT announced after it.
    pub fn record_handle_time(&mut self, queue: &QueueId, d: Duration) {
        if let Some(q) = self.queues.iter_mut().find(|q| q.id == *queue) {
            q.estimator.record_handle_time(d);
            debug!(%queue, handle_s = d.as_secs_f64(), aht_s = q.estimator.average_handle_time().as_secs_f64(), "handle time recorded");
        }
    }

    /// Calls in progress.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// RTP port pairs in use (including those being closed).
    pub fn ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// The next maximum-call-length deadline.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if self.calls.get(&key).and_then(|c| c.scheduled) == Some(at) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Runs the flows' timers and hangs up calls that reached the maximum
    /// length.
    pub fn handle_timeout(&mut self, now: Instant, endpoint: &mut Endpoint) {
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            let Some(ctx) = self.calls.get_mut(&key) else {
                continue;
            };
            if ctx.scheduled != Some(at) {
                continue;
            }
            ctx.scheduled = None;
            if ctx.max_deadline.is_some_and(|d| d <= now) {
                info!(call_id = %ctx.call_id, "maximum call length reached; hanging up");
                ctx.max_deadline = None;
                let _ = endpoint.hangup(now, key);
                if let Some(agent) = ctx.connected_to {
                    let _ = endpoint.hangup(now, agent);
                }
            }
            if let Some(flow) = &mut ctx.flow {
                flow.handle_timeout(now);
            }
            self.drive(now, key, endpoint);
        }
    }

    /// Hangs up every call (shutdown).
    pub fn hangup_all(&mut self, now: Instant, endpoint: &mut Endpoint) {
        for key in self.calls.keys().copied().collect::<Vec<_>>() {
            let _ = endpoint.hangup_because(now, key, Reason::TEMPORARY_FAILURE);
        }
    }

    /// Reacts to a SIP event.
    pub fn handle_sip_event(&mut self, now: Instant, event: Event, endpoint: &mut Endpoint) {
        match event {
            Event::IncomingCall {
                call,
                request,
                source,
            } => {
                self.incoming(now, call, &request, source.remote.ip(), endpoint);
            }
            Event::Confirmed { call, body } => self.confirmed(now, call, &body, endpoint),
            Event::Reoffer { call, method, sdp } => {
                self.reoffer(now, call, &method, &sdp, endpoint);
            }
            Event::Info {
                call,
                content_type,
                body,
            } => {
                let Some(ctx) = self.calls.get(&call) else {
                    return;
                };
                match parse_info_digit(&content_type, &body) {
                    Ok(digit) => {
                        info!(digit = %digit.as_char(), call_id = %ctx.call_id, source = "info", "dtmf");
                        self.digit(now, call, DigitSource::Info, digit, endpoint);
                    }
                    Err(e) => debug!(call_id = %ctx.call_id, error = %e, "INFO without a digit"),
                }
            }
            Event::Ended { call, reason } => {
                // A caller talking to an agent hangs up: the agent leg ends too.
                if let Some(agent_leg) = self.calls.get(&call).and_then(|c| c.connected_to) {
                    let _ = endpoint.hangup(now, agent_leg);
                }
                self.ended(now, call, reason);
            }
            // Outbound calls (issue 4) are the dialer's; the IVR places none.
            Event::Progress { .. } | Event::Answered { .. } | Event::Failed { .. } => {}
            // The core hands REGISTERs to the agent roster, never here.
            Event::Register { .. } => {}
        }
    }

    /// Reacts to a media-thread event.
    pub fn handle_media_event(&mut self, now: Instant, event: MediaEvent, endpoint: &mut Endpoint) {
        match event {
            MediaEvent::Digit { key, digit, inband } => {
                let Some(ctx) = self.calls.get(&CallKey(key)) else {
                    return;
                };
                let (source, name) = if inband {
                    (DigitSource::Inband, "inband")
                } else {
                    (DigitSource::Rfc4733, "rfc4733")
                };
                info!(digit = %digit.as_char(), call_id = %ctx.call_id, source = name, "dtmf");
                self.digit(now, CallKey(key), source, digit, endpoint);
            }
            MediaEvent::RtpTimeout { key } => {
                if let Some(ctx) = self.calls.get(&CallKey(key)) {
                    info!(call_id = %ctx.call_id, "no RTP; hanging up");
                    let _ = endpoint.hangup_because(now, CallKey(key), Reason::TIMER_EXPIRY);
                    // The agent talking to this caller goes at once, not
                    // when a dead caller's BYE has timed out.
                    if let Some(agent) = ctx.connected_to {
                        let _ = endpoint.hangup(now, agent);
                    }
                }
            }
            MediaEvent::Removed { key } => {
                if let Some(port) = self.closing.remove(&key)
                    && let Err(e) = self.ports.release(port, now)
                {
                    warn!(error = %e, port, "port release");
                }
            }
            MediaEvent::Idle { key, token } => {
                let call = CallKey(key);
                let Some(ctx) = self.calls.get_mut(&call) else {
                    return;
                };
                // Only the play list the flow asked for last counts.
                if token != ctx.play_token {
                    return;
                }
                if let Some(flow) = &mut ctx.flow {
                    flow.handle(now, Input::PlaybackDone);
                }
                self.drive(now, call, endpoint);
            }
            MediaEvent::Ready { key } => self.stream_ready(now, CallKey(key), endpoint),
            MediaEvent::AddFailed { key } => self.stream_failed(now, CallKey(key), endpoint),
            MediaEvent::PromptFinished { .. } => {}
        }
    }

    /// Reacts to an answer from the store thread.
    /// `agents` tells the staffing the ECBT divides by.
    pub fn handle_store_reply(
        &mut self,
        now: Instant,
        reply: StoreReply,
        endpoint: &mut Endpoint,
        agents: &Agents,
    ) {
        match reply {
            // The dialing side's replies; the core routes them there.
            StoreReply::Due { .. }
            | StoreReply::Claimed { .. }
            | StoreReply::AttemptRecorded { .. } => {}
            StoreReply::PendingAhead { call, count } => {
                let call = CallKey(call);
                let Some(ecbt) = self.estimate(call, count, agents) else {
                    return;
                };
                let Some(ctx) = self.calls.get_mut(&call) else {
                    return;
                };
                let Some(flow) = &mut ctx.flow else {
                    return;
                };
                if ctx.starting {
                    ctx.starting = false;
                    let queue = &self.queues[ctx.queue];
                    let gate = registration_gate(
                        &self.gates.and(queue.gates),
                        &self.org_hours,
                        queue.hours.as_ref(),
                        self.clock.at(now),
                    );
                    let (offer_callbacks, announce_ecbt) = match gate {
                        GateDecision::Offer { announce_ecbt } => (true, announce_ecbt),
                        GateDecision::Unavailable => (false, false),
                    };
                    if !offer_callbacks {
                        // The caller hears "unable" and is disconnected: it
                        // must not count as ahead of anyone meanwhile.
                        if let Some(q) = self.acd.queue_mut(&queue.id) {
                            q.leave(CallerId(call.0));
                        }
                    }
                    ctx.announces_ecbt = announce_ecbt;
                    info!(call_id = %ctx.call_id, queue = %queue.id, offer_callbacks, ?ecbt, "IVR starts");
                    flow.handle(
                        now,
                        Input::Start {
                            offer_callbacks,
                            announce_ecbt,
                            ecbt,
                        },
                    );
                } else {
                    info!(call_id = %ctx.call_id, ?ecbt, "ECBT refreshed");
                    flow.handle(now, Input::Ecbt(ecbt));
                }
                self.drive(now, call, endpoint);
            }
            StoreReply::Registered { call, result } => {
                let call = CallKey(call);
                let Some(ctx) = self.calls.get_mut(&call) else {
                    // The caller hung up while the commit ran: the row (if
                    // any) stands; nothing else to do.
                    return;
                };
                let outcome = match result {
                    Ok(Registration::Registered(id)) => {
                        info!(call_id = %ctx.call_id, callback = %id, "callback registered");
                        ctx.callback = Some(id);
                        // The stored callback now holds the caller's place.
                        if let Some(q) = self.acd.queue_mut(&self.queues[ctx.queue].id) {
                            q.leave(CallerId(call.0));
                        }
                        RegistrationOutcome::Registered
                    }
                    Ok(Registration::AlreadyScheduled(id)) => {
                        info!(call_id = %ctx.call_id, callback = %id, "callback already scheduled");
                        ctx.settled = true;
                        RegistrationOutcome::AlreadyScheduled
                    }
                    Err(e) => {
                        warn!(call_id = %ctx.call_id, error = %e, "callback not stored");
                        RegistrationOutcome::Failed
                    }
                };
                if let Some(flow) = &mut ctx.flow {
                    flow.handle(now, Input::RegistrationDone(outcome));
                }
                self.drive(now, call, endpoint);
            }
        }
    }

    /// The ECBT for `call` given the pending callbacks ahead of it.
    /// Staffing: the queue's agents who are reachable (static, or
    /// registered now) and not paused; a queue with no agent configured
    /// (IVR only, agents elsewhere) uses its configured `staffed_agents`.
    fn estimate(&self, call: CallKey, pending_ahead: u32, agents: &Agents) -> Option<Ecbt> {
        let ctx = self.calls.get(&call)?;
        let runtime = &self.queues[ctx.queue];
        let queue = &runtime.id;
        let position = self
            .acd
            .queue(queue)
            .and_then(|q| q.position(CallerId(call.0)))
            .unwrap_or(1);
        let ahead = callers_ahead(position, pending_ahead);
        let staffed = self.staffed(queue, agents);
        let ecbt = runtime.estimator.estimate(ahead, staffed);
        debug!(call_id = %ctx.call_id, position, pending_ahead, staffed, ?ecbt, "ECBT estimated");
        Some(ecbt)
    }

    /// The staffing of `queue` an estimate divides by: its agents who are
    /// reachable and not paused, or its configured `staffed_agents` when no
    /// agent is configured for it.
    fn staffed(&self, queue: &QueueId, agents: &Agents) -> u32 {
        if agents.iter().any(|a| a.serves(queue)) {
            agents.staffed(queue)
        } else {
            self.acd.staffed_agents(queue)
        }
    }

    /// A digit for the call's flow, once per key press whichever ways the
    /// peer sent it (RFC 4733 and INFO together are common).
    fn digit(
        &mut self,
        now: Instant,
        call: CallKey,
        source: DigitSource,
        digit: DtmfDigit,
        endpoint: &mut Endpoint,
    ) {
        let Some(ctx) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(digit) = ctx.digits.push(now, source, digit) else {
            debug!(call_id = %ctx.call_id, ?source, "duplicate digit dropped");
            return;
        };
        *self.telemetry.dtmf_digits.entry(source).or_default() += 1;
        let Some(flow) = ctx.flow.as_mut() else {
            return;
        };
        flow.handle(now, Input::Digit(digit));
        self.drive(now, call, endpoint);
    }

    /// Carries out what the flow asks, then re-arms the call's wake-up.
    fn drive(&mut self, now: Instant, call: CallKey, endpoint: &mut Endpoint) {
        loop {
            let Some(ctx) = self.calls.get_mut(&call) else {
                return;
            };
            let Some(action) = ctx.flow.as_mut().and_then(Flow::poll_action) else {
                break;
            };
            match action {
                Action::Play(prompts) => {
                    ctx.play_token = ctx.play_token.wrapping_add(1);
                    let items = prompts
                        .iter()
                        .filter_map(|p| match p {
                            Prompt::Named(name) => self.prompts.id(name).map(Item::Prompt),
                            Prompt::Hold => self.hold.map(Item::Loop),
                        })
                        .collect();
                    self.media.push_back(MediaCommand::Play {
                        key: call.0,
                        items,
                        token: ctx.play_token,
                    });
                }
                Action::StopPlayback => {
                    ctx.play_token = ctx.play_token.wrapping_add(1);
                    self.media.push_back(MediaCommand::Play {
                        key: call.0,
                        items: Vec::new(),
                        token: ctx.play_token,
                    });
                }
                Action::RequestEcbt => {
                    let queue = self.queues[ctx.queue].id.clone();
                    self.store.push_back(StoreRequest::PendingAhead {
                        call: call.0,
                        queue,
                        queued_at: ctx.arrived_at,
                    });
                }
                Action::Register { number } => {
                    let queue = &mut self.queues[ctx.queue];
                    let registered_at = self.clock.at(now);
                    // With launching off the caller was told no time: none
                    // was quoted, whatever the flow estimated.
                    let quoted = match ctx.flow.as_ref().and_then(Flow::ecbt) {
                        Some(Ecbt::Minutes(m) | Ecbt::MoreThan(m)) if ctx.announces_ecbt => m,
                        Some(_) | None => 0,
                    };
                    if quoted > 0 {
                        queue.last_quoted = Some(quoted);
                    }
                    let expires_at = registered_at
                        .checked_add(
                            jiff::SignedDuration::try_from(queue.expiry)
                                .unwrap_or(jiff::SignedDuration::MAX),
                        )
                        .unwrap_or(Timestamp::MAX);
                    let new = NewCallback {
                        queue: queue.id.clone(),
                        number: number.as_digits(),
                        caller_ani: ctx.ani.clone().unwrap_or_default(),
                        called_number: ctx.called.clone(),
                        priority: queue.priority,
                        queued_at: ctx.arrived_at,
                        registered_at,
                        ecbt_quoted_minutes: quoted,
                        expires_at,
                        inbound_call_id: ctx.call_id.to_string(),
                        sip_context: Some(ctx.sip_context.clone()),
                    };
                    info!(call_id = %ctx.call_id, number = %number.as_digits(), "registering callback");
                    self.store.push_back(StoreRequest::Register {
                        call: call.0,
                        new: Box::new(new),
                    });
                }
                Action::ReturnToQueue => {
                    let queue = &self.queues[ctx.queue].id;
                    let position = self
                        .acd
                        .queue(queue)
                        .and_then(|q| q.position(CallerId(call.0)));
                    info!(call_id = %ctx.call_id, %queue, ?position, "returned to the queue");
                }
                Action::Hangup => {
                    debug!(call_id = %ctx.call_id, "flow hangs up");
                    let _ = endpoint.hangup(now, call);
                }
            }
        }
        if let Some(ctx) = self.calls.get_mut(&call)
            && ctx.flow.as_ref().is_some_and(Flow::reached_queue)
        {
            ctx.was_queued = true;
        }
        self.reschedule(call);
    }

    fn reschedule(&mut self, call: CallKey) {
        let Some(ctx) = self.calls.get_mut(&call) else {
            return;
        };
        let flow = ctx.flow.as_ref().and_then(Flow::poll_timeout);
        let next = match (flow, ctx.max_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next != ctx.scheduled {
            ctx.scheduled = next;
            if let Some(at) = next {
                self.deadlines.push(Reverse((at, call)));
            }
        }
    }

    fn incoming(
        &mut self,
        now: Instant,
        call: CallKey,
        request: &Request,
        peer: IpAddr,
        endpoint: &mut Endpoint,
    ) {
        let call_id: Arc<str> = request.headers.call_id.as_str().into();
        // The called number: the Request-URI's user part (the trunk's DID),
        // else To's.
        let called = user_part(&request.uri)
            .or_else(|| user_part(&request.headers.to.uri))
            .unwrap_or_default()
            .to_owned();
        if self.calls.len() >= self.max_calls {
            warn!(%call_id, max = self.max_calls, "call limit reached; 503");
            let _ = endpoint.reject(now, call, 503, &[("Retry-After", "5")]);
            return;
        }
        // The offer: none (late offer), SDP (alone or the SDP part of a
        // multipart body, SIP-I), or something we cannot read.
        let sdp = request.sdp();
        let offer = if request.body.is_empty() {
            None
        } else if let Some(sdp) = sdp {
            match SessionDescription::parse(&sdp) {
                Ok(sdp) => Some(sdp),
                Err(e) => {
                    debug!(%call_id, error = %e, "malformed SDP; 400");
                    let warning = format!("399 callbackd \"malformed SDP: {e}\"");
                    let _ = endpoint.reject(now, call, 400, &[("Warning", &warning)]);
                    return;
                }
            }
        } else {
            let _ = endpoint.reject(now, call, 415, &[("Accept", "application/sdp")]);
            return;
        };
        let Some(port) = self.ports.allocate(now) else {
            warn!(%call_id, "no RTP port free; 503");
            let _ = endpoint.reject(now, call, 503, &[("Retry-After", "5")]);
            return;
        };
        let negotiated = match self.negotiate(offer.as_ref(), port) {
            Ok(n) => n,
            Err(e) => {
                let status = match e {
                    NegotiationError::NoLocalCodecs => 500,
                    _ => 488,
                };
                debug!(%call_id, error = %e, status, "offer refused");
                let warning = format!("304 callbackd \"{e}\"");
                let _ = endpoint.reject(now, call, status, &[("Warning", &warning)]);
                self.ports_release_now(now, port);
                return;
            }
        };
        // Every INVITE reaching us came from the trunk's allow-list (the
        // endpoint refused the rest), the trust domain whose
        // P-Asserted-Identity and Privacy we honour (RFC 3325 §5). A
        // withheld number is never offered nor read back, nor stored.
        let identity = CallerIdentity::of(&request.headers, true);
        info!(
            %call_id,
            from = request.headers.from.uri.as_ref(),
            ani = identity.number.as_deref().unwrap_or(if identity.withheld { "withheld" } else { "" }),
            to = request.headers.to.uri.as_ref(),
            peer = %peer,
            codec = ?negotiated.media.as_ref().map(|m| m.law),
            ptime = ?negotiated.media.as_ref().map(|m| m.ptime_ms),
            "call started"
        );
        let mut ctx = CallCtx {
            call_id: call_id.clone(),
            port,
            local: negotiated.local,
            version: negotiated.version,
            signalling_peer: peer,
            awaiting_answer: negotiated.media.is_none(),
            media: negotiated.media,
            stream_added: false,
            queue: self.routes.queue_for(&called),
            arrived: now,
            arrived_at: self.clock.at(now),
            redirected_from: identity.redirection(),
            sip_context: SipContext {
                diversion: identity.diversion.clone(),
                history_info: identity.history_info.clone(),
                user_to_user: request
                    .headers
                    .fields()
                    .iter()
                    .filter(|f| {
                        f.other_name
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case("User-to-User"))
                    })
                    .map(|f| f.value.to_string())
                    .collect(),
            },
            ani: identity.number,
            called,
            flow: None,
            starting: false,
            announces_ecbt: false,
            play_token: 0,
            digits: DigitMerger::new(),
            connected_to: None,
            callback: None,
            was_queued: false,
            settled: false,
            missed_agent: None,
            from: request.headers.from.uri.to_string(),
            max_deadline: None,
            scheduled: None,
            binding: Some(Binding {
                offer,
                tries: 1,
                body: negotiated.body,
            }),
        };
        self.add_stream(call, &mut ctx);
        self.calls.insert(call, ctx);
    }

    /// Our side of a session on `port` and the SDP for the 200: the answer
    /// to `offer`, or our offer when the INVITE had none (late offer).
    fn negotiate(
        &self,
        offer: Option<&SessionDescription>,
        port: u16,
    ) -> Result<Negotiated, NegotiationError> {
        let local = self.local_media(port);
        let mut version = SessionVersion::new(local.session_id);
        let (body, media) = match offer {
            Some(offer) => {
                let answer = sdp::answer(offer, &local)?;
                (version.stamp(&answer.sdp), Some(answer.media))
            }
            None => (version.stamp(&sdp::offer(&local)), None),
        };
        Ok(Negotiated {
            local,
            version,
            body,
            media,
        })
    }

    /// Asks the media plane for the call's stream on its port: with the
    /// negotiated media, or silent until the ACK brings the answer (late
    /// offer).
    fn add_stream(&mut self, call: CallKey, ctx: &mut CallCtx) {
        let params = match &ctx.media {
            Some(media) => stream_params(media, ctx.signalling_peer),
            None => StreamParams {
                law: self.codecs.first().copied().unwrap_or(Law::Ulaw),
                payload_type: self.codecs.first().map_or(0, |l| l.payload_type()),
                telephone_event: None,
                ptime: Ptime::DEFAULT,
                remote: None,
                signalling_peer: ctx.signalling_peer,
                send: false,
                receive: false,
                rtcp: None,
            },
        };
        self.media.push_back(MediaCommand::Add {
            key: call.0,
            call_id: ctx.call_id.clone(),
            ports: ctx.port,
            params,
        });
        ctx.stream_added = true;
    }

    /// The media plane bound the call's port: the 200 goes out now.
    fn stream_ready(&mut self, now: Instant, call: CallKey, endpoint: &mut Endpoint) {
        let Some(ctx) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(binding) = ctx.binding.take() else {
            return;
        };
        if endpoint.answer(now, call, binding.body.as_bytes()).is_err() {
            warn!(call_id = %ctx.call_id, "answer refused by the endpoint");
        }
    }

    /// The call's port could not be bound (another process holds it): the
    /// port is set aside for good and the next one tried, up to
    /// [`BIND_TRIES`]; then 503. An outbound leg without media is hung up
    /// (its attempt fails and is retried).
    fn stream_failed(&mut self, now: Instant, key: CallKey, endpoint: &mut Endpoint) {
        if let Some(leg) = self.legs.remove(&key) {
            warn!(
                port = leg.port,
                "RTP port of an outbound leg cannot be bound; hanging up"
            );
            let _ = self.ports.mark_unusable(leg.port);
            let _ = endpoint.hangup(now, key);
            return;
        }
        let Some(mut ctx) = self.calls.remove(&key) else {
            return;
        };
        ctx.stream_added = false;
        let _ = self.ports.mark_unusable(ctx.port);
        let Some(mut binding) = ctx.binding.take() else {
            // Answered already (cannot happen: the 200 waits for Ready).
            warn!(call_id = %ctx.call_id, "stream lost after the answer; hanging up");
            let _ = endpoint.hangup(now, key);
            self.calls.insert(key, ctx);
            return;
        };
        debug!(call_id = %ctx.call_id, port = ctx.port, "RTP port busy; trying another");
        let next = (binding.tries < BIND_TRIES)
            .then(|| self.ports.allocate(now))
            .flatten();
        let Some(port) = next else {
            warn!(call_id = %ctx.call_id, "no RTP port can be bound; 503");
            let _ = endpoint.reject(now, key, 503, &[("Retry-After", "5")]);
            return;
        };
        let Ok(negotiated) = self.negotiate(binding.offer.as_ref(), port) else {
            // It negotiated on the first port; only the port changed.
            self.ports_release_now(now, port);
            let _ = endpoint.reject(now, key, 500, &[]);
            return;
        };
        binding.tries += 1;
        binding.body = negotiated.body;
        ctx.port = port;
        ctx.local = negotiated.local;
        ctx.version = negotiated.version;
        ctx.media = negotiated.media;
        ctx.binding = Some(binding);
        self.add_stream(key, &mut ctx);
        self.calls.insert(key, ctx);
    }

    fn confirmed(&mut self, now: Instant, call: CallKey, body: &[u8], endpoint: &mut Endpoint) {
        let Some(ctx) = self.calls.get_mut(&call) else {
            return;
        };
        if ctx.awaiting_answer {
            ctx.awaiting_answer = false;
            let answer = SessionDescription::parse(body)
                .map_err(|e| e.to_string())
                .and_then(|sdp| sdp::process_answer(&ctx.local, &sdp).map_err(|e| e.to_string()));
            match answer {
                Ok(media) => {
                    let params = stream_params(&media, ctx.signalling_peer);
                    ctx.media = Some(media);
                    self.media.push_back(MediaCommand::Update {
                        key: call.0,
                        params,
                    });
                }
                Err(e) => {
                    // RFC 3264 §5 / RFC 3261 §13.2.1: a bad or missing answer
                    // in the ACK leaves no session; end the call.
                    info!(call_id = %ctx.call_id, error = %e, "no usable SDP answer in ACK; hanging up");
                    let _ = endpoint.hangup(now, call);
                    return;
                }
            }
        }
        if ctx.media.is_none() {
            return;
        }
        // A re-INVITE's ACK confirms again: only the first starts the flow.
        if ctx.flow.is_some() {
            return;
        }
        // In line from now on; the IVR starts once the store has said how
        // many callbacks are ahead (for the first ECBT).
        let queue = &self.queues[ctx.queue];
        let position = self.acd.queue_mut(&queue.id).map(|q| {
            q.join(CallerId(call.0), ctx.arrived, queue.priority)
                .unwrap_or_else(|e| {
                    warn!(error = %e, "queue join");
                    0
                })
        });
        debug!(call_id = %ctx.call_id, queue = %queue.id, ?position, "in queue");
        let settings = FlowSettings {
            offer_after: queue.offer_after,
            ..self.flow_settings.clone()
        };
        let info = CallInfo {
            ani: ctx.ani.clone(),
            called: ctx.called.clone(),
        };
        ctx.flow = Some(Flow::new(ctx.arrived, settings, info));
        ctx.starting = true;
        ctx.max_deadline = Some(now + self.max_duration);
        self.store.push_back(StoreRequest::PendingAhead {
            call: call.0,
            queue: queue.id.clone(),
            queued_at: ctx.arrived_at,
        });
        self.reschedule(call);
    }

    fn reoffer(
        &mut self,
        now: Instant,
        call: CallKey,
        method: &Method,
        offer: &[u8],
        endpoint: &mut Endpoint,
    ) {
        let Some(ctx) = self.calls.get_mut(&call) else {
            return;
        };
        if offer.is_empty() && *method == Method::Update {
            // RFC 3311 §5.2: an UPDATE without a body is a refresh (RFC
            // 4028); it carries no offer, so its 200 carries no answer and
            // the offer/answer state stays as it is.
            let _ = endpoint.answer_reoffer(now, call, b"");
            return;
        }
        if offer.is_empty() {
            // re-INVITE without SDP: we offer our current session (the same
            // body and o= version: nothing changed, RFC 3264 §8, RFC 6337
            // §5.3); the answer comes in the ACK.
            let body = match ctx.version.last_sent() {
                Some(current) => current.to_owned(),
                None => ctx.version.stamp(&sdp::offer(&ctx.local)),
            };
            ctx.awaiting_answer = true;
            let _ = endpoint.answer_reoffer(now, call, body.as_bytes());
            return;
        }
        let parsed = match SessionDescription::parse(offer) {
            Ok(sdp) => sdp,
            Err(e) => {
                debug!(call_id = %ctx.call_id, error = %e, "malformed SDP in re-offer");
                let _ = endpoint.reject_reoffer(now, call, 400);
                return;
            }
        };
        match sdp::answer(&parsed, &ctx.local) {
            Ok(answer) => {
                let body = ctx.version.stamp(&answer.sdp);
                let media = answer.media;
                let params = stream_params(&media, ctx.signalling_peer);
                debug!(call_id = %ctx.call_id, direction = ?media.direction, remote = ?media.remote, "re-offer answered");
                ctx.media = Some(media);
                self.media.push_back(MediaCommand::Update {
                    key: call.0,
                    params,
                });
                let _ = endpoint.answer_reoffer(now, call, body.as_bytes());
            }
            Err(e) => {
                debug!(error = %e, "re-offer refused");
                let _ = endpoint.reject_reoffer(now, call, 488);
            }
        }
    }

    fn ended(&mut self, now: Instant, call: CallKey, reason: EndReason) {
        let Some(ctx) = self.calls.remove(&call) else {
            return;
        };
        info!(call_id = %ctx.call_id, ?reason, "call ended");
        // A caller connected to an agent: the handle time is the agent
        // leg's, recorded once by the dialing side when that leg ends.
        // Issue 4 point 6: a CDR row for the inbound leg too (answered at
        // once; linked to the callback it registered, if any).
        self.store
            .push_back(StoreRequest::WriteCdr(Box::new(CdrRecord {
                callback: ctx.callback,
                source: ctx.callback.map(|_| Source::Ivr),
                inbound_call_id: ctx.call_id.to_string(),
                leg: Leg::Inbound,
                call_id: ctx.call_id.to_string(),
                start: ctx.arrived_at,
                answer: Some(ctx.arrived_at),
                end: self.clock.at(now),
                outcome: LegOutcome::Answered,
                sip_code: Some(200),
                peer: ctx.from.clone(),
                redirected_from: ctx.redirected_from.clone(),
            })));
        if let Some(q) = self.acd.queue_mut(&self.queues[ctx.queue].id) {
            q.leave(CallerId(call.0));
        }
        self.missed(now, &ctx, reason);
        if ctx.stream_added {
            self.closing.insert(call.0, ctx.port);
            self.media.push_back(MediaCommand::Remove { key: call.0 });
        } else {
            self.ports_release_now(now, ctx.port);
        }
    }

    /// Issue 13: a caller who hung up unserved may be called back
    /// automatically, by rule ([`RuleBook::on_missed`]). Only the caller's
    /// own hang-up counts (BYE or CANCEL): a call we ended (registration
    /// off, maximum length, shutdown) was not missed by the caller.
    fn missed(&mut self, now: Instant, ctx: &CallCtx, reason: EndReason) {
        if ctx.settled
            || ctx.callback.is_some()
            || ctx.connected_to.is_some()
            || !matches!(reason, EndReason::RemoteBye | EndReason::Cancelled)
            || self.rules.rules.is_empty()
        {
            return;
        }
        let queue = &self.queues[ctx.queue];
        let ani = ctx.ani.clone().unwrap_or_default();
        let call = MissedCall {
            kind: if ctx.was_queued {
                MissKind::ContactCenter
            } else {
                MissKind::Ivr
            },
            queue: queue.id.clone(),
            priority: queue.priority,
            expiry: queue.expiry,
            number: national_from_ani(&ani, &self.flow_settings.policy),
            ani,
            called: ctx.called.clone(),
            arrived_at: ctx.arrived_at,
            ended_at: self.clock.at(now),
            agent: ctx.missed_agent.clone(),
            call_id: ctx.call_id.to_string(),
        };
        match self.rules.on_missed(&call) {
            Missed::NotCounted(why) => {
                debug!(call_id = %ctx.call_id, kind = call.kind.as_str(), ?why, "hang-up not counted as missed");
            }
            Missed::Task(task) => {
                info!(
                    call_id = %ctx.call_id,
                    kind = call.kind.as_str(),
                    rule = %task.rule,
                    number = %task.callback.number,
                    first_attempt_at = ?task.first_attempt_at,
                    reason = ?task.reason,
                    "missed call: automatic callback task"
                );
                self.store.push_back(StoreRequest::CreateTask(task));
            }
        }
    }

    /// An agent rung for the waiting caller `caller` did not answer (the
    /// agent that missed the call, should the caller hang up).
    pub fn agent_missed(&mut self, caller: CallKey, agent: &str) {
        if let Some(ctx) = self.calls.get_mut(&caller) {
            ctx.missed_agent = Some(agent.to_owned());
        }
    }

    fn ports_release_now(&mut self, now: Instant, port: u16) {
        if let Err(e) = self.ports.release(port, now) {
            warn!(error = %e, port, "port release");
        }
    }

    // -----------------------------------------------------------------
    // Live callers and agents

    /// Callers simply waiting in their queue (hold music, ECBT), in the
    /// scheduler's terms: they can be connected to a free agent.
    pub fn live_callers(&self) -> Vec<LiveCaller> {
        self.calls
            .iter()
            .filter(|(_, c)| {
                c.connected_to.is_none() && c.flow.as_ref().is_some_and(Flow::is_waiting_in_queue)
            })
            .map(|(key, c)| {
                let queue = &self.queues[c.queue];
                LiveCaller {
                    queue: queue.id.clone(),
                    caller: CallerId(key.0),
                    priority: queue.priority,
                    queued_at: c.arrived_at,
                }
            })
            .collect()
    }

    /// Connects a waiting caller to an answered agent leg: the IVR stops,
    /// the caller leaves the queue, RTP is bridged. False when the caller is
    /// gone or no longer waiting (the agent leg should then be hung up).
    pub fn connect_to_agent(&mut self, now: Instant, caller: CallKey, agent_leg: CallKey) -> bool {
        let Some(ctx) = self.calls.get_mut(&caller) else {
            return false;
        };
        if ctx.connected_to.is_some() || !ctx.flow.as_ref().is_some_and(Flow::is_waiting_in_queue) {
            return false;
        }
        info!(call_id = %ctx.call_id, "caller connected to an agent");
        ctx.settled = true;
        // Served: no automatic callback of this number is needed any more.
        if let Some(number) = ctx
            .ani
            .as_deref()
            .and_then(|ani| national_from_ani(ani, &self.flow_settings.policy))
        {
            self.store.push_back(StoreRequest::CancelTasks {
                which: TaskFilter::Number(number.as_digits()),
                reason: "customer_reached".into(),
                now: self.clock.at(now),
            });
        }
        ctx.flow = None;
        ctx.scheduled = None;
        ctx.connected_to = Some(agent_leg);
        ctx.play_token = ctx.play_token.wrapping_add(1);
        if let Some(q) = self.acd.queue_mut(&self.queues[ctx.queue].id) {
            q.leave(CallerId(caller.0));
        }
        self.media.push_back(MediaCommand::Bridge {
            a: caller.0,
            b: agent_leg.0,
        });
        true
    }

    /// The SIP Call-ID of an inbound call, while it exists.
    pub fn call_id_of(&self, call: CallKey) -> Option<&str> {
        self.calls.get(&call).map(|c| &*c.call_id)
    }
}

/// The media thread's parameters for a negotiated session.
fn stream_params(media: &NegotiatedMedia, peer: IpAddr) -> StreamParams {
    let ptime = u16::try_from(media.ptime_ms)
        .ok()
        .and_then(Ptime::from_ms)
        .unwrap_or(Ptime::DEFAULT);
    StreamParams {
        law: media.law,
        payload_type: media.payload_type,
        telephone_event: media.telephone_event,
        ptime,
        remote: media.remote,
        signalling_peer: peer,
        send: media.direction.can_send(),
        receive: media.direction.can_receive() && media.remote.is_some(),
        rtcp: media.rtcp,
    }
}
