//! The account routes: the caller (`/v1/me`), users, their tokens and
//! passwords, business units, and the audit log (see the table in
//! [`crate::api`]). Every change goes through [`AccountStore`], which writes
//! its audit row in the same transaction.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::callback::QueueId;
use crate::callback::store::accounts::{hash_password, verify_password};
use crate::callback::store::{
    AccountStore, AuditQuery, AuditRow, NewToken, NewUser, Principal, Role, TokenInfo, TokenSecret,
    Unit, UnitPatch, User, UserPatch,
};

use super::{ApiState, ErrorBody, Problem, Segment, change_by, json_object, query_of};

/// Largest page of `/v1/audit`.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// Page size of `/v1/audit` without `limit`.
pub const DEFAULT_AUDIT_PAGE: u32 = 100;

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserBody {
    /// Unique name.
    pub name: String,
    /// `admin`, `manager` or `viewer`.
    pub role: Role,
    /// Business units by name.
    pub units: Vec<String>,
    /// A console password is set.
    pub has_password: bool,
    /// Refused everywhere while set.
    pub disabled: bool,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl From<User> for UserBody {
    fn from(u: User) -> UserBody {
        UserBody {
            name: u.name,
            role: u.role,
            units: u.units,
            has_password: u.has_password,
            disabled: u.disabled,
            created_at: u.created_at.to_string(),
        }
    }
}

/// `GET /v1/me` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Me)]
pub struct MeBody {
    /// The caller's name.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// Their business units.
    pub units: Vec<String>,
    /// The queues of those units (an admin sees every queue regardless).
    pub queues: Vec<String>,
}

/// A token as the API shows it: never its secret, except once in
/// [`IssuedTokenBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenBody {
    /// Id (for `DELETE /v1/tokens/{id}`).
    pub id: i64,
    /// Its user.
    pub user: String,
    /// What it is for.
    pub label: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, if it expires.
    pub expires_at: Option<String>,
    /// RFC 3339 UTC, if revoked.
    pub revoked_at: Option<String>,
    /// RFC 3339 UTC, last accepted use (minute granularity).
    pub last_used_at: Option<String>,
}

impl From<TokenInfo> for TokenBody {
    fn from(t: TokenInfo) -> TokenBody {
        TokenBody {
            id: t.id,
            user: t.user,
            label: t.label,
            created_at: t.created_at.to_string(),
            expires_at: t.expires_at.map(|t| t.to_string()),
            revoked_at: t.revoked_at.map(|t| t.to_string()),
            last_used_at: t.last_used_at.map(|t| t.to_string()),
        }
    }
}

/// `POST /v1/users/{name}/tokens` answer: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = IssuedToken)]
pub struct IssuedTokenBody {
    /// `cbd_…`: keep it; it cannot be shown again.
    pub token: String,
    /// The stored token.
    #[serde(flatten)]
    pub info: TokenBody,
}

/// A business unit as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Unit)]
pub struct UnitBody {
    /// Unique name.
    pub name: String,
    /// Queue ids.
    pub queues: Vec<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl From<Unit> for UnitBody {
    fn from(u: Unit) -> UnitBody {
        UnitBody {
            name: u.name,
            queues: u.queues.iter().map(|q| q.as_str().to_owned()).collect(),
            created_at: u.created_at.to_string(),
        }
    }
}

/// One `/v1/audit` entry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditBody {
    /// Id (increasing).
    pub id: i64,
    /// RFC 3339 UTC.
    pub at: String,
    /// The user who made the change (`cli` for the command line).
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// The object before.
    pub before: Option<serde_json::Value>,
    /// The object after.
    pub after: Option<serde_json::Value>,
}

impl From<AuditRow> for AuditBody {
    fn from(r: AuditRow) -> AuditBody {
        AuditBody {
            id: r.id,
            at: r.at.to_string(),
            actor: r.actor,
            action: r.action,
            target: r.target,
            before: r.before,
            after: r.after,
        }
    }
}

/// `GET /v1/audit` body.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = AuditPage)]
pub struct AuditPage {
    /// Oldest first.
    pub entries: Vec<AuditBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewUser)]
struct NewUserBody {
    /// Unique name.
    #[schema(example = "ann")]
    name: String,
    /// `admin`, `manager` or `viewer`.
    #[schema(example = "manager")]
    role: Role,
    /// Business units by name.
    #[serde(default)]
    units: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UserChange)]
struct UserPatchBody {
    /// The new role.
    role: Option<Role>,
    /// The business units, replaced whole.
    units: Option<Vec<String>>,
    /// Refuse the user's tokens while set.
    disabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Password)]
struct PasswordBody {
    /// The new console password.
    password: String,
    /// The one set now (`PUT /v1/me/password` once a password is set;
    /// refused on `PUT /v1/users/{name}/password`).
    current_password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewToken)]
