//! Automatic call distribution, pure: queues, their order (priority, then
//! original entry time — the place in line), and positions.
//!
//! [`Acd`] holds every configured [`Queue`] by [`QueueId`] and, for now, the
//! number of staffed agents per queue as a plain number from the
//! configuration ([`Acd::staffed_agents`]) — the one figure the ECBT
//! estimator needs. The scheduler dispatches waiting callers against due
//! callbacks by the same order: queue priority, then `queued_at`.
//!
//! Like the rest of the pure layers, nothing here reads a clock: entry times
//! come in as arguments.

pub mod agents;
pub mod queue;

use std::collections::BTreeMap;

use thiserror::Error;

use crate::callback::QueueId;

pub use queue::{CallerId, Entry, Place, Queue, QueueError};

/// Misconfiguration of the ACD by its owner. A local fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AcdError {
    /// Two queues with the same identifier.
    #[error("queue {0} is defined twice")]
    DuplicateQueue(QueueId),
}

/// Every queue, by identifier, with its staffing.
#[derive(Debug, Clone, Default)]
pub struct Acd {
    queues: BTreeMap<QueueId, Staffed>,
}

#[derive(Debug, Clone)]
struct Staffed {
    queue: Queue,
    staffed_agents: u32,
}

impl Acd {
    /// An ACD with no queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an empty queue with `staffed_agents` agents (from the
    /// configuration until issue 4 brings real agents).
    pub fn add_queue(&mut self, queue: Queue, staffed_agents: u32) -> Result<(), AcdError> {
        if self.queues.contains_key(queue.id()) {
            return Err(AcdError::DuplicateQueue(queue.id().clone()));
        }
        self.queues.insert(
            queue.id().clone(),
            Staffed {
                queue,
                staffed_agents,
            },
        );
        Ok(())
    }

    /// The queue, if configured.
    pub fn queue(&self, id: &QueueId) -> Option<&Queue> {
        self.queues.get(id).map(|s| &s.queue)
    }

    /// The queue, mutably, if configured.
    pub fn queue_mut(&mut self, id: &QueueId) -> Option<&mut Queue> {
        self.queues.get_mut(id).map(|s| &mut s.queue)
    }

    /// Every queue, in identifier order.
    pub fn queues(&self) -> impl Iterator<Item = &Queue> + '_ {
        self.queues.values().map(|s| &s.queue)
    }

    /// Adds the queue if it is new, else sets its priority; either way sets
    /// its staffing. Its callers keep their places (the organisation
    /// changed at run time).
    pub fn configure(&mut self, id: &QueueId, priority: i32, staffed_agents: u32) {
        let staffed = self.queues.entry(id.clone()).or_insert_with(|| Staffed {
            queue: Queue::new(id.clone(), priority),
            staffed_agents,
        });
        staffed.queue.set_priority(priority);
        staffed.staffed_agents = staffed_agents;
    }

    /// How many agents serve the queue; 0 for an unknown queue (the
    /// estimator then announces "more than" its ceiling).
    pub fn staffed_agents(&self, id: &QueueId) -> u32 {
        self.queues.get(id).map_or(0, |s| s.staffed_agents)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn id(s: &str) -> QueueId {
        QueueId(s.into())
    }

    #[test]
    fn configure_adds_new_queues_and_keeps_callers_of_old_ones() {
        let t0 = Instant::now();
        let mut acd = Acd::new();
        acd.add_queue(Queue::new(id("support"), 0), 1).unwrap();
        let caller = CallerId(7);
        acd.queue_mut(&id("support"))
            .unwrap()
            .join(caller, t0, 0)
            .unwrap();
        acd.configure(&id("support"), 5, 3);
        acd.configure(&id("sales"), 1, 2);
        let support = acd.queue(&id("support")).unwrap();
        assert_eq!(support.priority(), 5);
        assert_eq!(support.position(caller), Some(1));
        assert_eq!(acd.staffed_agents(&id("support")), 3);
        assert_eq!(acd.queue(&id("sales")).unwrap().priority(), 1);
        assert_eq!(acd.staffed_agents(&id("sales")), 2);
    }

    #[test]
    fn holds_queues_and_staffing_by_id() {
        let t0 = Instant::now();
        let mut acd = Acd::new();
        acd.add_queue(Queue::new(id("support"), 1), 4).unwrap();
        acd.add_queue(Queue::new(id("billing"), 2), 0).unwrap();

        assert_eq!(acd.staffed_agents(&id("support")), 4);
        assert_eq!(acd.staffed_agents(&id("billing")), 0);
        assert_eq!(acd.staffed_agents(&id("sales")), 0);

        let q = acd.queue_mut(&id("support")).expect("configured");
        q.join(CallerId(7), t0, 0).unwrap();
        q.join(CallerId(8), t0 + Duration::from_secs(1), 0).unwrap();
        assert_eq!(
            acd.queue(&id("support")).unwrap().position(CallerId(8)),
            Some(2)
        );
        assert!(acd.queue(&id("billing")).unwrap().is_empty());
        assert!(acd.queue(&id("sales")).is_none());
        let ids: Vec<&str> = acd.queues().map(|q| q.id().as_str()).collect();
        assert_eq!(ids, vec!["billing", "support"]);
    }

    #[test]
    fn a_caller_back_from_the_ivr_hears_the_ecbt_of_its_original_place() {
        use crate::ivr::Ecbt;
        use crate::ivr::ecbt::{EcbtSettings, Estimator, callers_ahead};

        let t0 = Instant::now();
        let support = id("support");
        let mut acd = Acd::new();
        acd.add_queue(Queue::new(support.clone(), 0), 1).unwrap();
        let estimator = Estimator::new(EcbtSettings {
            aht_seed: Duration::from_secs(300),
            window: 20,
            floor_minutes: 1,
            ceiling_minutes: 60,
        })
        .unwrap();
        let (a, b, c, d, e) = (
            CallerId(1),
            CallerId(2),
            CallerId(3),
            CallerId(4),
            CallerId(5),
        );
        let q = acd.queue_mut(&support).unwrap();
        q.join(a, t0, 0).unwrap();
        q.join(b, t0 + Duration::from_secs(1), 0).unwrap();
        q.join(c, t0 + Duration::from_secs(2), 0).unwrap();
        q.join(d, t0 + Duration::from_secs(60), 0).unwrap();
        q.join(e, t0 + Duration::from_secs(70), 0).unwrap();

        // b, back from the IVR after three invalid entries, kept its place.
        let position = q.position(b).unwrap();
        assert_eq!(position, 2);
        let ecbt = estimator.estimate(callers_ahead(position, 0), acd.staffed_agents(&support));
        // One caller ahead × 5 minutes / 1 agent; at the end it would be 20.
        assert_eq!(ecbt, Ecbt::Minutes(5));
    }

    #[test]
    fn rejects_a_queue_defined_twice() {
        let mut acd = Acd::new();
        acd.add_queue(Queue::new(id("support"), 1), 4).unwrap();
        assert_eq!(
            acd.add_queue(Queue::new(id("support"), 9), 1),
            Err(AcdError::DuplicateQueue(id("support")))
        );
        assert_eq!(acd.staffed_agents(&id("support")), 4);
        assert_eq!(acd.queue(&id("support")).unwrap().priority(), 1);
    }
}
