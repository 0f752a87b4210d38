//! The schema migrations and how they are applied (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Schema migrations; index `i` takes the file from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
    MIGRATION_9,
    MIGRATION_10,
    MIGRATION_11,
    MIGRATION_12,
];

/// Applies the pending [`MIGRATIONS`] to `conn` (the file at `path`, named
/// in errors) in one write transaction; refuses a newer schema.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let known = u32::try_from(MIGRATIONS.len()).expect("a handful of migrations fits in u32");
    let unknown = |found| StoreError::UnknownSchemaVersion {
        path: path.to_owned(),
        found,
        known,
    };
    let found = user_version(conn).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    let Ok(current) = u32::try_from(found) else {
        return Err(unknown(found));
    };
    if current > known {
        return Err(unknown(found));
    }
    if current == known {
        return Ok(());
    }
    let first = current + 1;
    let migrate_err = |version| {
        move |source| StoreError::Migrate {
            path: path.to_owned(),
            version,
            source,
        }
    };
    // All pending migrations in one write transaction; the version is
    // re-read under the lock in case another process migrated meanwhile.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(migrate_err(first))?;
    let found = user_version(&tx).map_err(migrate_err(first))?;
    let Ok(current) = u32::try_from(found) else {
        return Err(unknown(found));
    };
    if current > known {
        return Err(unknown(found));
    }
    for version in current + 1..=known {
        let sql = MIGRATIONS
            .get(version as usize - 1)
            .expect("version is in 1..=MIGRATIONS.len()");
        tx.execute_batch(sql).map_err(migrate_err(version))?;
        // user_version lives in the file header and is transactional.
        tx.pragma_update(None, "user_version", version)
            .map_err(migrate_err(version))?;
    }
    tx.commit().map_err(migrate_err(known))?;
    Ok(())
}

/// The schema version of the file `conn` is open on.
pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Schema version 1: the callbacks table.
const MIGRATION_1: &str = "
CREATE TABLE callbacks (
    id                  INTEGER PRIMARY KEY,
    queue               TEXT    NOT NULL,
    -- plain digits as keyed: 3125550188, 011...
    number              TEXT    NOT NULL
                        CHECK (number <> '' AND number NOT GLOB '*[^0-9]*'),
    caller_ani          TEXT    NOT NULL,
    called_number       TEXT    NOT NULL,
    priority            INTEGER NOT NULL,
    -- all times: Unix milliseconds, UTC
    queued_at           INTEGER NOT NULL,
    registered_at       INTEGER NOT NULL,
    ecbt_quoted_minutes INTEGER NOT NULL CHECK (ecbt_quoted_minutes >= 0),
    status              TEXT    NOT NULL CHECK (status IN
                            ('pending', 'dialing', 'completed', 'failed', 'expired', 'cancelled')),
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at     INTEGER,
    expires_at          INTEGER NOT NULL,
    inbound_call_id     TEXT    NOT NULL,
    created_at          INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    updated_at          INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
) STRICT;

-- At most one active callback per number and queue, whoever writes.
CREATE UNIQUE INDEX callbacks_one_active_per_number
    ON callbacks (queue, number) WHERE status IN ('pending', 'dialing');

-- The launcher's order: per queue and status, priority then place in line.
CREATE INDEX callbacks_by_queue_status
    ON callbacks (queue, status, priority, queued_at);

CREATE TRIGGER callbacks_touch_updated_at AFTER UPDATE ON callbacks
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE callbacks SET updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
        WHERE id = NEW.id;
END;
";

/// Schema version 2 (issue 4): launching. The claim time and failover mark
/// on callbacks, the attempts of each callback, and call detail records.
/// Existing rows keep every value (the new columns start NULL).
const MIGRATION_2: &str = "
-- when the row became dialing (the start of an interrupted attempt)
ALTER TABLE callbacks ADD COLUMN claimed_at INTEGER;
-- the queue it was registered in, once moved to its failover queue
ALTER TABLE callbacks ADD COLUMN moved_from TEXT;

