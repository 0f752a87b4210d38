//! RTP port pool: hands out even ports for RTP (RTCP on port + 1, RFC 3550
//! §11) so that a port is not handed to a new call while packets of an old
//! one may still arrive on it:
//!
//! - **Round-robin**: a freed port is reused only after the cursor has gone
//!   round the range.
//! - **Rest**: a released port is not handed out again before it has rested
//!   [`PortPool::DEFAULT_REST`] — the far end of a call we hung up keeps
//!   sending until our BYE reaches it, and a lost BYE is retransmitted after
//!   0.5, 1, 2 and 4 s (RFC 3261 Timer E). Only when every free port is
//!   still resting (a range barely larger than `max_calls`) is the one that
//!   rested longest taken, rather than refusing the call.
//! - **Random start** ([`PortPool::start_at`]): a process starts its cursor
//!   at a random point of the range. The streams of a killed process's calls
//!   keep arriving until their senders time out; a restarted process that
//!   began at the bottom of the range again handed exactly those ports to
//!   its first calls.
//!
//! Pure bookkeeping, time as an argument: the engine binds the sockets and
//! tells the pool when a bind failed ([`PortPool::mark_unusable`]).

// std
use std::time::{Duration, Instant};

// external
use thiserror::Error;

/// Why a pool cannot be built or an operation on it was refused. All are
/// local faults (configuration or a bug in the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PortPoolError {
    /// The lower bound must be even: RTP uses even ports (RFC 3550 §11).
    #[error("RTP port range start {0} is not even")]
    OddMin(u16),
    /// Port 0 means "any port" to the OS and cannot be pooled.
    #[error("RTP port range cannot start at 0")]
    ZeroMin,
    /// The range does not hold one RTP/RTCP pair.
    #[error("RTP port range {min}..={max} holds no even/odd pair")]
    EmptyRange {
        /// Lower bound.
        min: u16,
        /// Upper bound.
        max: u16,
    },
    /// The port is odd or outside the range, so it never came from this pool.
    #[error("port {0} does not belong to this pool")]
    NotInPool(u16),
    /// The port is in the range but not allocated (double release).
    #[error("port {0} is not allocated")]
    NotAllocated(u16),
}

/// A pool of RTP ports in `min..=max`, both **inclusive** (as in Asterisk's
/// `rtpstart`/`rtpend`). `min` is even; each allocation is an even port `p`
/// with `p + 1 <= max` for RTCP, so an even `max` is itself never handed out.
///
/// Allocation walks a cursor round the range and takes the next free port
/// that has rested, so a released port is reused only after the cursor has
/// gone once round and its rest is over (see the module documentation).
#[derive(Debug, Clone)]
pub struct PortPool {
    min: u16,
    max: u16,
    slots: Vec<Slot>,
    cursor: usize,
    in_use: usize,
    unusable: usize,
    rest: Duration,
}

impl PortPool {
    /// A pool over `min..=max` (inclusive). Allocates its table once here.
    pub fn new(min: u16, max: u16) -> Result<Self, PortPoolError> {
        if min == 0 {
            return Err(PortPoolError::ZeroMin);
        }
        if !min.is_multiple_of(2) {
            return Err(PortPoolError::OddMin(min));
        }
        if max <= min {
            return Err(PortPoolError::EmptyRange { min, max });
        }
        // Even p with p + 1 <= max: p = min + 2k for k in 0..=(max - min - 1) / 2.
        let pairs = usize::from(max - min).div_ceil(2);
        Ok(PortPool {
            min,
            max,
            slots: vec![Slot::Free { since: None }; pairs],
            cursor: 0,
            in_use: 0,
            unusable: 0,
            rest: Duration::ZERO,
        })
    }

    /// How long a released port rests by default: past the fourth
    /// retransmission of a lost BYE (0.5 + 1 + 2 + 4 s, RFC 3261 Timer E).
    pub const DEFAULT_REST: Duration = Duration::from_secs(8);

    /// The same pool whose released ports rest `rest` before reuse (none by
    /// default).
    pub fn with_rest(mut self, rest: Duration) -> Self {
        self.rest = rest;
        self
    }

    /// Moves the cursor to the pair `random` picks (any number; taken
    /// modulo the pairs): where a new process starts handing out ports.
    pub fn start_at(mut self, random: usize) -> Self {
        self.cursor = random % self.slots.len();
        self
    }

