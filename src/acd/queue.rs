//! One queue's live callers and their place in line.
//!
//! # Order
//!
//! Callers are ordered by [`Place`]: per-caller priority (higher first), then
//! the time the caller first entered the queue (`queued_at`, earlier first),
//! then a per-queue sequence number handed out at [`Queue::join`] so that two
//! callers with the same priority and the same instant still have a stable,
//! first-come order. Positions are 1-based: the caller at the head is at
//! position 1, and `position - 1` callers are ahead of it.
//!
//! # Keeping the place while in the IVR
//!
//! A caller who presses 1 to register a callback does **not** leave the
//! queue: its entry keeps its [`Place`] (same priority, same `queued_at`,
//! same sequence number), so
//!
//! - callers behind it still count it as ahead of them — it will be ahead of
//!   them either way, as a live caller again or as a pending callback whose
//!   stored `queued_at` is this same entry time;
//! - after the third invalid entry ("returning you to the queue") the caller
//!   is exactly where it was, never at the end, without any time arithmetic;
//! - on a committed registration the controller calls [`Queue::leave`]; from
//!   then on the store's pending callback (same `queued_at`) holds the place.
//!
//! Whether a caller may be offered to an agent meanwhile (holding, not keying
//! a number) is the IVR flow's to say
//! ([`Flow::is_waiting_in_queue`](crate::ivr::flow::Flow::is_waiting_in_queue)),
//! not this queue's: one place holds that state.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Instant;

use thiserror::Error;

use crate::callback::QueueId;
/// Defined in [`crate::domain`] (the callback scheduler weighs live callers
/// too) and kept reachable here.
pub use crate::domain::CallerId;

/// A caller's place in line. Ordered: the smaller place is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place {
    priority: i32,
    queued_at: Instant,
    seq: u64,
}

/// One entry of a queue, as [`Queue::entries`] yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Who.
    pub caller: CallerId,
    /// Where in line.
    pub place: Place,
}

/// Misuse of a queue by its owner (the engine). All local faults: nothing
/// here comes from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum QueueError {
    /// The caller is already in this queue; joining twice would give it two places.
    #[error("caller {0:?} is already in the queue")]
    AlreadyQueued(CallerId),
    /// The caller is not in this queue.
    #[error("caller {0:?} is not in the queue")]
    NotQueued(CallerId),
}

/// The live callers of one queue, in order.
#[derive(Debug, Clone)]
pub struct Queue {
    id: QueueId,
    priority: i32,
    /// Sorted by `place`, strictly (places are unique thanks to `seq`).
    entries: Vec<Entry>,
    /// caller → its place, to find the entry by binary search.
    index: HashMap<CallerId, Place>,
    next_seq: u64,
}

impl Place {
    /// The caller's priority within the queue; higher is served first.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// When the caller first entered the queue: its place in line, and the
    /// `queued_at` a callback registered from this entry is stored with.
    pub fn queued_at(&self) -> Instant {
        self.queued_at
    }
}

