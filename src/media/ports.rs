//! RTP port pool: hands out even ports for RTP (RTCP on port + 1, RFC 3550
//! §11), round-robin so a port freed by one call is not handed straight to
//! the next, where late packets of the old call would still arrive.
//!
//! Pure bookkeeping: the engine binds the sockets and tells the pool when a
//! bind failed ([`PortPool::mark_unusable`]).

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
/// Allocation walks a cursor round the range and takes the next free port, so
/// a released port is reused only after the cursor has gone once round.
#[derive(Debug, Clone)]
pub struct PortPool {
    min: u16,
    max: u16,
    slots: Vec<Slot>,
    cursor: usize,
    in_use: usize,
    unusable: usize,
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
            slots: vec![Slot::Free; pairs],
            cursor: 0,
            in_use: 0,
            unusable: 0,
        })
    }

    /// The next free even port after the cursor, or `None` when every port
    /// is allocated or set aside.
    ///
    /// A port set aside with [`mark_unusable`](Self::mark_unusable) is
    /// skipped once: when the cursor passes it, it becomes free again for the
    /// following round.
    pub fn allocate(&mut self) -> Option<u16> {
        let n = self.slots.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            match self.slots[i] {
                Slot::Free => {
                    self.slots[i] = Slot::InUse;
                    self.in_use += 1;
                    self.cursor = (i + 1) % n;
                    return Some(self.port_of(i));
                }
                Slot::Unusable => {
                    self.slots[i] = Slot::Free;
                    self.unusable -= 1;
                }
                Slot::InUse => {}
            }
        }
        None
    }

    /// Returns an allocated port to the pool.
    pub fn release(&mut self, port: u16) -> Result<(), PortPoolError> {
        let i = self.take_allocated(port)?;
        self.slots[i] = Slot::Free;
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
            Some(Slot::Free | Slot::Unusable) => Err(PortPoolError::NotAllocated(port)),
            Some(Slot::InUse) => {
                self.in_use -= 1;
                Ok(i)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    InUse,
    Unusable,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

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
        let mut pool = PortPool::new(10000, 10010).unwrap();
        let mut seen = HashSet::new();
        while let Some(p) = pool.allocate() {
            assert_eq!(p % 2, 0);
            assert!((10000..=10010).contains(&p) && p < 10010, "{p}");
            assert!(seen.insert(p), "{p} handed out twice");
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(pool.in_use(), 5);
    }

    #[test]
    fn exhaustion_returns_none() {
        let mut pool = PortPool::new(20000, 20003).unwrap();
        assert_eq!(pool.allocate(), Some(20000));
        assert_eq!(pool.allocate(), Some(20002));
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.in_use(), 2);
    }

    #[test]
    fn released_port_is_reusable() {
        let mut pool = PortPool::new(20000, 20003).unwrap();
        let a = pool.allocate().unwrap();
        let _b = pool.allocate().unwrap();
        assert_eq!(pool.allocate(), None);
        pool.release(a).unwrap();
        assert_eq!(pool.in_use(), 1);
        assert_eq!(pool.allocate(), Some(a));
    }

    #[test]
    fn round_robin_does_not_reuse_just_released_port() {
        let mut pool = PortPool::new(30000, 30009).unwrap();
        let a = pool.allocate().unwrap();
        pool.release(a).unwrap();
        let order: Vec<_> = (0..5).map(|_| pool.allocate().unwrap()).collect();
        assert_eq!(order, [30002, 30004, 30006, 30008, 30000]);
    }

    #[test]
    fn round_robin_skips_ports_still_in_use() {
        let mut pool = PortPool::new(30000, 30007).unwrap();
        let a = pool.allocate().unwrap(); // 30000
        let b = pool.allocate().unwrap(); // 30002
        let c = pool.allocate().unwrap(); // 30004
        pool.release(b).unwrap();
        assert_eq!(pool.allocate(), Some(30006));
        // Wraps, skips 30000 (in use), takes the released 30002.
        assert_eq!(pool.allocate(), Some(b));
        assert_eq!(pool.allocate(), None);
        assert_eq!((a, c), (30000, 30004));
    }

    #[test]
    fn rejects_double_release() {
        let mut pool = PortPool::new(40000, 40009).unwrap();
        let p = pool.allocate().unwrap();
        pool.release(p).unwrap();
        assert_eq!(pool.release(p), Err(PortPoolError::NotAllocated(p)));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn rejects_release_of_never_allocated_port() {
        let mut pool = PortPool::new(40000, 40009).unwrap();
        assert_eq!(pool.release(40004), Err(PortPoolError::NotAllocated(40004)));
    }

    #[test]
    fn rejects_release_of_foreign_port() {
        let mut pool = PortPool::new(40000, 40009).unwrap();
        pool.allocate().unwrap();
        for port in [39998, 40001, 40010, 50000, 0] {
            assert_eq!(
                pool.release(port),
                Err(PortPoolError::NotInPool(port)),
                "{port}"
            );
        }
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn unusable_port_is_skipped_then_comes_back() {
        let mut pool = PortPool::new(50000, 50005).unwrap(); // 50000, 50002, 50004
        let p = pool.allocate().unwrap();
        assert_eq!(p, 50000);
        pool.mark_unusable(p).unwrap();
        assert_eq!((pool.in_use(), pool.unusable()), (0, 1));
        assert_eq!(pool.allocate(), Some(50002));
        assert_eq!(pool.allocate(), Some(50004));
        // The cursor passes 50000 once (setting it free) and finds nothing else.
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.unusable(), 0);
        assert_eq!(pool.allocate(), Some(50000));
    }

    #[test]
    fn rejects_marking_unallocated_port_unusable() {
        let mut pool = PortPool::new(50000, 50005).unwrap();
        assert_eq!(
            pool.mark_unusable(50002),
            Err(PortPoolError::NotAllocated(50002))
        );
        let p = pool.allocate().unwrap();
        pool.mark_unusable(p).unwrap();
        assert_eq!(pool.mark_unusable(p), Err(PortPoolError::NotAllocated(p)));
        assert_eq!(pool.release(p), Err(PortPoolError::NotAllocated(p)));
    }

    #[test]
    fn no_double_allocation_under_churn() {
        let mut pool = PortPool::new(10000, 10099).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut held: Vec<u16> = Vec::new();
        for _ in 0..10_000 {
            if rng.bool() || held.is_empty() {
                if let Some(p) = pool.allocate() {
                    assert!(!held.contains(&p), "{p} allocated twice");
                    held.push(p);
                } else {
                    assert_eq!(held.len(), pool.capacity());
                }
            } else {
                let p = held.swap_remove(rng.usize(..held.len()));
                pool.release(p).unwrap();
            }
            assert_eq!(pool.in_use(), held.len());
        }
    }
}