    /// The next free even port after the cursor that has rested, or `None`
    /// when every port is allocated or set aside. When every free port is
    /// still resting, the one released longest ago.
    ///
    /// A port set aside with [`mark_unusable`](Self::mark_unusable) is
    /// skipped once: when the cursor passes it, it becomes free again for the
    /// following round.
    pub fn allocate(&mut self, now: Instant) -> Option<u16> {
        let n = self.slots.len();
        // The free port released longest ago, should none have rested.
        let mut oldest: Option<(Instant, usize)> = None;
        for step in 0..n {
            let i = (self.cursor + step) % n;
            match self.slots[i] {
                Slot::Free { since: Some(at) } if now.saturating_duration_since(at) < self.rest => {
                    if oldest.is_none_or(|(o, _)| at < o) {
                        oldest = Some((at, i));
                    }
                }
                Slot::Free { .. } => return Some(self.take(i)),
                Slot::Unusable => {
                    self.slots[i] = Slot::Free { since: None };
                    self.unusable -= 1;
                }
                Slot::InUse => {}
            }
        }
        oldest.map(|(_, i)| self.take(i))
    }

    /// Returns an allocated port to the pool at `now`; it rests from then.
    pub fn release(&mut self, port: u16, now: Instant) -> Result<(), PortPoolError> {
        let i = self.take_allocated(port)?;
        self.slots[i] = Slot::Free { since: Some(now) };
        Ok(())
    }

    /// Releases an allocated port whose bind failed (another process holds
    /// it) and keeps it out of circulation until the cursor has passed it
    /// once. The next [`allocate`](Self::allocate) gives the following port.
    pub fn mark_unusable(&mut self, port: u16) -> Result<(), PortPoolError> {
        let i = self.take_allocated(port)?;
        self.slots[i] = Slot::Unusable;
        self.unusable += 1;
        Ok(())
    }

    /// Ports currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Ports currently set aside after a failed bind.
    pub fn unusable(&self) -> usize {
        self.unusable
    }

    /// Number of RTP/RTCP pairs the range holds.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The configured range, inclusive.
    pub fn range(&self) -> (u16, u16) {
        (self.min, self.max)
    }

    fn take(&mut self, i: usize) -> u16 {
        self.slots[i] = Slot::InUse;
        self.in_use += 1;
        self.cursor = (i + 1) % self.slots.len();
        self.port_of(i)
    }

    fn port_of(&self, slot: usize) -> u16 {
        // slot < capacity, so min + 2·slot + 1 <= max fits in u16.
        self.min + 2 * slot as u16
    }

