//! The launcher's decisions, pure: which callbacks to launch now, which live
//! callers to hand to an agent, and what becomes of a callback after an
//! attempt.
//!
//! # One line per queue
//!
//! A callback keeps its place in line: it is ordered against the live
//! callers of the same queue by the time the caller originally entered the
//! queue (`queued_at`). Work across queues is ordered by the **queue's**
//! priority (higher first); within a queue, by the item's own priority
//! (higher first; callbacks carry the one stored at registration, live
//! callers the one they joined with), then `queued_at` (earlier first). On
//! an exact tie a live caller goes first (it is on the line now), then the
//! lower callback id / caller id.
//!
//! [`Scheduler::decide`] walks that order once and gives each item the free
//! agent serving its queue that has been idle the longest (the agents come
//! in that order, [`Snapshot::free_agents`]). This is greedy: an agent
//! serving two queues goes to the higher-priority work even if the other
//! queue then has nobody — the usual ACD rule.
//!
//! # What a callback needs to launch
//!
//! - the launch switch on: off stops new launches at once (calls in
//!   progress are not touched; live callers are still served);
//! - its queue open: the queue's own hours if it has them, else the
//!   organisation's, with holidays, in their IANA zone. Outside hours it is
//!   not launched; [`Plan::next_open`] says when the earliest such queue
//!   opens (the next business day), so the engine can sleep until then;
//! - the customer's legal calling window
//!   ([`Scheduler::with_calling_window`]): inside it in every time zone of
//!   the customer ([`Scheduler::customer_zones`]); [`Plan::next_open`] also
//!   says when the earliest such window opens;
//! - a free line ([`Snapshot::free_lines`], `max_lines` minus the callback
//!   calls in progress; an automatic missed-call task takes one of
//!   [`Snapshot::free_auto_lines`] instead) and a free agent of its queue.
//!
//! A callback that cannot launch for want of hours, switch or line does not
//! hold up the live callers behind it — an agent never idles while someone
//! is waiting on the line; it keeps its place and is first for the next
//! agent once it can launch. A callback that is already expired is reported
//! as [`Action::Expire`] instead.
//!
//! # After an attempt ([`Scheduler::after_attempt`])
//!
//! | outcome | next step |
//! |---|---|
//! | answered | completed |
//! | busy, no answer, short call, failure | retry at `now + retry_time` while retries are left, else failover queue (once) or failed |
//! | invalid number (404/484/604) | failed — not retried, not failed over |
//! | agent did not answer | pending again at once for another agent; not a customer attempt |
//! | interrupted (restart) | pending again after the longest ring time; not counted |
//!
//! `max_retries` counts retries *after* the first attempt: a queue with
//! `max_retries = 2` calls a customer at most three times. A retry (or
//! failover) whose time is not before the callback's `expires_at` makes it
//! expired instead.
//!
//! **Failover** moves the callback to the configured queue, at most once
//! (a callback already moved is failed, which also stops A→B→A loops). It
//! keeps its original `queued_at` — its place in line is the time the
//! customer first asked, and the customer has waited since — takes the
//! failover queue's priority, starts a fresh attempt count (the failover
//! queue's `max_retries` applies) and waits the old queue's `retry_time`
//! before it is dialed again, so the customer is not rung twice in a row.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use thiserror::Error;

use crate::callback::hours::BusinessHours;
use crate::callback::number::PhoneNumber;
use crate::callback::number::own_number;
use crate::callback::rules::TaskSettings;
use crate::callback::store::{CallbackRow, NextStep, Source, Status};
use crate::callback::timezone::{CallingWindow, CustomerZones, zones_of};
use crate::callback::{CallbackId, QueueId};
use crate::domain::CallerId;

