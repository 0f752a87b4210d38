//! Test doubles for the store (for tests only; nothing here is used by the
//! daemon).

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;

use super::{
    Attempt, AttemptRow, CallbackRow, LaunchStore, NewCallback, NextStep, Recorded, Recovery,
    Registration, SqliteStore, Store, StoreError,
};
use crate::callback::cdr::CdrRecord;
use crate::callback::{CallbackId, QueueId};

/// A [`Store`] whose `register` always fails with an injected SQLite
/// I/O error and writes nothing (`list` stays empty). For tests of the
/// "unable to register" path. As a [`LaunchStore`] every write fails
/// the same way and every read finds nothing.
#[derive(Debug, Default)]
pub struct FailingStore {
    /// How many times `register` was called.
    pub register_calls: u32,
}

fn injected(op: &'static str) -> StoreError {
    StoreError::Sqlite {
        path: PathBuf::from("<FailingStore>"),
        op,
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("injected failure (FailingStore)".to_owned()),
        ),
    }
}

impl Store for FailingStore {
    fn register(&mut self, _new: &NewCallback) -> Result<Registration, StoreError> {
        self.register_calls += 1;
        Err(injected("register"))
    }

    fn list(&self) -> Result<Vec<CallbackRow>, StoreError> {
        Ok(Vec::new())
    }

    fn pending_ahead(&self, _queue: &QueueId, _queued_at: Timestamp) -> Result<u32, StoreError> {
        Ok(0)
    }
}

impl LaunchStore for FailingStore {
    fn due(&self, _now: Timestamp) -> Result<Vec<CallbackRow>, StoreError> {
        Ok(Vec::new())
    }

    fn claim(&mut self, _id: CallbackId, _now: Timestamp) -> Result<bool, StoreError> {
        Err(injected("claim"))
    }

    fn record_attempt(
        &mut self,
        _id: CallbackId,
        _attempt: &Attempt,
        _next: &NextStep,
    ) -> Result<Recorded, StoreError> {
        Err(injected("record_attempt"))
    }

    fn expire(&mut self, _now: Timestamp) -> Result<Vec<CallbackId>, StoreError> {
        Err(injected("expire"))
    }

    fn set_claimant(&mut self, _node: &str, _lease: Duration) {}

    fn renew_claims(&mut self, _now: Timestamp) -> Result<usize, StoreError> {
        Err(injected("renew_claims"))
    }

    fn recover_interrupted(
        &mut self,
        _now: Timestamp,
        _longest_ring: Duration,
        _scope: Recovery,
    ) -> Result<Vec<CallbackId>, StoreError> {
        Err(injected("recover_interrupted"))
    }

    fn attempts(&self, _id: CallbackId) -> Result<Vec<AttemptRow>, StoreError> {
        Ok(Vec::new())
    }

    fn write_cdr(&mut self, _record: &CdrRecord) -> Result<(), StoreError> {
        Err(injected("write_cdr"))
    }

    fn cdrs(
        &self,
        _since: Option<Timestamp>,
        _until: Option<Timestamp>,
    ) -> Result<Vec<CdrRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// Makes every later COMMIT of a registration on this connection fail
/// (SQLite `FOREIGN KEY constraint failed`), after the INSERT itself
/// succeeded inside the transaction. Uses TEMP objects only (a deferred
/// foreign key violated by a TEMP trigger on insert), so the database
/// file is never changed and closing the store removes them.
pub fn arm_commit_failure(store: &SqliteStore) -> Result<(), StoreError> {
    store
        .conn
        .execute_batch(
            "CREATE TEMP TABLE commit_blocker_parent (id INTEGER PRIMARY KEY);
             CREATE TEMP TABLE commit_blocker (
                 parent INTEGER REFERENCES commit_blocker_parent (id)
                     DEFERRABLE INITIALLY DEFERRED);
             CREATE TEMP TRIGGER commit_blocker_on_insert AFTER INSERT ON main.callbacks
             BEGIN
                 INSERT INTO commit_blocker (parent) VALUES (-1);
             END;",
        )
        .map_err(store.sqlite_err("arm_commit_failure"))
}

/// Undoes [`arm_commit_failure`].
pub fn disarm_commit_failure(store: &SqliteStore) -> Result<(), StoreError> {
    store
        .conn
        .execute_batch(
            "DROP TRIGGER temp.commit_blocker_on_insert;
             DROP TABLE temp.commit_blocker;
             DROP TABLE temp.commit_blocker_parent;",
        )
        .map_err(store.sqlite_err("disarm_commit_failure"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::store::test_support::*;

    #[test]
    fn failing_store_errors_and_keeps_nothing() {
        let mut store = FailingStore::default();
        let err = store
            .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Sqlite { op: "register", .. }),
            "{err:?}"
        );
        assert_eq!(store.register_calls, 1);
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            store
                .pending_ahead(&queue("support"), ts("2025-06-02T15:00:00Z"))
                .unwrap(),
            0
        );
    }

    #[test]
    fn failing_store_fails_every_launch_write() {
        let mut store = FailingStore::default();
        assert!(matches!(
            store.claim(CallbackId(1), now()),
            Err(StoreError::Sqlite { op: "claim", .. })
        ));
        assert!(matches!(
            store.recover_interrupted(now(), Duration::from_secs(1), Recovery::AtStart),
            Err(StoreError::Sqlite {
                op: "recover_interrupted",
                ..
            })
        ));
        assert!(store.due(now()).unwrap().is_empty());
    }
}
