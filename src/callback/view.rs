//! How a stored callback is shown outside: the JSON object of the
//! `/v1/callbacks` API, which the webhooks' payloads carry too (so a
//! receiver parses one shape). Defined here, below the API, because the
//! store writes webhook payloads in the transaction of the change.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::callback::store::{CallbackRow, ManagedRow};

/// One callback as the API shows it. Times are RFC 3339 UTC. Its schema
/// (`Callback`) is part of the API's OpenAPI document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Callback)]
pub struct CallbackBody {
    /// Row id.
    pub id: i64,
    /// Queue id.
    pub queue: String,
    /// The number to call, plain digits as keyed.
    pub number: String,
    /// The caller's ANI as received (empty for the API's).
    pub caller_ani: String,
    /// The number the caller dialed (empty for the API's).
    pub called_number: String,
    /// Priority in its queue.
    pub priority: i32,
    /// `pending`, `dialing`, `completed`, `failed`, `expired`, `cancelled`.
    pub status: &'static str,
    /// Outbound attempts so far.
    pub attempts: u32,
    /// The place in line (a scheduled callback's: its time).
    pub queued_at: String,
    /// When the callback was committed.
    pub registered_at: String,
    /// The estimate announced, in whole minutes (0 for the API's).
    pub ecbt_quoted_minutes: u32,
    /// When the next attempt is due, if set.
    pub next_attempt_at: Option<String>,
    /// No attempt after this (`not_after` for the API's).
    pub expires_at: String,
    /// Call-ID of the call that registered it (empty for the API's).
    pub inbound_call_id: String,
    /// Not launched before this, if it was scheduled.
    pub scheduled_for: Option<String>,
    /// The user who created it through the API.
    pub created_by: Option<String>,
    /// Its free key/value data.
    pub data: Option<Value>,
    /// When the customer was first dialed (the customer leg's first
    /// INVITE), once an attempt that dialed it is recorded.
    pub customer_dialed_at: Option<String>,
    /// How far the announced ECBT was off, in whole seconds (rounded):
    /// `customer_dialed_at − registered_at − ecbt_quoted_minutes × 60`;
    /// positive when the customer was called later than announced. `null`
    /// when no ECBT was announced (0 quoted) or not dialed yet.
    pub ecbt_error_s: Option<i64>,
    /// The caller ID the callback asked to present (plain digits); `null`:
    /// the queue's callback number (or the taking agent's own, when it is
    /// restricted to others).
    pub caller_id: Option<String>,
    /// Where it came from: `ivr` (a caller registered it), `api` (created
    /// through the API) or `missed_call` (an automatic task of a
    /// missed-call rule).
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub source: &'static str,
    /// The missed-call rule that made it (`missed_call` only).
    pub rule: Option<String>,
    /// An automatic task's settings as its next attempt was scheduled
    /// (rule, attempt, the customer's zones, caller ID, ring time, agent
    /// prompt, recording, success time, the agent it waits for).
    pub task: Option<Value>,
    /// Why it closed without completing, when the engine knows (e.g.
    /// `customer_registered`, `customer_reached`, `rule_disabled`,
    /// `unknown_time_zone`).
    pub closed_reason: Option<String>,
}

impl From<CallbackRow> for CallbackBody {
    fn from(r: CallbackRow) -> CallbackBody {
        CallbackBody {
            id: r.id.0,
            queue: r.queue.as_str().to_owned(),
            number: r.number,
            caller_ani: r.caller_ani,
            called_number: r.called_number,
            priority: r.priority,
            status: r.status.as_str(),
            attempts: r.attempts,
            queued_at: r.queued_at.to_string(),
            registered_at: r.registered_at.to_string(),
            ecbt_quoted_minutes: r.ecbt_quoted_minutes,
            next_attempt_at: r.next_attempt_at.map(|t| t.to_string()),
            expires_at: r.expires_at.to_string(),
            inbound_call_id: r.inbound_call_id,
            scheduled_for: None,
            created_by: None,
            data: None,
            customer_dialed_at: r.customer_dialed_at.map(|t| t.to_string()),
            ecbt_error_s: None,
            caller_id: r.caller_id,
            source: r.source.as_str(),
            rule: r.rule,
            task: r
                .task
                .map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text))),
            closed_reason: r.closed_reason,
        }
    }
}

impl From<ManagedRow> for CallbackBody {
    fn from(m: ManagedRow) -> CallbackBody {
        CallbackBody {
            scheduled_for: m.scheduled_for.map(|t| t.to_string()),
            created_by: m.created_by,
            // Milliseconds to the nearest second, halves away from zero.
            ecbt_error_s: m.ecbt_error_ms.map(|ms| (ms + ms.signum() * 500) / 1000),
            // Stored only after validation as an object; a row written
            // otherwise shows its text.
            data: m
                .data
                .map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text))),
            ..CallbackBody::from(m.row)
        }
    }
}