/// How one attempt ended, as recorded in the attempt row (issue 4 point 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The customer answered (2xx): the callback is completed.
    Answered,
    /// The customer was busy (486 Busy Here, 600 Busy Everywhere).
    Busy,
    /// Nobody answered: our wait-for-answer timeout, 480, 408.
    NoAnswer,
    /// Any other final failure (other 3xx–6xx, transport error).
    Failure,
    /// The network rejected the number (404, 484, 604): never retried.
    InvalidNumber,
    /// The agent did not answer; the customer was never called. Not a
    /// customer attempt.
    AgentNoAnswer,
    /// The customer answered and was bridged, then the agent's leg was
    /// lost (no RTP, no ACK, no session refresh): the customer was reached,
    /// so the callback is completed, but the talk was cut.
    AgentLost,
    /// The customer answered and was bridged, but hung up before the
    /// missed-call rule's success time: not reached, tried again like no
    /// answer. Never returned by [`classify`] (the controller, which knows
    /// the rule, decides it).
    ShortCall,
    /// The process stopped during the attempt (recorded at start-up).
    /// Never returned by [`classify`]; not a customer attempt.
    Interrupted,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 9] = [
        Outcome::Answered,
        Outcome::Busy,
        Outcome::NoAnswer,
        Outcome::Failure,
        Outcome::InvalidNumber,
        Outcome::AgentNoAnswer,
        Outcome::AgentLost,
        Outcome::ShortCall,
        Outcome::Interrupted,
    ];

    /// The text stored in the `outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no_answer",
            Outcome::Failure => "failure",
            Outcome::InvalidNumber => "invalid_number",
            Outcome::AgentNoAnswer => "agent_no_answer",
            Outcome::AgentLost => "agent_lost",
            Outcome::ShortCall => "short_call",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// Parses the text stored in the `outcome` column (exact, lower case).
    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// Whether the customer was (or may have been) dialed with a known
    /// result: counts toward `max_retries`. The agent not answering and an
    /// interrupted attempt do not.
    pub fn is_customer_attempt(self) -> bool {
        match self {
            Outcome::Answered
            | Outcome::Busy
            | Outcome::NoAnswer
            | Outcome::Failure
            | Outcome::InvalidNumber
            | Outcome::AgentLost
            | Outcome::ShortCall => true,
            Outcome::AgentNoAnswer | Outcome::Interrupted => false,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies the customer leg's end: `status` is the final SIP status
/// received (None: no response at all, e.g. a transport error or Timer B),
/// `timed_out` that we gave up after the queue's wait-for-answer time (our
/// CANCEL; its 487 then means "no answer", not a failure).
pub fn classify(status: Option<u16>, timed_out: bool) -> Outcome {
    if timed_out {
        return Outcome::NoAnswer;
    }
    match status {
        Some(200..=299) => Outcome::Answered,
        // RFC 3261 §21.4.24 Busy Here, §21.6.1 Busy Everywhere.
        Some(486 | 600) => Outcome::Busy,
        // §21.4.18 Temporarily Unavailable, §21.4.9 Request Timeout.
        Some(480 | 408) => Outcome::NoAnswer,
        // §21.4.5 Not Found, §21.4.23 Address Incomplete, §21.6.4 Does Not
        // Exist Anywhere: the number itself is wrong.
        Some(404 | 484 | 604) => Outcome::InvalidNumber,
        // 3xx (redirects are not followed), every other 4xx–6xx, a
        // nonsensical 1xx "final", or no response.
        Some(_) | None => Outcome::Failure,
    }
}

/// A queue's retry and ringing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Pause between a failed attempt and the next one.
    pub retry_time: Duration,
    /// Retries after the first attempt (total attempts = `max_retries + 1`).
    pub max_retries: u32,
    /// Where the callback goes when retries are exhausted; `None`: failed.
    pub failover: Option<QueueId>,
    /// How long the agent's leg rings before it is cancelled.
    pub agent_ring_timeout: Duration,
    /// How long the customer's leg rings before it is cancelled (the
    /// queue's wait-for-answer time).
    pub customer_ring_timeout: Duration,
}

/// A queue as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSchedule {
    /// The queue.
    pub id: QueueId,
    /// Priority across queues (higher first).
    pub priority: i32,
    /// The queue's own hours; `None`: the organisation's.
    pub hours: Option<BusinessHours>,
    /// Retries, failover and ring timeouts.
    pub policy: RetryPolicy,
    /// The queue's own launch switch (the organisation's is
    /// [`Snapshot::launch_enabled`]): off, its due callbacks wait (expiry
    /// still applies).
    pub launch_enabled: bool,
}

/// A live caller on hold, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCaller {
    /// Its queue.
    pub queue: QueueId,
    /// The engine's key for the caller.
    pub caller: CallerId,
    /// Its priority within the queue.
    pub priority: i32,
    /// When it entered the queue (wall clock, as stored for callbacks).
    pub queued_at: Timestamp,
}

/// A free agent, as [`crate::acd::agents::Agents::free_agents`] lists it.
/// `A` is the agent's identifier (the engine uses
/// [`AgentId`](crate::acd::agents::AgentId)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeAgent<'a, A> {
    /// The agent.
    pub id: A,
    /// The queues it serves.
    pub queues: &'a [QueueId],
    /// The caller IDs its callbacks may present (empty: any); a callback
    /// that asks for one ([`CallbackRow::caller_id`]) goes only to an agent
    /// allowed to present it.
    pub callback_numbers: &'a [PhoneNumber],
}

impl<A> FreeAgent<'_, A> {
    /// Whether this agent may take a callback asking to present `caller_id`
    /// (plain digits; `None`: the callback asks for none).
    pub fn may_present(&self, caller_id: Option<&str>) -> bool {
        match caller_id {
            None => true,
            Some(digits) => {
                self.callback_numbers.is_empty()
                    || self.callback_numbers.iter().any(|n| n.has_digits(digits))
            }
        }
    }
}

/// Everything [`Scheduler::decide`] looks at, taken at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot<'a, A> {
    /// The launch switch (config and runtime).
    pub launch_enabled: bool,
    /// Pending callbacks (the store's `due(now)`); rows that are not
    /// pending or not yet due are ignored, expired ones reported.
    pub callbacks: &'a [CallbackRow],
    /// Live callers on hold (not those in the registration dialog).
    pub live: &'a [LiveCaller],
    /// Free agents, longest idle first.
    pub free_agents: &'a [FreeAgent<'a, A>],
    /// Lines free for new callback calls.
    pub free_lines: u32,
    /// Lines free for automatic (missed-call) callback calls, a pool of
    /// their own.
    pub free_auto_lines: u32,
}

/// One thing to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<A> {
    /// Connect the live caller to the agent.
    Serve {
        /// The caller's queue.
        queue: QueueId,
        /// The caller.
        caller: CallerId,
        /// The agent to ring.
        agent: A,
    },
    /// Claim the callback and start agent-first dialing with this agent.
    Launch {
        /// The callback.
        callback: CallbackId,
        /// Its queue.
        queue: QueueId,
        /// The agent to ring first.
        agent: A,
    },
    /// The callback's `expires_at` has passed: mark it expired.
    Expire(CallbackId),
}