struct NewTokenBody {
    /// What it is for.
    #[serde(default)]
    label: String,
    /// RFC 3339, in the future; none: it does not expire.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewUnit)]
struct NewUnitBody {
    /// Unique name.
    #[schema(example = "east")]
    name: String,
    /// Configured queue ids.
    #[serde(default)]
    #[schema(example = json!(["support"]))]
    queues: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UnitChange)]
struct UnitPatchBody {
    /// A new name.
    name: Option<String>,
    /// Configured queue ids, replaced whole.
    queues: Option<Vec<String>>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditParams {
    /// RFC 3339: changes at or after.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339: changes before.
    #[param(format = DateTime)]
    to: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The caller: name, role, units and the queues they see.
#[utoipa::path(get, path = "/v1/me", tag = "accounts",
    responses((status = 200, description = "The caller", body = MeBody)))]
pub(super) async fn me(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Json<MeBody> {
    let queues = if who.role == Role::Admin {
        state.options().queues.clone()
    } else {
        who.queues.iter().cloned().collect()
    };
    Json(MeBody {
        name: who.name,
        role: who.role,
        units: who.units,
        queues: queues.iter().map(|q| q.as_str().to_owned()).collect(),
    })
}

/// Sets the caller's console password.
#[utoipa::path(put, path = "/v1/me/password", tag = "accounts", request_body = PasswordBody,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "`invalid_body` (`current_password` missing), `invalid_password`", body = ErrorBody),
        (status = 403, description = "`forbidden`: `current_password` does not match", body = ErrorBody),
    ))]
pub(super) async fn put_my_password(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let body: PasswordBody = json_object(&headers, body)?;
    let change = change_by(&who);
    state
        .with_store(move |store| {
            // Once a password is set, changing it takes the old one: a
            // token alone does not take over the console login.
            if let Some(current) = store.password_hash(&who.name)? {
                let given = body.current_password.as_deref().ok_or_else(|| {
                    Problem::bad_request(
                        "invalid_body",
                        "current_password: required to change a password that is set",
                    )
                })?;
                if !verify_password(given, &current) {
                    return Err(Problem::forbidden(
                        "current_password: does not match".to_owned(),
                    ));
                }
            }
            let phc = password_hash_of(&body.password)?;
            store.set_password(&who.name, Some(&phc), &change)?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every user.
#[utoipa::path(get, path = "/v1/users", tag = "accounts",
    responses((status = 200, description = "The users", body = Vec<UserBody>)))]
pub(super) async fn list_users(
    State(state): State<ApiState>,
) -> Result<Json<Vec<UserBody>>, Problem> {
    let users = state.with_store(|store| Ok(store.users()?)).await?;
    Ok(Json(users.into_iter().map(UserBody::from).collect()))
}

/// Creates a user (no token yet: issue one).
#[utoipa::path(post, path = "/v1/users", tag = "accounts", request_body = NewUserBody,
    responses(
        (status = 201, description = "The user", body = UserBody),
        (status = 400, description = "`invalid_body`, `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`: a unit named does not exist", body = ErrorBody),
        (status = 409, description = "`already_exists`", body = ErrorBody),
    ))]
pub(super) async fn create_user(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body: NewUserBody = json_object(&headers, body)?;
    let change = change_by(&who);
    let user = state
        .with_store(move |store| {
            Ok(store.create_user(
                &NewUser {
                    name: body.name,
                    role: body.role,
                    units: body.units,
                },
                &change,
            )?)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(UserBody::from(user))).into_response())
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{name}", tag = "accounts", params(("name" = String, Path, description = "The user's name", example = "vic")),
    responses(
        (status = 200, description = "The user", body = UserBody),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn get_user(
    State(state): State<ApiState>,
    Segment(name): Segment,
) -> Result<Json<UserBody>, Problem> {
    let user = state
        .with_store(move |store| {
            store
                .user(&name)?
                .ok_or_else(|| Problem::not_found(format!("name: no user {name:?}")))
        })
        .await?;
    Ok(Json(user.into()))
}

/// Changes a user's role, units or disabled flag.
#[utoipa::path(patch, path = "/v1/users/{name}", tag = "accounts", request_body = UserPatchBody, params(("name" = String, Path, description = "The user's name", example = "vic")),
    responses(
        (status = 200, description = "The user", body = UserBody),
        (status = 400, description = "`invalid_body`, `invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user or unit", body = ErrorBody),
        (status = 409, description = "`last_admin`: it would leave no enabled admin", body = ErrorBody),
    ))]
