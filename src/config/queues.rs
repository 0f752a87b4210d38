//! `[[queues]]`: the queues callers wait in, their DIDs, hours, caller ID
//! and retry policy; DID routing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::callback::QueueId;
use crate::callback::hours::{BusinessHours, HoursError};
use crate::callback::number::{self, InvalidNumber, PhoneNumber};
use crate::callback::scheduler::{QueueSchedule, RetryPolicy};

use super::org::{OrgConfig, hours_invalid};
use super::{Fault, Invalid, fail, in_range, is_digits, is_queue_id};

/// One `[[queues]]` entry. `id` is required; every other key has a default.
/// Its schema (`Queue`) is part of the admin API's OpenAPI document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Queue)]
pub struct QueueConfig {
    /// The queue's name: 1..=64 of `A-Z a-z 0-9 - _ .`, unique.
    #[serde(deserialize_with = "deserialize_queue_id")]
    #[schema(value_type = String)]
    pub id: QueueId,
    /// Order across queues; higher is served first.
    #[serde(default)]
    pub priority: i32,
    /// Seconds in the queue before the callback offer is made.
    #[serde(default)]
    pub offer_after_s: u64,
    /// Agents the ECBT assumes (until agents are managed).
    #[serde(default = "default_staffed_agents")]
    pub staffed_agents: u32,
    /// A pending callback expires this many hours after registration.
    #[serde(default = "default_callback_expiry_h")]
    pub callback_expiry_h: u64,
    /// Called numbers (Request-URI / To user part, digits) routed here.
    #[serde(default)]
    pub dids: Vec<String>,
    /// Weekly hours replacing [`OrgConfig::hours`] for this queue, same
    /// format; the organisation's time zone and holidays still apply.
    #[serde(default)]
    pub hours: Option<BTreeMap<String, String>>,
    /// The number customers see when called back (From and
    /// P-Asserted-Identity), keyed as a caller would: ten NANP digits, or
    /// `011` and an international number.
    #[serde(default = "default_callback_number")]
    pub callback_number: String,
    /// Seconds between a failed attempt and the next one.
    #[serde(default = "default_retry_time_s")]
    pub retry_time_s: u64,
    /// Retries after the first attempt (a customer is called at most
    /// `max_retries + 1` times in this queue).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Where a callback goes once its retries are exhausted: another
    /// configured queue; `None`: it is failed.
    #[serde(default, deserialize_with = "deserialize_optional_queue_id")]
    #[schema(value_type = Option<String>)]
    pub failover: Option<QueueId>,
    /// Seconds the agent's leg rings before it is cancelled.
    #[serde(default = "default_agent_ring_timeout_s")]
    pub agent_ring_timeout_s: u64,
    /// Seconds the customer's leg rings before it is cancelled (the
    /// queue's wait-for-answer time).
    #[serde(default = "default_customer_ring_timeout_s")]
    pub customer_ring_timeout_s: u64,
    /// Seconds an agent who did not answer is not offered work.
    #[serde(default = "default_agent_cooldown_s")]
    pub agent_cooldown_s: u64,
    /// Record bridged callback calls of this queue (stereo WAV: agent left,
    /// customer right) into `[callbacks] recordings_dir`.
    #[serde(default)]
    pub recording: bool,
    /// Play the "recording_notice" prompt to the customer before recording.
    #[serde(default = "default_true")]
    pub recording_notice: bool,
    /// This queue offers callbacks (with `[org] registration_enabled`):
    /// off, its callers hear "we are unable to offer callbacks at this
    /// time" and are disconnected; its pending callbacks still launch.
    #[serde(default = "default_true")]
    pub registration_enabled: bool,
    /// This queue's callbacks are launched (with `[org] launch_enabled`):
    /// off, its callers still register but hear no ECBT, and its due
    /// callbacks wait.
    #[serde(default = "default_true")]
    pub launch_enabled: bool,
}

impl QueueConfig {
    /// This queue's own business hours, if it overrides the organisation's:
    /// its weekly hours in `org`'s time zone, closed on `org`'s holidays.
    /// Fails only on values [`Config::check`] refuses; [`super::Settings`]
    /// holds the result.
    pub(super) fn hours(&self, org: &OrgConfig) -> Result<Option<BusinessHours>, HoursError> {
        self.hours
            .as_ref()
            .map(|weekly| org.business_hours_with(weekly))
            .transpose()
    }

    /// The wait before the callback offer, as a duration.
    pub fn offer_after(&self) -> Duration {
        Duration::from_secs(self.offer_after_s)
    }