/// The result of [`Scheduler::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<A> {
    /// In order: expirations first, then serves and launches in line order.
    pub actions: Vec<Action<A>>,
    /// When the earliest closed queue with due callbacks opens (within the
    /// hours' search horizon), if any; `None` too when launching is off.
    pub next_open: Option<Timestamp>,
    /// Due callbacks whose queue is not configured (any more): never
    /// launched; they expire in time. For the engine to log.
    pub stranded: Vec<CallbackId>,
}

/// Misconfiguration of the scheduler (local faults: the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchedulerError {
    /// Two queues with the same identifier.
    #[error("queue {0} is scheduled twice")]
    DuplicateQueue(QueueId),
    /// A failover queue that is not configured.
    #[error("queue {queue}: failover queue {failover} is not configured")]
    UnknownFailover {
        /// The queue whose policy names it.
        queue: QueueId,
        /// The missing queue.
        failover: QueueId,
    },
    /// A queue that fails over to itself.
    #[error("queue {0} fails over to itself")]
    FailoverToItself(QueueId),
}

/// The scheduler: organisation hours and every queue's schedule.
#[derive(Debug, Clone)]
pub struct Scheduler {
    org_hours: BusinessHours,
    queues: BTreeMap<QueueId, QueueSchedule>,
    /// When customers may be rung, in their local time; `None`: any time.
    calling_window: Option<CallingWindow>,
}

impl Scheduler {
    /// Builds the scheduler; every failover must name another configured queue.
    pub fn new(
        org_hours: BusinessHours,
        queues: Vec<QueueSchedule>,
    ) -> Result<Self, SchedulerError> {
        let mut map = BTreeMap::new();
        for q in queues {
            if map.contains_key(&q.id) {
                return Err(SchedulerError::DuplicateQueue(q.id));
            }
            map.insert(q.id.clone(), q);
        }
        for q in map.values() {
            let Some(failover) = &q.policy.failover else {
                continue;
            };
            if failover == &q.id {
                return Err(SchedulerError::FailoverToItself(q.id.clone()));
            }
            if !map.contains_key(failover) {
                return Err(SchedulerError::UnknownFailover {
                    queue: q.id.clone(),
                    failover: failover.clone(),
                });
            }
        }
        Ok(Scheduler {
            org_hours,
            queues: map,
            calling_window: None,
        })
    }

    /// This scheduler launching callbacks only inside `window` in the
    /// customer's local time.
    pub fn with_calling_window(mut self, window: CallingWindow) -> Self {
        self.calling_window = Some(window);
        self
    }

    /// The customer's time zones for the calling window: an automatic
    /// task's stored ones, else the number's, else the zone of the hours
    /// the callback's queue keeps (the contact center's own).
    pub fn customer_zones(&self, row: &CallbackRow) -> CustomerZones {
        self.zones_for(row, task_of(row).as_ref())
    }

    /// [`Scheduler::customer_zones`] with the row's task settings already
    /// read.
    fn zones_for(&self, row: &CallbackRow, task: Option<&TaskSettings>) -> CustomerZones {
        task.and_then(TaskSettings::customer_zones)
            .or_else(|| own_number(&row.number).ok().and_then(|n| zones_of(&n)))
            .unwrap_or_else(|| CustomerZones::of_zone(self.hours(&row.queue).tz.clone()))
    }

    /// The configured queues' ids.
    pub fn queue_ids(&self) -> impl Iterator<Item = &QueueId> {
        self.queues.keys()
    }

    /// The queue's schedule, if configured.
    pub fn queue(&self, id: &QueueId) -> Option<&QueueSchedule> {
        self.queues.get(id)
    }

    /// The hours in force for `queue`: its override, else the organisation's.
    pub fn hours(&self, queue: &QueueId) -> &BusinessHours {
        self.queues
            .get(queue)
            .and_then(|q| q.hours.as_ref())
            .unwrap_or(&self.org_hours)
    }

