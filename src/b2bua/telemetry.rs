//! What the controller counts for metrics: plain fields bumped where the
//! event happens (no lock, no atomic, no clock), copied out by
//! [`Controller::totals`](super::Controller::totals) and rendered by the
//! API. Label values are from closed sets, so every family stays small.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::callback::QueueId;
use crate::callback::cdr::{Leg, LegOutcome};
use crate::media::digits::DigitSource;

/// Upper bounds of the ECBT error histogram, in seconds (signed: negative
/// is earlier than announced).
pub const ECBT_ERROR_BOUNDS: &[f64] = &[
    -1800.0, -900.0, -600.0, -300.0, -120.0, -60.0, 0.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
];

/// Upper bounds of the scheduler lag histogram, in seconds.
pub const LAG_BOUNDS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A histogram with fixed bounds (Prometheus' classic buckets).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the overflow (`+Inf`); not cumulative.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds one observation: it lands in the first bucket whose bound is
    /// at least `v` (Prometheus' `le`).
    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// `(upper bound, observations in that bucket)`, not cumulative; the
    /// last bound is `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Which way a call went, for `calls_ended{direction}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallDirection {
    /// A caller who called in.
    Inbound,
    /// A leg to an agent (a callback's, or a live caller's).
    OutboundAgent,
    /// A callback's leg to the customer through the trunk.
    OutboundCustomer,
}

impl CallDirection {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::OutboundAgent => "outbound_agent",
            CallDirection::OutboundCustomer => "outbound_customer",
        }
    }

    /// The direction of a CDR leg.
    pub fn of_leg(leg: Leg) -> CallDirection {
        match leg {
            Leg::Inbound => CallDirection::Inbound,
            Leg::Agent => CallDirection::OutboundAgent,
            Leg::Customer => CallDirection::OutboundCustomer,
        }
    }
}

/// The counters of the call layer (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// Calls ended, by direction and outcome: one per CDR row written, and
    /// one per agent leg rung for a live caller (which has no CDR row).
    pub calls_ended: BTreeMap<(CallDirection, LegOutcome), u64>,
    /// Key presses taken by an IVR, by the way the first copy came
    /// (copies of the same press by another way are not counted).
    pub dtmf_digits: BTreeMap<DigitSource, u64>,
    /// Per queue (where the ECBT was announced): the customer leg's first
    /// INVITE minus registration minus the announced ECBT, in seconds
    /// (see [`ecbt_error`]); callbacks with no ECBT announced are left out.
    pub ecbt_error: BTreeMap<QueueId, Histogram>,
    /// Seconds from a callback's due time (`next_attempt_at`: a retry's, a
    /// scheduled callback's) to its launch (the claim): waiting for hours,
    /// a free agent, a line, a poll. A first attempt of an IVR callback has
    /// no due time (it waits for its turn) and is not observed.
    pub scheduler_lag: Histogram,
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry {
            calls_ended: BTreeMap::new(),
            dtmf_digits: BTreeMap::new(),
            ecbt_error: BTreeMap::new(),
            scheduler_lag: Histogram::new(LAG_BOUNDS),
        }
    }
}

impl Telemetry {
    /// Counts an ended call.
    pub fn call_ended(&mut self, direction: CallDirection, outcome: LegOutcome) {
        *self.calls_ended.entry((direction, outcome)).or_default() += 1;
    }

    /// Records a callback's ECBT error in `queue`.
    pub fn ecbt_error(&mut self, queue: &QueueId, error: jiff::SignedDuration) {
        self.ecbt_error
            .entry(queue.clone())
            .or_insert_with(|| Histogram::new(ECBT_ERROR_BOUNDS))
            .observe(error.as_secs_f64());
    }
}

/// The ECBT error of a callback: when its customer was first dialed
/// (`dialed_at`, the customer leg's first INVITE) minus when it was
/// registered, minus the ECBT announced (`quoted_minutes`; for "more than
/// N minutes", N). Positive: the customer was called later than announced.
/// `None` when no ECBT was announced (`quoted_minutes` 0: launching was
/// off, or the callback came through the API).
pub fn ecbt_error(
    registered_at: jiff::Timestamp,
    quoted_minutes: u32,
    dialed_at: jiff::Timestamp,
) -> Option<jiff::SignedDuration> {
    if quoted_minutes == 0 {
        return None;
    }
    let actual = dialed_at.duration_since(registered_at);
    let announced = jiff::SignedDuration::from_secs(i64::from(quoted_minutes) * 60);
    actual.checked_sub(announced)
}

/// One queue's estimator as it stands, for the ECBT gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEcbt {
    /// The queue.
    pub queue: QueueId,
    /// Its rolling average handle time now.
    pub average_handle_time: Duration,
    /// The staffing the next estimate divides by (see
    /// [`Agents::staffed`](crate::acd::agents::Agents::staffed)).
    pub staffed_agents: u32,
    /// The ECBT last announced to a caller of the queue who registered, in
    /// minutes (`None` before the first).
    pub last_announced_minutes: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let mut h = Histogram::new(&[0.0, 60.0]);
        for v in [-5.0, 0.0, 1.0, 60.0, 61.0] {
            h.observe(v);
        }
        assert_eq!(h.buckets(), [(0.0, 2), (60.0, 2), (f64::INFINITY, 1)]);
        assert_eq!((h.count(), h.sum()), (5, 117.0));
    }

    #[test]
    fn the_ecbt_error_is_signed_and_absent_without_a_quote() {
        let at: jiff::Timestamp = "2026-01-05T10:00:00Z".parse().unwrap();
        let late: jiff::Timestamp = "2026-01-05T10:07:30Z".parse().unwrap();
        assert_eq!(
            ecbt_error(at, 5, late),
            Some(jiff::SignedDuration::from_secs(150))
        );
        assert_eq!(
            ecbt_error(at, 10, late),
            Some(jiff::SignedDuration::from_secs(-150))
        );
        assert_eq!(ecbt_error(at, 0, late), None);
    }
}
