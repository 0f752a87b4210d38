//! Fixtures shared by the store tests.

use std::path::PathBuf;

use jiff::Timestamp;
use rusqlite::params;

use super::{Attempt, CallbackRow, NewCallback, Registration, Source, SqliteStore, Store};
use crate::callback::cdr::{CdrRecord, Leg, LegOutcome};
use crate::callback::scheduler::Outcome;
use crate::callback::{CallbackId, QueueId};

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

pub(super) fn queue(name: &str) -> QueueId {
    QueueId(name.into())
}

pub(super) fn new_cb(q: &str, number: &str, queued_at: &str) -> NewCallback {
    NewCallback {
        queue: queue(q),
        number: number.to_owned(),
        caller_ani: "+13125550100".to_owned(),
        called_number: "8005550199".to_owned(),
        priority: 5,
        queued_at: ts(queued_at),
        registered_at: ts("2025-06-02T15:04:05Z"),
        ecbt_quoted_minutes: 12,
        expires_at: ts("2025-06-02T23:00:00Z"),
        inbound_call_id: "a84b4c76e66710@pc33.example.com".to_owned(),
        sip_context: None,
    }
}

/// A fresh directory under the system temp dir (no tempfile crate),
/// removed when dropped.
pub(super) struct TempDb {
    pub(super) dir: PathBuf,
    pub(super) path: PathBuf,
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn temp_db(name: &str) -> TempDb {
    let dir = std::env::temp_dir().join(format!("callbackd-store-{}-{}", std::process::id(), name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    let path = dir.join("callbacks.db");
    TempDb { dir, path }
}

pub(super) fn set_status(store: &SqliteStore, id: CallbackId, status: &str) {
    store
        .conn
        .execute(
            "UPDATE callbacks SET status = ?1 WHERE id = ?2",
            params![status, id.0],
        )
        .expect("update status");
}

pub(super) fn registered(r: Registration) -> CallbackId {
    match r {
        Registration::Registered(id) => id,
        Registration::AlreadyScheduled(id) => {
            panic!("expected Registered, got AlreadyScheduled({id})")
        }
    }
}

/// Monday 2025-06-02 15:10Z: after every `new_cb` queued_at used below,
/// before their expiry (23:00Z).
pub(super) fn now() -> Timestamp {
    ts("2025-06-02T15:10:00Z")
}

pub(super) fn secs(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs(n)
}

pub(super) fn attempt(outcome: Outcome, sip_status: Option<u16>) -> Attempt {
    Attempt {
        started_at: now(),
        ended_at: now() + secs(40),
        outcome,
        sip_status,
        agent: Some("alice".to_owned()),
        customer_dialed_at: None,
    }
}

pub(super) fn row_of(store: &SqliteStore, id: CallbackId) -> CallbackRow {
    store
        .list()
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .expect("row exists")
}

pub(super) fn register_one(store: &mut SqliteStore, q: &str, number: &str, at: &str) -> CallbackId {
    registered(store.register(&new_cb(q, number, at)).unwrap())
}

pub(super) fn cdr(leg: Leg, start: &str, callback: Option<CallbackId>) -> CdrRecord {
    CdrRecord {
        callback,
        inbound_call_id: "a84b4c76e66710@pc33.example.com".into(),
        leg,
        call_id: format!("{}-leg@callbackd", leg.as_str()),
        start: ts(start),
        answer: Some(ts(start) + secs(3)),
        end: ts(start) + secs(120),
        outcome: LegOutcome::Answered,
        sip_code: Some(200),
        peer: "sip:201@pbx.example.com".into(),
        redirected_from: (leg == Leg::Inbound)
            .then(|| "<sip:3125550100@pbx.example.com>;reason=no-answer".into()),
        source: callback.map(|_| Source::Ivr),
    }
}