-- due(): pending rows by next attempt time.
CREATE INDEX callbacks_by_status_next_attempt
    ON callbacks (status, next_attempt_at);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    callback_id INTEGER NOT NULL REFERENCES callbacks (id),
    -- the queue the callback was in at the time (failover moves it)
    queue       TEXT    NOT NULL,
    -- Unix milliseconds, UTC
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER NOT NULL,
    -- 'interrupted': the process stopped during the attempt
    outcome     TEXT    NOT NULL CHECK (outcome IN ('answered', 'busy', 'no_answer',
                    'failure', 'invalid_number', 'agent_no_answer', 'interrupted')),
    sip_status  INTEGER CHECK (sip_status BETWEEN 0 AND 65535),
    agent       TEXT
) STRICT;

CREATE INDEX attempts_by_callback ON attempts (callback_id, id);

-- One row per leg: inbound, agent, customer.
CREATE TABLE cdr (
    id              INTEGER PRIMARY KEY,
    callback_id     INTEGER REFERENCES callbacks (id),
    inbound_call_id TEXT    NOT NULL,
    leg             TEXT    NOT NULL CHECK (leg IN ('inbound', 'agent', 'customer')),
    call_id         TEXT    NOT NULL,
    -- Unix milliseconds, UTC
    start_at        INTEGER NOT NULL,
    answer_at       INTEGER,
    end_at          INTEGER NOT NULL,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('answered', 'busy', 'no_answer',
                        'failure', 'invalid_number', 'cancelled', 'interrupted')),
    sip_code        INTEGER CHECK (sip_code BETWEEN 0 AND 65535),
    peer            TEXT    NOT NULL
) STRICT;

CREATE INDEX cdr_by_start ON cdr (start_at, id);
";

/// Schema version 3: claims carry their node and lease, so engines sharing
/// a store never recover each other's live calls. Rows dialing under
/// version 2 have neither and count as interrupted.
const MIGRATION_3: &str = "
ALTER TABLE callbacks ADD COLUMN claimed_by TEXT;
ALTER TABLE callbacks ADD COLUMN lease_until INTEGER;
";

/// Schema version 4 (issue 9): where an inbound call was redirected from
/// (Diversion / History-Info as received), on its CDR row.
const MIGRATION_4: &str = "
ALTER TABLE cdr ADD COLUMN redirected_from TEXT;
";

/// Schema version 5 (issue 9): an attempt may end `agent_lost` (bridged,
/// then the agent's leg died). SQLite cannot change a CHECK in place: the
/// table is rebuilt with its rows and ids (§7 of "ALTER TABLE" in the
/// SQLite docs; foreign keys name `attempts` nowhere).
const MIGRATION_5: &str = "
CREATE TABLE attempts_v5 (
    id          INTEGER PRIMARY KEY,
    callback_id INTEGER NOT NULL REFERENCES callbacks (id),
    -- the queue the callback was in at the time (failover moves it)
    queue       TEXT    NOT NULL,
    -- Unix milliseconds, UTC
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER NOT NULL,
    -- 'interrupted': the process stopped during the attempt;
    -- 'agent_lost': bridged, then the agent's leg died
    outcome     TEXT    NOT NULL CHECK (outcome IN ('answered', 'busy', 'no_answer',
                    'failure', 'invalid_number', 'agent_no_answer', 'agent_lost',
                    'interrupted')),
    sip_status  INTEGER CHECK (sip_status BETWEEN 0 AND 65535),
    agent       TEXT
) STRICT;
INSERT INTO attempts_v5 (id, callback_id, queue, started_at, ended_at, outcome, sip_status, agent)
    SELECT id, callback_id, queue, started_at, ended_at, outcome, sip_status, agent FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v5 RENAME TO attempts;
CREATE INDEX attempts_by_callback ON attempts (callback_id, id);
";

/// Schema version 6 (issue 11): accounts. Users with a role, business
/// units grouping queues, API tokens (the SHA-256 of the secret only), and
/// the audit log, which triggers keep append-only. Times are Unix
/// milliseconds, UTC, given by the caller.
const MIGRATION_6: &str = "
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE CHECK (name <> ''),
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'manager', 'viewer')),
    -- argon2id PHC string, for the console
    password_hash TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE units (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE CHECK (name <> ''),
    created_at INTEGER NOT NULL
) STRICT;

