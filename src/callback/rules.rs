//! Missed-call rules: a caller who hangs up before reaching an agent is
//! called back automatically — agent first, then the customer — at the
//! rule's intervals, inside its schedule and the customer's legal calling
//! window. Pure: every function takes the wall-clock instant it judges.
//!
//! ```text
//!  call ends unserved ──▶ RuleBook::on_missed ──▶ NotCounted (no rule, too short,
//!                                                 outside the schedule, no number)
//!                                            └──▶ Task: a callback row of source
//!                                                 `missed_call`, due at
//!                                                 missed + intervals[0], placed
//!  attempt fails ──▶ RuleBook::next_attempt ──▶ due at now + intervals[k] (placed),
//!                                               with the rule's settings of now
//!                                          └──▶ None: attempts used, rule gone/off
//! ```
//!
//! *Placing* an instant moves it forward to the first instant that is inside
//! the rule's schedule (the organisation's zone) and inside the calling
//! window in **every** time zone of the customer's number
//! ([`crate::callback::timezone`]). The customer's zone comes from the
//! number, else the rule's fallback zone; with neither, no callback is
//! started and the task is stored failed with the reason
//! `unknown_time_zone`.
//!
//! A task carries a snapshot of the settings its next attempt was scheduled
//! with ([`TaskSettings`], stored as JSON beside the row): editing a rule
//! changes new missed calls and attempts not yet scheduled; an attempt
//! already scheduled keeps what it was scheduled with.
//!
//! Which calls count (the caller hung up, unserved, after `min_time` in
//! the system):
//! - **ivr**: before the caller reached the queue's hold (welcome, menus,
//!   number entry);
//! - **contact_center**: while waiting in the queue (on hold, or while an
//!   agent rung for the caller did not answer).
//!
//! A caller who registered a callback, or talked to an agent, missed
//! nothing: the store cancels that number's pending tasks instead.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::callback::QueueId;
use crate::callback::hours::BusinessHours;
use crate::callback::number::PhoneNumber;
use crate::callback::store::{NewCallback, NewTask};
use crate::callback::timezone::{CallingWindow, CustomerZones, zones_of};

/// Where a call was missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissKind {
    /// Hung up in the IVR, before reaching the queue's hold.
    Ivr,
    /// Abandoned while waiting in the queue.
    ContactCenter,
}

impl MissKind {
    /// The text used in configuration, JSON and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            MissKind::Ivr => "ivr",
            MissKind::ContactCenter => "contact_center",
        }
    }
}

/// One missed-call rule, checked (see `config::MissedCallRuleConfig` for
/// the meaning of each field).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name.
    pub id: String,
    /// The calls it takes.
    pub kind: MissKind,
    /// Off: no new tasks (pending ones are cancelled by the controller).
    pub enabled: bool,
    /// The queues whose missed calls it takes (empty: every queue).
    pub queues: Vec<QueueId>,
    /// Time in the system before a hang-up counts.
    pub min_time: Duration,
    /// The wait before each attempt (first from the missed call, next from
    /// the previous failed attempt).
    pub intervals: Vec<Duration>,
    /// The caller ID presented; `None`: the number the customer dialed.
    pub caller_id: Option<PhoneNumber>,
    /// The queue tasks go to; `None`: the one that missed the call.
    pub forward_to: Option<QueueId>,
    /// How long the customer's leg rings.
    pub wait_for_answer: Duration,
    /// The prompt the agent hears first.
    pub agent_prompt: String,
    /// Record after this notice; `None`: not recorded.
    pub recording_notice: Option<String>,
    /// How long recordings are kept.
    pub recording_retention: Duration,
    /// When the rule is in force (the organisation's zone).
    pub schedule: BusinessHours,
    /// The customer's zone when the number does not tell.
    pub fallback_zone: Option<CustomerZones>,
    /// Bridged at least this long: done.
    pub success_after: Duration,
}

impl Rule {
    /// Whether this rule takes calls of `kind` missed in `queue`.
    pub fn takes(&self, kind: MissKind, queue: &QueueId) -> bool {
        self.enabled && self.kind == kind && (self.queues.is_empty() || self.queues.contains(queue))
    }
}

