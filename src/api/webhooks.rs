//! The webhook subscriptions, `/v1/webhooks` (issue 11 point 5): create,
//! list, read, change, delete, and each subscription's delivery log. Admin
//! only: a subscription sees the events of every queue. See the table in
//! [`crate::api`]; the events, payload and signature are described in
//! [`crate::callback::webhook`] and the README.
//!
//! The secret (the HMAC key receivers check signatures with) is ours —
//! `whsec_` and 32 random bytes in base64url — unless the request gives
//! one (16–256 visible ASCII characters); it is answered once, at
//! creation, and never shown again. Audit rows never carry it.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64ct::{Base64UrlUnpadded, Encoding};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::callback::store::{
    Delivery, NewWebhook, Principal, Webhook, WebhookPatch, WebhookStore,
};
use crate::callback::webhook::EventKind;

use super::{ApiState, ErrorBody, Problem, Segment, json_object, query_of};

/// Longest `url`, in bytes.
pub const MAX_URL: usize = 2048;
/// Longest `description`, in characters.
pub const MAX_DESCRIPTION: usize = 256;
/// Shortest and longest secret a request may give.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Page size of the delivery log without `limit`.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page of the delivery log.
pub const MAX_PAGE: u32 = 1000;

/// A subscription as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookBody {
    /// Row id.
    pub id: i64,
    /// Where events are posted.
    pub url: String,
    /// The event types it receives.
    pub events: Vec<&'static str>,
    /// Receives events now.
    pub enabled: bool,
    /// Free text.
    pub description: String,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl From<Webhook> for WebhookBody {
    fn from(w: Webhook) -> WebhookBody {
        WebhookBody {
            id: w.id,
            url: w.url,
            events: w.events.iter().map(|k| k.as_str()).collect(),
            enabled: w.enabled,
            description: w.description,
            created_by: w.created_by,
            created_at: w.created_at.to_string(),
        }
    }
}

/// A row of the delivery log as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryBody {
    /// Row id (the cursor).
    pub id: i64,
    /// The event id receivers saw (`Callbackd-Event-Id`).
    pub event_id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The callback it is about.
    pub callback_id: i64,
    /// When the event happened.
    pub occurred_at: String,
    /// `pending`, `delivered` or `failed`.
    pub state: &'static str,
    /// Tries made.
    pub tries: u32,
    /// The first try.
    pub first_try_at: Option<String>,
    /// The last try.
    pub last_try_at: Option<String>,
    /// The next try while pending (null: at once).
    pub next_try_at: Option<String>,
    /// The last try's HTTP status.
    pub last_status: Option<u16>,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> DeliveryBody {
        let text = |t: Option<Timestamp>| t.map(|t| t.to_string());
        DeliveryBody {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            callback_id: d.callback.0,
            occurred_at: d.occurred_at.to_string(),
            state: d.state.as_str(),
            tries: d.tries,
            first_try_at: text(d.first_try_at),
            last_try_at: text(d.last_try_at),
            next_try_at: text(d.next_try_at),
            last_status: d.last_status,
            last_error: d.last_error,
        }
    }
}

/// `POST /v1/webhooks` answer: the subscription and its secret, shown
/// this once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CreatedWebhook)]
struct CreatedBody {
    #[serde(flatten)]
    webhook: WebhookBody,
    /// The HMAC-SHA256 key of the signatures: keep it.
    secret: String,
}

/// `GET /v1/webhooks/{id}/deliveries` body.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeliveryPage)]
pub struct DeliveryPage {
    /// Oldest first.
    pub deliveries: Vec<DeliveryBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `POST /v1/webhooks` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewWebhook, example = json!({"url": "http://127.0.0.1:9/hook", "events": ["callback.registered"]}))]
struct CreateBody {
    /// An absolute `http://` or `https://` URL with a host.
    #[schema(example = "http://127.0.0.1:9/hook")]
    url: String,
    /// Event types (`callback.registered`, …), at least one.
    #[schema(example = json!(["callback.registered", "callback.completed"]))]
    events: Vec<String>,
    /// 16..=256 visible ASCII characters (default: ours, `whsec_…`).
    secret: Option<String>,
    /// Receives events (default true).
    enabled: Option<bool>,
    /// Free text, at most 256 characters.
    description: Option<String>,
}

/// `PATCH /v1/webhooks/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookChange)]
struct PatchBody {
    /// An absolute `http://` or `https://` URL with a host.
    url: Option<String>,
    /// Event types, at least one.
    events: Option<Vec<String>>,
    /// Receives events.
    enabled: Option<bool>,
    /// Free text, at most 256 characters.
    description: Option<String>,
}