    /// The longest any single leg of any queue may ring (agent or
    /// customer): after a restart an interrupted callback is not redialed
    /// before this has passed, since its old leg may still be ringing
    /// (issue 4 point 8). Pass it to `recover_interrupted`.
    pub fn longest_ring(&self) -> Duration {
        self.queues
            .values()
            .map(|q| {
                q.policy
                    .agent_ring_timeout
                    .max(q.policy.customer_ring_timeout)
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// What to do at `now`; see the module documentation for the order and
    /// the rules.
    pub fn decide<A: Clone + AsRef<str>>(&self, now: Timestamp, snap: &Snapshot<'_, A>) -> Plan<A> {
        let mut plan = Plan {
            actions: Vec::new(),
            next_open: None,
            stranded: Vec::new(),
        };
        let mut work: Vec<Item<'_>> = Vec::with_capacity(snap.callbacks.len() + snap.live.len());
        for row in snap.callbacks {
            if row.status != Status::Pending || row.next_attempt_at.is_some_and(|at| at > now) {
                continue;
            }
            if row.expires_at <= now {
                plan.actions.push(Action::Expire(row.id));
                continue;
            }
            if !snap.launch_enabled {
                continue;
            }
            let Some(queue) = self.queues.get(&row.queue) else {
                plan.stranded.push(row.id);
                continue;
            };
            if !queue.launch_enabled {
                continue;
            }
            let hours = queue.hours.as_ref().unwrap_or(&self.org_hours);
            if !hours.is_open(now) {
                if let Some(open) = hours.next_open(now) {
                    plan.next_open = Some(plan.next_open.map_or(open, |t| t.min(open)));
                }
                continue;
            }
            let task = task_of(row);
            if let Some(window) = &self.calling_window {
                let zones = self.zones_for(row, task.as_ref());
                if !window.contains(zones.zones(), now) {
                    if let Some(open) = window.earliest(zones.zones(), now) {
                        plan.next_open = Some(plan.next_open.map_or(open, |t| t.min(open)));
                    }
                    continue;
                }
            }
            work.push(Item {
                auto: row.source == Source::MissedCall,
                queue_priority: queue.priority,
                priority: row.priority,
                queued_at: row.queued_at,
                kind: Kind::Callback(row.id),
                queue: &row.queue,
                caller_id: row.caller_id.as_deref(),
                agent: task.and_then(|t| t.agent),
            });
        }
        for live in snap.live {
            // A live caller of a queue the scheduler does not know is still
            // served, after everything else.
            let queue_priority = self
                .queues
                .get(&live.queue)
                .map_or(i32::MIN, |q| q.priority);
            work.push(Item {
                auto: false,
                queue_priority,
                priority: live.priority,
                queued_at: live.queued_at,
                kind: Kind::Live(live.caller),
                queue: &live.queue,
                caller_id: None,
                agent: None,
            });
        }
        work.sort_by_key(|i| {
            (
                Reverse(i.queue_priority),
                Reverse(i.priority),
                i.queued_at,
                i.kind,
            )
        });

        let mut taken = vec![false; snap.free_agents.len()];
        let mut free_agents = snap.free_agents.len();
        let mut free_lines = snap.free_lines;
        let mut free_auto_lines = snap.free_auto_lines;
        for item in work {
            if free_agents == 0 {
                break;
            }
            let pool = if item.auto {
                free_auto_lines
            } else {
                free_lines
            };
            if matches!(item.kind, Kind::Callback(_)) && pool == 0 {
                continue;
            }
            let Some(slot) = snap.free_agents.iter().zip(&taken).position(|(a, &t)| {
                !t && a.queues.contains(item.queue)
                    && a.may_present(item.caller_id)
                    && item
                        .agent
                        .as_deref()
                        .is_none_or(|only| a.id.as_ref() == only)
            }) else {
                continue;
            };
            taken[slot] = true;
            free_agents -= 1;
            let agent = snap.free_agents[slot].id.clone();
            let queue = item.queue.clone();
            plan.actions.push(match item.kind {
                Kind::Live(caller) => Action::Serve {
                    queue,
                    caller,
                    agent,
                },
                Kind::Callback(callback) => {
                    if item.auto {
                        free_auto_lines -= 1;
                    } else {
                        free_lines -= 1;
                    }
                    Action::Launch {
                        callback,
                        queue,
                        agent,
                    }
                }
            });
        }
        plan
    }

    /// What becomes of `row` (just dialed, status dialing) after an attempt
    /// that ended at `now` with `outcome`; see the table in the module
    /// documentation. A queue no longer configured gets no retries.
    pub fn after_attempt(&self, row: &CallbackRow, outcome: Outcome, now: Timestamp) -> NextStep {
        let policy = self.queues.get(&row.queue).map(|q| &q.policy);
        let pending_at = |at: Timestamp| {
            if at >= row.expires_at {
                NextStep::Expired
            } else {
                NextStep::Retry { at, task: None }
            }
        };
        match outcome {
            Outcome::Answered | Outcome::AgentLost => NextStep::Completed,
            Outcome::InvalidNumber => NextStep::Failed,
            Outcome::AgentNoAnswer => pending_at(now),
            Outcome::Interrupted => pending_at(add(now, self.longest_ring())),
            Outcome::Busy | Outcome::NoAnswer | Outcome::ShortCall | Outcome::Failure => {
                let Some(policy) = policy else {
                    return NextStep::Failed;
                };
                let at = add(now, policy.retry_time);
                // `attempts` does not yet count the one just made.
                let made = row.attempts.saturating_add(1);
                if made <= policy.max_retries {
                    return pending_at(at);
                }
                let failover = policy
                    .failover
                    .as_ref()
                    .filter(|_| row.moved_from.is_none())
                    .and_then(|f| self.queues.get(f));
                match failover {
                    Some(target) if at < row.expires_at => NextStep::Failover {
                        queue: target.id.clone(),
                        priority: target.priority,
                        at,
                    },
                    Some(_) => NextStep::Expired,
                    None => NextStep::Failed,
                }
            }
        }
    }
}

/// One piece of work in line.
struct Item<'a> {
    /// An automatic (missed-call) task: its own pool of lines.
    auto: bool,
    queue_priority: i32,
    priority: i32,
    queued_at: Timestamp,
    kind: Kind,
    queue: &'a QueueId,
    /// The caller ID a callback asks to present.
    caller_id: Option<&'a str>,
    /// The only agent that may take it (an automatic task sent back to
    /// the agent that missed the call).
    agent: Option<String>,
}

/// An automatic task's settings, if `row` is one (and they parse).
pub fn task_of(row: &CallbackRow) -> Option<TaskSettings> {
    if row.source != Source::MissedCall {
        return None;
    }
    row.task.as_deref().and_then(TaskSettings::from_json)
}

/// Live callers sort before callbacks on an exact tie (derive order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Live(CallerId),
    Callback(CallbackId),
}

/// `at + d`, saturating at the end of representable time.
fn add(at: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::store::Source;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn qid(s: &str) -> QueueId {
        QueueId(s.into())
    }

    const MIN: Duration = Duration::from_secs(60);

    fn policy(max_retries: u32, failover: Option<&str>) -> RetryPolicy {
        RetryPolicy {
            retry_time: 10 * MIN,
            max_retries,
            failover: failover.map(qid),
            agent_ring_timeout: Duration::from_secs(20),
            customer_ring_timeout: Duration::from_secs(30),
        }
    }

    fn schedule(id: &str, priority: i32, policy: RetryPolicy) -> QueueSchedule {
        QueueSchedule {
            id: qid(id),
            priority,
            hours: None,
            policy,
            launch_enabled: true,
        }
    }

    /// Chicago, weekdays 08:00–18:00.
    fn weekdays() -> BusinessHours {
        let days = ["mon", "tue", "wed", "thu", "fri"].map(|d| (d, "08:00-18:00"));
        BusinessHours::parse("America/Chicago", &days, &[]).unwrap()
    }

    /// support (priority 1), billing (priority 5), both weekday hours.
    fn scheduler() -> Scheduler {
        Scheduler::new(
            weekdays(),
            vec![
                schedule("support", 1, policy(2, Some("billing"))),
                schedule("billing", 5, policy(1, None)),
            ],
        )
        .unwrap()
    }

    /// Monday 2025-06-02 10:00 CDT.
    fn monday_10() -> Timestamp {
        ts("2025-06-02T15:00:00Z")
    }

    fn row(id: i64, queue: &str, priority: i32, queued_at: &str) -> CallbackRow {
        CallbackRow {
            id: CallbackId(id),
            queue: qid(queue),
            number: "3125550188".into(),
            caller_ani: String::new(),
            called_number: String::new(),
            priority,
            queued_at: ts(queued_at),
            registered_at: ts(queued_at),
            ecbt_quoted_minutes: 5,
            status: Status::Pending,
            attempts: 0,
            next_attempt_at: None,
            expires_at: ts("2025-07-01T00:00:00Z"),
            inbound_call_id: String::new(),
            moved_from: None,
            customer_dialed_at: None,
            caller_id: None,
            source: Source::Ivr,
            rule: None,
            task: None,
            closed_reason: None,
        }
    }

    fn live(caller: u64, queue: &str, priority: i32, queued_at: &str) -> LiveCaller {
        LiveCaller {
            queue: qid(queue),
            caller: CallerId(caller),
            priority,
            queued_at: ts(queued_at),
        }
    }

    fn snapshot<'a>(
        callbacks: &'a [CallbackRow],
        live: &'a [LiveCaller],
        free_agents: &'a [FreeAgent<'a, &'static str>],
        free_lines: u32,
    ) -> Snapshot<'a, &'static str> {
        Snapshot {
            launch_enabled: true,
            callbacks,
            live,
            free_agents,
            free_lines,
            free_auto_lines: free_lines,
        }
    }

