//! The web console (issue 14): server-rendered pages at `/`, on the API's
//! listener, embedded in the binary and working without internet access.
//!
//! | method | path | who | what |
//! |---|---|---|---|
//! | GET | `/sign-in` | anyone | the sign-in form |
//! | POST | `/sign-in` | anyone | name + password → a session cookie, 303 to `/` |
//! | POST | `/sign-out` | signed in | ends the session |
//! | GET | `/` | viewer | the dashboard; its live part is `/dashboard/live`, fetched again every few seconds (htmx) |
//! | GET | `/callbacks[?status=&queue=&number=&cursor=]` | viewer | the callbacks, a page at a time (the API's cursor) |
//! | POST | `/callbacks` | as `POST /v1/callbacks` | schedules a callback |
//! | GET | `/callbacks/{id}` | viewer | one callback, its attempts and call legs |
//! | POST | `/callbacks/{id}/cancel` | as `DELETE /v1/callbacks/{id}` | cancels it |
//! | POST | `/callbacks/{id}/reschedule` | as `PATCH /v1/callbacks/{id}` | moves its launch time |
//! | GET | `/switches` | viewer | the On/Off tab: the organisation's and each queue's switches, pending callbacks, the warnings of `GET /v1/org/switches` |
//! | POST | `/switches/org` | as `PUT /v1/org/switches` | sets one organisation switch |
//! | POST | `/switches/queues/{id}` | as `PUT /v1/queues/{id}/switches` | sets one switch of a queue |
//! | GET | `/agents` | viewer | the agents serving the user's units |
//! | POST | `/agents/{id}` | as `PUT /v1/agents/{id}` | pauses or resumes one |
//! | GET | `/assets/…` | anyone | htmx and the style sheet, cached for a year |
//!
//! **Same rules, same code as the API.** Every action calls the API's own
//! handler in process (no HTTP in between) with the signed-in user as the
//! caller, so the validation, the unit checks and the audit rows are the
//! API's; before that, the console checks the rule [`super::ROUTES`] gives
//! the API route, so a role the API would refuse is refused here with 403
//! too, and the pages render no button the role may not use.
//!
//! **Sessions** ([`session`]): a password sign-in opens a session whose id,
//! 256 bits from the OS, is the cookie `cbd_session` (`HttpOnly;
//! SameSite=Strict; Path=/`, plus `Secure` behind a proxy that says
//! `X-Forwarded-Proto: https` — the listener itself has no TLS). An unknown
//! user and a wrong password get the same answer after the same work (a
//! password is checked against a dummy hash when the user has none) and a
//! one-second delay; five failures for a name refuse it for 15 minutes.
//!
//! **CSRF**: every form carries the session's token (a hidden field), and
//! every POST must present it; a POST whose `Origin` (else `Referer`) names
//! another host is refused with 403 before anything else.
//!
//! Pages are sent with a Content-Security-Policy that allows scripts,
//! styles and requests from this origin only, and `Cache-Control:
//! no-store`.

pub mod pages;
pub mod session;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Bytes, to_bytes};
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::map_response;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use maud::Markup;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::callback::store::accounts::{hash_password, verify_password};
use crate::callback::store::{AccountStore, Principal, SqliteStore, Status};

use super::callbacks::{self, CallbackDetail, CallbackPage};
use super::{ApiState, Problem, Rule, Segment, Verb, org};
use pages::{Chrome, Draft, Filters, ListPage, Nav, Notice, Overview, QueueLine};
use session::{Attempt, Session};

pub use session::Sessions;

/// The session cookie's name.
pub const COOKIE: &str = "cbd_session";

/// htmx, its version in the path: cached for a year.
pub const HTMX_URL: &str = "/assets/htmx-2.0.11.min.js";

/// The style sheet, a digest of its text in the path: cached for a year.
pub static CSS_URL: LazyLock<String> = LazyLock::new(|| {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(CSS);
    let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("/assets/console-{short}.css")
});

/// How long a failed sign-in waits before it is answered.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);

/// Rows per page of the callbacks list.
pub const PAGE: u32 = 25;

