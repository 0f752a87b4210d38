//! `[webhooks]`: how webhook deliveries are made and retried (the
//! subscriptions themselves live in the store, see `/v1/webhooks`).

use std::time::Duration;

use serde::Deserialize;

use super::{Fault, in_range};

/// `[webhooks]`: the delivery worker's limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// How long one POST may take (connect, send, answer), milliseconds.
    pub timeout_ms: u64,
    /// The wait after a first failed try, milliseconds; doubled after each
    /// further failure.
    pub retry_initial_ms: u64,
    /// The longest wait between two tries, seconds.
    pub retry_max_s: u64,
    /// A delivery still failing this long after its first try is marked
    /// failed, seconds.
    pub max_age_s: u64,
    /// How often the outbox is looked at for new events, milliseconds.
    pub poll_interval_ms: u64,
}

impl WebhooksConfig {
    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `poll_interval_ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The `[webhooks]` value rules, in file order.
    pub(super) fn check(&self) -> Result<(), Fault> {
        in_range("webhooks.timeout_ms", self.timeout_ms, 100..=60_000)?;
        in_range(
            "webhooks.retry_initial_ms",
            self.retry_initial_ms,
            100..=3_600_000,
        )?;
        in_range("webhooks.retry_max_s", self.retry_max_s, 1..=86_400)?;
        in_range("webhooks.max_age_s", self.max_age_s, 60..=7 * 86_400)?;
        in_range(
            "webhooks.poll_interval_ms",
            self.poll_interval_ms,
            50..=10_000,
        )
    }
}

impl Default for WebhooksConfig {
    fn default() -> WebhooksConfig {
        WebhooksConfig {
            timeout_ms: 10_000,
            retry_initial_ms: 1_000,
            retry_max_s: 600,
            max_age_s: 86_400,
            poll_interval_ms: 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn defaults_are_one_second_doubling_to_ten_minutes_for_a_day() {
        let c = parse("").expect("defaults");
        assert_eq!(c.webhooks.retry_initial_ms, 1000);
        assert_eq!(c.webhooks.retry_max_s, 600);
        assert_eq!(c.webhooks.max_age_s, 86_400);
        assert_eq!(c.webhooks.timeout().as_secs(), 10);
    }

    #[test]
    fn rejects_out_of_range_values_naming_the_field() {
        for (text, field) in [
            ("timeout_ms = 99", "webhooks.timeout_ms"),
            ("retry_initial_ms = 0", "webhooks.retry_initial_ms"),
            ("retry_max_s = 0", "webhooks.retry_max_s"),
            ("max_age_s = 59", "webhooks.max_age_s"),
            ("max_age_s = 604801", "webhooks.max_age_s"),
            ("poll_interval_ms = 10001", "webhooks.poll_interval_ms"),
        ] {
            let e = error(&format!("[webhooks]\n{text}\n"));
            assert!(e.starts_with(&format!("config.toml: {field}: ")), "{e}");
            assert!(e.contains("is outside"), "{e}");
        }
        let e = error("[webhooks]\nretries = 3\n");
        assert!(e.contains("retries"), "{e}");
    }
}
