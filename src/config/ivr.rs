//! `[ivr]` and `[ecbt]`: the caller-side timeouts and the estimated-callback-
//! time estimator.

use std::time::Duration;

use serde::Deserialize;

use crate::ivr::ecbt::{EcbtSettings, EcbtSettingsError, Estimator};

use super::{Fault, Invalid, fail, in_range};

/// `[ivr]`: the caller-side timeouts and retry limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IvrConfig {
    /// Wait for the first digit of an entry, seconds.
    pub first_digit_timeout_s: u64,
    /// Wait between digits of an entry, seconds.
    pub inter_digit_timeout_s: u64,
    /// Invalid entries before the caller is returned to the queue.
    pub max_invalid: u32,
    /// While a caller holds, the ECBT is announced again this often, seconds.
    pub announce_interval_s: u64,
}

impl IvrConfig {
    /// The first-digit timeout as a duration.
    pub fn first_digit_timeout(&self) -> Duration {
        Duration::from_secs(self.first_digit_timeout_s)
    }

    /// The inter-digit timeout as a duration.
    pub fn inter_digit_timeout(&self) -> Duration {
        Duration::from_secs(self.inter_digit_timeout_s)
    }

    /// The ECBT re-announcement interval as a duration.
    pub fn announce_interval(&self) -> Duration {
        Duration::from_secs(self.announce_interval_s)
    }

    /// The `[ivr]` value rules.
    pub(super) fn check(&self) -> Result<(), Fault> {
        in_range(
            "ivr.first_digit_timeout_s",
            self.first_digit_timeout_s,
            1..=120,
        )?;
        in_range(
            "ivr.inter_digit_timeout_s",
            self.inter_digit_timeout_s,
            1..=120,
        )?;
        in_range("ivr.max_invalid", self.max_invalid.into(), 1..=10)?;
        in_range(
            "ivr.announce_interval_s",
            self.announce_interval_s,
            10..=3600,
        )?;
        Ok(())
    }
}

impl Default for IvrConfig {
    fn default() -> IvrConfig {
        IvrConfig {
            first_digit_timeout_s: 10,
            inter_digit_timeout_s: 5,
            max_invalid: 3,
            announce_interval_s: 60,
        }
    }
}

/// `[ecbt]`: the estimated-callback-time estimator (see
/// [`crate::ivr::ecbt`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcbtConfig {
    /// Average handle time assumed before calls have been handled, seconds.
    pub aht_s: u64,
    /// Handle-time samples in the rolling average.
    pub window: usize,
    /// Smallest figure announced, minutes.
    pub floor_minutes: u32,
    /// Above this, "more than N minutes" is announced.
    pub ceiling_minutes: u32,
}

impl EcbtConfig {
    /// The estimator settings ([`Estimator::new`] accepts them once the
    /// configuration is validated).
    pub fn settings(&self) -> EcbtSettings {
        EcbtSettings {
            aht_seed: Duration::from_secs(self.aht_s),
            window: self.window,
            floor_minutes: self.floor_minutes,
            ceiling_minutes: self.ceiling_minutes,
        }
    }

    /// The `[ecbt]` value rules: the estimator's own first, so that
    /// configuration and estimator agree.
    pub(super) fn check(&self) -> Result<(), Fault> {
        in_range("ecbt.aht_s", self.aht_s, 1..=86_400)?;
        // The estimator's own rules first, so config and estimator agree.
        match Estimator::new(self.settings()) {
            Ok(_) => {}
            Err(EcbtSettingsError::ZeroWindow) => return fail("ecbt.window", Invalid::Zero),
            Err(EcbtSettingsError::FloorAboveCeiling { floor, ceiling }) => {
                return fail(
                    "ecbt.floor_minutes",
                    Invalid::exceeds(floor, "ecbt.ceiling_minutes", ceiling),
                );
            }
        }
        in_range(
            "ecbt.window",
            u64::try_from(self.window).unwrap_or(u64::MAX),
            1..=MAX_ECBT_WINDOW,
        )?;
        if self.ceiling_minutes == 0 {
            return fail("ecbt.ceiling_minutes", Invalid::Zero);
        }
        if self.ceiling_minutes > MAX_SPOKEN_NUMBER {
            return fail(
                "ecbt.ceiling_minutes",
                Invalid::NotSpeakable {
                    value: self.ceiling_minutes,
                    max: MAX_SPOKEN_NUMBER,
                },
            );
        }
        Ok(())
    }
}

impl Default for EcbtConfig {
    fn default() -> EcbtConfig {
        EcbtConfig {
            aht_s: 300,
            window: 20,
            floor_minutes: 1,
            ceiling_minutes: 60,
        }
    }
}

