//! The callbacks resource, `/v1/callbacks` (issue 11 point 3): create
//! (maybe scheduled), list with filters and a cursor, read one with its
//! attempts and call legs, change a pending one, cancel by id or by number,
//! and the status of a number for IVRs, web pages and SMS bots. See the
//! table in [`crate::api`].
//!
//! Numbers are validated as the IVR validates what a caller keys
//! ([`crate::domain::number::validate`] with the organisation's policy):
//! NANP ten digits or `011` + E.164, the blacklist, international allowed
//! and priced. A scheduled callback is stored with `next_attempt_at` and
//! `queued_at` at its `scheduled_for` (see [`crate::callback::store::manage`]):
//! the launcher dials it at its time, agent first, within hours, with its
//! priority, and never after `not_after` (it is then expired).
//!
//! `Idempotency-Key` (1–255 visible ASCII characters) on `POST
//! /v1/callbacks`: the first answer (201, or 409 for a duplicate) is kept
//! per user and key for [`IDEMPOTENCY_HORIZON`]; the same key with the same
//! request gets that answer again (with `Idempotent-Replayed: true`), with
//! another request 422 `idempotency_key_reused`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::{LOCATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64ct::{Base64UrlUnpadded, Encoding};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::callback::cdr::CdrRecord;
use crate::callback::store::{
    AttemptRow, CallbackPatch, CallbackQuery, Changed, Creation, LaunchStore, ManageStore,
    ManagedRow, NewCallback, Principal, Registration, Role, Source, Status, Store, StoredReply,
};
use crate::callback::{CallbackId, QueueId};
use crate::config::CallerIdRefused;
use crate::domain::number::{self, InvalidNumber};
use crate::ivr::Ecbt;

use super::{ApiState, ErrorBody, Problem, Segment, json_object, query_of};
pub use crate::callback::view::CallbackBody;

/// How far ahead `scheduled_for` may be.
pub const MAX_SCHEDULE_AHEAD: SignedDuration = SignedDuration::from_hours(30 * 24);

/// How far in the past `scheduled_for` may be (clocks differ a little);
/// it is then due at once.
pub const SCHEDULE_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// How long an `Idempotency-Key`'s answer is kept.
pub const IDEMPOTENCY_HORIZON: SignedDuration = SignedDuration::from_hours(24);

/// The window of `[callbacks] api_max_per_number_per_day`.
pub const CAP_WINDOW: SignedDuration = SignedDuration::from_hours(24);

/// Most keys in `data`.
pub const MAX_DATA_KEYS: usize = 20;

/// Longest key and longest value (characters) in `data`.
pub const MAX_DATA_KEY: usize = 64;
/// See [`MAX_DATA_KEY`].
pub const MAX_DATA_VALUE: usize = 256;

/// Page size of `GET /v1/callbacks` without `limit`.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page of `GET /v1/callbacks`.
pub const MAX_PAGE: u32 = 1000;

/// `POST /v1/callbacks` body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CallbackCreate, example = json!({"queue": "support", "number": "3125550188", "priority": 2, "data": {"order": "A-17"}}))]
struct CreateBody {
    /// A configured queue of the caller's units.
    #[schema(example = "support")]
    queue: String,
    /// The number to call: NANP ten digits, or `011` and an E.164 number.
    #[schema(example = "3125550188")]
    number: String,
    /// RFC 3339; not launched before (at most 30 days ahead).
    #[schema(format = DateTime)]
    scheduled_for: Option<String>,
    /// RFC 3339; no attempt after (default: the queue's expiry).
    #[schema(format = DateTime)]
    not_after: Option<String>,
    /// -1000..=1000 (default: the queue's).
    priority: Option<i32>,
    /// Free key/value data: at most 20 keys of 1..=64 characters, values
    /// strings, numbers, booleans or null of at most 256 characters.
    data: Option<serde_json::Map<String, Value>>,
    /// The number the customer sees: one of the organisation's callback
    /// numbers that an agent of the queue may present (default: the
    /// queue's).
    caller_id: Option<String>,
}

