//! The admin HTTP API: health, live statistics, the runtime gates, the
//! stored callbacks, agents, accounts (users, business units, tokens), the
//! audit log and Prometheus metrics.
//!
//! Every route is declared once in [`ROUTES`] with the [`Rule`] its caller
//! must pass; the router is built from that table, so a route cannot exist
//! without a rule. `Authorization: Bearer <token>` is required on every route
//! but the public ones: no token, a malformed, unknown, expired or revoked
//! one, or a disabled user's → 401 with `WWW-Authenticate: Bearer`; a role
//! below the rule, or another unit's object → 403.
//!
//! | method | path | rule | answer |
//! |---|---|---|---|
//! | GET | `/health` | public | 200 `{"status":"ok"}`; 503 `{"status":"draining"}` while shutting down, `{"status":"stopped"}` once the engine is gone |
//! | GET | `/healthz` | public | liveness: 200 `{"status":"ok"}` while the process serves HTTP |
//! | GET | `/readyz` | public | readiness: 200 `{"status":"ready",…}` when the engine runs, is not draining, the store opens read-write and answers, and the SIP sockets are bound; else 503 `{"status":"not_ready","not_ready":["engine"|"draining"|"store"|"sip",…],"checks":{…}}` |
//! | GET | `/metrics` | public (viewer when `[api] metrics_public = false`) | Prometheus text format 0.0.4 (see [`metrics`]) |
//! | GET | `/openapi.json` | public | this API's OpenAPI 3.1 document, generated from the handlers (see [`openapi`]) |
//! | GET | `/v1/stats` | viewer | live counters ([`crate::engine::EngineStats`]) and totals since start-up |
//! | GET | `/v1/gates` | viewer | `{"registration_enabled":bool,"launch_enabled":bool}` |
//! | PUT | `/v1/gates` | admin | the same object, both fields required → 200 with the gates now in effect |
//! | GET | `/v1/callbacks[?status=&queue=&number=&type=&from=&to=&limit=&cursor=]` | viewer | the callbacks of the caller's units, oldest first (`type`: `ivr`, `api` or `missed_call`; `from`/`to`: `registered_at`), a page at a time: `{"callbacks":[…],"next_cursor"}` (`limit` 1..=1000, default 100; `next_cursor` null on the last page) |
//! | POST | `/v1/callbacks` | manager | `{"queue","number","scheduled_for"?,"not_after"?,"priority"?,"data"?,"caller_id"?}`, `Idempotency-Key`? → 201 with the callback and `Location`; 409 `already_scheduled` naming the pending one; 422 naming the field (number invalid, blacklisted, international not allowed; time in the past or over 30 days; data; caller ID not one of the organisation's callback numbers, or no agent of the queue may present it); 429 `too_many_callbacks` with `Retry-After` |
//! | GET | `/v1/callbacks/{id}` | viewer | the callback with `attempt_log` and `legs` (its CDR rows); `customer_dialed_at` and `ecbt_error_s` once the customer was dialed |
//! | PATCH | `/v1/callbacks/{id}` | manager | `{"scheduled_for"?,"number"?,"priority"?,"caller_id"?}` (`caller_id: null`: the queue's number again) → 200; 409 `not_pending` unless pending, 409 `already_scheduled` for a number taken in the queue |
//! | DELETE | `/v1/callbacks/{id}` | manager | cancels a pending callback → 200 with it; 409 `not_pending` otherwise |
//! | POST | `/v1/callbacks/cancel` | manager | `{"number","queue"?}` → 200 `{"cancelled":[…]}`: every pending callback of that number in the caller's units (or that queue) |
//! | GET | `/v1/callbacks/status?number=` | viewer | `{"number","callbacks":[{"id","queue","status","position","ecbt_minutes","ecbt_more_than","attempts","scheduled_for"}]}`: the active ones, else the latest (the ECBT estimated now from the callbacks ahead, the rolling handle time and the agents staffing the queue); 404 when none |
//! | … | `/v1/org`, `/v1/org/switches`, `/v1/queues[/{id}[/switches]]` | viewer reads, manager a unit's queue hours and switches, admin the rest | the organisation at run time (see [`org`]) |
//! | … | `/v1/missed-call-rules[/{id}]`, `/v1/org/freeze` | viewer reads, manager switches a unit's rule, admin the rest | missed-call rules and the organisation's freeze (see [`rules`]) |
//! | GET | `/v1/agents` | viewer | the agents serving the caller's units: `{"id","state","reachable"}`, in id order |
//! | PUT | `/v1/agents/{id}` | manager | `{"paused":bool}` → 200 with the agent; 404 unknown agent; 403 another unit's; 409 while it rings or talks |
//! | GET | `/v1/me` | viewer | the caller: `{"name","role","units","queues"}` |
//! | PUT | `/v1/me/password` | viewer | `{"password", "current_password"}` (the latter once one is set) → 204 |
//! | GET | `/v1/users` | admin | every user |
//! | POST | `/v1/users` | admin | `{"name","role","units"?}` → 201 with the user |
//! | GET | `/v1/users/{name}` | admin | the user |
//! | PATCH | `/v1/users/{name}` | admin | `{"role"?,"units"?,"disabled"?}` → 200 with the user |
//! | DELETE | `/v1/users/{name}` | admin | 204; the user's tokens go too |
//! | PUT | `/v1/users/{name}/password` | admin | `{"password"}` → 204 |
//! | GET | `/v1/users/{name}/tokens` | admin | the user's tokens, without secrets |
//! | POST | `/v1/users/{name}/tokens` | admin | `{"label"?,"expires_at"?}` → 201 with `"token"`, shown this once |
//! | DELETE | `/v1/tokens/{id}` | admin | revokes → 200 with the token |
//! | GET | `/v1/units` | admin | every business unit |
//! | POST | `/v1/units` | admin | `{"name","queues"}` (configured queue ids) → 201 |
//! | PATCH | `/v1/units/{name}` | admin | `{"name"?,"queues"?}` → 200 |
//! | DELETE | `/v1/units/{name}` | admin | 204; its users lose it |
//! | GET | `/v1/cdrs[?type=&from=&to=]` | admin | the call detail records as CSV (`text/csv`, the columns of `callbackd cdr`), oldest first (`from`/`to`: the leg's start); `type` keeps the outbound legs of that type of callback (`ivr`, `api`, `missed_call`) |
//! | GET | `/v1/audit[?from=&to=&cursor=&limit=]` | admin | `{"entries":[…],"next_cursor"}`, oldest first |
//! | GET | `/v1/webhooks` | admin | every subscription: `{"id","url","events","enabled","description","created_by","created_at"}` (never the secret) |
//! | POST | `/v1/webhooks` | admin | `{"url","events","secret"?,"enabled"?,"description"?}` → 201 with the subscription, `Location` and `"secret"`, shown this once (ours, `whsec_…`, unless given); 422 `invalid_url` (not http(s) with a host), `unknown_event`, `invalid_events`, `invalid_secret` |
//! | GET | `/v1/webhooks/{id}` | admin | the subscription |
//! | PATCH | `/v1/webhooks/{id}` | admin | `{"url"?,"events"?,"enabled"?,"description"?}` → 200; a disabled one gets no new events, and its pending deliveries wait |
//! | DELETE | `/v1/webhooks/{id}` | admin | 204; its delivery log goes too |
//! | GET | `/v1/webhooks/{id}/deliveries[?cursor=&limit=]` | admin | the delivery log, oldest first: `{"deliveries":[{"id","event_id","type","callback_id","occurred_at","state","tries","first_try_at","last_try_at","next_try_at","last_status","last_error"}],"next_cursor"}` (`limit` 1..=1000, default 100) |
//!
//! Roles: a viewer reads; a manager also creates, changes and cancels the
//! callbacks, pauses and resumes the agents and edits the hours and
//! switches of their units' queues; an admin does everything (users, units,
//! tokens, the organisation, the audit log, webhooks) and sees every unit. A user who is not an
//! admin sees only the callbacks and agents of the queues their units group.
//! Every change (gates, agent pause, callbacks, users, units, tokens, passwords, webhooks) writes
//! an audit row naming the caller, with the object before and after.
//!
//! Bodies are JSON (`application/json`). Every refusal is a 4xx (5xx for a
//! failure on our side) with `{"code":"snake_case","message":"…"}` (the
//! `Error` schema of [`openapi`]), the
//! message naming the offending field or parameter: 400 for a bad body or
//! query or a path segment that is not UTF-8, 401/403 as above, 404 for an
//! unknown path, agent, callback, user,
//! unit or token, 409 for a change the agent's or callback's state forbids
//! or a name taken, 422 for a well-formed value the rules refuse (see
//! [`callbacks`]), 429 over the per-number cap, 405
//! for a wrong method (with `Allow`), 413 for a body over [`MAX_BODY`], 415
//! for a body that is not `application/json`, 503 when the engine has
//! stopped.
//!
//! The gates set here are the organisation's runtime switches (the same as
//! `PUT /v1/org/switches`, see [`org`]): registration disabled → callers
//! hear "we are unable to offer callbacks at this time"; launching disabled
//! → callers still register, but no estimated time is announced. They are
//! stored with the organisation and outlast a restart.
//!
//! The web console is served on the same listener, at `/` and the paths
//! of [`console`] (none starts with `/v1/`); it signs users in with their
//! password and acts through these handlers.
//!
//! **No TLS.** Tokens travel in clear: keep the listener on loopback (the
//! default), or behind a proxy that terminates TLS.
//!
//! The API owns no engine state. It asks the core task through an
//! [`EngineControl`] (a control message with a oneshot reply), and reads
//! and writes the store (callbacks, accounts) over its own SQLite connection
//! on the blocking pool: WAL lets it run beside the engine's writer.