pub(super) async fn patch_user(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(name): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UserBody>, Problem> {
    let body: UserPatchBody = json_object(&headers, body)?;
    let patch = UserPatch {
        role: body.role,
        units: body.units,
        disabled: body.disabled,
    };
    let change = change_by(&who);
    let user = state
        .with_store(move |store| {
            let demotes =
                patch.role.is_some_and(|r| r != Role::Admin) || patch.disabled == Some(true);
            if demotes {
                keep_an_admin(store, &name)?;
            }
            Ok(store.update_user(&name, &patch, &change)?)
        })
        .await?;
    Ok(Json(user.into()))
}

/// Deletes a user and their tokens.
#[utoipa::path(delete, path = "/v1/users/{name}", tag = "accounts", params(("name" = String, Path, description = "The user's name", example = "vic")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`last_admin`: it would leave no enabled admin", body = ErrorBody),
    ))]
pub(super) async fn delete_user(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(name): Segment,
) -> Result<StatusCode, Problem> {
    let change = change_by(&who);
    state
        .with_store(move |store| {
            keep_an_admin(store, &name)?;
            Ok(store.delete_user(&name, &change)?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a user's console password.
#[utoipa::path(put, path = "/v1/users/{name}/password", tag = "accounts", request_body = PasswordBody, params(("name" = String, Path, description = "The user's name", example = "vic")),
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "`invalid_body`, `invalid_password`, `invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn put_user_password(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(name): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let body: PasswordBody = json_object(&headers, body)?;
    if body.current_password.is_some() {
        return Err(Problem::bad_request(
            "invalid_body",
            "current_password: an admin sets a password without it",
        ));
    }
    let change = change_by(&who);
    state
        .with_store(move |store| {
            let phc = password_hash_of(&body.password)?;
            Ok(store.set_password(&name, Some(&phc), &change)?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's tokens, without secrets.
#[utoipa::path(get, path = "/v1/users/{name}/tokens", tag = "accounts", params(("name" = String, Path, description = "The user's name", example = "vic")),
    responses(
        (status = 200, description = "The tokens", body = Vec<TokenBody>),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    ))]
pub(super) async fn list_tokens(
    State(state): State<ApiState>,
    Segment(name): Segment,
) -> Result<Json<Vec<TokenBody>>, Problem> {
    let tokens = state
        .with_store(move |store| Ok(store.tokens(Some(&name))?))
        .await?;
    Ok(Json(tokens.into_iter().map(TokenBody::from).collect()))
}

/// Issues a token for a user: the secret is in this answer only.
#[utoipa::path(post, path = "/v1/users/{name}/tokens", tag = "accounts", request_body = NewTokenBody, params(("name" = String, Path, description = "The user's name", example = "vic")),
    responses(
        (status = 201, description = "The token, with its secret", body = IssuedTokenBody),
        (status = 400, description = "`invalid_body` (`expires_at` not a future RFC 3339 time), `invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn issue_token(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(name): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body: NewTokenBody = json_object(&headers, body)?;
    let change = change_by(&who);
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(text) => {
            let at: Timestamp = text.parse().map_err(|e| {
                Problem::bad_request(
                    "invalid_body",
                    format!("expires_at: {text:?} is not an RFC 3339 time: {e}"),
                )
            })?;
            if at <= change.at {
                return Err(Problem::bad_request(
                    "invalid_body",
                    format!("expires_at: {text:?} is in the past"),
                ));
            }
            Some(at)
        }
    };
    let secret = TokenSecret::generate().map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_randomness",
            format!("cannot draw a token from the OS random source: {e}"),
        )
    })?;
    let new = NewToken {
        user: name,
        label: body.label,
        expires_at,
        hash: secret.hash,
    };
    let info = state
        .with_store(move |store| Ok(store.issue_token(&new, &change)?))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedTokenBody {
            token: secret.text,
            info: info.into(),
        }),
    )
        .into_response())
}

/// Revokes a token.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "accounts",
    params(("id" = i64, Path, description = "The token's id")),
    responses(
        (status = 200, description = "The token, revoked", body = TokenBody),
        (status = 400, description = "`invalid_path`: not a token id", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn revoke_token(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
) -> Result<Json<TokenBody>, Problem> {
    let id: i64 = id.parse().map_err(|_| {
        Problem::bad_request("invalid_path", format!("id: {id:?} is not a token id"))
    })?;
    let change = change_by(&who);
    let info = state
        .with_store(move |store| Ok(store.revoke_token(id, &change)?))
        .await?;
    Ok(Json(info.into()))
}

/// Every business unit.
#[utoipa::path(get, path = "/v1/units", tag = "accounts",
    responses((status = 200, description = "The units", body = Vec<UnitBody>)))]
pub(super) async fn list_units(
    State(state): State<ApiState>,
) -> Result<Json<Vec<UnitBody>>, Problem> {
    let units = state.with_store(|store| Ok(store.units()?)).await?;
    Ok(Json(units.into_iter().map(UnitBody::from).collect()))
}

