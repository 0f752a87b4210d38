//! [`SqliteStore`]: the [`Store`] and [`LaunchStore`] on an SQLite file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::callback::cdr::{CdrRecord, Leg, LegOutcome};
use crate::callback::scheduler::Outcome;
use crate::callback::{CallbackId, QueueId};

use super::migrations;
use super::sqlite_webhooks::{EventData, current_attempt, emit};
use super::{
    Attempt, AttemptRow, BUSY_TIMEOUT, CallbackRow, Creation, DEFAULT_LEASE, LaunchStore,
    NewCallback, NewTask, NextStep, Recorded, Recovery, Registration, Source, Status, Store,
    StoreError, TaskFilter,
};
use crate::callback::webhook::{AttemptInfo, EventKind};

/// The columns [`decode_row`] reads.
pub(super) const ROW_COLUMNS: &str = "id, queue, number, caller_ani, called_number, priority, \
     queued_at, registered_at, ecbt_quoted_minutes, status, attempts, next_attempt_at, \
     expires_at, inbound_call_id, moved_from, customer_dialed_at, caller_id, source, rule_id, \
     task, closed_reason";

/// The [`Store`] on an SQLite file (WAL, `synchronous=FULL`).
#[derive(Debug)]
pub struct SqliteStore {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    /// Who claims (see [`LaunchStore::set_claimant`]).
    node: Box<str>,
    lease: Duration,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, sets
    /// `busy_timeout`, `journal_mode=WAL`, `synchronous=FULL` and
    /// `foreign_keys=ON` (each verified), and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut store = SqliteStore {
            conn,
            path: path.to_owned(),
            node: "local".into(),
            lease: DEFAULT_LEASE,
        };
        store.configure(true)?;
        migrations::migrate(&mut store.conn, &store.path)?;
        Ok(store)
    }

    /// A private in-memory database for tests. Same schema and settings,
    /// except the journal mode, which SQLite keeps at `memory`.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let mut store = SqliteStore {
            conn,
            path,
            node: "local".into(),
            lease: DEFAULT_LEASE,
        };
        store.configure(false)?;
        migrations::migrate(&mut store.conn, &store.path)?;
        Ok(store)
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file (for errors) beside the connection (for a transaction).
    pub(super) fn parts(&mut self) -> (&Path, &mut Connection) {
        (&self.path, &mut self.conn)
    }

    fn configure(&self, wal: bool) -> Result<(), StoreError> {
        let open_err = |source| StoreError::Open {
            path: self.path.clone(),
            source,
        };
        let pragma_err = |pragma, expected, got: String| StoreError::Pragma {
            path: self.path.clone(),
            pragma,
            expected,
            got,
        };
        // Before anything that may need a lock (the WAL switch, migrations).
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        if wal {
            // The pragma answers with the mode actually in effect; SQLite
            // silently keeps the old one where WAL is impossible.
            let mode: String = self
                .conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(open_err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(pragma_err("journal_mode", "wal", mode));
            }
        }
        // Per connection, not stored in the file: set on every open.
        // FULL: in WAL mode the WAL is fsynced at every commit, so a
        // committed callback survives power loss, not just a process crash.
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        let sync: i64 = self
            .conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .map_err(open_err)?;
        if sync != SYNCHRONOUS_FULL {
            return Err(pragma_err("synchronous", "2 (FULL)", sync.to_string()));
        }
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let fk: i64 = self
            .conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .map_err(open_err)?;
        if fk != 1 {
            return Err(pragma_err("foreign_keys", "1 (ON)", fk.to_string()));
        }
        Ok(())
    }

    pub(super) fn sqlite_err(
        &self,
        op: &'static str,
    ) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// [`Store::register`] and [`ManageStore::create`](super::ManageStore::create):
    /// one transaction that cancels the number's pending automatic tasks,
    /// then finds an active callback for the queue and number (and writes
    /// nothing more), or inserts the row (with the API's additions, if any)
    /// and commits it.
    pub(super) fn insert_callback(
        &mut self,
        new: &NewCallback,
        extra: Option<&Creation>,
    ) -> Result<Registration, StoreError> {
        if !is_plain_digits(&new.number) {
            return Err(StoreError::NumberNotDigits {
                number: new.number.clone(),
            });
        }
        if let Some(caller_id) = extra.and_then(|e| e.caller_id.as_ref())
            && !is_plain_digits(caller_id)
        {
            return Err(StoreError::NumberNotDigits {
                number: caller_id.clone(),
            });
        }
        let (op, source, cancel_reason) = match extra {
            Some(_) => ("create", Source::Api, "callback_created"),
            None => ("register", Source::Ivr, "customer_registered"),
        };
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            op,
            source,
        };
        // IMMEDIATE takes the write lock before the lookup, so no other
        // writer can slip a row in between the check and the insert; the
        // partial unique index is the backstop for any writer that does not
        // go through this method.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        // The customer asked for a callback: an automatic task for the
        // number would call them a second time, and would refuse this
        // registration as its duplicate. It goes first.
        let cancelled = cancel_pending_tasks(
            &tx,
            &TaskFilter::Number(new.number.clone()),
            cancel_reason,
            new.registered_at,
        )
        .map_err(|e| e.into_store_error(err))?;
        // Cached statements: parsed once per connection, not per call.
        let existing: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM callbacks \
                 WHERE queue = ?1 AND number = ?2 AND status IN ('pending', 'dialing') \
                 ORDER BY id LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![new.queue.as_str(), new.number], |row| row.get(0))
                    .optional()
            })
            .map_err(err)?;
        if let Some(id) = existing {
            // The cancelled tasks stay cancelled: the customer is called by
            // the active callback.
            if cancelled.is_empty() {
                tx.rollback().map_err(err)?;
            } else {
                tx.commit().map_err(err)?;
            }
            return Ok(Registration::AlreadyScheduled(CallbackId(id)));
        }
        tx.prepare_cached(
            "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                 queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                 next_attempt_at, expires_at, inbound_call_id, scheduled_for, created_by, data, \
                 sip_context, caller_id, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?11, ?9, ?10, ?11, ?12, ?13, ?14, \
                 ?15, ?16)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                new.queue.as_str(),
                new.number,
                new.caller_ani,
                new.called_number,
                new.priority,
                new.queued_at.as_millisecond(),
                new.registered_at.as_millisecond(),
                new.ecbt_quoted_minutes,
                new.expires_at.as_millisecond(),
                new.inbound_call_id,
                extra
                    .and_then(|e| e.scheduled_for)
                    .map(Timestamp::as_millisecond),
                extra.map(|e| e.created_by.as_str()),
                extra.and_then(|e| e.data.as_deref()),
                new.sip_context.as_ref().map(|c| c.to_json()),
                extra.and_then(|e| e.caller_id.as_deref()),
                source.as_str(),
            ])
        })
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        // The events commit with the row, or neither does.
        let cid = CallbackId(id);
        emit(
            &tx,
            EventKind::Registered,
            cid,
            EventData::at(new.registered_at),
        )
        .map_err(|e| e.into_store_error(err))?;
        if extra.is_some_and(|e| e.scheduled_for.is_some()) {
            emit(
                &tx,
                EventKind::Scheduled,
                cid,
                EventData::at(new.registered_at),
            )
            .map_err(|e| e.into_store_error(err))?;
        }
        // On failure the dropped transaction rolls back: nothing is written.
        tx.commit().map_err(err)?;
        Ok(Registration::Registered(CallbackId(id)))
    }
}

impl SqliteStore {
    /// How many callbacks each queue holds in each status (for the
    /// metrics gauge), by queue then status; a read, beside the writer.
    pub fn callback_counts(&self) -> Result<Vec<(QueueId, Status, u64)>, StoreError> {
        let err = self.sqlite_err("callback_counts");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT queue, status, COUNT(*) FROM callbacks \
                 GROUP BY queue, status ORDER BY queue, status",
            )
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            let queue: String = row.get(0).map_err(&err)?;
            let status: String = row.get(1).map_err(&err)?;
            let count: i64 = row.get(2).map_err(&err)?;
            // The CHECK constraint allows only known statuses.
            let Some(status) = Status::parse(&status) else {
                continue;
            };
            out.push((
                QueueId(queue.into_boxed_str()),
                status,
                u64::try_from(count).unwrap_or(0),
            ));
        }
        Ok(out)
    }

    /// Whether this connection may write (the file was not opened
    /// read-only: permissions, a read-only mount).
    pub fn is_writable(&self) -> bool {
        !self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
    }
}

impl Store for SqliteStore {
    fn register(&mut self, new: &NewCallback) -> Result<Registration, StoreError> {
        self.insert_callback(new, None)
    }

    fn list(&self) -> Result<Vec<CallbackRow>, StoreError> {
        let err = self.sqlite_err("list");
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {ROW_COLUMNS} FROM callbacks ORDER BY id"))
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_row(row).map_err(|e| e.into_store_error(&err))?);
        }
        Ok(out)
    }

    fn pending_ahead(&self, queue: &QueueId, queued_at: Timestamp) -> Result<u32, StoreError> {
        let count: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM callbacks \
                 WHERE queue = ?1 AND status = 'pending' AND queued_at < ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![queue.as_str(), queued_at.as_millisecond()], |row| {
                    row.get(0)
                })
            })
            .map_err(self.sqlite_err("pending_ahead"))?;
        // COUNT(*) is never negative; beyond u32::MAX is not a real queue.
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }
}

