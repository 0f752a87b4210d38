//! Who may call a route: bearer tokens checked against the account store,
//! and the rule each route declares in [`ROUTES`](super::ROUTES).

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

use crate::callback::store::accounts::token_hash;
use crate::callback::store::{AccountStore, Authentication, Principal, Role};

use super::{ApiState, Problem};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Anyone who reaches the listener (`/health`).
    Public,
    /// Public while `[api] metrics_public` is true (the default), otherwise
    /// as [`Rule::Viewer`].
    Metrics,
    /// Any user with a valid token; what they see is limited to their
    /// units.
    Viewer,
    /// A manager or an admin; a manager acts only on their units' objects.
    Manager,
    /// An admin.
    Admin,
}

impl Rule {
    /// The least role that passes (`None`: no token needed).
    pub fn least_role(self, metrics_public: bool) -> Option<Role> {
        match self {
            Rule::Public => None,
            Rule::Metrics if metrics_public => None,
            Rule::Metrics | Rule::Viewer => Some(Role::Viewer),
            Rule::Manager => Some(Role::Manager),
            Rule::Admin => Some(Role::Admin),
        }
    }
}

/// The route layer of a route with `rule`: passes the request on with the
/// caller's [`Principal`] in its extensions, or answers 401 (no, malformed,
/// unknown, expired or revoked token, disabled user) or 403 (role too low).
pub(super) async fn authorize(
    State(state): State<ApiState>,
    rule: Rule,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(least) = rule.least_role(state.options().metrics_public) else {
        return next.run(request).await;
    };
    // The hash is taken before any await: the request (its body) is not
    // Sync, so no reference to it may live across one.
    let principal = match bearer_hash(request.headers()) {
        Ok(hash) => match authenticate(&state, hash).await {
            Ok(p) => p,
            Err(problem) => return problem.into_response(),
        },
        Err(problem) => return problem.into_response(),
    };
    if principal.role < least {
        return Problem::forbidden(format!(
            "role: {} may not {} {}; it needs {least}",
            principal.role,
            request.method(),
            request.uri().path()
        ))
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The SHA-256 of the bearer token in `headers` (401 when there is none,
/// or it is not a callbackd token).
fn bearer_hash(headers: &HeaderMap) -> Result<[u8; 32], Problem> {
    let Some(header) = headers.get(AUTHORIZATION) else {
        return Err(unauthorized(
            None,
            "Authorization: a bearer token is required",
        ));
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| {
            unauthorized(
                Some("invalid_request"),
                "Authorization: expected \"Bearer <token>\"",
            )
        })?;
    // A string without the token format is refused without a lookup.
    token_hash(token).ok_or_else(|| {
        unauthorized(
            Some("invalid_token"),
            "Authorization: not a callbackd token",
        )
    })
}

async fn authenticate(state: &ApiState, hash: [u8; 32]) -> Result<Principal, Problem> {
    let now = Timestamp::now();
    let found = state
        .with_store(move |store| Ok(store.authenticate(&hash, now)?))
        .await?;
    match found {
        Authentication::Valid(principal) => Ok(principal),
        Authentication::Unknown => Err(unauthorized(
            Some("invalid_token"),
            "Authorization: unknown token",
        )),
        Authentication::Expired => Err(unauthorized(
            Some("invalid_token"),
            "Authorization: the token has expired",
        )),
        Authentication::Revoked => Err(unauthorized(
            Some("invalid_token"),
            "Authorization: the token was revoked",
        )),
        Authentication::UserDisabled => Err(unauthorized(
            Some("invalid_token"),
            "Authorization: the token's user is disabled",
        )),
    }
}

/// A 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3; `error` when a
/// token was presented and refused).
fn unauthorized(error: Option<&'static str>, message: &str) -> Problem {
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"callbackd\", error=\"{e}\""),
        None => "Bearer realm=\"callbackd\"".to_owned(),
    };
    let mut problem = Problem::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
    );
    problem.header = Some((
        WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).expect("the challenge is ASCII without controls"),
    ));
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_roles_follow_the_rule() {
        assert_eq!(Rule::Public.least_role(false), None);
        assert_eq!(Rule::Metrics.least_role(true), None);
        assert_eq!(Rule::Metrics.least_role(false), Some(Role::Viewer));
        assert_eq!(Rule::Viewer.least_role(true), Some(Role::Viewer));
        assert_eq!(Rule::Manager.least_role(true), Some(Role::Manager));
        assert_eq!(Rule::Admin.least_role(true), Some(Role::Admin));
    }
}
