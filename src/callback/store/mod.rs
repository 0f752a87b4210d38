//! The durable store of callback requests: SQLite through rusqlite.
//!
//! A callback is registered in one `BEGIN IMMEDIATE` transaction that either
//! finds an active (pending or dialing) callback for the same `(queue,
//! number)` and writes nothing, or inserts one row and commits it. With
//! `journal_mode=WAL` and `synchronous=FULL` the commit has reached the disk
//! (the WAL is fsynced) before `register` returns, so the caller hears
//! "registered" only for a callback that survives a crash or power loss.
//!
//! # Schema
//!
//! Versioned with `PRAGMA user_version`: version N means migrations `1..=N`
//! of [`MIGRATIONS`] have been applied, each set atomically with the schema
//! change it describes. A file with a version newer than this build knows is
//! refused, never "repaired".
//!
//! Timestamps are stored as `INTEGER` Unix time in **milliseconds, UTC**
//! (truncated from the caller's `jiff::Timestamp`). Integers compare
//! correctly in SQL (`queued_at < ?`, the place in line) without any
//! reliance on text formatting, and `sqlite3` shows them with
//! `datetime(queued_at / 1000, 'unixepoch')`. Numbers are stored as TEXT of
//! plain digits exactly as keyed (`3125550188`, `011…`); the table checks it.
//!
//! `created_at`/`updated_at` are bookkeeping written by SQLite's own clock
//! (when the row was written); every domain time (`queued_at`,
//! `registered_at`, …) comes from the caller.
//!
//! Accounts (users, business units, API tokens, the audit log; schema
//! version 6) are in [`accounts`], behind their own trait
//! [`AccountStore`]. The callbacks API's view (create, scheduled callbacks,
//! filtered pages, cancel, patch, idempotency keys; schema version 7) is
//! [`ManageStore`], in [`manage`].
//!
//! Webhooks (schema version 10): every status change writes its event to
//! an outbox in its own transaction, see [`webhooks`] ([`WebhookStore`]).
//!
//! The [`Store`] trait is the IVR's narrow view (register, list, place in
//! line). The launcher's view is [`LaunchStore`], a sub-trait: claiming due
//! callbacks, recording attempts with their status change, start-up
//! recovery and call detail records.
//!
//! # Launching (schema version 2)
//!
//! ```text
//!  pending ──claim──▶ dialing ──record_attempt──▶ completed | failed | expired
//!     ▲                  │                        | pending (retry, failover)
//!     └── recover_interrupted (at start-up) ──────┘
//!  pending ──expire (expires_at passed)──▶ expired
//! ```
//!
//! `claim` is a single conditional `UPDATE … WHERE status = 'pending' AND
//! <due> AND <not expired>`: SQLite serialises writers, so of two racing
//! claims exactly one changes the row, and only that one dials. The claim
//! time is kept (`claimed_at`) so that an attempt interrupted by a crash is
//! recorded with its real start.
//!
//! Several engines may share one store (a failover pair on one file, or
//! two processes during a restart). Each claims as a *node* (host and SIP
//! address) with a *lease* it renews while it dials (`claimed_by`,
//! `lease_until`). A starting node recovers its own claims at once (they
//! died with its previous process) and another node's only when that lease
//! ran out: a live node's call is never reset under it.
//!
//! An attempt row and the status change it
//! causes are one `BEGIN IMMEDIATE` transaction. `moved_from` marks a
//! callback moved to its failover queue.
//!
//! # Sources and automatic tasks (schema version 12)
//!
//! Every callback has a [`Source`]: the IVR, the API, or a missed-call
//! rule's automatic task ([`LaunchStore::create_task`], with its rule id
//! and settings snapshot). A task is not created while the number has an
//! active callback of any kind; it is cancelled (`closed_reason`) when the
//! customer registers or is given one through the API, when a callback to
//! the number completes, and by [`LaunchStore::cancel_tasks`] (rule
//! disabled, queue deleted, organisation frozen).

pub mod accounts;
pub mod manage;
mod migrations;
pub mod organisation;
mod sqlite;
mod sqlite_accounts;
mod sqlite_manage;
mod sqlite_org;
mod sqlite_webhooks;
#[cfg(test)]
mod test_support;
pub mod testing;
pub mod webhooks;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use thiserror::Error;