/// `PATCH /v1/callbacks/{id}` body: at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CallbackChange)]
struct PatchBody {
    /// RFC 3339, at most 30 days ahead and before the window end.
    #[schema(format = DateTime)]
    scheduled_for: Option<String>,
    /// Another number to call.
    number: Option<String>,
    /// -1000..=1000.
    priority: Option<i32>,
    /// Absent: kept; `null`: cleared (the queue's number); a string: set.
    #[serde(default, deserialize_with = "present")]
    caller_id: Option<Option<String>>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /v1/callbacks/cancel` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CancelByNumber)]
struct CancelBody {
    /// 1..=20 plain digits.
    #[schema(example = "3125550188")]
    number: String,
    /// Only this queue (default: every queue of the caller's units).
    #[schema(example = "support")]
    queue: Option<String>,
}

/// `GET /v1/callbacks` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// `pending`, `dialing`, `completed`, `failed`, `expired` or `cancelled`.
    status: Option<String>,
    /// A queue id.
    queue: Option<String>,
    /// The number, as stored.
    number: Option<String>,
    /// `ivr`, `api` or `missed_call` (automatic tasks of missed-call rules).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    source: Option<String>,
    /// RFC 3339: registered at or after.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339: registered before.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /v1/callbacks/status` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatusQuery {
    /// 1..=20 plain digits.
    #[param(example = "3125550188")]
    number: String,
}

/// `GET /v1/callbacks` body: one page, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CallbackPage)]
pub struct CallbackPage {
    /// The callbacks of this page.
    pub callbacks: Vec<CallbackBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /v1/callbacks/{id}` body: the callback, its attempts and its call
/// legs.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CallbackDetail)]
pub struct CallbackDetail {
    /// The callback.
    #[serde(flatten)]
    pub callback: CallbackBody,
    /// Its attempts, oldest first.
    pub attempt_log: Vec<AttemptBody>,
    /// Its CDR rows.
    pub legs: Vec<LegBody>,
}

/// `POST /v1/callbacks/cancel` body.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Cancelled)]
pub struct CancelledBody {
    /// The callbacks cancelled (maybe none).
    pub cancelled: Vec<CallbackBody>,
}

/// `GET /v1/callbacks/status` body.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NumberStatus)]
pub struct NumberStatusBody {
    /// The number asked about.
    pub number: String,
    /// Its active callbacks, else its latest one.
    pub callbacks: Vec<NumberStatus>,
}

/// Highest and lowest priority the API accepts.
const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

fn unprocessable(code: &'static str, message: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn conflict(code: &'static str, message: impl Into<String>) -> Problem {
    Problem::new(StatusCode::CONFLICT, code, message)
}

/// `field`'s RFC 3339 time (422 naming it).
fn time_field(field: &str, text: &str) -> Result<Timestamp, Problem> {
    text.parse::<Timestamp>().map_err(|e| {
        unprocessable(
            "invalid_time",
            format!("{field}: {text:?} is not an RFC 3339 time: {e}"),
        )
    })
}

/// `field`'s time in a query (400 naming it).
fn query_time(field: &str, text: &str) -> Result<Timestamp, Problem> {
    text.parse::<Timestamp>().map_err(|e| {
        Problem::bad_request(
            "invalid_query",
            format!("{field}: {text:?} is not an RFC 3339 time: {e}"),
        )
    })
}

/// A launch time: not in the past beyond [`SCHEDULE_GRACE`] (a little in
/// the past is now), at most [`MAX_SCHEDULE_AHEAD`] ahead.
fn launch_time(field: &str, text: &str, now: Timestamp) -> Result<Timestamp, Problem> {
    let at = time_field(field, text)?;
    if at < now - SCHEDULE_GRACE {
        return Err(unprocessable(
            "invalid_time",
            format!("{field}: {text:?} is in the past"),
        ));
    }
    if at > now + MAX_SCHEDULE_AHEAD {
        return Err(unprocessable(
            "invalid_time",
            format!("{field}: {text:?} is more than 30 days ahead"),
        ));
    }
    Ok(at.max(now))
}

/// The number as the organisation's policy accepts it (422 naming
/// `number`, with a code per reason).
fn valid_number(state: &ApiState, text: &str) -> Result<String, Problem> {
    number::validate(text, &state.options().number_policy)
        .map(|n| n.as_digits())
        .map_err(|e| {
            let code = match e {
                InvalidNumber::Blacklisted => "number_blacklisted",
                InvalidNumber::InternationalNotAllowed
                | InvalidNumber::RateTooHigh
                | InvalidNumber::NoRate => "international_not_allowed",
                InvalidNumber::TooShort
                | InvalidNumber::TooLong
                | InvalidNumber::LeadingOneOrZero
                | InvalidNumber::BadExchange
                | InvalidNumber::ServiceCode
                | InvalidNumber::NotDigits => "invalid_number",
            };
            unprocessable(code, format!("number: {text:?}: {e}"))
        })
}

/// `caller_id` as one of the organisation's callback numbers that an agent
/// of `queue` may present (422 naming `caller_id`).
fn valid_caller_id(state: &ApiState, queue: &QueueId, text: &str) -> Result<String, Problem> {
    let asked = number::own_number(text)
        .map_err(|e| unprocessable("invalid_caller_id", format!("caller_id: {text:?}: {e}")))?;
    match state.options().settings.check_caller_id(queue, &asked) {
        Ok(()) => Ok(asked.as_digits()),
        Err(CallerIdRefused::NotACallbackNumber) => Err(unprocessable(
            "invalid_caller_id",
            format!("caller_id: {text:?} is not one of the organisation's callback numbers"),
        )),
        Err(CallerIdRefused::NoAgentMayPresent) => Err(unprocessable(
            "caller_id_not_allowed",
            format!("caller_id: {text:?}: no agent of queue {queue} may present it"),
        )),
    }
}

fn valid_priority(priority: i32) -> Result<i32, Problem> {
    if PRIORITY_RANGE.contains(&priority) {
        Ok(priority)
    } else {
        Err(unprocessable(
            "invalid_priority",
            format!("priority: {priority} is outside -1000..=1000"),
        ))
    }
}

/// A configured queue the caller may act on (422 unknown, 403 another
/// unit's).
fn own_queue(state: &ApiState, who: &Principal, name: &str) -> Result<QueueId, Problem> {
    let queue = QueueId(name.into());
    if !state.options().queues.contains(&queue) {
        return Err(unprocessable(
            "unknown_queue",
            format!("queue: no queue {name:?}"),
        ));
    }
    if !who.sees_queue(&queue) {
        return Err(Problem::forbidden(format!(
            "queue: {name:?} is not in your units"
        )));
    }
    Ok(queue)
}

/// The queues the caller sees (an admin: every configured one).
fn visible_queues(state: &ApiState, who: &Principal) -> Vec<QueueId> {
    state
        .options()
        .queues
        .iter()
        .filter(|q| who.sees_queue(q))
        .cloned()
        .collect()
}

/// `data`: at most [`MAX_DATA_KEYS`] string keys of at most
/// [`MAX_DATA_KEY`] characters, each a string, number, boolean or null
/// whose text is at most [`MAX_DATA_VALUE`] characters.
fn valid_data(data: &serde_json::Map<String, Value>) -> Result<String, Problem> {
    let bad = |m: String| unprocessable("invalid_data", m);
    if data.len() > MAX_DATA_KEYS {
        return Err(bad(format!(
            "data: {} keys, at most {MAX_DATA_KEYS}",
            data.len()
        )));
    }
    for (key, value) in data {
        if key.is_empty() || key.chars().count() > MAX_DATA_KEY {
            return Err(bad(format!(
                "data: key {key:?} must be 1..={MAX_DATA_KEY} characters"
            )));
        }
        let len = match value {
            Value::String(s) => s.chars().count(),
            Value::Number(_) | Value::Bool(_) | Value::Null => value.to_string().len(),
            Value::Array(_) | Value::Object(_) => {
                return Err(bad(format!(
                    "data.{key}: values are strings, numbers, booleans or null"
                )));
            }
        };
        if len > MAX_DATA_VALUE {
            return Err(bad(format!(
                "data.{key}: at most {MAX_DATA_VALUE} characters"
            )));
        }
    }
    Ok(Value::Object(data.clone()).to_string())
}

/// The `Idempotency-Key` header, if sent (400 when malformed).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        Problem::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key: 1..=255 visible ASCII characters",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

/// The response kept for an idempotency key, replayed.
fn replay(reply: StoredReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        reply.body,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Some(location) = reply.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(LOCATION, location);
    }
    headers.insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    response
}

/// Creates a callback, maybe scheduled. The same `Idempotency-Key` with
/// the same body within 24 hours answers the first answer again.
#[utoipa::path(post, path = "/v1/callbacks", tag = "callbacks", request_body = CreateBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1..=255 visible ASCII characters")),
    responses(
        (status = 201, description = "Created (or replayed)", body = CallbackBody,
            headers(("Location" = String, description = "`/v1/callbacks/{id}`"))),
        (status = 400, description = "`invalid_body`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the queue is not in your units", body = ErrorBody),
        (status = 409, description = "`already_scheduled`: one is pending for that number in the queue (its id in the message)", body = ErrorBody),
        (status = 422, description = "`unknown_queue`, `invalid_number`, `number_blacklisted`, `international_not_allowed`, `invalid_time`, `invalid_priority`, `invalid_data`, `invalid_caller_id`, `caller_id_not_allowed`, `idempotency_key_reused`", body = ErrorBody),
        (status = 429, description = "`too_many_callbacks` for the number in 24 hours", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let raw = body.as_ref().cloned().unwrap_or_default();
    let wanted: CreateBody = json_object(&headers, body)?;
    let now = Timestamp::now();
    let request_sha256: [u8; 32] = Sha256::digest(&raw).into();
    if let Some(key) = &key {
        let (actor, key) = (who.name.clone(), key.clone());
        let kept = state
            .with_store(move |store| Ok(store.idempotent_reply(&actor, &key)?))
            .await?;
        if let Some(kept) = kept.filter(|k| k.created_at >= now - IDEMPOTENCY_HORIZON) {
            if kept.request_sha256 == request_sha256 {
                return Ok(replay(kept));
            }
            return Err(unprocessable(
                "idempotency_key_reused",
                "Idempotency-Key: already used with another request body",
            ));
        }
    }
    let queue = own_queue(&state, &who, &wanted.queue)?;
    let number = valid_number(&state, &wanted.number)?;
    let scheduled_for = wanted
        .scheduled_for
        .as_deref()
        .map(|t| launch_time("scheduled_for", t, now))
        .transpose()?;
    let start = scheduled_for.unwrap_or(now);
    let defaults = state.options().queue_defaults.get(&queue).copied();
    let expires_at = match wanted.not_after.as_deref() {
        Some(text) => {
            let at = time_field("not_after", text)?;
            if at <= start {
                return Err(unprocessable(
                    "invalid_time",
                    format!("not_after: {text:?} is not after the launch time"),
                ));
            }
            if at > start + MAX_SCHEDULE_AHEAD {
                return Err(unprocessable(
                    "invalid_time",
                    format!("not_after: {text:?} is more than 30 days after the launch time"),
                ));
            }
            at
        }
        None => {
            let expiry = defaults.map_or(SignedDuration::from_hours(24), |d| d.expiry);
            start + expiry
        }
    };
    let priority = match wanted.priority {
        Some(p) => valid_priority(p)?,
        None => defaults.map_or(0, |d| d.priority),
    };
    let data = wanted.data.as_ref().map(valid_data).transpose()?;
    let caller_id = wanted
        .caller_id
        .as_deref()
        .map(|c| valid_caller_id(&state, &queue, c))
        .transpose()?;
    let cap = state.options().max_per_number_per_day;
    let new = NewCallback {
        queue: queue.clone(),
        number: number.clone(),
        caller_ani: String::new(),
        called_number: String::new(),
        priority,
        queued_at: start,
        registered_at: now,
        ecbt_quoted_minutes: 0,
        expires_at,
        inbound_call_id: String::new(),
        sip_context: None,
    };
    let creation = Creation {
        scheduled_for,
        created_by: who.name.clone(),
        data,
        caller_id,
    };
    enum Outcome {
        Created(Box<ManagedRow>),
        Duplicate(CallbackId),
        OverCap(Timestamp),
    }
    let outcome = state
        .with_store(move |store| {
            let recent = store.created_since(&new.number, now - CAP_WINDOW)?;
            if recent.len() >= cap as usize {
                return Ok(Outcome::OverCap(recent[recent.len() - cap as usize]));
            }
            match store.create(&new, &creation)? {
                Registration::AlreadyScheduled(id) => Ok(Outcome::Duplicate(id)),
                Registration::Registered(id) => store
                    .get(id)?
                    .map(|row| Outcome::Created(Box::new(row)))
                    .ok_or_else(|| Problem::internal(format!("callback {id} vanished"))),
            }
        })
        .await?;
    let (status, body, location) = match outcome {
        Outcome::OverCap(oldest) => {
            let wait = (oldest + CAP_WINDOW).duration_since(now).as_secs().max(1);
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_callbacks",
                format!(
                    "number: {number} already has {cap} callbacks created in 24 hours \
                     ([callbacks] api_max_per_number_per_day); retry in {wait} s"
                ),
            );
            problem.header = Some((RETRY_AFTER, HeaderValue::from(wait)));
            return Err(problem);
        }
        Outcome::Duplicate(id) => (
            StatusCode::CONFLICT,
            json!(ErrorBody {
                code: "already_scheduled".to_owned(),
                message: format!(
                    "number: {number} already has callback {id} pending in queue {queue}"
                ),
            }),
            None,
        ),
        Outcome::Created(row) => {
            let id = row.row.id;
            let body = json!(CallbackBody::from(*row));
            state
                .audit(
                    &who,
                    "create_callback",
                    format!("callback:{id}"),
                    None,
                    Some(body.clone()),
                )
                .await?;
            (
                StatusCode::CREATED,
                body,
                Some(format!("/v1/callbacks/{id}")),
            )
        }
    };
    if let Some(key) = key {
        let reply = StoredReply {
            request_sha256,
            status: status.as_u16(),
            body: body.to_string(),
            location: location.clone(),
            created_at: now,
        };
        let actor = who.name.clone();
        state
            .with_store(move |store| {
                Ok(store.keep_reply(&actor, &key, &reply, now - IDEMPOTENCY_HORIZON)?)
            })
            .await?;
    }
    let mut response = (status, Json(body)).into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// Status filter text (400 naming it).
fn status_param(text: &str) -> Result<Status, Problem> {
    Status::parse(text).ok_or_else(|| {
        let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        Problem::bad_request(
            "invalid_query",
            format!(
                "status: unknown status {text:?} (expected one of {})",
                known.join(", ")
            ),
        )
    })
}

/// Type filter text (400 naming it).
fn source_param(text: &str) -> Result<Source, Problem> {
    Source::parse(text).ok_or_else(|| {
        let known: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
        Problem::bad_request(
            "invalid_query",
            format!(
                "type: unknown type {text:?} (expected one of {})",
                known.join(", ")
            ),
        )
    })
}

/// The opaque cursor that continues after row `id` (`next_cursor`).
pub fn cursor_of(id: i64) -> String {
    Base64UrlUnpadded::encode_string(format!("cb1:{id}").as_bytes())
}

/// The row id a cursor of [`cursor_of`] continues after; `None` for any
/// other text.
pub fn cursor_after(text: &str) -> Option<i64> {
    let bytes = Base64UrlUnpadded::decode_vec(text).ok()?;
    let inner = std::str::from_utf8(&bytes).ok()?;
    let digits = inner.strip_prefix("cb1:")?;
    // i64's own parser takes a leading '+'; a cursor of ours never has one.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return None;
    }
    digits.parse().ok()
}

/// [`cursor_after`], 400 naming `cursor` when it is not ours.
fn cursor_id(text: &str) -> Result<i64, Problem> {
    cursor_after(text).ok_or_else(|| {
        Problem::bad_request(
            "invalid_query",
            "cursor: not a cursor this API gave (use next_cursor as it is)",
        )
    })
}

/// The callbacks of the caller's units, oldest first, a page at a time
/// (`from`/`to` filter on `registered_at`).
#[utoipa::path(get, path = "/v1/callbacks", tag = "callbacks", params(ListQuery),
    responses(
        (status = 200, description = "One page", body = CallbackPage),
        (status = 400, description = "`invalid_query`: names the parameter", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<CallbackPage>, Problem> {
    let q = query_of(query)?;
    let limit = match q.limit {
        None => DEFAULT_PAGE,
        Some(n @ 1..=MAX_PAGE) => n,
        Some(n) => {
            return Err(Problem::bad_request(
                "invalid_query",
                format!("limit: {n} is outside 1..={MAX_PAGE}"),
            ));
        }
    };
    let mut queues = visible_queues(&state, &who);
    if let Some(name) = &q.queue {
        let queue = QueueId(name.as_str().into());
        queues.retain(|q| *q == queue);
    }
    let query = CallbackQuery {
        // An admin also sees rows of queues no longer configured.
        queues: (who.role != Role::Admin || q.queue.is_some()).then_some(queues),
        status: q.status.as_deref().map(status_param).transpose()?,
        number: q.number.clone(),
        source: q.source.as_deref().map(source_param).transpose()?,
        from: q
            .from
            .as_deref()
            .map(|t| query_time("from", t))
            .transpose()?,
        to: q.to.as_deref().map(|t| query_time("to", t)).transpose()?,
        after_id: q.cursor.as_deref().map(cursor_id).transpose()?,
        // One more than asked: whether there is a next page.
        limit: limit.saturating_add(1),
    };
    let mut rows = state
        .with_store(move |store| Ok(store.query(&query)?))
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| cursor_of(r.row.id.0)))
        .flatten();
    Ok(Json(CallbackPage {
        callbacks: rows.into_iter().map(CallbackBody::from).collect(),
        next_cursor,
    }))
}

/// `GET /v1/cdrs` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CdrQuery {
    /// Only the legs of callbacks of this type: `ivr`, `api` or
    /// `missed_call` (inbound legs have none, so they are left out).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    source: Option<String>,
    /// RFC 3339: legs that started at or after.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339: legs that started before.
    #[param(format = DateTime)]
    to: Option<String>,
}

/// The call detail records as CSV (the columns of `callbackd cdr`), oldest
/// first: every leg, or the outbound legs of one type of callback.
#[utoipa::path(get, path = "/v1/cdrs", tag = "callbacks", params(CdrQuery),
    responses(
        (status = 200, description = "CSV, one row per leg", body = String, content_type = "text/csv"),
        (status = 400, description = "`invalid_query`: names the parameter", body = ErrorBody),
    ))]
pub(super) async fn cdrs(
    State(state): State<ApiState>,
    query: Result<Query<CdrQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query_of(query)?;
    let source = q.source.as_deref().map(source_param).transpose()?;
    let from = q
        .from
        .as_deref()
        .map(|t| query_time("from", t))
        .transpose()?;
    let to = q.to.as_deref().map(|t| query_time("to", t)).transpose()?;
    let mut rows = state
        .with_store(move |store| Ok(LaunchStore::cdrs(store, from, to)?))
        .await?;
    if let Some(source) = source {
        rows.retain(|r| r.source == Some(source));
    }
    let mut csv = Vec::new();
    crate::callback::cdr::write_csv(&rows, &mut csv)
        .map_err(|e| Problem::internal(format!("writing CSV: {e}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        csv,
    )
        .into_response())
}

/// The callback `id` if the caller sees its queue (404, 403).
async fn visible(state: &ApiState, who: &Principal, id: &str) -> Result<ManagedRow, Problem> {
    let parsed: i64 = id
        .parse()
        .map_err(|_| Problem::not_found(format!("id: no callback {id:?}")))?;
    let row = state
        .with_store(move |store| Ok(store.get(CallbackId(parsed))?))
        .await?
        .ok_or_else(|| Problem::not_found(format!("id: no callback {id:?}")))?;
    if !who.sees_queue(&row.row.queue) {
        return Err(Problem::forbidden(format!(
            "id: callback {id} is in queue {}, not in your units",
            row.row.queue
        )));
    }
    Ok(row)
}

/// An attempt as `GET /v1/callbacks/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Attempt)]
pub struct AttemptBody {
    /// The queue it was made for.
    pub queue: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC.
    pub ended_at: String,
    /// How it ended (`no_answer`, `busy`, `bridged`, …).
    pub outcome: &'static str,
    /// The final SIP status of the leg that failed, if any.
    pub sip_status: Option<u16>,
    /// The agent who took it.
    pub agent: Option<String>,
    /// When the customer leg's first INVITE left.
    pub customer_dialed_at: Option<String>,
}

