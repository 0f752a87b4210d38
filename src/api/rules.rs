//! Missed-call rules and the organisation's freeze (issue 13), part of the
//! organisation at run time: every change goes through
//! [`org::change`](super::org) — checked by the configuration's value
//! rules (a 422 names the field, `missed_call_rules[0].intervals_min[2]`),
//! stored as the next version with its audit row, applied to the engine.
//! A rule switched off or deleted has its pending tasks cancelled as the
//! change is applied; tasks are callbacks of type `missed_call`
//! (`GET /v1/callbacks?type=missed_call`).
//!
//! | method | path | rule | answer |
//! |---|---|---|---|
//! | GET | `/v1/missed-call-rules` | viewer | the rules, each as in `[[missed_call_rules]]`; a non-admin sees those for queues of their units |
//! | PUT | `/v1/missed-call-rules/{id}` | admin | a `[[missed_call_rules]]` object (its `id` optional, else the path's) → 201 created / 200 replaced |
//! | PATCH | `/v1/missed-call-rules/{id}` | manager | a merge patch; a manager may switch `enabled` of a rule whose queues are all theirs |
//! | DELETE | `/v1/missed-call-rules/{id}` | admin | 204 |
//! | PUT | `/v1/org/freeze` | admin | `{"frozen": true}`: every rule off, launching off, pending tasks cancelled; `{"frozen": false}` lifts the freeze and turns nothing back on → 200 `{"frozen","launch_enabled","rules_enabled"}` |
//!
//! While the organisation is frozen, a change that would switch a rule or
//! launching on is refused (409 `org_frozen`): unfreeze first.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::org::{change, current, object_body, of_path_id, patched};
use super::{ApiState, ErrorBody, Problem, Segment, json_object};
use crate::callback::store::{Principal, Role};
use crate::config::{MissedCallRuleConfig, Organisation};

/// Whether `who` may see (and, as a manager, switch) `rule`: an admin any;
/// anyone else a rule that names queues, all of them theirs.
fn sees(who: &Principal, rule: &MissedCallRuleConfig) -> bool {
    who.role == Role::Admin
        || (!rule.queues.is_empty() && rule.queues.iter().all(|q| who.sees_queue(q)))
}

/// One rule as configured (`null` when absent), for the audit log.
fn rule_view(id: &str) -> impl Fn(&Organisation) -> Value + use<> {
    let id = id.to_owned();
    move |document| {
        document
            .missed_call_rules
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| serde_json::to_value(r).ok())
            .unwrap_or(Value::Null)
    }
}

/// Refuses a document that is frozen yet has a rule or launching on
/// ([`change`] runs it on every change of the organisation).
pub(super) fn check_frozen(doc: &Organisation) -> Result<(), Problem> {
    if !doc.org.frozen {
        return Ok(());
    }
    let on = doc
        .missed_call_rules
        .iter()
        .find(|r| r.enabled)
        .map(|r| format!("missed_call_rules {:?} enabled", r.id))
        .or_else(|| {
            doc.org
                .launch_enabled
                .then(|| "org.launch_enabled".to_owned())
        });
    match on {
        None => Ok(()),
        Some(what) => Err(Problem::new(
            StatusCode::CONFLICT,
            "org_frozen",
            format!("{what}: the organisation is frozen; unfreeze it first (PUT /v1/org/freeze)"),
        )),
    }
}

/// The missed-call rules `who` may see.
#[utoipa::path(get, path = "/v1/missed-call-rules", tag = "organisation",
    responses((status = 200, description = "The rules", body = Vec<MissedCallRuleConfig>)))]
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Vec<MissedCallRuleConfig>>, Problem> {
    let (_, document, _) = current(&state).await?;
    Ok(Json(
        document
            .missed_call_rules
            .into_iter()
            .filter(|r| sees(&who, r))
            .collect(),
    ))
}

/// Creates or replaces a rule (its `id` optional, else the path's).
#[utoipa::path(put, path = "/v1/missed-call-rules/{id}", tag = "organisation",
    request_body = MissedCallRuleConfig,
    params(("id" = String, Path, description = "The rule's id", example = "ivr-missed")),
    responses(
        (status = 200, description = "Replaced", body = MissedCallRuleConfig),
        (status = 201, description = "Created", body = MissedCallRuleConfig),
        (status = 400, description = "`invalid_body`, `invalid_path`", body = ErrorBody),
        (status = 409, description = "`org_frozen`: an enabled rule while frozen; `version_conflict`", body = ErrorBody),
        (status = 422, description = "`id_mismatch`; `invalid_organisation`: names the field", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn put(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let rule = of_path_id::<MissedCallRuleConfig>(object_body(&headers, body)?, &id)?;
    let mut created = false;
    let (_, document, _) = change(
        &state,
        &who,
        None,
        ("put_missed_call_rule", format!("rule:{id}"), rule_view(&id)),
        |doc| {
            match doc.missed_call_rules.iter_mut().find(|r| r.id == rule.id) {
                Some(r) => *r = rule,
                None => {
                    created = true;
                    doc.missed_call_rules.push(rule);
                }
            }
            Ok(())
        },
    )
    .await?;
    let shown = document.missed_call_rules.into_iter().find(|r| r.id == id);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(shown)).into_response())
}