pub mod accounts;
pub mod auth;
pub mod callbacks;
pub mod console;
pub mod metrics;
pub mod openapi;
pub mod org;
pub mod rules;
pub mod webhooks;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path as UrlPath, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Extension, Json, serve};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::acd::agents::AgentError;
use crate::b2bua::agents::AgentStatus;
use crate::callback::QueueId;
use crate::callback::hours::Gates;
use crate::callback::store::{
    AccountError, AccountStore, AuditEntry, Change, Principal, Role, SqliteStore, StoreError,
};
use crate::config::Settings;
use crate::domain::number::NumberPolicy;
use crate::engine::{EngineControl, EngineStatus};

pub use auth::Rule;
pub use callbacks::{CallbackBody, QueueDefaults};

/// Largest request body accepted, in bytes (a gates object is ~60).
pub const MAX_BODY: usize = 4096;

/// How long [`ApiServer::shutdown`] waits for requests in progress.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The listening socket could not be bound (address in use, not local,
    /// no permission).
    #[error("cannot bind the admin API on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
}

/// An HTTP method of a [`Route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Verb {
    /// The method's name (`GET`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// One route of the API: method, path (axum syntax, `{id}` a segment) and
/// the rule its caller must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub verb: Verb,
    /// The path.
    pub path: &'static str,
    /// Who may call it.
    pub rule: Rule,
}