/// `GET /v1/webhooks/{id}/deliveries` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// `url` if it is an absolute `http://` or `https://` URL with a host.
pub fn valid_url(url: &str) -> Result<String, String> {
    if url.len() > MAX_URL {
        return Err(format!("longer than {MAX_URL} bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{url:?}: the scheme must be http or https, not {}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(parsed.to_string())
}

/// The event types named, each known (422 naming the first unknown one),
/// at least one, duplicates dropped, in lifecycle order.
fn valid_events(names: &[String]) -> Result<Vec<EventKind>, Problem> {
    if names.is_empty() {
        return Err(unprocessable(
            "invalid_events",
            "events: name at least one event type",
        ));
    }
    let mut kinds = Vec::new();
    for name in names {
        let Some(kind) = EventKind::parse(name) else {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(unprocessable(
                "unknown_event",
                format!(
                    "events: {name:?} is not an event type (known: {})",
                    known.join(", ")
                ),
            ));
        };
        kinds.push(kind);
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

fn url_field(url: &str) -> Result<String, Problem> {
    valid_url(url).map_err(|why| unprocessable("invalid_url", format!("url: {why}")))
}

fn description_field(text: String) -> Result<String, Problem> {
    if text.chars().count() > MAX_DESCRIPTION || text.chars().any(char::is_control) {
        return Err(unprocessable(
            "invalid_description",
            format!("description: at most {MAX_DESCRIPTION} characters, no control characters"),
        ));
    }
    Ok(text)
}

fn secret_field(secret: Option<String>) -> Result<String, Problem> {
    match secret {
        Some(s) if SECRET_LEN.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(s)
        }
        Some(_) => Err(unprocessable(
            "invalid_secret",
            format!(
                "secret: {}..={} visible ASCII characters",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            ),
        )),
        None => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| Problem::internal(format!("secret: no random source: {e}")))?;
            Ok(format!(
                "whsec_{}",
                Base64UrlUnpadded::encode_string(&bytes)
            ))
        }
    }
}

fn id_param(id: &str) -> Result<i64, Problem> {
    id.parse()
        .map_err(|_| Problem::not_found(format!("id: no webhook {id:?}")))
}

/// Every subscription (never the secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "The subscriptions", body = Vec<WebhookBody>)))]
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<Vec<WebhookBody>>, Problem> {
    let hooks = state.with_store(|store| Ok(store.webhooks()?)).await?;
    Ok(Json(hooks.into_iter().map(WebhookBody::from).collect()))
}

/// Subscribes a URL to event types.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateBody,
    responses(
        (status = 201, description = "The subscription and its secret", body = CreatedBody,
            headers(("Location" = String, description = "`/v1/webhooks/{id}`"))),
        (status = 422, description = "`invalid_url`, `unknown_event`, `invalid_events`, `invalid_secret`, `invalid_description`", body = ErrorBody),
    ))]
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body: CreateBody = json_object(&headers, body)?;
    let new = NewWebhook {
        url: url_field(&body.url)?,
        events: valid_events(&body.events)?,
        secret: secret_field(body.secret)?,
        enabled: body.enabled.unwrap_or(true),
        description: description_field(body.description.unwrap_or_default())?,
        created_by: who.name.clone(),
        created_at: Timestamp::now(),
    };
    let secret = new.secret.clone();
    let hook = state
        .with_store(move |store| Ok(store.create_webhook(&new)?))
        .await?;
    let shown = WebhookBody::from(hook);
    state
        .audit(
            &who,
            "create_webhook",
            format!("webhook:{}", shown.id),
            None,
            Some(json!(shown)),
        )
        .await?;
    let location = format!("/v1/webhooks/{}", shown.id);
    let body = CreatedBody {
        webhook: shown,
        secret,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

/// One subscription.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path, description = "The subscription's id", example = 1)),
    responses(
        (status = 200, description = "The subscription", body = WebhookBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn get_one(
    State(state): State<ApiState>,
    Segment(id): Segment,
) -> Result<Json<WebhookBody>, Problem> {
    let n = id_param(&id)?;
    let hook = state
        .with_store(move |store| Ok(store.webhook(n)?))
        .await?
        .ok_or_else(|| Problem::not_found(format!("id: no webhook {id:?}")))?;
    Ok(Json(hook.into()))
}

/// Changes a subscription; a disabled one gets no new events and its
/// pending deliveries wait.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = PatchBody, params(("id" = i64, Path, description = "The subscription's id", example = 1)),
    responses(
        (status = 200, description = "The subscription", body = WebhookBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_url`, `unknown_event`, `invalid_events`, `invalid_description`", body = ErrorBody),
    ))]
pub(super) async fn patch(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookBody>, Problem> {
    let n = id_param(&id)?;
    let body: PatchBody = json_object(&headers, body)?;
    let patch = WebhookPatch {
        url: body.url.as_deref().map(url_field).transpose()?,
        events: body.events.as_deref().map(valid_events).transpose()?,
        enabled: body.enabled,
        description: body.description.map(description_field).transpose()?,
    };
    let (before, after) = state
        .with_store(move |store| Ok(store.patch_webhook(n, &patch)?))
        .await?
        .ok_or_else(|| Problem::not_found(format!("id: no webhook {id:?}")))?;
    let after = WebhookBody::from(after);
    state
        .audit(
            &who,
            "update_webhook",
            format!("webhook:{n}"),
            Some(json!(WebhookBody::from(before))),
            Some(json!(after)),
        )
        .await?;
    Ok(Json(after))
}

/// Deletes a subscription and its delivery log.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path, description = "The subscription's id", example = 1)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
) -> Result<StatusCode, Problem> {
    let n = id_param(&id)?;
    let before = state
        .with_store(move |store| Ok(store.delete_webhook(n)?))
        .await?
        .ok_or_else(|| Problem::not_found(format!("id: no webhook {id:?}")))?;
    state
        .audit(
            &who,
            "delete_webhook",
            format!("webhook:{n}"),
            Some(json!(WebhookBody::from(before))),
            None,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A subscription's delivery log, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = i64, Path, description = "The subscription's id", example = 1), DeliveriesQuery),
    responses(
        (status = 200, description = "One page", body = DeliveryPage),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn deliveries(
    State(state): State<ApiState>,
    Segment(id): Segment,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryPage>, Problem> {
    let n = id_param(&id)?;
    let q = query_of(query)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid_query",
            format!("limit: {limit} is outside 1..={MAX_PAGE}"),
        ));
    }
    let after_id = q
        .cursor
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                Problem::bad_request("invalid_query", format!("cursor: {c:?} is not a cursor"))
            })
        })
        .transpose()?;
    let rows = state
        .with_store(move |store| {
            if store.webhook(n)?.is_none() {
                return Err(Problem::not_found(format!("id: no webhook {n}")));
            }
            // One more than asked: whether there is a next page.
            Ok(store.deliveries(n, after_id, limit.saturating_add(1))?)
        })
        .await?;
    let more = rows.len() > limit as usize;
    let rows: Vec<Delivery> = rows.into_iter().take(limit as usize).collect();
    let next_cursor = more
        .then(|| rows.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(DeliveryPage {
        deliveries: rows.into_iter().map(DeliveryBody::from).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http_or_https_with_a_host() {
        assert_eq!(
            valid_url("https://hooks.example.com/cb").as_deref(),
            Ok("https://hooks.example.com/cb")
        );
        assert!(valid_url("http://127.0.0.1:8080/x?y=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "hooks.example.com/cb",
            "/relative",
            "",
            "https://",
            "javascript:alert(1)",
            "file:///etc/passwd",
        ] {
            assert!(valid_url(bad).is_err(), "{bad:?}");
        }
        assert!(valid_url(&format!("https://e.com/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn events_must_be_known_and_at_least_one() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            valid_events(&names(&[
                "callback.completed",
                "callback.registered",
                "callback.completed"
            ]))
            .unwrap(),
            [EventKind::Registered, EventKind::Completed]
        );
        let e = valid_events(&names(&["callback.registered", "callback.exploded"])).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.code, "unknown_event");
        assert!(
            e.message.starts_with("events: \"callback.exploded\""),
            "{}",
            e.message
        );
        let e = valid_events(&[]).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_events")
        );
    }

    #[test]
    fn generated_secrets_are_random_and_given_ones_are_checked() {
        let a = secret_field(None).unwrap();
        let b = secret_field(None).unwrap();
        assert!(a.starts_with("whsec_") && a.len() == 6 + 43, "{a}");
        assert_ne!(a, b);
        assert_eq!(
            secret_field(Some("0123456789abcdef".into())).unwrap(),
            "0123456789abcdef"
        );
        for bad in [
            "short",
            "has a space in it ok",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(
                secret_field(Some(bad.into())).unwrap_err().code,
                "invalid_secret",
                "{bad:?}"
            );
        }
    }
}