/// Largest rolling handle-time window (samples kept per queue).
const MAX_ECBT_WINDOW: u64 = 10_000;

/// The largest number the prompts can say: [`PROMPT_NAMES`](super::PROMPT_NAMES) has
/// `number_0` … `number_60`.
const MAX_SPOKEN_NUMBER: u32 = 60;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PROMPT_NAMES;
    use crate::config::test_support::*;

    #[test]
    fn rejects_digit_timeouts_out_of_range() {
        for key in ["first_digit_timeout_s", "inter_digit_timeout_s"] {
            parse(&format!("[ivr]\n{key} = 1\n")).expect("1 s");
            parse(&format!("[ivr]\n{key} = 120\n")).expect("120 s");
            for bad in [0, 121] {
                let e = error(&format!("[ivr]\n{key} = {bad}\n"));
                assert_eq!(
                    e,
                    format!("config.toml: ivr.{key}: {bad} is outside 1..=120")
                );
            }
        }
    }

    #[test]
    fn rejects_max_invalid_out_of_range() {
        let e = error("[ivr]\nmax_invalid = 0\n");
        assert_eq!(e, "config.toml: ivr.max_invalid: 0 is outside 1..=10");
        let e = error("[ivr]\nmax_invalid = 11\n");
        assert_eq!(e, "config.toml: ivr.max_invalid: 11 is outside 1..=10");
    }

    #[test]
    fn rejects_announce_interval_out_of_range() {
        let e = error("[ivr]\nannounce_interval_s = 9\n");
        assert_eq!(
            e,
            "config.toml: ivr.announce_interval_s: 9 is outside 10..=3600"
        );
        let e = error("[ivr]\nannounce_interval_s = 3601\n");
        assert_eq!(
            e,
            "config.toml: ivr.announce_interval_s: 3601 is outside 10..=3600"
        );
    }

    #[test]
    fn rejects_zero_aht_seed() {
        let e = error("[ecbt]\naht_s = 0\n");
        assert_eq!(e, "config.toml: ecbt.aht_s: 0 is outside 1..=86400");
    }

    #[test]
    fn rejects_ecbt_floor_above_ceiling() {
        let e = error("[ecbt]\nfloor_minutes = 31\nceiling_minutes = 30\n");
        assert_eq!(
            e,
            "config.toml: ecbt.floor_minutes: 31 is greater than ecbt.ceiling_minutes 30"
        );
        parse("[ecbt]\nfloor_minutes = 30\nceiling_minutes = 30\n").expect("floor == ceiling");
    }

    #[test]
    fn rejects_zero_ecbt_window() {
        let e = error("[ecbt]\nwindow = 0\n");
        assert_eq!(e, "config.toml: ecbt.window: must be at least 1");
    }

    #[test]
    fn rejects_oversized_ecbt_window() {
        let e = error("[ecbt]\nwindow = 10001\n");
        assert_eq!(e, "config.toml: ecbt.window: 10001 is outside 1..=10000");
    }

    #[test]
    fn rejects_zero_ecbt_ceiling() {
        let e = error("[ecbt]\nfloor_minutes = 0\nceiling_minutes = 0\n");
        assert_eq!(e, "config.toml: ecbt.ceiling_minutes: must be at least 1");
    }

    #[test]
    fn rejects_ecbt_ceiling_the_prompts_cannot_say() {
        let e = error("[ecbt]\nceiling_minutes = 61\n");
        assert_eq!(
            e,
            "config.toml: ecbt.ceiling_minutes: 61 minutes cannot be announced; the prompts say numbers up to 60"
        );
        let said = |n: u32| PROMPT_NAMES.contains(&format!("number_{n}").as_str());
        assert!(said(MAX_SPOKEN_NUMBER) && !said(MAX_SPOKEN_NUMBER + 1));
    }

    #[test]
    fn ecbt_settings_are_accepted_by_the_estimator() {
        let c = parse("[ecbt]\naht_s = 240\nwindow = 5\nfloor_minutes = 2\nceiling_minutes = 45\n")
            .expect("ecbt");
        let estimator = Estimator::new(c.ecbt.settings()).expect("validated settings");
        assert_eq!(estimator.average_handle_time(), Duration::from_secs(240));
        assert_eq!(estimator.settings().window, 5);
        // 10 ahead × 4 min / 1 agent = 40 min; 12 ahead = 48 > 45.
        assert_eq!(estimator.estimate(10, 1), crate::ivr::Ecbt::Minutes(40));
        assert_eq!(estimator.estimate(12, 1), crate::ivr::Ecbt::MoreThan(45));
        assert_eq!(estimator.estimate(0, 1), crate::ivr::Ecbt::Minutes(2));
    }
}