impl LaunchStore for SqliteStore {
    fn due(&self, now: Timestamp) -> Result<Vec<CallbackRow>, StoreError> {
        let err = self.sqlite_err("due");
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM callbacks \
                 WHERE status = 'pending' \
                     AND (next_attempt_at IS NULL OR next_attempt_at <= ?1) \
                     AND expires_at > ?1 \
                 ORDER BY priority DESC, queued_at, id"
            ))
            .map_err(&err)?;
        let mut rows = stmt.query([now.as_millisecond()]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_row(row).map_err(|e| e.into_store_error(&err))?);
        }
        Ok(out)
    }

    fn claim(&mut self, id: CallbackId, now: Timestamp) -> Result<bool, StoreError> {
        // One statement: the check and the change are atomic, and SQLite
        // lets one writer at a time through, so a racing claimer finds the
        // row dialing and changes nothing.
        // The claim and its `callback.attempt_started` event are one
        // transaction.
        let now_ms = now.as_millisecond();
        let lease_until = now_ms.saturating_add(millis(self.lease));
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            op: "claim",
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let changed = tx
            .execute(
                "UPDATE callbacks SET status = 'dialing', claimed_at = ?2, \
                     claimed_by = ?3, lease_until = ?4 \
                 WHERE id = ?1 AND status = 'pending' \
                     AND (next_attempt_at IS NULL OR next_attempt_at <= ?2) \
                     AND expires_at > ?2",
                params![id.0, now_ms, &*self.node, lease_until],
            )
            .map_err(err)?;
        if changed != 1 {
            return Ok(false);
        }
        let number = current_attempt(&tx, id).map_err(err)?;
        let data = EventData {
            at: Some(now),
            attempt: Some(AttemptInfo {
                number,
                started_at: now.to_string(),
                connected_at: None,
                ended_at: None,
                outcome: None,
                sip_status: None,
                agent: None,
            }),
        };
        emit(&tx, EventKind::AttemptStarted, id, data).map_err(|e| e.into_store_error(err))?;
        tx.commit().map_err(err)?;
        Ok(true)
    }

    fn set_claimant(&mut self, node: &str, lease: Duration) {
        self.node = node.into();
        self.lease = lease;
    }

    fn renew_claims(&mut self, now: Timestamp) -> Result<usize, StoreError> {
        let until = now.as_millisecond().saturating_add(millis(self.lease));
        self.conn
            .execute(
                "UPDATE callbacks SET lease_until = ?2 \
                 WHERE status = 'dialing' AND claimed_by = ?1",
                params![&*self.node, until],
            )
            .map_err(self.sqlite_err("renew_claims"))
    }

    fn record_attempt(
        &mut self,
        id: CallbackId,
        attempt: &Attempt,
        next: &NextStep,
    ) -> Result<Recorded, StoreError> {
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            op: "record_attempt",
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let current: Option<(String, String, String)> = tx
            .query_row(
                "SELECT status, queue, number FROM callbacks WHERE id = ?1",
                [id.0],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(err)?;
        let Some((status_text, queue, number)) = current else {
            return Err(StoreError::NotDialing { id, found: None });
        };
        let Some(status) = Status::parse(&status_text) else {
            return Err(StoreError::CorruptRow {
                id: id.0,
                column: "status",
                value: status_text,
            });
        };
        if status != Status::Dialing {
            return Err(StoreError::NotDialing {
                id,
                found: Some(status),
            });
        }
        tx.execute(
            "INSERT INTO attempts (callback_id, queue, started_at, ended_at, outcome, \
                 sip_status, agent, customer_dialed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id.0,
                queue,
                attempt.started_at.as_millisecond(),
                attempt.ended_at.as_millisecond(),
                attempt.outcome.as_str(),
                attempt.sip_status,
                attempt.agent,
                attempt.customer_dialed_at.map(|t| t.as_millisecond()),
            ],
        )
        .map_err(err)?;
        // The first dial of the customer, and the error of the ECBT the
        // caller heard (see `ecbt_error` in b2bua::telemetry: the same sum).
        if let Some(dialed) = attempt.customer_dialed_at {
            tx.execute(
                "UPDATE callbacks SET customer_dialed_at = ?2, \
                     ecbt_error_ms = CASE WHEN ecbt_quoted_minutes > 0 \
                         THEN ?2 - registered_at - ecbt_quoted_minutes * 60000 END \
                 WHERE id = ?1 AND customer_dialed_at IS NULL",
                params![id.0, dialed.as_millisecond()],
            )
            .map_err(err)?;
        }
        let counted = i64::from(attempt.outcome.is_customer_attempt());
        let finish = |status: Status| {
            tx.execute(
                "UPDATE callbacks SET status = ?2, attempts = attempts + ?3, \
                     next_attempt_at = NULL, claimed_at = NULL, claimed_by = NULL, lease_until = NULL \
                 WHERE id = ?1",
                params![id.0, status.as_str(), counted],
            )
        };
        let recorded = match next {
            NextStep::Completed => {
                finish(Status::Completed).map_err(err)?;
                Recorded::Applied(Status::Completed)
            }
            NextStep::Failed => {
                finish(Status::Failed).map_err(err)?;
                Recorded::Applied(Status::Failed)
            }
            NextStep::Expired => {
                finish(Status::Expired).map_err(err)?;
                Recorded::Applied(Status::Expired)
            }
            NextStep::Retry { at, task } => {
                tx.execute(
                    "UPDATE callbacks SET status = 'pending', attempts = attempts + ?2, \
                         next_attempt_at = ?3, claimed_at = NULL, claimed_by = NULL, \
                         lease_until = NULL, task = coalesce(?4, task) \
                     WHERE id = ?1",
                    params![id.0, counted, at.as_millisecond(), task],
                )
                .map_err(err)?;
                Recorded::Applied(Status::Pending)
            }
            NextStep::Failover {
                queue: target,
                priority,
                at,
            } => {
                // The partial unique index allows one active callback per
                // (queue, number): look before moving.
                let existing: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM callbacks \
                         WHERE queue = ?1 AND number = ?2 \
                             AND status IN ('pending', 'dialing') AND id <> ?3 \
                         ORDER BY id LIMIT 1",
                        params![target.as_str(), number, id.0],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(err)?;
                if let Some(existing) = existing {
                    finish(Status::Failed).map_err(err)?;
                    Recorded::FailoverDuplicate {
                        existing: CallbackId(existing),
                    }
                } else {
                    tx.execute(
                        "UPDATE callbacks SET status = 'pending', queue = ?2, priority = ?3, \
                             moved_from = queue, attempts = 0, next_attempt_at = ?4, \
                             claimed_at = NULL, claimed_by = NULL, lease_until = NULL \
                         WHERE id = ?1",
                        params![id.0, target.as_str(), priority, at.as_millisecond()],
                    )
                    .map_err(err)?;
                    Recorded::Applied(Status::Pending)
                }
            }
        };
        let kind = match recorded {
            Recorded::Applied(Status::Completed) => EventKind::Completed,
            Recorded::Applied(Status::Expired) => EventKind::Expired,
            Recorded::Applied(Status::Pending) => EventKind::Scheduled,
            Recorded::Applied(Status::Failed | Status::Dialing | Status::Cancelled)
            | Recorded::FailoverDuplicate { .. } => EventKind::Failed,
        };
        let attempt_number = current_attempt(&tx, id).map_err(err)?.saturating_sub(1);
        let data = EventData {
            at: Some(attempt.ended_at),
            attempt: Some(AttemptInfo {
                number: attempt_number,
                started_at: attempt.started_at.to_string(),
                connected_at: None,
                ended_at: Some(attempt.ended_at.to_string()),
                outcome: Some(attempt.outcome.as_str().to_owned()),
                sip_status: attempt.sip_status,
                agent: attempt.agent.clone(),
            }),
        };
        emit(&tx, kind, id, data).map_err(|e| e.into_store_error(err))?;
        if *next == NextStep::Completed {
            // The customer was reached: no automatic task calls them again.
            cancel_pending_tasks(
                &tx,
                &TaskFilter::Number(number),
                "customer_reached",
                attempt.ended_at,
            )
            .map_err(|e| e.into_store_error(err))?;
        }
        tx.commit().map_err(err)?;
        Ok(recorded)
    }

    fn create_task(&mut self, task: &NewTask) -> Result<Registration, StoreError> {
        let new = &task.callback;
        if !is_plain_digits(&new.number) {
            return Err(StoreError::NumberNotDigits {
                number: new.number.clone(),
            });
        }
        // A started task has no closed reason; one not started may have one.
        let reason = match task.first_attempt_at {
            Some(_) => None,
            None => task.reason.as_deref(),
        };
        if let Some(reason) = reason
            && !is_reason(reason)
        {
            return Err(StoreError::InvalidReason {
                reason: reason.to_owned(),
            });
        }
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            op: "create_task",
            source,
        };
        // IMMEDIATE: no writer slips a callback for the number in between
        // the look and the insert.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        if task.first_attempt_at.is_some() {
            // Any active callback, whatever its source or queue, will call
            // the customer anyway.
            let existing: Option<i64> = tx
                .prepare_cached(
                    "SELECT id FROM callbacks \
                     WHERE number = ?1 AND status IN ('pending', 'dialing') \
                     ORDER BY id LIMIT 1",
                )
                .and_then(|mut stmt| stmt.query_row([&new.number], |row| row.get(0)).optional())
                .map_err(err)?;
            if let Some(id) = existing {
                tx.rollback().map_err(err)?;
                return Ok(Registration::AlreadyScheduled(CallbackId(id)));
            }
        }
        let status = match task.first_attempt_at {
            Some(_) => Status::Pending,
            None => Status::Failed,
        };
        tx.prepare_cached(
            "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                 queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                 next_attempt_at, expires_at, inbound_call_id, sip_context, source, rule_id, \
                 task, closed_reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?12, ?13, 'missed_call', \
                 ?14, ?15, ?16)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                new.queue.as_str(),
                new.number,
                new.caller_ani,
                new.called_number,
                new.priority,
                new.queued_at.as_millisecond(),
                new.registered_at.as_millisecond(),
                new.ecbt_quoted_minutes,
                status.as_str(),
                task.first_attempt_at.map(Timestamp::as_millisecond),
                new.expires_at.as_millisecond(),
                new.inbound_call_id,
                new.sip_context.as_ref().map(|c| c.to_json()),
                task.rule,
                task.task,
                reason,
            ])
        })
        .map_err(err)?;
        let id = CallbackId(tx.last_insert_rowid());
        // The events commit with the row, or neither does.
        let second = match status {
            Status::Pending => EventKind::Scheduled,
            _ => EventKind::Failed,
        };
        for kind in [EventKind::Registered, second] {
            emit(&tx, kind, id, EventData::at(new.registered_at))
                .map_err(|e| e.into_store_error(err))?;
        }
        tx.commit().map_err(err)?;
        Ok(Registration::Registered(id))
    }

    fn cancel_tasks(
        &mut self,
        which: &TaskFilter,
        reason: &str,
        now: Timestamp,
    ) -> Result<Vec<CallbackId>, StoreError> {
        if !is_reason(reason) {
            return Err(StoreError::InvalidReason {
                reason: reason.to_owned(),
            });
        }
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            op: "cancel_tasks",
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let ids =
            cancel_pending_tasks(&tx, which, reason, now).map_err(|e| e.into_store_error(err))?;
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    fn expire(&mut self, now: Timestamp) -> Result<Vec<CallbackId>, StoreError> {
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            op: "expire",
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut ids = {
            let mut stmt = tx
                .prepare(
                    "UPDATE callbacks SET status = 'expired', next_attempt_at = NULL \
                     WHERE status = 'pending' AND expires_at <= ?1 \
                     RETURNING id",
                )
                .map_err(err)?;
            stmt.query_map([now.as_millisecond()], |r| r.get(0).map(CallbackId))
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?
        };
        // RETURNING yields rows in no promised order.
        ids.sort_unstable();
        for &id in &ids {
            emit(&tx, EventKind::Expired, id, EventData::at(now))
                .map_err(|e| e.into_store_error(err))?;
        }
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    fn record_connected(
        &mut self,
        id: CallbackId,
        at: Timestamp,
        agent: Option<&str>,
    ) -> Result<(), StoreError> {
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            op: "record_connected",
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let claimed: Option<(String, Option<i64>)> = tx
            .query_row(
                "SELECT status, claimed_at FROM callbacks WHERE id = ?1",
                [id.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        let Some((status, claimed_at)) = claimed else {
            return Err(StoreError::NotDialing { id, found: None });
        };
        if status != Status::Dialing.as_str() {
            return Err(StoreError::NotDialing {
                id,
                found: Status::parse(&status),
            });
        }
        let started = claimed_at
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .unwrap_or(at);
        let data = EventData {
            at: Some(at),
            attempt: Some(AttemptInfo {
                number: current_attempt(&tx, id).map_err(err)?,
                started_at: started.to_string(),
                connected_at: Some(at.to_string()),
                ended_at: None,
                outcome: None,
                sip_status: None,
                agent: agent.map(str::to_owned),
            }),
        };
        emit(&tx, EventKind::Connected, id, data).map_err(|e| e.into_store_error(err))?;
        tx.commit().map_err(err)
    }

    fn recover_interrupted(
        &mut self,
        now: Timestamp,
        longest_ring: Duration,
        scope: Recovery,
    ) -> Result<Vec<CallbackId>, StoreError> {
        let own = scope == Recovery::AtStart;
        let node = &*self.node;
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            op: "recover_interrupted",
            source,
        };
        let now_ms = now.as_millisecond();
        let due_ms = now_ms.saturating_add(millis(longest_ring));
        // Interrupted: no owner or lease (claimed by a version without
        // leases), the lease ran out, or (at start) our own.
        const INTERRUPTED: &str = "status = 'dialing' AND (claimed_by IS NULL \
             OR lease_until IS NULL OR lease_until <= ?1 OR (?2 AND claimed_by = ?3))";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        // One INSERT … SELECT and one UPDATE over the same rows, under the
        // write lock: nothing can change them in between.
        tx.execute(
            &format!(
                "INSERT INTO attempts (callback_id, queue, started_at, ended_at, outcome) \
                 SELECT id, queue, coalesce(claimed_at, ?1), ?1, 'interrupted' \
                 FROM callbacks WHERE {INTERRUPTED} ORDER BY id"
            ),
            params![now_ms, own, node],
        )
        .map_err(err)?;
        let mut ids = {
            let mut stmt = tx
                .prepare(&format!(
                    "UPDATE callbacks SET status = 'pending', next_attempt_at = ?4, \
                         claimed_at = NULL, claimed_by = NULL, lease_until = NULL \
                     WHERE {INTERRUPTED} \
                     RETURNING id"
                ))
                .map_err(err)?;
            stmt.query_map(params![now_ms, own, node, due_ms], |r| {
                r.get(0).map(CallbackId)
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?
        };
        ids.sort_unstable();
        // Pending again with a new time: `callback.scheduled`, about the
        // interrupted attempt just recorded.
        for &id in &ids {
            let (number, started): (i64, i64) = tx
                .query_row(
                    "SELECT (SELECT COUNT(*) FROM attempts WHERE callback_id = ?1), \
                         (SELECT started_at FROM attempts WHERE callback_id = ?1 \
                          ORDER BY id DESC LIMIT 1)",
                    [id.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(err)?;
            let data = EventData {
                at: Some(now),
                attempt: Some(AttemptInfo {
                    number: u32::try_from(number).unwrap_or(u32::MAX),
                    started_at: Timestamp::from_millisecond(started)
                        .unwrap_or(now)
                        .to_string(),
                    connected_at: None,
                    ended_at: Some(now.to_string()),
                    outcome: Some(Outcome::Interrupted.as_str().to_owned()),
                    sip_status: None,
                    agent: None,
                }),
            };
            emit(&tx, EventKind::Scheduled, id, data).map_err(|e| e.into_store_error(err))?;
        }
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    fn attempts(&self, id: CallbackId) -> Result<Vec<AttemptRow>, StoreError> {
        let err = self.sqlite_err("attempts");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, callback_id, queue, started_at, ended_at, outcome, sip_status, agent, \
                     customer_dialed_at \
                 FROM attempts WHERE callback_id = ?1 ORDER BY id",
            )
            .map_err(&err)?;
        let mut rows = stmt.query([id.0]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_attempt(row).map_err(|e| e.into_store_error(&err))?);
        }
        Ok(out)
    }

    fn write_cdr(&mut self, record: &CdrRecord) -> Result<(), StoreError> {
        insert_cdr(&self.conn, record).map_err(self.sqlite_err("write_cdr"))
    }

    fn write_cdrs(&mut self, records: &[CdrRecord]) -> Vec<(usize, StoreError)> {
        if records.len() > 1 {
            let grouped = self.conn.transaction().and_then(|tx| {
                for record in records {
                    insert_cdr(&tx, record)?;
                }
                tx.commit()
            });
            if grouped.is_ok() {
                return Vec::new();
            }
            // Rolled back: one by one, so one bad record loses no other.
        }
        records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.write_cdr(r).err().map(|e| (i, e)))
            .collect()
    }

    fn cdrs(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Vec<CdrRecord>, StoreError> {
        let err = self.sqlite_err("cdrs");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, callback_id, inbound_call_id, leg, call_id, start_at, answer_at, \
                     end_at, outcome, sip_code, peer, redirected_from, source \
                 FROM cdr \
                 WHERE (?1 IS NULL OR start_at >= ?1) AND (?2 IS NULL OR start_at < ?2) \
                 ORDER BY start_at, id",
            )
            .map_err(&err)?;
        let mut rows = stmt
            .query(params![
                since.map(Timestamp::as_millisecond),
                until.map(Timestamp::as_millisecond)
            ])
            .map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_cdr(row).map_err(|e| e.into_store_error(&err))?);
        }
        Ok(out)
    }
}

/// Inserts one CDR row (a cached statement: the SQL is parsed once per
/// connection, not once per call).
fn insert_cdr(conn: &rusqlite::Connection, record: &CdrRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO cdr (callback_id, inbound_call_id, leg, call_id, start_at, \
             answer_at, end_at, outcome, sip_code, peer, redirected_from, source) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        record.callback.map(|c| c.0),
        record.inbound_call_id,
        record.leg.as_str(),
        record.call_id,
        record.start.as_millisecond(),
        record.answer.map(Timestamp::as_millisecond),
        record.end.as_millisecond(),
        record.outcome.as_str(),
        record.sip_code,
        record.peer,
        record.redirected_from,
        record.source.map(Source::as_str),
    ])?;
    Ok(())
}

