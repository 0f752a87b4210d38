//! What the controller asks of the callback store, and what it hears back.
//!
//! The store itself blocks on disk (SQLite, `synchronous=FULL`): the engine
//! carries requests out on a thread of its own, a test does so in line.
//! Either way [`execute`] is how a request meets a [`LaunchStore`], and each
//! answer comes back as a [`StoreReply`] tagged with the call (or attempt)
//! it belongs to. A registration's commit has finished when its reply
//! exists: the caller hears "registered" only after that.

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use tracing::{debug, info, warn};

use crate::callback::cdr::CdrRecord;
use crate::callback::store::{
    Attempt, CallbackRow, LaunchStore, NewCallback, NewTask, NextStep, Recorded, Recovery,
    Registration, StoreError, TaskFilter,
};
use crate::callback::{CallbackId, QueueId};

impl StoreRequest {
    /// The metric label of a request that writes (one transaction each):
    /// `register`, `due` (renews claims and expires, then reads), `claim`,
    /// `attempt`, `cdr`, `connected` (a bridged callback's webhook event);
    /// `None` for a pure read or file work.
    pub fn commit_label(&self) -> Option<&'static str> {
        match self {
            StoreRequest::Register { .. } => Some("register"),
            StoreRequest::Due { .. } => Some("due"),
            StoreRequest::Claim { .. } => Some("claim"),
            StoreRequest::RecordAttempt { .. } => Some("attempt"),
            StoreRequest::WriteCdr(_) => Some("cdr"),
            StoreRequest::Connected { .. } => Some("connected"),
            StoreRequest::CreateTask(_) => Some("task"),
            StoreRequest::CancelTasks { .. } => Some("cancel_tasks"),
            StoreRequest::PendingAhead { .. } | StoreRequest::PurgeRecordings { .. } => None,
        }
    }
}

/// Which call a request belongs to (the endpoint's call key).
pub type CallTag = u64;

/// A request to the store (carried out in order; most get a [`StoreReply`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreRequest {
    /// Register a callback durably; answered by [`StoreReply::Registered`].
    Register {
        /// The call that asks.
        call: CallTag,
        /// The callback.
        new: Box<NewCallback>,
    },
    /// Count pending callbacks ahead of `queued_at`; answered by
    /// [`StoreReply::PendingAhead`].
    PendingAhead {
        /// The call that asks.
        call: CallTag,
        /// Its queue.
        queue: QueueId,
        /// Its place in line.
        queued_at: Timestamp,
    },
    /// Renew our claims, take back lapsed ones, expire, then read what is
    /// due; answered by [`StoreReply::Due`].
    Due {
        /// The wall clock.
        now: Timestamp,
    },
    /// Claim a callback (pending → dialing); answered by
    /// [`StoreReply::Claimed`].
    Claim {
        /// The attempt that asks.
        attempt: u64,
        /// The callback.
        id: CallbackId,
        /// The wall clock.
        now: Timestamp,
    },
    /// Record an attempt and the callback's next step in one transaction;
    /// answered by [`StoreReply::AttemptRecorded`].
    RecordAttempt {
        /// The callback.
        id: CallbackId,
        /// The attempt.
        attempt: Box<Attempt>,
        /// What follows.
        next: Box<NextStep>,
    },
    /// Write a call detail record (no reply; failures are logged).
    WriteCdr(Box<CdrRecord>),
    /// Agent and customer of a dialing callback were bridged: the
    /// `callback.connected` webhook event (no reply; failures are logged).
    Connected {
        /// The callback.
        id: CallbackId,
        /// When they were bridged (wall clock).
        at: Timestamp,
        /// The agent.
        agent: String,
    },
    /// Store a missed call's automatic callback task (no reply; the
    /// outcome is logged).
    CreateTask(Box<NewTask>),
    /// Cancel pending automatic tasks (no reply; logged).
    CancelTasks {
        /// Which.
        which: TaskFilter,
        /// Why (stored on each).
        reason: String,
        /// The wall clock.
        now: Timestamp,
    },
    /// Delete `callback-*.wav` recordings in `dir` older than `retention`
    /// (file IO for whoever carries requests out; no reply).
    PurgeRecordings {
        /// The recordings directory.
        dir: PathBuf,
        /// How long recordings are kept.
        retention: Duration,
    },
}

