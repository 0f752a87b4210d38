//! The store thread: the callback store (SQLite, blocking IO) on a thread of
//! its own, so the core task never waits on a disk flush.
//!
//! Jobs go in over a channel; each answer comes back to the core as a
//! [`StoreReply`] tagged with the call it belongs to. A registration's commit
//! (WAL, `synchronous=FULL`) has finished when its reply is sent — the caller
//! hears "registered" only after that.

use std::sync::mpsc;
use std::thread;

use jiff::Timestamp;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use crate::callback::QueueId;
use crate::callback::store::{NewCallback, Registration, Store, StoreError};

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
    mut store: Box<dyn Store>,
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
                };
                if replies.send(reply).is_err() {
                    return;
                }
            }
        })?;
    Ok((StoreHandle { tx }, thread))
}