/// A call that ended without reaching an agent, as the controller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedCall {
    /// Where it was missed.
    pub kind: MissKind,
    /// The queue it was routed to.
    pub queue: QueueId,
    /// The queue's priority.
    pub priority: i32,
    /// How long a pending callback of the queue stays valid.
    pub expiry: Duration,
    /// The caller's number (from the ANI), if it is one we may call.
    pub number: Option<PhoneNumber>,
    /// The caller's ANI as received.
    pub ani: String,
    /// The number the caller dialed (the DID).
    pub called: String,
    /// When the call was answered (it entered the system).
    pub arrived_at: Timestamp,
    /// When the caller hung up.
    pub ended_at: Timestamp,
    /// The agent rung for this caller who did not answer, if one was.
    pub agent: Option<String>,
    /// The inbound call's Call-ID.
    pub call_id: String,
}

/// The settings the task's next attempt was scheduled with: stored as
/// JSON with the task, read back by the launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSettings {
    /// The rule that made the task.
    pub rule: String,
    /// Where the call was missed.
    pub miss: MissKind,
    /// Which attempt is scheduled (0: the first).
    pub attempt: u32,
    /// The customer's time zones (IANA names).
    pub zones: Vec<String>,
    /// Whether `zones` came from the number (`false`: the rule's fallback).
    pub zone_from_number: bool,
    /// The caller ID to present (digits); `None`: the queue's number.
    pub caller_id: Option<String>,
    /// Customer leg ring time, seconds.
    pub wait_for_answer_s: u64,
    /// The agent's prompt.
    pub agent_prompt: String,
    /// Record after this notice; `None`: not recorded.
    pub recording_notice: Option<String>,
    /// Recording kept this many seconds.
    pub recording_retention_s: u64,
    /// Bridged at least this many seconds: done.
    pub success_after_s: u64,
    /// Only this agent takes it (the one that missed the call, when the
    /// rule sends tasks back); `None`: any agent of the queue.
    pub agent: Option<String>,
}

impl TaskSettings {
    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain strings, numbers and lists serialise")
    }

    /// Reads the stored form; `None` when it does not parse (a row written
    /// by another version: the launcher then treats it as a plain
    /// callback of its queue).
    pub fn from_json(text: &str) -> Option<TaskSettings> {
        serde_json::from_str(text).ok()
    }

    /// The customer's zones.
    pub fn customer_zones(&self) -> Option<CustomerZones> {
        let names: Vec<&str> = self.zones.iter().map(String::as_str).collect();
        CustomerZones::from_names(&names)
    }

    /// The customer leg's ring time.
    pub fn wait_for_answer(&self) -> Duration {
        Duration::from_secs(self.wait_for_answer_s)
    }

    /// The bridge length that makes the callback done.
    pub fn success_after(&self) -> Duration {
        Duration::from_secs(self.success_after_s)
    }
}

/// Why a hang-up started no task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotCounted {
    /// No enabled rule takes calls of this kind in this queue.
    NoRule,
    /// The organisation is frozen.
    Frozen,
    /// The caller was in the system less than the rule's minimum.
    TooShort {
        /// The rule.
        rule: String,
    },
    /// The call was missed outside the rule's schedule.
    OutsideSchedule {
        /// The rule.
        rule: String,
    },
    /// The caller's number (ANI) is missing or not one we may call.
    NoNumber {
        /// The rule.
        rule: String,
    },
}

/// What a missed call leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missed {
    /// Nothing.
    NotCounted(NotCounted),
    /// A task to store (maybe one that starts no call: no time zone).
    Task(Box<NewTask>),
}

/// How long a task is kept pending at most: long enough to wait over a
/// weekend for its schedule and window.
pub const TASK_LIFETIME: Duration = Duration::from_secs(7 * 86_400);

/// How many schedule/window openings [`place`] tries before giving up
/// (they never agree: a schedule and a window that do not overlap).
const PLACE_TRIES: usize = 32;

