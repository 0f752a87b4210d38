//! The estimated callback time (ECBT), pure.
//!
//! # The estimate
//!
//! `ahead` is everyone who will be served before this caller in its queue:
//! the live callers ahead of it (its 1-based queue position minus one) plus
//! the pending callbacks with an earlier place in line (see
//! [`callers_ahead`]). The caller itself is not counted. With `agents`
//! staffed agents working in parallel, each taking on average `AHT` (the
//! average handle time) per call, those `ahead` calls drain in
//!
//! ```text
//! wait = ahead × AHT / agents
//! ```
//!
//! and then it is this caller's turn. A caller with nobody ahead waits about
//! nothing, which the floor turns into "about `floor` minutes". The calls the
//! agents are handling right now are not counted: issue 3 does not know
//! whether agents are busy; the floor covers that residual for short queues.
//!
//! The announced figure is `wait` in whole minutes **rounded up**
//! (61 s → 2 minutes, 60 s → 1 minute), computed exactly in integer
//! nanoseconds (`ceil(ahead × AHT_ns / (agents × 60 s_ns))`, in `u128`, which
//! cannot overflow for any `u32` × [`Duration`]), then:
//!
//! - no staffed agent → [`Ecbt::MoreThan`]`(ceiling)`: nobody will call back
//!   soon, and no finite figure is honest;
//! - more than `ceiling_minutes` → [`Ecbt::MoreThan`]`(ceiling)`;
//! - otherwise [`Ecbt::Minutes`]`(max(minutes, floor))` — never above the
//!   ceiling, since [`Estimator::new`] requires `floor <= ceiling`.
//!
//! # The rolling average handle time, and how the seed mixes in
//!
//! The window always holds `window` samples. It starts full of copies of
//! `aht_seed`; each recorded handle time replaces one seed copy until none is
//! left, and from then on pushes out the oldest recorded sample. The average
//! is the plain mean of the window:
//!
//! ```text
//! AHT = (seeds × aht_seed + Σ recorded) / window,   seeds = window − recorded
//! ```
//!
//! So before any call is handled the estimate uses exactly the seed; one
//! unusual first call moves it by only `1/window` of the difference; after
//! `window` calls the seed is gone and the average is that of the last
//! `window` calls. Only the recorded samples are stored (at most `window`).

use std::collections::VecDeque;
use std::time::Duration;

use thiserror::Error;

use crate::ivr::Ecbt;

/// How ECBTs are computed; mapped from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcbtSettings {
    /// The average handle time assumed before calls have been handled.
    pub aht_seed: Duration,
    /// How many handle-time samples the rolling average spans (at least 1).
    pub window: usize,
    /// The smallest figure announced, in minutes.
    pub floor_minutes: u32,
    /// Above this many minutes, "more than N minutes" is announced.
    pub ceiling_minutes: u32,
}

/// Settings the estimator cannot work with. A local (configuration) fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EcbtSettingsError {
    /// The rolling window must hold at least one sample.
    #[error("the ECBT handle-time window must be at least 1 sample")]
    ZeroWindow,
    /// The floor is above the ceiling, so no figure could satisfy both.
    #[error("the ECBT floor ({floor} min) is above the ceiling ({ceiling} min)")]
    FloorAboveCeiling {
        /// The configured floor, in minutes.
        floor: u32,
        /// The configured ceiling, in minutes.
        ceiling: u32,
    },
}

/// The rolling average handle time of one queue and the ECBT from it.
#[derive(Debug, Clone)]
pub struct Estimator {
    settings: EcbtSettings,
    /// Recorded handle times, oldest first; never more than `window`.
    samples: VecDeque<Duration>,
    /// Sum of `samples` in nanoseconds.
    sum_nanos: u128,
}

/// Everyone served before a caller: the live callers ahead of its 1-based
/// queue `position` plus the pending callbacks ahead of its place in line.
/// Saturates rather than overflowing.
pub fn callers_ahead(position: u32, pending_callbacks_ahead: u32) -> u32 {
    position
        .saturating_sub(1)
        .saturating_add(pending_callbacks_ahead)
}