/// Creates a business unit grouping configured queues.
#[utoipa::path(post, path = "/v1/units", tag = "accounts", request_body = NewUnitBody,
    responses(
        (status = 201, description = "The unit", body = UnitBody),
        (status = 400, description = "`invalid_body`, `invalid_name`, `unknown_queue`", body = ErrorBody),
        (status = 409, description = "`already_exists`", body = ErrorBody),
    ))]
pub(super) async fn create_unit(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body: NewUnitBody = json_object(&headers, body)?;
    let queues = configured_queues(&state, &body.queues)?;
    let change = change_by(&who);
    let unit = state
        .with_store(move |store| Ok(store.create_unit(&body.name, &queues, &change)?))
        .await?;
    Ok((StatusCode::CREATED, Json(UnitBody::from(unit))).into_response())
}

/// Renames a unit or replaces its queues.
#[utoipa::path(patch, path = "/v1/units/{name}", tag = "accounts", request_body = UnitPatchBody,
    params(("name" = String, Path, description = "The unit's name")),
    responses(
        (status = 200, description = "The unit", body = UnitBody),
        (status = 400, description = "`invalid_body`, `invalid_name`, `unknown_queue`, `invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_exists`: the new name is taken", body = ErrorBody),
    ))]
pub(super) async fn patch_unit(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(name): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UnitBody>, Problem> {
    let body: UnitPatchBody = json_object(&headers, body)?;
    let patch = UnitPatch {
        name: body.name,
        queues: body
            .queues
            .map(|q| configured_queues(&state, &q))
            .transpose()?,
    };
    let change = change_by(&who);
    let unit = state
        .with_store(move |store| Ok(store.update_unit(&name, &patch, &change)?))
        .await?;
    Ok(Json(unit.into()))
}

/// Deletes a unit; its users lose it.
#[utoipa::path(delete, path = "/v1/units/{name}", tag = "accounts",
    params(("name" = String, Path, description = "The unit's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(super) async fn delete_unit(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(name): Segment,
) -> Result<StatusCode, Problem> {
    let change = change_by(&who);
    state
        .with_store(move |store| Ok(store.delete_unit(&name, &change)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The audit log, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/audit", tag = "accounts", params(AuditParams),
    responses(
        (status = 200, description = "One page", body = AuditPage),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
    ))]
pub(super) async fn audit(
    State(state): State<ApiState>,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    let params = query_of(query)?;
    let time = |name: &str, text: Option<String>| -> Result<Option<Timestamp>, Problem> {
        text.map(|t| {
            t.parse().map_err(|e| {
                Problem::bad_request(
                    "invalid_query",
                    format!("{name}: {t:?} is not an RFC 3339 time: {e}"),
                )
            })
        })
        .transpose()
    };
    let limit = params.limit.unwrap_or(DEFAULT_AUDIT_PAGE);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid_query",
            format!("limit: {limit} is outside 1..={MAX_AUDIT_PAGE}"),
        ));
    }
    let after_id = params
        .cursor
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                Problem::bad_request("invalid_query", format!("cursor: {c:?} is not a cursor"))
            })
        })
        .transpose()?;
    let query = AuditQuery {
        from: time("from", params.from)?,
        to: time("to", params.to)?,
        after_id,
        limit,
    };
    let rows = state
        .with_store(move |store| Ok(store.audit(&query)?))
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        entries: rows.into_iter().map(AuditBody::from).collect(),
        next_cursor,
    }))
}

/// `names` as queue ids, each one the configuration has (400 naming the
/// first unknown one).
fn configured_queues(state: &ApiState, names: &[String]) -> Result<Vec<QueueId>, Problem> {
    let options = state.options();
    names
        .iter()
        .map(|name| {
            options
                .queues
                .iter()
                .find(|q| q.as_str() == name)
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<&str> = options.queues.iter().map(QueueId::as_str).collect();
                    Problem::bad_request(
                        "unknown_queue",
                        format!(
                            "queues: no queue {name:?} is configured (known: {})",
                            known.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

/// Refuses (409) a change that would leave no enabled admin, if `name` is
/// one of them: nobody could manage accounts afterwards but the CLI.
fn keep_an_admin(store: &mut impl AccountStore, name: &str) -> Result<(), Problem> {
    let users = store.users()?;
    let is_live_admin = |u: &User| u.role == Role::Admin && !u.disabled;
    let target_is_admin = users.iter().any(|u| u.name == name && is_live_admin(u));
    let others = users
        .iter()
        .filter(|u| u.name != name && is_live_admin(u))
        .count();
    if target_is_admin && others == 0 {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "last_admin",
            format!("name: {name:?} is the last enabled admin; make another admin first"),
        ));
    }
    Ok(())
}

fn password_hash_of(password: &str) -> Result<String, Problem> {
    hash_password(password)
        .map_err(|e| Problem::bad_request("invalid_password", format!("password: {e}")))
}