impl Ord for Place {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.queued_at.cmp(&other.queued_at))
            .then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for Place {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Queue {
    /// An empty queue. `priority` is the queue's own priority, used to order
    /// work across queues (issue 4); callers within the queue carry their own.
    pub fn new(id: QueueId, priority: i32) -> Self {
        Self {
            id,
            priority,
            entries: Vec::new(),
            index: HashMap::new(),
            next_seq: 0,
        }
    }

    /// The queue's identifier.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// The queue's priority across queues (higher first).
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// Changes the queue's priority across queues (its callers keep their
    /// places).
    pub fn set_priority(&mut self, priority: i32) {
        self.priority = priority;
    }

    /// Puts a caller in line, on hold, and returns its 1-based position.
    /// `queued_at` is when the caller entered the queue; passing an earlier
    /// (original) time places the caller by that time, not at the end.
    pub fn join(
        &mut self,
        caller: CallerId,
        queued_at: Instant,
        priority: i32,
    ) -> Result<u32, QueueError> {
        if self.index.contains_key(&caller) {
            return Err(QueueError::AlreadyQueued(caller));
        }
        let place = Place {
            priority,
            queued_at,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        // The sequence number is fresh, so `place` is in no entry yet.
        let at = self.entries.partition_point(|e| e.place < place);
        self.entries.insert(at, Entry { caller, place });
        self.index.insert(caller, place);
        Ok(position_from_index(at))
    }

    /// Removes a caller (hung up, registered a callback, or handed to an
    /// agent). Returns its entry, or `None` if it was not queued — a hangup
    /// may race with any other exit, so this is not an error.
    pub fn leave(&mut self, caller: CallerId) -> Option<Entry> {
        let place = self.index.remove(&caller)?;
        let at = self.slot(&place);
        Some(self.entries.remove(at))
    }

    /// The caller's 1-based position among all entries (on hold or
    /// registering), or `None` if it is not queued. O(log n).
    pub fn position(&self, caller: CallerId) -> Option<u32> {
        let place = self.index.get(&caller)?;
        Some(position_from_index(self.slot(place)))
    }

    /// The caller's entry, or `None` if it is not queued.
    pub fn entry(&self, caller: CallerId) -> Option<Entry> {
        let place = self.index.get(&caller)?;
        self.entries.get(self.slot(place)).copied()
    }

    /// Every entry in line order; the n-th item (0-based) is at position n + 1.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &Entry> + '_ {
        self.entries.iter()
    }

    /// How many callers hold a place (on hold or registering).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no caller holds a place.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The index of the entry with `place`, which must be indexed.
    fn slot(&self, place: &Place) -> usize {
        self.entries
            .binary_search_by(|e| e.place.cmp(place))
            .expect("index and entries hold the same places")
    }
}

fn position_from_index(at: usize) -> u32 {
    // A queue of more than u32::MAX callers cannot exist in memory anyway.
    u32::try_from(at + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: CallerId = CallerId(1);
    const B: CallerId = CallerId(2);
    const C: CallerId = CallerId(3);
    const D: CallerId = CallerId(4);
    const E: CallerId = CallerId(5);

    fn queue() -> Queue {
        Queue::new(QueueId("support".into()), 0)
    }

    fn order(q: &Queue) -> Vec<CallerId> {
        q.entries().map(|e| e.caller).collect()
    }

    #[test]
    fn orders_by_priority_then_entry_time() {
        let start = Instant::now();
        // Everyone but E joins a minute after `start`; E is the earliest.
        let t0 = start + Duration::from_secs(60);
        let mut q = queue();
        assert_eq!(q.join(A, t0, 0), Ok(1));
        assert_eq!(q.join(B, t0 + Duration::from_secs(1), 0), Ok(2));
        // Higher priority goes before everyone of lower priority, even later.
        assert_eq!(q.join(C, t0 + Duration::from_secs(2), 5), Ok(1));
        // Same priority as C but earlier: ahead of C.
        assert_eq!(q.join(D, t0 + Duration::from_millis(500), 5), Ok(1));
        // Negative priority: behind everyone.
        assert_eq!(q.join(E, start, -1), Ok(5));
        assert_eq!(order(&q), vec![D, C, A, B, E]);
        assert_eq!(q.position(D), Some(1));
        assert_eq!(q.position(C), Some(2));
        assert_eq!(q.position(A), Some(3));
        assert_eq!(q.position(B), Some(4));
        assert_eq!(q.position(E), Some(5));
    }

    #[test]
    fn ties_are_first_come_first_served() {
        let t0 = Instant::now();
        let mut q = queue();
        assert_eq!(q.join(C, t0, 0), Ok(1));
        assert_eq!(q.join(A, t0, 0), Ok(2));
        assert_eq!(q.join(B, t0, 0), Ok(3));
        // Caller ids play no role: C joined first.
        assert_eq!(order(&q), vec![C, A, B]);
    }

    #[test]
    fn leave_shifts_the_callers_behind() {
        let t0 = Instant::now();
        let mut q = queue();
        for (i, c) in [A, B, C, D].into_iter().enumerate() {
            q.join(c, t0 + Duration::from_secs(i as u64), 0).unwrap();
        }
        let left = q.leave(B).expect("B was queued");
        assert_eq!(left.caller, B);
        assert_eq!(left.place.queued_at(), t0 + Duration::from_secs(1));
        assert_eq!(q.position(A), Some(1));
        assert_eq!(q.position(B), None);
        assert_eq!(q.position(C), Some(2));
        assert_eq!(q.position(D), Some(3));
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn leave_of_an_unknown_caller_is_none() {
        let t0 = Instant::now();
        let mut q = queue();
        q.join(A, t0, 0).unwrap();
        assert_eq!(q.leave(B), None);
        assert_eq!(q.leave(A).map(|e| e.caller), Some(A));
        assert_eq!(q.leave(A), None);
        assert!(q.is_empty());
    }

    #[test]
    fn rejects_joining_twice() {
        let t0 = Instant::now();
        let mut q = queue();
        q.join(A, t0, 0).unwrap();
        assert_eq!(
            q.join(A, t0 + Duration::from_secs(1), 0),
            Err(QueueError::AlreadyQueued(A))
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q.position(A), Some(1));
    }

    #[test]
    fn returns_from_the_ivr_at_the_original_position_not_the_end() {
        let t0 = Instant::now();
        let mut q = queue();
        q.join(A, t0, 0).unwrap();
        q.join(B, t0 + Duration::from_secs(1), 0).unwrap();
        q.join(C, t0 + Duration::from_secs(2), 0).unwrap();

        // B presses 1 and goes into the registration dialog, staying in
        // line; two more callers arrive meanwhile…
        assert_eq!(q.join(D, t0 + Duration::from_secs(30), 0), Ok(4));
        assert_eq!(q.join(E, t0 + Duration::from_secs(40), 0), Ok(5));
        // …and C still counts B ahead of it: B will be ahead either way.
        assert_eq!(q.position(C), Some(3));

        // Third invalid entry: "returning you to the queue" — where it was.
        assert_eq!(q.position(B), Some(2));
        assert_eq!(order(&q), vec![A, B, C, D, E]);
    }

    #[test]
    fn rejoin_with_the_original_entry_time_restores_the_place() {
        let t0 = Instant::now();
        let mut q = queue();
        q.join(A, t0, 0).unwrap();
        q.join(B, t0 + Duration::from_secs(1), 0).unwrap();
        q.join(C, t0 + Duration::from_secs(2), 0).unwrap();
        let original = q.leave(B).expect("B was queued").place.queued_at();
        q.join(D, t0 + Duration::from_secs(30), 0).unwrap();
        q.join(E, t0 + Duration::from_secs(40), 0).unwrap();

        assert_eq!(q.join(B, original, 0), Ok(2));
        assert_eq!(order(&q), vec![A, B, C, D, E]);
    }

    #[test]
    fn thousands_of_callers_keep_exact_positions() {
        // Not a benchmark: position() is a hash lookup plus a binary search,
        // and this checks it stays exact through joins and leaves at scale.
        let t0 = Instant::now();
        let mut q = queue();
        let n = 5_000u64;
        for i in 0..n {
            // Join out of time order: odd ids arrive with earlier times.
            let at = if i % 2 == 1 { i - 1 } else { i + n };
            q.join(CallerId(i), t0 + Duration::from_millis(at), 0)
                .unwrap();
        }
        // Odd callers (times 0, 2, 4, …) first, then even callers.
        assert_eq!(q.position(CallerId(1)), Some(1));
        assert_eq!(q.position(CallerId(3)), Some(2));
        assert_eq!(q.position(CallerId(0)), Some(2_501));
        assert_eq!(q.position(CallerId(n - 2)), Some(5_000));
        // Every other odd caller leaves.
        for i in (1..n).step_by(4) {
            q.leave(CallerId(i)).unwrap();
        }
        assert_eq!(q.len(), 3_750);
        assert_eq!(q.position(CallerId(3)), Some(1));
        assert_eq!(q.position(CallerId(0)), Some(1_251));
        for (i, e) in q.entries().enumerate() {
            assert_eq!(q.position(e.caller), Some(i as u32 + 1));
        }
    }
}