use crate::callback::cdr::CdrRecord;
use crate::callback::scheduler::Outcome;
use crate::callback::webhook::SipContext;
use crate::callback::{CallbackId, QueueId};

pub use accounts::{
    AccountError, AccountStore, AuditEntry, AuditQuery, AuditRow, Authentication, Change, NewToken,
    NewUser, Principal, Role, TokenInfo, TokenSecret, Unit, UnitPatch, User, UserPatch,
};
pub use manage::{
    CallbackPatch, CallbackQuery, Changed, Creation, ManageStore, ManagedRow, StoredReply,
};
pub use migrations::MIGRATIONS;
pub use organisation::{OrgSaveError, OrganisationStore, StoredOrganisation};
pub use sqlite::SqliteStore;
pub use webhooks::{
    Delivery, DeliveryState, NewWebhook, Outgoing, TryRecord, Webhook, WebhookPatch, WebhookStore,
};

/// Lifecycle of a stored callback (the `status` TEXT column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Registered, waiting for its turn to be dialed.
    Pending,
    /// Claimed by the launcher; an outbound call is in progress.
    Dialing,
    /// The customer was reached and connected.
    Completed,
    /// All attempts were used without reaching the customer.
    Failed,
    /// `expires_at` passed before the callback could be completed.
    Expired,
    /// Cancelled by an operator or the customer.
    Cancelled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Dialing,
        Status::Completed,
        Status::Failed,
        Status::Expired,
        Status::Cancelled,
    ];

    /// The text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Dialing => "dialing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses the text stored in the `status` column (exact, lower case).
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// True for the statuses that block a second registration of the same
    /// number in the same queue (pending, dialing).
    #[cfg(test)]
    pub(crate) fn is_active(self) -> bool {
        match self {
            Status::Pending | Status::Dialing => true,
            Status::Completed | Status::Failed | Status::Expired | Status::Cancelled => false,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a callback came from (the `source` TEXT column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Registered by a caller in the IVR ([`Store::register`]).
    Ivr,
    /// Created through the API ([`ManageStore::create`]).
    Api,
    /// An automatic task of a missed-call rule ([`LaunchStore::create_task`]).
    MissedCall,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 3] = [Source::Ivr, Source::Api, Source::MissedCall];

    /// The text stored in the `source` column (and the API's and CDR's `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ivr => "ivr",
            Source::Api => "api",
            Source::MissedCall => "missed_call",
        }
    }

    /// Parses the stored text (exact, lower case).
    pub fn parse(text: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A callback request to register, as collected by the IVR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCallback {
    /// The queue the caller was waiting in.
    pub queue: QueueId,
    /// The number to call back, plain digits as keyed (validated by the caller).
    pub number: String,
    /// The caller's ANI (From user part) as received.
    pub caller_ani: String,
    /// The number the caller dialed (Request-URI / To user part).
    pub called_number: String,
    /// Queue priority (same ordering as live callers).
    pub priority: i32,
    /// When the caller originally entered the queue: the place in line.
    pub queued_at: Timestamp,
    /// When the callback was registered (the durable commit).
    pub registered_at: Timestamp,
    /// The ECBT announced to the caller, in whole minutes.
    pub ecbt_quoted_minutes: u32,
    /// After this instant the callback is no longer attempted.
    pub expires_at: Timestamp,
    /// Call-ID of the inbound call that registered it.
    pub inbound_call_id: String,
    /// The redirection and user-to-user headers of that call's INVITE
    /// (webhook payloads carry them); `None` for the API's.
    pub sip_context: Option<SipContext>,
}

/// A stored callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRow {
    /// Row id.
    pub id: CallbackId,
    /// See [`NewCallback::queue`].
    pub queue: QueueId,
    /// Plain digits, see [`NewCallback::number`].
    pub number: String,
    /// See [`NewCallback::caller_ani`].
    pub caller_ani: String,
    /// See [`NewCallback::called_number`].
    pub called_number: String,
    /// See [`NewCallback::priority`].
    pub priority: i32,
    /// See [`NewCallback::queued_at`] (millisecond precision).
    pub queued_at: Timestamp,
    /// See [`NewCallback::registered_at`] (millisecond precision).
    pub registered_at: Timestamp,
    /// See [`NewCallback::ecbt_quoted_minutes`].
    pub ecbt_quoted_minutes: u32,
    /// Lifecycle status.
    pub status: Status,
    /// Outbound attempts made so far.
    pub attempts: u32,
    /// When the next outbound attempt is due, if scheduled.
    pub next_attempt_at: Option<Timestamp>,
    /// See [`NewCallback::expires_at`] (millisecond precision).
    pub expires_at: Timestamp,
    /// See [`NewCallback::inbound_call_id`].
    pub inbound_call_id: String,
    /// The queue the callback was registered in, if it has since been moved
    /// to its failover queue (`queue`); a callback fails over at most once.
    pub moved_from: Option<QueueId>,
    /// When the customer was first dialed (the customer leg's first INVITE
    /// of the first attempt that reached it), once an attempt that did so
    /// is recorded.
    pub customer_dialed_at: Option<Timestamp>,
    /// The caller ID this callback asked to present to the customer (plain
    /// digits; set through the API): only agents allowed to present it take
    /// it. `None`: the queue's callback number, or the taking agent's own
    /// when it is restricted to others.
    pub caller_id: Option<String>,
    /// Where the callback came from.
    pub source: Source,
    /// The missed-call rule id of an automatic task (`None` for others).
    pub rule: Option<String>,
    /// An automatic task's settings snapshot (JSON text, opaque to the
    /// store: written and read back verbatim); replaced by
    /// [`NextStep::Retry`] with a `task`.
    pub task: Option<String>,
    /// Why the callback was cancelled or not started (`customer_registered`,
    /// `customer_reached`, `rule_disabled`, …: `[a-z_]`, given by the
    /// caller); `None` otherwise.
    pub closed_reason: Option<String>,
}