const HTMX: &[u8] = include_bytes!("static/htmx.min.js");
const CSS: &[u8] = include_bytes!("static/console.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, mounted by [`super::router`] beside the API's.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard/live", get(dashboard_live))
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/callbacks", get(list).post(create))
        .route("/callbacks/{id}", get(detail))
        .route("/callbacks/{id}/cancel", post(cancel))
        .route("/callbacks/{id}/reschedule", post(reschedule))
        .route("/switches", get(switches))
        .route("/switches/org", post(switch_org))
        .route("/switches/queues/{id}", post(switch_queue))
        .route("/agents", get(agents))
        .route("/agents/{id}", post(pause_agent))
        .route(
            HTMX_URL,
            get(|| asset(HTMX, "text/javascript; charset=utf-8")),
        )
        .route(&CSS_URL, get(|| asset(CSS, "text/css; charset=utf-8")))
        .layer(map_response(page_headers))
}

/// The API rule of the route whose handler a console action calls
/// (Admin, the strictest, for a route the table lacks — a unit test
/// checks that none is missing).
fn api_rule(verb: Verb, path: &str) -> Rule {
    super::routes()
        .find(|r| r.verb == verb && r.path == path)
        .map_or(Rule::Admin, |r| r.rule)
}

/// Whether `who` passes the rule of API route `verb path`.
fn may(state: &ApiState, who: &Principal, verb: Verb, path: &str) -> bool {
    api_rule(verb, path)
        .least_role(state.options().metrics_public)
        .is_none_or(|least| who.role >= least)
}

/// A signed-in request: the user as the API sees a caller, the session.
struct Signed {
    who: Principal,
    session: Session,
    tz: TimeZone,
}

impl Signed {
    fn chrome(&self) -> Chrome<'_> {
        Chrome {
            user: &self.who.name,
            role: self.who.role,
            csrf: &self.session.csrf,
            tz: &self.tz,
        }
    }
}

/// The request's live session and its user, read again from the store (a
/// changed role, or a disabled or deleted user, takes effect at once: the
/// latter two end the session).
async fn signed_in(state: &ApiState, headers: &HeaderMap) -> Result<Option<Signed>, Problem> {
    let Some(cookie) = session::cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state.sessions.get(cookie, Instant::now()) else {
        return Ok(None);
    };
    let name = session.user.clone();
    let Some(who) = state
        .with_store(move |store| principal_of(store, &name))
        .await?
    else {
        state.sessions.close(cookie);
        return Ok(None);
    };
    Ok(Some(Signed {
        who,
        session,
        tz: state.options().settings.org().hours.tz.clone(),
    }))
}

/// The caller the API would see for user `name` (`None`: no such user, or
/// disabled): their role, units and the queues of those units.
fn principal_of(store: &mut SqliteStore, name: &str) -> Result<Option<Principal>, Problem> {
    let Some(user) = store.user(name)? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    let queues = store
        .units()?
        .into_iter()
        .filter(|u| user.units.contains(&u.name))
        .flat_map(|u| u.queues)
        .collect();
    Ok(Some(Principal {
        user_id: user.id,
        name: user.name,
        role: user.role,
        units: user.units,
        queues,
    }))
}

/// A GET page's caller, or the answer that sends them to sign in (for an
/// htmx request, `HX-Redirect`, so the whole page goes).
async fn page_caller(state: &ApiState, headers: &HeaderMap) -> Result<Signed, Response> {
    match signed_in(state, headers).await {
        Ok(Some(signed)) => Ok(signed),
        Ok(None) if headers.contains_key("hx-request") => {
            Err(([("hx-redirect", "/sign-in")], StatusCode::OK).into_response())
        }
        Ok(None) => Err(Redirect::to("/sign-in").into_response()),
        Err(problem) => Err(refused(None, problem)),
    }
}