/// The earliest instant at or after `at` inside `schedule` and inside
/// `window` in every zone of `zones`; `None` if none comes within the
/// search horizons (they never overlap).
pub fn place(
    schedule: &BusinessHours,
    window: &CallingWindow,
    zones: &CustomerZones,
    at: Timestamp,
) -> Option<Timestamp> {
    let mut t = at;
    for _ in 0..PLACE_TRIES {
        if !schedule.is_open(t) {
            t = schedule.next_open(t)?;
        }
        if !window.contains(zones.zones(), t) {
            t = window.earliest(zones.zones(), t)?;
            continue;
        }
        if schedule.is_open(t) {
            return Some(t);
        }
    }
    None
}

/// The rules in force, with the organisation's calling window.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleBook {
    /// The rules, in configuration order.
    pub rules: Vec<Rule>,
    /// The calling window.
    pub window: CallingWindow,
    /// The organisation is frozen.
    pub frozen: bool,
}

impl RuleBook {
    /// The rule named `id`, if configured.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// What the hang-up `call` leads to (see the module documentation).
    pub fn on_missed(&self, call: &MissedCall) -> Missed {
        if self.frozen {
            return Missed::NotCounted(NotCounted::Frozen);
        }
        let Some(rule) = self.rules.iter().find(|r| r.takes(call.kind, &call.queue)) else {
            return Missed::NotCounted(NotCounted::NoRule);
        };
        let in_system = call.ended_at.duration_since(call.arrived_at);
        if in_system < SignedDuration::try_from(rule.min_time).unwrap_or(SignedDuration::MAX) {
            return Missed::NotCounted(NotCounted::TooShort {
                rule: rule.id.clone(),
            });
        }
        if !rule.schedule.is_open(call.ended_at) {
            return Missed::NotCounted(NotCounted::OutsideSchedule {
                rule: rule.id.clone(),
            });
        }
        let Some(number) = &call.number else {
            return Missed::NotCounted(NotCounted::NoNumber {
                rule: rule.id.clone(),
            });
        };
        let zones = zones_of(number)
            .map(|z| (z, true))
            .or_else(|| rule.fallback_zone.clone().map(|z| (z, false)));
        let queue = rule
            .forward_to
            .clone()
            .unwrap_or_else(|| call.queue.clone());
        let agent = if rule.forward_to.is_none() {
            call.agent.clone()
        } else {
            None
        };
        let settings = |zones: Vec<String>, from_number: bool| TaskSettings {
            rule: rule.id.clone(),
            miss: call.kind,
            attempt: 0,
            zones,
            zone_from_number: from_number,
            caller_id: task_caller_id(rule, &call.called),
            wait_for_answer_s: rule.wait_for_answer.as_secs(),
            agent_prompt: rule.agent_prompt.clone(),
            recording_notice: rule.recording_notice.clone(),
            recording_retention_s: rule.recording_retention.as_secs(),
            success_after_s: rule.success_after.as_secs(),
            agent: agent.clone(),
        };
        let callback = NewCallback {
            queue,
            number: number.as_digits(),
            caller_ani: call.ani.clone(),
            called_number: call.called.clone(),
            priority: call.priority,
            queued_at: call.arrived_at,
            registered_at: call.ended_at,
            ecbt_quoted_minutes: 0,
            expires_at: add(call.ended_at, TASK_LIFETIME),
            inbound_call_id: call.call_id.clone(),
            sip_context: None,
        };
        let (first_attempt_at, reason, task) = match zones {
            None => (
                None,
                Some("unknown_time_zone".to_owned()),
                settings(Vec::new(), false),
            ),
            Some((zones, from_number)) => {
                let first = add(call.ended_at, rule.intervals[0]);
                match place(&rule.schedule, &self.window, &zones, first) {
                    Some(at) => (Some(at), None, settings(zone_names(&zones), from_number)),
                    None => (
                        None,
                        Some("no_calling_time".to_owned()),
                        settings(zone_names(&zones), from_number),
                    ),
                }
            }
        };
        Missed::Task(Box::new(NewTask {
            callback,
            rule: rule.id.clone(),
            task: task.to_json(),
            first_attempt_at,
            reason,
        }))
    }

