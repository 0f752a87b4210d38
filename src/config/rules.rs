//! `[[missed_call_rules]]`: calls missed in the IVR or in a queue are
//! called back automatically (agent first, then the customer), by rule.
//! Part of the organisation: changed at run time through the API like the
//! queues. The domain type is [`crate::callback::rules::Rule`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::callback::QueueId;
use crate::callback::hours::BusinessHours;
use crate::callback::number;
use crate::callback::rules::{MissKind, Rule};
use crate::callback::timezone::CustomerZones;

use super::org::OrgConfig;
use super::queues::{QueueConfig, deserialize_queue_ids};
use super::{Fault, Invalid, fail, in_range, is_queue_id};

/// One `[[missed_call_rules]]` entry. `id` and `kind` are required; every
/// other key has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MissedCallRule)]
pub struct MissedCallRuleConfig {
    /// The rule's name: 1..=64 of `A-Z a-z 0-9 - _ .`, unique.
    pub id: String,
    /// Which calls it takes: `ivr` (hung up in the IVR, before registering
    /// a callback or reaching the queue's hold) or `contact_center`
    /// (abandoned while waiting in the queue, including a caller whose
    /// agent did not answer).
    pub kind: MissKind,
    /// Off: no new task, and its pending tasks are cancelled.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The queues whose missed calls it takes (empty: every queue). Of
    /// several enabled rules of one kind, the first listed that takes the
    /// queue applies.
    #[serde(default, deserialize_with = "deserialize_queue_ids")]
    #[schema(value_type = Vec<String>)]
    pub queues: Vec<QueueId>,
    /// Seconds the caller must have been in the system (answer to hang-up)
    /// for the hang-up to count as missed.
    #[serde(default = "default_min_time_s")]
    pub min_time_s: u64,
    /// Minutes before each attempt, one per attempt (1..=10 of them, each
    /// 1..=60): the first counts from the missed call, each next one from
    /// the previous failed attempt.
    #[serde(default = "default_intervals_min")]
    pub intervals_min: Vec<u64>,
    /// The number presented to the customer, keyed as a callback number.
    /// Unset: the number the customer dialed, else the queue's callback
    /// number.
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Send the tasks to this queue (forward-to-queue on). Unset: back to
    /// the queue that missed the call, and to the agent that missed it
    /// when one did.
    #[serde(default, deserialize_with = "deserialize_optional_queue")]
    #[schema(value_type = Option<String>)]
    pub forward_to_queue: Option<QueueId>,
    /// Seconds the customer's leg rings before the attempt counts as not
    /// answered.
    #[serde(default = "default_wait_for_answer_s")]
    pub wait_for_answer_s: u64,
    /// The prompt the agent hears before the customer's number is read
    /// (a prompt name: `<prompts.dir>/<name>.wav` unless `[prompts.files]`
    /// maps it).
    #[serde(default = "default_agent_prompt")]
    pub agent_prompt: String,
    /// Record the bridged call, after this prompt (the notice) is played to
    /// the customer. Unset: not recorded.
    #[serde(default)]
    pub recording_notice: Option<String>,
    /// Days a recording of this rule's calls is kept.
    #[serde(default = "default_recording_retention_days")]
    pub recording_retention_days: u64,
    /// When the rule is in force, Monday to Friday, in the organisation's
    /// time zone: `HH:MM-HH:MM` or `closed`. A call missed outside it is
    /// not called back; an attempt falling outside waits for the next
    /// opening.
    #[serde(default = "default_all_day")]
    pub weekdays: String,
    /// The same for Saturday and Sunday.
    #[serde(default = "default_all_day")]
    pub weekend: String,
    /// The customer's time zone when the number does not tell (IANA name).
    /// Unset and unknown from the number: no callback is started, and the
    /// reason is recorded on the task.
    #[serde(default)]
    pub fallback_timezone: Option<String>,
    /// Seconds agent and customer must stay bridged for the callback to
    /// count as done; a shorter call is a failed attempt.
    #[serde(default = "default_success_after_s")]
    pub success_after_s: u64,
}

fn default_true() -> bool {
    true
}
fn default_min_time_s() -> u64 {
    10
}
fn default_intervals_min() -> Vec<u64> {
    vec![5, 15, 60]
}
fn default_wait_for_answer_s() -> u64 {
    30
}
fn default_agent_prompt() -> String {
    "missed_call_agent".to_owned()
}
fn default_recording_retention_days() -> u64 {
    30
}
fn default_all_day() -> String {
    "00:00-24:00".to_owned()
}
fn default_success_after_s() -> u64 {
    10
}

fn deserialize_optional_queue<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<QueueId>, D::Error> {
    Option::<String>::deserialize(d).map(|id| id.map(|id| QueueId(id.into_boxed_str())))
}

/// Most attempts a rule may ask for.
pub const MAX_INTERVALS: usize = 10;