/// A POST's caller: same origin, a live session, the session's CSRF token,
/// and a role that passes the rule of API route `verb path` (if any) —
/// else 403.
async fn post_caller(
    state: &ApiState,
    headers: &HeaderMap,
    csrf: &str,
    rule_of: Option<(Verb, &str)>,
) -> Result<Signed, Response> {
    let forbidden = |chrome: Option<&Chrome<'_>>, message: &str| {
        page(
            StatusCode::FORBIDDEN,
            pages::problem(chrome, "Not allowed", message),
        )
    };
    if !session::same_origin(headers) {
        warn!("console: a POST from another origin refused");
        return Err(forbidden(None, "This request came from another site."));
    }
    let signed = match signed_in(state, headers).await {
        Ok(Some(signed)) => signed,
        Ok(None) => return Err(forbidden(None, "Sign in first.")),
        Err(problem) => return Err(refused(None, problem)),
    };
    if !session::csrf_matches(&signed.session, csrf) {
        return Err(forbidden(
            Some(&signed.chrome()),
            "The form is out of date (its security token does not match). Reload the page and try again.",
        ));
    }
    if let Some((verb, path)) = rule_of
        && !may(state, &signed.who, verb, path)
    {
        let message = format!(
            "A {} may not do this; it needs {}.",
            signed.who.role,
            api_rule(verb, path)
                .least_role(false)
                .map_or("nothing", |r| r.as_str())
        );
        return Err(forbidden(Some(&signed.chrome()), &message));
    }
    Ok(signed)
}

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// An API refusal or failure as a page with the API's status.
fn refused(chrome: Option<&Chrome<'_>>, problem: Problem) -> Response {
    let title = match problem.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not possible now",
        s if s.is_client_error() => "Refused",
        _ => "Something failed",
    };
    page(
        problem.status,
        pages::problem(chrome, title, &problem.message),
    )
}

/// Security headers on every console answer; pages are not cached.
async fn page_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------

async fn sign_in_form(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = signed_in(&state, &headers).await {
        return Redirect::to("/").into_response();
    }
    page(StatusCode::OK, pages::sign_in("", None))
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// A PHC string no password matches in practice, checked when the user has
/// none, so that the answer's time does not tell whether the name exists.
static DUMMY_PHC: LazyLock<Option<String>> =
    LazyLock::new(|| hash_password("no user has this password: dummy").ok());

async fn sign_in(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    if !session::same_origin(&headers) {
        return page(
            StatusCode::FORBIDDEN,
            pages::problem(None, "Not allowed", "This request came from another site."),
        );
    }
    let Ok(Form(form)) = form else {
        return page(
            StatusCode::BAD_REQUEST,
            pages::sign_in("", Some("Give a user name and a password.")),
        );
    };
    let now = Instant::now();
    if let Attempt::Refused(wait) = state.sessions.attempt(&form.name, now) {
        let minutes = wait.as_secs().div_ceil(60);
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            pages::sign_in(
                &form.name,
                Some(&format!(
                    "Too many failed sign-ins for this name. Try again in {minutes} minutes."
                )),
            ),
        );
    }
    let name = form.name.clone();
    let found = state
        .with_store(move |store| {
            let Some(user) = store.user(&name)? else {
                return Ok((None, None));
            };
            let phc = store.password_hash(&name)?;
            Ok((Some(user), phc))
        })
        .await;
    let (user, phc) = match found {
        Ok((Some(user), phc)) => (Some(user), phc),
        Ok((None, _)) => (None, None),
        Err(problem) => return refused(None, problem),
    };
    // argon2 is a CPU's worth of work: on the blocking pool, not holding
    // the store.
    let password = form.password;
    let checked = phc.clone().or_else(|| DUMMY_PHC.clone());
    let matches = tokio::task::spawn_blocking(move || {
        checked.is_some_and(|phc| verify_password(&password, &phc))
    })
    .await
    .unwrap_or(false)
        && phc.is_some();
    let Some(user) = user.filter(|_| matches) else {
        state.sessions.failed(&form.name, now);
        tokio::time::sleep(FAILURE_DELAY).await;
        return page(
            StatusCode::OK,
            pages::sign_in(&form.name, Some("Wrong user name or password.")),
        );
    };
    state.sessions.succeeded(&form.name);
    if user.disabled {
        // Only said to someone who knows the password.
        return page(
            StatusCode::OK,
            pages::sign_in(&form.name, Some("This user is disabled.")),
        );
    }
    let opened = match state.sessions.open(&user.name, now) {
        Ok(opened) => opened,
        Err(e) => return refused(None, Problem::internal(format!("random source: {e}"))),
    };
    info!(user = %user.name, "console: signed in");
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{}",
        opened.cookie,
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Err(response) = post_caller(&state, &headers, &csrf, None).await {
        return response;
    }
    if let Some(cookie) = session::cookie(&headers, COOKIE) {
        state.sessions.close(cookie);
    }
    let mut response = Redirect::to("/sign-in").into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("cbd_session=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/"),
    );
    response
}

// ---------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------