    /// After failed attempt number `task.attempt` (0-based) ended at
    /// `now`: when the next is due and the settings it is scheduled with —
    /// the rule's of now. `None`: no more attempts (all used, the rule is
    /// gone or off, the organisation frozen, or no calling time found).
    pub fn next_attempt(
        &self,
        task: &TaskSettings,
        number: &PhoneNumber,
        now: Timestamp,
    ) -> Option<(Timestamp, TaskSettings)> {
        if self.frozen {
            return None;
        }
        let rule = self.rule(&task.rule).filter(|r| r.enabled)?;
        let next = task.attempt.checked_add(1)?;
        let wait = *rule.intervals.get(usize::try_from(next).ok()?)?;
        let (zones, from_number) = match zones_of(number) {
            Some(z) => (z, true),
            None => (rule.fallback_zone.clone()?, false),
        };
        let at = place(&rule.schedule, &self.window, &zones, add(now, wait))?;
        Some((
            at,
            TaskSettings {
                rule: rule.id.clone(),
                miss: task.miss,
                attempt: next,
                zones: zone_names(&zones),
                zone_from_number: from_number,
                caller_id: rule
                    .caller_id
                    .as_ref()
                    .map(PhoneNumber::as_digits)
                    .or_else(|| task.caller_id.clone()),
                wait_for_answer_s: rule.wait_for_answer.as_secs(),
                agent_prompt: rule.agent_prompt.clone(),
                recording_notice: rule.recording_notice.clone(),
                recording_retention_s: rule.recording_retention.as_secs(),
                success_after_s: rule.success_after.as_secs(),
                agent: task.agent.clone(),
            },
        ))
    }
}

/// The caller ID a task presents: the rule's, else the number the customer
/// dialed (our DID) when it is a callable number; `None`: the queue's
/// callback number.
pub fn task_caller_id(rule: &Rule, called: &str) -> Option<String> {
    rule.caller_id
        .as_ref()
        .map(PhoneNumber::as_digits)
        .or_else(|| {
            // A DID arrives as `3125550100`, `13125550100` or `+13125550100`.
            let digits = called.strip_prefix('+').unwrap_or(called);
            let national = match digits.strip_prefix('1') {
                Some(rest) if rest.len() == 10 => rest,
                _ => digits,
            };
            crate::callback::number::own_number(national)
                .ok()
                .map(|n| n.as_digits())
        })
}

fn zone_names(zones: &CustomerZones) -> Vec<String> {
    zones.names().iter().map(ToString::to_string).collect()
}

