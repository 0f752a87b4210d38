//! The store as the `/v1/callbacks` API sees it (issue 11 point 3):
//! create a callback (maybe scheduled, with data), read one or a filtered
//! page, cancel by id or by number, change a pending one, count what a
//! number was given, and keep the answers of `Idempotency-Key` requests.
//!
//! A sub-trait of [`Store`] so the IVR's and the launcher's views stay as
//! narrow as they were; a PostgreSQL store implements it beside them and
//! runs the same cases ([`manage_store_suite!`](crate::manage_store_suite)).
//!
//! A scheduled callback is an ordinary pending row whose `next_attempt_at`
//! (the launcher's "not before") and `queued_at` (its place in line) are its
//! `scheduled_for`: the launcher needs nothing new to launch it at its time,
//! agent first, within hours, with its priority. Its window end is
//! `expires_at`.

use jiff::Timestamp;

use super::{CallbackRow, NewCallback, Registration, Source, Status, Store, StoreError};
use crate::callback::cdr::CdrRecord;
use crate::callback::{CallbackId, QueueId};

/// What the API adds to a [`NewCallback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creation {
    /// Not launched before this instant (`None`: due at once).
    pub scheduled_for: Option<Timestamp>,
    /// The user who created it.
    pub created_by: String,
    /// Free key/value data: a JSON object's text, validated by the caller.
    pub data: Option<String>,
    /// The caller ID to present to the customer (plain digits, one of the
    /// organisation's callback numbers, validated by the caller); `None`:
    /// the queue's ([`CallbackRow::caller_id`]).
    pub caller_id: Option<String>,
}

/// A stored callback with what the API keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedRow {
    /// The callback.
    pub row: CallbackRow,
    /// See [`Creation::scheduled_for`] (millisecond precision).
    pub scheduled_for: Option<Timestamp>,
    /// The user who created it through the API; `None` for the IVR's.
    pub created_by: Option<String>,
    /// See [`Creation::data`].
    pub data: Option<String>,
    /// The ECBT error stored at the first dial of the customer, in
    /// milliseconds: [`CallbackRow::customer_dialed_at`] minus
    /// `registered_at` minus the announced ECBT (positive: later than
    /// announced); `None` when no ECBT was announced or not dialed yet.
    pub ecbt_error_ms: Option<i64>,
}

/// A filtered page of callbacks ([`ManageStore::query`]), in id order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallbackQuery {
    /// Only these queues (`None`: every queue; empty: none).
    pub queues: Option<Vec<QueueId>>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this number (plain digits).
    pub number: Option<String>,
    /// Only callbacks from this source (the API's `?type=`).
    pub source: Option<Source>,
    /// Registered at or after.
    pub from: Option<Timestamp>,
    /// Registered before.
    pub to: Option<Timestamp>,
    /// Only ids after this one (the cursor).
    pub after_id: Option<i64>,
    /// At most this many rows.
    pub limit: u32,
}

/// A change to a pending callback ([`ManageStore::patch`]); `None` fields
/// are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallbackPatch {
    /// New launch time: `scheduled_for`, `next_attempt_at` and `queued_at`
    /// all move to it.
    pub scheduled_for: Option<Timestamp>,
    /// New number (plain digits, validated by the caller).
    pub number: Option<String>,
    /// New priority.
    pub priority: Option<i32>,
    /// New caller ID (plain digits, validated by the caller);
    /// `Some(None)` clears it (the queue's number again).
    pub caller_id: Option<Option<String>>,
}

/// What became of a cancel or a patch of one callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Applied: the row before and after, in one transaction.
    Done {
        /// Before the change.
        before: Box<ManagedRow>,
        /// After it.
        after: Box<ManagedRow>,
    },
    /// No such callback.
    NotFound,
    /// Not pending (this status): nothing written.
    NotPending(Status),
    /// The new number already has an active callback in the queue (this
    /// id): nothing written.
    Duplicate(CallbackId),
}

/// The answer kept for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// SHA-256 of the request the key was first used with.
    pub request_sha256: [u8; 32],
    /// The HTTP status given.
    pub status: u16,
    /// The JSON body given.
    pub body: String,
    /// The `Location` given, if any.
    pub location: Option<String>,
    /// When it was given.
    pub created_at: Timestamp,
}

/// The store as the callbacks API sees it; every method is one transaction.
pub trait ManageStore: Store {
    /// As [`Store::register`] (one active callback per queue and number;
    /// the number's pending automatic tasks are cancelled first, here with
    /// reason `callback_created`), with the API's additions and source API.
    /// A scheduled callback's `next_attempt_at` is its `scheduled_for`.
    fn create(&mut self, new: &NewCallback, extra: &Creation) -> Result<Registration, StoreError>;

    /// Callback `id`, if stored.
    fn get(&self, id: CallbackId) -> Result<Option<ManagedRow>, StoreError>;

    /// The callbacks matching `query`, ascending id, at most `query.limit`.
    fn query(&self, query: &CallbackQuery) -> Result<Vec<ManagedRow>, StoreError>;

    /// Pending callback `id` → cancelled.
    fn cancel(&mut self, id: CallbackId) -> Result<Changed, StoreError>;

    /// Every pending callback for `number` in one of `queues` → cancelled;
    /// gives them as they are now, ascending id.
    fn cancel_by_number(
        &mut self,
        number: &str,
        queues: &[QueueId],
    ) -> Result<Vec<ManagedRow>, StoreError>;

    /// Applies `patch` to pending callback `id`.
    fn patch(&mut self, id: CallbackId, patch: &CallbackPatch) -> Result<Changed, StoreError>;

    /// Callbacks created through the API for `number` registered at or
    /// after `since`, oldest first (their registration times).
    fn created_since(&self, number: &str, since: Timestamp) -> Result<Vec<Timestamp>, StoreError>;

    /// The call detail records of callback `id`'s legs, oldest first.
    fn cdrs_of(&self, id: CallbackId) -> Result<Vec<CdrRecord>, StoreError>;

    /// The reply kept for `(actor, key)`, if any.
    fn idempotent_reply(&self, actor: &str, key: &str) -> Result<Option<StoredReply>, StoreError>;

    /// Keeps `reply` for `(actor, key)` (a key already kept is left as it
    /// was) and forgets the replies created before `forget_before`.
    fn keep_reply(
        &mut self,
        actor: &str,
        key: &str,
        reply: &StoredReply,
        forget_before: Timestamp,
    ) -> Result<(), StoreError>;
}