-- The queues a unit groups (queue ids of the configuration).
CREATE TABLE unit_queues (
    unit_id INTEGER NOT NULL REFERENCES units (id) ON DELETE CASCADE,
    queue   TEXT    NOT NULL,
    PRIMARY KEY (unit_id, queue)
) STRICT;

CREATE TABLE user_units (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    unit_id INTEGER NOT NULL REFERENCES units (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, unit_id)
) STRICT;

CREATE INDEX user_units_by_unit ON user_units (unit_id);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    label         TEXT    NOT NULL,
    -- SHA-256 of the whole token text; the secret itself is never stored
    secret_sha256 BLOB    NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER
) STRICT;

CREATE INDEX api_tokens_by_user ON api_tokens (user_id, id);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    -- a user name (kept when the user is deleted), or 'cli'
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    -- JSON objects
    before TEXT CHECK (before IS NULL OR json_valid(before)),
    after  TEXT CHECK (after IS NULL OR json_valid(after))
) STRICT;

CREATE INDEX audit_log_by_at ON audit_log (at, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
";

/// Schema version 7 (issue 11): callbacks created through the API. When a
/// scheduled one may first be launched (`scheduled_for`; the launcher reads
/// `next_attempt_at`, which starts at the same instant), who created it (a
/// user name; NULL for the IVR), free key/value data (a JSON object), and
/// the `Idempotency-Key`s of creating requests with the answer they got.
const MIGRATION_7: &str = "
ALTER TABLE callbacks ADD COLUMN scheduled_for INTEGER;
ALTER TABLE callbacks ADD COLUMN created_by TEXT;
ALTER TABLE callbacks ADD COLUMN data TEXT
    CHECK (data IS NULL OR (json_valid(data) AND json_type(data) = 'object'));

-- GET /v1/callbacks?number=, cancel by number, the per-number cap.
CREATE INDEX callbacks_by_number ON callbacks (number, registered_at);

CREATE TABLE idempotency_keys (
    -- the user who sent the key: keys are per caller
    actor          TEXT    NOT NULL,
    key            TEXT    NOT NULL CHECK (key <> ''),
    -- SHA-256 of the request body the key was first used with (one route takes keys)
    request_sha256 BLOB    NOT NULL CHECK (length(request_sha256) = 32),
    -- the answer given, replayed for the same request
    status         INTEGER NOT NULL CHECK (status BETWEEN 100 AND 599),
    body           TEXT    NOT NULL,
    location       TEXT,
    -- Unix milliseconds, UTC
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (actor, key)
) STRICT;

CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);
";

/// Schema version 8 (issue 11): the organisation at run time, one row per
/// version of its TOML document (see `store::organisation`).
const MIGRATION_8: &str = "
CREATE TABLE organisation (
    version    INTEGER PRIMARY KEY CHECK (version >= 1),
    document   TEXT    NOT NULL,
    -- Unix milliseconds, UTC
    changed_at INTEGER NOT NULL,
    changed_by TEXT    NOT NULL
) STRICT;
";

/// Schema version 9 (issue 11): how good the announced ECBT was. When
/// the customer was first dialed (the customer leg's first INVITE) per
/// attempt and per callback, and the callback's ECBT error: that instant
/// minus `registered_at` minus the announced `ecbt_quoted_minutes`, in
/// milliseconds (positive: called later than announced; NULL when no ECBT
/// was announced or the customer was never dialed). Existing rows keep
/// NULL: their dial times were not recorded.
const MIGRATION_9: &str = "
ALTER TABLE attempts ADD COLUMN customer_dialed_at INTEGER;
ALTER TABLE callbacks ADD COLUMN customer_dialed_at INTEGER;
ALTER TABLE callbacks ADD COLUMN ecbt_error_ms INTEGER;
";

/// Schema version 10 (issue 11 point 5): webhooks. The SIP context of the
/// inbound call on its callback (a JSON object: Diversion, History-Info,
/// User-to-User; NULL for the API's), the subscriptions, the outbox of
/// events (written in the transaction of the change that causes them) and
/// one delivery row per event and subscription, which is the delivery log.
const MIGRATION_10: &str = "
ALTER TABLE callbacks ADD COLUMN sip_context TEXT
    CHECK (sip_context IS NULL OR (json_valid(sip_context) AND json_type(sip_context) = 'object'));

CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY,
    url         TEXT    NOT NULL CHECK (url LIKE 'http://%' OR url LIKE 'https://%'),
    -- JSON array of event types
    events      TEXT    NOT NULL CHECK (json_valid(events) AND json_type(events) = 'array'),
    -- the HMAC key, shown once at creation
    secret      TEXT    NOT NULL CHECK (secret <> ''),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    description TEXT    NOT NULL DEFAULT '',
    created_by  TEXT    NOT NULL,
    -- Unix milliseconds, UTC
    created_at  INTEGER NOT NULL
) STRICT;

-- The outbox: one row per event that had a subscription when committed.
CREATE TABLE webhook_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- the id receivers see (stable across retries)
    uid         TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    callback_id INTEGER NOT NULL REFERENCES callbacks (id),
    occurred_at INTEGER NOT NULL,
    -- the JSON body, exactly as posted (and signed)
    payload     TEXT    NOT NULL CHECK (json_valid(payload))
) STRICT;

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES webhook_events (id),
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    tries           INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    -- Unix milliseconds, UTC; next_try_at NULL while pending: at once
    first_try_at    INTEGER,
    last_try_at     INTEGER,
    next_try_at     INTEGER,
    -- the last try's HTTP status, or why it got none
    last_status     INTEGER CHECK (last_status BETWEEN 100 AND 599),
    last_error      TEXT,
    UNIQUE (webhook_id, event_id)
) STRICT;

-- The worker's heads: per subscription, its oldest pending delivery.
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (webhook_id, state, event_id);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
";

/// Schema version 11: the caller ID a callback asks to present (issue 11
/// point 4); old rows and the IVR's present the queue's number.
const MIGRATION_11: &str = "
ALTER TABLE callbacks ADD COLUMN caller_id TEXT
    CHECK (caller_id IS NULL OR (caller_id <> '' AND caller_id NOT GLOB '*[^0-9]*'));
";

/// Schema version 12 (issue 13): missed-call rules. Where each callback
/// came from (`source`: rows created through the API, `created_by` set,
/// are 'api'; the rest were the IVR's), an automatic task's rule and its
/// settings snapshot (JSON text), and why a callback was cancelled or not
/// started. The cdr table gets the source of the callback a leg served. An
/// attempt may end `short_call` (bridged, hung up before the rule's
/// success time): the attempts table is rebuilt with its rows and ids, as
/// in version 5.
const MIGRATION_12: &str = "
ALTER TABLE callbacks ADD COLUMN source TEXT NOT NULL DEFAULT 'ivr'
    CHECK (source IN ('ivr', 'api', 'missed_call'));
UPDATE callbacks SET source = 'api' WHERE created_by IS NOT NULL;
ALTER TABLE callbacks ADD COLUMN rule_id TEXT;
ALTER TABLE callbacks ADD COLUMN task TEXT;
ALTER TABLE callbacks ADD COLUMN closed_reason TEXT
    CHECK (closed_reason IS NULL OR (closed_reason <> '' AND closed_reason NOT GLOB '*[^a-z_]*'));

-- (create_task and the cancellations by number use callbacks_by_number.)

ALTER TABLE cdr ADD COLUMN source TEXT
    CHECK (source IS NULL OR source IN ('ivr', 'api', 'missed_call'));