/// A merge patch over a rule; a manager may change `enabled` only.
#[utoipa::path(patch, path = "/v1/missed-call-rules/{id}", tag = "organisation",
    request_body(description = "A JSON merge patch over the rule", content(
        (Object = "application/json"), (Object = "application/merge-patch+json"))),
    params(("id" = String, Path, description = "The rule's id", example = "ivr-missed")),
    responses(
        (status = 200, description = "The rule", body = MissedCallRuleConfig),
        (status = 400, description = "`invalid_body`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another unit's rule, or a field a manager may not change", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`org_frozen`; `version_conflict`", body = ErrorBody),
        (status = 422, description = "`id_mismatch`; `invalid_organisation`: names the field", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn patch(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MissedCallRuleConfig>, Problem> {
    let patch = object_body(&headers, body)?;
    let (_, document, _) = current(&state).await?;
    let Some(existing) = document.missed_call_rules.iter().find(|r| r.id == id) else {
        return Err(Problem::not_found(format!(
            "id: no missed-call rule {id:?}"
        )));
    };
    if !sees(&who, existing) {
        return Err(Problem::forbidden(format!(
            "id: rule {id:?} takes queues outside your units"
        )));
    }
    if who.role != Role::Admin
        && let Some(field) = patch
            .as_object()
            .and_then(|o| o.keys().find(|k| k.as_str() != "enabled"))
    {
        return Err(Problem::forbidden(format!(
            "{field}: a manager may change only enabled of a rule"
        )));
    }
    let (_, document, _) = change(
        &state,
        &who,
        None,
        (
            "patch_missed_call_rule",
            format!("rule:{id}"),
            rule_view(&id),
        ),
        |doc| {
            let rule = doc
                .missed_call_rules
                .iter_mut()
                .find(|r| r.id == id)
                .ok_or_else(|| Problem::not_found(format!("id: no missed-call rule {id:?}")))?;
            *rule = patched(&*rule, &patch, &id)?;
            Ok(())
        },
    )
    .await?;
    document
        .missed_call_rules
        .into_iter()
        .find(|r| r.id == id)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("id: no missed-call rule {id:?}")))
}

/// Deletes a rule; its pending tasks are cancelled.
#[utoipa::path(delete, path = "/v1/missed-call-rules/{id}", tag = "organisation",
    params(("id" = String, Path, description = "The rule's id", example = "ivr-missed")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`version_conflict`", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
) -> Result<StatusCode, Problem> {
    let (_, document, _) = current(&state).await?;
    if !document.missed_call_rules.iter().any(|r| r.id == id) {
        return Err(Problem::not_found(format!(
            "id: no missed-call rule {id:?}"
        )));
    }
    change(
        &state,
        &who,
        None,
        (
            "delete_missed_call_rule",
            format!("rule:{id}"),
            rule_view(&id),
        ),
        |doc| {
            doc.missed_call_rules.retain(|r| r.id != id);
            Ok(())
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"frozen": bool}`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeChange {
    /// Freeze (true) or lift the freeze (false).
    pub frozen: bool,
}

/// `PUT /v1/org/freeze` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FreezeBody {
    /// The organisation is frozen.
    pub frozen: bool,
    /// `[org] launch_enabled` now.
    pub launch_enabled: bool,
    /// The rules that are on now.
    pub rules_enabled: Vec<String>,
}

/// Freezes the organisation (every missed-call rule and launching off,
/// pending tasks cancelled), or lifts the freeze (nothing is switched back
/// on: rules and launching are switched on by hand).
#[utoipa::path(put, path = "/v1/org/freeze", tag = "organisation", request_body = FreezeChange,
    responses(
        (status = 200, description = "The freeze and what is on", body = FreezeBody),
        (status = 400, description = "`invalid_body`", body = ErrorBody),
        (status = 409, description = "`version_conflict`", body = ErrorBody),
        (status = 503, description = "`engine_stopped`: stored, applied at the next start", body = ErrorBody),
    ))]
pub(super) async fn put_freeze(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FreezeBody>, Problem> {
    let wanted: FreezeChange = json_object(&headers, body)?;
    let view = |doc: &Organisation| {
        serde_json::json!({
            "frozen": doc.org.frozen,
            "launch_enabled": doc.org.launch_enabled,
            "rules_enabled": doc.missed_call_rules.iter().filter(|r| r.enabled).map(|r| r.id.clone()).collect::<Vec<_>>(),
        })
    };
    let (_, document, _) = change(
        &state,
        &who,
        None,
        ("set_freeze", "org".into(), view),
        |doc| {
            doc.org.frozen = wanted.frozen;
            if wanted.frozen {
                doc.org.launch_enabled = false;
                for rule in &mut doc.missed_call_rules {
                    rule.enabled = false;
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(Json(FreezeBody {
        frozen: document.org.frozen,
        launch_enabled: document.org.launch_enabled,
        rules_enabled: document
            .missed_call_rules
            .iter()
            .filter(|r| r.enabled)
            .map(|r| r.id.clone())
            .collect(),
    }))
}