/// A route and its handler, bound to the route's method.
struct Entry {
    route: Route,
    handler: fn(MethodFilter) -> MethodRouter<ApiState>,
}

const fn entry(
    verb: Verb,
    path: &'static str,
    rule: Rule,
    handler: fn(MethodFilter) -> MethodRouter<ApiState>,
) -> Entry {
    Entry {
        route: Route { verb, path, rule },
        handler,
    }
}

/// The one table the router is built from (see the module doc).
const TABLE: &[Entry] = &[
    entry(Verb::Get, "/health", Rule::Public, |m| on(m, health)),
    entry(Verb::Get, "/healthz", Rule::Public, |m| on(m, healthz)),
    entry(Verb::Get, "/readyz", Rule::Public, |m| on(m, readyz)),
    entry(Verb::Get, "/metrics", Rule::Metrics, |m| on(m, metrics)),
    entry(Verb::Get, "/openapi.json", Rule::Public, |m| {
        on(m, openapi::openapi_json)
    }),
    entry(Verb::Get, "/v1/stats", Rule::Viewer, |m| on(m, stats)),
    entry(Verb::Get, "/v1/gates", Rule::Viewer, |m| on(m, get_gates)),
    entry(Verb::Put, "/v1/gates", Rule::Admin, |m| on(m, put_gates)),
    entry(Verb::Get, "/v1/callbacks", Rule::Viewer, |m| {
        on(m, callbacks::list)
    }),
    entry(Verb::Post, "/v1/callbacks", Rule::Manager, |m| {
        on(m, callbacks::create)
    }),
    entry(Verb::Post, "/v1/callbacks/cancel", Rule::Manager, |m| {
        on(m, callbacks::cancel_by_number)
    }),
    entry(Verb::Get, "/v1/callbacks/status", Rule::Viewer, |m| {
        on(m, callbacks::number_status)
    }),
    entry(Verb::Get, "/v1/callbacks/{id}", Rule::Viewer, |m| {
        on(m, callbacks::get_one)
    }),
    entry(Verb::Patch, "/v1/callbacks/{id}", Rule::Manager, |m| {
        on(m, callbacks::patch)
    }),
    entry(Verb::Delete, "/v1/callbacks/{id}", Rule::Manager, |m| {
        on(m, callbacks::delete)
    }),
    entry(Verb::Get, "/v1/org", Rule::Viewer, |m| on(m, org::get_org)),
    entry(Verb::Put, "/v1/org", Rule::Admin, |m| {
        on(m, org::put_org).layer(DefaultBodyLimit::max(org::MAX_ORG_BODY))
    }),
    entry(Verb::Patch, "/v1/org", Rule::Admin, |m| {
        on(m, org::patch_org).layer(DefaultBodyLimit::max(org::MAX_ORG_BODY))
    }),
    entry(Verb::Get, "/v1/org/switches", Rule::Viewer, |m| {
        on(m, org::get_switches)
    }),
    entry(Verb::Put, "/v1/org/switches", Rule::Admin, |m| {
        on(m, org::put_org_switches)
    }),
    entry(Verb::Put, "/v1/org/freeze", Rule::Admin, |m| {
        on(m, rules::put_freeze)
    }),
    entry(Verb::Get, "/v1/missed-call-rules", Rule::Viewer, |m| {
        on(m, rules::list)
    }),
    entry(Verb::Put, "/v1/missed-call-rules/{id}", Rule::Admin, |m| {
        on(m, rules::put)
    }),
    entry(
        Verb::Patch,
        "/v1/missed-call-rules/{id}",
        Rule::Manager,
        |m| on(m, rules::patch),
    ),
    entry(
        Verb::Delete,
        "/v1/missed-call-rules/{id}",
        Rule::Admin,
        |m| on(m, rules::delete),
    ),
    entry(Verb::Get, "/v1/queues", Rule::Viewer, |m| {
        on(m, org::list_queues)
    }),
    entry(Verb::Put, "/v1/queues/{id}", Rule::Admin, |m| {
        on(m, org::put_queue)
    }),
    entry(Verb::Patch, "/v1/queues/{id}", Rule::Manager, |m| {
        on(m, org::patch_queue)
    }),
    entry(Verb::Delete, "/v1/queues/{id}", Rule::Admin, |m| {
        on(m, org::delete_queue)
    }),
    entry(Verb::Put, "/v1/queues/{id}/switches", Rule::Manager, |m| {
        on(m, org::put_queue_switches)
    }),
    entry(Verb::Get, "/v1/agents", Rule::Viewer, |m| on(m, agents)),
    entry(Verb::Put, "/v1/agents/{id}", Rule::Manager, |m| {
        on(m, put_agent)
    }),
    entry(Verb::Get, "/v1/me", Rule::Viewer, |m| on(m, accounts::me)),
    entry(Verb::Put, "/v1/me/password", Rule::Viewer, |m| {
        on(m, accounts::put_my_password)
    }),
    entry(Verb::Get, "/v1/users", Rule::Admin, |m| {
        on(m, accounts::list_users)
    }),
    entry(Verb::Post, "/v1/users", Rule::Admin, |m| {
        on(m, accounts::create_user)
    }),
    entry(Verb::Get, "/v1/users/{name}", Rule::Admin, |m| {
        on(m, accounts::get_user)
    }),
    entry(Verb::Patch, "/v1/users/{name}", Rule::Admin, |m| {
        on(m, accounts::patch_user)
    }),
    entry(Verb::Delete, "/v1/users/{name}", Rule::Admin, |m| {
        on(m, accounts::delete_user)
    }),
    entry(Verb::Put, "/v1/users/{name}/password", Rule::Admin, |m| {
        on(m, accounts::put_user_password)
    }),
    entry(Verb::Get, "/v1/users/{name}/tokens", Rule::Admin, |m| {
        on(m, accounts::list_tokens)
    }),
    entry(Verb::Post, "/v1/users/{name}/tokens", Rule::Admin, |m| {
        on(m, accounts::issue_token)
    }),
    entry(Verb::Delete, "/v1/tokens/{id}", Rule::Admin, |m| {
        on(m, accounts::revoke_token)
    }),
    entry(Verb::Get, "/v1/units", Rule::Admin, |m| {
        on(m, accounts::list_units)
    }),
    entry(Verb::Post, "/v1/units", Rule::Admin, |m| {
        on(m, accounts::create_unit)
    }),
    entry(Verb::Patch, "/v1/units/{name}", Rule::Admin, |m| {
        on(m, accounts::patch_unit)
    }),
    entry(Verb::Delete, "/v1/units/{name}", Rule::Admin, |m| {
        on(m, accounts::delete_unit)
    }),
    entry(Verb::Get, "/v1/cdrs", Rule::Admin, |m| {
        on(m, callbacks::cdrs)
    }),
    entry(Verb::Get, "/v1/audit", Rule::Admin, |m| {
        on(m, accounts::audit)
    }),
    entry(Verb::Get, "/v1/webhooks", Rule::Admin, |m| {
        on(m, webhooks::list)
    }),
    entry(Verb::Post, "/v1/webhooks", Rule::Admin, |m| {
        on(m, webhooks::create)
    }),
    entry(Verb::Get, "/v1/webhooks/{id}", Rule::Admin, |m| {
        on(m, webhooks::get_one)
    }),
    entry(Verb::Patch, "/v1/webhooks/{id}", Rule::Admin, |m| {
        on(m, webhooks::patch)
    }),
    entry(Verb::Delete, "/v1/webhooks/{id}", Rule::Admin, |m| {
        on(m, webhooks::delete)
    }),
    entry(
        Verb::Get,
        "/v1/webhooks/{id}/deliveries",
        Rule::Admin,
        |m| on(m, webhooks::deliveries),
    ),
];