impl From<AttemptRow> for AttemptBody {
    fn from(a: AttemptRow) -> AttemptBody {
        AttemptBody {
            queue: a.queue.as_str().to_owned(),
            started_at: a.attempt.started_at.to_string(),
            ended_at: a.attempt.ended_at.to_string(),
            outcome: a.attempt.outcome.as_str(),
            sip_status: a.attempt.sip_status,
            agent: a.attempt.agent,
            customer_dialed_at: a.attempt.customer_dialed_at.map(|t| t.to_string()),
        }
    }
}

/// A call leg as `GET /v1/callbacks/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Leg)]
pub struct LegBody {
    /// `inbound`, `agent` or `customer`.
    pub leg: &'static str,
    /// Its SIP Call-ID.
    pub call_id: String,
    /// RFC 3339 UTC.
    pub start: String,
    /// RFC 3339 UTC, if answered.
    pub answer: Option<String>,
    /// RFC 3339 UTC.
    pub end: String,
    /// How it ended.
    pub outcome: &'static str,
    /// The final SIP status, if any.
    pub sip_code: Option<u16>,
    /// The far end.
    pub peer: String,
}

impl From<CdrRecord> for LegBody {
    fn from(c: CdrRecord) -> LegBody {
        LegBody {
            leg: c.leg.as_str(),
            call_id: c.call_id,
            start: c.start.to_string(),
            answer: c.answer.map(|t| t.to_string()),
            end: c.end.to_string(),
            outcome: c.outcome.as_str(),
            sip_code: c.sip_code,
            peer: c.peer,
        }
    }
}

