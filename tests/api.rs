//! The admin HTTP API against an engine running in this process: every
//! endpoint through the router (`tower::ServiceExt::oneshot`), the refusals
//! (400, 404, 405, 415), a SIP call that the statistics, metrics and health
//! must see, and one request over a real TCP socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::http::{HeaderMap, Request, StatusCode};
use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tower::ServiceExt;

use callbackd::api::{self, ApiServer};
use callbackd::callback::QueueId;
use callbackd::callback::store::{NewCallback, Registration, SqliteStore, Store};
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
struct Harness {
    engine: Option<EngineHandle>,
    app: Router,
    store_path: PathBuf,
    _dir: TempDir,
}

impl Harness {
    async fn start(name: &str) -> Harness {
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
            [[queues]]
            id = "support"
            [[agents]]
            id = "alice"
            uri = "sip:alice@127.0.0.1:5999"
            queues = ["support"]
            [[agents]]
            id = "bob"
            uri = "sip:bob@127.0.0.1:5999"
            queues = ["support"]
            "#,
            prompts.display()
        );
        let mut config = Config::from_toml_str(&text, "api-test").expect("test config");
        config.sip.bind = "127.0.0.1:0".parse().expect("addr");
        config.bind_ephemeral_sip_port();
        let store_path = config.store_path(&dir.0);
        let settings = config.check(&dir.0).expect("valid config");
        let engine = engine::start(settings).await.expect("engine starts");
        let app = api::router(engine.control(), store_path.clone());
        Harness {
            engine: Some(engine),
            app,
            store_path,
            _dir: dir,
        }
    }

    fn engine(&self) -> &EngineHandle {
        self.engine.as_ref().expect("engine still running")
    }

    /// Sends one request through the router.
    async fn request(
        &self,
        method: &str,
        uri: &str,
        body: Option<(&str, &str)>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut builder = Request::builder().method(method).uri(uri);
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
        json::<ErrorBody>(&bytes).error
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorBody {
    error: String,
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

    h.engine.take().expect("engine").shutdown().await;
    let (status, body) = h.get::<HealthBody>("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body.status, "stopped");
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
        [agent("alice", "available"), agent("bob", "available")]
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
        [agent("alice", "paused"), agent("bob", "available")]
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
            "/v1/agents/carol",
            Some((json_type, r#"{"paused": true}"#)),
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(error.contains("no agent \"carol\""), "{error}");
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
    let (status, rows) = h.get::<Vec<CallbackBody>>("/v1/callbacks").await;
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
    };
    let (status, rows) = h.get::<Vec<CallbackBody>>("/v1/callbacks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows, [expected]);
    let (_, rows) = h
        .get::<Vec<CallbackBody>>("/v1/callbacks?status=pending")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].number, "3125550188");
    let (status, rows) = h
        .get::<Vec<CallbackBody>>("/v1/callbacks?status=completed")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(rows.is_empty());
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
    h.refused("GET", "/", None, StatusCode::NOT_FOUND).await;

    let (status, headers, body) = h.request("DELETE", "/v1/gates", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_json(&headers);
    let allow = headers
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(allow.contains("GET") && allow.contains("PUT"), "{allow}");
    let e = json::<ErrorBody>(&body).error;
    assert!(e.contains("DELETE") && e.contains("/v1/gates"), "{e}");
    h.refused("POST", "/health", None, StatusCode::METHOD_NOT_ALLOWED)
        .await;
    h.refused("PUT", "/metrics", None, StatusCode::METHOD_NOT_ALLOWED)
        .await;
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
        h.store_path.clone(),
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
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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
