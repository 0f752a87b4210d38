//! The admin HTTP API against an engine running in this process: every
//! endpoint through the router (`tower::ServiceExt::oneshot`), the refusals
//! (400, 404, 405, 415), a SIP call that the statistics, metrics and health
//! must see, and one request over a real TCP socket. Accounts: the route ×
//! role matrix built from [`api::routes`] (issue 11 acceptance 1), tokens
//! that expire, are revoked or belong to a disabled user, unit scoping, the
//! audit log, and `callbackd user add` bootstrapping the first admin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, Request, StatusCode};
use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tower::ServiceExt;

use callbackd::api::{self, ApiOptions, ApiServer, Rule, metrics};
use callbackd::callback::QueueId;
use callbackd::callback::store::testing::user_with_token;
use callbackd::callback::store::{
    AccountStore, Change, NewCallback, NewToken, NewWebhook, Registration, Role, SqliteStore,
    Store, TokenSecret, WebhookStore,
};
use callbackd::callback::webhook::EventKind;
use callbackd::config::Config;
use callbackd::engine::{self, EngineHandle};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

/// A directory under cargo's target tmp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("api-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("target tmp dir is writable");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An engine on 127.0.0.1 (SIP on an ephemeral UDP port) and the API's
/// router over it. `[org] launch_enabled = false` so that the gates read
/// back are visibly the configuration's, not constants.
///
/// Two business units: `east` groups queue `support` (agents alice, bob),
/// `west` groups `sales` (agent carol). Before the engine starts, the store
/// gets one user per role — `root` (admin), `ann` (manager of east), `wes`
/// (manager of west), `vic` (viewer of east) — each with a token.
struct Harness {
    engine: Option<EngineHandle>,
    app: Router,
    store_path: PathBuf,
    options: ApiOptions,
    tokens: Tokens,
    _dir: TempDir,
}

/// The tokens of the harness's users.
struct Tokens {
    admin: String,
    manager: String,
    other_manager: String,
    viewer: String,
}

impl Harness {
    async fn start(name: &str) -> Harness {
        Harness::start_with(name, "").await
    }

    /// [`Harness::start`] with `api` as the `[api]` section's body.
    async fn start_with(name: &str, api: &str) -> Harness {
        Harness::start_config(name, "", api, "").await
    }

    /// [`Harness::start_with`], with `org` added to `[org]` and `tail` to
    /// the end of the file.
    async fn start_config(name: &str, org: &str, api: &str, tail: &str) -> Harness {
        let dir = TempDir::new(name);
        let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let text = format!(
            r#"
            [sip]
            # Replaced by port 0 below (the configuration refuses port 0).
            bind = "127.0.0.1:5999"
            transports = ["udp"]
            [rtp]
            port_min = 36000
            port_max = 36099
            [call]
            max_calls = 10
            [prompts]
            dir = '{}'
            [store]
            path = "callbacks.sqlite"
            [org]
            launch_enabled = false
            blacklist = ["900"]
            {org}
            [api]
            {api}
            [[queues]]
            id = "support"
            [[queues]]
            id = "sales"
            [[queues]]
            id = "closing"
            [[agents]]
            id = "alice"
            uri = "sip:alice@127.0.0.1:5999"
            queues = ["support"]
            [[agents]]
            id = "bob"
            uri = "sip:bob@127.0.0.1:5999"
            queues = ["support"]
            [[agents]]
            id = "carol"
            uri = "sip:carol@127.0.0.1:5999"
            queues = ["sales"]
            {tail}
            "#,
            prompts.display()
        );
        let mut config = Config::from_toml_str(&text, "api-test").expect("test config");
        config.sip.bind = "127.0.0.1:0".parse().expect("addr");
        config.bind_ephemeral_sip_port();
        let store_path = config.store_path(&dir.0);
        let settings = config.check(&dir.0).expect("valid config");
        let options = ApiOptions::new(&settings);
        let tokens = {
            let mut store = SqliteStore::open(&store_path).expect("store");
            let change = Change {
                actor: "test".into(),
                at: Timestamp::now(),
            };
            store
                .create_unit("east", &[QueueId("support".into())], &change)
                .expect("unit");
            store
                .create_unit("west", &[QueueId("sales".into())], &change)
                .expect("unit");
            Tokens {
                admin: user_with_token(&mut store, "root", Role::Admin, &[]),
                manager: user_with_token(&mut store, "ann", Role::Manager, &["east"]),
                other_manager: user_with_token(&mut store, "wes", Role::Manager, &["west"]),
                viewer: user_with_token(&mut store, "vic", Role::Viewer, &["east"]),
            }
        };
        let engine = engine::start(settings).await.expect("engine starts");
        let app = api::router(engine.control(), options.clone());
        Harness {
            engine: Some(engine),
            app,
            store_path,
            options,
            tokens,
            _dir: dir,
        }
    }

    fn engine(&self) -> &EngineHandle {
        self.engine.as_ref().expect("engine still running")
    }

    /// Sends one request through the router as the admin.
    async fn request(
        &self,
        method: &str,
        uri: &str,
        body: Option<(&str, &str)>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.request_as(Some(&self.tokens.admin), method, uri, body)
            .await
    }

    /// Sends one request through the router with `token` (or none).
    async fn request_as(
        &self,
        token: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<(&str, &str)>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.request_with(token, method, uri, body, &[]).await
    }

    /// [`Harness::request_as`] with more headers.
    async fn request_with(
        &self,
        token: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<(&str, &str)>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        if let Some(token) = token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some((content_type, text)) => {
                builder = builder.header(CONTENT_TYPE, content_type);
                Body::from(text.to_owned())
            }
            None => Body::empty(),
        };
        let request = builder.body(body).expect("request");
        let response = tokio::time::timeout(WAIT, self.app.clone().oneshot(request))
            .await
            .expect("answered in time")
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, bytes)
    }

    /// `GET /v1/callbacks…` as the admin: the page's callbacks (its
    /// `next_cursor` must be null: these tests make fewer than a page).
    async fn callbacks(&self, uri: &str) -> (StatusCode, Vec<CallbackBody>) {
        let (status, page) = self.get::<CallbackPage>(uri).await;
        assert_eq!(page.next_cursor, None, "{uri}: one page");
        (status, page.callbacks)
    }

    async fn get<T: DeserializeOwned>(&self, uri: &str) -> (StatusCode, T) {
        let (status, headers, body) = self.request("GET", uri, None).await;
        assert_json(&headers);
        (status, json(&body))
    }

    /// A request that must be refused with `status` and an error body; the
    /// error text is returned.
    async fn refused(
        &self,
        method: &str,
        uri: &str,
        body: Option<(&str, &str)>,
        status: StatusCode,
    ) -> String {
        let (got, headers, bytes) = self.request(method, uri, body).await;
        assert_eq!(
            got,
            status,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_json(&headers);
        ErrorBody::checked(&bytes).message
    }
}

/// Every refusal: a snake_case code and a message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorBody {
    code: String,
    message: String,
}

