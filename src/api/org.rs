//! The organisation at run time: `[org]`, the queues and the agents,
//! stored in the store (see [`crate::engine::organisation`]) and changed
//! here without a restart; each change is checked by the configuration's
//! value rules (a 422 names the field as it would be named in the file,
//! `queues[1].hours.mon`), stored as the next version with its audit row,
//! then applied to the engine — in force for the next call and the next
//! launch; calls and attempts in progress go on as they started.
//!
//! | method | path | rule | answer |
//! |---|---|---|---|
//! | GET | `/v1/org` | viewer | `{"version","changed_at","changed_by","organisation":{"org","queues","agents"}}` with `ETag: "<version>"`; agents show `password_set`, never the password; a non-admin sees the queues of their units and the agents serving them |
//! | PUT | `/v1/org` | admin | the whole `organisation` object; `If-Match: "<version>"` optional (412 when another version is in force); an agent without `password` keeps its current one → 200 as GET |
//! | PATCH | `/v1/org` | admin | a JSON merge patch (RFC 7396) over the `organisation` object (arrays are replaced whole) |
//! | GET | `/v1/org/switches` | viewer | the org's and each visible queue's `registration_enabled`/`launch_enabled`, pending callbacks per queue and the warnings |
//! | PUT | `/v1/org/switches` | admin | `{"registration_enabled"?,"launch_enabled"?}` → 200 as GET |
//! | GET | `/v1/queues` | viewer | the visible queues, each as in `[[queues]]` |
//! | PUT | `/v1/queues/{id}` | admin | a `[[queues]]` object (its `id` optional, else equal to the path's) → 201 created / 200 replaced |
//! | PATCH | `/v1/queues/{id}` | manager | a merge patch over the queue; a manager (of a unit grouping the queue) may change `hours`, `registration_enabled` and `launch_enabled` only |
//! | DELETE | `/v1/queues/{id}` | admin | 204; 409 `queue_in_use` while callbacks are pending in it or a unit groups it |
//! | PUT | `/v1/queues/{id}/switches` | manager | `{"registration_enabled"?,"launch_enabled"?}` for one queue → 200 as `GET /v1/org/switches` |
//!
//! The missed-call rules and the freeze are in [`super::rules`].
//!
//! The switches (seed: the portal's On/Off tab): *registration* off → the
//! caller hears "we are unable to offer callbacks at this time" and is
//! disconnected, pending callbacks keep launching; *launching* off →
//! callers still register but hear no ECBT, due callbacks wait (resume
//! launches them: the answer counts them). A queue's switch applies with
//! the organisation's (both must be on).

use std::collections::BTreeMap;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;
use utoipa::ToSchema;

use super::{ApiOptions, ApiState, ErrorBody, Problem, Segment, change_by, json_object};
use crate::callback::QueueId;
use crate::callback::store::{
    AuditEntry, OrgSaveError, OrganisationStore, Principal, Role, StoredOrganisation,
};
use crate::config::{ConfigError, Organisation, QueueConfig};
use crate::engine::organisation::redacted;

/// Largest organisation document accepted, in bytes.
pub const MAX_ORG_BODY: usize = 256 * 1024;

/// `GET /v1/org` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = Org)]
pub struct OrgBody {
    /// The version in force (0: not stored yet).
    pub version: u64,
    /// When it was stored.
    pub changed_at: Option<String>,
    /// Who stored it (`config.toml` for the seed).
    pub changed_by: Option<String>,
    /// `{"org","queues","agents"}` as in config.toml's `[org]`,
    /// `[[queues]]` and `[[agents]]`; agents show `password_set`, never
    /// the password.
    #[schema(value_type = Object)]
    pub organisation: Value,
}

/// `{"registration_enabled"?, "launch_enabled"?}`: at least one.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchChange {
    /// Callbacks are offered.
    pub registration_enabled: Option<bool>,
    /// Callbacks are launched (and the ECBT announced).
    pub launch_enabled: Option<bool>,
}