/// An automatic callback task of a missed-call rule, as the controller
/// creates it ([`LaunchStore::create_task`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// The callback: queue, number, called number (the DID), priority,
    /// `queued_at`, `registered_at` (when the call was missed), expiry,
    /// the missed call's Call-ID, …
    pub callback: NewCallback,
    /// The missed-call rule's id.
    pub rule: String,
    /// The task's settings snapshot (JSON text), stored verbatim.
    pub task: String,
    /// When the first attempt is due; `None`: no call is started, the row
    /// is stored failed with `reason`.
    pub first_attempt_at: Option<Timestamp>,
    /// The `closed_reason` of a task not started (`first_attempt_at` is
    /// `None`); `[a-z_]`.
    pub reason: Option<String>,
}

/// Which pending automatic tasks [`LaunchStore::cancel_tasks`] cancels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFilter {
    /// Those calling this number (plain digits).
    Number(String),
    /// Those of this missed-call rule.
    Rule(String),
    /// Those in this queue.
    Queue(QueueId),
    /// This one.
    Id(CallbackId),
    /// Every one.
    All,
}

/// Outcome of [`Store::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// A new callback was durably committed with this id (pending; or
    /// failed, for an automatic task that was not started).
    Registered(CallbackId),
    /// A pending or dialing callback for the same number in the same queue
    /// (for [`LaunchStore::create_task`]: in any queue) already exists
    /// (this id); nothing was written.
    AlreadyScheduled(CallbackId),
}

/// One attempt to reach the customer, as [`LaunchStore::record_attempt`]
/// stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When the attempt began (the agent's INVITE).
    pub started_at: Timestamp,
    /// When it ended.
    pub ended_at: Timestamp,
    /// How it ended ([`scheduler::classify`](crate::callback::scheduler::classify)).
    pub outcome: Outcome,
    /// The final SIP status of the leg that decided the outcome, if any.
    pub sip_status: Option<u16>,
    /// The agent rung for it, if one was.
    pub agent: Option<String>,
    /// When the customer leg's first INVITE of this attempt was sent
    /// (`None`: the customer was not dialed). The first one recorded for a
    /// callback sets [`CallbackRow::customer_dialed_at`] and its ECBT error.
    pub customer_dialed_at: Option<Timestamp>,
}

/// A stored attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// Row id.
    pub id: i64,
    /// The callback.
    pub callback: CallbackId,
    /// The queue the callback was in when the attempt was made.
    pub queue: QueueId,
    /// The attempt (an interrupted one has outcome
    /// [`Outcome::Interrupted`], no status, no agent).
    pub attempt: Attempt,
}