impl MissedCallRuleConfig {
    /// The rule's schedule: `weekdays` Monday to Friday, `weekend` Saturday
    /// and Sunday, in the organisation's zone (no holidays: the queues'
    /// hours keep those).
    fn schedule(
        &self,
        org: &OrgConfig,
    ) -> Result<BusinessHours, crate::callback::hours::HoursError> {
        let weekly: BTreeMap<String, String> = ["mon", "tue", "wed", "thu", "fri"]
            .into_iter()
            .map(|d| (d.to_owned(), self.weekdays.clone()))
            .chain(["sat", "sun"].map(|d| (d.to_owned(), self.weekend.clone())))
            .collect();
        let days: Vec<(&str, &str)> = weekly
            .iter()
            .map(|(d, r)| (d.as_str(), r.as_str()))
            .collect();
        BusinessHours::parse(&org.timezone, &days, &[])
    }

    /// The domain rule. Fails only on values [`check_rules`] refuses.
    pub(super) fn rule(&self, org: &OrgConfig) -> Rule {
        Rule {
            id: self.id.clone(),
            kind: self.kind,
            enabled: self.enabled,
            queues: self.queues.clone(),
            min_time: Duration::from_secs(self.min_time_s),
            intervals: self
                .intervals_min
                .iter()
                .map(|m| Duration::from_secs(m * 60))
                .collect(),
            caller_id: self
                .caller_id
                .as_deref()
                .map(|n| number::own_number(n).expect("missed_call_rules caller_id: check_rules")),
            forward_to: self.forward_to_queue.clone(),
            wait_for_answer: Duration::from_secs(self.wait_for_answer_s),
            agent_prompt: self.agent_prompt.clone(),
            recording_notice: self.recording_notice.clone(),
            recording_retention: Duration::from_secs(
                self.recording_retention_days.saturating_mul(86_400),
            ),
            schedule: self.schedule(org).expect("rule schedule: check_rules"),
            fallback_zone: self
                .fallback_timezone
                .as_deref()
                .map(|z| CustomerZones::from_names(&[z]).expect("fallback_timezone: check_rules")),
            success_after: Duration::from_secs(self.success_after_s),
        }
    }

    /// The prompts this rule plays (agent prompt, recording notice).
    pub fn prompt_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.agent_prompt.as_str()).chain(self.recording_notice.as_deref())
    }
}

/// A prompt name a rule may use: the characters of a file name, no path.
fn is_prompt_name(name: &str) -> bool {
    is_queue_id(name)
}

