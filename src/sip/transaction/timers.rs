//! RFC 3261 transaction timers (Table 4, §17) plus RFC 6026's L and M, kept
//! as data: one deadline slot per timer, indexed by [`Timer`].

use std::time::{Duration, Instant};

use thiserror::Error;

use super::Reliability;

/// The base timer values of RFC 3261 §17.1.1.1 / Table 4.
///
/// Every other timer is derived from these three (see [`TimerConfig::initial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; retransmission intervals start here (default 500 ms).
    pub t1: Duration,
    /// Cap on the retransmission interval of non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    /// The RFC 3261 §17.1.1.1 defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// A [`TimerConfig`] that would make the machines misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TimerConfigError {
    /// T1 is zero: retransmissions would be scheduled back to back.
    #[error("T1 must be greater than zero")]
    ZeroT1,
    /// T2 is below T1: the retransmission cap would shrink the first interval.
    #[error("T2 ({t2:?}) must not be below T1 ({t1:?})")]
    T2BelowT1 {
        /// The configured T1.
        t1: Duration,
        /// The configured T2.
        t2: Duration,
    },
}

impl TimerConfig {
    /// Checks the relations RFC 3261 §17.1.2.2 takes for granted (T1 > 0,
    /// T2 ≥ T1). The machines never hang on a bad config, but they would
    /// retransmit in a tight loop with T1 = 0; the config layer calls this.
    pub fn validate(&self) -> Result<(), TimerConfigError> {
        if self.t1.is_zero() {
            return Err(TimerConfigError::ZeroT1);
        }
        if self.t2 < self.t1 {
            return Err(TimerConfigError::T2BelowT1 {
                t1: self.t1,
                t2: self.t2,
            });
        }
        Ok(())
    }

    /// The initial duration of `timer` (RFC 3261 Table 4, RFC 6026 §8.4 and
    /// §8.7), or `None` when the timer does not run on this transport: the
    /// retransmission timers A, E and G are not started over a reliable
    /// transport (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1).
    ///
    /// Products saturate instead of overflowing, so an absurd T1 yields a
    /// deadline that is never reached rather than a panic.
    pub fn initial(&self, timer: Timer, reliability: Reliability) -> Option<Duration> {
        let reliable = reliability.is_reliable();
        let sixty_four_t1 = self.t1.saturating_mul(64);
        match timer {
            Timer::A | Timer::E | Timer::G if reliable => None,
            Timer::A | Timer::E | Timer::G => Some(self.t1),
            Timer::B | Timer::F | Timer::H | Timer::L | Timer::M => Some(sixty_four_t1),
            // RFC 3261 §17.1.1.2: "at least 32 seconds" for unreliable
            // transports; never shorter than the server's 64·T1 when T1 is
            // raised, so every retransmitted final still finds us.
            Timer::D if reliable => Some(Duration::ZERO),
            Timer::D => Some(sixty_four_t1.max(Duration::from_secs(32))),
            Timer::I | Timer::K if reliable => Some(Duration::ZERO),
            Timer::I | Timer::K => Some(self.t4),
            Timer::J if reliable => Some(Duration::ZERO),
            Timer::J => Some(sixty_four_t1),
        }
    }
}

/// A transaction timer, named as in RFC 3261 Table 4 and RFC 6026.
///
/// Timer C (the proxy's INVITE timeout, RFC 3261 §16.6) is absent: callbackd
/// is a user agent / B2BUA and never runs a proxy transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE client: request retransmission, T1 doubling without cap.
    A,
    /// INVITE client: transaction timeout, 64·T1.
    B,
    /// INVITE client: wait for response retransmissions in Completed.
    D,
    /// Non-INVITE client: request retransmission, T1 doubling up to T2.
    E,
    /// Non-INVITE client: transaction timeout, 64·T1.
    F,
    /// INVITE server: final response retransmission, T1 doubling up to T2.
    G,
    /// INVITE server: wait for the ACK, 64·T1.
    H,
    /// INVITE server: wait for ACK retransmissions in Confirmed, T4.
    I,
    /// Non-INVITE server: wait for request retransmissions in Completed.
    J,
    /// Non-INVITE client: wait for response retransmissions in Completed, T4.
    K,
    /// INVITE server (RFC 6026): wait in Accepted for INVITE retransmissions, 64·T1.
    L,
    /// INVITE client (RFC 6026): wait in Accepted for 2xx retransmissions, 64·T1.
    M,
}

impl Timer {
    /// Number of timers, the size of a [`TimerTable`].
    pub const COUNT: usize = 12;

    /// Every timer in table order; ties between equal deadlines go to the
    /// earlier one.
    pub const ALL: [Timer; Self::COUNT] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
    ];

    /// The slot of this timer in a [`TimerTable`] (declaration order).
    fn index(self) -> usize {
        self as usize
    }
}