/// What becomes of a callback after an attempt: the status transition
/// [`LaunchStore::record_attempt`] writes in the attempt's transaction
/// (decided by [`Scheduler::after_attempt`](crate::callback::scheduler::Scheduler::after_attempt)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// The customer was reached: completed.
    Completed,
    /// Pending again, due at `at`.
    Retry {
        /// The new `next_attempt_at`.
        at: Timestamp,
        /// An automatic task's settings snapshot for the next attempt,
        /// replacing [`CallbackRow::task`]; `None` keeps it.
        task: Option<String>,
    },
    /// No more attempts: failed.
    Failed,
    /// Past `expires_at`: expired.
    Expired,
    /// Moved to its failover queue: pending there from `at`, with a fresh
    /// attempt count and the queue's priority; `queued_at` is kept and
    /// `moved_from` records the old queue.
    Failover {
        /// The failover queue.
        queue: QueueId,
        /// The failover queue's priority.
        priority: i32,
        /// The new `next_attempt_at`.
        at: Timestamp,
    },
}

/// Result of [`LaunchStore::record_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The attempt was stored and the callback now has this status.
    Applied(Status),
    /// The failover queue already holds an active callback for the same
    /// number (that id): this one was marked failed instead of moved, since
    /// the customer will be called by the other.
    FailoverDuplicate {
        /// The active callback in the failover queue.
        existing: CallbackId,
    },
}

/// Errors of the callback store. All are local faults (no peer input reaches
/// the store unvalidated): the environment (file, disk, SQLite), the file's
/// contents (schema version, corrupt rows), or a caller bug (bad number).
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database file could not be opened or its connection configured.
    #[error("cannot open callback store {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite did not accept a durability setting the store relies on.
    #[error(
        "callback store {}: PRAGMA {pragma} is {got:?}, need {expected}",
        path.display()
    )]
    Pragma {
        /// The database file.
        path: PathBuf,
        /// The pragma (`journal_mode`, `synchronous`, `foreign_keys`).
        pragma: &'static str,
        /// The value required.
        expected: &'static str,
        /// The value SQLite reported.
        got: String,
    },
    /// Applying a schema migration failed; the file keeps its old version.
    #[error(
        "cannot migrate callback store {} to schema version {version}: {source}",
        path.display()
    )]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The schema version being applied.
        version: u32,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// The file's schema version is not one this build knows (newer callbackd).
    #[error(
        "callback store {} has schema version {found}, this build knows versions 0..={known}",
        path.display()
    )]
    UnknownSchemaVersion {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this build can apply.
        known: u32,
    },
    /// A query or transaction failed (I/O error, disk full, lock timeout…);
    /// for `register`, nothing was written.
    #[error("callback store {}: {op} failed: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The store operation (`register`, `claim`, `record_attempt`, …:
        /// the method name).
        op: &'static str,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored row holds a value this build cannot decode.
    #[error("callback store row {id}: column {column} holds {value:?}, which is not valid")]
    CorruptRow {
        /// Row id.
        id: i64,
        /// The column that failed to decode (`table.column` outside the
        /// callbacks table).
        column: &'static str,
        /// The stored value, as text.
        value: String,
    },
    /// An attempt was recorded for a callback that is not dialing (a caller
    /// bug: only a claimed callback has an attempt to record).
    #[error("callback {id} is not dialing (status {found:?}); attempt not recorded")]
    NotDialing {
        /// The callback.
        id: CallbackId,
        /// Its status; `None` if there is no such callback.
        found: Option<Status>,
    },
    /// The caller passed a number that is not plain digits (a caller bug:
    /// numbers are validated before they reach the store).
    #[error("callback number {number:?} is not plain digits")]
    NumberNotDigits {
        /// The rejected number.
        number: String,
    },
    /// The caller passed a closed reason that is not `[a-z_]+` (a caller
    /// bug: reasons are fixed words of the caller's).
    #[error("closed reason {reason:?} is not lower-case letters and underscores")]
    InvalidReason {
        /// The rejected reason.
        reason: String,
    },
}

/// The durable store of callbacks, as the IVR sees it. The launcher's
/// methods are in [`LaunchStore`].
pub trait Store: Send {
    /// One transaction: first the pending automatic tasks (missed-call
    /// source) calling `new.number`, in any queue, are cancelled with reason
    /// `customer_registered` (the customer asked for a callback: one call,
    /// not two). Then, if a pending or dialing callback exists for
    /// `(new.queue, new.number)` → [`Registration::AlreadyScheduled`] and
    /// nothing is written (the tasks stay cancelled); else the row is
    /// inserted with status pending and source IVR and committed durably →
    /// [`Registration::Registered`]. An error means nothing was written.
    fn register(&mut self, new: &NewCallback) -> Result<Registration, StoreError>;