impl ErrorBody {
    fn checked(body: &[u8]) -> ErrorBody {
        let e: ErrorBody = json(body);
        assert!(
            !e.code.is_empty() && e.code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "code {:?} is snake_case",
            e.code
        );
        assert!(!e.message.is_empty());
        e
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct HealthBody {
    status: String,
}

#[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct GatesBody {
    registration_enabled: bool,
    launch_enabled: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct StatsBody {
    sip: SipStats,
    calls: usize,
    rtp_ports: usize,
    draining: bool,
    totals: Totals,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SipStats {
    calls: usize,
    transactions: usize,
    timers: usize,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Totals {
    incoming_calls: u64,
    callbacks_registered: u64,
    callbacks_already_scheduled: u64,
    registration_failures: u64,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    id: String,
    state: String,
    reachable: bool,
}

/// `GET /v1/callbacks`: always a page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackPage {
    callbacks: Vec<CallbackBody>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    id: i64,
    queue: String,
    number: String,
    caller_ani: String,
    called_number: String,
    priority: i32,
    status: String,
    attempts: u32,
    queued_at: String,
    registered_at: String,
    ecbt_quoted_minutes: u32,
    next_attempt_at: Option<String>,
    expires_at: String,
    inbound_call_id: String,
    scheduled_for: Option<String>,
    created_by: Option<String>,
    data: Option<serde_json::Value>,
    customer_dialed_at: Option<String>,
    ecbt_error_s: Option<i64>,
    caller_id: Option<String>,
    #[serde(rename = "type")]
    source: String,
    rule: Option<String>,
    task: Option<serde_json::Value>,
    closed_reason: Option<String>,
}

fn json<T: DeserializeOwned>(body: &[u8]) -> T {
    match axum::Json::<T>::from_bytes(body) {
        Ok(axum::Json(value)) => value,
        Err(e) => panic!("{e}: {}", String::from_utf8_lossy(body)),
    }
}

fn assert_json(headers: &HeaderMap) {
    assert_eq!(
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
}

/// The sample value of metric `name` in an exposition text.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_text(h: &Harness) -> String {
    let (status, headers, body) = h.request("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    String::from_utf8(body.to_vec()).expect("UTF-8 exposition")
}

#[tokio::test]
async fn health_is_ok_while_the_engine_runs_and_stopped_after() {
    let mut h = Harness::start("health").await;
    let (status, body) = h.get::<HealthBody>("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.status, "ok");

    let (status, ready) = h.get::<serde_json::Value>("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        ready["checks"],
        serde_json::json!({"draining": true, "engine": true, "sip": true, "store": true})
    );

    h.engine.take().expect("engine").shutdown().await;
    let (status, body) = h.get::<HealthBody>("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body.status, "stopped");
    // The process still serves HTTP: alive, not ready.
    let (status, alive) = h.get::<serde_json::Value>("/healthz").await;
    assert_eq!(
        (status, alive["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, ready) = h.get::<serde_json::Value>("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready["not_ready"],
        serde_json::json!(["engine", "draining", "sip"])
    );
    let e = h
        .refused("GET", "/v1/stats", None, StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert!(e.contains("not running"), "{e}");
}

#[tokio::test]
async fn stats_of_an_idle_engine_are_zero() {
    let h = Harness::start("stats").await;
    let (status, body) = h.get::<StatsBody>("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        StatsBody {
            sip: SipStats {
                calls: 0,
                transactions: 0,
                timers: 0
            },
            calls: 0,
            rtp_ports: 0,
            draining: false,
            totals: Totals {
                incoming_calls: 0,
                callbacks_registered: 0,
                callbacks_already_scheduled: 0,
                registration_failures: 0,
            },
        }
    );
}

#[tokio::test]
async fn gates_start_from_the_configuration_and_put_switches_them() {
    let h = Harness::start("gates").await;
    let (status, gates) = h.get::<GatesBody>("/v1/gates").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        gates,
        GatesBody {
            registration_enabled: true,
            launch_enabled: false
        }
    );

    let wanted = r#"{"registration_enabled": false, "launch_enabled": true}"#;
    let (status, headers, body) = h
        .request("PUT", "/v1/gates", Some(("application/json", wanted)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_json(&headers);
    let expected = GatesBody {
        registration_enabled: false,
        launch_enabled: true,
    };
    assert_eq!(json::<GatesBody>(&body), expected);
    // The engine holds them: read back through the API and the handle.
    assert_eq!(h.get::<GatesBody>("/v1/gates").await.1, expected);
    let engine_gates = h.engine().gates().await.expect("engine running");
    assert!(!engine_gates.registration_enabled && engine_gates.launch_enabled);
    let text = metrics_text(&h).await;
    assert_eq!(
        sample(&text, "callbackd_gate_registration_enabled"),
        Some(0)
    );
    assert_eq!(sample(&text, "callbackd_gate_launch_enabled"), Some(1));

    // Charset parameter accepted; switch back on.
    let (status, _, body) = h
        .request(
            "PUT",
            "/v1/gates",
            Some((
                "application/json; charset=utf-8",
                r#"{"launch_enabled":true,"registration_enabled":true}"#,
            )),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(json::<GatesBody>(&body).registration_enabled);
}

#[tokio::test]
async fn agents_are_listed_and_put_pauses_and_resumes_one() {
    let h = Harness::start("agents").await;
    let agent = |id: &str, state: &str| AgentBody {
        id: id.into(),
        state: state.into(),
        reachable: true,
    };
    let (status, agents) = h.get::<Vec<AgentBody>>("/v1/agents").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        agents,
        [
            agent("alice", "available"),
            agent("bob", "available"),
            agent("carol", "available")
        ]
    );

    let (status, headers, body) = h
        .request(
            "PUT",
            "/v1/agents/alice",
            Some(("application/json", r#"{"paused": true}"#)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_json(&headers);
    assert_eq!(json::<AgentBody>(&body), agent("alice", "paused"));
    // Held by the engine; bob untouched.
    assert_eq!(
        h.get::<Vec<AgentBody>>("/v1/agents").await.1,
        [
            agent("alice", "paused"),
            agent("bob", "available"),
            agent("carol", "available")
        ]
    );
    let engine_view = h.engine().agents().await.expect("engine running");
    assert_eq!(engine_view[0].state_name(), "paused");
    // Pausing twice is fine; unpausing makes it available again.
    for (paused, state) in [(true, "paused"), (false, "available"), (false, "available")] {
        let (status, _, body) = h
            .request(
                "PUT",
                "/v1/agents/alice",
                Some(("application/json", &format!(r#"{{"paused":{paused}}}"#))),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json::<AgentBody>(&body), agent("alice", state));
    }
}

#[tokio::test]
async fn put_agent_refuses_unknown_agents_and_bad_bodies() {
    let h = Harness::start("agents-refused").await;
    let json_type = "application/json";
    let error = h
        .refused(
            "PUT",
            "/v1/agents/dave",
            Some((json_type, r#"{"paused": true}"#)),
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(error.contains("no agent \"dave\""), "{error}");
    for bad in [
        r#"{}"#,
        r#"{"paused": "yes"}"#,
        r#"{"paused": true, "until": 5}"#,
        r#"[true]"#,
        "not json",
    ] {
        let error = h
            .refused(
                "PUT",
                "/v1/agents/alice",
                Some((json_type, bad)),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(error.starts_with("body: "), "{bad}: {error}");
    }
    h.refused(
        "PUT",
        "/v1/agents/alice",
        Some(("text/plain", r#"{"paused": true}"#)),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    h.refused(
        "POST",
        "/v1/agents/alice",
        None,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    // Nothing changed.
    let (_, agents) = h.get::<Vec<AgentBody>>("/v1/agents").await;
    assert!(agents.iter().all(|a| a.state == "available"), "{agents:?}");
}

#[tokio::test]
async fn put_gates_rejects_bad_bodies_and_changes_nothing() {
    let h = Harness::start("gates-bad").await;
    let before = h.get::<GatesBody>("/v1/gates").await.1;
    let h = &h;
    let put = |body: &'static str| async move {
        h.refused(
            "PUT",
            "/v1/gates",
            Some(("application/json", body)),
            StatusCode::BAD_REQUEST,
        )
        .await
    };

    let e = put(r#"{"registration_enabled": false}"#).await;
    assert!(e.contains("missing field `launch_enabled`"), "{e}");
    let e = put(r#"{"registration_enabled": false, "launch_enabled": true, "lunch": 1}"#).await;
    assert!(e.contains("unknown field `lunch`"), "{e}");
    let e = put(r#"{"registration_enabled": "no", "launch_enabled": true}"#).await;
    assert!(
        e.contains("registration_enabled") && e.contains("boolean"),
        "{e}"
    );
    let e = put(r#"{"registration_enabled": false, "launch_enabled": null}"#).await;
    assert!(e.contains("launch_enabled") && e.contains("boolean"), "{e}");
    let e = put(r#"{"registration_enabled": false,"#).await;
    assert!(e.starts_with("body: "), "{e}");
    let e = put("").await;
    assert!(e.starts_with("body: "), "{e}");
    // serde would take an array as the fields in order; the API does not.
    let e = put(r#"[true, false]"#).await;
    assert_eq!(e, "body: expected a JSON object");
    let e = put(r#"{"registration_enabled": false, "launch_enabled": true} trailing"#).await;
    assert!(e.starts_with("body: "), "{e}");

    let e = h
        .refused(
            "PUT",
            "/v1/gates",
            Some((
                "text/plain",
                r#"{"registration_enabled":false,"launch_enabled":false}"#,
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    assert!(e.contains("Content-Type"), "{e}");
    let e = h
        .refused("PUT", "/v1/gates", None, StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .await;
    assert!(e.contains("application/json"), "{e}");
    let huge = format!(
        r#"{{"registration_enabled":false,"launch_enabled":false,"x":"{}"}}"#,
        "a".repeat(api::MAX_BODY)
    );
    let (status, headers, _) = h
        .request("PUT", "/v1/gates", Some(("application/json", &huge)))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_json(&headers);

    assert_eq!(h.get::<GatesBody>("/v1/gates").await.1, before);
}

#[tokio::test]
async fn callbacks_lists_stored_rows_with_a_status_filter() {
    let h = Harness::start("callbacks").await;
    let (status, rows) = h.callbacks("/v1/callbacks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(rows.is_empty());

    // Times around now: the running engine expires a row whose expiry has
    // passed, so a fixed date would turn "pending" into "expired" one day.
    let second = Timestamp::now().as_second();
    let queued_at = Timestamp::new(second, 123_000_000).expect("ts");
    let registered_at = Timestamp::from_second(second + 115).expect("ts");
    let expires_at = Timestamp::from_second(second + 115 + 86_400).expect("ts");
    let id = {
        // A second writer beside the engine's: WAL and the busy timeout
        // make that safe.
        let mut store = SqliteStore::open(&h.store_path).expect("store");
        match store
            .register(&NewCallback {
                queue: QueueId("support".into()),
                number: "3125550188".into(),
                caller_ani: "+13125550100".into(),
                called_number: "18005550100".into(),
                priority: 2,
                queued_at,
                registered_at,
                ecbt_quoted_minutes: 7,
                expires_at,
                inbound_call_id: "abc@203.0.113.5".into(),
                sip_context: None,
            })
            .expect("register")
        {
            Registration::Registered(id) => id,
            Registration::AlreadyScheduled(id) => panic!("fresh store has {id}"),
        }
    };

    let expected = CallbackBody {
        id: id.0,
        queue: "support".into(),
        number: "3125550188".into(),
        caller_ani: "+13125550100".into(),
        called_number: "18005550100".into(),
        priority: 2,
        status: "pending".into(),
        attempts: 0,
        queued_at: rfc3339(queued_at),
        registered_at: rfc3339(registered_at),
        ecbt_quoted_minutes: 7,
        next_attempt_at: None,
        expires_at: rfc3339(expires_at),
        inbound_call_id: "abc@203.0.113.5".into(),
        scheduled_for: None,
        created_by: None,
        data: None,
        customer_dialed_at: None,
        ecbt_error_s: None,
        caller_id: None,
        source: "ivr".into(),
        rule: None,
        task: None,
        closed_reason: None,
    };
    let (status, rows) = h.callbacks("/v1/callbacks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows, [expected]);
    let (_, rows) = h.callbacks("/v1/callbacks?status=pending").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].number, "3125550188");
    let (status, rows) = h.callbacks("/v1/callbacks?status=completed").await;
    assert_eq!(status, StatusCode::OK);
    assert!(rows.is_empty());
    assert_eq!(
        sample(
            &metrics_text(&h).await,
            r#"callbackd_callbacks{queue="support",status="pending"}"#
        ),
        Some(1)
    );

    // An attempt that dialed the customer 5 minutes after registration,
    // 7 announced (launching is off here: the engine leaves it alone).
    let dialed = Timestamp::from_second(second + 115 + 300).expect("ts");
    {
        use callbackd::callback::scheduler::Outcome;
        use callbackd::callback::store::{Attempt, LaunchStore, NextStep};
        let mut store = SqliteStore::open(&h.store_path).expect("store");
        assert!(store.claim(id, registered_at).expect("claim"));
        let attempt = Attempt {
            started_at: dialed,
            ended_at: dialed,
            outcome: Outcome::Busy,
            sip_status: Some(486),
            agent: Some("alice".into()),
            customer_dialed_at: Some(dialed),
        };
        let next = NextStep::Retry {
            at: expires_at,
            task: None,
        };
        store.record_attempt(id, &attempt, &next).expect("recorded");
    }
    let (status, one) = h
        .get::<serde_json::Value>(&format!("/v1/callbacks/{}", id.0))
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["customer_dialed_at"], rfc3339(dialed).as_str());
    assert_eq!(one["ecbt_error_s"], -120, "2 minutes early: {one}");
    assert_eq!(
        one["attempt_log"][0]["customer_dialed_at"],
        rfc3339(dialed).as_str()
    );
}

/// Issue 13: automatic callbacks of missed calls are listed with their
/// rule, settings and state, and the callbacks and the CDR export filter by
/// type.
#[tokio::test]
async fn callbacks_and_cdrs_filter_by_type() {
    use callbackd::callback::CallbackId;
    use callbackd::callback::cdr::{CdrRecord, Leg, LegOutcome};
    use callbackd::callback::store::{LaunchStore, NewTask, Source};
    let h = Harness::start("by-type").await;
    let second = Timestamp::now().as_second();
    let at = Timestamp::from_second(second).expect("ts");
    let expires_at = Timestamp::from_second(second + 86_400).expect("ts");
    let new = |number: &str, call_id: &str| NewCallback {
        queue: QueueId("support".into()),
        number: number.into(),
        caller_ani: number.into(),
        called_number: "3125550100".into(),
        priority: 0,
        queued_at: at,
        registered_at: at,
        ecbt_quoted_minutes: 0,
        expires_at,
        inbound_call_id: call_id.into(),
        sip_context: None,
    };
    let (ivr, task, failed) = {
        let mut store = SqliteStore::open(&h.store_path).expect("store");
        let id = |r: Registration| match r {
            Registration::Registered(id) | Registration::AlreadyScheduled(id) => id,
        };
        let ivr = id(store
            .register(&new("3125550188", "in-1"))
            .expect("register"));
        let settings = r#"{"rule":"ivr","miss":"ivr","attempt":0}"#;
        let due = Timestamp::from_second(second + 3600).expect("ts");
        let task = id(store
            .create_task(&NewTask {
                callback: new("3125550111", "in-2"),
                rule: "ivr".into(),
                task: settings.into(),
                first_attempt_at: Some(due),
                reason: None,
            })
            .expect("task"));
        let failed = id(store
            .create_task(&NewTask {
                callback: new("9995550111", "in-3"),
                rule: "ivr".into(),
                task: settings.into(),
                first_attempt_at: None,
                reason: Some("unknown_time_zone".into()),
            })
            .expect("task"));
        let leg = |callback: Option<CallbackId>, leg: Leg, call_id: &str, source| CdrRecord {
            callback,
            inbound_call_id: String::new(),
            leg,
            call_id: call_id.into(),
            start: at,
            answer: None,
            end: at,
            outcome: LegOutcome::NoAnswer,
            sip_code: Some(480),
            peer: "sip:x@127.0.0.1".into(),
            redirected_from: None,
            source,
        };
        for record in [
            leg(None, Leg::Inbound, "cdr-in", None),
            leg(Some(ivr), Leg::Customer, "cdr-ivr", Some(Source::Ivr)),
            leg(Some(task), Leg::Agent, "cdr-task", Some(Source::MissedCall)),
        ] {
            store.write_cdr(&record).expect("cdr");
        }
        (ivr, task, failed)
    };
    let (status, rows) = h.callbacks("/v1/callbacks?type=missed_call").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, [task.0, failed.0], "only the automatic ones");
    assert!(rows.iter().all(|r| r.source == "missed_call"));
    assert_eq!(rows[0].rule.as_deref(), Some("ivr"));
    assert_eq!(rows[0].status, "pending");
    let settings = rows[0].task.as_ref().expect("its settings");
    assert_eq!(settings["attempt"], 0, "{settings}");
    assert_eq!(rows[1].status, "failed");
    assert_eq!(rows[1].closed_reason.as_deref(), Some("unknown_time_zone"));
    let (_, rows) = h.callbacks("/v1/callbacks?type=ivr").await;
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [ivr.0]);
    let (_, rows) = h.callbacks("/v1/callbacks?type=api").await;
    assert!(rows.is_empty());
    let e = h
        .refused(
            "GET",
            "/v1/callbacks?type=robot",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(e.starts_with("type: ") && e.contains("missed_call"), "{e}");

    // The CDR export: every leg, or one type's.
    let csv = |body: &[u8]| -> Vec<String> {
        let text = std::str::from_utf8(body).expect("UTF-8");
        text.split_terminator("\r\n").map(str::to_owned).collect()
    };
    let (status, headers, body) = h.request("GET", "/v1/cdrs", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("text/csv; charset=utf-8")
    );
    let all = csv(&body);
    assert_eq!(all.len(), 4, "header and three legs: {all:?}");
    assert!(all[0].contains("type"), "{}", all[0]);
    let (status, _, body) = h.request("GET", "/v1/cdrs?type=missed_call", None).await;
    assert_eq!(status, StatusCode::OK);
    let some = csv(&body);
    assert_eq!(some.len(), 2, "{some:?}");
    assert!(some[1].contains("cdr-task") && some[1].contains("missed_call"));
    let e = h
        .refused("GET", "/v1/cdrs?type=", None, StatusCode::BAD_REQUEST)
        .await;
    assert!(e.starts_with("type: "), "{e}");
    // Admin only: a viewer's token is refused.
    let (status, _, _) = h
        .request_as(Some(&h.tokens.viewer), "GET", "/v1/cdrs", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// `2026-03-02T15:04:05.123Z`: UTC, milliseconds only when there are some.
fn rfc3339(t: Timestamp) -> String {
    let s = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    match t.subsec_millisecond() {
        0 => format!("{s}Z"),
        ms => format!("{s}.{ms:03}Z"),
    }
}

#[tokio::test]
async fn callbacks_rejects_unknown_status_and_parameters() {
    let h = Harness::start("callbacks-bad").await;
    let e = h
        .refused(
            "GET",
            "/v1/callbacks?status=waiting",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(
        e.starts_with("status: ") && e.contains("\"waiting\""),
        "{e}"
    );
    assert!(e.contains("pending"), "the known statuses are listed: {e}");
    let e = h
        .refused(
            "GET",
            "/v1/callbacks?status=",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(e.starts_with("status: "), "{e}");
    let e = h
        .refused(
            "GET",
            "/v1/callbacks?stauts=pending",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(e.contains("unknown field `stauts`"), "{e}");
}

#[tokio::test]
async fn metrics_expose_every_family_with_help_and_type() {
    let h = Harness::start("metrics").await;
    let text = metrics_text(&h).await;
    for (name, kind) in [
        ("callbackd_calls", "gauge"),
        ("callbackd_sip_calls", "gauge"),
        ("callbackd_sip_transactions", "gauge"),
        ("callbackd_sip_timers", "gauge"),
        ("callbackd_rtp_ports_in_use", "gauge"),
        ("callbackd_gate_registration_enabled", "gauge"),
        ("callbackd_gate_launch_enabled", "gauge"),
        ("callbackd_draining", "gauge"),
        ("callbackd_incoming_calls_total", "counter"),
        ("callbackd_callbacks_registered_total", "counter"),
        ("callbackd_callbacks_already_scheduled_total", "counter"),
        ("callbackd_callback_registration_failures_total", "counter"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "HELP {name}"
        );
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "TYPE {name} {kind}"
        );
        assert!(sample(&text, name).is_some(), "sample {name}");
    }
    // Every family of the exposition, old and new, has its HELP and TYPE
    // (labelled ones may have no sample yet).
    let all = metrics::FAMILIES
        .iter()
        .map(|(name, kind, _)| (*name, kind.as_str()))
        .chain(
            metrics::LABELLED
                .iter()
                .map(|(name, kind, _, _)| (*name, kind.as_str())),
        )
        .chain([(metrics::DROPPED.0, "counter")]);
    for (name, kind) in all {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "TYPE {name} {kind} in\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "HELP {name}"
        );
    }
    assert_eq!(sample(&text, "callbackd_store_up"), Some(1));
    assert_eq!(sample(&text, "callbackd_calls"), Some(0));
    // From [org]: registration on, launching off.
    assert_eq!(
        sample(&text, "callbackd_gate_registration_enabled"),
        Some(1)
    );
    assert_eq!(sample(&text, "callbackd_gate_launch_enabled"), Some(0));
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let h = Harness::start("routing").await;
    let e = h
        .refused("GET", "/v1/nope", None, StatusCode::NOT_FOUND)
        .await;
    assert!(e.contains("/v1/nope"), "{e}");
    h.refused("GET", "/nope", None, StatusCode::NOT_FOUND).await;

    let (status, headers, body) = h.request("DELETE", "/v1/gates", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_json(&headers);
    let allow = headers
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(allow.contains("GET") && allow.contains("PUT"), "{allow}");
    let e = ErrorBody::checked(&body);
    assert_eq!(e.code, "method_not_allowed");
    assert!(
        e.message.contains("DELETE") && e.message.contains("/v1/gates"),
        "{e:?}"
    );
    h.refused("POST", "/health", None, StatusCode::METHOD_NOT_ALLOWED)
        .await;
    h.refused("PUT", "/metrics", None, StatusCode::METHOD_NOT_ALLOWED)
        .await;
}

/// The OpenAPI document served at `/openapi.json` (issue 11 point 8).
async fn openapi(h: &Harness) -> serde_json::Value {
    let (status, headers, bytes) = h.request_as(None, "GET", "/openapi.json", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_json(&headers);
    json(&bytes)
}

/// The methods of an OpenAPI path item that are operations.
const OPERATIONS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Issue 11 point 8: the document is OpenAPI 3.1 and has exactly one
/// operation per route of [`api::routes`] (same method and path), so a
/// route added without `#[utoipa::path]` — or a documented operation the
/// router does not serve — fails here. Public routes need no token, the
/// others the bearer scheme; every refusal refers to the `Error` schema.
#[tokio::test]
async fn openapi_documents_every_route_and_nothing_else() {
    let h = Harness::start("openapi").await;
    let doc = openapi(&h).await;
    let version = doc["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3.1."), "openapi: {version:?}");
    let routes: Vec<api::Route> = api::routes().collect();
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().expect("path item") {
            if OPERATIONS.contains(&method.as_str()) {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    for (method, path) in &documented {
        assert!(
            routes
                .iter()
                .any(|r| r.verb.as_str() == method && r.path == path),
            "{method} {path} is documented but not a route"
        );
    }
    assert_eq!(
        doc["security"],
        serde_json::json!([{"bearer": []}]),
        "a token by default"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let error = &schemas["Error"];
    assert_eq!(error["required"], serde_json::json!(["code", "message"]));
    for route in &routes {
        let verb = route.verb.as_str();
        let what = format!("{verb} {}", route.path);
        let op = &doc["paths"][route.path][verb.to_lowercase()];
        assert!(op.is_object(), "{what} has no operation in /openapi.json");
        let security = &op["security"];
        match route.rule {
            Rule::Public => assert_eq!(security, &serde_json::json!([{}]), "{what}"),
            Rule::Metrics => {
                assert_eq!(security, &serde_json::json!([{}, {"bearer": []}]), "{what}")
            }
            _ => {
                assert!(security.is_null(), "{what}: the document's bearer");
                for code in ["401", "403"] {
                    assert!(op["responses"][code].is_object(), "{what}: {code}");
                }
            }
        }
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|c| c.starts_with('2')),
            "{what}: a 2xx"
        );
        for (code, response) in responses {
            // /health and /readyz answer 503 with their own body.
            if code.starts_with('2') || matches!(route.path, "/health" | "/readyz") {
                continue;
            }
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{what}: {code}"
            );
        }
        if op["requestBody"].is_object() {
            for code in ["400", "413", "415"] {
                assert!(responses.contains_key(code), "{what}: {code}");
            }
        }
    }
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let name = reference
            .split('"')
            .next()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .expect("a schema reference");
        assert!(schemas.contains_key(name), "$ref {name} resolves");
    }
}

/// Refusals found by schemathesis (scripts/schemathesis.sh) that the
/// document did not list: each answer here must be documented for its
/// operation (status_code_conformance).
#[tokio::test]
async fn openapi_lists_the_refusals_routes_give() {
    let h = Harness::start("openapi-codes").await;
    let doc = openapi(&h).await;
    for (verb, path, uri, status) in [
        // GET /v1/users/{name}/tokens of no user: 404, not an empty list.
        (
            "GET",
            "/v1/users/{name}/tokens",
            "/v1/users/ghost/tokens",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (got, _, bytes) = h.request(verb, uri, None).await;
        assert_eq!(
            got,
            status,
            "{verb} {uri}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let code = status.as_str();
        assert!(
            doc["paths"][path][verb.to_lowercase()]["responses"][code].is_object(),
            "{verb} {path}: {code} is not documented"
        );
    }
}

/// A path segment that is not UTF-8 once percent-decoded is axum's
/// rejection (plain text) unless the API maps it: it must be a JSON 400
/// like every other refusal, on every route with a `{…}` segment.
#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_json_400() {
    let h = Harness::start("bad-segment").await;
    for route in api::routes().filter(|r| r.path.contains('{')) {
        let uri = route
            .path
            .replace("{id}", "%FF")
            .replace("{name}", "%C3%28");
        let body = matches!(route.verb.as_str(), "PUT" | "PATCH" | "POST")
            .then_some(("application/json", "{}"));
        let e = h
            .refused(route.verb.as_str(), &uri, body, StatusCode::BAD_REQUEST)
            .await;
        assert!(
            e.starts_with("path: "),
            "{} {uri}: {e}",
            route.verb.as_str()
        );
    }
}

/// A call in progress shows in stats and metrics; shutting down turns
/// health to "draining" until the engine's BYE is answered, then "stopped".
#[tokio::test]
async fn a_live_call_shows_in_stats_and_health_drains_on_shutdown() {
    let mut h = Harness::start("live-call").await;
    let engine_addr = h.engine().udp_addr().expect("UDP bound");
    let sip = UdpSocket::bind("127.0.0.1:0").await.expect("bind SIP");
    let media = UdpSocket::bind("127.0.0.1:0").await.expect("bind media");
    let local = sip.local_addr().expect("addr");
    let media_port = media.local_addr().expect("addr").port();

    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {media_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    );
    let invite = format!(
        "INVITE sip:18005550100@{engine_addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKapi1;rport\r\n\
         From: <sip:3125550100@{local}>;tag=caller1\r\n\
         To: <sip:18005550100@{engine_addr}>\r\n\
         Call-ID: api-live-call\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:3125550100@{local}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sip.send_to(invite.as_bytes(), engine_addr)
        .await
        .expect("send INVITE");
    let ok = loop {
        let message = recv_sip(&sip).await;
        if message.starts_with("SIP/2.0 200") {
            break message;
        }
        assert!(message.starts_with("SIP/2.0 1"), "{message}");
    };
    let to = header(&ok, "To").expect("To in 200");
    let ack = format!(
        "ACK sip:18005550100@{engine_addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKapi2;rport\r\n\
         From: <sip:3125550100@{local}>;tag=caller1\r\n\
         To: {to}\r\n\
         Call-ID: api-live-call\r\n\
         CSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sip.send_to(ack.as_bytes(), engine_addr)
        .await
        .expect("send ACK");

    let (_, stats) = h.get::<StatsBody>("/v1/stats").await;
    assert_eq!((stats.calls, stats.sip.calls, stats.rtp_ports), (1, 1, 1));
    assert_eq!(stats.totals.incoming_calls, 1);
    assert!(!stats.draining);
    let text = metrics_text(&h).await;
    assert_eq!(sample(&text, "callbackd_calls"), Some(1));
    assert_eq!(sample(&text, "callbackd_rtp_ports_in_use"), Some(1));
    assert_eq!(sample(&text, "callbackd_incoming_calls_total"), Some(1));
    // The call's SIP: our 100 and 200 to its INVITE.
    for code in [100, 200] {
        let name =
            format!("callbackd_sip_responses_sent_total{{code=\"{code}\",method=\"INVITE\"}}");
        assert_eq!(sample(&text, &name), Some(1), "{name} in\n{text}");
    }
    // The greeting goes out as RTP; the media thread publishes its
    // counters once a second: wait for them (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let out = r#"callbackd_rtp_packets_total{direction="out"}"#;
    while sample(&metrics_text(&h).await, out).unwrap_or(0) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RTP counted in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, ready) = h.get::<serde_json::Value>("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["not_ready"], serde_json::json!([]));

    // Shut down: the engine hangs up (BYE to us) and drains until answered.
    let engine = h.engine.take().expect("engine");
    let stopping = tokio::spawn(engine.shutdown());
    let bye = loop {
        let message = recv_sip(&sip).await;
        if message.starts_with("BYE ") {
            break message;
        }
    };
    let (status, health) = h.get::<HealthBody>("/health").await;
    assert_eq!(
        (status, health.status.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    );
    assert!(h.get::<StatsBody>("/v1/stats").await.1.draining);
    // Draining: alive, but not ready, and saying why.
    assert_eq!(
        h.get::<serde_json::Value>("/healthz").await.0,
        StatusCode::OK
    );
    let (status, ready) = h.get::<serde_json::Value>("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["not_ready"], serde_json::json!(["draining"]));
    assert_eq!(
        sample(&metrics_text(&h).await, "callbackd_draining"),
        Some(1)
    );

    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for value in headers_named(&bye, name) {
            ok.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    ok.push_str("Content-Length: 0\r\n\r\n");
    sip.send_to(ok.as_bytes(), engine_addr)
        .await
        .expect("send 200 to BYE");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("engine stops in time")
        .expect("shutdown task");
    let (status, health) = h.get::<HealthBody>("/health").await;
    assert_eq!(
        (status, health.status.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "stopped")
    );
}

/// The real listener: a hand-written HTTP/1.1 request over TCP.
#[tokio::test]
async fn serves_http_over_a_real_socket_and_shuts_down() {
    let h = Harness::start("socket").await;
    let server = ApiServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        h.engine().control(),
        h.options.clone(),
    )
    .await
    .expect("API binds");
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let response = http_exchange(
        addr,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\ncontent-type: application/json\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with("\r\n\r\n{\"status\":\"ok\"}"),
        "{response}"
    );

    let body = r#"{"registration_enabled":false,"launch_enabled":false}"#;
    let response = http_exchange(
        addr,
        &format!(
            "PUT /v1/gates HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            h.tokens.admin,
            body.len()
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with(body), "{response}");

    let response = http_exchange(addr, "GARBAGE\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");

    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("API stops in time");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

/// Writes `request`, reads the whole response (the server closes).
async fn http_exchange(addr: SocketAddr, request: &str) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read response");
        String::from_utf8(response).expect("UTF-8 response")
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("answered in time")
}

async fn recv_sip(socket: &UdpSocket) -> String {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("SIP message in time")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Values of every header line `name` (case-insensitive) in the header part.
fn headers_named<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
        .collect()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    headers_named(message, name).into_iter().next()
}

/// One route's expectations in the matrix: a concrete request, the least
/// role's success status, and (for routes acting on a unit's object) a
/// request on another unit's object.
struct Case {
    /// The rule the issue's role matrix gives the route (checked against
    /// the route table's, so a route declared too open fails).
    rule: Rule,
    verb: &'static str,
    path: &'static str,
    uri: String,
    body: Option<String>,
    ok: StatusCode,
    other_unit: Option<(String, Option<String>)>,
}

fn case(
    rule: Rule,
    verb: &'static str,
    path: &'static str,
    uri: &str,
    body: Option<&str>,
    ok: StatusCode,
) -> Case {
    Case {
        rule,
        verb,
        path,
        uri: uri.to_owned(),
        body: body.map(str::to_owned),
        ok,
        other_unit: None,
    }
}

/// `PUT /v1/org` in the matrix: the harness's organisation as it is.
const MATRIX_ORG: &str = r#"{
    "org": {"launch_enabled": false, "blacklist": ["900"]},
    "queues": [{"id": "support"}, {"id": "sales"}, {"id": "closing"}],
    "agents": [
        {"id": "alice", "uri": "sip:alice@127.0.0.1:5999", "queues": ["support"]},
        {"id": "bob", "uri": "sip:bob@127.0.0.1:5999", "queues": ["support"]},
        {"id": "carol", "uri": "sip:carol@127.0.0.1:5999", "queues": ["sales"]}
    ]
}"#;

/// The matrix's cases, one per route of [`api::routes`]; the fixtures they
/// touch (users `target`, `doomed`; units `spare`, `gone`; a token of
/// `target`) are made by [`matrix_fixtures`].
fn matrix_cases(token_id: i64, cb: &MatrixCallbacks) -> Vec<Case> {
    use StatusCode as S;
    vec![
        case(Rule::Public, "GET", "/health", "/health", None, S::OK),
        case(Rule::Public, "GET", "/healthz", "/healthz", None, S::OK),
        case(Rule::Public, "GET", "/readyz", "/readyz", None, S::OK),
        case(Rule::Metrics, "GET", "/metrics", "/metrics", None, S::OK),
        case(
            Rule::Public,
            "GET",
            "/openapi.json",
            "/openapi.json",
            None,
            S::OK,
        ),
        case(Rule::Viewer, "GET", "/v1/stats", "/v1/stats", None, S::OK),
        case(Rule::Viewer, "GET", "/v1/gates", "/v1/gates", None, S::OK),
        case(
            Rule::Admin,
            "PUT",
            "/v1/gates",
            "/v1/gates",
            Some(r#"{"registration_enabled":true,"launch_enabled":false}"#),
            S::OK,
        ),
        case(
            Rule::Viewer,
            "GET",
            "/v1/callbacks",
            "/v1/callbacks",
            None,
            S::OK,
        ),
        Case {
            other_unit: Some((
                "/v1/callbacks".into(),
                Some(r#"{"queue":"sales","number":"3125550166"}"#.into()),
            )),
            ..case(
                Rule::Manager,
                "POST",
                "/v1/callbacks",
                "/v1/callbacks",
                Some(r#"{"queue":"support","number":"3125550155"}"#),
                S::CREATED,
            )
        },
        Case {
            other_unit: Some((
                "/v1/callbacks/cancel".into(),
                Some(r#"{"number":"3125550144","queue":"sales"}"#.into()),
            )),
            ..case(
                Rule::Manager,
                "POST",
                "/v1/callbacks/cancel",
                "/v1/callbacks/cancel",
                Some(r#"{"number":"3125550144"}"#),
                S::OK,
            )
        },
        case(
            Rule::Viewer,
            "GET",
            "/v1/callbacks/status",
            &format!("/v1/callbacks/status?number={}", cb.read_number),
            None,
            S::OK,
        ),
        case(
            Rule::Viewer,
            "GET",
            "/v1/callbacks/{id}",
            &format!("/v1/callbacks/{}", cb.read),
            None,
            S::OK,
        ),
        Case {
            other_unit: Some((
                format!("/v1/callbacks/{}", cb.other_unit),
                Some(r#"{"priority":3}"#.into()),
            )),
            ..case(
                Rule::Manager,
                "PATCH",
                "/v1/callbacks/{id}",
                &format!("/v1/callbacks/{}", cb.patched),
                Some(r#"{"priority":3}"#),
                S::OK,
            )
        },
        Case {
            other_unit: Some((format!("/v1/callbacks/{}", cb.other_unit), None)),
            ..case(
                Rule::Manager,
                "DELETE",
                "/v1/callbacks/{id}",
                &format!("/v1/callbacks/{}", cb.cancelled),
                None,
                S::OK,
            )
        },
        case(Rule::Viewer, "GET", "/v1/org", "/v1/org", None, S::OK),
        case(
            Rule::Admin,
            "PUT",
            "/v1/org",
            "/v1/org",
            Some(MATRIX_ORG),
            S::OK,
        ),
        case(
            Rule::Admin,
            "PATCH",
            "/v1/org",
            "/v1/org",
            Some(r#"{"org":{"name":"matrix"}}"#),
            S::OK,
        ),
        case(
            Rule::Viewer,
            "GET",
            "/v1/org/switches",
            "/v1/org/switches",
            None,
            S::OK,
        ),
        case(
            Rule::Admin,
            "PUT",
            "/v1/org/switches",
            "/v1/org/switches",
            Some(r#"{"launch_enabled":false}"#),
            S::OK,
        ),
        case(
            Rule::Admin,
            "PUT",
            "/v1/org/freeze",
            "/v1/org/freeze",
            Some(r#"{"frozen":false}"#),
            S::OK,
        ),
        case(
            Rule::Viewer,
            "GET",
            "/v1/missed-call-rules",
            "/v1/missed-call-rules",
            None,
            S::OK,
        ),
        case(
            Rule::Admin,
            "PUT",
            "/v1/missed-call-rules/{id}",
            "/v1/missed-call-rules/r1",
            Some(r#"{"kind":"ivr","queues":["support"]}"#),
            S::CREATED,
        ),
        case(
            Rule::Manager,
            "PATCH",
            "/v1/missed-call-rules/{id}",
            "/v1/missed-call-rules/r1",
            Some(r#"{"enabled":false}"#),
            S::OK,
        ),
        case(
            Rule::Admin,
            "DELETE",
            "/v1/missed-call-rules/{id}",
            "/v1/missed-call-rules/r1",
            None,
            S::NO_CONTENT,
        ),
        case(Rule::Viewer, "GET", "/v1/queues", "/v1/queues", None, S::OK),
        case(
            Rule::Admin,
            "PUT",
            "/v1/queues/{id}",
            "/v1/queues/extra",
            Some(r#"{"priority":1}"#),
            S::CREATED,
        ),
        Case {
            other_unit: Some((
                "/v1/queues/sales".into(),
                Some(r#"{"launch_enabled":false}"#.into()),
            )),
            ..case(
                Rule::Manager,
                "PATCH",
                "/v1/queues/{id}",
                "/v1/queues/support",
                Some(r#"{"launch_enabled":false}"#),
                S::OK,
            )
        },
        case(
            Rule::Admin,
            "DELETE",
            "/v1/queues/{id}",
            "/v1/queues/closing",
            None,
            S::NO_CONTENT,
        ),
        Case {
            other_unit: Some((
                "/v1/queues/sales/switches".into(),
                Some(r#"{"registration_enabled":false}"#.into()),
            )),
            ..case(
                Rule::Manager,
                "PUT",
                "/v1/queues/{id}/switches",
                "/v1/queues/support/switches",
                Some(r#"{"registration_enabled":true}"#),
                S::OK,
            )
        },
        case(Rule::Viewer, "GET", "/v1/agents", "/v1/agents", None, S::OK),
        Case {
            other_unit: Some(("/v1/agents/carol".into(), Some(r#"{"paused":true}"#.into()))),
            ..case(
                Rule::Manager,
                "PUT",
                "/v1/agents/{id}",
                "/v1/agents/alice",
                Some(r#"{"paused":false}"#),
                S::OK,
            )
        },
        case(Rule::Viewer, "GET", "/v1/me", "/v1/me", None, S::OK),
        case(
            Rule::Viewer,
            "PUT",
            "/v1/me/password",
            "/v1/me/password",
            // The viewer sets theirs first; later callers have none set
            // either (each user's own).
            Some(r#"{"password":"correct horse battery"}"#),
            S::NO_CONTENT,
        ),
        case(Rule::Admin, "GET", "/v1/users", "/v1/users", None, S::OK),
        case(
            Rule::Admin,
            "POST",
            "/v1/users",
            "/v1/users",
            Some(r#"{"name":"newcomer","role":"viewer","units":["east"]}"#),
            S::CREATED,
        ),
        case(
            Rule::Admin,
            "GET",
            "/v1/users/{name}",
            "/v1/users/target",
            None,
            S::OK,
        ),
        case(
            Rule::Admin,
            "PATCH",
            "/v1/users/{name}",
            "/v1/users/target",
            Some(r#"{"role":"manager"}"#),
            S::OK,
        ),
        case(
            Rule::Admin,
            "DELETE",
            "/v1/users/{name}",
            "/v1/users/doomed",
            None,
            S::NO_CONTENT,
        ),
        case(
            Rule::Admin,
            "PUT",
            "/v1/users/{name}/password",
            "/v1/users/target/password",
            Some(r#"{"password":"another good one"}"#),
            S::NO_CONTENT,
        ),
        case(
            Rule::Admin,
            "GET",
            "/v1/users/{name}/tokens",
            "/v1/users/target/tokens",
            None,
            S::OK,
        ),
        case(
            Rule::Admin,
            "POST",
            "/v1/users/{name}/tokens",
            "/v1/users/target/tokens",
            Some(r#"{"label":"ci"}"#),
            S::CREATED,
        ),
        case(
            Rule::Admin,
            "DELETE",
            "/v1/tokens/{id}",
            &format!("/v1/tokens/{token_id}"),
            None,
            S::OK,
        ),
        case(Rule::Admin, "GET", "/v1/units", "/v1/units", None, S::OK),
        case(
            Rule::Admin,
            "POST",
            "/v1/units",
            "/v1/units",
            Some(r#"{"name":"south","queues":["support"]}"#),
            S::CREATED,
        ),
        case(
            Rule::Admin,
            "PATCH",
            "/v1/units/{name}",
            "/v1/units/spare",
            Some(r#"{"queues":["sales","support"]}"#),
            S::OK,
        ),
        case(
            Rule::Admin,
            "DELETE",
            "/v1/units/{name}",
            "/v1/units/gone",
            None,
            S::NO_CONTENT,
        ),
        case(
            Rule::Admin,
            "GET",
            "/v1/audit",
            "/v1/audit?limit=5",
            None,
            S::OK,
        ),
        case(
            Rule::Admin,
            "GET",
            "/v1/cdrs",
            "/v1/cdrs?type=missed_call",
            None,
            S::OK,
        ),
        case(
            Rule::Admin,
            "GET",
            "/v1/webhooks",
            "/v1/webhooks",
            None,
            S::OK,
        ),
        case(
            Rule::Admin,
            "POST",
            "/v1/webhooks",
            "/v1/webhooks",
            Some(r#"{"url":"http://127.0.0.1:9/hook","events":["callback.completed"]}"#),
            S::CREATED,
        ),
        case(
            Rule::Admin,
            "GET",
            "/v1/webhooks/{id}",
            &format!("/v1/webhooks/{}", cb.webhook),
            None,
            S::OK,
        ),
        case(
            Rule::Admin,
            "PATCH",
            "/v1/webhooks/{id}",
            &format!("/v1/webhooks/{}", cb.webhook),
            Some(r#"{"enabled":false}"#),
            S::OK,
        ),
        case(
            Rule::Admin,
            "DELETE",
            "/v1/webhooks/{id}",
            &format!("/v1/webhooks/{}", cb.doomed_webhook),
            None,
            S::NO_CONTENT,
        ),
        case(
            Rule::Admin,
            "GET",
            "/v1/webhooks/{id}/deliveries",
            &format!("/v1/webhooks/{}/deliveries?limit=5", cb.webhook),
            None,
            S::OK,
        ),
    ]
}

/// The callbacks the matrix's callback routes act on (ids; one number).
struct MatrixCallbacks {
    read: i64,
    read_number: &'static str,
    patched: i64,
    cancelled: i64,
    other_unit: i64,
    /// A webhook subscription read and changed, and one deleted.
    webhook: i64,
    doomed_webhook: i64,
}

/// A webhook subscription written beside the engine; its id.
fn stored_webhook(store: &mut SqliteStore) -> i64 {
    store
        .create_webhook(&NewWebhook {
            url: "http://127.0.0.1:9/hook".into(),
            events: vec![EventKind::Registered],
            secret: "whsec_matrix_secret".into(),
            enabled: true,
            description: String::new(),
            created_by: "test".into(),
            created_at: Timestamp::now(),
        })
        .expect("webhook")
        .id
}

/// A pending callback for `number` in `queue`, written beside the engine.
fn stored_callback(store: &mut SqliteStore, queue: &str, number: &str) -> i64 {
    let now = Timestamp::now();
    match store
        .register(&NewCallback {
            queue: QueueId(queue.into()),
            number: number.into(),
            caller_ani: "3125550100".into(),
            called_number: "8005550100".into(),
            priority: 0,
            queued_at: now,
            registered_at: now,
            ecbt_quoted_minutes: 4,
            expires_at: now + jiff::SignedDuration::from_hours(24),
            inbound_call_id: "matrix@127.0.0.1".into(),
            sip_context: None,
        })
        .expect("register")
    {
        Registration::Registered(id) => id.0,
        Registration::AlreadyScheduled(id) => panic!("{id} already there"),
    }
}

/// The users, units and token the matrix's changes act on; returns the
/// token's id.
fn matrix_fixtures(h: &Harness) -> i64 {
    let mut store = SqliteStore::open(&h.store_path).expect("store");
    let change = Change {
        actor: "test".into(),
        at: Timestamp::now(),
    };
    let _ = user_with_token(&mut store, "doomed", Role::Viewer, &[]);
    let _ = user_with_token(&mut store, "target", Role::Viewer, &[]);
    store.create_unit("spare", &[], &change).expect("unit");
    store.create_unit("gone", &[], &change).expect("unit");
    store.tokens(Some("target")).expect("tokens")[0].id
}

/// Issue 11 acceptance 1: for every route of the API, no token → 401 with
/// `WWW-Authenticate: Bearer`, a malformed or unknown token → 401, the role
/// below the route's rule → 403, a manager on another unit's object → 403,
/// and the least role the rule allows → 2xx. The cases are looked up from
/// [`api::routes`], so a route added without an expectation fails here.
#[tokio::test]
async fn every_route_refuses_without_a_token_or_the_role_and_serves_the_right_role() {
    let h = Harness::start("matrix").await;
    let token_id = matrix_fixtures(&h);
    let callbacks = {
        let mut store = SqliteStore::open(&h.store_path).expect("store");
        MatrixCallbacks {
            read: stored_callback(&mut store, "support", "3125550111"),
            read_number: "3125550111",
            patched: stored_callback(&mut store, "support", "3125550122"),
            cancelled: stored_callback(&mut store, "support", "3125550133"),
            other_unit: stored_callback(&mut store, "sales", "3125550122"),
            webhook: stored_webhook(&mut store),
            doomed_webhook: stored_webhook(&mut store),
        }
    };
    let cases = matrix_cases(token_id, &callbacks);
    let routes: Vec<api::Route> = api::routes().collect();
    for case in &cases {
        assert!(
            routes
                .iter()
                .any(|r| r.verb.as_str() == case.verb && r.path == case.path),
            "case {} {} has no route (stale case)",
            case.verb,
            case.path
        );
    }
    let token_of = |role: Role| match role {
        Role::Admin => h.tokens.admin.as_str(),
        Role::Manager => h.tokens.manager.as_str(),
        Role::Viewer => h.tokens.viewer.as_str(),
    };
    let unknown = format!("cbd_{}", "A".repeat(43));
    for route in &routes {
        let verb = route.verb.as_str();
        let Some(case) = cases
            .iter()
            .find(|c| c.verb == verb && c.path == route.path)
        else {
            panic!("route {verb} {} has no case in the matrix", route.path);
        };
        assert_eq!(route.rule, case.rule, "{verb} {}: rule", route.path);
        let body = case.body.as_deref().map(|b| ("application/json", b));
        let what = format!("{verb} {}", case.uri);
        let least = route.rule.least_role(h.options.metrics_public);
        let Some(least) = least else {
            let (status, _, bytes) = h.request_as(None, verb, &case.uri, body).await;
            assert_eq!(
                status,
                case.ok,
                "{what} (public): {}",
                String::from_utf8_lossy(&bytes)
            );
            continue;
        };
        for token in [
            None,
            Some("cbd_short"),
            Some(unknown.as_str()),
            Some("not-a-token"),
        ] {
            let (status, headers, bytes) = h.request_as(token, verb, &case.uri, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} with {token:?}");
            let challenge = headers
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
            assert_eq!(ErrorBody::checked(&bytes).code, "unauthorized");
        }
        for below in Role::ALL.into_iter().filter(|r| *r < least) {
            let (status, _, bytes) = h
                .request_as(Some(token_of(below)), verb, &case.uri, body)
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {below}");
            assert_eq!(ErrorBody::checked(&bytes).code, "forbidden");
        }
        if let Some((uri, other_body)) = &case.other_unit {
            let other_body = other_body.as_deref().map(|b| ("application/json", b));
            let (status, _, bytes) = h
                .request_as(Some(&h.tokens.manager), verb, uri, other_body)
                .await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{verb} {uri}: another unit's"
            );
            assert_eq!(ErrorBody::checked(&bytes).code, "forbidden");
        }
        let (status, _, bytes) = h
            .request_as(Some(token_of(least)), verb, &case.uri, body)
            .await;
        assert_eq!(
            status,
            case.ok,
            "{what} as {least}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// `[api] metrics_public = false`: `/metrics` takes a token like any read.
#[tokio::test]
async fn metrics_need_a_token_when_not_public() {
    let h = Harness::start_with("metrics-private", "metrics_public = false").await;
    let (status, headers, _) = h.request_as(None, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(WWW_AUTHENTICATE));
    let (status, _, body) = h
        .request_as(Some(&h.tokens.viewer), "GET", "/metrics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("callbackd_calls"));
    // /health stays public.
    let (status, _, _) = h.request_as(None, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A user sees the callbacks and agents of their units only; an admin sees
/// all; /v1/me says which.
#[tokio::test]
async fn users_see_only_their_units() {
    let h = Harness::start("scoping").await;
    let second = Timestamp::now().as_second();
    {
        let mut store = SqliteStore::open(&h.store_path).expect("store");
        for (queue, number) in [("support", "3125550188"), ("sales", "3125550199")] {
            store
                .register(&NewCallback {
                    queue: QueueId(queue.into()),
                    number: number.into(),
                    caller_ani: "+13125550100".into(),
                    called_number: "18005550100".into(),
                    priority: 0,
                    queued_at: Timestamp::from_second(second).expect("ts"),
                    registered_at: Timestamp::from_second(second).expect("ts"),
                    ecbt_quoted_minutes: 3,
                    expires_at: Timestamp::from_second(second + 86_400).expect("ts"),
                    inbound_call_id: format!("{queue}@test"),
                    sip_context: None,
                })
                .expect("register");
        }
    }
    let seen = |token: &str| {
        let token = token.to_owned();
        let h = &h;
        async move {
            let (_, _, body) = h
                .request_as(Some(&token), "GET", "/v1/callbacks", None)
                .await;
            let callbacks: Vec<String> = json::<CallbackPage>(&body)
                .callbacks
                .into_iter()
                .map(|c| c.queue)
                .collect();
            let (_, _, body) = h.request_as(Some(&token), "GET", "/v1/agents", None).await;
            let agents: Vec<String> = json::<Vec<AgentBody>>(&body)
                .into_iter()
                .map(|a| a.id)
                .collect();
            (callbacks, agents)
        }
    };
    assert_eq!(
        seen(&h.tokens.viewer).await,
        (
            vec!["support".to_owned()],
            vec!["alice".to_owned(), "bob".to_owned()]
        )
    );
    assert_eq!(
        seen(&h.tokens.other_manager).await,
        (vec!["sales".to_owned()], vec!["carol".to_owned()])
    );
    assert_eq!(
        seen(&h.tokens.admin).await,
        (
            vec!["support".to_owned(), "sales".to_owned()],
            vec!["alice".to_owned(), "bob".to_owned(), "carol".to_owned()]
        )
    );
    let (status, _, body) = h
        .request_as(Some(&h.tokens.manager), "GET", "/v1/me", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).expect("JSON"),
        serde_json::json!({"name": "ann", "role": "manager", "units": ["east"], "queues": ["support"]})
    );
    // A manager pauses their unit's agent, not another's.
    let pause = Some(("application/json", r#"{"paused":true}"#));
    let (status, _, _) = h
        .request_as(
            Some(&h.tokens.other_manager),
            "PUT",
            "/v1/agents/carol",
            pause,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = h
        .request_as(
            Some(&h.tokens.other_manager),
            "PUT",
            "/v1/agents/alice",
            pause,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(ErrorBody::checked(&body).message.contains("alice"));
}

/// Tokens issued through the API work until revoked; an expired token, a
/// disabled user's and a deleted user's are refused with 401.
#[tokio::test]
async fn tokens_expire_are_revoked_and_die_with_their_user() {
    let h = Harness::start("token-life").await;
    let post = |uri: &'static str, body: &'static str| {
        let h = &h;
        async move {
            let (status, _, bytes) = h
                .request("POST", uri, Some(("application/json", body)))
                .await;
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON"),
            )
        }
    };
    let (status, _) = post("/v1/users", r#"{"name":"eve","role":"viewer"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, issued) = post("/v1/users/eve/tokens", r#"{"label":"laptop"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    let token = issued["token"].as_str().expect("token shown").to_owned();
    assert!(token.starts_with("cbd_"));
    let id = issued["id"].as_i64().expect("id");
    let me = |token: String| {
        let h = &h;
        async move {
            let (status, _, bytes) = h.request_as(Some(&token), "GET", "/v1/me", None).await;
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    assert_eq!(me(token.clone()).await.0, StatusCode::OK);
    // The list never shows a secret.
    let (_, _, bytes) = h.request("GET", "/v1/users/eve/tokens", None).await;
    let listed = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        !listed.contains(&token[4..]) && listed.contains("laptop"),
        "{listed}"
    );
    assert!(
        listed.contains("last_used_at\":\"20"),
        "use recorded: {listed}"
    );

    // Disabled → 401; enabled again → 200.
    let patch = |body: &'static str| {
        let h = &h;
        async move {
            h.request("PATCH", "/v1/users/eve", Some(("application/json", body)))
                .await
                .0
        }
    };
    assert_eq!(patch(r#"{"disabled":true}"#).await, StatusCode::OK);
    let (status, text) = me(token.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("disabled"), "{text}");
    assert_eq!(patch(r#"{"disabled":false}"#).await, StatusCode::OK);
    assert_eq!(me(token.clone()).await.0, StatusCode::OK);

    // Revoked → 401.
    let (status, _, bytes) = h.request("DELETE", &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&bytes).contains("\"revoked_at\":\"20"));
    let (status, text) = me(token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("revoked"), "{text}");

    // Expired (issued straight into the store with a past expiry) → 401.
    let expired = {
        let mut store = SqliteStore::open(&h.store_path).expect("store");
        let secret = TokenSecret::generate().expect("OS randomness");
        store
            .issue_token(
                &NewToken {
                    user: "eve".into(),
                    label: "old".into(),
                    expires_at: Some(Timestamp::now() - jiff::SignedDuration::from_secs(1)),
                    hash: secret.hash,
                },
                &Change {
                    actor: "test".into(),
                    at: Timestamp::now(),
                },
            )
            .expect("issue");
        secret.text
    };
    let (status, text) = me(expired).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("expired"), "{text}");
    // The API refuses to issue an already expired token.
    let (status, body) = post(
        "/v1/users/eve/tokens",
        r#"{"expires_at":"2020-01-01T00:00:00Z"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("expires_at:")
    );

    // Deleted user → their fresh token dies with them.
    let (_, issued) = post("/v1/users/eve/tokens", r#"{}"#).await;
    let token = issued["token"].as_str().expect("token").to_owned();
    assert_eq!(me(token.clone()).await.0, StatusCode::OK);
    let (status, _, _) = h.request("DELETE", "/v1/users/eve", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me(token).await.0, StatusCode::UNAUTHORIZED);
}

/// Every change writes an audit row with the actor and the object before
/// and after; the log pages with a cursor.
#[tokio::test]
async fn changes_are_audited_with_before_and_after() {
    let h = Harness::start("audit").await;
    let json_body = |b: &'static str| Some(("application/json", b));
    let put = h
        .request(
            "PUT",
            "/v1/gates",
            json_body(r#"{"registration_enabled":false,"launch_enabled":false}"#),
        )
        .await;
    assert_eq!(put.0, StatusCode::OK);
    let pause = h
        .request_as(
            Some(&h.tokens.manager),
            "PUT",
            "/v1/agents/bob",
            json_body(r#"{"paused":true}"#),
        )
        .await;
    assert_eq!(pause.0, StatusCode::OK);
    for (method, uri, body) in [
        (
            "POST",
            "/v1/units",
            r#"{"name":"north","queues":["sales"]}"#,
        ),
        ("PATCH", "/v1/units/north", r#"{"queues":["support"]}"#),
        (
            "POST",
            "/v1/users",
            r#"{"name":"zed","role":"viewer","units":["north"]}"#,
        ),
        ("PATCH", "/v1/users/zed", r#"{"role":"manager"}"#),
        (
            "PUT",
            "/v1/users/zed/password",
            r#"{"password":"zed's password"}"#,
        ),
        ("POST", "/v1/users/zed/tokens", r#"{"label":"x"}"#),
    ] {
        let (status, _, bytes) = h.request(method, uri, json_body(body)).await;
        assert!(
            status.is_success(),
            "{method} {uri}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let (status, _, bytes) = h.request("DELETE", "/v1/units/north", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A refused change writes nothing.
    let (status, _, _) = h
        .request(
            "POST",
            "/v1/units",
            json_body(r#"{"name":"bad","queues":["nope"]}"#),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&bytes)
    );

    let (status, _, bytes) = h.request("GET", "/v1/audit?limit=1000", None).await;
    assert_eq!(status, StatusCode::OK);
    let page: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    let entries = page["entries"].as_array().expect("entries");
    // The harness's own set-up (units, users, tokens by "test") comes first.
    let ours: Vec<&serde_json::Value> = entries.iter().filter(|e| e["actor"] != "test").collect();
    let actions: Vec<(&str, &str, &str)> = ours
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // Zed's token is the fifth (the harness issued four).
    assert_eq!(
        actions,
        [
            ("root", "set_gates", "gates"),
            ("ann", "pause_agent", "agent:bob"),
            ("root", "create_unit", "unit:north"),
            ("root", "update_unit", "unit:north"),
            ("root", "create_user", "user:zed"),
            ("root", "update_user", "user:zed"),
            ("root", "set_password", "user:zed"),
            ("root", "issue_token", "token:5"),
            ("root", "delete_unit", "unit:north"),
        ]
    );
    assert_eq!(
        (ours[0]["before"].clone(), ours[0]["after"].clone()),
        (
            serde_json::json!({"registration_enabled": true, "launch_enabled": false}),
            serde_json::json!({"registration_enabled": false, "launch_enabled": false})
        )
    );
    assert_eq!(
        (ours[1]["before"].clone(), ours[1]["after"].clone()),
        (
            serde_json::json!({"state": "available"}),
            serde_json::json!({"state": "paused"})
        )
    );
    assert_eq!(ours[3]["before"]["queues"], serde_json::json!(["sales"]));
    assert_eq!(ours[3]["after"]["queues"], serde_json::json!(["support"]));
    assert_eq!(ours[5]["before"]["role"], "viewer");
    assert_eq!(ours[5]["after"]["role"], "manager");
    assert!(
        !ours[6].to_string().contains("argon2"),
        "no hash in the log"
    );
    assert!(
        ours.iter()
            .all(|e| e["at"].as_str().is_some_and(|t| t.ends_with('Z')))
    );

    // Paging: two at a time, following next_cursor, gives the same rows.
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/audit?limit=2&cursor={c}"),
            None => "/v1/audit?limit=2".to_owned(),
        };
        let (status, _, bytes) = h.request("GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK);
        let page: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        paged.extend(page["entries"].as_array().expect("entries").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(paged.len() <= entries.len(), "paging terminates");
    }
    assert_eq!(&paged, entries);
    for bad in [
        "/v1/audit?limit=0",
        "/v1/audit?cursor=x",
        "/v1/audit?from=yesterday",
    ] {
        let e = h.refused("GET", bad, None, StatusCode::BAD_REQUEST).await;
        assert!(
            e.contains(bad.split(['?', '=']).nth(1).unwrap_or("")),
            "{bad}: {e}"
        );
    }
}

/// Accounts: names taken, unknown units and queues, the last admin, and
/// passwords (one's own needs the current one once set).
#[tokio::test]
async fn account_changes_refuse_bad_input_with_a_code() {
    let h = Harness::start("accounts-bad").await;
    let json_body = |b: &'static str| Some(("application/json", b));
    let code = |(status, _, bytes): (StatusCode, HeaderMap, Bytes)| {
        (status, ErrorBody::checked(&bytes).code)
    };
    for (method, uri, body, status, expected) in [
        (
            "POST",
            "/v1/users",
            r#"{"name":"ann","role":"viewer"}"#,
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (
            "POST",
            "/v1/users",
            r#"{"name":"x y","role":"viewer"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            "POST",
            "/v1/users",
            r#"{"name":"xy","role":"root"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/v1/users",
            r#"{"name":"xy","role":"viewer","units":["nope"]}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/users/nobody",
            r#"{"disabled":true}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/users/root",
            r#"{"role":"viewer"}"#,
            StatusCode::CONFLICT,
            "last_admin",
        ),
        (
            "PATCH",
            "/v1/users/root",
            r#"{"disabled":true}"#,
            StatusCode::CONFLICT,
            "last_admin",
        ),
        (
            "POST",
            "/v1/units",
            r#"{"name":"east","queues":[]}"#,
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (
            "POST",
            "/v1/units",
            r#"{"name":"x","queues":["nope"]}"#,
            StatusCode::BAD_REQUEST,
            "unknown_queue",
        ),
        (
            "PATCH",
            "/v1/units/east",
            r#"{"name":"west"}"#,
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (
            "PUT",
            "/v1/users/ann/password",
            r#"{"password":"short"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_password",
        ),
    ] {
        assert_eq!(
            code(h.request(method, uri, json_body(body)).await),
            (status, expected.to_owned()),
            "{method} {uri} {body}"
        );
    }
    assert_eq!(
        code(h.request("DELETE", "/v1/users/root", None).await),
        (StatusCode::CONFLICT, "last_admin".to_owned())
    );
    assert_eq!(
        code(h.request("DELETE", "/v1/tokens/abc", None).await),
        (StatusCode::BAD_REQUEST, "invalid_path".to_owned())
    );
    assert_eq!(
        code(h.request("DELETE", "/v1/tokens/999", None).await),
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
    // One's own password: free the first time, then the current one is needed.
    let mine = |body: &'static str| {
        h.request_as(
            Some(&h.tokens.viewer),
            "PUT",
            "/v1/me/password",
            json_body(body),
        )
    };
    assert_eq!(
        mine(r#"{"password":"first password"}"#).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        code(mine(r#"{"password":"second password"}"#).await),
        (StatusCode::BAD_REQUEST, "invalid_body".to_owned())
    );
    assert_eq!(
        code(mine(r#"{"password":"second password","current_password":"wrong one"}"#).await),
        (StatusCode::FORBIDDEN, "forbidden".to_owned())
    );
    assert_eq!(
        mine(r#"{"password":"second password","current_password":"first password"}"#)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let store = SqliteStore::open(&h.store_path).expect("store");
    let phc = store.password_hash("vic").expect("read").expect("set");
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(callbackd::callback::store::accounts::verify_password(
        "second password",
        &phc
    ));
}

/// `callbackd user add` bootstraps the first admin in the configured store
/// (the binary, as an operator runs it); its token works against an engine
/// on that store; bad input exits non-zero with a message.
#[tokio::test]
async fn cli_user_add_bootstraps_an_admin_whose_token_works() {
    let dir = TempDir::new("cli");
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let config_path = dir.0.join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "[sip]\nbind = \"127.0.0.1:5999\"\ntransports = [\"udp\"]\n\
             [rtp]\nport_min = 36200\nport_max = 36299\n[call]\nmax_calls = 10\n\
             [prompts]\ndir = '{}'\n[store]\npath = \"callbacks.sqlite\"\n\
             [[queues]]\nid = \"support\"\n",
            prompts.display()
        ),
    )
    .expect("write config");
    let cli = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_callbackd"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run callbackd");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("callbackd exits");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = cli(&["user", "add", "boss", "--role", "admin"], "");
    assert_eq!(code, Some(0), "{stderr}");
    let token = stdout.trim().to_owned();
    assert!(token.starts_with("cbd_") && token.len() == 47, "{stdout:?}");
    assert!(stderr.contains("shown once"), "{stderr}");

    for (args, needle) in [
        (
            &["user", "add", "boss", "--role", "admin"][..],
            "already exists",
        ),
        (&["user", "add", "x", "--role", "root"][..], "not a role"),
        (
            &["user", "add", "x", "--role", "viewer", "--unit", "nope"][..],
            "no unit \"nope\"",
        ),
        (&["user", "token", "ghost"][..], "no user \"ghost\""),
        (
            &["user", "token", "boss", "--expires", "2020-01-01T00:00:00Z"][..],
            "in the past",
        ),
        (
            &["user", "token", "boss", "--expires", "soon"][..],
            "--expires",
        ),
    ] {
        let (code, stdout, stderr) = cli(args, "");
        assert_ne!(code, Some(0), "{args:?}");
        assert!(stdout.is_empty(), "{args:?}: no token printed: {stdout}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = cli(&["user", "passwd", "boss"], "short\n");
    assert_ne!(code, Some(0));
    assert!(stderr.contains("at least 8"), "{stderr}");
    let (code, _, stderr) = cli(&["user", "passwd", "boss"], "a long password\n");
    assert_eq!(code, Some(0), "{stderr}");

    // An engine on that configuration accepts the token; the CLI keeps
    // working beside it (WAL, busy timeout).
    let mut config = Config::load(&config_path).expect("config loads");
    config.sip.bind = "127.0.0.1:0".parse().expect("addr");
    config.bind_ephemeral_sip_port();
    let store_path = config.store_path(&dir.0);
    let settings = config.check(&dir.0).expect("valid config");
    let options = ApiOptions::new(&settings);
    let engine = engine::start(settings).await.expect("engine starts");
    let app = api::router(engine.control(), options);
    let (code, second, stderr) = cli(
        &["user", "token", "boss", "--expires", "2099-01-01T00:00:00Z"],
        "",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_ne!(second.trim(), token);
    for (token, expected) in [
        (token.as_str(), StatusCode::OK),
        (second.trim(), StatusCode::OK),
        ("cbd_x", StatusCode::UNAUTHORIZED),
    ] {
        let request = Request::builder()
            .uri("/v1/me")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        let response = tokio::time::timeout(WAIT, app.clone().oneshot(request))
            .await
            .expect("answered in time")
            .expect("router is infallible");
        assert_eq!(response.status(), expected);
        if expected == StatusCode::OK {
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            let me: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(
                (me["name"].as_str(), me["role"].as_str()),
                (Some("boss"), Some("admin"))
            );
        }
    }
    let store = SqliteStore::open(&store_path).expect("store");
    let audit = store
        .audit(&callbackd::callback::store::AuditQuery {
            from: None,
            to: None,
            after_id: None,
            limit: 100,
        })
        .expect("audit");
    assert!(audit.iter().all(|r| r.actor == "cli"));
    assert_eq!(
        audit.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["create_user", "issue_token", "set_password", "issue_token"]
    );
    engine.shutdown().await;
}

/// Issue 11 acceptance 2 (API side): `POST /v1/callbacks` creates a
/// scheduled callback (201, `Location`, audited); the same
/// `Idempotency-Key` with the same body gets the first answer again, with
/// another body 422; the callback reads back with its attempts and legs.
#[tokio::test]
async fn create_schedules_a_callback_and_an_idempotency_key_replays_it() {
    let h = Harness::start("cb-create").await;
    let at = Timestamp::now() + jiff::SignedDuration::from_mins(10);
    let at = Timestamp::from_second(at.as_second()).expect("whole seconds");
    let body = format!(
        r#"{{"queue":"support","number":"3125550188","scheduled_for":"{at}","priority":4,"data":{{"order":"A-17"}}}}"#
    );
    let manager = Some(h.tokens.manager.as_str());
    let json_body = Some(("application/json", body.as_str()));
    let key = [("Idempotency-Key", "order-A-17")];
    let (status, headers, first) = h
        .request_with(manager, "POST", "/v1/callbacks", json_body, &key)
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&first)
    );
    let created: CallbackBody = json(&first);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/callbacks/{}", created.id).as_str())
    );
    assert_eq!(created.status, "pending");
    assert_eq!(created.priority, 4);
    assert_eq!(created.scheduled_for, Some(rfc3339(at)));
    assert_eq!(created.next_attempt_at, Some(rfc3339(at)));
    assert_eq!(
        created.queued_at,
        rfc3339(at),
        "its place in line is its time"
    );
    assert_eq!(created.created_by.as_deref(), Some("ann"));
    assert_eq!(created.data, Some(serde_json::json!({"order": "A-17"})));

    let (status, headers, again) = h
        .request_with(manager, "POST", "/v1/callbacks", json_body, &key)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, first, "the first answer, byte for byte");
    assert_eq!(
        headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/callbacks/{}", created.id).as_str())
    );
    let other = body.replace("\"priority\":4", "\"priority\":5");
    let (status, _, bytes) = h
        .request_with(
            manager,
            "POST",
            "/v1/callbacks",
            Some(("application/json", &other)),
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = ErrorBody::checked(&bytes);
    assert_eq!(e.code, "idempotency_key_reused");
    assert!(e.message.starts_with("Idempotency-Key:"), "{}", e.message);
    // Keys are per user: the admin's same key is a new request (here a
    // duplicate of the manager's callback).
    let (status, _, bytes) = h
        .request_with(
            Some(&h.tokens.admin),
            "POST",
            "/v1/callbacks",
            json_body,
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(ErrorBody::checked(&bytes).code, "already_scheduled");
    assert_eq!(h.callbacks("/v1/callbacks").await.1.len(), 1);

    let (status, one) = h
        .get::<serde_json::Value>(&format!("/v1/callbacks/{}", created.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["id"], created.id);
    assert_eq!(one["attempt_log"], serde_json::json!([]));
    assert_eq!(one["legs"], serde_json::json!([]));
    let (_, audit) = h.get::<serde_json::Value>("/v1/audit?limit=1000").await;
    let entries = audit["entries"].as_array().expect("entries");
    let created_rows: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "create_callback")
        .collect();
    assert_eq!(
        created_rows.len(),
        1,
        "a replay writes nothing: {entries:?}"
    );
    assert_eq!(created_rows[0]["actor"], "ann");
    assert_eq!(created_rows[0]["after"]["number"], "3125550188");
}

/// 409 naming the pending callback, 422 naming the field (invalid,
/// blacklisted, international number; a time in the past or too far
/// ahead; bad data), 403 for another unit's queue.
#[tokio::test]
async fn create_refuses_duplicates_bad_numbers_and_bad_times() {
    let h = Harness::start("cb-refuse").await;
    let h = &h;
    let post = |body: String| async move {
        h.request_as(
            Some(&h.tokens.manager),
            "POST",
            "/v1/callbacks",
            Some(("application/json", &body)),
        )
        .await
    };
    let (status, _, bytes) = post(r#"{"queue":"support","number":"3125550188"}"#.into()).await;
    assert_eq!(status, StatusCode::CREATED);
    let first: CallbackBody = json(&bytes);
    let (status, _, bytes) = post(r#"{"queue":"support","number":"3125550188"}"#.into()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let e = ErrorBody::checked(&bytes);
    assert_eq!(e.code, "already_scheduled");
    assert!(
        e.message.contains(&format!("callback {}", first.id)),
        "names the pending one: {}",
        e.message
    );
    let now = Timestamp::now();
    let cases = [
        (
            r#""number":"312555018""#.to_owned(),
            "invalid_number",
            "number:",
        ),
        (
            r#""number":"9005550188""#.to_owned(),
            "number_blacklisted",
            "number:",
        ),
        (
            r#""number":"011442079460000""#.to_owned(),
            "international_not_allowed",
            "number:",
        ),
        (
            r#""number":"9115550188""#.to_owned(),
            "invalid_number",
            "number:",
        ),
        (
            format!(
                r#""number":"3125550177","scheduled_for":"{}""#,
                now - jiff::SignedDuration::from_hours(1)
            ),
            "invalid_time",
            "scheduled_for:",
        ),
        (
            format!(
                r#""number":"3125550177","scheduled_for":"{}""#,
                now + jiff::SignedDuration::from_hours(31 * 24)
            ),
            "invalid_time",
            "scheduled_for:",
        ),
        (
            r#""number":"3125550177","scheduled_for":"tomorrow""#.to_owned(),
            "invalid_time",
            "scheduled_for:",
        ),
        (
            format!(r#""number":"3125550177","not_after":"{now}""#),
            "invalid_time",
            "not_after:",
        ),
        (
            r#""number":"3125550177","data":{"a":{"nested":1}}"#.to_owned(),
            "invalid_data",
            "data.a:",
        ),
        (
            r#""number":"3125550177","priority":5000"#.to_owned(),
            "invalid_priority",
            "priority:",
        ),
    ];
    for (fields, code, field) in cases {
        let (status, _, bytes) = post(format!(r#"{{"queue":"support",{fields}}}"#)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{fields}");
        let e = ErrorBody::checked(&bytes);
        assert_eq!(e.code, code, "{fields}: {}", e.message);
        assert!(e.message.starts_with(field), "{fields}: {}", e.message);
    }
    let (status, _, bytes) = post(r#"{"queue":"nowhere","number":"3125550177"}"#.into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(ErrorBody::checked(&bytes).message.starts_with("queue:"));
    let (status, _, _) = post(r#"{"queue":"sales","number":"3125550177"}"#.into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another unit's queue");
    let (status, _, _) =
        post(r#"{"queue":"support","number":"3125550177","extra":1}"#.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.callbacks("/v1/callbacks").await.1.len(),
        1,
        "nothing refused was written"
    );
}

/// Issue 11 point 4: a callback asks for one of the organisation's callback
/// numbers, which an agent of its queue must be allowed to present; a
/// patch changes or clears it.
#[tokio::test]
async fn create_and_patch_check_the_caller_id_against_the_org_and_the_agents() {
    let h = Harness::start_config(
        "cb-caller-id",
        r#"callback_numbers = ["3125550100", "8005550100", "2125550100"]"#,
        "",
        "[[agents]]\nid = \"dave\"\nuri = \"sip:dave@127.0.0.1:5999\"\n\
         queues = [\"closing\"]\ncallback_numbers = [\"2125550100\"]\n",
    )
    .await;
    let h = &h;
    let post = |body: String| async move {
        h.request("POST", "/v1/callbacks", Some(("application/json", &body)))
            .await
    };
    let (status, _, bytes) =
        post(r#"{"queue":"support","number":"3125550188","caller_id":"8005550100"}"#.into()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let created: CallbackBody = json(&bytes);
    assert_eq!(created.caller_id.as_deref(), Some("8005550100"));
    let cases = [
        ("support", "9995550100", "invalid_caller_id"),
        ("support", "12", "invalid_caller_id"),
        ("support", "+18005550100", "invalid_caller_id"),
        // Dave, closing's one agent, may present only 212-555-0100.
        ("closing", "8005550100", "caller_id_not_allowed"),
    ];
    for (queue, caller_id, code) in cases {
        let (status, _, bytes) = post(format!(
            r#"{{"queue":"{queue}","number":"3125550177","caller_id":"{caller_id}"}}"#
        ))
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{caller_id}");
        let e = ErrorBody::checked(&bytes);
        assert_eq!(e.code, code, "{caller_id}: {}", e.message);
        assert!(e.message.starts_with("caller_id:"), "{}", e.message);
    }
    let (status, _, _) =
        post(r#"{"queue":"closing","number":"3125550177","caller_id":"2125550100"}"#.into()).await;
    assert_eq!(status, StatusCode::CREATED);
    // PATCH: a refused one changes nothing; null clears; a string sets.
    let path = format!("/v1/callbacks/{}", created.id);
    let patch = |body: &'static str| {
        let path = path.clone();
        async move {
            let (status, _, bytes) = h
                .request("PATCH", &path, Some(("application/json", body)))
                .await;
            (status, bytes)
        }
    };
    let (status, bytes) = patch(r#"{"caller_id":"9995550100"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(ErrorBody::checked(&bytes).code, "invalid_caller_id");
    let (status, bytes) = patch(r#"{"caller_id":null}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json::<CallbackBody>(&bytes).caller_id, None);
    let (status, bytes) = patch(r#"{"caller_id":"2125550100"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json::<CallbackBody>(&bytes).caller_id.as_deref(),
        Some("2125550100")
    );
    let (_, body) = h.get::<serde_json::Value>(&path).await;
    assert_eq!(body["caller_id"], "2125550100", "stored");
}

/// The status endpoint estimates now, as a caller would hear it: the
/// callbacks ahead × the rolling handle time (the 300 s seed here) / the
/// agents staffing the queue now (alice and bob, static), at least the 1
/// minute floor; pausing bob doubles it.
#[tokio::test]
async fn status_estimates_from_the_queue_as_it_stands_now() {
    let h = Harness::start("cb-status-ecbt").await;
    for n in 1..=5 {
        let body = format!(r#"{{"queue":"support","number":"312555020{n}"}}"#);
        let (status, _, _) = h
            .request("POST", "/v1/callbacks", Some(("application/json", &body)))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let ecbt = |n: u32| {
        let h = &h;
        async move {
            let (status, body) = h
                .get::<serde_json::Value>(&format!("/v1/callbacks/status?number=312555020{n}"))
                .await;
            assert_eq!(status, StatusCode::OK);
            let c = &body["callbacks"][0];
            assert_eq!(c["position"], n, "{c}");
            assert_eq!(c["ecbt_more_than"], false, "{c}");
            c["ecbt_minutes"].as_u64().expect("ecbt_minutes")
        }
    };
    // ⌈(position − 1) × 300 s / 2 agents⌉ in minutes, floor 1.
    assert_eq!(ecbt(1).await, 1);
    assert_eq!(ecbt(2).await, 3);
    assert_eq!(ecbt(3).await, 5);
    assert_eq!(ecbt(5).await, 10);
    let (status, _, _) = h
        .request(
            "PUT",
            "/v1/agents/bob",
            Some(("application/json", r#"{"paused":true}"#)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ecbt(3).await, 10, "one agent left");
    assert_eq!(ecbt(5).await, 20);
}

/// Cancel by id (then 409 `not_pending`), and the per-number cap:
/// `[callbacks] api_max_per_number_per_day` (3 by default) creations in 24
/// hours, then 429 with `Retry-After`.
#[tokio::test]
async fn cancel_by_id_then_the_per_number_cap_answers_429() {
    let h = Harness::start("cb-cap").await;
    assert_eq!(h.options.max_per_number_per_day, 3);
    let create = || async {
        h.request(
            "POST",
            "/v1/callbacks",
            Some((
                "application/json",
                r#"{"queue":"support","number":"3125550188"}"#,
            )),
        )
        .await
    };
    for _ in 0..3 {
        let (status, _, bytes) = create().await;
        assert_eq!(status, StatusCode::CREATED);
        let row: CallbackBody = json(&bytes);
        let (status, _, bytes) = h
            .request_as(
                Some(&h.tokens.manager),
                "DELETE",
                &format!("/v1/callbacks/{}", row.id),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json::<CallbackBody>(&bytes).status, "cancelled");
        let e = h
            .refused(
                "DELETE",
                &format!("/v1/callbacks/{}", row.id),
                None,
                StatusCode::CONFLICT,
            )
            .await;
        assert!(e.contains("cancelled"), "{e}");
    }
    let (status, headers, bytes) = create().await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ErrorBody::checked(&bytes).code, "too_many_callbacks");
    let retry: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=86_400).contains(&retry), "{retry}");
    h.refused("DELETE", "/v1/callbacks/9999", None, StatusCode::NOT_FOUND)
        .await;
    h.refused("DELETE", "/v1/callbacks/x", None, StatusCode::NOT_FOUND)
        .await;
}

/// `POST /v1/callbacks/cancel {number}` cancels the number's pending
/// callbacks in the caller's units only (or the queue given).
#[tokio::test]
async fn cancel_by_number_takes_only_the_callers_units() {
    let h = Harness::start("cb-cancel-number").await;
    let h = &h;
    for queue in ["support", "sales"] {
        let (status, _, _) = h
            .request(
                "POST",
                "/v1/callbacks",
                Some((
                    "application/json",
                    &format!(r#"{{"queue":"{queue}","number":"3125550188"}}"#),
                )),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let cancel = |token: String, body: &'static str| async move {
        h.request_as(
            Some(&token),
            "POST",
            "/v1/callbacks/cancel",
            Some(("application/json", body)),
        )
        .await
    };
    let (status, _, bytes) = cancel(h.tokens.manager.clone(), r#"{"number":"3125550188"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = json(&bytes);
    let cancelled = body["cancelled"].as_array().expect("cancelled");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["queue"], "support");
    assert_eq!(cancelled[0]["status"], "cancelled");
    let (status, _, _) = cancel(
        h.tokens.manager.clone(),
        r#"{"number":"3125550188","queue":"sales"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, bytes) = cancel(h.tokens.manager.clone(), r#"{"number":"31-25"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(ErrorBody::checked(&bytes).message.starts_with("number:"));
    let (status, _, bytes) = cancel(h.tokens.admin.clone(), r#"{"number":"3125550188"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = json(&bytes);
    assert_eq!(body["cancelled"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["cancelled"][0]["queue"], "sales");
    let (_, rows) = h.callbacks("/v1/callbacks?status=cancelled").await;
    assert_eq!(rows.len(), 2);
}

/// Filters and cursor pages; PATCH reschedules a pending callback and is
/// refused once it is not; the status of a number gives its place in
/// line and ECBT.
#[tokio::test]
async fn list_pages_patch_reschedules_and_status_tells_the_place() {
    let h = Harness::start("cb-list").await;
    let mut ids = Vec::new();
    for number in ["3125550101", "3125550102", "3125550103"] {
        let (status, _, bytes) = h
            .request(
                "POST",
                "/v1/callbacks",
                Some((
                    "application/json",
                    &format!(r#"{{"queue":"support","number":"{number}"}}"#),
                )),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        ids.push(json::<CallbackBody>(&bytes).id);
    }
    let (status, page) = h
        .get::<serde_json::Value>("/v1/callbacks?queue=support&limit=2")
        .await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<i64> = page["callbacks"]
        .as_array()
        .expect("callbacks")
        .iter()
        .map(|c| c["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(got, ids[..2]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, page) = h
        .get::<serde_json::Value>(&format!(
            "/v1/callbacks?queue=support&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(page["callbacks"][0]["id"], ids[2]);
    assert_eq!(page["next_cursor"], serde_json::Value::Null);
    let (_, rows) = h.callbacks("/v1/callbacks?number=3125550102").await;
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1]]);
    let (_, rows) = h.callbacks("/v1/callbacks?queue=sales").await;
    assert!(rows.is_empty());
    let e = h
        .refused(
            "GET",
            "/v1/callbacks?cursor=bogus",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(e.starts_with("cursor:"), "{e}");

    let (_, status_body) = h
        .get::<serde_json::Value>("/v1/callbacks/status?number=3125550103")
        .await;
    assert_eq!(status_body["callbacks"][0]["position"], 3);
    assert_eq!(status_body["callbacks"][0]["status"], "pending");
    assert_eq!(status_body["callbacks"][0]["attempts"], 0);

    let at = Timestamp::now() + jiff::SignedDuration::from_mins(30);
    let patch = format!(r#"{{"scheduled_for":"{at}","priority":9}}"#);
    let (status, _, bytes) = h
        .request_as(
            Some(&h.tokens.manager),
            "PATCH",
            &format!("/v1/callbacks/{}", ids[0]),
            Some(("application/json", &patch)),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let patched: CallbackBody = json(&bytes);
    assert_eq!(patched.priority, 9);
    assert!(patched.scheduled_for.is_some());
    assert_eq!(patched.next_attempt_at, patched.scheduled_for);
    let (_, status_body) = h
        .get::<serde_json::Value>("/v1/callbacks/status?number=3125550101")
        .await;
    let ecbt = status_body["callbacks"][0]["ecbt_minutes"]
        .as_u64()
        .expect("ecbt");
    assert!((29..=30).contains(&ecbt), "about 30 minutes ahead: {ecbt}");
    assert_eq!(
        status_body["callbacks"][0]["position"], 3,
        "rescheduled: its place in line is its new time"
    );
    let taken = r#"{"number":"3125550102"}"#;
    let e = h
        .refused(
            "PATCH",
            &format!("/v1/callbacks/{}", ids[0]),
            Some(("application/json", taken)),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(e.contains(&format!("callback {}", ids[1])), "{e}");
    let (status, _, _) = h
        .request("DELETE", &format!("/v1/callbacks/{}", ids[0]), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let e = h
        .refused(
            "PATCH",
            &format!("/v1/callbacks/{}", ids[0]),
            Some(("application/json", r#"{"priority":1}"#)),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(e.contains("cancelled"), "{e}");
    h.refused(
        "GET",
        "/v1/callbacks/status?number=3125559999",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

/// Issue 11 point 2: the organisation's routes refuse what the
/// configuration's rules refuse (naming the field) and store nothing then;
/// each change is the next version (`ETag`, `If-Match`); a manager changes
/// only the hours and switches of their units' queues; a queue with pending
/// callbacks is not deleted; the switches count what launching would start;
/// passwords are never shown.
#[tokio::test]
async fn org_changes_are_checked_versioned_and_scoped() {
    let h = Harness::start("org-changes").await;
    let json_body = |text| Some(("application/json", text));
    let (status, headers, body) = h.request("GET", "/v1/org", None).await;
    assert_eq!(status, StatusCode::OK);
    let org: api::org::OrgBody = json(&body);
    let etag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(etag, format!("\"{}\"", org.version));
    assert_eq!(org.organisation["queues"][1]["id"], "sales");
    assert!(org.organisation["agents"][0].get("password").is_none());
    assert_eq!(org.organisation["agents"][0]["password_set"], false);

    // A broken weekly range: 422 naming the field as in the file.
    let (status, _, body) = h
        .request(
            "PATCH",
            "/v1/queues/sales",
            json_body(r#"{"hours":{"mon":"25:00-26:00"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = ErrorBody::checked(&body);
    assert_eq!(e.code, "invalid_organisation");
    assert!(e.message.starts_with("queues[1].hours"), "{}", e.message);
    // A misspelt key: 400 naming it.
    let (status, _, body) = h
        .request("PATCH", "/v1/org", json_body(r#"{"org":{"nmae":"x"}}"#))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(ErrorBody::checked(&body).message.contains("nmae"));
    let (_, unchanged) = h.get::<api::org::OrgBody>("/v1/org").await;
    assert_eq!(unchanged.version, org.version, "refusals store nothing");

    // A change against the version read: the next version; the same
    // If-Match again is stale.
    let if_match = format!("\"{}\"", org.version);
    let (status, headers, body) = h
        .request_with(
            Some(&h.tokens.admin),
            "PATCH",
            "/v1/org",
            json_body(r#"{"org":{"blacklist":["900","911"]}}"#),
            &[("if-match", &if_match)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let changed: api::org::OrgBody = json(&body);
    assert_eq!(changed.version, org.version + 1);
    assert_eq!(
        headers.get("etag").and_then(|v| v.to_str().ok()),
        Some(format!("\"{}\"", changed.version).as_str())
    );
    assert_eq!(
        changed.organisation["org"]["blacklist"],
        serde_json::json!(["900", "911"])
    );
    let (status, _, body) = h
        .request_with(
            Some(&h.tokens.admin),
            "PATCH",
            "/v1/org",
            json_body(r#"{"org":{"name":"late"}}"#),
            &[("if-match", &if_match)],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(ErrorBody::checked(&body).code, "version_mismatch");
    // The new blacklist is in force for the API at once.
    let (status, _, body) = h
        .request(
            "POST",
            "/v1/callbacks",
            json_body(r#"{"queue":"support","number":"9115550100"}"#),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );

    // A manager: hours and switches of their unit's queue, nothing else.
    let (status, _, body) = h
        .request_as(
            Some(&h.tokens.manager),
            "PATCH",
            "/v1/queues/support",
            json_body(r#"{"priority":5}"#),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(ErrorBody::checked(&body).message.starts_with("priority"));
    let (status, _, body) = h
        .request_as(
            Some(&h.tokens.manager),
            "PATCH",
            "/v1/queues/support",
            json_body(r#"{"hours":{"mon":"08:00-18:00"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let queue: serde_json::Value = json(&body);
    assert_eq!(queue["hours"], serde_json::json!({"mon": "08:00-18:00"}));

    // Pending callbacks: counted by the switches, and they keep their queue.
    {
        let mut store = SqliteStore::open(&h.store_path).expect("store");
        stored_callback(&mut store, "sales", "3125550177");
    }
    let (status, _, body) = h.request("DELETE", "/v1/queues/sales", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(ErrorBody::checked(&body).code, "queue_in_use");
    let (_, switches) = h.get::<api::org::SwitchesBody>("/v1/org/switches").await;
    assert!(
        !switches.org.launch_enabled,
        "the harness starts with launching off"
    );
    assert_eq!(switches.pending_callbacks.get("sales"), Some(&1));
    assert!(
        switches
            .warnings
            .iter()
            .any(|w| w.contains("sales") && w.contains("1 pending callbacks")),
        "{:?}",
        switches.warnings
    );
    // Every change above wrote one audit row naming its caller.
    let store = SqliteStore::open(&h.store_path).expect("store");
    let audit = store
        .audit(&callbackd::callback::store::AuditQuery {
            from: None,
            to: None,
            after_id: None,
            limit: 1000,
        })
        .expect("audit");
    let org_rows: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r.target.starts_with("organisation") || r.target.starts_with("queue:"))
        .map(|r| (r.actor.as_str(), r.action.as_str()))
        .collect();
    assert_eq!(
        org_rows,
        [("root", "patch_organisation"), ("ann", "patch_queue")]
    );
}