/// One set of switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Switches {
    /// Callbacks are offered.
    pub registration_enabled: bool,
    /// Callbacks are launched (and the ECBT announced).
    pub launch_enabled: bool,
}

/// `GET /v1/org/switches` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = SwitchesView)]
pub struct SwitchesBody {
    /// The organisation's version these switches are part of.
    pub version: u64,
    /// The organisation's switches.
    pub org: Switches,
    /// Each visible queue's own switches.
    pub queues: BTreeMap<String, Switches>,
    /// Pending callbacks per visible queue.
    pub pending_callbacks: BTreeMap<String, u64>,
    /// What the switches mean now (a shut-down service, callbacks that
    /// will launch when launching is switched back on).
    pub warnings: Vec<String>,
}

/// The organisation in force: the stored version (read now), else the
/// configuration's (version 0).
pub(super) async fn current(
    state: &ApiState,
) -> Result<(u64, Organisation, Option<StoredOrganisation>), Problem> {
    let stored = state.with_store(|store| Ok(store.organisation()?)).await?;
    let options = state.options();
    match stored {
        Some(stored) if stored.version == options.org_version => Ok((
            stored.version,
            options.settings.organisation(),
            Some(stored),
        )),
        Some(stored) => {
            let document = Organisation::from_toml(&stored.document).map_err(|e| {
                Problem::internal(format!(
                    "stored organisation version {}: {e}",
                    stored.version
                ))
            })?;
            Ok((stored.version, document, Some(stored)))
        }
        None => Ok((0, options.settings.organisation(), None)),
    }
}

/// `organisation` as `who` may see it.
fn visible(who: &Principal, document: &Organisation) -> Value {
    let mut shown = document.clone();
    if who.role != Role::Admin {
        shown.queues.retain(|q| who.sees_queue(&q.id));
        shown
            .agents
            .retain(|a| a.queues.iter().any(|q| who.sees_queue(q)));
    }
    redacted(&shown)
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// `If-Match: "<version>"`, if sent (`*` matches anything).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            Problem::bad_request(
                "invalid_header",
                format!("If-Match: expected the ETag of GET /v1/org (\"<version>\"), got {text:?}"),
            )
        })
}

fn org_response(
    who: &Principal,
    version: u64,
    document: &Organisation,
    stored: Option<&StoredOrganisation>,
) -> Response {
    let body = OrgBody {
        version,
        changed_at: stored.map(|s| s.changed_at.to_string()),
        changed_by: stored.map(|s| s.changed_by.clone()),
        organisation: visible(who, document),
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(ETAG, etag(version));
    response
}

/// Reads, changes with `f`, checks, stores and applies the organisation,
/// one change at a time. A change that leaves it as it was writes nothing.
/// `view` is what the audit row shows before and after (the part changed).
pub(super) async fn change<F, V>(
    state: &ApiState,
    who: &Principal,
    expected: Option<u64>,
    (action, target, view): (&str, String, V),
    f: F,
) -> Result<(u64, Organisation, bool), Problem>
where
    F: FnOnce(&mut Organisation) -> Result<(), Problem>,
    V: Fn(&Organisation) -> Value,
{
    let _one_at_a_time = state.org_change.lock().await;
    let (base, before, _) = current(state).await?;
    if let Some(expected) = expected
        && expected != base
    {
        return Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            format!("If-Match: version {base} is in force, not {expected}"),
        ));
    }
    let mut document = before.clone();
    f(&mut document)?;
    super::rules::check_frozen(&document)?;
    if document == before {
        return Ok((base, document, false));
    }
    let settings = state
        .options()
        .settings
        .with_organisation(document.clone())
        .map_err(invalid)?;
    let audit = AuditEntry {
        change: change_by(who),
        action: action.to_owned(),
        target,
        before: Some(view(&before)),
        after: Some(view(&document)),
    };
    let toml = document.to_toml();
    let version = state
        .with_store(move |store| {
            store
                .save_organisation(base, &toml, &audit)
                .map_err(|e| match e {
                    OrgSaveError::Store(e) => e.into(),
                    OrgSaveError::Conflict { latest } => Problem::new(
                        StatusCode::CONFLICT,
                        "version_conflict",
                        format!("the organisation changed meanwhile (version {latest}); retry"),
                    ),
                })
        })
        .await?;
    info!(version, by = %who.name, action, "organisation changed");
    if !state.engine.apply_settings(settings.clone()).await {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_stopped",
            format!(
                "version {version} is stored but the engine has stopped; it applies at the next start"
            ),
        ));
    }
    let mut options = ApiOptions::new(&settings);
    options.org_version = version;
    options.metrics = state.metrics.clone();
    state.set_options(options);
    Ok((version, document, true))
}