/// One callback with its attempts and CDR legs; `customer_dialed_at` and
/// `ecbt_error_s` once the customer was dialed.
#[utoipa::path(get, path = "/v1/callbacks/{id}", tag = "callbacks",
    params(("id" = i64, Path, description = "The callback's id", example = 1)),
    responses(
        (status = 200, description = "The callback", body = CallbackDetail),
        (status = 403, description = "`forbidden`: its queue is not in your units", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn get_one(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
) -> Result<Json<CallbackDetail>, Problem> {
    let row = visible(&state, &who, &id).await?;
    let cid = row.row.id;
    let (attempts, legs) = state
        .with_store(move |store| {
            use crate::callback::store::LaunchStore;
            Ok((store.attempts(cid)?, store.cdrs_of(cid)?))
        })
        .await?;
    Ok(Json(CallbackDetail {
        callback: CallbackBody::from(row),
        attempt_log: attempts.into_iter().map(AttemptBody::from).collect(),
        legs: legs.into_iter().map(LegBody::from).collect(),
    }))
}

/// A cancel or patch's outcome as an answer, audited when applied.
async fn applied(
    state: &ApiState,
    who: &Principal,
    action: &'static str,
    id: &str,
    changed: Changed,
) -> Result<Json<CallbackBody>, Problem> {
    match changed {
        Changed::Done { before, after } => {
            let before = CallbackBody::from(*before);
            let after = CallbackBody::from(*after);
            state
                .audit(
                    who,
                    action,
                    format!("callback:{}", after.id),
                    Some(json!(before)),
                    Some(json!(after)),
                )
                .await?;
            Ok(Json(after))
        }
        Changed::NotFound => Err(Problem::not_found(format!("id: no callback {id:?}"))),
        Changed::NotPending(status) => Err(conflict(
            "not_pending",
            format!("id: callback {id} is {status}; only a pending one can be changed"),
        )),
        Changed::Duplicate(other) => Err(conflict(
            "already_scheduled",
            format!("number: callback {other} is already pending for it in this queue"),
        )),
    }
}

/// Cancels a pending callback.
#[utoipa::path(delete, path = "/v1/callbacks/{id}", tag = "callbacks",
    params(("id" = i64, Path, description = "The callback's id", example = 1)),
    responses(
        (status = 200, description = "The callback, cancelled", body = CallbackBody),
        (status = 403, description = "`forbidden`: its queue is not in your units", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_pending`", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
) -> Result<Json<CallbackBody>, Problem> {
    let row = visible(&state, &who, &id).await?;
    let cid = row.row.id;
    let changed = state
        .with_store(move |store| Ok(store.cancel(cid)?))
        .await?;
    applied(&state, &who, "cancel_callback", &id, changed).await
}

/// Reschedules a pending callback, changes its number or priority.
#[utoipa::path(patch, path = "/v1/callbacks/{id}", tag = "callbacks", request_body = PatchBody,
    params(("id" = i64, Path, description = "The callback's id", example = 1)),
    responses(
        (status = 200, description = "The callback, changed", body = CallbackBody),
        (status = 403, description = "`forbidden`: its queue is not in your units", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_pending`; `already_scheduled` for a number taken in the queue", body = ErrorBody),
        (status = 422, description = "`invalid_time`, `invalid_number`, `number_blacklisted`, `international_not_allowed`, `invalid_priority`, `invalid_caller_id`, `caller_id_not_allowed`", body = ErrorBody),
    ))]
pub(super) async fn patch(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CallbackBody>, Problem> {
    let row = visible(&state, &who, &id).await?;
    let wanted: PatchBody = json_object(&headers, body)?;
    let now = Timestamp::now();
    let change = CallbackPatch {
        scheduled_for: wanted
            .scheduled_for
            .as_deref()
            .map(|t| launch_time("scheduled_for", t, now))
            .transpose()?,
        number: wanted
            .number
            .as_deref()
            .map(|n| valid_number(&state, n))
            .transpose()?,
        priority: wanted.priority.map(valid_priority).transpose()?,
        caller_id: match wanted.caller_id {
            Some(Some(text)) => Some(Some(valid_caller_id(&state, &row.row.queue, &text)?)),
            other => other,
        },
    };
    if change == CallbackPatch::default() {
        return Err(Problem::bad_request(
            "invalid_body",
            "body: give at least one of scheduled_for, number, priority, caller_id",
        ));
    }
    if let Some(at) = change.scheduled_for
        && at >= row.row.expires_at
    {
        return Err(unprocessable(
            "invalid_time",
            format!(
                "scheduled_for: not before the callback's window end {}",
                row.row.expires_at
            ),
        ));
    }
    let cid = row.row.id;
    let changed = state
        .with_store(move |store| Ok(store.patch(cid, &change)?))
        .await?;
    applied(&state, &who, "patch_callback", &id, changed).await
}

/// Cancels every pending callback of a number in the caller's units (or
/// that queue).
#[utoipa::path(post, path = "/v1/callbacks/cancel", tag = "callbacks", request_body = CancelBody,
    responses(
        (status = 200, description = "The callbacks cancelled", body = CancelledBody),
        (status = 403, description = "`forbidden`: the queue is not in your units", body = ErrorBody),
        (status = 422, description = "`invalid_number`, `unknown_queue`", body = ErrorBody),
    ))]