async fn dashboard(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let signed = match page_caller(&state, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    match overview(&state, &signed.who).await {
        Ok(o) => page(StatusCode::OK, pages::dashboard(&signed.chrome(), &o)),
        Err(problem) => refused(Some(&signed.chrome()), problem),
    }
}

async fn dashboard_live(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let signed = match page_caller(&state, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    match overview(&state, &signed.who).await {
        Ok(o) => page(StatusCode::OK, pages::dashboard_live(&o)),
        Err(problem) => (problem.status, problem.message).into_response(),
    }
}

/// What `/v1/stats`, `/v1/queues`, `/v1/agents` and the callback counts
/// of `/metrics` say, per queue the caller sees.
async fn overview(state: &ApiState, who: &Principal) -> Result<Overview, Problem> {
    let status = state
        .engine
        .status()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    let Json(agents) = super::agents(State(state.clone()), Extension(who.clone())).await?;
    let Json(queues) = org::list_queues(State(state.clone()), Extension(who.clone())).await?;
    let counts = state
        .with_store(|store| Ok(store.callback_counts()?))
        .await?;
    let options = state.options();
    let lines = queues
        .iter()
        .map(|q| {
            let count = |s: Status| {
                counts
                    .iter()
                    .filter(|(queue, status, _)| *queue == q.id && *status == s)
                    .map(|(_, _, n)| n)
                    .sum()
            };
            let ecbt = status.queues.iter().find(|e| e.queue == q.id);
            let error = status
                .totals
                .calls
                .ecbt_error
                .get(&q.id)
                .filter(|h| h.count() > 0)
                .map(|h| (h.sum() / h.count() as f64, h.count()));
            let serving: Vec<&super::AgentBody> = agents
                .iter()
                .filter(|a| {
                    options
                        .agent_queues
                        .get(&a.id)
                        .is_some_and(|qs| qs.contains(&q.id))
                })
                .collect();
            let in_state =
                |names: &[&str]| serving.iter().filter(|a| names.contains(&a.state)).count();
            QueueLine {
                id: q.id.as_str().to_owned(),
                pending: count(Status::Pending),
                dialing: count(Status::Dialing),
                ecbt_minutes: ecbt.and_then(|e| e.last_announced_minutes),
                ecbt_error: error,
                handle_time_s: ecbt.map_or(0, |e| e.average_handle_time.as_secs()),
                available: in_state(&["available"]),
                on_call: in_state(&["ringing", "on_call"]),
                paused: in_state(&["paused"]),
                registration: q.registration_enabled,
                launch: q.launch_enabled,
            }
        })
        .collect();
    Ok(Overview {
        calls: status.stats.calls,
        draining: status.draining,
        registration: status.gates.registration_enabled,
        launch: status.gates.launch_enabled,
        queues: lines,
    })
}

// ---------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------

async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let signed = match page_caller(&state, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    list_page(
        &state,
        &signed,
        &filters,
        None,
        &Draft::default(),
        StatusCode::OK,
    )
    .await
}

/// The callbacks page for `filters`: `GET /v1/callbacks`'s page.
async fn list_page(
    state: &ApiState,
    signed: &Signed,
    filters: &Filters,
    notice: Option<&Notice>,
    draft: &Draft,
    status: StatusCode,
) -> Response {
    // The serializer is not Send: finished before any await.
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &filters.status),
            ("queue", &filters.queue),
            ("number", &filters.number),
            ("cursor", &filters.cursor),
        ] {
            if !v.is_empty() {
                query.append_pair(k, v);
            }
        }
        query.append_pair("limit", &PAGE.to_string());
        query.finish()
    };
    let uri: Uri = match format!("/v1/callbacks?{query}").parse() {
        Ok(uri) => uri,
        Err(_) => {
            return refused(
                Some(&signed.chrome()),
                Problem::bad_request("invalid_query", "the filters do not make a query"),
            );
        }
    };
    let answer = callbacks::list(
        State(state.clone()),
        Extension(signed.who.clone()),
        Query::try_from_uri(&uri),
    )
    .await;
    let (page_, refusal) = match answer {
        Ok(Json(page_)) => (page_, None),
        Err(problem) => (
            CallbackPage {
                callbacks: Vec::new(),
                next_cursor: None,
            },
            Some(Notice::Refused(problem.message)),
        ),
    };
    let queues: Vec<String> = state
        .options()
        .queues
        .iter()
        .filter(|q| signed.who.sees_queue(q))
        .map(|q| q.as_str().to_owned())
        .collect();
    let chrome = signed.chrome();
    let body = pages::callbacks(
        &chrome,
        &ListPage {
            filters,
            rows: &page_.callbacks,
            next_cursor: page_.next_cursor.as_deref(),
            queues: &queues,
            can_change: may(state, &signed.who, Verb::Post, "/v1/callbacks"),
            notice: refusal.as_ref().or(notice),
            draft,
        },
    );
    page(
        status,
        pages::layout("Callbacks", Nav::Callbacks, Some(&chrome), body),
    )
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    draft: Draft,
}

