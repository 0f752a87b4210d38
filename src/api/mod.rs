//! The admin HTTP API: health, live statistics, the runtime gates, the
//! stored callbacks and Prometheus metrics.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/health` | 200 `{"status":"ok"}`; 503 `{"status":"draining"}` while shutting down, `{"status":"stopped"}` once the engine is gone |
//! | GET | `/v1/stats` | live counters ([`crate::engine::EngineStats`]) and totals since start-up |
//! | GET | `/v1/gates` | `{"registration_enabled":bool,"launch_enabled":bool}` |
//! | PUT | `/v1/gates` | the same object, both fields required → 200 with the gates now in effect |
//! | GET | `/v1/callbacks[?status=S]` | the stored callbacks, oldest first, optionally one status |
//! | GET | `/v1/agents` | every configured agent: `{"id","state","reachable"}`, in id order |
//! | PUT | `/v1/agents/{id}` | `{"paused":bool}` → 200 with the agent; 404 unknown agent; 409 while it rings or talks |
//! | GET | `/metrics` | Prometheus text format 0.0.4 (see [`metrics`]) |
//!
//! Bodies are JSON (`application/json`). Every refusal is a 4xx (5xx for a
//! failure on our side) with `{"error":"…"}` naming the offending field or
//! parameter: 400 for a bad body or query, 404 for an unknown path or agent,
//! 409 for a change the agent's state forbids, 405 for a
//! wrong method (with `Allow`), 413 for a body over [`MAX_BODY`], 415 for a
//! PUT that is not `application/json`, 503 when the engine has stopped.
//!
//! The gates set here are the issue 3 runtime switch: registration disabled →
//! callers hear "we are unable to offer callbacks at this time"; launching
//! disabled → callers still register, but no estimated time is announced.
//! They last until the process restarts, which applies `[org]` again.
//!
//! **No authentication, no TLS.** Anyone who reaches the listener can switch
//! callbacks off and read every stored phone number; the shipped `[api]`
//! binds to loopback. Expose it only through a proxy that authenticates.
//!
//! The API owns no engine state. It asks the core task through an
//! [`EngineControl`] (a control message with a oneshot reply), and reads the
//! callback store over its own SQLite connection on the blocking pool: WAL
//! lets that reader run beside the engine's writer.

pub mod metrics;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, serve};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::acd::agents::AgentError;
use crate::b2bua::agents::AgentStatus;
use crate::callback::hours::Gates;
use crate::callback::store::{CallbackRow, SqliteStore, Status, Store};
use crate::engine::{EngineControl, EngineStatus};

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

/// The routes of the API over a running engine; `store_path` is the callback
/// store's file ([`crate::config::Config::store_path`]).
pub fn router(engine: EngineControl, store_path: PathBuf) -> Router {
    let state = ApiState {
        engine,
        store_path: store_path.into(),
    };
    Router::new()
        .route("/health", get(health))
        .route("/v1/stats", get(stats))
        .route("/v1/gates", get(get_gates).put(put_gates))
        .route("/v1/callbacks", get(callbacks))
        .route("/v1/agents", get(agents))
        .route("/v1/agents/{id}", put(put_agent))
        .route("/metrics", get(metrics))
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
        store_path: PathBuf,
    ) -> Result<ApiServer, ApiError> {
        let bind_err = |source| ApiError::Bind { addr: bind, source };
        let listener = TcpListener::bind(bind).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        if !local_addr.ip().is_loopback() {
            warn!(
                addr = %local_addr,
                "the admin API has no authentication and listens beyond loopback; \
                 put an authenticating proxy in front of it"
            );
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(engine, store_path);
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SipStatsBody {
    /// Calls not yet ended.
    pub calls: usize,
    /// Live transactions.
    pub transactions: usize,
    /// Objects with a pending timer.
    pub timers: usize,
}

/// `totals` in [`StatsBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// One element of the `/v1/callbacks` array. Times are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackBody {
    /// Row id.
    pub id: i64,
    /// Queue id.
    pub queue: String,
    /// The number to call, plain digits as keyed.
    pub number: String,
    /// The caller's ANI as received.
    pub caller_ani: String,
    /// The number the caller dialed.
    pub called_number: String,
    /// Queue priority.
    pub priority: i32,
    /// `pending`, `dialing`, `completed`, `failed`, `expired`, `cancelled`.
    pub status: &'static str,
    /// Outbound attempts so far.
    pub attempts: u32,
    /// Original queue entry: the place in line.
    pub queued_at: String,
    /// When the callback was committed.
    pub registered_at: String,
    /// The estimate announced, in whole minutes.
    pub ecbt_quoted_minutes: u32,
    /// When the next attempt is due, if scheduled.
    pub next_attempt_at: Option<String>,
    /// No attempt after this.
    pub expires_at: String,
    /// Call-ID of the call that registered it.
    pub inbound_call_id: String,
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
        }
    }
}