pub(super) async fn cancel_by_number(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CancelledBody>, Problem> {
    let wanted: CancelBody = json_object(&headers, body)?;
    let number = &wanted.number;
    if number.is_empty() || number.len() > 20 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unprocessable(
            "invalid_number",
            format!("number: {number:?} is not 1..=20 plain digits"),
        ));
    }
    let queues = match &wanted.queue {
        Some(name) => vec![own_queue(&state, &who, name)?],
        None => visible_queues(&state, &who),
    };
    let number = number.clone();
    let rows = state
        .with_store(move |store| Ok(store.cancel_by_number(&number, &queues)?))
        .await?;
    let bodies: Vec<CallbackBody> = rows.into_iter().map(CallbackBody::from).collect();
    for body in &bodies {
        let mut before = json!(body);
        before["status"] = json!(Status::Pending.as_str());
        state
            .audit(
                &who,
                "cancel_callback",
                format!("callback:{}", body.id),
                Some(before),
                Some(json!(body)),
            )
            .await?;
    }
    Ok(Json(CancelledBody { cancelled: bodies }))
}

/// One callback in `GET /v1/callbacks/status`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NumberStatusEntry)]
pub struct NumberStatus {
    /// The callback's id.
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// Its status.
    pub status: &'static str,
    /// 1 = next in its queue; `null` unless pending.
    pub position: Option<u32>,
    /// Minutes until it is expected to be launched, estimated now: the
    /// later of its next attempt's time and the queue's estimate for the
    /// callbacks ahead of it (the engine's rolling handle time and the
    /// agents staffing the queue now, as callers hear it); `null` unless
    /// pending.
    pub ecbt_minutes: Option<u32>,
    /// The estimate passed `[ecbt] ceiling_minutes` (or nobody staffs the
    /// queue): "more than `ecbt_minutes`"; `null` unless pending.
    pub ecbt_more_than: Option<bool>,
    /// Outbound attempts so far.
    pub attempts: u32,
    /// Not launched before this, if scheduled.
    pub scheduled_for: Option<String>,
}