/// One transaction's deadlines, one optional slot per [`Timer`]
/// (the quinn `TimerTable` layout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerTable {
    deadlines: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    /// Arms `timer` to fire `after` from `now`, replacing any earlier deadline.
    /// A deadline beyond what `Instant` can represent is treated as never.
    pub fn set(&mut self, timer: Timer, now: Instant, after: Duration) {
        self.deadlines[timer.index()] = now.checked_add(after);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    /// Disarms every timer.
    pub fn stop_all(&mut self) {
        self.deadlines = [None; Timer::COUNT];
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer.index()]
    }

    /// The earliest armed deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().filter_map(|&d| d).min()
    }

    /// The armed timer with the earliest deadline at or before `now` (ties
    /// in [`Timer::ALL`] order). Does not disarm it.
    pub fn expired(&self, now: Instant) -> Option<Timer> {
        Timer::ALL
            .into_iter()
            .filter_map(|t| self.get(t).filter(|&d| d <= now).map(|d| (d, t)))
            .min_by_key(|&(d, _)| d)
            .map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_rfc_3261_values() {
        let cfg = TimerConfig::default();
        assert_eq!(cfg.t1, Duration::from_millis(500));
        assert_eq!(cfg.t2, Duration::from_secs(4));
        assert_eq!(cfg.t4, Duration::from_secs(5));
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn rejects_zero_t1() {
        let cfg = TimerConfig {
            t1: Duration::ZERO,
            ..TimerConfig::default()
        };
        assert_eq!(cfg.validate(), Err(TimerConfigError::ZeroT1));
    }

    #[test]
    fn rejects_t2_below_t1() {
        let cfg = TimerConfig {
            t1: Duration::from_secs(5),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        };
        assert!(matches!(
            cfg.validate(),
            Err(TimerConfigError::T2BelowT1 { .. })
        ));
    }

    #[test]
    fn initial_values_unreliable() {
        let cfg = TimerConfig::default();
        let u = Reliability::Unreliable;
        let ms = Duration::from_millis;
        assert_eq!(cfg.initial(Timer::A, u), Some(ms(500)));
        assert_eq!(cfg.initial(Timer::E, u), Some(ms(500)));
        assert_eq!(cfg.initial(Timer::G, u), Some(ms(500)));
        for t in [Timer::B, Timer::F, Timer::H, Timer::J, Timer::L, Timer::M] {
            assert_eq!(cfg.initial(t, u), Some(ms(32_000)), "{t:?}");
        }
        assert_eq!(cfg.initial(Timer::D, u), Some(ms(32_000)));
        assert_eq!(cfg.initial(Timer::I, u), Some(ms(5_000)));
        assert_eq!(cfg.initial(Timer::K, u), Some(ms(5_000)));
    }

    #[test]
    fn initial_values_reliable() {
        let cfg = TimerConfig::default();
        let r = Reliability::Reliable;
        for t in [Timer::A, Timer::E, Timer::G] {
            assert_eq!(cfg.initial(t, r), None, "{t:?}");
        }
        for t in [Timer::D, Timer::I, Timer::J, Timer::K] {
            assert_eq!(cfg.initial(t, r), Some(Duration::ZERO), "{t:?}");
        }
        for t in [Timer::B, Timer::F, Timer::H, Timer::L, Timer::M] {
            assert_eq!(cfg.initial(t, r), Some(Duration::from_secs(32)), "{t:?}");
        }
    }

    #[test]
    fn timer_d_follows_a_raised_t1() {
        let cfg = TimerConfig {
            t1: Duration::from_secs(1),
            ..TimerConfig::default()
        };
        assert_eq!(
            cfg.initial(Timer::D, Reliability::Unreliable),
            Some(Duration::from_secs(64))
        );
    }

    #[test]
    fn huge_t1_saturates_instead_of_panicking() {
        let t0 = Instant::now();
        let cfg = TimerConfig {
            t1: Duration::MAX,
            ..TimerConfig::default()
        };
        let b = cfg.initial(Timer::B, Reliability::Unreliable);
        assert_eq!(b, Some(Duration::MAX));
        let mut table = TimerTable::default();
        table.set(Timer::B, t0, Duration::MAX);
        assert_eq!(table.get(Timer::B), None);
    }

    #[test]
    fn table_reports_earliest_deadline_and_expiry() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut table = TimerTable::default();
        assert_eq!(table.next_timeout(), None);
        assert_eq!(table.expired(t0 + s(100)), None);

        table.set(Timer::H, t0, s(32));
        table.set(Timer::G, t0, s(1));
        assert_eq!(table.next_timeout(), Some(t0 + s(1)));
        assert_eq!(table.expired(t0), None);
        assert_eq!(table.expired(t0 + s(1)), Some(Timer::G));
        // Both expired: the earlier deadline wins.
        assert_eq!(table.expired(t0 + s(40)), Some(Timer::G));

        table.stop(Timer::G);
        assert_eq!(table.next_timeout(), Some(t0 + s(32)));
        assert_eq!(table.expired(t0 + s(31)), None);
        assert_eq!(table.expired(t0 + s(32)), Some(Timer::H));

        table.stop_all();
        assert_eq!(table.next_timeout(), None);
    }

    #[test]
    fn equal_deadlines_fire_in_table_order() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::H, t0, Duration::from_secs(2));
        table.set(Timer::G, t0, Duration::from_secs(2));
        assert_eq!(table.expired(t0 + Duration::from_secs(2)), Some(Timer::G));
    }
}