impl Estimator {
    /// An estimator with no recorded handle times (the seed only).
    pub fn new(settings: EcbtSettings) -> Result<Self, EcbtSettingsError> {
        if settings.window == 0 {
            return Err(EcbtSettingsError::ZeroWindow);
        }
        if settings.floor_minutes > settings.ceiling_minutes {
            return Err(EcbtSettingsError::FloorAboveCeiling {
                floor: settings.floor_minutes,
                ceiling: settings.ceiling_minutes,
            });
        }
        Ok(Self {
            settings,
            samples: VecDeque::new(),
            sum_nanos: 0,
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &EcbtSettings {
        &self.settings
    }

    /// Records the handle time of one finished call: it replaces a seed
    /// copy, or the oldest sample once the window holds only real ones.
    pub fn record_handle_time(&mut self, d: Duration) {
        if self.samples.len() == self.settings.window
            && let Some(oldest) = self.samples.pop_front()
        {
            self.sum_nanos -= oldest.as_nanos();
        }
        self.samples.push_back(d);
        // At most `window` samples of < 2^94 ns each: overflowing u128 would
        // take 2^34 stored samples (256 GiB), so plain addition is safe.
        self.sum_nanos += d.as_nanos();
    }

    /// The current rolling average handle time (see the module doc).
    pub fn average_handle_time(&self) -> Duration {
        let window = self.settings.window as u128;
        let seeds = window - self.samples.len() as u128;
        let total = seeds
            .saturating_mul(self.settings.aht_seed.as_nanos())
            .saturating_add(self.sum_nanos);
        duration_from_nanos(total / window)
    }

    /// The ECBT for a caller with `ahead` calls (live callers and pending
    /// callbacks) to be served before it by `staffed_agents` agents.
    pub fn estimate(&self, ahead: u32, staffed_agents: u32) -> Ecbt {
        self.settings
            .estimate(self.average_handle_time(), ahead, staffed_agents)
    }
}

impl EcbtSettings {
    /// The ECBT for `ahead` calls served by `staffed_agents` agents taking
    /// `average_handle_time` each, between the floor and the ceiling (what
    /// [`Estimator::estimate`] announces with its rolling average; the API
    /// asks it with the engine's).
    pub fn estimate(&self, average_handle_time: Duration, ahead: u32, staffed_agents: u32) -> Ecbt {
        let ceiling = self.ceiling_minutes;
        if staffed_agents == 0 {
            return Ecbt::MoreThan(ceiling);
        }
        const MINUTE_NANOS: u128 = 60 * 1_000_000_000;
        // ≤ 2^32 × 2^94 = 2^126: fits in u128.
        let work = u128::from(ahead) * average_handle_time.as_nanos();
        // ≤ 2^32 × 2^36: fits.
        let per_minute = u128::from(staffed_agents) * MINUTE_NANOS;
        let minutes = work.div_ceil(per_minute);
        if minutes > u128::from(ceiling) {
            return Ecbt::MoreThan(ceiling);
        }
        // minutes ≤ ceiling, a u32.
        let minutes = u32::try_from(minutes).unwrap_or(ceiling);
        Ecbt::Minutes(minutes.max(self.floor_minutes))
    }
}

/// A `Duration` from nanoseconds, saturating at `Duration::MAX`.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let Ok(secs) = u64::try_from(nanos / NANOS_PER_SEC) else {
        return Duration::MAX;
    };
    // The remainder is below 10^9: it fits in u32.
    let sub = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(aht_secs: u64) -> EcbtSettings {
        EcbtSettings {
            aht_seed: Duration::from_secs(aht_secs),
            window: 20,
            floor_minutes: 1,
            ceiling_minutes: 60,
        }
    }

    fn estimator(aht_secs: u64) -> Estimator {
        Estimator::new(settings(aht_secs)).expect("valid settings")
    }

    #[test]
    fn rounds_up_to_whole_minutes() {
        assert_eq!(estimator(61).estimate(1, 1), Ecbt::Minutes(2));
        assert_eq!(estimator(60).estimate(1, 1), Ecbt::Minutes(1));
        assert_eq!(estimator(119).estimate(1, 1), Ecbt::Minutes(2));
        assert_eq!(estimator(121).estimate(1, 1), Ecbt::Minutes(3));
        // One nanosecond over a whole minute is the next minute.
        let mut s = settings(0);
        s.aht_seed = Duration::from_secs(120) + Duration::from_nanos(1);
        assert_eq!(Estimator::new(s).unwrap().estimate(1, 1), Ecbt::Minutes(3));
    }

    #[test]
    fn agents_drain_the_calls_ahead_in_parallel() {
        let e = estimator(300); // AHT 5 minutes
        assert_eq!(e.estimate(4, 1), Ecbt::Minutes(20));
        assert_eq!(e.estimate(4, 2), Ecbt::Minutes(10));
        // 3 × 5 / 2 = 7.5 minutes → 8.
        assert_eq!(e.estimate(3, 2), Ecbt::Minutes(8));
        // More agents than calls ahead: a fraction of one AHT, rounded up.
        assert_eq!(e.estimate(1, 10), Ecbt::Minutes(1));
    }

    #[test]
    fn callers_ahead_excludes_the_caller_itself() {
        assert_eq!(callers_ahead(1, 0), 0);
        assert_eq!(callers_ahead(3, 2), 4);
        assert_eq!(callers_ahead(0, 0), 0);
        assert_eq!(callers_ahead(u32::MAX, u32::MAX), u32::MAX);
    }

    #[test]
    fn nobody_ahead_announces_the_floor() {
        let mut s = settings(300);
        s.floor_minutes = 3;
        let e = Estimator::new(s).unwrap();
        assert_eq!(e.estimate(0, 4), Ecbt::Minutes(3));
    }

    #[test]
    fn short_waits_are_raised_to_the_floor() {
        let mut s = settings(300);
        s.floor_minutes = 15;
        let e = Estimator::new(s).unwrap();
        assert_eq!(e.estimate(2, 1), Ecbt::Minutes(15)); // 10 min
        assert_eq!(e.estimate(3, 1), Ecbt::Minutes(15)); // 15 min
        assert_eq!(e.estimate(4, 1), Ecbt::Minutes(20)); // above the floor
    }

    #[test]
    fn above_the_ceiling_is_more_than_the_ceiling() {
        let mut s = settings(60);
        s.ceiling_minutes = 30;
        let e = Estimator::new(s).unwrap();
        assert_eq!(e.estimate(30, 1), Ecbt::Minutes(30));
        assert_eq!(e.estimate(31, 1), Ecbt::MoreThan(30));
        assert_eq!(e.estimate(61, 2), Ecbt::MoreThan(30)); // 30.5 → 31
        assert_eq!(e.estimate(60, 2), Ecbt::Minutes(30));
    }

    #[test]
    fn no_staffed_agent_is_more_than_the_ceiling() {
        let e = estimator(60);
        assert_eq!(e.estimate(0, 0), Ecbt::MoreThan(60));
        assert_eq!(e.estimate(5, 0), Ecbt::MoreThan(60));
    }

    #[test]
    fn the_seed_is_used_before_any_sample() {
        let e = estimator(240);
        assert_eq!(e.average_handle_time(), Duration::from_secs(240));
        assert_eq!(e.estimate(3, 1), Ecbt::Minutes(12));
    }

    #[test]
    fn samples_replace_seed_copies_one_by_one() {
        let mut s = settings(100);
        s.window = 4;
        let mut e = Estimator::new(s).unwrap();
        e.record_handle_time(Duration::from_secs(200));
        // (3 × 100 + 200) / 4
        assert_eq!(e.average_handle_time(), Duration::from_secs(125));
        e.record_handle_time(Duration::from_secs(300));
        // (2 × 100 + 200 + 300) / 4
        assert_eq!(e.average_handle_time(), Duration::from_secs(175));
    }

    #[test]
    fn the_rolling_window_drops_old_samples() {
        let mut s = settings(1_000);
        s.window = 3;
        let mut e = Estimator::new(s).unwrap();
        for secs in [10, 20, 30] {
            e.record_handle_time(Duration::from_secs(secs));
        }
        // The seed is gone entirely.
        assert_eq!(e.average_handle_time(), Duration::from_secs(20));
        e.record_handle_time(Duration::from_secs(90));
        // 10 dropped: (20 + 30 + 90) / 3
        assert_eq!(
            e.average_handle_time(),
            Duration::from_nanos(46_666_666_666)
        );
        for _ in 0..3 {
            e.record_handle_time(Duration::from_secs(60));
        }
        assert_eq!(e.average_handle_time(), Duration::from_secs(60));
        assert_eq!(e.estimate(5, 1), Ecbt::Minutes(5));
    }

    #[test]
    fn rejects_a_zero_window() {
        let mut s = settings(60);
        s.window = 0;
        assert_eq!(Estimator::new(s).err(), Some(EcbtSettingsError::ZeroWindow));
    }

    #[test]
    fn rejects_a_floor_above_the_ceiling() {
        let mut s = settings(60);
        s.floor_minutes = 10;
        s.ceiling_minutes = 5;
        assert_eq!(
            Estimator::new(s).err(),
            Some(EcbtSettingsError::FloorAboveCeiling {
                floor: 10,
                ceiling: 5
            })
        );
    }

    #[test]
    fn large_numbers_do_not_overflow() {
        let mut s = settings(0);
        s.aht_seed = Duration::MAX;
        s.ceiling_minutes = u32::MAX;
        let mut e = Estimator::new(s).unwrap();
        assert_eq!(e.average_handle_time(), Duration::MAX);
        assert_eq!(e.estimate(u32::MAX, 1), Ecbt::MoreThan(u32::MAX));
        assert_eq!(e.estimate(u32::MAX, u32::MAX), Ecbt::MoreThan(u32::MAX));
        for _ in 0..100 {
            e.record_handle_time(Duration::MAX);
        }
        assert_eq!(e.average_handle_time(), Duration::MAX);

        // A huge window with a huge seed saturates instead of overflowing
        // (the average is then below the seed, but still centuries).
        let mut s = settings(0);
        s.aht_seed = Duration::MAX;
        s.window = usize::MAX;
        let e = Estimator::new(s).unwrap();
        assert!(e.average_handle_time() > Duration::from_secs(100 * 365 * 86_400));
        assert_eq!(e.estimate(1, 1), Ecbt::MoreThan(60));

        // Many calls ahead, realistic AHT, many agents: exact.
        let e = estimator(600);
        assert_eq!(e.estimate(u32::MAX, u32::MAX), Ecbt::Minutes(10));
        // 4 294 967 295 × 10 min is far beyond a u32 ceiling of 60.
        assert_eq!(e.estimate(u32::MAX, 1), Ecbt::MoreThan(60));
    }
}