    /// Every stored callback, oldest id first.
    fn list(&self) -> Result<Vec<CallbackRow>, StoreError>;

    /// Pending callbacks in `queue` whose place in line (`queued_at`) is
    /// strictly earlier than `queued_at` (millisecond precision).
    fn pending_ahead(&self, queue: &QueueId, queued_at: Timestamp) -> Result<u32, StoreError>;
}

/// The store as the launcher sees it (issue 4): claiming due callbacks,
/// recording attempts with their status transition, start-up recovery, and
/// call detail records. A sub-trait so the IVR's view ([`Store`]) stays as
/// narrow as it was, and the engine can hold one `Box<dyn LaunchStore>` for
/// both.
///
/// Every method is one transaction (or one statement): a status change is
/// never half-written. Times are wall-clock instants from the caller.
pub trait LaunchStore: Store {
    /// Pending callbacks due at `now` (`next_attempt_at` unset or `<= now`)
    /// and not expired (`expires_at > now`), highest priority first, then
    /// earliest `queued_at`, then id.
    fn due(&self, now: Timestamp) -> Result<Vec<CallbackRow>, StoreError>;

    /// Moves callback `id` from pending to dialing if — at this instant, in
    /// one statement — it is still pending, due and not expired; `true` if
    /// this call claimed it. At most one of any number of racing claimers
    /// (threads, processes) gets `true`, so a callback is never dialed twice
    /// at once. The claim is durable before this returns.
    fn claim(&mut self, id: CallbackId, now: Timestamp) -> Result<bool, StoreError>;

    /// Stores the attempt of a dialing callback and applies `next` in the
    /// same transaction. The callback's `attempts` grows by one when the
    /// outcome is a customer attempt ([`Outcome::is_customer_attempt`]);
    /// a failover resets it. [`NextStep::Completed`] also cancels the
    /// pending automatic tasks calling the same number (reason
    /// `customer_reached`). Fails with [`StoreError::NotDialing`] (nothing
    /// written) if the callback is not dialing.
    fn record_attempt(
        &mut self,
        id: CallbackId,
        attempt: &Attempt,
        next: &NextStep,
    ) -> Result<Recorded, StoreError>;

    /// Agent and customer of dialing callback `id` were bridged at `at`
    /// (by `agent`): nothing changes but the `callback.connected` event,
    /// written in its own transaction.
    fn record_connected(
        &mut self,
        id: CallbackId,
        at: Timestamp,
        agent: Option<&str>,
    ) -> Result<(), StoreError>;

    /// One transaction: if an active (pending or dialing) callback of any
    /// source in any queue exists for the task's number →
    /// [`Registration::AlreadyScheduled`] and nothing is written (the
    /// customer will be called anyway). Else the task is inserted with
    /// source missed-call, its rule and settings snapshot: pending, due at
    /// `first_attempt_at`; or, when that is `None`, failed with
    /// `closed_reason = reason` (no duplicate check: nothing is dialed).
    /// Its events are written with it (registered; scheduled, or failed).
    fn create_task(&mut self, task: &NewTask) -> Result<Registration, StoreError>;

    /// Every **pending** automatic task matching `which` → cancelled, with
    /// `closed_reason = reason` and no next attempt, each with its
    /// `callback.cancelled` event (at `now`); returns their ids
    /// (ascending). A dialing task is left alone (its call finishes); other
    /// sources are never touched.
    fn cancel_tasks(
        &mut self,
        which: &TaskFilter,
        reason: &str,
        now: Timestamp,
    ) -> Result<Vec<CallbackId>, StoreError>;

    /// Marks every pending callback with `expires_at <= now` expired and
    /// returns their ids (ascending).
    fn expire(&mut self, now: Timestamp) -> Result<Vec<CallbackId>, StoreError>;

    /// Claims from now on are made as `node`, held for `lease` past the
    /// claim or the last [`LaunchStore::renew_claims`].
    fn set_claimant(&mut self, node: &str, lease: Duration);