/// Every route of the API, in table order.
pub fn routes() -> impl Iterator<Item = Route> {
    TABLE.iter().map(|e| e.route)
}

/// What the API knows of the configuration: the store file, the queues
/// (units may group only these), which queues each agent serves (a user
/// sees the agents of their units' queues), and whether `/metrics` is
/// public.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The checked configuration these options come from: changes of the
    /// organisation are checked against it ([`Settings::with_organisation`]).
    pub settings: Arc<Settings>,
    /// The stored version of the organisation in `settings` (0: not read
    /// from the store; the first change reads it).
    pub org_version: u64,
    /// Families bumped outside the API's handlers (webhook deliveries),
    /// rendered by `/metrics`.
    pub metrics: metrics::Shared,
    /// The callback store's file ([`crate::config::Settings::store_path`]).
    pub store_path: PathBuf,
    /// The configured queue ids.
    pub queues: Vec<QueueId>,
    /// Agent id → the queues it serves.
    pub agent_queues: BTreeMap<String, Vec<QueueId>>,
    /// `[api] metrics_public`.
    pub metrics_public: bool,
    /// The organisation's number rules (`[org]`), applied to numbers given
    /// to `/v1/callbacks`.
    pub number_policy: NumberPolicy,
    /// Each queue's priority and callback expiry.
    pub queue_defaults: callbacks::QueueDefaultsMap,
    /// `[callbacks] api_max_per_number_per_day`.
    pub max_per_number_per_day: u32,
}

impl ApiOptions {
    /// The options of a checked configuration.
    pub fn new(settings: &Settings) -> ApiOptions {
        ApiOptions {
            settings: Arc::new(settings.clone()),
            org_version: 0,
            metrics: metrics::Shared::default(),
            store_path: settings.store_path().to_owned(),
            queues: settings.queues().iter().map(|q| q.id.clone()).collect(),
            agent_queues: settings
                .agents()
                .iter()
                .map(|a| (a.id.as_str().to_owned(), a.queues.clone()))
                .collect(),
            metrics_public: settings.api().metrics_public,
            number_policy: settings.org().number_policy.clone(),
            queue_defaults: settings
                .queues()
                .iter()
                .map(|q| {
                    let expiry = jiff::SignedDuration::try_from(q.callback_expiry)
                        .unwrap_or(jiff::SignedDuration::MAX);
                    (
                        q.id.clone(),
                        QueueDefaults {
                            priority: q.priority,
                            expiry,
                        },
                    )
                })
                .collect(),
            max_per_number_per_day: settings.callbacks().api_max_per_number_per_day,
        }
    }
}