CREATE TABLE attempts_v12 (
    id                 INTEGER PRIMARY KEY,
    callback_id        INTEGER NOT NULL REFERENCES callbacks (id),
    -- the queue the callback was in at the time (failover moves it)
    queue              TEXT    NOT NULL,
    -- Unix milliseconds, UTC
    started_at         INTEGER NOT NULL,
    ended_at           INTEGER NOT NULL,
    -- 'interrupted': the process stopped during the attempt;
    -- 'agent_lost': bridged, then the agent's leg died;
    -- 'short_call': bridged, the customer hung up before the success time
    outcome            TEXT    NOT NULL CHECK (outcome IN ('answered', 'busy', 'no_answer',
                           'failure', 'invalid_number', 'agent_no_answer', 'agent_lost',
                           'short_call', 'interrupted')),
    sip_status         INTEGER CHECK (sip_status BETWEEN 0 AND 65535),
    agent              TEXT,
    customer_dialed_at INTEGER
) STRICT;
INSERT INTO attempts_v12 (id, callback_id, queue, started_at, ended_at, outcome, sip_status,
        agent, customer_dialed_at)
    SELECT id, callback_id, queue, started_at, ended_at, outcome, sip_status, agent,
        customer_dialed_at
    FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v12 RENAME TO attempts;