    /// How long a pending callback stays valid, as a duration.
    pub fn callback_expiry(&self) -> Duration {
        Duration::from_secs(self.callback_expiry_h.saturating_mul(3600))
    }

    /// The caller ID of this queue's callbacks: [`QueueConfig::callback_number`]
    /// under the numbering rules of a callback entry. The organisation's
    /// blacklist and international rates do not apply: they guard what
    /// customers may ask for, and this is the organisation's own number.
    /// Fails only on values [`Config::check`] refuses; [`super::Settings`]
    /// holds the result.
    pub(super) fn caller_id(&self) -> Result<PhoneNumber, InvalidNumber> {
        number::own_number(&self.callback_number)
    }

    /// Retries, failover and ring timeouts for the scheduler and dialer.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retry_time: Duration::from_secs(self.retry_time_s),
            max_retries: self.max_retries,
            failover: self.failover.clone(),
            agent_ring_timeout: Duration::from_secs(self.agent_ring_timeout_s),
            customer_ring_timeout: Duration::from_secs(self.customer_ring_timeout_s),
        }
    }

    /// How long an agent who did not answer cools down, as a duration.
    pub fn agent_cooldown(&self) -> Duration {
        Duration::from_secs(self.agent_cooldown_s)
    }

    /// The queue as the scheduler sees it: id, priority, own hours (in
    /// `org`'s zone, with its holidays) and retry policy. Fails only on
    /// values [`Config::check`] refuses.
    pub(super) fn schedule(&self, org: &OrgConfig) -> Result<QueueSchedule, HoursError> {
        Ok(QueueSchedule {
            id: self.id.clone(),
            priority: self.priority,
            hours: self.hours(org)?,
            policy: self.retry_policy(),
            launch_enabled: self.launch_enabled,
        })
    }
}

/// The queue an empty file gets: `support`, one agent, offer at once.
impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            id: QueueId("support".into()),
            priority: 0,
            offer_after_s: 0,
            staffed_agents: 1,
            callback_expiry_h: 24,
            dids: Vec::new(),
            hours: None,
            callback_number: DEFAULT_CALLBACK_NUMBER.to_owned(),
            retry_time_s: 300,
            max_retries: 3,
            failover: None,
            agent_ring_timeout_s: 20,
            customer_ring_timeout_s: 30,
            agent_cooldown_s: 60,
            recording: false,
            recording_notice: true,
            registration_enabled: true,
            launch_enabled: true,
        }
    }
}

fn default_staffed_agents() -> u32 {
    QueueConfig::default().staffed_agents
}

fn default_callback_expiry_h() -> u64 {
    QueueConfig::default().callback_expiry_h
}

/// The shipped caller ID: 312-555-0100, from the 555-0100…0199 range kept
/// for fiction, so a placeholder never shows a real subscriber's number.
const DEFAULT_CALLBACK_NUMBER: &str = "3125550100";

fn default_callback_number() -> String {
    DEFAULT_CALLBACK_NUMBER.to_owned()
}

fn default_retry_time_s() -> u64 {
    QueueConfig::default().retry_time_s
}

fn default_max_retries() -> u32 {
    QueueConfig::default().max_retries
}

fn default_agent_ring_timeout_s() -> u64 {
    QueueConfig::default().agent_ring_timeout_s
}

fn default_customer_ring_timeout_s() -> u64 {
    QueueConfig::default().customer_ring_timeout_s
}

fn default_true() -> bool {
    true
}

fn default_agent_cooldown_s() -> u64 {
    QueueConfig::default().agent_cooldown_s
}

/// Longest ring time of an agent or customer leg, seconds.
const MAX_RING_S: u64 = 300;

fn deserialize_queue_id<'de, D: Deserializer<'de>>(d: D) -> Result<QueueId, D::Error> {
    String::deserialize(d).map(|id| QueueId(id.into_boxed_str()))
}

fn deserialize_optional_queue_id<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<QueueId>, D::Error> {
    Option::<String>::deserialize(d).map(|id| id.map(|id| QueueId(id.into_boxed_str())))
}

pub(super) fn deserialize_queue_ids<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<QueueId>, D::Error> {
    Vec::<String>::deserialize(d).map(|ids| {
        ids.into_iter()
            .map(|id| QueueId(id.into_boxed_str()))
            .collect()
    })
}