/// Inside the caller's transaction: every pending automatic task
/// (missed-call source) matching `which` → cancelled with `reason` and no
/// next attempt, each with its `callback.cancelled` event at `at`. Their
/// ids, ascending.
pub(super) fn cancel_pending_tasks(
    tx: &Connection,
    which: &TaskFilter,
    reason: &str,
    at: Timestamp,
) -> Result<Vec<CallbackId>, Decode> {
    let (number, rule, queue, id) = match which {
        TaskFilter::Number(n) => (Some(n.as_str()), None, None, None),
        TaskFilter::Rule(r) => (None, Some(r.as_str()), None, None),
        TaskFilter::Queue(q) => (None, None, Some(q.as_str()), None),
        TaskFilter::Id(id) => (None, None, None, Some(id.0)),
        TaskFilter::All => (None, None, None, None),
    };
    let mut ids = tx
        .prepare_cached(
            "UPDATE callbacks SET status = 'cancelled', closed_reason = ?1, \
                 next_attempt_at = NULL \
             WHERE status = 'pending' AND source = 'missed_call' \
                 AND (?2 IS NULL OR number = ?2) \
                 AND (?3 IS NULL OR rule_id = ?3) \
                 AND (?4 IS NULL OR queue = ?4) \
                 AND (?5 IS NULL OR id = ?5) \
             RETURNING id",
        )?
        .query_map(params![reason, number, rule, queue, id], |r| {
            r.get(0).map(CallbackId)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING yields rows in no promised order.
    ids.sort_unstable();
    for &id in &ids {
        emit(tx, EventKind::Cancelled, id, EventData::at(at))?;
    }
    Ok(ids)
}

/// A closed reason: `[a-z_]+` (the column's CHECK).
fn is_reason(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// `PRAGMA synchronous` value of FULL.
const SYNCHRONOUS_FULL: i64 = 2;

/// `d` in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn is_plain_digits(number: &str) -> bool {
    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
}

/// Why a row could not be decoded: SQLite itself, or a value we reject.
pub(super) enum Decode {
    Sqlite(rusqlite::Error),
    Corrupt(StoreError),
}

impl Decode {
    pub(super) fn into_store_error(
        self,
        sqlite: impl Fn(rusqlite::Error) -> StoreError,
    ) -> StoreError {
        match self {
            Decode::Sqlite(source) => sqlite(source),
            Decode::Corrupt(e) => e,
        }
    }
}

impl From<rusqlite::Error> for Decode {
    fn from(e: rusqlite::Error) -> Self {
        Decode::Sqlite(e)
    }
}

pub(super) fn decode_row(row: &rusqlite::Row<'_>) -> Result<CallbackRow, Decode> {
    let id: i64 = row.get("id")?;
    let corrupt = |column: &'static str, value: String| {
        Decode::Corrupt(StoreError::CorruptRow { id, column, value })
    };
    let timestamp = |column: &'static str, ms: i64| {
        Timestamp::from_millisecond(ms).map_err(|_| corrupt(column, ms.to_string()))
    };
    let unsigned =
        |column: &'static str, n: i64| u32::try_from(n).map_err(|_| corrupt(column, n.to_string()));
    let queue: String = row.get("queue")?;
    let number: String = row.get("number")?;
    if !is_plain_digits(&number) {
        return Err(corrupt("number", number));
    }
    let status_text: String = row.get("status")?;
    let Some(status) = Status::parse(&status_text) else {
        return Err(corrupt("status", status_text));
    };
    let next_attempt_at = match row.get::<_, Option<i64>>("next_attempt_at")? {
        Some(ms) => Some(timestamp("next_attempt_at", ms)?),
        None => None,
    };
    let source_text: String = row.get("source")?;
    let Some(source) = Source::parse(&source_text) else {
        return Err(corrupt("source", source_text));
    };
    let closed_reason = match row.get::<_, Option<String>>("closed_reason")? {
        Some(text) if !is_reason(&text) => return Err(corrupt("closed_reason", text)),
        other => other,
    };
    Ok(CallbackRow {
        id: CallbackId(id),
        queue: QueueId(queue.into_boxed_str()),
        number,
        caller_ani: row.get("caller_ani")?,
        called_number: row.get("called_number")?,
        priority: row.get("priority")?,
        queued_at: timestamp("queued_at", row.get("queued_at")?)?,
        registered_at: timestamp("registered_at", row.get("registered_at")?)?,
        ecbt_quoted_minutes: unsigned("ecbt_quoted_minutes", row.get("ecbt_quoted_minutes")?)?,
        status,
        attempts: unsigned("attempts", row.get("attempts")?)?,
        next_attempt_at,
        expires_at: timestamp("expires_at", row.get("expires_at")?)?,
        inbound_call_id: row.get("inbound_call_id")?,
        moved_from: row
            .get::<_, Option<String>>("moved_from")?
            .map(|q| QueueId(q.into_boxed_str())),
        customer_dialed_at: match row.get::<_, Option<i64>>("customer_dialed_at")? {
            Some(ms) => Some(timestamp("customer_dialed_at", ms)?),
            None => None,
        },
        caller_id: match row.get::<_, Option<String>>("caller_id")? {
            Some(digits) if !is_plain_digits(&digits) => return Err(corrupt("caller_id", digits)),
            other => other,
        },
        source,
        rule: row.get("rule_id")?,
        task: row.get("task")?,
        closed_reason,
    })
}