CREATE INDEX attempts_by_callback ON attempts (callback_id, id);
";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rusqlite::params;

    use super::*;
    use crate::callback::CallbackId;
    use crate::callback::scheduler::Outcome;
    use crate::callback::store::test_support::*;
    use crate::callback::store::{
        LaunchStore, NextStep, Recovery, Source, SqliteStore, Status, Store, StoreError,
    };

    #[test]
    fn migration_is_idempotent() {
        let db = temp_db("migrate-twice");
        let path = db.path.clone();
        {
            let mut store = SqliteStore::open(&path).unwrap();
            store
                .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store.conn).unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn rejects_newer_schema_version() {
        let db = temp_db("future");
        let path = db.path.clone();
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err();
        match &err {
            StoreError::UnknownSchemaVersion {
                path: p,
                found,
                known,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*found, 99);
                assert_eq!(*known as usize, MIGRATIONS.len());
            }
            other => panic!("expected UnknownSchemaVersion, got {other:?}"),
        }
        assert!(err.to_string().contains("99"), "{err}");
        assert!(err.to_string().contains("callbacks.db"), "{err}");
    }

    #[test]
    fn migration_1_to_current_keeps_existing_rows() {
        let db = temp_db("migrate-1-2");
        let path = db.path.clone();
        {
            // A file written by the previous release: version 1 only.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATION_1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                     queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                     next_attempt_at, expires_at, inbound_call_id) \
                 VALUES ('support', '3125550188', '+13125550100', '8005550199', 5, ?1, ?1, \
                     12, 'pending', 1, ?2, ?3, 'old-call@pc33')",
                params![
                    ts("2025-06-02T15:00:00Z").as_millisecond(),
                    now().as_millisecond(),
                    ts("2025-06-02T23:00:00Z").as_millisecond()
                ],
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store.conn).unwrap(), MIGRATIONS.len() as i64);
        let rows = store.list().unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            (row.number.as_str(), row.attempts, row.next_attempt_at),
            ("3125550188", 1, Some(now()))
        );
        assert_eq!(row.queued_at, ts("2025-06-02T15:00:00Z"));
        assert_eq!(
            (row.moved_from.clone(), row.status),
            (None, Status::Pending)
        );
        assert_eq!(row.inbound_call_id, "old-call@pc33");
        // The new tables work on the migrated file.
        assert!(store.claim(row.id, now()).unwrap());
        store
            .record_attempt(
                row.id,
                &attempt(Outcome::Answered, Some(200)),
                &NextStep::Completed,
            )
            .unwrap();
        assert_eq!(store.attempts(row.id).unwrap().len(), 1);
    }

    #[test]
    fn migration_2_to_3_leaves_an_old_dialing_row_recoverable() {
        let db = temp_db("migrate-2-3");
        let path = db.path.clone();
        let t0 = now();
        let id = {
            // A version-2 file whose process died while dialing.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATION_1).unwrap();
            conn.execute_batch(MIGRATION_2).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                     queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                     expires_at, inbound_call_id, claimed_at) \
                 VALUES ('support', '3125550188', '+13125550100', '8005550199', 0, ?1, ?1, \
                     3, 'dialing', 0, ?2, 'old-call@pc33', ?1)",
                params![t0.as_millisecond(), (t0 + secs(3600)).as_millisecond()],
            )
            .unwrap();
            CallbackId(conn.last_insert_rowid())
        };
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store.conn).unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(row_of(&store, id).status, Status::Dialing);
        // No owner, no lease: interrupted, whoever looks.
        assert_eq!(
            store
                .recover_interrupted(t0 + secs(1), Duration::from_secs(45), Recovery::Expired)
                .unwrap(),
            [id]
        );
        assert_eq!(row_of(&store, id).status, Status::Pending);
    }

    #[test]
    fn migration_4_to_5_keeps_the_attempts_and_takes_agent_lost() {
        let db = temp_db("migrate-4-5");
        let path = db.path.clone();
        let t0 = now();
        let id = {
            // A version-4 file with one attempt on record.
            let conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..4] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            conn.execute(
                "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                     queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                     expires_at, inbound_call_id) \
                 VALUES ('support', '3125550188', '+13125550100', '8005550199', 0, ?1, ?1, \
                     3, 'pending', 1, ?2, 'old-call@pc33')",
                params![t0.as_millisecond(), (t0 + secs(3600)).as_millisecond()],
            )
            .unwrap();
            let id = conn.last_insert_rowid();
            conn.execute(
                "INSERT INTO attempts (callback_id, queue, started_at, ended_at, outcome, \
                     sip_status, agent) VALUES (?1, 'support', ?2, ?2, 'busy', 486, 'alice')",
                params![id, t0.as_millisecond()],
            )
            .unwrap();
            // Version 4 refuses the new outcome.
            assert!(
                conn.execute(
                    "INSERT INTO attempts (callback_id, queue, started_at, ended_at, outcome) \
                     VALUES (?1, 'support', 0, 0, 'agent_lost')",
                    params![id],
                )
                .is_err()
            );
            CallbackId(id)
        };
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store.conn).unwrap(), MIGRATIONS.len() as i64);
        let kept = store.attempts(id).unwrap();
        assert_eq!(
            kept.iter()
                .map(|a| (
                    a.attempt.outcome,
                    a.attempt.sip_status,
                    a.attempt.agent.as_deref()
                ))
                .collect::<Vec<_>>(),
            [(Outcome::Busy, Some(486), Some("alice"))]
        );
        assert!(store.claim(id, t0).unwrap());
        store
            .record_attempt(
                id,
                &attempt(Outcome::AgentLost, Some(200)),
                &NextStep::Completed,
            )
            .unwrap();
        let outcomes: Vec<Outcome> = store
            .attempts(id)
            .unwrap()
            .iter()
            .map(|a| a.attempt.outcome)
            .collect();
        assert_eq!(outcomes, [Outcome::Busy, Outcome::AgentLost]);
        assert_eq!(row_of(&store, id).status, Status::Completed);
        let integrity: String = store
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
    }

    #[test]
    fn migration_6_to_7_keeps_rows_unscheduled_and_checks_data() {
        let db = temp_db("migrate-6-7");
        let path = db.path.clone();
        let t0 = now();
        let id = {
            // A version-6 file with an IVR-registered callback.
            let conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..6] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute(
                "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                     queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                     expires_at, inbound_call_id) \
                 VALUES ('support', '3125550188', '+13125550100', '8005550199', 0, ?1, ?1, \
                     3, 'pending', 0, ?2, 'old-call@pc33')",
                params![t0.as_millisecond(), (t0 + secs(3600)).as_millisecond()],
            )
            .unwrap();
            CallbackId(conn.last_insert_rowid())
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store.conn).unwrap(), MIGRATIONS.len() as i64);
        let got = crate::callback::store::ManageStore::get(&store, id)
            .unwrap()
            .unwrap();
        assert_eq!(got.row, row_of(&store, id));
        assert_eq!(
            (got.scheduled_for, got.created_by, got.data),
            (None, None, None)
        );
        // data holds a JSON object or nothing.
        for bad in ["[1]", "\"text\"", "{not json"] {
            assert!(
                store
                    .conn
                    .execute(
                        "UPDATE callbacks SET data = ?1 WHERE id = ?2",
                        params![bad, id.0]
                    )
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn migration_9_to_10_leaves_rows_without_sip_context_and_checks_it() {
        let db = temp_db("migrate-8-9");
        let path = db.path.clone();
        let t0 = now();
        let id = {
            // A version-8 file with an IVR-registered callback.
            let conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..9] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 9).unwrap();
            conn.execute(
                "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                     queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                     expires_at, inbound_call_id) \
                 VALUES ('support', '3125550188', '+13125550100', '8005550199', 0, ?1, ?1, \
                     3, 'pending', 0, ?2, 'old-call@pc33')",
                params![t0.as_millisecond(), (t0 + secs(3600)).as_millisecond()],
            )
            .unwrap();
            CallbackId(conn.last_insert_rowid())
        };
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store.conn).unwrap(), MIGRATIONS.len() as i64);
        let context: Option<String> = store
            .conn
            .query_row(
                "SELECT sip_context FROM callbacks WHERE id = ?1",
                [id.0],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(context, None);
        for bad in ["[1]", "{not json"] {
            assert!(
                store
                    .conn
                    .execute(
                        "UPDATE callbacks SET sip_context = ?1 WHERE id = ?2",
                        params![bad, id.0]
                    )
                    .is_err(),
                "{bad}"
            );
        }
        // The old row's transitions announce themselves once subscribed.
        use crate::callback::store::{NewWebhook, WebhookStore};
        use crate::callback::webhook::EventKind;
        let hook = store
            .create_webhook(&NewWebhook {
                url: "https://hooks.example.com/x".into(),
                events: vec![EventKind::AttemptStarted],
                secret: "whsec_migration_test".into(),
                enabled: true,
                description: String::new(),
                created_by: "test".into(),
                created_at: t0,
            })
            .unwrap();
        assert!(store.claim(id, t0).unwrap());
        let log = store.deliveries(hook.id, None, 10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].event_type, "callback.attempt_started");
        // Only http(s) URLs are stored, whoever writes.
        assert!(
            store
                .conn
                .execute(
                    "UPDATE webhooks SET url = 'ftp://x' WHERE id = ?1",
                    [hook.id]
                )
                .is_err()
        );
    }

    #[test]
    fn migration_10_to_11_leaves_rows_presenting_the_queues_number() {
        let db = temp_db("migrate-10-11");
        let path = db.path.clone();
        let t0 = now();
        let id = {
            let conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..10] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 10).unwrap();
            conn.execute(
                "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                     queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                     expires_at, inbound_call_id) \
                 VALUES ('support', '3125550188', '+13125550100', '8005550199', 0, ?1, ?1, \
                     3, 'pending', 0, ?2, 'old-call@pc33')",
                params![t0.as_millisecond(), (t0 + secs(3600)).as_millisecond()],
            )
            .unwrap();
            CallbackId(conn.last_insert_rowid())
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store.conn).unwrap(), MIGRATIONS.len() as i64);
        let rows = store.list().unwrap();
        assert_eq!((rows[0].id, rows[0].caller_id.as_deref()), (id, None));
        for bad in ["", "+18005550100", "800-555-0100"] {
            assert!(
                store
                    .conn
                    .execute(
                        "UPDATE callbacks SET caller_id = ?1 WHERE id = ?2",
                        params![bad, id.0]
                    )
                    .is_err(),
                "{bad:?}"
            );
        }
        store
            .conn
            .execute(
                "UPDATE callbacks SET caller_id = '8005550100' WHERE id = ?1",
                [id.0],
            )
            .unwrap();
        assert_eq!(
            store.list().unwrap()[0].caller_id.as_deref(),
            Some("8005550100")
        );
    }

    #[test]
    fn migration_11_to_12_derives_sources_and_keeps_the_attempts() {
        let db = temp_db("migrate-11-12");
        let path = db.path.clone();
        let t0 = now();
        let (ivr, api, attempt_id) = {
            // A version-11 file: an IVR callback with an attempt, an API
            // callback, a CDR row.
            let conn = Connection::open(&path).expect("the temporary file opens");
            for m in &MIGRATIONS[..11] {
                conn.execute_batch(m).expect("the temporary file opens");
            }
            conn.pragma_update(None, "user_version", 11)
                .expect("the migration SQL applies");
            let insert = |number: &str, created_by: Option<&str>| {
                conn.execute(
                    "INSERT INTO callbacks (queue, number, caller_ani, called_number, priority, \
                         queued_at, registered_at, ecbt_quoted_minutes, status, attempts, \
                         expires_at, inbound_call_id, created_by) \
                     VALUES ('support', ?1, '+13125550100', '8005550199', 0, ?2, ?2, \
                         3, 'pending', 1, ?3, 'old-call@pc33', ?4)",
                    params![
                        number,
                        t0.as_millisecond(),
                        (t0 + secs(3600)).as_millisecond(),
                        created_by
                    ],
                )
                .expect("the store answers in the test");
                CallbackId(conn.last_insert_rowid())
            };
            let ivr = insert("3125550188", None);
            let api = insert("3125550199", Some("ann"));
            // An id that is not 1: the rebuild keeps ids, not just rows.
            conn.execute(
                "INSERT INTO attempts (id, callback_id, queue, started_at, ended_at, outcome, \
                     sip_status, agent, customer_dialed_at) \
                 VALUES (7, ?1, 'support', ?2, ?2, 'no_answer', 480, 'alice', ?2)",
                params![ivr.0, t0.as_millisecond()],
            )
            .expect("the store answers in the test");
            // Version 11 refuses the new outcome.
            assert!(
                conn.execute(
                    "INSERT INTO attempts (callback_id, queue, started_at, ended_at, outcome) \
                     VALUES (?1, 'support', 0, 0, 'short_call')",
                    params![ivr.0],
                )
                .is_err()
            );
            conn.execute(
                "INSERT INTO cdr (callback_id, inbound_call_id, leg, call_id, start_at, end_at, \
                     outcome, peer) \
                 VALUES (?1, 'old-call@pc33', 'inbound', 'old-call@pc33', ?2, ?2, 'answered', \
                     'sip:caller@pbx')",
                params![ivr.0, t0.as_millisecond()],
            )
            .expect("the store answers in the test");
            (ivr, api, 7)
        };
        let mut store = SqliteStore::open(&path).expect("the temporary file opens");
        assert_eq!(
            user_version(&store.conn).expect("the temporary file opens"),
            MIGRATIONS.len() as i64
        );
        let rows = store.list().expect("the temporary file opens");
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.source,
                    r.rule.clone(),
                    r.task.clone(),
                    r.closed_reason.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (ivr, Source::Ivr, None, None, None),
                (api, Source::Api, None, None, None)
            ]
        );
        let kept = store.attempts(ivr).expect("the store answers in the test");
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (
                kept[0].id,
                kept[0].attempt.outcome,
                kept[0].attempt.sip_status,
                kept[0].attempt.agent.as_deref(),
                kept[0].attempt.customer_dialed_at
            ),
            (
                attempt_id,
                Outcome::NoAnswer,
                Some(480),
                Some("alice"),
                Some(t0)
            )
        );
        assert_eq!(
            store
                .cdrs(None, None)
                .expect("the store answers in the test")[0]
                .source,
            None
        );
        // The new outcome is taken; the new columns are checked.
        assert!(store.claim(ivr, t0).expect("the store answers in the test"));
        store
            .record_attempt(
                ivr,
                &attempt(Outcome::ShortCall, Some(200)),
                &NextStep::Failed,
            )
            .expect("the store answers in the test");
        let outcomes: Vec<Outcome> = store
            .attempts(ivr)
            .expect("the store answers in the test")
            .iter()
            .map(|a| a.attempt.outcome)
            .collect();
        assert_eq!(outcomes, [Outcome::NoAnswer, Outcome::ShortCall]);
        for (column, bad) in [
            ("source", "walk_in"),
            ("closed_reason", ""),
            ("closed_reason", "Rule Disabled"),
        ] {
            assert!(
                store
                    .conn
                    .execute(
                        &format!("UPDATE callbacks SET {column} = ?1 WHERE id = ?2"),
                        params![bad, api.0]
                    )
                    .is_err(),
                "{column} = {bad:?}"
            );
        }
        assert!(
            store
                .conn
                .execute("UPDATE cdr SET source = 'walk_in'", [])
                .is_err()
        );
        let integrity: String = store
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("the store answers in the test");
        assert_eq!(integrity, "ok");
    }
}
