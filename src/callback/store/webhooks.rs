//! The store as the webhooks see it (issue 11 point 5): subscriptions, the
//! outbox of events and the delivery log.
//!
//! Events are not written through this trait: every status change of a
//! callback writes its event (and one pending delivery per enabled
//! subscription that asked for that type) in its own transaction, in
//! [`SqliteStore`](super::SqliteStore)'s `register`, `claim`,
//! `record_attempt`, `record_connected`, `expire`, `recover_interrupted`,
//! `create`, `patch`, `cancel` and `cancel_by_number`. A crash after the
//! commit loses nothing (the worker finds the delivery pending at start);
//! a rolled-back change announces nothing. An event no subscription wants
//! is not stored.
//!
//! The worker reads the *heads* (per enabled subscription, its oldest
//! pending delivery), tries the due ones and records each try.

use jiff::Timestamp;

use super::StoreError;
use crate::callback::CallbackId;
use crate::callback::webhook::{EventKind, Head, Step};

/// A subscription to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// Where events are posted (`http://` or `https://`, checked by the caller).
    pub url: String,
    /// The event types it receives (at least one).
    pub events: Vec<EventKind>,
    /// The HMAC key.
    pub secret: String,
    /// Whether it receives events now.
    pub enabled: bool,
    /// Free text.
    pub description: String,
    /// The user who created it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

/// A stored subscription (its secret is never read back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Row id.
    pub id: i64,
    /// See [`NewWebhook::url`].
    pub url: String,
    /// See [`NewWebhook::events`].
    pub events: Vec<EventKind>,
    /// See [`NewWebhook::enabled`].
    pub enabled: bool,
    /// See [`NewWebhook::description`].
    pub description: String,
    /// See [`NewWebhook::created_by`].
    pub created_by: String,
    /// See [`NewWebhook::created_at`] (millisecond precision).
    pub created_at: Timestamp,
}

/// A change to a subscription; `None` fields are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookPatch {
    /// New URL.
    pub url: Option<String>,
    /// New event types.
    pub events: Option<Vec<EventKind>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New description.
    pub description: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not yet delivered; tried again at `next_try_at`.
    Pending,
    /// A try got a 2xx.
    Delivered,
    /// Given up after the retry window.
    Failed,
}

impl DeliveryState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One event for one subscription: a row of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id (the log's cursor).
    pub id: i64,
    /// The subscription.
    pub webhook: i64,
    /// The event id receivers see.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// The callback it is about.
    pub callback: CallbackId,
    /// When the event happened.
    pub occurred_at: Timestamp,
    /// Where it stands.
    pub state: DeliveryState,
    /// Tries made.
    pub tries: u32,
    /// The first try, if any.
    pub first_try_at: Option<Timestamp>,
    /// The last try, if any.
    pub last_try_at: Option<Timestamp>,
    /// The next try while pending (`None`: at once).
    pub next_try_at: Option<Timestamp>,
    /// The last try's HTTP status, if it got one.
    pub last_status: Option<u16>,
    /// Why the last try got no 2xx, if it did not.
    pub last_error: Option<String>,
}

/// A delivery ready to be posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The delivery row.
    pub delivery: i64,
    /// The subscription's URL.
    pub url: String,
    /// Its HMAC key.
    pub secret: String,
    /// The event id.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// The JSON body, as stored.
    pub payload: String,
    /// Tries made so far.
    pub tries: u32,
    /// The first try, if any.
    pub first_try_at: Option<Timestamp>,
}

/// One try of a delivery, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryRecord {
    /// When it was made.
    pub at: Timestamp,
    /// The HTTP status, if one came back.
    pub status: Option<u16>,
    /// Why it failed without a 2xx (error text, or the status line).
    pub error: Option<String>,
    /// What follows ([`RetryPolicy::after_try`](crate::callback::webhook::RetryPolicy::after_try)).
    pub step: Step,
}

/// The webhooks' view of the store; every method is one transaction.
pub trait WebhookStore {
    /// Stores a subscription; it receives the events committed from now on.
    fn create_webhook(&mut self, new: &NewWebhook) -> Result<Webhook, StoreError>;

    /// Every subscription, in id order.
    fn webhooks(&self) -> Result<Vec<Webhook>, StoreError>;

    /// Subscription `id`, if stored.
    fn webhook(&self, id: i64) -> Result<Option<Webhook>, StoreError>;

    /// Applies `patch`; the subscription before and after, or `None` if
    /// there is no such subscription.
    fn patch_webhook(
        &mut self,
        id: i64,
        patch: &WebhookPatch,
    ) -> Result<Option<(Webhook, Webhook)>, StoreError>;

    /// Deletes subscription `id` with its deliveries; what it was, or
    /// `None` if there is no such subscription.
    fn delete_webhook(&mut self, id: i64) -> Result<Option<Webhook>, StoreError>;

    /// The delivery log of subscription `webhook`: rows after `after_id`,
    /// oldest first, at most `limit`.
    fn deliveries(
        &self,
        webhook: i64,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Per enabled subscription, its oldest pending delivery.
    fn webhook_heads(&self) -> Result<Vec<Head>, StoreError>;

    /// Delivery `id` with what posting it needs, if it is still pending.
    fn outgoing(&self, id: i64) -> Result<Option<Outgoing>, StoreError>;

    /// Records a try of delivery `id` and its next step.
    fn record_try(&mut self, id: i64, record: &TryRecord) -> Result<(), StoreError>;
}