fn decode_attempt(row: &rusqlite::Row<'_>) -> Result<AttemptRow, Decode> {
    let id: i64 = row.get("id")?;
    let corrupt = |column: &'static str, value: String| {
        Decode::Corrupt(StoreError::CorruptRow { id, column, value })
    };
    let timestamp = |column: &'static str, ms: i64| {
        Timestamp::from_millisecond(ms).map_err(|_| corrupt(column, ms.to_string()))
    };
    let outcome_text: String = row.get("outcome")?;
    let Some(outcome) = Outcome::parse(&outcome_text) else {
        return Err(corrupt("attempts.outcome", outcome_text));
    };
    let sip_status = match row.get::<_, Option<i64>>("sip_status")? {
        Some(n) => {
            Some(u16::try_from(n).map_err(|_| corrupt("attempts.sip_status", n.to_string()))?)
        }
        None => None,
    };
    let queue: String = row.get("queue")?;
    Ok(AttemptRow {
        id,
        callback: CallbackId(row.get("callback_id")?),
        queue: QueueId(queue.into_boxed_str()),
        attempt: Attempt {
            started_at: timestamp("attempts.started_at", row.get("started_at")?)?,
            ended_at: timestamp("attempts.ended_at", row.get("ended_at")?)?,
            outcome,
            sip_status,
            agent: row.get("agent")?,
            customer_dialed_at: match row.get::<_, Option<i64>>("customer_dialed_at")? {
                Some(ms) => Some(timestamp("attempts.customer_dialed_at", ms)?),
                None => None,
            },
        },
    })
}

