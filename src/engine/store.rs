//! The store thread: the callback store (SQLite, blocking IO) on a thread of
//! its own, so the core task never waits on a disk flush.
//!
//! Jobs go in over a channel; each answer comes back to the core as a
//! [`StoreReply`] tagged with the call (or attempt) it belongs to. The IVR
//! registers callbacks through it; the dialer reads due callbacks, claims
//! them, records attempts and writes CDRs. A registration's commit
//! (WAL, `synchronous=FULL`) has finished when its reply is sent — the caller
//! hears "registered" only after that.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use crate::callback::cdr::CdrRecord;
use crate::callback::store::{
    Attempt, CallbackRow, LaunchStore, NewCallback, NextStep, Recorded, Recovery, Registration,
    StoreError,
};
use crate::callback::{CallbackId, QueueId};

/// Which call a job belongs to (the engine's call key).
pub type CallTag = u64;

/// A job for the store thread.
#[derive(Debug)]
enum Job {
    Register {
        call: CallTag,
        new: Box<NewCallback>,
    },
    PendingAhead {
        call: CallTag,
        queue: QueueId,
        queued_at: Timestamp,
    },
    Due {
        now: Timestamp,
    },
    Claim {
        attempt: u64,
        id: CallbackId,
        now: Timestamp,
    },
    RecordAttempt {
        id: CallbackId,
        attempt: Box<Attempt>,
        next: Box<NextStep>,
    },
    WriteCdr(Box<CdrRecord>),
}

/// An answer from the store thread.
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

/// The engine's handle on the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Job>,
}

impl StoreHandle {
    /// Asks for `new` to be registered; the reply comes as
    /// [`StoreReply::Registered`]. Returns false if the thread is gone.
    pub fn register(&self, call: CallTag, new: NewCallback) -> bool {
        self.tx
            .send(Job::Register {
                call,
                new: Box::new(new),
            })
            .is_ok()
    }

    /// Asks for the callbacks due at `now` (expired ones are marked first).
    pub fn due(&self, now: Timestamp) -> bool {
        self.tx.send(Job::Due { now }).is_ok()
    }

    /// Asks to claim callback `id` for `attempt` (pending → dialing).
    pub fn claim(&self, attempt: u64, id: CallbackId, now: Timestamp) -> bool {
        self.tx.send(Job::Claim { attempt, id, now }).is_ok()
    }

    /// Records an attempt and the callback's next status, in one transaction.
    pub fn record_attempt(&self, id: CallbackId, attempt: Attempt, next: NextStep) -> bool {
        self.tx
            .send(Job::RecordAttempt {
                id,
                attempt: Box::new(attempt),
                next: Box::new(next),
            })
            .is_ok()
    }

    /// Writes a call detail record (no reply; failures are logged).
    pub fn write_cdr(&self, record: CdrRecord) -> bool {
        self.tx.send(Job::WriteCdr(Box::new(record))).is_ok()
    }

    /// Asks how many pending callbacks are ahead of `queued_at` in `queue`.
    pub fn pending_ahead(&self, call: CallTag, queue: QueueId, queued_at: Timestamp) -> bool {
        self.tx
            .send(Job::PendingAhead {
                call,
                queue,
                queued_at,
            })
            .is_ok()
    }
}

/// Starts the store thread over `store`.
pub fn spawn(
    mut store: Box<dyn LaunchStore>,
    longest_ring: Duration,
    replies: UnboundedSender<StoreReply>,
) -> std::io::Result<(StoreHandle, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Job>();
    let thread = thread::Builder::new()
        .name("callbackd-store".into())
        .spawn(move || {
            for job in rx {
                let reply = match job {
                    Job::Register { call, new } => {
                        let result = store.register(&new);
                        match &result {
                            Ok(r) => debug!(call, ?r, "registration stored"),
                            Err(e) => {
                                warn!(call, error = %e, "registration failed; nothing written")
                            }
                        }
                        StoreReply::Registered { call, result }
                    }
                    Job::PendingAhead {
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
                    Job::Due { now } => {
                        // Our claims stay ours; another node's that it
                        // stopped renewing (it died) are taken back.
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
                    Job::Claim { attempt, id, now } => {
                        let won = store.claim(id, now).unwrap_or_else(|e| {
                            warn!(error = %e, callback = %id, "claim failed");
                            false
                        });
                        StoreReply::Claimed { attempt, id, won }
                    }
                    Job::RecordAttempt { id, attempt, next } => {
                        let result = store.record_attempt(id, &attempt, &next);
                        if let Err(e) = &result {
                            warn!(error = %e, callback = %id, "attempt not recorded");
                        }
                        StoreReply::AttemptRecorded { id, result }
                    }
                    Job::WriteCdr(record) => {
                        if let Err(e) = store.write_cdr(&record) {
                            warn!(error = %e, "CDR not written");
                        }
                        continue;
                    }
                };
                if replies.send(reply).is_err() {
                    return;
                }
            }
        })?;
    Ok((StoreHandle { tx }, thread))
}