    fn launch(callback: i64, queue: &str, agent: &'static str) -> Action<&'static str> {
        Action::Launch {
            callback: CallbackId(callback),
            queue: qid(queue),
            agent,
        }
    }

    fn serve(caller: u64, queue: &str, agent: &'static str) -> Action<&'static str> {
        Action::Serve {
            queue: qid(queue),
            caller: CallerId(caller),
            agent,
        }
    }

    #[test]
    fn classifies_final_responses_per_issue_point_5() {
        let cases = [
            (Some(200), false, Outcome::Answered),
            (Some(486), false, Outcome::Busy),
            (Some(600), false, Outcome::Busy),
            (Some(480), false, Outcome::NoAnswer),
            (Some(408), false, Outcome::NoAnswer),
            (Some(487), true, Outcome::NoAnswer),
            (None, true, Outcome::NoAnswer),
            (Some(404), false, Outcome::InvalidNumber),
            (Some(484), false, Outcome::InvalidNumber),
            (Some(604), false, Outcome::InvalidNumber),
            (Some(403), false, Outcome::Failure),
            (Some(487), false, Outcome::Failure),
            (Some(503), false, Outcome::Failure),
            (Some(603), false, Outcome::Failure),
            (Some(302), false, Outcome::Failure),
            (Some(180), false, Outcome::Failure),
            (None, false, Outcome::Failure),
        ];
        for (status, timed_out, want) in cases {
            assert_eq!(classify(status, timed_out), want, "{status:?} {timed_out}");
        }
    }

    #[test]
    fn outcome_text_round_trips() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("Busy"), None);
        assert_eq!(Outcome::parse("short_call"), Some(Outcome::ShortCall));
        let not_counted: Vec<_> = Outcome::ALL
            .into_iter()
            .filter(|o| !o.is_customer_attempt())
            .collect();
        assert_eq!(not_counted, [Outcome::AgentNoAnswer, Outcome::Interrupted]);
    }

    #[test]
    fn orders_by_queue_priority_then_queued_at() {
        let s = scheduler();
        let rows = [
            row(1, "support", 1, "2025-06-02T14:00:00Z"),
            row(2, "billing", 5, "2025-06-02T14:50:00Z"),
            row(3, "support", 1, "2025-06-02T13:00:00Z"),
            row(4, "billing", 5, "2025-06-02T14:10:00Z"),
        ];
        let both = [qid("support"), qid("billing")];
        let agents: Vec<_> = ["a", "b", "c", "d"]
            .map(|id| FreeAgent {
                id,
                queues: &both,
                callback_numbers: &[],
            })
            .into();
        let plan = s.decide(monday_10(), &snapshot(&rows, &[], &agents, 15));
        assert_eq!(
            plan.actions,
            [
                launch(4, "billing", "a"),
                launch(2, "billing", "b"),
                launch(3, "support", "c"),
                launch(1, "support", "d"),
            ]
        );
        assert_eq!(plan.next_open, None);
    }