/// The organisation's switches, for the audit log.
pub(super) fn org_switches(document: &Organisation) -> Value {
    serde_json::json!({
        "registration_enabled": document.org.registration_enabled,
        "launch_enabled": document.org.launch_enabled,
    })
}

/// One queue as configured (`null` when absent), for the audit log.
fn queue_view(id: &QueueId) -> impl Fn(&Organisation) -> Value + use<> {
    let id = id.clone();
    move |document| {
        document
            .queues
            .iter()
            .find(|q| q.id == id)
            .and_then(|q| serde_json::to_value(q).ok())
            .unwrap_or(Value::Null)
    }
}

/// A value rule the new organisation breaks: 422 naming the field.
fn invalid(e: ConfigError) -> Problem {
    let message = match &e {
        ConfigError::Invalid { field, reason, .. } => format!("{field}: {reason}"),
        other => other.to_string(),
    };
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_organisation",
        message,
    )
}

/// A JSON object body, `application/json` or `application/merge-patch+json`.
pub(super) fn object_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, Problem> {
    let merge_patch = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/merge-patch+json")
        });
    if merge_patch {
        let mut plain = headers.clone();
        plain.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return json_object(&plain, body);
    }
    json_object(headers, body)
}

/// `value` as an organisation (400 naming what does not fit the schema).
fn organisation_of(value: Value) -> Result<Organisation, Problem> {
    serde_json::from_value(value)
        .map_err(|e| Problem::bad_request("invalid_body", format!("body: {e}")))
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes,
/// anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Agents sent without a password keep the one they have (the API never
/// shows passwords, so a document read and sent back must not lose them).
fn keep_passwords(new: &mut Organisation, old: &Organisation) {
    for agent in &mut new.agents {
        if agent.password.is_none()
            && let Some(old) = old.agents.iter().find(|a| a.id == agent.id)
        {
            agent.password = old.password.clone();
        }
    }
}

/// The redacted form carries `password_set`, which the schema does not
/// have: drop it before reading a document back.
fn without_password_set(value: &mut Value) {
    if let Some(agents) = value.get_mut("agents").and_then(Value::as_array_mut) {
        for agent in agents {
            if let Some(agent) = agent.as_object_mut() {
                agent.remove("password_set");
            }
        }
    }
}

/// The organisation in force (`ETag: "<version>"`); a non-admin sees the
/// queues of their units and the agents serving them.
#[utoipa::path(get, path = "/v1/org", tag = "organisation",
    responses((status = 200, description = "The organisation", body = OrgBody,
        headers(("ETag" = String, description = "`\"<version>\"`")))))]