/// The routes of the API over a running engine, built from [`routes`]:
/// each route's handler behind the layer that enforces its rule.
pub fn router(engine: EngineControl, options: ApiOptions) -> Router {
    let metrics = options.metrics.clone();
    let state = ApiState {
        engine,
        options: Arc::new(RwLock::new(Arc::new(options))),
        org_change: Arc::new(tokio::sync::Mutex::new(())),
        store: Arc::new(Mutex::new(None)),
        metrics,
        sessions: console::Sessions::default(),
    };
    let mut router = console::routes();
    for e in TABLE {
        let rule = e.route.rule;
        let method_router = (e.handler)(e.route.verb.filter()).route_layer(from_fn_with_state(
            state.clone(),
            move |state: State<ApiState>,
                  request: axum::extract::Request,
                  next: axum::middleware::Next| {
                auth::authorize(state, rule, request, next)
            },
        ));
        router = router.route(e.route.path, method_router);
    }
    router
        // Applies to the routes above: a known path, another method.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl ApiServer {
    /// Binds `bind` and serves [`router`] on it (HTTP/1.1) in a task of its
    /// own. Port 0 takes an ephemeral port (tests); see
    /// [`ApiServer::local_addr`].
    pub async fn start(
        bind: SocketAddr,
        engine: EngineControl,
        options: ApiOptions,
    ) -> Result<ApiServer, ApiError> {
        let bind_err = |source| ApiError::Bind { addr: bind, source };
        let listener = TcpListener::bind(bind).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        if !local_addr.ip().is_loopback() {
            warn!(
                addr = %local_addr,
                "the admin API has no TLS and listens beyond loopback: tokens travel in \
                 clear; put a TLS-terminating proxy in front of it"
            );
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(engine, options);
        let task = tokio::spawn(async move {
            serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        info!(addr = %local_addr, "admin API listening");
        Ok(ApiServer {
            local_addr,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets requests in progress finish for up
    /// to [`SHUTDOWN_GRACE`], then drops what is left.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "admin API stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "admin API task failed"),
            Err(_) => {
                warn!("admin API connections still open after the grace period; closing them");
                self.task.abort();
            }
        }
    }
}

/// `/v1/gates` body, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Gates)]
pub struct GatesBody {
    /// Callbacks are offered to callers.
    pub registration_enabled: bool,
    /// Registered callbacks are launched (and the ECBT announced).
    pub launch_enabled: bool,
}

impl From<Gates> for GatesBody {
    fn from(g: Gates) -> GatesBody {
        GatesBody {
            registration_enabled: g.registration_enabled,
            launch_enabled: g.launch_enabled,
        }
    }
}

impl From<GatesBody> for Gates {
    fn from(g: GatesBody) -> Gates {
        Gates {
            registration_enabled: g.registration_enabled,
            launch_enabled: g.launch_enabled,
        }
    }
}

/// `/v1/stats` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Stats)]
pub struct StatsBody {
    /// SIP endpoint state.
    pub sip: SipStatsBody,
    /// Calls in the call layer.
    pub calls: usize,
    /// RTP port pairs in use.
    pub rtp_ports: usize,
    /// Shutting down.
    pub draining: bool,
    /// Totals since start-up.
    pub totals: TotalsBody,
}

/// `sip` in [`StatsBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = SipStats)]
pub struct SipStatsBody {
    /// Calls not yet ended.
    pub calls: usize,
    /// Live transactions.
    pub transactions: usize,
    /// Objects with a pending timer.
    pub timers: usize,
}

/// `totals` in [`StatsBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Totals)]
pub struct TotalsBody {
    /// INVITEs that reached the call layer.
    pub incoming_calls: u64,
    /// Callbacks durably registered.
    pub callbacks_registered: u64,
    /// Registrations refused as duplicates.
    pub callbacks_already_scheduled: u64,
    /// Registrations the store failed to commit.
    pub registration_failures: u64,
}

impl From<&EngineStatus> for StatsBody {
    fn from(s: &EngineStatus) -> StatsBody {
        StatsBody {
            sip: SipStatsBody {
                calls: s.stats.sip.calls,
                transactions: s.stats.sip.transactions,
                timers: s.stats.sip.timers,
            },
            calls: s.stats.calls,
            rtp_ports: s.stats.rtp_ports,
            draining: s.draining,
            totals: TotalsBody {
                incoming_calls: s.totals.incoming_calls,
                callbacks_registered: s.totals.callbacks_registered,
                callbacks_already_scheduled: s.totals.callbacks_already_scheduled,
                registration_failures: s.totals.registration_failures,
            },
        }
    }
}

/// One element of the `/v1/agents` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Agent)]
pub struct AgentBody {
    /// The agent's id from the configuration.
    pub id: String,
    /// `available`, `ringing`, `on_call`, `paused` or `cooling_down`.
    pub state: &'static str,
    /// Can be called now: a static URI, or a phone with a live registration.
    pub reachable: bool,
}

impl From<&AgentStatus> for AgentBody {
    fn from(a: &AgentStatus) -> AgentBody {
        AgentBody {
            id: a.id.as_str().to_owned(),
            state: a.state_name(),
            reachable: a.reachable,
        }
    }
}

/// What `/health` answers for an engine status (`None`: the engine has
/// stopped).
pub fn health_of(status: Option<&EngineStatus>) -> (StatusCode, &'static str) {
    match status {
        Some(s) if s.draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Some(_) => (StatusCode::OK, "ok"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
    }
}

#[derive(Clone)]
struct ApiState {
    engine: EngineControl,
    /// Replaced whole when the organisation changes (see [`org`]).
    options: Arc<RwLock<Arc<ApiOptions>>>,
    /// Serialises changes of the organisation (read, change, check, store,
    /// apply).
    org_change: Arc<tokio::sync::Mutex<()>>,
    /// One connection, opened on first use and shared by requests in turn
    /// (admin traffic is light; no transaction stays open between calls).
    store: Arc<Mutex<Option<SqliteStore>>>,
    /// Metric families API workers bump (the webhook worker's deliveries:
    /// [`metrics::Shared::webhook_delivery`]).
    metrics: metrics::Shared,
    /// The console's sign-in sessions.
    sessions: console::Sessions,
}

impl ApiState {
    /// The options in force (the organisation as last applied).
    fn options(&self) -> Arc<ApiOptions> {
        self.options
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts new options in force.
    fn set_options(&self, options: ApiOptions) {
        *self
            .options
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(options);
    }
    /// Runs `f` on the store on the blocking pool (SQLite is blocking IO).
    async fn with_store<T, F>(&self, f: F) -> Result<T, Problem>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteStore) -> Result<T, Problem> + Send + 'static,
    {
        let cell = self.store.clone();
        let path = self.options().store_path.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another request cannot leave the connection in a
            // state worse than an error would: take it over.
            let mut slot = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if slot.is_none() {
                *slot = Some(SqliteStore::open(&path)?);
            }
            let store = slot.as_mut().expect("opened above");
            f(store)
        })
        .await
        .map_err(|e| Problem::internal(format!("callback store: {e}")))?
    }

    /// Appends an audit row for a change made outside the account tables.
    async fn audit(
        &self,
        who: &Principal,
        action: &'static str,
        target: String,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<(), Problem> {
        let entry = AuditEntry {
            change: change_by(who),
            action: action.to_owned(),
            target,
            before,
            after,
        };
        self.with_store(move |store| Ok(store.append_audit(&entry).map(|_| ())?))
            .await
    }

    /// Whether `who` may see or act on agent `id` (an admin on any, others
    /// on the agents serving their units' queues); `None` for an agent the
    /// configuration does not have.
    fn sees_agent(&self, who: &Principal, id: &str) -> Option<bool> {
        let options = self.options();
        let queues = options.agent_queues.get(id)?;
        Some(who.role == Role::Admin || queues.iter().any(|q| who.sees_queue(q)))
    }
}

/// The audit actor and time of a change made by `who` now.
fn change_by(who: &Principal) -> Change {
    Change {
        actor: who.name.clone(),
        at: Timestamp::now(),
    }
}

/// `/health` and `/healthz` body.
#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthBody {
    /// `ok`; `/health` also `draining` or `stopped` (503).
    pub status: &'static str,
}

/// `/readyz` body.
#[derive(Serialize, ToSchema)]
#[schema(as = Ready)]
pub struct ReadyBody {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// The checks that failed, in the order of `checks`.
    pub not_ready: Vec<&'static str>,
    /// Every check and whether it passed.
    pub checks: ReadyChecks,
}

/// `checks` in [`ReadyBody`].
#[derive(Serialize, ToSchema)]
pub struct ReadyChecks {
    /// The engine task runs.
    pub engine: bool,
    /// The engine is not draining.
    pub draining: bool,
    /// The store opens read-write and answers.
    pub store: bool,
    /// The SIP sockets are bound.
    pub sip: bool,
}

/// A refusal or failure: the status and `{"code","message"}`, maybe a
/// header (`WWW-Authenticate`).
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(HeaderName, HeaderValue)>,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn forbidden(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn not_found(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn internal(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", message)
    }

    fn engine_stopped() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_stopped",
            "the engine is not running",
        )
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        warn!(error = %e, "admin API: store failure");
        Problem::internal(e.to_string())
    }
}

impl From<AccountError> for Problem {
    fn from(e: AccountError) -> Problem {
        match e {
            AccountError::Store(e) => e.into(),
            AccountError::InvalidName { .. } => {
                Problem::bad_request("invalid_name", format!("name: {e}"))
            }
            AccountError::Exists { .. } => {
                Problem::new(StatusCode::CONFLICT, "already_exists", e.to_string())
            }
            AccountError::NotFound { .. } => Problem::not_found(e.to_string()),
        }
    }
}

/// Every refusal and failure's body (the `Error` schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, `snake_case` (`invalid_body`, `not_found`, …).
    pub code: String,
    /// For a person: names the offending field, parameter or header.
    pub message: String,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Whether the engine runs.
#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses(
        (status = 200, description = "The engine runs", body = HealthBody),
        (status = 503, description = "`draining` while shutting down, `stopped` once the engine is gone", body = HealthBody),
    ))]
