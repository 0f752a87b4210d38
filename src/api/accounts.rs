//! The account routes: the caller (`/v1/me`), users, their tokens and
//! passwords, business units, and the audit log (see the table in
//! [`crate::api`]). Every change goes through [`AccountStore`], which writes
//! its audit row in the same transaction.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::callback::QueueId;
use crate::callback::store::accounts::{hash_password, verify_password};
use crate::callback::store::{
    AccountStore, AuditQuery, AuditRow, NewToken, NewUser, Principal, Role, TokenInfo, TokenSecret,
    Unit, UnitPatch, User, UserPatch,
};

use super::{ApiState, Problem, change_by, json_object, query_of};

/// Largest page of `/v1/audit`.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// Page size of `/v1/audit` without `limit`.
pub const DEFAULT_AUDIT_PAGE: u32 = 100;

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedTokenBody {
    /// `cbd_…`: keep it; it cannot be shown again.
    pub token: String,
    /// The stored token.
    #[serde(flatten)]
    pub info: TokenBody,
}

/// A business unit as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    /// Oldest first.
    pub entries: Vec<AuditBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    name: String,
    role: Role,
    #[serde(default)]
    units: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatchBody {
    role: Option<Role>,
    units: Option<Vec<String>>,
    disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
    current_password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTokenBody {
    #[serde(default)]
    label: String,
    expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUnitBody {
    name: String,
    #[serde(default)]
    queues: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitPatchBody {
    name: Option<String>,
    queues: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

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

pub(super) async fn list_users(
    State(state): State<ApiState>,
) -> Result<Json<Vec<UserBody>>, Problem> {
    let users = state.with_store(|store| Ok(store.users()?)).await?;
    Ok(Json(users.into_iter().map(UserBody::from).collect()))
}

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

pub(super) async fn get_user(
    State(state): State<ApiState>,
    UrlPath(name): UrlPath<String>,
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

pub(super) async fn patch_user(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
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

pub(super) async fn delete_user(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
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

pub(super) async fn put_user_password(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
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

pub(super) async fn list_tokens(
    State(state): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Vec<TokenBody>>, Problem> {
    let tokens = state
        .with_store(move |store| Ok(store.tokens(Some(&name))?))
        .await?;
    Ok(Json(tokens.into_iter().map(TokenBody::from).collect()))
}

pub(super) async fn issue_token(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
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

pub(super) async fn revoke_token(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    UrlPath(id): UrlPath<String>,
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

pub(super) async fn list_units(
    State(state): State<ApiState>,
) -> Result<Json<Vec<UnitBody>>, Problem> {
    let units = state.with_store(|store| Ok(store.units()?)).await?;
    Ok(Json(units.into_iter().map(UnitBody::from).collect()))
}

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

pub(super) async fn patch_unit(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
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

pub(super) async fn delete_unit(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, Problem> {
    let change = change_by(&who);
    state
        .with_store(move |store| Ok(store.delete_unit(&name, &change)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

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