    /// Extends the lease of every callback this node is dialing to
    /// `now + lease`; returns how many.
    fn renew_claims(&mut self, now: Timestamp) -> Result<usize, StoreError>;

    /// Dialing callbacks whose call died become pending again, due at
    /// `now + longest_ring` (the old leg may still be ringing, issue 4
    /// point 8), with an attempt recorded as [`Outcome::Interrupted`]
    /// (started when it was claimed, ended `now`, not counted in
    /// `attempts`): those whose lease ran out (their node stopped
    /// renewing), and with [`Recovery::AtStart`] also this node's own (its
    /// previous process died). Returns their ids (ascending).
    fn recover_interrupted(
        &mut self,
        now: Timestamp,
        longest_ring: Duration,
        scope: Recovery,
    ) -> Result<Vec<CallbackId>, StoreError>;

    /// The attempts of callback `id`, oldest first.
    fn attempts(&self, id: CallbackId) -> Result<Vec<AttemptRow>, StoreError>;

    /// Stores one call detail record.
    fn write_cdr(&mut self, record: &CdrRecord) -> Result<(), StoreError>;

    /// Stores several call detail records, in order: the store thread's
    /// group commit of the CDRs queued at once (one transaction, one disk
    /// flush, instead of one each). One that cannot be written loses none
    /// of the others; the errors come back, each with its record's index.
    /// By default one [`write_cdr`](Self::write_cdr) each.
    fn write_cdrs(&mut self, records: &[CdrRecord]) -> Vec<(usize, StoreError)> {
        records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.write_cdr(r).err().map(|e| (i, e)))
            .collect()
    }

    /// Call detail records whose leg started in `[since, until)` (either
    /// bound optional), oldest first.
    fn cdrs(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Vec<CdrRecord>, StoreError>;
}

/// Which interrupted claims [`LaunchStore::recover_interrupted`] takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// At start-up, before anything is launched: this node's claims (its
    /// previous process is gone) and any whose lease ran out.
    AtStart,
    /// While running: only claims whose lease ran out (another node died).
    Expired,
}

/// How long a claim holds without renewal unless set otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How long a statement waits for another connection's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A plain-text table of `rows` for `callbackd callbacks list`: id, queue,
/// number (plain digits), ANI, status, attempts, queued_at, registered_at
/// (RFC 3339 UTC, seconds) and the ECBT quoted in minutes.
pub fn format_list(rows: &[CallbackRow]) -> String {
    const HEADERS: [&str; 9] = [
        "ID",
        "QUEUE",
        "NUMBER",
        "ANI",
        "STATUS",
        "ATTEMPTS",
        "QUEUED_AT",
        "REGISTERED_AT",
        "ECBT_MIN",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.queue.to_string(),
                r.number.clone(),
                r.caller_ani.clone(),
                r.status.to_string(),
                r.attempts.to_string(),
                utc_seconds(r.queued_at),
                utc_seconds(r.registered_at),
                r.ecbt_quoted_minutes.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_line = |line: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (i, (cell, w)) in line.zip(widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let _ = write!(out, "{cell:<w$}");
        }
        let trimmed = out[start..].trim_end().len();
        out.truncate(start + trimmed);
        out.push('\n');
    };
    push_line(&mut HEADERS.into_iter());
    for row in &cells {
        push_line(&mut row.iter().map(String::as_str));
    }
    out
}

fn utc_seconds(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::store::test_support::*;

    #[test]
    fn status_text_round_trips() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("Pending"), None);
        assert_eq!(Status::parse(""), None);
        let active: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [Status::Pending, Status::Dialing]);
    }

    #[test]
    fn format_list_prints_plain_digits_in_aligned_columns() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        store
            .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
            .unwrap();
        store
            .register(&new_cb("billing", "01144207946000", "2025-06-02T15:01:00Z"))
            .unwrap();
        let text = format_list(&store.list().unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("ID  QUEUE    NUMBER          ANI"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("1   support  3125550188      +13125550100  pending  0"),
            "{text}"
        );
        assert!(
            lines[1].contains("2025-06-02T15:00:00Z  2025-06-02T15:04:05Z  12"),
            "{text}"
        );
        assert!(lines[2].contains("01144207946000"), "{text}");
        assert!(text.lines().all(|l| l == l.trim_end()));
        assert_eq!(format_list(&[]).lines().count(), 1);
    }
}