pub(super) async fn get_org(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Result<Response, Problem> {
    let (version, document, stored) = current(&state).await?;
    Ok(org_response(&who, version, &document, stored.as_ref()))
}

/// Replaces the organisation; an agent without `password` keeps its own.
#[utoipa::path(put, path = "/v1/org", tag = "organisation", request_body(description = "The `organisation` object (`{\"org\",\"queues\",\"agents\"}`)", content(
        (Object = "application/json"), (Object = "application/merge-patch+json"))),
    params(("If-Match" = Option<String>, Header, description = "`\"<version>\"` (the ETag of GET /v1/org) or `*`")),
    responses(
        (status = 200, description = "The organisation now in force", body = OrgBody),
        (status = 400, description = "`invalid_body`, `invalid_header` (If-Match)", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: another version is in force", body = ErrorBody),
        (status = 409, description = "`version_conflict`: the organisation changed meanwhile; retry", body = ErrorBody),
        (status = 422, description = "`invalid_organisation`: names the field as in config.toml", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn put_org(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let mut value = object_body(&headers, body)?;
    without_password_set(&mut value);
    let mut new = organisation_of(value)?;
    let expected = if_match(&headers)?;
    let (version, document, _) = change(
        &state,
        &who,
        expected,
        ("set_organisation", "organisation".into(), redacted),
        |doc| {
            keep_passwords(&mut new, doc);
            *doc = new;
            Ok(())
        },
    )
    .await?;
    Ok(org_response(&who, version, &document, None))
}

/// A JSON merge patch (RFC 7396) over the organisation; arrays are
/// replaced whole.
#[utoipa::path(patch, path = "/v1/org", tag = "organisation", request_body(description = "The `organisation` object (`{\"org\",\"queues\",\"agents\"}`)", content(
        (Object = "application/json"), (Object = "application/merge-patch+json"))),
    params(("If-Match" = Option<String>, Header, description = "`\"<version>\"` (the ETag of GET /v1/org) or `*`")),
    responses(
        (status = 200, description = "The organisation now in force", body = OrgBody),
        (status = 400, description = "`invalid_body`, `invalid_header` (If-Match)", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: another version is in force", body = ErrorBody),
        (status = 409, description = "`version_conflict`: the organisation changed meanwhile; retry", body = ErrorBody),
        (status = 422, description = "`invalid_organisation`: names the field as in config.toml", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn patch_org(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let patch = object_body(&headers, body)?;
    let expected = if_match(&headers)?;
    let (version, document, _) = change(
        &state,
        &who,
        expected,
        ("patch_organisation", "organisation".into(), redacted),
        |doc| {
            let mut value = redacted(doc);
            merge_patch(&mut value, &patch);
            without_password_set(&mut value);
            let mut new = organisation_of(value)?;
            keep_passwords(&mut new, doc);
            *doc = new;
            Ok(())
        },
    )
    .await?;
    Ok(org_response(&who, version, &document, None))
}

async fn switches_body(
    state: &ApiState,
    who: &Principal,
    version: u64,
    document: &Organisation,
) -> Result<SwitchesBody, Problem> {
    let pending = state
        .with_store(|store| Ok(store.pending_by_queue()?))
        .await?;
    let org = Switches {
        registration_enabled: document.org.registration_enabled,
        launch_enabled: document.org.launch_enabled,
    };
    let mut queues = BTreeMap::new();
    let mut pending_callbacks = BTreeMap::new();
    let mut warnings = Vec::new();
    for q in document.queues.iter().filter(|q| who.sees_queue(&q.id)) {
        queues.insert(
            q.id.as_str().to_owned(),
            Switches {
                registration_enabled: q.registration_enabled,
                launch_enabled: q.launch_enabled,
            },
        );
        let waiting = pending.get(&q.id).copied().unwrap_or(0);
        pending_callbacks.insert(q.id.as_str().to_owned(), waiting);
        let launching = org.launch_enabled && q.launch_enabled;
        let registering = org.registration_enabled && q.registration_enabled;
        if !launching && waiting > 0 {
            warnings.push(format!(
                "queue {}: launching is off; {waiting} pending callbacks will launch when it is switched back on",
                q.id
            ));
        }
        if !launching && !registering {
            warnings.push(format!(
                "queue {}: registration and launching are both off: no callback is offered or made",
                q.id
            ));
        }
    }
    if !org.launch_enabled && !org.registration_enabled {
        warnings.insert(
            0,
            "registration and launching are both off for the organisation: the callback service is shut down".to_owned(),
        );
    }
    Ok(SwitchesBody {
        version,
        org,
        queues,
        pending_callbacks,
        warnings,
    })
}

/// The organisation's and each visible queue's switches, pending
/// callbacks per queue and what the switches mean now.
#[utoipa::path(get, path = "/v1/org/switches", tag = "organisation",
    responses((status = 200, description = "The switches", body = SwitchesBody)))]
pub(super) async fn get_switches(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<SwitchesBody>, Problem> {
    let (version, document, _) = current(&state).await?;
    Ok(Json(switches_body(&state, &who, version, &document).await?))
}

impl SwitchChange {
    /// Sets the switches given, leaves the others.
    fn apply(&self, registration_enabled: &mut bool, launch_enabled: &mut bool) {
        if let Some(on) = self.registration_enabled {
            *registration_enabled = on;
        }
        if let Some(on) = self.launch_enabled {
            *launch_enabled = on;
        }
    }
}

/// The queue `id` of `doc`, to change it (404 when a concurrent change
/// deleted it).
fn queue_in<'a>(doc: &'a mut Organisation, id: &QueueId) -> Result<&'a mut QueueConfig, Problem> {
    doc.queues
        .iter_mut()
        .find(|q| q.id == *id)
        .ok_or_else(|| Problem::not_found(format!("id: no queue {:?}", id.as_str())))
}

fn nothing_to_change(change: &SwitchChange) -> Result<(), Problem> {
    if change.registration_enabled.is_none() && change.launch_enabled.is_none() {
        return Err(Problem::bad_request(
            "invalid_body",
            "body: give registration_enabled, launch_enabled or both",
        ));
    }
    Ok(())
}

/// Sets the organisation's switches.
#[utoipa::path(put, path = "/v1/org/switches", tag = "organisation", request_body = SwitchChange,
    responses(
        (status = 200, description = "The switches", body = SwitchesBody),
        (status = 409, description = "`version_conflict`: the organisation changed meanwhile; retry", body = ErrorBody),
        (status = 422, description = "`invalid_organisation`: names the field as in config.toml", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn put_org_switches(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SwitchesBody>, Problem> {
    let wanted: SwitchChange = json_object(&headers, body)?;
    nothing_to_change(&wanted)?;
    let (version, document, _) = change(
        &state,
        &who,
        None,
        ("set_switches", "org".into(), org_switches),
        |doc| {
            wanted.apply(
                &mut doc.org.registration_enabled,
                &mut doc.org.launch_enabled,
            );
            Ok(())
        },
    )
    .await?;
    Ok(Json(switches_body(&state, &who, version, &document).await?))
}

/// The queue `id` of the organisation in force, checked against `who`:
/// 404 unknown, 403 outside their units.
async fn queue_for(state: &ApiState, who: &Principal, id: &str) -> Result<QueueId, Problem> {
    let (_, document, _) = current(state).await?;
    let Some(queue) = document.queues.iter().find(|q| q.id.as_str() == id) else {
        return Err(Problem::not_found(format!("id: no queue {id:?}")));
    };
    if !who.sees_queue(&queue.id) {
        return Err(Problem::forbidden(format!(
            "id: queue {id:?} is not in your units"
        )));
    }
    Ok(queue.id.clone())
}

/// Sets one queue's switches.
#[utoipa::path(put, path = "/v1/queues/{id}/switches", tag = "organisation", request_body = SwitchChange,
    params(("id" = String, Path, description = "The queue's id", example = "closing")),
    responses(
        (status = 200, description = "The switches", body = SwitchesBody),
        (status = 400, description = "`invalid_body`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the queue is not in your units", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`version_conflict`: the organisation changed meanwhile; retry", body = ErrorBody),
        (status = 422, description = "`invalid_organisation`: names the field as in config.toml", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn put_queue_switches(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SwitchesBody>, Problem> {
    let queue = queue_for(&state, &who, &id).await?;
    let wanted: SwitchChange = json_object(&headers, body)?;
    nothing_to_change(&wanted)?;
    let (version, document, _) = change(
        &state,
        &who,
        None,
        ("set_switches", format!("queue:{queue}"), queue_view(&queue)),
        |doc| {
            let q = queue_in(doc, &queue)?;
            wanted.apply(&mut q.registration_enabled, &mut q.launch_enabled);
            Ok(())
        },
    )
    .await?;
    Ok(Json(switches_body(&state, &who, version, &document).await?))
}

/// The visible queues, each as in `[[queues]]`.
#[utoipa::path(get, path = "/v1/queues", tag = "organisation",
    responses((status = 200, description = "The queues", body = Vec<QueueConfig>)))]
pub(super) async fn list_queues(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Vec<QueueConfig>>, Problem> {
    let (_, document, _) = current(&state).await?;
    Ok(Json(
        document
            .queues
            .into_iter()
            .filter(|q| who.sees_queue(&q.id))
            .collect(),
    ))
}

/// `item` with an RFC 7396 merge `patch` applied, read back as an object
/// of the path's `id` (422 `id_mismatch`, 400 `invalid_body`).
pub(super) fn patched<T: serde::Serialize + serde::de::DeserializeOwned>(
    item: &T,
    patch: &Value,
    id: &str,
) -> Result<T, Problem> {
    let mut value = serde_json::to_value(item)
        .expect("configuration objects are strings, numbers, bools, lists and string-keyed maps");
    merge_patch(&mut value, patch);
    of_path_id(value, id)
}

/// `value` as the object named `id` by the path (a queue, a rule): its
/// `id` optional, else equal to the path's.
pub(super) fn of_path_id<T: serde::de::DeserializeOwned>(
    mut value: Value,
    id: &str,
) -> Result<T, Problem> {
    if let Some(object) = value.as_object_mut() {
        match object.get("id") {
            None => {
                object.insert("id".to_owned(), Value::from(id));
            }
            Some(given) if given.as_str() == Some(id) => {}
            Some(given) => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "id_mismatch",
                    format!("id: {given} differs from the path's {id:?}"),
                ));
            }
        }
    }
    serde_json::from_value(value)
        .map_err(|e| Problem::bad_request("invalid_body", format!("body: {e}")))
}

/// Creates or replaces a queue (its `id` optional, else the path's).
#[utoipa::path(put, path = "/v1/queues/{id}", tag = "organisation",
    request_body(content((QueueConfig = "application/json"), (QueueConfig = "application/merge-patch+json"))),
    params(("id" = String, Path, description = "The queue's id", example = "closing")),
    responses(
        (status = 200, description = "Replaced", body = QueueConfig),
        (status = 201, description = "Created", body = QueueConfig),
        (status = 400, description = "`invalid_body`, `invalid_path`", body = ErrorBody),
        (status = 422, description = "`id_mismatch`; `invalid_organisation`: names the field", body = ErrorBody),
        (status = 409, description = "`version_conflict`: the organisation changed meanwhile; retry", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn put_queue(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let queue = of_path_id::<QueueConfig>(object_body(&headers, body)?, &id)?;
    let mut created = false;
    let (_, document, _) = change(
        &state,
        &who,
        None,
        (
            "put_queue",
            format!("queue:{id}"),
            queue_view(&queue.id.clone()),
        ),
        |doc| {
            match doc.queues.iter_mut().find(|q| q.id == queue.id) {
                Some(q) => *q = queue,
                None => {
                    created = true;
                    doc.queues.push(queue);
                }
            }
            Ok(())
        },
    )
    .await?;
    let shown = document.queues.into_iter().find(|q| q.id.as_str() == id);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(shown)).into_response())
}

/// What a manager may change in a queue.
const MANAGER_QUEUE_FIELDS: &[&str] = &["hours", "registration_enabled", "launch_enabled"];

/// A merge patch over a queue; a manager may change `hours`,
/// `registration_enabled` and `launch_enabled` only.
#[utoipa::path(patch, path = "/v1/queues/{id}", tag = "organisation",
    request_body(description = "A JSON merge patch over the queue", content(
        (Object = "application/json"), (Object = "application/merge-patch+json"))),
    params(("id" = String, Path, description = "The queue's id", example = "closing")),
    responses(
        (status = 200, description = "The queue", body = QueueConfig),
        (status = 400, description = "`invalid_body`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another unit's queue, or a field a manager may not change", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`id_mismatch`; `invalid_organisation`: names the field", body = ErrorBody),
        (status = 409, description = "`version_conflict`: the organisation changed meanwhile; retry", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn patch_queue(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<QueueConfig>, Problem> {
    let queue = queue_for(&state, &who, &id).await?;
    let patch = object_body(&headers, body)?;
    if who.role != Role::Admin
        && let Some(field) = patch.as_object().and_then(|o| {
            o.keys()
                .find(|k| !MANAGER_QUEUE_FIELDS.contains(&k.as_str()))
        })
    {
        return Err(Problem::forbidden(format!(
            "{field}: a manager may change only {} of a queue",
            MANAGER_QUEUE_FIELDS.join(", ")
        )));
    }
    let (_, document, _) = change(
        &state,
        &who,
        None,
        ("patch_queue", format!("queue:{queue}"), queue_view(&queue)),
        |doc| {
            let q = queue_in(doc, &queue)?;
            *q = patched(&*q, &patch, queue.as_str())?;
            Ok(())
        },
    )
    .await?;
    document
        .queues
        .into_iter()
        .find(|q| q.id == queue)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("id: no queue {id:?}")))
}

/// Deletes a queue that no pending callback and no unit uses.
#[utoipa::path(delete, path = "/v1/queues/{id}", tag = "organisation",
    params(("id" = String, Path, description = "The queue's id", example = "closing")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`queue_in_use`; `version_conflict`", body = ErrorBody),
        (status = 422, description = "`invalid_organisation`: the organisation would break a rule (the last queue, a failover to it)", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn delete_queue(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
) -> Result<StatusCode, Problem> {
    let queue = queue_for(&state, &who, &id).await?;
    let pending = {
        let queue = queue.clone();
        state
            .with_store(move |store| {
                Ok(store.pending_by_queue()?.get(&queue).copied().unwrap_or(0))
            })
            .await?
    };
    if pending > 0 {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "queue_in_use",
            format!("id: queue {id:?} has {pending} pending callbacks; cancel or move them first"),
        ));
    }
    let units = {
        let queue = queue.clone();
        state
            .with_store(move |store| {
                use crate::callback::store::AccountStore;
                Ok(store
                    .units()?
                    .into_iter()
                    .filter(|u| u.queues.contains(&queue))
                    .map(|u| u.name)
                    .collect::<Vec<_>>())
            })
            .await?
    };
    if !units.is_empty() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "queue_in_use",
            format!(
                "id: queue {id:?} is grouped by the units {}; remove it from them first",
                units.join(", ")
            ),
        ));
    }
    change(
        &state,
        &who,
        None,
        ("delete_queue", format!("queue:{queue}"), queue_view(&queue)),
        |doc| {
            doc.queues.retain(|q| q.id != queue);
            for agent in &mut doc.agents {
                agent.queues.retain(|q| *q != queue);
            }
            Ok(())
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // RFC 7396 Appendix A, a few of its cases.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }
}