/// One element of the `/v1/agents` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    store_path: Arc<Path>,
}

/// `/health` body.
#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
}

/// `/v1/callbacks` query parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbacksQuery {
    status: Option<String>,
}

/// A refusal or failure: the status and `{"error": message}`.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    message: String,
}

impl Problem {
    fn new(status: StatusCode, message: impl Into<String>) -> Problem {
        Problem {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, message)
    }

    fn engine_stopped() -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the engine is not running")
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response()
    }
}

async fn health(State(state): State<ApiState>) -> Response {
    let status = state.engine.status().await;
    let (code, text) = health_of(status.as_ref());
    (code, Json(HealthBody { status: text })).into_response()
}

async fn stats(State(state): State<ApiState>) -> Result<Json<StatsBody>, Problem> {
    let status = state
        .engine
        .status()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    Ok(Json(StatsBody::from(&status)))
}

async fn get_gates(State(state): State<ApiState>) -> Result<Json<GatesBody>, Problem> {
    let gates = state
        .engine
        .gates()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    Ok(Json(gates.into()))
}

async fn put_gates(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GatesBody>, Problem> {
    let wanted: GatesBody = json_object(&headers, body)?;
    let gates = state
        .engine
        .set_gates(wanted.into())
        .await
        .ok_or_else(Problem::engine_stopped)?;
    info!(?gates, "gates set through the admin API");
    Ok(Json(gates.into()))
}

/// `PUT /v1/agents/{id}` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentChange {
    /// Pause (no work offered) or make available.
    pub paused: bool,
}

async fn put_agent(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AgentBody>, Problem> {
    let change: AgentChange = json_object(&headers, body)?;
    match state.engine.set_agent_paused(&id, change.paused).await {
        None => Err(Problem::engine_stopped()),
        Some(Ok(agent)) => Ok(Json(AgentBody::from(&agent))),
        Some(Err(AgentError::UnknownAgent(_))) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("id: no agent {id:?}"),
        )),
        Some(Err(AgentError::Busy(_))) => Err(Problem::new(
            StatusCode::CONFLICT,
            format!("agent {id:?} is ringing or on a call; pause it after the call"),
        )),
        Some(Err(e)) => Err(Problem::new(StatusCode::CONFLICT, e.to_string())),
    }
}

/// A PUT body: `application/json`, a JSON object of `T`'s fields (400
/// naming what is wrong, 415 for another media type).
fn json_object<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    if !is_json(headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: the body must be application/json",
        ));
    }
    let body = body.map_err(|e| Problem::new(e.status(), format!("body: {}", e.body_text())))?;
    // serde's derived struct visitor also takes a sequence (`[true, false]`,
    // fields by position); only the object form is the API.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::bad_request("body: expected a JSON object"));
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
        Problem::bad_request(format!("body: {detail}"))
    })?;
    Ok(value)
}

async fn callbacks(
    State(state): State<ApiState>,
    query: Result<Query<CallbacksQuery>, QueryRejection>,
) -> Result<Json<Vec<CallbackBody>>, Problem> {
    let Query(query) = query.map_err(|e| {
        let text = e.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        Problem::bad_request(format!("query: {detail}"))
    })?;
    let wanted = match query.status.as_deref() {
        None => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| {
            let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            Problem::bad_request(format!(
                "status: unknown status {text:?} (expected one of {})",
                known.join(", ")
            ))
        })?),
    };
    let path = state.store_path.clone();
    // SQLite is blocking IO: off the async workers. A connection per request
    // keeps no lock or snapshot open between requests.
    let rows = tokio::task::spawn_blocking(move || SqliteStore::open(&path)?.list())
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("callback store: {e}"),
            )
        })?
        .map_err(|e| {
            warn!(error = %e, "admin API cannot read the callback store");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        })?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| wanted.is_none_or(|s| r.status == s))
            .map(CallbackBody::from)
            .collect(),
    ))
}

async fn agents(State(state): State<ApiState>) -> Result<Json<Vec<AgentBody>>, Problem> {
    let agents = state
        .engine
        .agents()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    Ok(Json(agents.iter().map(AgentBody::from).collect()))
}

async fn metrics(State(state): State<ApiState>) -> Result<Response, Problem> {
    let status = state
        .engine
        .status()
        .await
        .ok_or_else(Problem::engine_stopped)?;
    Ok((
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&status),
    )
        .into_response())
}

async fn not_found(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("path: no such endpoint {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method: {method} is not allowed on {}", uri.path()),
    )
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