/// An answer from the store.
#[derive(Debug)]
pub enum StoreReply {
    /// The outcome of a registration (committed durably when `Ok`).
    Registered {
        /// The call.
        call: CallTag,
        /// The outcome; an error means nothing was written.
        result: Result<Registration, StoreError>,
    },
    /// Callbacks due now (pending, `next_attempt_at` reached, not expired),
    /// after expiring those past `expires_at`.
    Due {
        /// The rows (empty when the store failed; logged).
        rows: Vec<CallbackRow>,
    },
    /// Whether a claim (pending → dialing, one transaction) won.
    Claimed {
        /// The attempt that asked.
        attempt: u64,
        /// The callback.
        id: CallbackId,
        /// True when this process now owns the callback's dialing.
        won: bool,
    },
    /// An attempt was recorded (or could not be).
    AttemptRecorded {
        /// The callback.
        id: CallbackId,
        /// The result.
        result: Result<Recorded, StoreError>,
    },
    /// Pending callbacks ahead of a caller's place in line.
    PendingAhead {
        /// The call.
        call: CallTag,
        /// The count (0 when the store failed: the estimate is then only
        /// optimistic, and the failure is logged).
        count: u32,
    },
}

/// Carries `request` out on `store` and gives its answer, if it has one.
/// [`StoreRequest::PurgeRecordings`] touches files, not the store: the
/// caller carries it out (this returns `None` for it and does nothing).
/// `longest_ring` bounds how soon a lapsed claim is dialed again.
pub fn execute(
    store: &mut dyn LaunchStore,
    longest_ring: Duration,
    request: StoreRequest,
) -> Option<StoreReply> {
    Some(match request {
        StoreRequest::Register { call, new } => {
            let result = store.register(&new);
            match &result {
                Ok(r) => debug!(call, ?r, "registration stored"),
                Err(e) => warn!(call, error = %e, "registration failed; nothing written"),
            }
            StoreReply::Registered { call, result }
        }
        StoreRequest::PendingAhead {
            call,
            queue,
            queued_at,
        } => {
            let count = store.pending_ahead(&queue, queued_at).unwrap_or_else(|e| {
                warn!(error = %e, "pending_ahead failed");
                0
            });
            StoreReply::PendingAhead { call, count }
        }
        StoreRequest::Due { now } => {
            // Our claims stay ours; another node's that it stopped renewing
            // (it died) are taken back.
            if let Err(e) = store.renew_claims(now) {
                warn!(error = %e, "claims could not be renewed");
            }
            match store.recover_interrupted(now, longest_ring, Recovery::Expired) {
                Ok(ids) if !ids.is_empty() => warn!(
                    count = ids.len(),
                    "callbacks of a node whose claims lapsed are pending again"
                ),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "lapsed claims could not be recovered"),
            }
            if let Err(e) = store.expire(now) {
                warn!(error = %e, "expiring callbacks failed");
            }
            let rows = store.due(now).unwrap_or_else(|e| {
                warn!(error = %e, "due callbacks could not be read");
                Vec::new()
            });
            StoreReply::Due { rows }
        }
        StoreRequest::Claim { attempt, id, now } => {
            let won = store.claim(id, now).unwrap_or_else(|e| {
                warn!(error = %e, callback = %id, "claim failed");
                false
            });
            StoreReply::Claimed { attempt, id, won }
        }
        StoreRequest::RecordAttempt { id, attempt, next } => {
            let result = store.record_attempt(id, &attempt, &next);
            if let Err(e) = &result {
                warn!(error = %e, callback = %id, "attempt not recorded");
            }
            StoreReply::AttemptRecorded { id, result }
        }
        StoreRequest::WriteCdr(record) => {
            if let Err(e) = store.write_cdr(&record) {
                warn!(error = %e, "CDR not written");
            }
            return None;
        }
        StoreRequest::Connected { id, at, agent } => {
            if let Err(e) = store.record_connected(id, at, Some(&agent)) {
                warn!(error = %e, callback = %id, "connected event not written");
            }
            return None;
        }
        StoreRequest::CreateTask(task) => {
            match store.create_task(&task) {
                Ok(Registration::Registered(id)) => {
                    info!(callback = %id, rule = %task.rule, number = %task.callback.number, "automatic callback task stored")
                }
                Ok(Registration::AlreadyScheduled(id)) => info!(
                    existing = %id,
                    number = %task.callback.number,
                    "missed call: the number already has a callback; no task"
                ),
                Err(e) => {
                    warn!(error = %e, rule = %task.rule, "automatic callback task not stored")
                }
            }
            return None;
        }
        StoreRequest::CancelTasks { which, reason, now } => {
            match store.cancel_tasks(&which, &reason, now) {
                Ok(ids) if !ids.is_empty() => {
                    info!(?which, %reason, count = ids.len(), "automatic callback tasks cancelled")
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, ?which, "automatic callback tasks not cancelled"),
            }
            return None;
        }
        StoreRequest::PurgeRecordings { .. } => return None,
    })
}