/// The `[[missed_call_rules]]` value rules, rule by rule in file order.
pub(super) fn check_rules(
    rules: &[MissedCallRuleConfig],
    queues: &[QueueConfig],
    org: &OrgConfig,
) -> Result<(), Fault> {
    for (i, rule) in rules.iter().enumerate() {
        let at = |key: &str| format!("missed_call_rules[{i}].{key}");
        if !is_queue_id(&rule.id) {
            return fail(
                &at("id"),
                Invalid::BadRuleId {
                    id: rule.id.clone(),
                },
            );
        }
        if rules[..i].iter().any(|r| r.id == rule.id) {
            return fail(&at("id"), Invalid::duplicate(&rule.id));
        }
        for (j, q) in rule.queues.iter().enumerate() {
            if !queues.iter().any(|c| c.id == *q) {
                return fail(
                    &format!("missed_call_rules[{i}].queues[{j}]"),
                    Invalid::unknown_queue(q),
                );
            }
        }
        in_range(&at("min_time_s"), rule.min_time_s, 0..=3600)?;
        if rule.intervals_min.is_empty() {
            return fail(&at("intervals_min"), Invalid::Empty);
        }
        if rule.intervals_min.len() > MAX_INTERVALS {
            return fail(
                &at("intervals_min"),
                Invalid::OutOfRange {
                    value: rule.intervals_min.len() as u64,
                    min: 1,
                    max: MAX_INTERVALS as u64,
                },
            );
        }
        for (j, minutes) in rule.intervals_min.iter().enumerate() {
            in_range(
                &format!("missed_call_rules[{i}].intervals_min[{j}]"),
                *minutes,
                1..=60,
            )?;
        }
        if let Some(text) = &rule.caller_id {
            match number::own_number(text) {
                Err(reason) => {
                    return fail(
                        &at("caller_id"),
                        Invalid::BadCallbackNumber {
                            value: text.clone(),
                            reason,
                        },
                    );
                }
                Ok(n) if !org.presents(&n) => {
                    return fail(
                        &at("caller_id"),
                        Invalid::NotACallbackNumber {
                            value: text.clone(),
                        },
                    );
                }
                Ok(_) => {}
            }
        }
        if let Some(q) = &rule.forward_to_queue
            && !queues.iter().any(|c| c.id == *q)
        {
            return fail(&at("forward_to_queue"), Invalid::unknown_queue(q));
        }
        in_range(&at("wait_for_answer_s"), rule.wait_for_answer_s, 1..=300)?;
        if !is_prompt_name(&rule.agent_prompt) {
            return fail(
                &at("agent_prompt"),
                Invalid::BadPromptName {
                    name: rule.agent_prompt.clone(),
                },
            );
        }
        if let Some(name) = &rule.recording_notice
            && !is_prompt_name(name)
        {
            return fail(
                &at("recording_notice"),
                Invalid::BadPromptName { name: name.clone() },
            );
        }
        in_range(
            &at("recording_retention_days"),
            rule.recording_retention_days,
            1..=3650,
        )?;
        for (key, text) in [("weekdays", &rule.weekdays), ("weekend", &rule.weekend)] {
            let probe = MissedCallRuleConfig {
                weekdays: text.clone(),
                weekend: text.clone(),
                ..rule.clone()
            };
            if let Err(e) = probe.schedule(org) {
                return fail(
                    &at(key),
                    Invalid::BadSchedule {
                        reason: e.to_string(),
                    },
                );
            }
        }
        if let Some(zone) = &rule.fallback_timezone
            && CustomerZones::from_names(&[zone.as_str()]).is_none()
        {
            return fail(
                &at("fallback_timezone"),
                Invalid::UnknownTimeZone { name: zone.clone() },
            );
        }
        in_range(&at("success_after_s"), rule.success_after_s, 0..=3600)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn the_shipped_rule_example_parses_when_uncommented() {
        let start = SHIPPED
            .find("\n# [[missed_call_rules]]\n")
            .expect("the example in config.toml");
        let end = start
            + SHIPPED[start..]
                .find("\n# Agents:")
                .expect("the agents follow");
        let example: String = SHIPPED[start..end]
            .lines()
            .map(|line| {
                let line = line.strip_prefix('#').unwrap_or(line);
                line.strip_prefix(' ').unwrap_or(line)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!("{}{example}\n", &SHIPPED[..start]);
        let c = parse(&text).expect("uncommented example");
        assert_eq!(c.missed_call_rules.len(), 1);
        let rule = &c.missed_call_rules[0];
        assert_eq!(rule.id, "ivr-missed");
        assert_eq!(rule.intervals_min, [5, 15, 60]);
    }

    #[test]
    fn rule_values_are_checked_field_by_field() {
        let rule =
            |extra: &str| format!("[[missed_call_rules]]\nid = \"r\"\nkind = \"ivr\"\n{extra}");
        for (extra, field) in [
            ("intervals_min = []", "missed_call_rules[0].intervals_min"),
            (
                "intervals_min = [5, 61]",
                "missed_call_rules[0].intervals_min[1]",
            ),
            (
                "intervals_min = [0]",
                "missed_call_rules[0].intervals_min[0]",
            ),
            (
                "intervals_min = [1,1,1,1,1,1,1,1,1,1,1]",
                "missed_call_rules[0].intervals_min",
            ),
            ("queues = [\"nope\"]", "missed_call_rules[0].queues[0]"),
            (
                "forward_to_queue = \"nope\"",
                "missed_call_rules[0].forward_to_queue",
            ),
            ("caller_id = \"12\"", "missed_call_rules[0].caller_id"),
            (
                "wait_for_answer_s = 0",
                "missed_call_rules[0].wait_for_answer_s",
            ),
            (
                "agent_prompt = \"../x\"",
                "missed_call_rules[0].agent_prompt",
            ),
            (
                "recording_notice = \"a b\"",
                "missed_call_rules[0].recording_notice",
            ),
            ("weekdays = \"9-5\"", "missed_call_rules[0].weekdays"),
            ("weekend = \"18:00-09:00\"", "missed_call_rules[0].weekend"),
            (
                "fallback_timezone = \"Mars/Base\"",
                "missed_call_rules[0].fallback_timezone",
            ),
            ("min_time_s = 3601", "missed_call_rules[0].min_time_s"),
        ] {
            let err = parse(&rule(extra)).expect_err(extra).to_string();
            assert!(err.contains(field), "{extra}: {err}");
        }
        let err = parse(&format!("{}{}", rule(""), rule("")))
            .expect_err("duplicate")
            .to_string();
        assert!(err.contains("missed_call_rules[1].id"), "{err}");
        let err = parse("[org]\ncalling_window = \"21:00-08:00\"\n")
            .expect_err("backwards window")
            .to_string();
        assert!(err.contains("org.calling_window"), "{err}");
        let err = parse("[[missed_call_rules]]\nid = \"r\"\nkind = \"later\"\n")
            .expect_err("unknown kind")
            .to_string();
        assert!(err.contains("unknown variant `later`"), "{err}");
    }
}