async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<CreateForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form();
    };
    let signed = match post_caller(
        &state,
        &headers,
        &form.csrf,
        Some((Verb::Post, "/v1/callbacks")),
    )
    .await
    {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let draft = form.draft;
    let at = match launch_time(&draft.scheduled_for, &signed.tz) {
        Ok(at) => at,
        Err(message) => {
            return create_refused(
                &state,
                &signed,
                &draft,
                message,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let body = json!({
        "queue": draft.queue,
        "number": draft.number,
        "scheduled_for": at,
    });
    let answer = callbacks::create(
        State(state.clone()),
        Extension(signed.who.clone()),
        json_headers(),
        Ok(Bytes::from(body.to_string())),
    )
    .await;
    let response = match answer {
        Ok(response) => response,
        Err(problem) if problem.status == StatusCode::FORBIDDEN => {
            return refused(Some(&signed.chrome()), problem);
        }
        Err(problem) => {
            return create_refused(&state, &signed, &draft, problem.message, problem.status).await;
        }
    };
    let status = response.status();
    let value: Value = match to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    match value["id"].as_i64() {
        Some(id) if status == StatusCode::CREATED => {
            Redirect::to(&format!("/callbacks/{id}?done=created")).into_response()
        }
        _ => {
            let message = value["message"]
                .as_str()
                .unwrap_or("the callback was not created")
                .to_owned();
            create_refused(&state, &signed, &draft, message, status).await
        }
    }
}

/// The callbacks page again, the form filled as it was, saying why.
async fn create_refused(
    state: &ApiState,
    signed: &Signed,
    draft: &Draft,
    message: String,
    status: StatusCode,
) -> Response {
    list_page(
        state,
        signed,
        &Filters::default(),
        Some(&Notice::Refused(message)),
        draft,
        status,
    )
    .await
}

/// A `datetime-local` value in the organisation's zone as RFC 3339.
fn launch_time(text: &str, tz: &TimeZone) -> Result<String, String> {
    let civil: DateTime = text
        .parse()
        .map_err(|_| format!("Call at: {text:?} is not a date and time"))?;
    let zoned = civil
        .to_zoned(tz.clone())
        .map_err(|e| format!("Call at: {text:?}: {e}"))?;
    Ok(zoned.timestamp().to_string())
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

fn bad_form() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        pages::problem(None, "Refused", "The form's fields could not be read."),
    )
}

#[derive(Deserialize)]
struct DoneQuery {
    #[serde(default)]
    done: String,
}

async fn detail(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Segment(id): Segment,
    Query(done): Query<DoneQuery>,
) -> Response {
    let signed = match page_caller(&state, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    detail_page(&state, &signed, id, done_notice(&done.done), StatusCode::OK).await
}

fn done_notice(done: &str) -> Option<Notice> {
    let text = match done {
        "created" => "Callback scheduled.",
        "cancelled" => "Callback cancelled.",
        "rescheduled" => "Callback rescheduled.",
        _ => return None,
    };
    Some(Notice::Done(text.to_owned()))
}

async fn detail_page(
    state: &ApiState,
    signed: &Signed,
    id: String,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let chrome = signed.chrome();
    let answer = callbacks::get_one(
        State(state.clone()),
        Extension(signed.who.clone()),
        Segment(id),
    )
    .await;
    let CallbackDetail {
        callback,
        attempt_log,
        legs,
    } = match answer {
        Ok(Json(detail)) => detail,
        Err(problem) => return refused(Some(&chrome), problem),
    };
    let can_change = may(state, &signed.who, Verb::Delete, "/v1/callbacks/{id}");
    let body = pages::callback(
        &chrome,
        &callback,
        &attempt_log,
        &legs,
        can_change,
        notice.as_ref(),
    );
    page(
        status,
        pages::layout(
            &format!("Callback {}", callback.id),
            Nav::Callbacks,
            Some(&chrome),
            body,
        ),
    )
}

async fn cancel(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Segment(id): Segment,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    let signed = match post_caller(
        &state,
        &headers,
        &csrf,
        Some((Verb::Delete, "/v1/callbacks/{id}")),
    )
    .await
    {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let answer = callbacks::delete(
        State(state.clone()),
        Extension(signed.who.clone()),
        Segment(id.clone()),
    )
    .await;
    match answer {
        Ok(_) => Redirect::to(&format!("/callbacks/{id}?done=cancelled")).into_response(),
        Err(problem) if problem.status == StatusCode::CONFLICT => {
            let status = problem.status;
            detail_page(
                &state,
                &signed,
                id,
                Some(Notice::Refused(problem.message)),
                status,
            )
            .await
        }
        Err(problem) => refused(Some(&signed.chrome()), problem),
    }
}

#[derive(Deserialize)]
struct RescheduleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    scheduled_for: String,
}

async fn reschedule(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Segment(id): Segment,
    form: Result<Form<RescheduleForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form();
    };
    let signed = match post_caller(
        &state,
        &headers,
        &form.csrf,
        Some((Verb::Patch, "/v1/callbacks/{id}")),
    )
    .await
    {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let at = match launch_time(&form.scheduled_for, &signed.tz) {
        Ok(at) => at,
        Err(message) => {
            return detail_page(
                &state,
                &signed,
                id,
                Some(Notice::Refused(message)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let answer = callbacks::patch(
        State(state.clone()),
        Extension(signed.who.clone()),
        Segment(id.clone()),
        json_headers(),
        Ok(Bytes::from(json!({ "scheduled_for": at }).to_string())),
    )
    .await;
    match answer {
        Ok(_) => Redirect::to(&format!("/callbacks/{id}?done=rescheduled")).into_response(),
        Err(problem) if matches!(problem.status.as_u16(), 409 | 422) => {
            let status = problem.status;
            detail_page(
                &state,
                &signed,
                id,
                Some(Notice::Refused(problem.message)),
                status,
            )
            .await
        }
        Err(problem) => refused(Some(&signed.chrome()), problem),
    }
}

// ---------------------------------------------------------------------------
// On/Off
// ---------------------------------------------------------------------------

async fn switches(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(done): Query<DoneQuery>,
) -> Response {
    let signed = match page_caller(&state, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let notice = (done.done == "switched").then(|| Notice::Done("Switch set.".to_owned()));
    switches_page(&state, &signed, notice, StatusCode::OK).await
}

async fn switches_page(
    state: &ApiState,
    signed: &Signed,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let chrome = signed.chrome();
    let answer = org::get_switches(State(state.clone()), Extension(signed.who.clone())).await;
    let body = match answer {
        Ok(Json(body)) => body,
        Err(problem) => return refused(Some(&chrome), problem),
    };
    let content = pages::switches(
        &chrome,
        &body,
        may(state, &signed.who, Verb::Put, "/v1/org/switches"),
        may(state, &signed.who, Verb::Put, "/v1/queues/{id}/switches"),
        notice.as_ref(),
    );
    page(
        status,
        pages::layout("On/Off", Nav::Switches, Some(&chrome), content),
    )
}

#[derive(Deserialize)]
struct SwitchForm {
    #[serde(default)]
    csrf: String,
    /// `registration` or `launch`.
    switch: String,
    on: bool,
}

impl SwitchForm {
    /// The API's body for this change.
    fn body(&self) -> Option<Value> {
        match self.switch.as_str() {
            "registration" => Some(json!({ "registration_enabled": self.on })),
            "launch" => Some(json!({ "launch_enabled": self.on })),
            _ => None,
        }
    }
}

async fn switch_org(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<SwitchForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form();
    };
    let signed = match post_caller(
        &state,
        &headers,
        &form.csrf,
        Some((Verb::Put, "/v1/org/switches")),
    )
    .await
    {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let Some(body) = form.body() else {
        return bad_form();
    };
    let answer = org::put_org_switches(
        State(state.clone()),
        Extension(signed.who.clone()),
        json_headers(),
        Ok(Bytes::from(body.to_string())),
    )
    .await;
    switched(&state, &signed, answer.map(|_| ())).await
}

async fn switch_queue(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Segment(id): Segment,
    form: Result<Form<SwitchForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form();
    };
    let signed = match post_caller(
        &state,
        &headers,
        &form.csrf,
        Some((Verb::Put, "/v1/queues/{id}/switches")),
    )
    .await
    {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let Some(body) = form.body() else {
        return bad_form();
    };
    let answer = org::put_queue_switches(
        State(state.clone()),
        Extension(signed.who.clone()),
        Segment(id),
        json_headers(),
        Ok(Bytes::from(body.to_string())),
    )
    .await;
    switched(&state, &signed, answer.map(|_| ())).await
}

/// After a switch: back to the page, or the page saying why not.
async fn switched(state: &ApiState, signed: &Signed, answer: Result<(), Problem>) -> Response {
    match answer {
        Ok(()) => Redirect::to("/switches?done=switched").into_response(),
        Err(problem) if problem.status == StatusCode::FORBIDDEN => {
            refused(Some(&signed.chrome()), problem)
        }
        Err(problem) => {
            let status = problem.status;
            switches_page(
                state,
                signed,
                Some(Notice::Refused(problem.message)),
                status,
            )
            .await
        }
    }
}

// ---------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------

async fn agents(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(done): Query<DoneQuery>,
) -> Response {
    let signed = match page_caller(&state, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let notice = match done.done.as_str() {
        "paused" => Some(Notice::Done("Agent paused.".to_owned())),
        "resumed" => Some(Notice::Done("Agent resumed.".to_owned())),
        _ => None,
    };
    agents_page(&state, &signed, notice, StatusCode::OK).await
}

async fn agents_page(
    state: &ApiState,
    signed: &Signed,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let chrome = signed.chrome();
    let answer = super::agents(State(state.clone()), Extension(signed.who.clone())).await;
    let list = match answer {
        Ok(Json(list)) => list,
        Err(problem) => return refused(Some(&chrome), problem),
    };
    let content = pages::agents(
        &chrome,
        &list,
        may(state, &signed.who, Verb::Put, "/v1/agents/{id}"),
        notice.as_ref(),
    );
    page(
        status,
        pages::layout("Agents", Nav::Agents, Some(&chrome), content),
    )
}

#[derive(Deserialize)]
struct PauseForm {
    #[serde(default)]
    csrf: String,
    paused: bool,
}

async fn pause_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Segment(id): Segment,
    form: Result<Form<PauseForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form();
    };
    let signed = match post_caller(
        &state,
        &headers,
        &form.csrf,
        Some((Verb::Put, "/v1/agents/{id}")),
    )
    .await
    {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let answer = super::put_agent(
        State(state.clone()),
        Extension(signed.who.clone()),
        Segment(id),
        json_headers(),
        Ok(Bytes::from(json!({ "paused": form.paused }).to_string())),
    )
    .await;
    match answer {
        Ok(_) if form.paused => Redirect::to("/agents?done=paused").into_response(),
        Ok(_) => Redirect::to("/agents?done=resumed").into_response(),
        Err(problem) if problem.status == StatusCode::CONFLICT => {
            let status = problem.status;
            agents_page(
                &state,
                &signed,
                Some(Notice::Refused(problem.message)),
                status,
            )
            .await
        }
        Err(problem) => refused(Some(&signed.chrome()), problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each console action names an API route that exists, so its rule is
    /// the API's and never the fallback.
    #[test]
    fn every_action_uses_a_rule_of_the_api_table() {
        for (verb, path, rule) in [
            (Verb::Post, "/v1/callbacks", Rule::Manager),
            (Verb::Delete, "/v1/callbacks/{id}", Rule::Manager),
            (Verb::Patch, "/v1/callbacks/{id}", Rule::Manager),
            (Verb::Put, "/v1/org/switches", Rule::Admin),
            (Verb::Put, "/v1/queues/{id}/switches", Rule::Manager),
            (Verb::Put, "/v1/agents/{id}", Rule::Manager),
        ] {
            let route = super::super::routes()
                .find(|r| r.verb == verb && r.path == path)
                .unwrap_or_else(|| panic!("{verb:?} {path} is not in the API's table"));
            assert_eq!(route.rule, rule, "{verb:?} {path}");
            assert_eq!(api_rule(verb, path), rule);
        }
    }

    #[test]
    fn launch_times_are_read_in_the_organisations_zone() {
        let tz = TimeZone::get("America/Chicago").expect("zone");
        assert_eq!(
            launch_time("2026-01-05T10:00", &tz).as_deref(),
            Ok("2026-01-05T16:00:00Z")
        );
        assert!(launch_time("tomorrow", &tz).is_err());
        assert!(launch_time("", &tz).is_err());
    }
}