    #[test]
    fn interleaves_callbacks_with_live_callers_of_the_same_queue() {
        let s = scheduler();
        let rows = [
            row(1, "support", 1, "2025-06-02T14:10:00Z"),
            row(2, "support", 1, "2025-06-02T14:30:00Z"),
        ];
        let callers = [
            live(7, "support", 1, "2025-06-02T14:20:00Z"),
            live(8, "support", 1, "2025-06-02T14:00:00Z"),
            live(9, "support", 1, "2025-06-02T14:40:00Z"),
        ];
        let support = [qid("support")];
        let agents: Vec<_> = ["a", "b", "c"]
            .map(|id| FreeAgent {
                id,
                queues: &support,
                callback_numbers: &[],
            })
            .into();
        let plan = s.decide(monday_10(), &snapshot(&rows, &callers, &agents, 15));
        // 14:00 live, 14:10 callback, 14:20 live; 14:30 and 14:40 wait.
        assert_eq!(
            plan.actions,
            [
                serve(8, "support", "a"),
                launch(1, "support", "b"),
                serve(7, "support", "c"),
            ]
        );
        // One agent: the earlier-queued live caller goes first.
        let plan = s.decide(monday_10(), &snapshot(&rows, &callers, &agents[..1], 15));
        assert_eq!(plan.actions, [serve(8, "support", "a")]);
        // Without that caller, the callback comes before the later callers.
        let plan = s.decide(
            monday_10(),
            &snapshot(&rows, &callers[..1], &agents[..1], 15),
        );
        assert_eq!(plan.actions, [launch(1, "support", "a")]);
    }

    #[test]
    fn live_caller_wins_an_exact_tie() {
        let s = scheduler();
        let rows = [row(1, "support", 1, "2025-06-02T14:00:00Z")];
        let callers = [live(7, "support", 1, "2025-06-02T14:00:00Z")];
        let support = [qid("support")];
        let agents = [FreeAgent {
            id: "a",
            queues: &support,
            callback_numbers: &[],
        }];
        let plan = s.decide(monday_10(), &snapshot(&rows, &callers, &agents, 15));
        assert_eq!(plan.actions, [serve(7, "support", "a")]);
    }

    #[test]
    fn each_item_gets_the_longest_idle_agent_of_its_queue() {
        let s = scheduler();
        let rows = [
            row(1, "billing", 5, "2025-06-02T14:00:00Z"),
            row(2, "support", 1, "2025-06-02T13:00:00Z"),
        ];
        let (support, both) = ([qid("support")], [qid("support"), qid("billing")]);
        // Longest idle first: x serves support only, y both.
        let agents = [
            FreeAgent {
                id: "x",
                queues: &support[..],
                callback_numbers: &[],
            },
            FreeAgent {
                id: "y",
                queues: &both[..],
                callback_numbers: &[],
            },
        ];
        let plan = s.decide(monday_10(), &snapshot(&rows, &[], &agents, 15));
        assert_eq!(
            plan.actions,
            [launch(1, "billing", "y"), launch(2, "support", "x")]
        );
        // No agent for the queue: nothing for it, the others still go.
        let plan = s.decide(monday_10(), &snapshot(&rows, &[], &agents[..1], 15));
        assert_eq!(plan.actions, [launch(2, "support", "x")]);
    }

    #[test]
    fn lines_cap_launches_but_not_live_callers() {
        let s = scheduler();
        let rows = [
            row(1, "support", 1, "2025-06-02T14:00:00Z"),
            row(2, "support", 1, "2025-06-02T14:05:00Z"),
        ];
        let callers = [live(7, "support", 1, "2025-06-02T14:10:00Z")];
        let support = [qid("support")];
        let agents: Vec<_> = ["a", "b", "c"]
            .map(|id| FreeAgent {
                id,
                queues: &support,
                callback_numbers: &[],
            })
            .into();
        let plan = s.decide(monday_10(), &snapshot(&rows, &callers, &agents, 1));
        assert_eq!(
            plan.actions,
            [launch(1, "support", "a"), serve(7, "support", "b")]
        );
        let plan = s.decide(monday_10(), &snapshot(&rows, &callers, &agents, 0));
        assert_eq!(plan.actions, [serve(7, "support", "a")]);
    }