/// The `[[queues]]` value rules, queue by queue in file order; `org`
/// supplies the time zone and holidays of hours overrides.
pub(super) fn check_queues(queues: &[QueueConfig], org: &OrgConfig) -> Result<(), Fault> {
    if queues.is_empty() {
        return fail("queues", Invalid::Empty);
    }
    for (i, queue) in queues.iter().enumerate() {
        let at = |key: &str| format!("queues[{i}].{key}");
        if !is_queue_id(queue.id.as_str()) {
            return fail(
                &at("id"),
                Invalid::BadQueueId {
                    id: queue.id.as_str().to_owned(),
                },
            );
        }
        if queues[..i].iter().any(|q| q.id == queue.id) {
            return fail(&at("id"), Invalid::duplicate(queue.id.as_str()));
        }
        in_range(&at("offer_after_s"), queue.offer_after_s, 0..=3600)?;
        in_range(
            &at("staffed_agents"),
            queue.staffed_agents.into(),
            0..=10_000,
        )?;
        in_range(&at("callback_expiry_h"), queue.callback_expiry_h, 1..=720)?;
        for (j, did) in queue.dids.iter().enumerate() {
            let field = format!("queues[{i}].dids[{j}]");
            if !is_digits(did) {
                return fail(&field, Invalid::not_digits(did));
            }
            if queue.dids[..j].contains(did) {
                return fail(&field, Invalid::duplicate(did));
            }
            if let Some(owner) = queues[..i].iter().find(|q| q.dids.contains(did)) {
                return fail(
                    &field,
                    Invalid::DidClaimed {
                        did: did.clone(),
                        queue: owner.id.as_str().to_owned(),
                    },
                );
            }
        }
        if let Err(e) = queue.hours(org) {
            let (field, reason) = hours_invalid(org, &at("hours"), e);
            return fail(&field, reason);
        }
        match queue.caller_id() {
            Err(reason) => {
                return fail(
                    &at("callback_number"),
                    Invalid::BadCallbackNumber {
                        value: queue.callback_number.clone(),
                        reason,
                    },
                );
            }
            Ok(number) if !org.presents(&number) => {
                return fail(
                    &at("callback_number"),
                    Invalid::NotACallbackNumber {
                        value: queue.callback_number.clone(),
                    },
                );
            }
            Ok(_) => {}
        }
        in_range(&at("retry_time_s"), queue.retry_time_s, 1..=86_400)?;
        in_range(&at("max_retries"), queue.max_retries.into(), 0..=100)?;
        if let Some(failover) = &queue.failover {
            if *failover == queue.id {
                return fail(&at("failover"), Invalid::FailoverToItself);
            }
            if !queues.iter().any(|q| q.id == *failover) {
                return fail(&at("failover"), Invalid::unknown_queue(failover));
            }
        }
        in_range(
            &at("agent_ring_timeout_s"),
            queue.agent_ring_timeout_s,
            1..=MAX_RING_S,
        )?;
        in_range(
            &at("customer_ring_timeout_s"),
            queue.customer_ring_timeout_s,
            1..=MAX_RING_S,
        )?;
        in_range(&at("agent_cooldown_s"), queue.agent_cooldown_s, 0..=3600)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn rejects_malformed_queue_hours_override() {
        let e = error("[[queues]]\nid = \"support\"\n[queues.hours]\ntue = \"09:00-25:00\"\n");
        assert!(
            e.starts_with("config.toml: queues[0].hours.tue: \"09:00-25:00\" is not HH:MM-HH:MM"),
            "{e}"
        );
        let e = error(
            "[[queues]]\nid = \"a\"\n[[queues]]\nid = \"b\"\n[queues.hours]\nsat = \"13:00-09:00\"\n",
        );
        assert_eq!(
            e,
            "config.toml: queues[1].hours.sat: closes at 09:00, which is not after it opens at 13:00"
        );
    }

    #[test]
    fn rejects_empty_queue_list() {
        let e = error("queues = []\n");
        assert_eq!(e, "config.toml: queues: must list at least one entry");
    }

    #[test]
    fn rejects_queue_without_id() {
        let e = error("[[queues]]\npriority = 1\n");
        assert!(e.contains("missing field `id`"), "{e}");
    }

    #[test]
    fn rejects_malformed_queue_id() {
        let long = "q".repeat(65);
        for bad in [
            "",
            "sales team",
            "sales,vip",
            "ventes-québec",
            long.as_str(),
        ] {
            let e = error(&format!("[[queues]]\nid = \"{bad}\"\n"));
            assert_eq!(
                e,
                format!(
                    "config.toml: queues[0].id: {bad:?} must be 1..=64 characters of A-Z a-z 0-9 - _ ."
                )
            );
        }
        parse(&format!("[[queues]]\nid = \"{}\"\n", "q".repeat(64))).expect("64 chars");
        parse("[[queues]]\nid = \"sales-2.vip_EN\"\n").expect("all allowed characters");
    }

    #[test]
    fn rejects_duplicate_queue_id() {
        let e = error(
            "[[queues]]\nid = \"sales\"\n[[queues]]\nid = \"support\"\n[[queues]]\nid = \"sales\"\n",
        );
        assert_eq!(e, "config.toml: queues[2].id: sales is listed twice");
    }

    #[test]
    fn rejects_did_that_is_not_digits() {
        let e = error("[[queues]]\nid = \"support\"\ndids = [\"+13125550100\"]\n");
        assert_eq!(
            e,
            "config.toml: queues[0].dids[0]: \"+13125550100\" must be digits 0-9 only, at least one"
        );
    }

    #[test]
    fn rejects_did_listed_twice_in_a_queue() {
        let e = error("[[queues]]\nid = \"support\"\ndids = [\"3125550100\", \"3125550100\"]\n");
        assert_eq!(
            e,
            "config.toml: queues[0].dids[1]: 3125550100 is listed twice"
        );
    }

    #[test]
    fn rejects_did_claimed_by_two_queues() {
        let e = error(
            "[[queues]]\nid = \"sales\"\ndids = [\"3125550100\"]\n\
             [[queues]]\nid = \"support\"\ndids = [\"3125550199\", \"3125550100\"]\n",
        );
        assert_eq!(
            e,
            "config.toml: queues[1].dids[1]: 3125550100 is already routed to queue \"sales\""
        );
    }

    #[test]
    fn rejects_queue_timings_out_of_range() {
        let queue = |line: &str| format!("[[queues]]\nid = \"support\"\n{line}\n");
        let e = error(&queue("offer_after_s = 3601"));
        assert_eq!(
            e,
            "config.toml: queues[0].offer_after_s: 3601 is outside 0..=3600"
        );
        let e = error(&queue("callback_expiry_h = 0"));
        assert_eq!(
            e,
            "config.toml: queues[0].callback_expiry_h: 0 is outside 1..=720"
        );
        let e = error(&queue("staffed_agents = 10001"));
        assert_eq!(
            e,
            "config.toml: queues[0].staffed_agents: 10001 is outside 0..=10000"
        );
        parse(&queue("staffed_agents = 0")).expect("no agents: ECBT says more than");
    }

    #[test]
    fn two_queues_with_an_hours_override_parse() {
        let c = parse(TWO_QUEUES).expect("two queues");
        let [support, sales] = c.queues.as_slice() else {
            panic!("two queues: {:?}", c.queues);
        };
        assert_eq!(support.id.as_str(), "support");
        assert_eq!(
            (
                support.priority,
                support.staffed_agents,
                support.callback_expiry_h
            ),
            (0, 1, 24),
            "defaults for keys not written"
        );
        assert_eq!(support.hours(&c.org).expect("valid"), None);
        assert_eq!(sales.id.as_str(), "sales");
        assert_eq!(sales.priority, 10);
        assert_eq!(sales.offer_after(), Duration::from_secs(30));
        assert_eq!(sales.staffed_agents, 4);
        assert_eq!(sales.callback_expiry(), Duration::from_secs(48 * 3600));

        let org = c.org.business_hours().expect("org hours");
        let own = sales
            .hours(&c.org)
            .expect("valid")
            .expect("sales overrides the hours");
        assert_eq!(own.tz, org.tz, "the override keeps the org's zone");
        // Saturday 2026-06-13 11:00 EDT (UTC-4): only sales is open.
        let saturday = ts("2026-06-13T15:00:00Z");
        assert!(!org.is_open(saturday) && own.is_open(saturday));
        // Friday 2026-06-12 13:00 EDT: org open, sales closed since noon.
        let friday = ts("2026-06-12T17:00:00Z");
        assert!(org.is_open(friday) && !own.is_open(friday));
        // Monday is not in the override: sales is closed all day.
        assert!(!own.is_open(ts("2026-06-08T14:00:00Z")));
        // Friday 2026-07-03 is an org holiday, and closes sales too.
        let holiday = ts("2026-07-03T14:00:00Z");
        assert!(!org.is_open(holiday) && !own.is_open(holiday));
    }

    #[test]
    fn callback_numbers_bind_queues_and_agents_to_the_orgs_set() {
        // The org's set: valid own numbers, no duplicate.
        assert_eq!(
            error("[org]\ncallback_numbers = [\"8005550100\", \"12\"]\n"),
            format!(
                "config.toml: org.callback_numbers[1]: \"12\" is not a callable number: {}",
                number::own_number("12").unwrap_err()
            )
        );
        assert!(
            error("[org]\ncallback_numbers = [\"8005550100\", \"18005550100\"]\n")
                .starts_with("config.toml: org.callback_numbers[1]:"),
            "the same number written twice"
        );
        // A queue's caller ID must be in the set once there is one.
        let queue = "[[queues]]\nid = \"support\"\ncallback_number = \"3125550100\"\n";
        assert_eq!(
            error(&format!(
                "[org]\ncallback_numbers = [\"8005550100\"]\n{queue}"
            )),
            "config.toml: queues[0].callback_number: \"3125550100\" is not one of org.callback_numbers"
        );
        parse(&format!(
            "[org]\ncallback_numbers = [\"3125550100\"]\n{queue}"
        ))
        .expect("the queue's number is in the set");
        parse(queue).expect("no set: any number");
        // An agent's subset must come from the set.
        let agent = |numbers: &str| {
            format!(
                "[org]\ncallback_numbers = [\"3125550100\", \"8005550100\"]\n{queue}\
                 [[agents]]\nid = \"alice\"\nuri = \"sip:alice@127.0.0.1\"\nqueues = [\"support\"]\n\
                 callback_numbers = [{numbers}]\n"
            )
        };
        parse(&agent("\"8005550100\"")).expect("a subset of the set");
        // Without a central list, a queue's own number.
        let own = |numbers: &str| {
            format!(
                "{queue}[[agents]]\nid = \"alice\"\nuri = \"sip:alice@127.0.0.1\"\n\
                 queues = [\"support\"]\ncallback_numbers = [{numbers}]\n"
            )
        };
        parse(&own("\"3125550100\"")).expect("the queue's number");
        assert_eq!(
            error(&own("\"8005550100\"")),
            "config.toml: agents[0].callback_numbers[0]: \"8005550100\" is no queue's \
             callback_number (and org.callback_numbers is empty)"
        );
        assert_eq!(
            error(&agent("\"8005550100\", \"2125550100\"")),
            "config.toml: agents[0].callback_numbers[1]: \"2125550100\" is not one of org.callback_numbers"
        );
    }

    #[test]
    fn rejects_invalid_callback_number() {
        let cases = [
            ("13125550100", "area code must start with 2-9"),
            ("+13125550100", "not all digits"),
            ("312555010", "too few digits"),
            ("9115550100", "N11 service code"),
            ("011", "too few digits"),
        ];
        for (number, reason) in cases {
            let e = error(&format!(
                "[[queues]]\nid = \"support\"\n[[queues]]\nid = \"sales\"\ncallback_number = \"{number}\"\n"
            ));
            assert_eq!(
                e,
                format!(
                    "config.toml: queues[1].callback_number: {number:?} is not a callable number: {reason}"
                )
            );
        }
    }

    #[test]
    fn callback_number_ignores_the_customer_blacklist() {
        let c = parse(
            "[org]\nblacklist = [\"312\"]\n[[queues]]\nid = \"support\"\ncallback_number = \"3125550100\"\n",
        )
        .expect("the organisation's own number is not a customer entry");
        assert_eq!(
            c.queues[0].caller_id().expect("caller ID").as_digits(),
            "3125550100"
        );
    }

    #[test]
    fn rejects_failover_to_itself() {
        let e = error(&agents_with(
            "failover = \"sales\"",
            "failover = \"support\"",
        ));
        assert_eq!(
            e,
            "config.toml: queues[0].failover: must name another queue, not the queue itself"
        );
    }

    #[test]
    fn rejects_failover_to_unknown_queue() {
        let e = error(&agents_with(
            "failover = \"sales\"",
            "failover = \"billing\"",
        ));
        assert_eq!(
            e,
            "config.toml: queues[0].failover: \"billing\" is not a configured queue"
        );
    }

    #[test]
    fn rejects_queue_retry_settings_out_of_range() {
        let queue = |line: &str| format!("[[queues]]\nid = \"support\"\n{line}\n");
        let cases = [
            ("retry_time_s = 0", "retry_time_s: 0 is outside 1..=86400"),
            ("max_retries = 101", "max_retries: 101 is outside 0..=100"),
            (
                "agent_ring_timeout_s = 0",
                "agent_ring_timeout_s: 0 is outside 1..=300",
            ),
            (
                "customer_ring_timeout_s = 301",
                "customer_ring_timeout_s: 301 is outside 1..=300",
            ),
            (
                "agent_cooldown_s = 3601",
                "agent_cooldown_s: 3601 is outside 0..=3600",
            ),
        ];
        for (line, message) in cases {
            assert_eq!(
                error(&queue(line)),
                format!("config.toml: queues[0].{message}")
            );
        }
        parse(&queue("max_retries = 0")).expect("no retries: one attempt");
    }
}