pub(super) fn decode_cdr(row: &rusqlite::Row<'_>) -> Result<CdrRecord, Decode> {
    let id: i64 = row.get("id")?;
    let corrupt = |column: &'static str, value: String| {
        Decode::Corrupt(StoreError::CorruptRow { id, column, value })
    };
    let timestamp = |column: &'static str, ms: i64| {
        Timestamp::from_millisecond(ms).map_err(|_| corrupt(column, ms.to_string()))
    };
    let leg_text: String = row.get("leg")?;
    let Some(leg) = Leg::parse(&leg_text) else {
        return Err(corrupt("cdr.leg", leg_text));
    };
    let outcome_text: String = row.get("outcome")?;
    let Some(outcome) = LegOutcome::parse(&outcome_text) else {
        return Err(corrupt("cdr.outcome", outcome_text));
    };
    let answer = match row.get::<_, Option<i64>>("answer_at")? {
        Some(ms) => Some(timestamp("cdr.answer_at", ms)?),
        None => None,
    };
    let sip_code = match row.get::<_, Option<i64>>("sip_code")? {
        Some(n) => Some(u16::try_from(n).map_err(|_| corrupt("cdr.sip_code", n.to_string()))?),
        None => None,
    };
    let source = match row.get::<_, Option<String>>("source")? {
        Some(text) => match Source::parse(&text) {
            Some(source) => Some(source),
            None => return Err(corrupt("cdr.source", text)),
        },
        None => None,
    };
    Ok(CdrRecord {
        callback: row.get::<_, Option<i64>>("callback_id")?.map(CallbackId),
        inbound_call_id: row.get("inbound_call_id")?,
        leg,
        call_id: row.get("call_id")?,
        start: timestamp("cdr.start_at", row.get("start_at")?)?,
        answer,
        end: timestamp("cdr.end_at", row.get("end_at")?)?,
        outcome,
        sip_code,
        peer: row.get("peer")?,
        redirected_from: row.get("redirected_from")?,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::store::test_support::*;
    use crate::callback::store::testing::{arm_commit_failure, disarm_commit_failure};

    #[test]
    fn register_then_list_shows_exactly_that_row() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let new = new_cb("support", "3125550188", "2025-06-02T15:00:00Z");
        let id = registered(store.register(&new).unwrap());
        let rows = store.list().unwrap();
        assert_eq!(
            rows,
            [CallbackRow {
                id,
                queue: new.queue.clone(),
                number: "3125550188".to_owned(),
                caller_ani: new.caller_ani.clone(),
                called_number: new.called_number.clone(),
                priority: 5,
                queued_at: new.queued_at,
                registered_at: new.registered_at,
                ecbt_quoted_minutes: 12,
                status: Status::Pending,
                attempts: 0,
                next_attempt_at: None,
                expires_at: new.expires_at,
                inbound_call_id: new.inbound_call_id.clone(),
                moved_from: None,
                customer_dialed_at: None,
                caller_id: None,
                source: Source::Ivr,
                rule: None,
                task: None,
                closed_reason: None,
            }]
        );
    }

    #[test]
    fn duplicate_pending_is_already_scheduled_and_writes_nothing() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let first = registered(
            store
                .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
                .unwrap(),
        );
        let again = store
            .register(&new_cb("support", "3125550188", "2025-06-02T15:30:00Z"))
            .unwrap();
        assert_eq!(again, Registration::AlreadyScheduled(first));
        let rows = store.list().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].queued_at, ts("2025-06-02T15:00:00Z"));
    }

    #[test]
    fn dialing_callback_also_blocks_a_second_registration() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let new = new_cb("support", "3125550188", "2025-06-02T15:00:00Z");
        let first = registered(store.register(&new).unwrap());
        set_status(&store, first, "dialing");
        assert_eq!(
            store.register(&new).unwrap(),
            Registration::AlreadyScheduled(first)
        );
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn same_number_in_another_queue_gets_its_own_row() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let a = registered(
            store
                .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
                .unwrap(),
        );
        let b = registered(
            store
                .register(&new_cb("billing", "3125550188", "2025-06-02T15:00:00Z"))
                .unwrap(),
        );
        assert_ne!(a, b);
        let rows = store.list().unwrap();
        let queues: Vec<_> = rows.iter().map(|r| r.queue.as_str()).collect();
        assert_eq!(queues, ["support", "billing"]);
    }

    #[test]
    fn finished_callback_allows_a_new_registration() {
        for finished in ["completed", "failed", "expired", "cancelled"] {
            let mut store = SqliteStore::open_in_memory().unwrap();
            let new = new_cb("support", "3125550188", "2025-06-02T15:00:00Z");
            let first = registered(store.register(&new).unwrap());
            set_status(&store, first, finished);
            let second = registered(store.register(&new).unwrap());
            assert_ne!(first, second, "{finished}");
            let statuses: Vec<_> = store.list().unwrap().iter().map(|r| r.status).collect();
            assert_eq!(
                statuses,
                [Status::parse(finished).unwrap(), Status::Pending]
            );
        }
    }

    #[test]
    fn pending_ahead_counts_only_earlier_pending_in_the_same_queue() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let cases = [
            ("support", "3125550101", "2025-06-02T14:00:00Z"), // ahead
            ("support", "3125550102", "2025-06-02T14:30:00Z"), // ahead
            ("support", "3125550103", "2025-06-02T14:45:00Z"), // ahead, but completed
            ("support", "3125550104", "2025-06-02T15:00:00Z"), // same instant: not ahead
            ("support", "3125550105", "2025-06-02T15:30:00Z"), // behind
            ("billing", "3125550106", "2025-06-02T13:00:00Z"), // other queue
        ];
        let mut ids = Vec::new();
        for (q, n, at) in cases {
            ids.push(registered(store.register(&new_cb(q, n, at)).unwrap()));
        }
        set_status(&store, ids[2], "completed");
        let support = queue("support");
        let at = ts("2025-06-02T15:00:00Z");
        assert_eq!(store.pending_ahead(&support, at).unwrap(), 2);
        set_status(&store, ids[1], "dialing");
        assert_eq!(store.pending_ahead(&support, at).unwrap(), 1);
        assert_eq!(store.pending_ahead(&queue("billing"), at).unwrap(), 1);
        assert_eq!(store.pending_ahead(&queue("sales"), at).unwrap(), 0);
        assert_eq!(
            store
                .pending_ahead(&support, ts("2025-06-02T14:00:00Z"))
                .unwrap(),
            0
        );
    }

    #[test]
    fn registration_survives_drop_and_reopen() {
        let db = temp_db("reopen");
        let path = db.path.clone();
        let new = new_cb("support", "3125550188", "2025-06-02T15:00:00Z");
        let id = {
            let mut store = SqliteStore::open(&path).unwrap();
            registered(store.register(&new).unwrap())
        };
        let store = SqliteStore::open(&path).unwrap();
        let rows = store.list().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, id);
        assert_eq!(rows[0].number, "3125550188");
    }

    #[test]
    fn file_store_uses_wal_and_synchronous_full() {
        let db = temp_db("pragmas");
        let path = db.path.clone();
        let store = SqliteStore::open(&path).unwrap();
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
        let fk: i64 = store
            .conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        // WAL is persistent: a plain connection sees it too.
        let plain = Connection::open(&path).unwrap();
        let mode: String = plain
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn rejects_unopenable_path_naming_it() {
        let db = temp_db("missing-dir");
        let path = db.dir.join("no-such-dir").join("callbacks.db");
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[test]
    fn failing_commit_leaves_nothing_written() {
        let db = temp_db("commit-fails");
        let path = db.path.clone();
        let mut store = SqliteStore::open(&path).unwrap();
        let kept = registered(
            store
                .register(&new_cb("support", "3125550101", "2025-06-02T14:00:00Z"))
                .unwrap(),
        );
        let before = store.list().unwrap();

        arm_commit_failure(&store).unwrap();
        let err = store
            .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
            .unwrap_err();
        match &err {
            StoreError::Sqlite {
                op: "register",
                source,
                ..
            } => match source {
                // A deferred foreign key is only checked by COMMIT.
                rusqlite::Error::SqliteFailure(e, _) => {
                    assert_eq!(e.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
                }
                other => panic!("expected an SQLite failure, got {other:?}"),
            },
            other => panic!("expected a register Sqlite error, got {other:?}"),
        }
        // The INSERT itself ran (it assigned the next rowid), then COMMIT
        // failed and the transaction was rolled back.
        assert_eq!(store.conn.last_insert_rowid(), kept.0 + 1);
        assert!(store.conn.is_autocommit(), "transaction left open");
        assert_eq!(store.list().unwrap(), before);
        // Another connection (another process) sees nothing either.
        let other = SqliteStore::open(&path).unwrap();
        assert_eq!(other.list().unwrap(), before);

        // The failed number is not blocked: once commits work it registers.
        disarm_commit_failure(&store).unwrap();
        let id = registered(
            store
                .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
                .unwrap(),
        );
        assert_ne!(id, kept);
        assert_eq!(other.list().unwrap().len(), 2);
    }

    #[test]
    fn unique_index_rejects_a_racing_duplicate_insert() {
        let db = temp_db("race");
        let path = db.path.clone();
        let mut store = SqliteStore::open(&path).unwrap();
        store
            .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
            .unwrap();
        // A second writer that skips the lookup and inserts directly.
        let racer = Connection::open(&path).unwrap();
        let err = racer
            .execute(
                "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                     queued_at, registered_at, ecbt_quoted_minutes, status, expires_at, \
                     inbound_call_id) \
                 VALUES ('support', '3125550188', '', '', 0, 0, 0, 0, 'pending', 0, 'x')",
                [],
            )
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation),
            "{err}"
        );
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn rejects_number_with_non_digits() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        for bad in ["", "+13125550188", "312-555-0188", "312555018#"] {
            let err = store
                .register(&new_cb("support", bad, "2025-06-02T15:00:00Z"))
                .unwrap_err();
            assert!(
                matches!(err, StoreError::NumberNotDigits { .. }),
                "{bad}: {err:?}"
            );
        }
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn list_reports_corrupt_status_as_corrupt_row() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = registered(
            store
                .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
                .unwrap(),
        );
        // The CHECK constraint stops this normally; a foreign tool may not.
        store
            .conn
            .pragma_update(None, "ignore_check_constraints", "ON")
            .unwrap();
        set_status(&store, id, "ringing");
        match store.list().unwrap_err() {
            StoreError::CorruptRow {
                id: row,
                column,
                value,
            } => {
                assert_eq!((row, column, value.as_str()), (id.0, "status", "ringing"));
            }
            other => panic!("expected CorruptRow, got {other:?}"),
        }
    }

    #[test]
    fn list_reports_corrupt_source_and_closed_reason_as_corrupt_row() {
        for (column, value) in [("source", "walk_in"), ("closed_reason", "Rule Off")] {
            let mut store = SqliteStore::open_in_memory().expect("an in-memory store opens");
            let id = register_one(&mut store, "support", "3125550188", "2025-06-02T15:00:00Z");
            // The CHECK constraints stop this normally; a foreign tool may not.
            store
                .conn
                .pragma_update(None, "ignore_check_constraints", "ON")
                .expect("the migration SQL applies");
            store
                .conn
                .execute(
                    &format!("UPDATE callbacks SET {column} = ?1 WHERE id = ?2"),
                    params![value, id.0],
                )
                .expect("the store answers in the test");
            match store.list().unwrap_err() {
                StoreError::CorruptRow {
                    id: row,
                    column: got,
                    value: v,
                } => assert_eq!((row, got, v.as_str()), (id.0, column, value)),
                other => panic!("expected CorruptRow, got {other:?}"),
            }
        }
    }

    #[test]
    fn cdrs_report_a_corrupt_source_as_corrupt_row() {
        let mut store = SqliteStore::open_in_memory().expect("an in-memory store opens");
        store
            .write_cdr(&cdr(Leg::Inbound, "2025-06-02T14:00:00Z", None))
            .expect("an in-memory store opens");
        store
            .conn
            .pragma_update(None, "ignore_check_constraints", "ON")
            .expect("the migration SQL applies");
        store
            .conn
            .execute("UPDATE cdr SET source = 'robot'", [])
            .expect("the store answers in the test");
        assert!(matches!(
            store.cdrs(None, None).unwrap_err(),
            StoreError::CorruptRow {
                column: "cdr.source",
                ..
            }
        ));
    }

    #[test]
    fn list_reports_out_of_range_timestamp_as_corrupt_row() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = registered(
            store
                .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
                .unwrap(),
        );
        store
            .conn
            .execute(
                "UPDATE callbacks SET queued_at = ?1 WHERE id = ?2",
                params![i64::MAX, id.0],
            )
            .unwrap();
        assert!(matches!(
            store.list().unwrap_err(),
            StoreError::CorruptRow {
                column: "queued_at",
                ..
            }
        ));
    }

    #[test]
    fn timestamps_are_unix_milliseconds_utc() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = registered(
            store
                .register(&new_cb(
                    "support",
                    "3125550188",
                    "2025-06-02T15:00:00.123456Z",
                ))
                .unwrap(),
        );
        let ms: i64 = store
            .conn
            .query_row(
                "SELECT queued_at FROM callbacks WHERE id = ?1",
                [id.0],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ms, ts("2025-06-02T15:00:00.123Z").as_millisecond());
        assert_eq!(
            store.list().unwrap()[0].queued_at,
            ts("2025-06-02T15:00:00.123Z")
        );
    }

    // ---- schema version 2: launching ----

    #[test]
    fn claim_twice_second_is_false() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = register_one(&mut store, "support", "3125550188", "2025-06-02T15:00:00Z");
        assert!(store.claim(id, now()).unwrap());
        assert!(!store.claim(id, now()).unwrap());
        assert_eq!(row_of(&store, id).status, Status::Dialing);
        let claimed_at: Option<i64> = store
            .conn
            .query_row(
                "SELECT claimed_at FROM callbacks WHERE id = ?1",
                [id.0],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(claimed_at, Some(now().as_millisecond()));
        assert!(!store.claim(CallbackId(999), now()).unwrap());
    }

    #[test]
    fn claim_refuses_callbacks_not_due_expired_or_finished() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let later = register_one(&mut store, "support", "3125550101", "2025-06-02T15:00:00Z");
        store
            .conn
            .execute(
                "UPDATE callbacks SET next_attempt_at = ?1 WHERE id = ?2",
                params![(now() + secs(1)).as_millisecond(), later.0],
            )
            .unwrap();
        assert!(!store.claim(later, now()).unwrap());
        assert!(store.claim(later, now() + secs(1)).unwrap());

        let expired = register_one(&mut store, "support", "3125550102", "2025-06-02T15:00:00Z");
        let expiry = ts("2025-06-02T23:00:00Z");
        assert!(!store.claim(expired, expiry).unwrap());
        assert_eq!(row_of(&store, expired).status, Status::Pending);

        let cancelled = register_one(&mut store, "support", "3125550103", "2025-06-02T15:00:00Z");
        set_status(&store, cancelled, "cancelled");
        assert!(!store.claim(cancelled, now()).unwrap());
        assert_eq!(row_of(&store, cancelled).status, Status::Cancelled);
    }

    #[test]
    fn two_connections_racing_claims_each_callback_is_won_exactly_once() {
        let db = temp_db("claim-race");
        let path = db.path.clone();
        let ids: Vec<CallbackId> = {
            let mut store = SqliteStore::open(&path).unwrap();
            (0..25)
                .map(|i| {
                    let number = format!("31255501{i:02}");
                    register_one(&mut store, "support", &number, "2025-06-02T15:00:00Z")
                })
                .collect()
        };
        let barrier = std::sync::Barrier::new(2);
        let wins: Vec<Vec<CallbackId>> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (path, ids, barrier) = (&path, &ids, &barrier);
                    scope.spawn(move || {
                        // Each racer is its own connection, as another
                        // process would be.
                        let mut store = SqliteStore::open(path).unwrap();
                        barrier.wait();
                        ids.iter()
                            .copied()
                            .filter(|&id| store.claim(id, now()).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let mut all: Vec<CallbackId> = wins.concat();
        all.sort_unstable();
        assert_eq!(all, ids, "every callback claimed exactly once: {wins:?}");
        let store = SqliteStore::open(&path).unwrap();
        assert!(
            store
                .list()
                .unwrap()
                .iter()
                .all(|r| r.status == Status::Dialing)
        );
    }

    #[test]
    fn due_lists_pending_due_unexpired_by_priority_then_place() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let late = register_one(&mut store, "support", "3125550101", "2025-06-02T14:30:00Z");
        let early = register_one(&mut store, "support", "3125550102", "2025-06-02T14:00:00Z");
        let mut urgent = new_cb("billing", "3125550103", "2025-06-02T14:45:00Z");
        urgent.priority = 9;
        let urgent = registered(store.register(&urgent).unwrap());
        let not_yet = register_one(&mut store, "support", "3125550104", "2025-06-02T13:00:00Z");
        store
            .conn
            .execute(
                "UPDATE callbacks SET next_attempt_at = ?1 WHERE id = ?2",
                params![(now() + secs(60)).as_millisecond(), not_yet.0],
            )
            .unwrap();
        let dialing = register_one(&mut store, "support", "3125550105", "2025-06-02T13:00:00Z");
        assert!(store.claim(dialing, now()).unwrap());
        let mut short = new_cb("support", "3125550106", "2025-06-02T13:00:00Z");
        short.expires_at = now();
        let expired = registered(store.register(&short).unwrap());

        let ids = |rows: Vec<CallbackRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.due(now()).unwrap()), [urgent, early, late]);
        assert_eq!(
            ids(store.due(now() + secs(60)).unwrap()),
            [urgent, not_yet, early, late]
        );
        assert_eq!(store.expire(now()).unwrap(), [expired]);
        assert_eq!(row_of(&store, expired).status, Status::Expired);
        assert_eq!(store.expire(now()).unwrap(), []);
        // The dialing one is not expired by the sweep: its attempt decides.
        assert_eq!(
            store.expire(ts("2025-06-02T23:00:00Z")).unwrap(),
            [late, early, urgent, not_yet]
        );
        assert_eq!(row_of(&store, dialing).status, Status::Dialing);
    }

    /// Registered 15:04:05 with 12 minutes announced, first dialed at
    /// 15:19:05: 3 minutes late. A later attempt's dial changes nothing.
    #[test]
    fn the_first_customer_dial_stores_the_ecbt_error_once() {
        use crate::callback::store::ManageStore;
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = register_one(&mut store, "support", "3125550188", "2025-06-02T15:00:00Z");
        // An attempt that never reached the customer records no dial.
        assert!(store.claim(id, now()).unwrap());
        let agent_missed = attempt(Outcome::AgentNoAnswer, None);
        let retry = NextStep::Retry {
            at: now(),
            task: None,
        };
        store.record_attempt(id, &agent_missed, &retry).unwrap();
        assert_eq!(row_of(&store, id).customer_dialed_at, None);
        for dialed in ["2025-06-02T15:19:05Z", "2025-06-02T15:40:00Z"] {
            assert!(store.claim(id, now()).unwrap());
            let mut busy = attempt(Outcome::Busy, Some(486));
            busy.customer_dialed_at = Some(ts(dialed));
            store.record_attempt(id, &busy, &retry).unwrap();
        }
        let row = store.get(id).unwrap().expect("stored");
        assert_eq!(row.row.customer_dialed_at, Some(ts("2025-06-02T15:19:05Z")));
        assert_eq!(row.ecbt_error_ms, Some(3 * 60_000));
        let dials: Vec<_> = store
            .attempts(id)
            .unwrap()
            .into_iter()
            .map(|a| a.attempt.customer_dialed_at)
            .collect();
        assert_eq!(
            dials,
            [
                None,
                Some(ts("2025-06-02T15:19:05Z")),
                Some(ts("2025-06-02T15:40:00Z"))
            ]
        );
    }

    /// Nothing announced (launching off, or created through the API): the
    /// dial is kept, the error stays NULL.
    #[test]
    fn no_ecbt_error_without_an_announced_ecbt() {
        use crate::callback::store::ManageStore;
        let mut store = SqliteStore::open_in_memory().unwrap();
        let mut new = new_cb("support", "3125550188", "2025-06-02T15:00:00Z");
        new.ecbt_quoted_minutes = 0;
        let id = registered(store.register(&new).unwrap());
        assert!(store.claim(id, now()).unwrap());
        let mut answered = attempt(Outcome::Answered, Some(200));
        answered.customer_dialed_at = Some(ts("2025-06-02T15:10:00Z"));
        store
            .record_attempt(id, &answered, &NextStep::Completed)
            .unwrap();
        let row = store.get(id).unwrap().expect("stored");
        assert_eq!(row.row.customer_dialed_at, Some(ts("2025-06-02T15:10:00Z")));
        assert_eq!(row.ecbt_error_ms, None);
    }

    #[test]
    fn record_attempt_writes_the_attempt_and_the_transition_together() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = register_one(&mut store, "support", "3125550188", "2025-06-02T15:00:00Z");
        let retry_at = now() + secs(600);

        // No answer → pending again at retry time, one attempt counted.
        assert!(store.claim(id, now()).unwrap());
        let no_answer = attempt(Outcome::NoAnswer, Some(487));
        assert_eq!(
            store
                .record_attempt(
                    id,
                    &no_answer,
                    &NextStep::Retry {
                        at: retry_at,
                        task: None,
                    }
                )
                .unwrap(),
            Recorded::Applied(Status::Pending)
        );
        let row = row_of(&store, id);
        assert_eq!(
            (row.status, row.attempts, row.next_attempt_at),
            (Status::Pending, 1, Some(retry_at))
        );
        assert!(
            !store.claim(id, now()).unwrap(),
            "not due before retry_time"
        );

        // The agent did not answer → pending at once, not counted.
        assert!(store.claim(id, retry_at).unwrap());
        let agent_missed = attempt(Outcome::AgentNoAnswer, Some(480));
        store
            .record_attempt(
                id,
                &agent_missed,
                &NextStep::Retry {
                    at: retry_at,
                    task: None,
                },
            )
            .unwrap();
        assert_eq!(row_of(&store, id).attempts, 1);

        // Answered → completed.
        assert!(store.claim(id, retry_at).unwrap());
        let answered = attempt(Outcome::Answered, Some(200));
        assert_eq!(
            store
                .record_attempt(id, &answered, &NextStep::Completed)
                .unwrap(),
            Recorded::Applied(Status::Completed)
        );
        let row = row_of(&store, id);
        assert_eq!(
            (row.status, row.attempts, row.next_attempt_at),
            (Status::Completed, 2, None)
        );

        let stored = store.attempts(id).unwrap();
        let outcomes: Vec<_> = stored.iter().map(|a| a.attempt.outcome).collect();
        assert_eq!(
            outcomes,
            [Outcome::NoAnswer, Outcome::AgentNoAnswer, Outcome::Answered]
        );
        assert_eq!(stored[0].attempt, no_answer);
        assert_eq!(stored[0].queue, queue("support"));
        assert!(stored.iter().all(|a| a.callback == id));
    }

    #[test]
    fn record_attempt_marks_failed_and_expired() {
        for (next, status) in [
            (NextStep::Failed, Status::Failed),
            (NextStep::Expired, Status::Expired),
        ] {
            let mut store = SqliteStore::open_in_memory().unwrap();
            let id = register_one(&mut store, "support", "3125550188", "2025-06-02T15:00:00Z");
            assert!(store.claim(id, now()).unwrap());
            let busy = attempt(Outcome::Busy, Some(486));
            assert_eq!(
                store.record_attempt(id, &busy, &next).unwrap(),
                Recorded::Applied(status)
            );
            let row = row_of(&store, id);
            assert_eq!((row.status, row.attempts), (status, 1));
            // Finished: the number may register again.
            register_one(&mut store, "support", "3125550188", "2025-06-02T15:05:00Z");
        }
    }

    #[test]
    fn rejects_attempt_for_a_callback_that_is_not_dialing() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = register_one(&mut store, "support", "3125550188", "2025-06-02T15:00:00Z");
        let busy = attempt(Outcome::Busy, Some(486));
        match store.record_attempt(id, &busy, &NextStep::Failed) {
            Err(StoreError::NotDialing {
                id: got,
                found: Some(Status::Pending),
            }) => assert_eq!(got, id),
            other => panic!("expected NotDialing, got {other:?}"),
        }
        assert!(matches!(
            store.record_attempt(CallbackId(77), &busy, &NextStep::Failed),
            Err(StoreError::NotDialing { found: None, .. })
        ));
        assert!(store.attempts(id).unwrap().is_empty());
        assert_eq!(row_of(&store, id).status, Status::Pending);
        assert!(store.conn.is_autocommit(), "transaction left open");
    }

    #[test]
    fn failover_moves_the_callback_keeping_its_place_in_line() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = register_one(&mut store, "support", "3125550188", "2025-06-02T14:00:00Z");
        store
            .conn
            .execute("UPDATE callbacks SET attempts = 2 WHERE id = ?1", [id.0])
            .unwrap();
        assert!(store.claim(id, now()).unwrap());
        let at = now() + secs(600);
        let next = NextStep::Failover {
            queue: queue("billing"),
            priority: 7,
            at,
        };
        let failed = attempt(Outcome::Failure, Some(503));
        assert_eq!(
            store.record_attempt(id, &failed, &next).unwrap(),
            Recorded::Applied(Status::Pending)
        );
        let row = row_of(&store, id);
        assert_eq!(row.queue, queue("billing"));
        assert_eq!(row.moved_from, Some(queue("support")));
        assert_eq!(row.queued_at, ts("2025-06-02T14:00:00Z"));
        assert_eq!(
            (row.status, row.priority, row.attempts, row.next_attempt_at),
            (Status::Pending, 7, 0, Some(at))
        );
        // The attempt stays filed under the queue it was made in.
        assert_eq!(store.attempts(id).unwrap()[0].queue, queue("support"));
        // In its new queue it counts ahead of later billing callers.
        assert_eq!(
            store
                .pending_ahead(&queue("billing"), ts("2025-06-02T14:30:00Z"))
                .unwrap(),
            1
        );
    }

    #[test]
    fn failover_onto_an_active_duplicate_fails_instead() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = register_one(&mut store, "support", "3125550188", "2025-06-02T14:00:00Z");
        let other = register_one(&mut store, "billing", "3125550188", "2025-06-02T14:30:00Z");
        assert!(store.claim(id, now()).unwrap());
        let next = NextStep::Failover {
            queue: queue("billing"),
            priority: 7,
            at: now(),
        };
        assert_eq!(
            store
                .record_attempt(id, &attempt(Outcome::Busy, Some(486)), &next)
                .unwrap(),
            Recorded::FailoverDuplicate { existing: other }
        );
        let row = row_of(&store, id);
        assert_eq!(
            (row.status, row.queue.as_str()),
            (Status::Failed, "support")
        );
        assert_eq!(store.attempts(id).unwrap().len(), 1);
    }

    #[test]
    fn recover_interrupted_after_a_crash_pends_again_after_the_longest_ring() {
        let db = temp_db("recover");
        let path = db.path.clone();
        let claimed_at = now();
        let (dialing, pending) = {
            let mut store = SqliteStore::open(&path).unwrap();
            let dialing = register_one(&mut store, "support", "3125550101", "2025-06-02T14:00:00Z");
            let pending = register_one(&mut store, "support", "3125550102", "2025-06-02T14:10:00Z");
            assert!(store.claim(dialing, claimed_at).unwrap());
            // The process dies here (no attempt recorded).
            (dialing, pending)
        };
        let restart = claimed_at + secs(5);
        let ring = Duration::from_secs(45);
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store
                .recover_interrupted(restart, ring, Recovery::AtStart)
                .unwrap(),
            [dialing]
        );
        let row = row_of(&store, dialing);
        let due_at = restart + secs(45);
        assert_eq!(
            (row.status, row.attempts, row.next_attempt_at),
            (Status::Pending, 0, Some(due_at))
        );
        let attempts = store.attempts(dialing).unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            attempts[0].attempt,
            Attempt {
                started_at: claimed_at,
                ended_at: restart,
                outcome: Outcome::Interrupted,
                sip_status: None,
                agent: None,
                customer_dialed_at: None,
            }
        );
        // Not redialed while the old leg may still ring.
        let due_ids = |store: &SqliteStore, at| {
            store
                .due(at)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(due_ids(&store, due_at - secs(1)), [pending]);
        assert!(!store.claim(dialing, due_at - secs(1)).unwrap());
        assert_eq!(due_ids(&store, due_at), [dialing, pending]);
        assert!(store.claim(dialing, due_at).unwrap());
        // Nothing dialing: nothing to recover.
        store
            .record_attempt(
                dialing,
                &attempt(Outcome::Answered, Some(200)),
                &NextStep::Completed,
            )
            .unwrap();
        assert_eq!(
            store
                .recover_interrupted(due_at, ring, Recovery::AtStart)
                .unwrap(),
            []
        );
        assert_eq!(store.attempts(dialing).unwrap().len(), 2);
    }

    #[test]
    fn another_nodes_live_claim_is_left_alone_until_its_lease_lapses() {
        let db = temp_db("leases");
        let path = db.path.clone();
        let t0 = now();
        let ring = Duration::from_secs(45);
        let lease = Duration::from_secs(30);
        let mut a = SqliteStore::open(&path).unwrap();
        a.set_claimant("host/127.0.0.1:5060", lease);
        let mut b = SqliteStore::open(&path).unwrap();
        b.set_claimant("host/127.0.0.1:5062", lease);
        let id = register_one(&mut a, "support", "3125550101", "2025-06-02T14:00:00Z");
        assert!(a.claim(id, t0).unwrap());

        // B starts while A dials: A's claim is not B's to recover.
        assert_eq!(
            b.recover_interrupted(t0 + secs(1), ring, Recovery::AtStart)
                .unwrap(),
            []
        );
        // A renews at its polls; B checks at its own: nothing lapses.
        for s in [10, 20, 30, 40] {
            assert_eq!(a.renew_claims(t0 + secs(s)).unwrap(), 1);
            assert_eq!(
                b.recover_interrupted(t0 + secs(s + 1), ring, Recovery::Expired)
                    .unwrap(),
                []
            );
            // A's own running check does not touch its live claim either.
            assert_eq!(
                a.recover_interrupted(t0 + secs(s + 1), ring, Recovery::Expired)
                    .unwrap(),
                []
            );
        }
        assert_eq!(row_of(&a, id).status, Status::Dialing);
        assert!(a.attempts(id).unwrap().is_empty());

        // A dies after its renewal at 40 s: the lease runs to 70 s.
        assert_eq!(
            b.recover_interrupted(t0 + secs(69), ring, Recovery::Expired)
                .unwrap(),
            []
        );
        assert_eq!(
            b.recover_interrupted(t0 + secs(70), ring, Recovery::Expired)
                .unwrap(),
            [id]
        );
        let row = row_of(&b, id);
        assert_eq!(
            (row.status, row.next_attempt_at),
            (Status::Pending, Some(t0 + secs(70) + secs(45)))
        );
        let attempts = b.attempts(id).unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].attempt.outcome, Outcome::Interrupted);
        assert_eq!(attempts[0].attempt.started_at, t0);
        // B claims it when due; A's renewals no longer reach it.
        assert!(b.claim(id, t0 + secs(115)).unwrap());
        assert_eq!(a.renew_claims(t0 + secs(116)).unwrap(), 0);
        assert_eq!(b.renew_claims(t0 + secs(116)).unwrap(), 1);
    }

    #[test]
    fn a_restarted_node_recovers_its_own_claims_at_once() {
        let db = temp_db("own-claims");
        let path = db.path.clone();
        let t0 = now();
        let node = "host/127.0.0.1:5060";
        let id = {
            let mut store = SqliteStore::open(&path).unwrap();
            store.set_claimant(node, Duration::from_secs(30));
            let id = register_one(&mut store, "support", "3125550101", "2025-06-02T14:00:00Z");
            assert!(store.claim(id, t0).unwrap());
            id
        };
        let mut store = SqliteStore::open(&path).unwrap();
        store.set_claimant(node, Duration::from_secs(30));
        // The lease has 25 s to run, but the claim was this node's.
        assert_eq!(
            store
                .recover_interrupted(t0 + secs(5), Duration::from_secs(45), Recovery::Expired)
                .unwrap(),
            []
        );
        assert_eq!(
            store
                .recover_interrupted(t0 + secs(5), Duration::from_secs(45), Recovery::AtStart)
                .unwrap(),
            [id]
        );
        assert_eq!(row_of(&store, id).status, Status::Pending);
    }

    /// Issue 12: a group of CDRs is one transaction, in order; a record
    /// the database refuses loses none of the others.
    #[test]
    fn write_cdrs_keeps_order_and_one_refused_record_loses_no_other() {
        let mut store = SqliteStore::open_in_memory().expect("in-memory store");
        let mut records: Vec<CdrRecord> = (0..5)
            .map(|n| {
                let mut r = cdr(Leg::Inbound, "2025-06-02T15:00:00Z", None);
                r.call_id = format!("leg-{n}@callbackd");
                r
            })
            .collect();
        assert!(store.write_cdrs(&records).is_empty());
        // A record the database refuses (a trigger stands for a full disk
        // or a constraint): the group is rolled back and written one by one.
        store
            .conn
            .execute_batch(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON cdr \
                 WHEN NEW.call_id = 'bad@callbackd' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .expect("a temp trigger");
        for (n, r) in records.iter_mut().enumerate() {
            r.call_id = format!("leg-{}@callbackd", n + 5);
        }
        records[2].call_id = "bad@callbackd".into();
        let errors = store.write_cdrs(&records);
        assert_eq!(errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2]);
        let stored: Vec<String> = store
            .cdrs(None, None)
            .expect("cdrs readable")
            .into_iter()
            .map(|r| r.call_id)
            .collect();
        let expected: Vec<String> = [0, 1, 2, 3, 4, 5, 6, 8, 9]
            .iter()
            .map(|n| format!("leg-{n}@callbackd"))
            .collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn cdrs_round_trip_and_filter_by_start() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = register_one(&mut store, "support", "3125550188", "2025-06-02T14:00:00Z");
        let inbound = cdr(Leg::Inbound, "2025-06-02T14:00:00Z", Some(id));
        let mut agent = cdr(Leg::Agent, "2025-06-02T15:10:00Z", Some(id));
        agent.answer = None;
        agent.outcome = LegOutcome::NoAnswer;
        agent.sip_code = None;
        let mut customer = cdr(Leg::Customer, "2025-06-02T15:20:00.5Z", Some(id));
        customer.source = Some(Source::MissedCall);
        let walk_in = cdr(Leg::Inbound, "2025-06-02T15:00:00Z", None);
        for r in [&customer, &inbound, &agent, &walk_in] {
            store.write_cdr(r).unwrap();
        }
        assert_eq!(
            store.cdrs(None, None).unwrap(),
            [
                inbound.clone(),
                walk_in.clone(),
                agent.clone(),
                customer.clone()
            ]
        );
        assert_eq!(
            store
                .cdrs(
                    Some(ts("2025-06-02T15:00:00Z")),
                    Some(ts("2025-06-02T15:20:00.5Z"))
                )
                .unwrap(),
            [walk_in, agent]
        );
        assert_eq!(
            store
                .cdrs(Some(ts("2025-06-02T15:20:00.5Z")), None)
                .unwrap(),
            [customer]
        );
        // What `callbackd cdr` writes.
        let mut out = Vec::new();
        crate::callback::cdr::write_csv(&store.cdrs(None, None).unwrap(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(
            text.contains(
                ",sip:201@pbx.example.com,<sip:3125550100@pbx.example.com>;reason=no-answer,ivr\r\n"
            ),
            "the inbound leg's redirection and type: {text}"
        );
        assert!(
            text.contains(
                "\r\n1,a84b4c76e66710@pc33.example.com,customer,customer-leg@callbackd,\
                 2025-06-02T15:20:00.500Z,2025-06-02T15:20:03.500Z,2025-06-02T15:22:00.500Z,\
                 answered,200,sip:201@pbx.example.com,,missed_call\r\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn attempts_report_corrupt_outcome_as_corrupt_row() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = register_one(&mut store, "support", "3125550188", "2025-06-02T14:00:00Z");
        assert!(store.claim(id, now()).unwrap());
        store
            .record_attempt(id, &attempt(Outcome::Busy, Some(486)), &NextStep::Failed)
            .unwrap();
        store
            .conn
            .pragma_update(None, "ignore_check_constraints", "ON")
            .unwrap();
        store
            .conn
            .execute("UPDATE attempts SET outcome = 'hung'", [])
            .unwrap();
        match store.attempts(id).unwrap_err() {
            StoreError::CorruptRow { column, value, .. } => {
                assert_eq!((column, value.as_str()), ("attempts.outcome", "hung"));
            }
            other => panic!("expected CorruptRow, got {other:?}"),
        }
    }
}