    #[test]
    fn a_task_sent_back_to_the_agent_that_missed_it_waits_for_that_agent() {
        let s = scheduler();
        let mut task = row(1, "support", 1, "2025-06-02T14:00:00Z");
        task.source = Source::MissedCall;
        task.task = Some(r#"{"rule":"cc","miss":"contact_center","attempt":0,"zones":[],"zone_from_number":false,"caller_id":null,"wait_for_answer_s":30,"agent_prompt":"missed_call_agent","recording_notice":null,"recording_retention_s":0,"success_after_s":10,"agent":"b"}"#.into());
        let rows = [task, row(2, "support", 1, "2025-06-02T14:05:00Z")];
        let support = [qid("support")];
        let agents: Vec<_> = ["a", "b"]
            .map(|id| FreeAgent {
                id,
                queues: &support,
                callback_numbers: &[],
            })
            .into();
        // a has waited longest, but the task is b's; the next callback
        // takes a.
        let plan = s.decide(monday_10(), &snapshot(&rows, &[], &agents, 15));
        assert_eq!(
            plan.actions,
            [launch(1, "support", "b"), launch(2, "support", "a")]
        );
        // b busy: the task waits and a takes the other one.
        let plan = s.decide(monday_10(), &snapshot(&rows, &[], &agents[..1], 15));
        assert_eq!(plan.actions, [launch(2, "support", "a")]);
    }

    #[test]
    fn launch_switch_off_stops_launches_at_once() {
        let s = scheduler();
        let rows = [row(1, "support", 1, "2025-06-02T14:00:00Z")];
        let callers = [live(7, "support", 1, "2025-06-02T14:10:00Z")];
        let support = [qid("support")];
        let agents: Vec<_> = ["a", "b"]
            .map(|id| FreeAgent {
                id,
                queues: &support,
                callback_numbers: &[],
            })
            .into();
        let mut snap = snapshot(&rows, &callers, &agents, 15);
        assert_eq!(s.decide(monday_10(), &snap).actions.len(), 2);
        snap.launch_enabled = false;
        let plan = s.decide(monday_10(), &snap);
        assert_eq!(plan.actions, [serve(7, "support", "a")]);
        assert_eq!(plan.next_open, None);
    }

    #[test]
    fn nothing_launches_outside_hours_and_next_open_is_reported() {
        let s = scheduler();
        let rows = [row(1, "support", 1, "2025-06-06T20:00:00Z")];
        let callers = [live(7, "support", 1, "2025-06-06T23:10:00Z")];
        let support = [qid("support")];
        let agents = [FreeAgent {
            id: "a",
            queues: &support[..],
            callback_numbers: &[],
        }];
        // Friday 2025-06-06 18:30 CDT: closed until Monday 08:00 CDT.
        let friday_evening = ts("2025-06-06T23:30:00Z");
        let plan = s.decide(friday_evening, &snapshot(&rows, &callers, &agents, 15));
        assert_eq!(plan.actions, [serve(7, "support", "a")]);
        assert_eq!(plan.next_open, Some(ts("2025-06-09T13:00:00Z")));
        // Monday morning it launches.
        let monday = ts("2025-06-09T13:00:00Z");
        let plan = s.decide(monday, &snapshot(&rows, &[], &agents, 15));
        assert_eq!(plan.actions, [launch(1, "support", "a")]);
    }

    #[test]
    fn queue_hours_override_org_hours_and_holidays_close() {
        let mut support = schedule("support", 1, policy(0, None));
        support.hours =
            Some(BusinessHours::parse("America/Chicago", &[("sat", "09:00-13:00")], &[]).unwrap());
        let mut org = weekdays();
        org.holidays.push("2025-06-02".parse().unwrap());
        let s =
            Scheduler::new(org, vec![support, schedule("billing", 5, policy(0, None))]).unwrap();
        let rows = [
            row(1, "support", 1, "2025-06-02T14:00:00Z"),
            row(2, "billing", 5, "2025-06-02T14:00:00Z"),
        ];
        let both = [qid("support"), qid("billing")];
        let agents: Vec<_> = ["a", "b"]
            .map(|id| FreeAgent {
                id,
                queues: &both,
                callback_numbers: &[],
            })
            .into();
        // Monday 10:00 is a holiday for billing (org hours) and support is
        // open on Saturdays only.
        let plan = s.decide(monday_10(), &snapshot(&rows, &[], &agents, 15));
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        // Earliest opening: billing Tuesday 08:00 CDT (before Saturday).
        assert_eq!(plan.next_open, Some(ts("2025-06-03T13:00:00Z")));
        // Saturday 10:00 CDT: support only.
        let plan = s.decide(
            ts("2025-06-07T15:00:00Z"),
            &snapshot(&rows, &[], &agents, 15),
        );
        assert_eq!(plan.actions, [launch(1, "support", "a")]);
        assert_eq!(plan.next_open, Some(ts("2025-06-09T13:00:00Z")));
    }

    #[test]
    fn expired_and_not_yet_due_callbacks_are_not_launched() {
        let s = scheduler();
        let mut expired = row(1, "support", 1, "2025-06-02T13:00:00Z");
        expired.expires_at = monday_10();
        let mut later = row(2, "support", 1, "2025-06-02T13:10:00Z");
        later.next_attempt_at = Some(monday_10() + SignedDuration::from_secs(1));
        let mut dialing = row(3, "support", 1, "2025-06-02T13:20:00Z");
        dialing.status = Status::Dialing;
        let mut due = row(4, "support", 1, "2025-06-02T13:30:00Z");
        due.next_attempt_at = Some(monday_10());
        let rows = [expired, later, dialing, due];
        let support = [qid("support")];
        let agents: Vec<_> = ["a", "b"]
            .map(|id| FreeAgent {
                id,
                queues: &support,
                callback_numbers: &[],
            })
            .into();
        let plan = s.decide(monday_10(), &snapshot(&rows, &[], &agents, 15));
        assert_eq!(
            plan.actions,
            [Action::Expire(CallbackId(1)), launch(4, "support", "a")]
        );
        // Expiry is reported even with launching off.
        let mut snap = snapshot(&rows, &[], &agents, 15);
        snap.launch_enabled = false;
        assert_eq!(
            s.decide(monday_10(), &snap).actions,
            [Action::Expire(CallbackId(1))]
        );
    }

    #[test]
    fn callback_of_an_unknown_queue_is_stranded() {
        let s = scheduler();
        let rows = [row(1, "sales", 1, "2025-06-02T13:00:00Z")];
        let sales = [qid("sales")];
        let agents = [FreeAgent {
            id: "a",
            queues: &sales[..],
            callback_numbers: &[],
        }];
        let plan = s.decide(monday_10(), &snapshot(&rows, &[], &agents, 15));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.stranded, [CallbackId(1)]);
    }