async fn health(State(state): State<ApiState>) -> Response {
    let status = state.engine.status().await;
    let (code, text) = health_of(status.as_ref());
    (code, Json(HealthBody { status: text })).into_response()
}

/// Live counters and totals since start-up.
#[utoipa::path(get, path = "/v1/stats", tag = "engine",
    responses(
        (status = 200, description = "The engine's counters", body = StatsBody),
        (status = 503, description = "`engine_stopped`", body = ErrorBody),
    ))]
async fn stats(State(state): State<ApiState>) -> Result<Json<StatsBody>, Problem> {
    let status = state
        .engine
        .status()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    Ok(Json(StatsBody::from(&status)))
}

/// The organisation's two switches.
#[utoipa::path(get, path = "/v1/gates", tag = "engine",
    responses(
        (status = 200, description = "The gates in effect", body = GatesBody),
        (status = 503, description = "`engine_stopped`", body = ErrorBody),
    ))]
async fn get_gates(State(state): State<ApiState>) -> Result<Json<GatesBody>, Problem> {
    let gates = state
        .engine
        .gates()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    Ok(Json(gates.into()))
}

/// Sets both switches of the organisation (stored; outlasts a restart).
#[utoipa::path(put, path = "/v1/gates", tag = "engine", request_body = GatesBody,
    responses(
        (status = 200, description = "The gates now in effect", body = GatesBody),
        (status = 409, description = "`version_conflict`: the organisation changed meanwhile", body = ErrorBody),
        (status = 422, description = "`invalid_organisation`", body = ErrorBody),
        (status = 503, description = "`engine_stopped`", body = ErrorBody),
    ))]