fn add(at: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn q(id: &str) -> QueueId {
        QueueId(id.into())
    }

    fn national(digits: &str) -> PhoneNumber {
        crate::callback::number::own_number(digits).expect("callable")
    }

    /// An IVR rule for every queue: 10 s minimum, intervals 5, 15, 60 min,
    /// in force around the clock (Chicago), no fallback zone.
    fn rule() -> Rule {
        Rule {
            id: "ivr-missed".into(),
            kind: MissKind::Ivr,
            enabled: true,
            queues: Vec::new(),
            min_time: Duration::from_secs(10),
            intervals: [5, 15, 60].map(|m| Duration::from_secs(m * 60)).to_vec(),
            caller_id: None,
            forward_to: None,
            wait_for_answer: Duration::from_secs(25),
            agent_prompt: "missed_call_agent".into(),
            recording_notice: None,
            recording_retention: Duration::from_secs(86_400),
            schedule: BusinessHours::parse("America/Chicago", &all_week("00:00-24:00"), &[])
                .expect("hours"),
            fallback_zone: None,
            success_after: Duration::from_secs(10),
        }
    }

    fn all_week(range: &'static str) -> Vec<(&'static str, &'static str)> {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .into_iter()
            .map(|d| (d, range))
            .collect()
    }

    fn book(rules: Vec<Rule>) -> RuleBook {
        RuleBook {
            rules,
            window: CallingWindow::default(),
            frozen: false,
        }
    }

    /// A Chicago caller who hung up in the IVR of `support` after 30 s, on
    /// Monday 2026-12-07 at 15:00:30Z (09:00:30 in Chicago).
    fn missed() -> MissedCall {
        MissedCall {
            kind: MissKind::Ivr,
            queue: q("support"),
            priority: 3,
            expiry: Duration::from_secs(86_400),
            number: Some(national("3125550188")),
            ani: "+13125550188".into(),
            called: "8005550100".into(),
            arrived_at: ts("2026-12-07T15:00:00Z"),
            ended_at: ts("2026-12-07T15:00:30Z"),
            agent: None,
            call_id: "in-1@carrier".into(),
        }
    }

    fn task(book: &RuleBook, call: &MissedCall) -> NewTask {
        match book.on_missed(call) {
            Missed::Task(task) => *task,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    fn settings_of(task: &NewTask) -> TaskSettings {
        TaskSettings::from_json(&task.task).expect("the snapshot parses")
    }

    #[test]
    fn a_missed_call_becomes_a_task_due_after_the_first_interval() {
        let task = task(&book(vec![rule()]), &missed());
        assert_eq!(task.rule, "ivr-missed");
        assert_eq!(task.first_attempt_at, Some(ts("2026-12-07T15:05:30Z")));
        assert_eq!(task.reason, None);
        let cb = &task.callback;
        assert_eq!(cb.queue, q("support"));
        assert_eq!(cb.number, "3125550188");
        assert_eq!(cb.called_number, "8005550100");
        assert_eq!(cb.priority, 3);
        assert_eq!(cb.queued_at, ts("2026-12-07T15:00:00Z"));
        assert_eq!(cb.registered_at, ts("2026-12-07T15:00:30Z"));
        assert_eq!(cb.expires_at, ts("2026-12-14T15:00:30Z"));
        let s = settings_of(&task);
        assert_eq!(s.attempt, 0);
        assert_eq!(s.miss, MissKind::Ivr);
        assert_eq!(s.zones, ["America/Chicago"]);
        assert!(s.zone_from_number);
        // Caller ID: the number the customer dialed.
        assert_eq!(s.caller_id.as_deref(), Some("8005550100"));
        assert_eq!(s.wait_for_answer_s, 25);
        assert_eq!(s.agent_prompt, "missed_call_agent");
        assert_eq!(s.success_after_s, 10);
    }

    #[test]
    fn which_hang_ups_count() {
        let mut call = missed();
        // No rule at all, or none of this kind.
        assert_eq!(
            book(vec![]).on_missed(&call),
            Missed::NotCounted(NotCounted::NoRule)
        );
        call.kind = MissKind::ContactCenter;
        assert_eq!(
            book(vec![rule()]).on_missed(&call),
            Missed::NotCounted(NotCounted::NoRule)
        );
        call.kind = MissKind::Ivr;
        // Disabled, or for other queues.
        let off = Rule {
            enabled: false,
            ..rule()
        };
        assert_eq!(
            book(vec![off]).on_missed(&call),
            Missed::NotCounted(NotCounted::NoRule)
        );
        let billing = Rule {
            queues: vec![q("billing")],
            ..rule()
        };
        assert_eq!(
            book(vec![billing.clone()]).on_missed(&call),
            Missed::NotCounted(NotCounted::NoRule)
        );
        // Of two, the first that takes the queue applies.
        let second = Rule {
            id: "second".into(),
            ..rule()
        };
        assert_eq!(task(&book(vec![billing, second]), &call).rule, "second");
        // Frozen: nothing counts.
        let mut frozen = book(vec![rule()]);
        frozen.frozen = true;
        assert_eq!(
            frozen.on_missed(&call),
            Missed::NotCounted(NotCounted::Frozen)
        );
        // Less than the minimum in the system (9.999 s of 10).
        call.ended_at = ts("2026-12-07T15:00:09.999Z");
        assert_eq!(
            book(vec![rule()]).on_missed(&call),
            Missed::NotCounted(NotCounted::TooShort {
                rule: "ivr-missed".into()
            })
        );
        call.ended_at = ts("2026-12-07T15:00:10Z");
        assert!(matches!(
            book(vec![rule()]).on_missed(&call),
            Missed::Task(_)
        ));
        // No callable number (anonymous, international ANI).
        call.number = None;
        assert_eq!(
            book(vec![rule()]).on_missed(&call),
            Missed::NotCounted(NotCounted::NoNumber {
                rule: "ivr-missed".into()
            })
        );
    }

    #[test]
    fn the_schedule_has_weekdays_and_a_weekend() {
        let weekly: Vec<(&str, &str)> = ["mon", "tue", "wed", "thu", "fri"]
            .into_iter()
            .map(|d| (d, "09:00-17:00"))
            .chain([("sat", "closed"), ("sun", "closed")])
            .collect();
        let office = Rule {
            schedule: BusinessHours::parse("America/Chicago", &weekly, &[]).expect("hours"),
            ..rule()
        };
        let book = book(vec![office]);
        // Missed at 08:59:59 Chicago: outside; at 09:00:10: inside.
        let mut call = missed();
        call.arrived_at = ts("2026-12-07T14:59:00Z");
        call.ended_at = ts("2026-12-07T14:59:59Z");
        assert_eq!(
            book.on_missed(&call),
            Missed::NotCounted(NotCounted::OutsideSchedule {
                rule: "ivr-missed".into()
            })
        );
        // Missed Friday 16:58 Chicago: due 17:03, after the schedule
        // closes: placed on Monday 09:00 Chicago.
        call.arrived_at = ts("2026-12-11T22:57:00Z");
        call.ended_at = ts("2026-12-11T22:58:00Z");
        let task = task(&book, &call);
        assert_eq!(task.first_attempt_at, Some(ts("2026-12-14T15:00:00Z")));
    }

    #[test]
    fn attempts_wait_for_the_calling_window_in_the_customers_zone() {
        // 21:50 in Chicago: due 21:55, outside 08:00-21:00: 08:00 next day.
        let mut call = missed();
        call.arrived_at = ts("2026-12-08T03:49:00Z");
        call.ended_at = ts("2026-12-08T03:50:00Z");
        let task = task(&book(vec![rule()]), &call);
        assert_eq!(task.first_attempt_at, Some(ts("2026-12-08T14:00:00Z")));
        // The same instant for a Los Angeles number: 19:55 there, inside.
        call.number = Some(national("2135550188"));
        let la = super::tests::task(&book(vec![rule()]), &call);
        assert_eq!(la.first_attempt_at, Some(ts("2026-12-08T03:55:00Z")));
        assert_eq!(settings_of(&la).zones, ["America/Los_Angeles"]);
        // A window of its own, configured per organisation.
        let mut late = book(vec![rule()]);
        late.window = CallingWindow::parse("09:30-20:00").expect("window");
        call.number = Some(national("3125550188"));
        assert_eq!(
            super::tests::task(&late, &call).first_attempt_at,
            Some(ts("2026-12-08T15:30:00Z"))
        );
    }

    #[test]
    fn an_unknown_zone_uses_the_fallback_or_starts_no_call() {
        let mut call = missed();
        // An area code not in service: the zone is unknown.
        call.number = Some(national("9995550188"));
        let none = task(&book(vec![rule()]), &call);
        assert_eq!(none.first_attempt_at, None);
        assert_eq!(none.reason.as_deref(), Some("unknown_time_zone"));
        let fallback = Rule {
            fallback_zone: CustomerZones::from_names(&["America/New_York"]),
            ..rule()
        };
        let task = task(&book(vec![fallback]), &call);
        assert_eq!(task.first_attempt_at, Some(ts("2026-12-07T15:05:30Z")));
        let s = settings_of(&task);
        assert_eq!(s.zones, ["America/New_York"]);
        assert!(!s.zone_from_number);
    }

    #[test]
    fn caller_id_queue_and_agent_follow_the_rule() {
        let mut call = missed();
        call.kind = MissKind::ContactCenter;
        call.agent = Some("alice".into());
        call.called = "+18005550100".into();
        let back = Rule {
            kind: MissKind::ContactCenter,
            ..rule()
        };
        let task = task(&book(vec![back.clone()]), &call);
        let s = settings_of(&task);
        // A DID in E.164 is presented as its national digits.
        assert_eq!(s.caller_id.as_deref(), Some("8005550100"));
        // Forward-to-queue off: back to the queue and the agent that missed it.
        assert_eq!(task.callback.queue, q("support"));
        assert_eq!(s.agent.as_deref(), Some("alice"));
        assert_eq!(s.miss, MissKind::ContactCenter);
        let forward = Rule {
            forward_to: Some(q("outbound")),
            caller_id: Some(national("2125550100")),
            ..back
        };
        let task = super::tests::task(&book(vec![forward]), &call);
        let s = settings_of(&task);
        assert_eq!(task.callback.queue, q("outbound"));
        assert_eq!(s.agent, None);
        assert_eq!(s.caller_id.as_deref(), Some("2125550100"));
        // A DID that is not a callable number: the queue's number (None).
        call.called = "support".into();
        let task = super::tests::task(&book(vec![rule_of_kind(MissKind::ContactCenter)]), &call);
        assert_eq!(settings_of(&task).caller_id, None);
    }

    fn rule_of_kind(kind: MissKind) -> Rule {
        Rule { kind, ..rule() }
    }

    #[test]
    fn each_interval_counts_from_the_previous_failed_attempt() {
        let book = book(vec![rule()]);
        let number = national("3125550188");
        let first = settings_of(&task(&book, &missed()));
        // Attempt 0 failed at 15:06: the next after 15 min.
        let (at, second) = book
            .next_attempt(&first, &number, ts("2026-12-07T15:06:00Z"))
            .expect("a second attempt");
        assert_eq!(at, ts("2026-12-07T15:21:00Z"));
        assert_eq!(second.attempt, 1);
        // Attempt 1 failed at 15:22: the next after 60 min.
        let (at, third) = book
            .next_attempt(&second, &number, ts("2026-12-07T15:22:00Z"))
            .expect("a third attempt");
        assert_eq!(at, ts("2026-12-07T16:22:00Z"));
        assert_eq!(third.attempt, 2);
        // Three intervals, three attempts.
        assert_eq!(
            book.next_attempt(&third, &number, ts("2026-12-07T16:23:00Z")),
            None
        );
    }

    #[test]
    fn an_edited_rule_applies_to_attempts_not_yet_scheduled() {
        let old = book(vec![rule()]);
        let number = national("3125550188");
        let first = settings_of(&task(&old, &missed()));
        // The rule now waits 2 then 7 minutes and rings 40 s.
        let edited = book(vec![Rule {
            intervals: [2, 7].map(|m| Duration::from_secs(m * 60)).to_vec(),
            wait_for_answer: Duration::from_secs(40),
            ..rule()
        }]);
        // The first attempt was scheduled with 25 s of ringing and keeps it.
        assert_eq!(first.wait_for_answer_s, 25);
        let (at, second) = edited
            .next_attempt(&first, &number, ts("2026-12-07T15:06:00Z"))
            .expect("a second attempt");
        assert_eq!(at, ts("2026-12-07T15:13:00Z"));
        assert_eq!(second.wait_for_answer_s, 40);
        // Its caller ID (the DID) is kept: the rule sets none.
        assert_eq!(second.caller_id.as_deref(), Some("8005550100"));
        // Two intervals now: no third attempt.
        assert_eq!(
            edited.next_attempt(&second, &number, ts("2026-12-07T15:14:00Z")),
            None
        );
        // Disabled, deleted or frozen: no further attempt.
        let off = book(vec![Rule {
            enabled: false,
            ..rule()
        }]);
        let at = ts("2026-12-07T15:06:00Z");
        assert_eq!(off.next_attempt(&first, &number, at), None);
        assert_eq!(
            super::tests::book(vec![]).next_attempt(&first, &number, at),
            None
        );
        let mut frozen = super::tests::book(vec![rule()]);
        frozen.frozen = true;
        assert_eq!(frozen.next_attempt(&first, &number, at), None);
    }

    #[test]
    fn task_settings_round_trip_as_json() {
        let s = settings_of(&task(&book(vec![rule()]), &missed()));
        assert_eq!(TaskSettings::from_json(&s.to_json()), Some(s.clone()));
        assert!(s.to_json().contains("\"miss\":\"ivr\""), "{}", s.to_json());
        assert_eq!(TaskSettings::from_json("{}"), None);
        assert_eq!(TaskSettings::from_json("not json"), None);
        assert_eq!(
            s.customer_zones().map(|z| z.names().len()),
            Some(1),
            "the stored zone resolves"
        );
    }
}