    fn take_allocated(&mut self, port: u16) -> Result<usize, PortPoolError> {
        if port < self.min || !port.is_multiple_of(2) {
            return Err(PortPoolError::NotInPool(port));
        }
        let i = usize::from((port - self.min) / 2);
        match self.slots.get(i) {
            None => Err(PortPoolError::NotInPool(port)),
            Some(Slot::Free { .. } | Slot::Unusable) => Err(PortPoolError::NotAllocated(port)),
            Some(Slot::InUse) => {
                self.in_use -= 1;
                Ok(i)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Free; released at `since` (`None`: never used, or set aside once).
    Free {
        since: Option<Instant>,
    },
    InUse,
    Unusable,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const REST: Duration = PortPool::DEFAULT_REST;

    #[test]
    fn capacity_counts_even_odd_pairs_inclusive() {
        assert_eq!(PortPool::new(10000, 10001).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(10000, 10002).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(10000, 10003).unwrap().capacity(), 2);
        assert_eq!(PortPool::new(10000, 20000).unwrap().capacity(), 5000);
        assert_eq!(PortPool::new(65534, 65535).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(2, 65535).unwrap().capacity(), 32767);
    }

    #[test]
    fn rejects_odd_min() {
        assert_eq!(
            PortPool::new(10001, 10010).unwrap_err(),
            PortPoolError::OddMin(10001)
        );
    }

    #[test]
    fn rejects_zero_min() {
        assert_eq!(PortPool::new(0, 10).unwrap_err(), PortPoolError::ZeroMin);
    }

    #[test]
    fn rejects_empty_range() {
        for (min, max) in [(10000, 10000), (10000, 9998)] {
            assert_eq!(
                PortPool::new(min, max).unwrap_err(),
                PortPoolError::EmptyRange { min, max }
            );
        }
    }

    #[test]
    fn allocates_even_ports_with_rtcp_inside_range() {
        let t = Instant::now();
        let mut pool = PortPool::new(10000, 10010).unwrap();
        let mut seen = HashSet::new();
        while let Some(p) = pool.allocate(t) {
            assert_eq!(p % 2, 0);
            assert!((10000..=10010).contains(&p) && p < 10010, "{p}");
            assert!(seen.insert(p), "{p} handed out twice");
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(pool.in_use(), 5);
    }

    #[test]
    fn exhaustion_returns_none() {
        let t = Instant::now();
        let mut pool = PortPool::new(20000, 20003).unwrap();
        assert_eq!(pool.allocate(t), Some(20000));
        assert_eq!(pool.allocate(t), Some(20002));
        assert_eq!(pool.allocate(t), None);
        assert_eq!(pool.in_use(), 2);
    }

    #[test]
    fn released_port_is_reusable() {
        let t = Instant::now();
        let mut pool = PortPool::new(20000, 20003).unwrap();
        let a = pool.allocate(t).unwrap();
        let _b = pool.allocate(t).unwrap();
        assert_eq!(pool.allocate(t), None);
        pool.release(a, t).unwrap();
        assert_eq!(pool.in_use(), 1);
        assert_eq!(pool.allocate(t), Some(a));
    }

    #[test]
    fn round_robin_does_not_reuse_just_released_port() {
        let t = Instant::now();
        let mut pool = PortPool::new(30000, 30009).unwrap();
        let a = pool.allocate(t).unwrap();
        pool.release(a, t).unwrap();
        let order: Vec<_> = (0..5).map(|_| pool.allocate(t).unwrap()).collect();
        assert_eq!(order, [30002, 30004, 30006, 30008, 30000]);
    }

    #[test]
    fn round_robin_skips_ports_still_in_use() {
        let t = Instant::now();
        let mut pool = PortPool::new(30000, 30007).unwrap();
        let a = pool.allocate(t).unwrap(); // 30000
        let b = pool.allocate(t).unwrap(); // 30002
        let c = pool.allocate(t).unwrap(); // 30004
        pool.release(b, t).unwrap();
        assert_eq!(pool.allocate(t), Some(30006));
        // Wraps, skips 30000 (in use), takes the released 30002.
        assert_eq!(pool.allocate(t), Some(b));
        assert_eq!(pool.allocate(t), None);
        assert_eq!((a, c), (30000, 30004));
    }

    #[test]
    fn rejects_double_release() {
        let t = Instant::now();
        let mut pool = PortPool::new(40000, 40009).unwrap();
        let p = pool.allocate(t).unwrap();
        pool.release(p, t).unwrap();
        assert_eq!(pool.release(p, t), Err(PortPoolError::NotAllocated(p)));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn rejects_release_of_never_allocated_port() {
        let t = Instant::now();
        let mut pool = PortPool::new(40000, 40009).unwrap();
        assert_eq!(
            pool.release(40004, t),
            Err(PortPoolError::NotAllocated(40004))
        );
    }

    #[test]
    fn rejects_release_of_foreign_port() {
        let t = Instant::now();
        let mut pool = PortPool::new(40000, 40009).unwrap();
        pool.allocate(t).unwrap();
        for port in [39998, 40001, 40010, 50000, 0] {
            assert_eq!(
                pool.release(port, t),
                Err(PortPoolError::NotInPool(port)),
                "{port}"
            );
        }
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn unusable_port_is_skipped_then_comes_back() {
        let t = Instant::now();
        let mut pool = PortPool::new(50000, 50005).unwrap(); // 50000, 50002, 50004
        let p = pool.allocate(t).unwrap();
        assert_eq!(p, 50000);
        pool.mark_unusable(p).unwrap();
        assert_eq!((pool.in_use(), pool.unusable()), (0, 1));
        assert_eq!(pool.allocate(t), Some(50002));
        assert_eq!(pool.allocate(t), Some(50004));
        // The cursor passes 50000 once (setting it free) and finds nothing else.
        assert_eq!(pool.allocate(t), None);
        assert_eq!(pool.unusable(), 0);
        assert_eq!(pool.allocate(t), Some(50000));
    }

    #[test]
    fn rejects_marking_unallocated_port_unusable() {
        let t = Instant::now();
        let mut pool = PortPool::new(50000, 50005).unwrap();
        assert_eq!(
            pool.mark_unusable(50002),
            Err(PortPoolError::NotAllocated(50002))
        );
        let p = pool.allocate(t).unwrap();
        pool.mark_unusable(p).unwrap();
        assert_eq!(pool.mark_unusable(p), Err(PortPoolError::NotAllocated(p)));
        assert_eq!(pool.release(p, t), Err(PortPoolError::NotAllocated(p)));
    }

    #[test]
    fn no_double_allocation_under_churn() {
        let t = Instant::now();
        let mut pool = PortPool::new(10000, 10099).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut held: Vec<u16> = Vec::new();
        for _ in 0..10_000 {
            if rng.bool() || held.is_empty() {
                if let Some(p) = pool.allocate(t) {
                    assert!(!held.contains(&p), "{p} allocated twice");
                    held.push(p);
                } else {
                    assert_eq!(held.len(), pool.capacity());
                }
            } else {
                let p = held.swap_remove(rng.usize(..held.len()));
                pool.release(p, t).unwrap();
            }
            assert_eq!(pool.in_use(), held.len());
        }
    }

    #[test]
    fn released_port_rests_before_reuse() {
        let t = Instant::now();
        // Three pairs: 30000, 30002, 30004.
        let mut pool = PortPool::new(30000, 30005).unwrap().with_rest(REST);
        let a = pool.allocate(t).unwrap();
        pool.release(a, t).unwrap();
        // The cursor goes round to the resting 30000 after two more calls,
        // but it is skipped while it rests.
        let b = pool.allocate(t).unwrap();
        let c = pool.allocate(t).unwrap();
        pool.release(b, t).unwrap();
        pool.release(c, t + Duration::from_secs(1)).unwrap();
        let later = t + REST - Duration::from_millis(1);
        // All three rest: the one released longest ago is taken first
        // rather than refusing the call.
        assert_eq!(pool.allocate(later), Some(a));
        pool.release(a, later).unwrap();
        // b rested its full time at t + REST; c and a did not.
        assert_eq!(pool.allocate(t + REST), Some(b));
        let end = t + REST + Duration::from_secs(1);
        assert_eq!(pool.allocate(end), Some(c), "c has rested now, a not yet");
    }

    #[test]
    fn a_rested_port_is_preferred_to_a_resting_one_the_cursor_reaches_first() {
        let t = Instant::now();
        let mut pool = PortPool::new(40000, 40005).unwrap().with_rest(REST);
        let ports: Vec<_> = (0..3).map(|_| pool.allocate(t).unwrap()).collect();
        assert_eq!(ports, [40000, 40002, 40004]);
        pool.release(40004, t).unwrap();
        let late = t + REST + Duration::from_secs(1);
        pool.release(40000, late).unwrap();
        // The cursor is at 40000 (just released): 40004 has rested, so it
        // is taken although 40000 comes first.
        assert_eq!(pool.allocate(late), Some(40004));
    }

    #[test]
    fn never_used_ports_need_no_rest() {
        let t = Instant::now();
        let mut pool = PortPool::new(40000, 40009).unwrap().with_rest(REST);
        assert_eq!(pool.allocate(t), Some(40000));
        assert_eq!(pool.allocate(t), Some(40002));
    }

    #[test]
    fn start_at_moves_the_first_port_and_wraps() {
        let t = Instant::now();
        let mut pool = PortPool::new(10000, 10009).unwrap().start_at(3);
        assert_eq!(pool.allocate(t), Some(10006));
        assert_eq!(pool.allocate(t), Some(10008));
        assert_eq!(pool.allocate(t), Some(10000));
        let mut pool = PortPool::new(10000, 10009).unwrap().start_at(5 + 2);
        assert_eq!(pool.allocate(t), Some(10004), "taken modulo the 5 pairs");
    }

    #[test]
    fn random_starts_spread_over_the_range() {
        // Two processes, one killed and one started at once, must not hand
        // out the same first ports: the restart defect's cause.
        let t = Instant::now();
        let mut rng = fastrand::Rng::with_seed(11);
        let firsts: HashSet<u16> = (0..50)
            .map(|_| {
                PortPool::new(20000, 20999)
                    .unwrap()
                    .start_at(rng.usize(..))
                    .allocate(t)
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 45, "{} distinct first ports", firsts.len());
    }
}