async fn put_gates(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GatesBody>, Problem> {
    let wanted: GatesBody = json_object(&headers, body)?;
    // The organisation's switches: stored, so they outlast a restart.
    let (_, document, _) = org::change(
        &state,
        &who,
        None,
        ("set_gates", "gates".to_owned(), org::org_switches),
        |doc| {
            doc.org.registration_enabled = wanted.registration_enabled;
            doc.org.launch_enabled = wanted.launch_enabled;
            Ok(())
        },
    )
    .await?;
    let gates = document.org.gates();
    info!(?gates, by = %who.name, "gates set through the admin API");
    Ok(Json(gates.into()))
}

/// `PUT /v1/agents/{id}` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentChange {
    /// Pause (no work offered) or make available.
    pub paused: bool,
}

/// Pauses or resumes an agent.
#[utoipa::path(put, path = "/v1/agents/{id}", tag = "agents", request_body = AgentChange,
    params(("id" = String, Path, description = "The agent's id", example = "alice")),
    responses(
        (status = 200, description = "The agent", body = AgentBody),
        (status = 403, description = "`forbidden`: the agent serves none of your units' queues", body = ErrorBody),
        (status = 404, description = "`not_found`: no such agent", body = ErrorBody),
        (status = 409, description = "`agent_busy`: ringing or on a call", body = ErrorBody),
        (status = 503, description = "`engine_stopped`", body = ErrorBody),
    ))]
async fn put_agent(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AgentBody>, Problem> {
    match state.sees_agent(&who, &id) {
        None => return Err(Problem::not_found(format!("id: no agent {id:?}"))),
        Some(false) => {
            return Err(Problem::forbidden(format!(
                "id: agent {id:?} serves none of your units' queues"
            )));
        }
        Some(true) => {}
    }
    let change: AgentChange = json_object(&headers, body)?;
    let before = state
        .engine
        .agents()
        .await
        .ok_or_else(Problem::engine_stopped)?
        .into_iter()
        .find(|a| a.id.as_str() == id)
        .map(|a| json!({ "state": a.state_name() }));
    match state.engine.set_agent_paused(&id, change.paused).await {
        None => Err(Problem::engine_stopped()),
        Some(Ok(agent)) => {
            state
                .audit(
                    &who,
                    if change.paused {
                        "pause_agent"
                    } else {
                        "resume_agent"
                    },
                    format!("agent:{id}"),
                    before,
                    Some(json!({ "state": agent.state_name() })),
                )
                .await?;
            Ok(Json(AgentBody::from(&agent)))
        }
        Some(Err(AgentError::UnknownAgent(_))) => {
            Err(Problem::not_found(format!("id: no agent {id:?}")))
        }
        Some(Err(AgentError::Busy(_))) => Err(Problem::new(
            StatusCode::CONFLICT,
            "agent_busy",
            format!("agent {id:?} is ringing or on a call; pause it after the call"),
        )),
        Some(Err(e)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "agent_busy",
            e.to_string(),
        )),
    }
}

/// A request body: `application/json`, a JSON object of `T`'s fields (400
/// naming what is wrong, 413 over [`MAX_BODY`], 415 for another media
/// type).
fn json_object<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    if !is_json(headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type: the body must be application/json",
        ));
    }
    let body = body.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_body"
        };
        Problem::new(e.status(), code, format!("body: {}", e.body_text()))
    })?;
    // serde's derived struct visitor also takes a sequence (`[true, false]`,
    // fields by position); only the object form is the API.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::bad_request(
            "invalid_body",
            "body: expected a JSON object",
        ));
    }
    let Json(value) = Json::<T>::from_bytes(&body).map_err(|e| {
        let text = e.body_text();
        let detail = [
            "Failed to deserialize the JSON body into the target type: ",
            "Failed to parse the request body as JSON: ",
        ]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .unwrap_or(&text);
        Problem::bad_request("invalid_body", format!("body: {detail}"))
    })?;
    Ok(value)
}

/// A query string of `T`'s fields (400 naming what is wrong).
fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    let Query(query) = query.map_err(|e| {
        let text = e.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        Problem::bad_request("invalid_query", format!("query: {detail}"))
    })?;
    Ok(query)
}

