//! The store thread: the callback store (SQLite, blocking IO) on a thread of
//! its own, so the core task never waits on a disk flush.
//!
//! The controller's [`StoreRequest`]s go in over a channel in order; each is
//! carried out by [`execute`] and its answer sent back to the core, which
//! feeds it to the controller. Recording purges (file IO) run here too.
//!
//! CDRs are a group commit: those queued when the thread takes one are
//! written in the same transaction (one flush for all), in order, and a
//! request queued behind them still comes after them. A registration is
//! never grouped: it commits alone (`synchronous=FULL`) before its answer.
//!
//! Reads a caller waits on (the pending count an IVR call starts with) go
//! to a second thread with its own connection when there is one: WAL lets
//! it read beside the writer, so a burst of registrations (each a
//! `synchronous=FULL` commit) never holds up a new call's prompts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::b2bua::store::{StoreReply, StoreRequest, execute};
use crate::b2bua::telemetry::Histogram;
use crate::callback::store::LaunchStore;

/// The engine's handle on the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<StoreRequest>,
    /// The reader thread, when there is one.
    reads: Option<mpsc::Sender<StoreRequest>>,
    timings: CommitTimes,
}

/// Most CDRs written in one group commit.
const MAX_CDR_GROUP: usize = 256;

/// Upper bounds of the commit latency histogram, in seconds.
pub const COMMIT_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How long the store thread took for each write request (one transaction,
/// `synchronous=FULL`), by [`StoreRequest::commit_label`]: from taking the
/// request to having the answer, the wait for the database lock included.
/// CDRs queued at once are one group commit, observed once.
pub type CommitTimes = Arc<Mutex<BTreeMap<&'static str, Histogram>>>;

impl StoreHandle {
    /// Queues a request (reads to the reader thread when there is one);
    /// false when the thread is gone.
    pub fn send(&self, request: StoreRequest) -> bool {
        match (&self.reads, &request) {
            (Some(reads), StoreRequest::PendingAhead { .. }) => reads.send(request).is_ok(),
            _ => self.tx.send(request).is_ok(),
        }
    }

    /// The commit latencies so far, by request kind.
    pub fn commit_times(&self) -> BTreeMap<&'static str, Histogram> {
        self.timings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Starts the store thread over `store`, and a reader thread over `reader`
/// (a second connection to the same store) when given.
pub fn spawn(
    mut store: Box<dyn LaunchStore>,
    reader: Option<Box<dyn LaunchStore>>,
    longest_ring: Duration,
    replies: UnboundedSender<StoreReply>,
) -> std::io::Result<(StoreHandle, thread::JoinHandle<()>)> {
    let reads = match reader {
        Some(mut reader) => {
            let (tx, rx) = mpsc::channel::<StoreRequest>();
            let replies = replies.clone();
            thread::Builder::new()
                .name("callbackd-store-read".into())
                .spawn(move || {
                    for request in rx {
                        let Some(reply) = execute(reader.as_mut(), longest_ring, request) else {
                            continue;
                        };
                        if replies.send(reply).is_err() {
                            return;
                        }
                    }
                })?;
            Some(tx)
        }
        None => None,
    };
    let (tx, rx) = mpsc::channel::<StoreRequest>();
    let timings = CommitTimes::default();
    let times = timings.clone();
    let thread = thread::Builder::new()
        .name("callbackd-store".into())
        .spawn(move || {
            let observe = |label: &'static str, started: Instant| {
                times
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(label)
                    .or_insert_with(|| Histogram::new(COMMIT_BOUNDS))
                    .observe(started.elapsed().as_secs_f64());
            };
            // A request taken off the channel while grouping CDRs, carried
            // out next (the order of requests is kept).
            let mut next = None;
            loop {
                let request = match next.take() {
                    Some(request) => request,
                    None => match rx.recv() {
                        Ok(request) => request,
                        Err(_) => return,
                    },
                };
                // Group commit: the CDRs queued at once go in one
                // transaction (one flush), not one each.
                if let StoreRequest::WriteCdr(first) = request {
                    let mut group = vec![*first];
                    while group.len() < MAX_CDR_GROUP {
                        match rx.try_recv() {
                            Ok(StoreRequest::WriteCdr(record)) => group.push(*record),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let started = Instant::now();
                    for (i, e) in store.write_cdrs(&group) {
                        warn!(error = %e, call_id = %group[i].call_id, "CDR not written");
                    }
                    observe("cdr", started);
                    continue;
                }
                if let StoreRequest::PurgeRecordings { dir, retention } = &request {
                    for path in purge_old_recordings(dir, *retention, SystemTime::now()) {
                        info!(path = %path.display(), "recording past retention deleted");
                    }
                    continue;
                }
                let label = request.commit_label();
                let started = Instant::now();
                let reply = execute(store.as_mut(), longest_ring, request);
                if let Some(label) = label {
                    observe(label, started);
                }
                let Some(reply) = reply else {
                    continue;
                };
                if replies.send(reply).is_err() {
                    return;
                }
            }
        })?;
    Ok((StoreHandle { tx, reads, timings }, thread))
}

/// Deletes the `callback-*.wav` files in `dir` last written more than
/// `retention` before `now`; returns what it deleted. Other files are left.
fn purge_old_recordings(
    dir: &std::path::Path,
    retention: Duration,
    now: std::time::SystemTime,
) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_recording = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("callback-") && n.ends_with(".wav"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > retention);
        if !(is_recording && old) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => deleted.push(path),
            Err(e) => warn!(path = %path.display(), error = %e, "recording not deleted"),
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::QueueId;
    use crate::callback::cdr::{CdrRecord, Leg, LegOutcome};
    use crate::callback::store::{NewCallback, SqliteStore};

    /// The next reply within 4 s (the store's busy timeout is 5 s).
    fn next_reply(rx: &mut tokio::sync::mpsc::UnboundedReceiver<StoreReply>) -> Option<StoreReply> {
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < deadline {
            if let Ok(reply) = rx.try_recv() {
                return Some(reply);
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// A fresh store path in the temp dir (any leftover removed).
    fn fresh_db(name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("callbackd-{name}-{}.sqlite", std::process::id()));
        remove_db(&path);
        path
    }

    fn remove_db(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// A registration for 3125550188 in `support`, queued `now`.
    fn registration(now: jiff::Timestamp) -> NewCallback {
        NewCallback {
            queue: QueueId("support".into()),
            number: "3125550188".into(),
            caller_ani: "3125550111".into(),
            called_number: "8005550100".into(),
            priority: 0,
            queued_at: now,
            registered_at: now,
            ecbt_quoted_minutes: 1,
            expires_at: now + jiff::SignedDuration::from_hours(1),
            inbound_call_id: "c1@test".into(),
            sip_context: None,
        }
    }

    /// Issue 12: CDRs queued while the store is busy go in one group
    /// commit, in order, and a request queued after them still comes after
    /// them.
    #[test]
    fn queued_cdrs_are_one_group_commit_in_order() {
        let path = fresh_db("store-cdr-group");
        let writer = SqliteStore::open(&path).expect("writer");
        let (replies, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (handle, _thread) =
            spawn(Box::new(writer), None, Duration::from_secs(30), replies).expect("thread");
        // Another connection holds the write lock: the store thread's first
        // commit waits, and the CDRs sent meanwhile queue up behind it.
        let other = rusqlite::Connection::open(&path).expect("second connection");
        other.execute_batch("BEGIN IMMEDIATE").expect("write lock");
        let now = jiff::Timestamp::now();
        for n in 0..40 {
            assert!(handle.send(StoreRequest::WriteCdr(Box::new(CdrRecord {
                callback: None,
                inbound_call_id: format!("in-{n}@test"),
                leg: Leg::Inbound,
                call_id: format!("cdr-{n:02}@test"),
                start: now,
                answer: Some(now),
                end: now,
                outcome: LegOutcome::Answered,
                sip_code: Some(200),
                peer: "sip:caller@127.0.0.1".into(),
                redirected_from: None,
                source: None,
            }))));
        }
        assert!(handle.send(StoreRequest::Register {
            call: 1,
            new: Box::new(registration(now)),
        }));
        other.execute_batch("ROLLBACK").expect("release");
        match next_reply(&mut rx) {
            Some(StoreReply::Registered { call: 1, result }) => {
                assert!(result.is_ok(), "{result:?}")
            }
            other => panic!("the registration: {other:?}"),
        }
        // Every CDR is there, in the order sent, before the registration.
        let call_ids: Vec<String> = other
            .prepare("SELECT call_id FROM cdr ORDER BY id")
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))
                    .and_then(|rows| rows.collect::<Result<_, _>>())
            })
            .expect("cdr rows");
        let expected: Vec<String> = (0..40).map(|n| format!("cdr-{n:02}@test")).collect();
        assert_eq!(call_ids, expected);
        // At most two commits for the 40: what was queued when the thread
        // woke (waiting on the lock), then everything queued behind it.
        let groups = handle.commit_times().get("cdr").map(Histogram::count);
        assert!(
            matches!(groups, Some(1..=2)),
            "40 CDRs took {groups:?} commits"
        );
        drop(other);
        remove_db(&path);
    }

    #[test]
    fn reads_are_answered_while_a_write_waits_for_the_database() {
        let path = fresh_db("store-read");
        let writer = SqliteStore::open(&path).expect("writer");
        let reader = SqliteStore::open(&path).expect("reader");
        let (replies, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (handle, _thread) = spawn(
            Box::new(writer),
            Some(Box::new(reader)),
            Duration::from_secs(30),
            replies,
        )
        .expect("threads");
        // Another process holds the write lock (a slow disk, a long
        // transaction): the writer thread's commit waits for it.
        let other = rusqlite::Connection::open(&path).expect("third connection");
        other.execute_batch("BEGIN IMMEDIATE").expect("write lock");
        let now = jiff::Timestamp::now();
        assert!(handle.send(StoreRequest::Register {
            call: 1,
            new: Box::new(registration(now)),
        }));
        assert!(handle.send(StoreRequest::PendingAhead {
            call: 2,
            queue: QueueId("support".into()),
            queued_at: now,
        }));
        // The read is answered while the write is still stuck.
        match next_reply(&mut rx) {
            Some(StoreReply::PendingAhead { call: 2, count: 0 }) => {}
            other => panic!("the read waited behind the write: {other:?}"),
        }
        other.execute_batch("ROLLBACK").expect("release");
        match next_reply(&mut rx) {
            Some(StoreReply::Registered { call: 1, result }) => {
                assert!(result.is_ok(), "{result:?}")
            }
            other => panic!("the write: {other:?}"),
        }
        remove_db(&path);
    }

    #[test]
    fn only_recordings_past_retention_are_purged() {
        let dir = std::env::temp_dir().join(format!("callbackd-purge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(86_400);
        let make = |name: &str, age: Duration| {
            let path = dir.join(name);
            let file = std::fs::File::create(&path).expect("create");
            file.set_modified(now - age).expect("set mtime");
            path
        };
        let old = make("callback-1-100.wav", 31 * day);
        let recent = make("callback-2-200.wav", 2 * day);
        let other = make("notes.txt", 90 * day);
        let deleted = purge_old_recordings(&dir, 30 * day, now);
        assert_eq!(deleted, vec![old.clone()]);
        assert!(!old.exists());
        assert!(recent.exists(), "inside the retention period");
        assert!(other.exists(), "not a recording");
        assert!(purge_old_recordings(&dir.join("missing"), day, now).is_empty());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