/// The number's active callbacks in the caller's units (else its latest
/// one), with place in line and ECBT: for IVRs, web pages and SMS bots.
#[utoipa::path(get, path = "/v1/callbacks/status", tag = "callbacks", params(StatusQuery),
    responses(
        (status = 200, description = "The number's callbacks", body = NumberStatusBody),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 404, description = "`not_found`: no callback for the number in your units", body = ErrorBody),
    ))]
pub(super) async fn number_status(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<NumberStatusBody>, Problem> {
    let q = query_of(query)?;
    let number = q.number;
    if number.is_empty() || number.len() > 20 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::bad_request(
            "invalid_query",
            format!("number: {number:?} is not 1..=20 plain digits"),
        ));
    }
    let queues = visible_queues(&state, &who);
    let now = Timestamp::now();
    let wanted = number.clone();
    let found = state
        .with_store(move |store| {
            let rows = store.query(&CallbackQuery {
                queues: Some(queues),
                number: Some(wanted),
                limit: MAX_PAGE,
                ..CallbackQuery::default()
            })?;
            let active: Vec<ManagedRow> = rows
                .iter()
                .filter(|r| matches!(r.row.status, Status::Pending | Status::Dialing))
                .cloned()
                .collect();
            let chosen = if active.is_empty() {
                rows.last().cloned().into_iter().collect()
            } else {
                active
            };
            let mut out = Vec::with_capacity(chosen.len());
            for m in chosen {
                let ahead = match m.row.status {
                    Status::Pending => Some(store.pending_ahead(&m.row.queue, m.row.queued_at)?),
                    _ => None,
                };
                out.push((m, ahead));
            }
            Ok(out)
        })
        .await?;
    if found.is_empty() {
        return Err(Problem::not_found(format!(
            "number: no callback for {number} in your units"
        )));
    }
    // The queues' estimators as they stand (none once the engine stopped:
    // then what is left of the announced estimate).
    let live = state
        .engine
        .status()
        .await
        .map(|s| s.queues)
        .unwrap_or_default();
    let ecbt = state.options().settings.estimator().settings().clone();
    let callbacks: Vec<NumberStatus> = found
        .into_iter()
        .map(|(m, ahead)| {
            let until = m.row.next_attempt_at.map_or(0, |at| minutes_until(now, at));
            let estimate = ahead.map(|ahead| {
                let wait = match live.iter().find(|q| q.queue == m.row.queue) {
                    Some(q) => ecbt.estimate(q.average_handle_time, ahead, q.staffed_agents),
                    None => {
                        let quoted = m.row.registered_at
                            + SignedDuration::from_mins(m.row.ecbt_quoted_minutes.into());
                        Ecbt::Minutes(minutes_until(now, quoted))
                    }
                };
                match wait {
                    Ecbt::Minutes(minutes) => (until.max(minutes), false),
                    Ecbt::MoreThan(minutes) => (until.max(minutes), until <= minutes),
                }
            });
            NumberStatus {
                id: m.row.id.0,
                queue: m.row.queue.as_str().to_owned(),
                status: m.row.status.as_str(),
                position: ahead.map(|n| n.saturating_add(1)),
                ecbt_minutes: estimate.map(|(minutes, _)| minutes),
                ecbt_more_than: estimate.map(|(_, more)| more),
                attempts: m.row.attempts,
                scheduled_for: m.scheduled_for.map(|t| t.to_string()),
            }
        })
        .collect();
    Ok(Json(NumberStatusBody { number, callbacks }))
}