/// The agents serving the caller's units, in id order.
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses(
        (status = 200, description = "The agents", body = Vec<AgentBody>),
        (status = 503, description = "`engine_stopped`", body = ErrorBody),
    ))]
async fn agents(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Vec<AgentBody>>, Problem> {
    let agents = state
        .engine
        .agents()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    Ok(Json(
        agents
            .iter()
            .filter(|a| state.sees_agent(&who, a.id.as_str()) == Some(true))
            .map(AgentBody::from)
            .collect(),
    ))
}

/// Prometheus text format 0.0.4. Public unless `[api] metrics_public =
/// false`, then a viewer's token.
#[utoipa::path(get, path = "/metrics", tag = "health", security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The metric families", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "`engine_stopped`", body = ErrorBody),
    ))]
async fn metrics(State(state): State<ApiState>) -> Result<Response, Problem> {
    let status = state
        .engine
        .status()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    // The API's own connection, on the blocking pool: a read beside the
    // engine's writer (WAL), never through the core task.
    let counts = state
        .with_store(|store| Ok(store.callback_counts()?))
        .await
        .inspect_err(|e| warn!(error = %e.message, "metrics: callbacks not counted"))
        .ok();
    let counts: Option<Vec<metrics::CallbackCount>> = counts.map(|rows| {
        rows.into_iter()
            .map(|(queue, status, count)| metrics::CallbackCount {
                queue: queue.as_str().to_owned(),
                status: status.as_str(),
                count,
            })
            .collect()
    });
    Ok((
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render_scrape(&status, counts.as_deref(), Some(&state.metrics)),
    )
        .into_response())
}

/// Liveness: the process is up and serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "`ok`", body = HealthBody)))]
async fn healthz() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// Readiness: the engine runs, is not draining, the store opens read-write
/// and answers, and the SIP sockets are bound.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "`ready`", body = ReadyBody),
        (status = 503, description = "`not_ready`, naming the failed checks", body = ReadyBody),
    ))]
async fn readyz(State(state): State<ApiState>) -> Response {
    let status = state.engine.status().await;
    let store = state
        .with_store(|store| {
            store.callback_counts()?;
            Ok(store.is_writable())
        })
        .await;
    let store_ok = matches!(store, Ok(true));
    if let Err(e) = &store {
        warn!(error = %e.message, "readyz: store not ready");
    }
    let checks = ReadyChecks {
        engine: status.is_some(),
        draining: status.as_ref().is_some_and(|s| !s.draining),
        store: store_ok,
        sip: status.as_ref().is_some_and(|s| s.sip_bound),
    };
    let not_ready: Vec<&'static str> = [
        ("engine", checks.engine),
        ("draining", checks.draining),
        ("store", checks.store),
        ("sip", checks.sip),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    let code = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = ReadyBody {
        status: if not_ready.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        not_ready,
        checks,
    };
    (code, Json(body)).into_response()
}

async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!("path: no such endpoint {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method: {method} is not allowed on {}", uri.path()),
    )
}

/// A path segment (`{id}`, `{name}`) as text: 400 `invalid_path` when it
/// is not UTF-8 once percent-decoded (axum's own rejection is plain text).
struct Segment(String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Segment, Problem> {
        let UrlPath(text) = UrlPath::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                Problem::bad_request("invalid_path", format!("path: {}", e.body_text()))
            })?;
        Ok(Segment(text))
    }
}

/// Whether the request says its body is JSON (`application/json`, any
/// parameters, any case).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineStats, EngineTotals};

    fn status(draining: bool) -> EngineStatus {
        EngineStatus {
            stats: EngineStats::default(),
            gates: Gates {
                registration_enabled: true,
                launch_enabled: true,
            },
            draining,
            totals: EngineTotals::default(),
            edge: Default::default(),
            queues: Vec::new(),
            media: Default::default(),
            commits: Default::default(),
            sip_bound: true,
        }
    }

    #[test]
    fn health_is_ok_while_running() {
        assert_eq!(health_of(Some(&status(false))), (StatusCode::OK, "ok"));
    }

    #[test]
    fn health_is_unavailable_while_draining() {
        assert_eq!(
            health_of(Some(&status(true))),
            (StatusCode::SERVICE_UNAVAILABLE, "draining")
        );
    }

    #[test]
    fn health_is_unavailable_once_stopped() {
        assert_eq!(
            health_of(None),
            (StatusCode::SERVICE_UNAVAILABLE, "stopped")
        );
    }

    #[test]
    fn agent_body_names_the_state() {
        use crate::acd::agents::{AgentId, AgentState, Work};
        use crate::callback::CallbackId;
        let status = |state, reachable| AgentStatus {
            id: AgentId("alice".into()),
            state,
            reachable,
        };
        assert_eq!(
            AgentBody::from(&status(
                AgentState::OnCall(Work::Callback(CallbackId(3))),
                true
            )),
            AgentBody {
                id: "alice".into(),
                state: "on_call",
                reachable: true,
            }
        );
        assert_eq!(
            AgentBody::from(&status(AgentState::Paused, false)).state,
            "paused"
        );
    }

    #[test]
    fn json_content_type_accepts_parameters_and_case() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, v.parse().expect("header value"));
            h
        };
        assert!(is_json(&with("application/json")));
        assert!(is_json(&with("Application/JSON; charset=utf-8")));
        assert!(!is_json(&with("text/plain")));
        assert!(!is_json(&with("application/jsonx")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