    #[test]
    fn retries_after_retry_time_until_max_retries_then_fails_over_once() {
        let s = scheduler();
        let now = monday_10();
        let retry_at = ts("2025-06-02T15:10:00Z");
        let mut r = row(1, "support", 1, "2025-06-02T13:00:00Z");
        // support: max_retries 2 → attempts 1 and 2 are retried.
        for (attempts, outcome) in [
            (0, Outcome::NoAnswer),
            (1, Outcome::Busy),
            (1, Outcome::ShortCall),
        ] {
            r.attempts = attempts;
            assert_eq!(
                s.after_attempt(&r, outcome, now),
                NextStep::Retry {
                    at: retry_at,
                    task: None
                },
                "{attempts}"
            );
        }
        r.attempts = 2;
        assert_eq!(
            s.after_attempt(&r, Outcome::Failure, now),
            NextStep::Failover {
                queue: qid("billing"),
                priority: 5,
                at: retry_at
            }
        );
        // Already moved once: failed, no second failover.
        r.moved_from = Some(qid("support"));
        assert_eq!(s.after_attempt(&r, Outcome::Failure, now), NextStep::Failed);
        // billing: max_retries 1, no failover.
        let mut b = row(2, "billing", 5, "2025-06-02T13:00:00Z");
        assert_eq!(
            s.after_attempt(&b, Outcome::NoAnswer, now),
            NextStep::Retry {
                at: retry_at,
                task: None
            }
        );
        b.attempts = 1;
        assert_eq!(
            s.after_attempt(&b, Outcome::NoAnswer, now),
            NextStep::Failed
        );
    }

    #[test]
    fn answered_completes_and_invalid_number_is_never_retried() {
        let s = scheduler();
        let r = row(1, "support", 1, "2025-06-02T13:00:00Z");
        assert_eq!(
            s.after_attempt(&r, Outcome::Answered, monday_10()),
            NextStep::Completed
        );
        assert_eq!(
            s.after_attempt(&r, Outcome::InvalidNumber, monday_10()),
            NextStep::Failed
        );
    }

    #[test]
    fn agent_no_answer_is_pending_again_at_once_and_interrupted_after_the_longest_ring() {
        let s = scheduler();
        let mut r = row(1, "support", 1, "2025-06-02T13:00:00Z");
        r.attempts = 2; // retries used up: still not a customer attempt
        assert_eq!(
            s.after_attempt(&r, Outcome::AgentNoAnswer, monday_10()),
            NextStep::Retry {
                at: monday_10(),
                task: None
            }
        );
        assert_eq!(s.longest_ring(), Duration::from_secs(30));
        assert_eq!(
            s.after_attempt(&r, Outcome::Interrupted, monday_10()),
            NextStep::Retry {
                at: ts("2025-06-02T15:00:30Z"),
                task: None
            }
        );
    }

    #[test]
    fn a_retry_past_expiry_expires() {
        let s = scheduler();
        let mut r = row(1, "support", 1, "2025-06-02T13:00:00Z");
        r.expires_at = ts("2025-06-02T15:10:00Z"); // exactly the retry time
        assert_eq!(
            s.after_attempt(&r, Outcome::NoAnswer, monday_10()),
            NextStep::Expired
        );
        r.attempts = 2;
        assert_eq!(
            s.after_attempt(&r, Outcome::NoAnswer, monday_10()),
            NextStep::Expired
        );
        r.expires_at = monday_10();
        assert_eq!(
            s.after_attempt(&r, Outcome::AgentNoAnswer, monday_10()),
            NextStep::Expired
        );
        // Answered still completes, whatever the expiry.
        assert_eq!(
            s.after_attempt(&r, Outcome::Answered, monday_10()),
            NextStep::Completed
        );
    }

    #[test]
    fn unknown_queue_gets_no_retries() {
        let s = scheduler();
        let r = row(1, "sales", 1, "2025-06-02T13:00:00Z");
        assert_eq!(
            s.after_attempt(&r, Outcome::NoAnswer, monday_10()),
            NextStep::Failed
        );
    }

    #[test]
    fn rejects_bad_failover_configuration() {
        let err = Scheduler::new(
            weekdays(),
            vec![schedule("support", 1, policy(1, Some("nowhere")))],
        )
        .unwrap_err();
        assert_eq!(
            err,
            SchedulerError::UnknownFailover {
                queue: qid("support"),
                failover: qid("nowhere")
            }
        );
        let err = Scheduler::new(
            weekdays(),
            vec![schedule("support", 1, policy(1, Some("support")))],
        )
        .unwrap_err();
        assert_eq!(err, SchedulerError::FailoverToItself(qid("support")));
        let err = Scheduler::new(
            weekdays(),
            vec![
                schedule("support", 1, policy(1, None)),
                schedule("support", 2, policy(1, None)),
            ],
        )
        .unwrap_err();
        assert_eq!(err, SchedulerError::DuplicateQueue(qid("support")));
    }
}