/// Whole minutes from `now` to `at`, rounded up; 0 when `at` has passed.
fn minutes_until(now: Timestamp, at: Timestamp) -> u32 {
    let secs = at.duration_since(now).as_secs();
    if secs <= 0 {
        return 0;
    }
    u32::try_from((secs + 59) / 60).unwrap_or(u32::MAX)
}

/// What a queue gives a callback created without `priority`/`not_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDefaults {
    /// The queue's priority.
    pub priority: i32,
    /// How long a callback stays attemptable (`callback_expiry_h`).
    pub expiry: SignedDuration,
}

/// Queue id → its defaults.
pub type QueueDefaultsMap = BTreeMap<QueueId, QueueDefaults>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(cursor_id(&cursor_of(42)).ok(), Some(42));
        assert!(cursor_id("42").is_err());
        assert!(cursor_id("").is_err());
        assert!(cursor_id(&Base64UrlUnpadded::encode_string(b"cb1:x")).is_err());
        assert!(cursor_id(&Base64UrlUnpadded::encode_string(b"cb1:+5")).is_err());
        assert!(cursor_id(&Base64UrlUnpadded::encode_string(b"cb1:")).is_err());
        assert!(cursor_id(&Base64UrlUnpadded::encode_string(b"cb2:5")).is_err());
        assert_eq!(cursor_after(&cursor_of(i64::MAX)), Some(i64::MAX));
    }

    #[test]
    fn minutes_until_rounds_up_and_stops_at_zero() {
        let t: Timestamp = "2025-06-02T10:00:00Z".parse().expect("time");
        assert_eq!(minutes_until(t, t), 0);
        assert_eq!(minutes_until(t, t + SignedDuration::from_secs(61)), 2);
        assert_eq!(minutes_until(t + SignedDuration::from_secs(5), t), 0);
    }

    #[test]
    fn data_refuses_nesting_long_values_and_too_many_keys() {
        let obj = |v: Value| v.as_object().expect("object").clone();
        assert!(valid_data(&obj(json!({"order": "A-17", "vip": true}))).is_ok());
        assert!(valid_data(&obj(json!({"a": {"b": 1}}))).is_err());
        assert!(valid_data(&obj(json!({"a": "x".repeat(MAX_DATA_VALUE + 1)}))).is_err());
        let many: serde_json::Map<String, Value> = (0..=MAX_DATA_KEYS)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        assert!(valid_data(&many).is_err());
    }
}
