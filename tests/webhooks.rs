//! Webhooks end to end (issue 11 acceptance 4): the release binary posts
//! its outbox to a test receiver (an axum server on 127.0.0.1) that checks
//! every signature, records the order of the events and fails the first
//! tries to show the retries; and a `kill -9` after the commit, receiver
//! down, still delivers the event exactly once after a restart.
//!
//! Every wait has a deadline; nothing asserts on timing.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

use callbackd::callback::store::{
    AccountStore, Change, DeliveryState, NewToken, NewUser, Role, SqliteStore, TokenSecret,
    WebhookStore,
};
use callbackd::callback::webhook::{self, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER};

use support::api_request as http;
use support::{Engine, EngineConfig, Ports, TestDir, interop_lock};

/// The secret the tests give their subscriptions.
const SECRET: &str = "whsec_test_0123456789abcdef";

/// How long a wait for a delivery may take (retries included).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    event_id: String,
    event_type: String,
    /// The event id inside the body (must equal the header).
    body_id: String,
    callback_id: i64,
    /// The signature verified against [`SECRET`] and the body.
    signature_ok: bool,
    /// What the receiver answered.
    answered: u16,
}

#[derive(Clone)]
struct ReceiverState {
    log: Arc<Mutex<Vec<Received>>>,
    /// Requests still to be refused with 503.
    fail_next: Arc<AtomicU32>,
}

/// The test receiver: `POST /hook` on 127.0.0.1, on a runtime of its own.
struct Receiver {
    state: ReceiverState,
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    /// Serves on `addr` (port 0: any), refusing the first `fail_first`
    /// requests with 503.
    fn start(addr: SocketAddr, fail_first: u32) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        let state = ReceiverState {
            log: Arc::new(Mutex::new(Vec::new())),
            fail_next: Arc::new(AtomicU32::new(fail_first)),
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("receiver cannot bind {addr}: {e}"));
        let addr = listener.local_addr().expect("bound");
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            state,
            addr,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn log(&self) -> Vec<Received> {
        self.state.log.lock().expect("receiver log").clone()
    }

    /// Waits until `count` requests were answered 2xx; the whole log.
    fn wait_delivered(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        loop {
            let log = self.log();
            if log.iter().filter(|r| r.answered < 300).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{count} deliveries not made within {DELIVERY_DEADLINE:?}: {log:#?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let now = jiff::Timestamp::now().as_second();
    let signature_ok = webhook::verify(
        SECRET.as_bytes(),
        &header(SIGNATURE_HEADER),
        &body,
        now,
        Duration::from_secs(300),
    )
    .is_ok()
        && header("content-type") == "application/json";
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let refuse = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if refuse {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    };
    state.log.lock().expect("receiver log").push(Received {
        event_id: header(EVENT_ID_HEADER),
        event_type: header(EVENT_TYPE_HEADER),
        body_id: parsed["id"].as_str().unwrap_or("").to_owned(),
        callback_id: parsed["data"]["callback"]["id"].as_i64().unwrap_or(-1),
        signature_ok,
        answered: status.as_u16(),
    });
    status
}

/// An engine with the API on and quick retries, its store seeded with an
/// admin; the admin's token.
fn engine_config(dir: &TestDir, ports: &Ports) -> (EngineConfig, String) {
    let mut config = EngineConfig::new(ports);
    config.api_port = Some(ports.engine_sip + 2);
    config.extra_toml = "[webhooks]\nretry_initial_ms = 100\nretry_max_s = 1\ntimeout_ms = 5000\n\
                         poll_interval_ms = 100\n"
        .into();
    let mut store = SqliteStore::open(&dir.join("callbackd.sqlite")).expect("open the store");
    let change = Change {
        actor: "test".into(),
        at: jiff::Timestamp::now(),
    };
    store
        .create_user(
            &NewUser {
                name: "root".into(),
                role: Role::Admin,
                units: Vec::new(),
            },
            &change,
        )
        .expect("user");
    let secret = TokenSecret::generate().expect("OS randomness");
    store
        .issue_token(
            &NewToken {
                user: "root".into(),
                label: "test".into(),
                expires_at: None,
                hash: secret.hash,
            },
            &change,
        )
        .expect("token");
    (config, secret.text)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// Subscribes `url` to `events` with [`SECRET`]; the subscription's id.
fn subscribe(port: u16, token: &str, url: &str, events: &[&str]) -> i64 {
    let body = serde_json::json!({ "url": url, "events": events, "secret": SECRET }).to_string();
    let (status, answer) = http(port, "POST", "/v1/webhooks", token, Some(&body));
    assert_eq!(status, 201, "{answer}");
    let created = json(&answer);
    assert_eq!(created["secret"], SECRET, "the secret is shown at creation");
    created["id"].as_i64().expect("id")
}

/// Creates a callback for `number` in `support` through the API; its id.
fn create_callback(port: u16, token: &str, number: &str) -> i64 {
    let body = format!(r#"{{"queue":"support","number":"{number}"}}"#);
    let (status, answer) = http(port, "POST", "/v1/callbacks", token, Some(&body));
    assert_eq!(status, 201, "{answer}");
    json(&answer)["id"].as_i64().expect("id")
}

/// The receiver checks every signature; events arrive in commit order; the
/// first three tries are refused (503) and retried with backoff while the
/// later events wait their turn; the delivery log shows the tries.
#[test]
fn signed_events_arrive_in_order_and_refused_tries_are_retried() {
    let _serial = interop_lock();
    let dir = TestDir::new("webhooks-order");
    let ports = Ports::allocate();
    let api = ports.engine_sip + 2;
    let receiver = Receiver::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 3);
    let (config, token) = engine_config(&dir, &ports);
    let mut engine = Engine::start(&config, &dir);

    let hook = subscribe(
        api,
        &token,
        &receiver.url(),
        &["callback.registered", "callback.cancelled"],
    );
    let a = create_callback(api, &token, "3125550181");
    let b = create_callback(api, &token, "3125550182");
    let c = create_callback(api, &token, "3125550183");
    let (status, answer) = http(api, "DELETE", &format!("/v1/callbacks/{a}"), &token, None);
    assert_eq!(status, 200, "{answer}");
    let log = receiver.wait_delivered(4);
    assert!(
        log.iter().all(|r| r.signature_ok),
        "a signature did not verify: {log:#?}"
    );
    assert!(
        log.iter()
            .all(|r| r.event_id == r.body_id && r.event_id.starts_with("evt_"))
    );
    let delivered: Vec<(&str, i64)> = log
        .iter()
        .filter(|r| r.answered < 300)
        .map(|r| (r.event_type.as_str(), r.callback_id))
        .collect();
    assert_eq!(
        delivered,
        [
            ("callback.registered", a),
            ("callback.registered", b),
            ("callback.registered", c),
            ("callback.cancelled", a),
        ],
        "{log:#?}"
    );
    // The three refusals were the first event's tries: the next events
    // waited until it was delivered.
    let first = &log[0].event_id;
    let tries: Vec<(&str, u16)> = log[..4]
        .iter()
        .map(|r| (r.event_id.as_str(), r.answered))
        .collect();
    assert_eq!(
        tries,
        [
            (first.as_str(), 503),
            (first.as_str(), 503),
            (first.as_str(), 503),
            (first.as_str(), 204)
        ]
    );
    assert_eq!(log.len(), 7, "each event delivered once: {log:#?}");

    // The delivery log through the API (the record follows the 2xx).
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let page = loop {
        let (status, answer) = http(
            api,
            "GET",
            &format!("/v1/webhooks/{hook}/deliveries?limit=3"),
            &token,
            None,
        );
        assert_eq!(status, 200, "{answer}");
        let page = json(&answer);
        let done = page["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["state"] == "delivered"));
        if done {
            break page;
        }
        assert!(Instant::now() < deadline, "log not delivered: {page}");
        thread::sleep(Duration::from_millis(20));
    };
    let rows = page["deliveries"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["event_id"], first.as_str());
    assert_eq!(rows[0]["tries"], 4);
    assert_eq!(rows[0]["last_status"], 204);
    assert_eq!(rows[1]["tries"], 1);
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, answer) = http(
        api,
        "GET",
        &format!("/v1/webhooks/{hook}/deliveries?cursor={cursor}"),
        &token,
        None,
    );
    let rest = json(&answer);
    assert_eq!(rest["deliveries"][0]["type"], "callback.cancelled");
    assert_eq!(rest["next_cursor"], Value::Null);
    // Every try is counted in /metrics: three refused, then each event
    // delivered once.
    let (status, text) = http(api, "GET", "/metrics", &token, None);
    assert_eq!(status, 200);
    let sample = |result: &str| {
        let name = format!("callbackd_webhook_deliveries_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert_eq!(sample("retried"), Some(3), "{text}");
    assert_eq!(
        sample("delivered").map(|n| n as usize),
        Some(rows.len() + rest["deliveries"].as_array().map_or(0, Vec::len)),
        "{text}"
    );
    engine.stop();
    engine.assert_no_panic();
}

/// The API refuses what it cannot deliver, naming the field, never shows
/// a secret after creation, and audits changes without it.
#[test]
fn the_api_validates_subscriptions_and_shows_the_secret_once() {
    let _serial = interop_lock();
    let dir = TestDir::new("webhooks-api");
    let ports = Ports::allocate();
    let api = ports.engine_sip + 2;
    let (config, token) = engine_config(&dir, &ports);
    let mut engine = Engine::start(&config, &dir);
    for (body, code, field) in [
        (
            r#"{"url":"ftp://127.0.0.1/x","events":["callback.completed"]}"#,
            "invalid_url",
            "url:",
        ),
        (
            r#"{"url":"http://127.0.0.1:9/x","events":["callback.exploded"]}"#,
            "unknown_event",
            "events:",
        ),
        (
            r#"{"url":"http://127.0.0.1:9/x","events":[]}"#,
            "invalid_events",
            "events:",
        ),
        (
            r#"{"url":"http://127.0.0.1:9/x","events":["callback.failed"],"secret":"short"}"#,
            "invalid_secret",
            "secret:",
        ),
    ] {
        let (status, answer) = http(api, "POST", "/v1/webhooks", &token, Some(body));
        assert_eq!(status, 422, "{body}: {answer}");
        let error = json(&answer);
        assert_eq!(error["code"], code, "{answer}");
        assert!(
            error["message"].as_str().unwrap_or("").starts_with(field),
            "{answer}"
        );
    }
    let (status, answer) = http(
        api,
        "POST",
        "/v1/webhooks",
        &token,
        Some(
            r#"{"url":"https://hooks.example.com/cb","events":["callback.completed"],"description":"CRM"}"#,
        ),
    );
    assert_eq!(status, 201, "{answer}");
    let created = json(&answer);
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let id = created["id"].as_i64().expect("id");
    let (_, listed) = http(api, "GET", "/v1/webhooks", &token, None);
    let (_, one) = http(api, "GET", &format!("/v1/webhooks/{id}"), &token, None);
    let (status, patched) = http(
        api,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        &token,
        Some(r#"{"enabled":false,"events":["callback.failed","callback.completed"]}"#),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(json(&patched)["enabled"], false);
    assert_eq!(
        json(&patched)["events"],
        serde_json::json!(["callback.completed", "callback.failed"])
    );
    let (_, audit) = http(api, "GET", "/v1/audit", &token, None);
    for text in [&listed, &one, &patched, &audit] {
        assert!(!text.contains(&secret), "the secret leaked: {text}");
    }
    let audit = json(&audit);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.contains("webhook"))
        .collect();
    assert_eq!(actions, ["create_webhook", "update_webhook"]);
    let (status, _) = http(api, "DELETE", &format!("/v1/webhooks/{id}"), &token, None);
    assert_eq!(status, 204);
    let (status, answer) = http(api, "GET", &format!("/v1/webhooks/{id}"), &token, None);
    assert_eq!(status, 404, "{answer}");
    assert_eq!(json(&answer)["code"], "not_found");
    engine.stop();
    engine.assert_no_panic();
}

/// Acceptance 4: the callback is committed through the API while the
/// receiver is down; the process is killed (`kill -9`) before any delivery;
/// after the receiver and the engine are started again on the same store,
/// the event is delivered exactly once, signed.
#[test]
fn an_event_committed_before_kill_9_is_delivered_once_after_restart() {
    let _serial = interop_lock();
    let dir = TestDir::new("webhooks-crash");
    let ports = Ports::allocate();
    let api = ports.engine_sip + 2;
    // A port nobody listens on yet: the receiver comes up later.
    let receiver_addr = {
        let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("free port");
        probe.local_addr().expect("bound")
    };
    let url = format!("http://{receiver_addr}/hook");
    let (config, token) = engine_config(&dir, &ports);
    let mut engine = Engine::start(&config, &dir);
    let hook = subscribe(api, &token, &url, &["callback.registered"]);
    let id = create_callback(api, &token, "3125550191");
    // Committed: the event and its delivery are in the file.
    let store_path = engine.store_path();
    let store = SqliteStore::open(&store_path).expect("open the store");
    let log = store.deliveries(hook, None, 10).expect("delivery log");
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0].callback.0, id);
    assert_eq!(log[0].state, DeliveryState::Pending);
    let event_id = log[0].event_id.clone();

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &engine.pid().to_string()])
        .status()
        .expect("kill can be spawned");
    assert!(killed.success());
    assert!(
        engine.wait_exit(Duration::from_secs(10)).is_some(),
        "the engine survived kill -9"
    );
    let log = store.deliveries(hook, None, 10).expect("delivery log");
    assert_eq!(log[0].state, DeliveryState::Pending, "{log:#?}");

    let receiver = Receiver::start(receiver_addr, 0);
    let mut engine = Engine::start(&config, &dir);
    receiver.wait_delivered(1);
    // Wait for the record of the 2xx: from then on the event is never
    // posted again, so the receiver's count is final.
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    loop {
        let log = store.deliveries(hook, None, 10).expect("delivery log");
        if log[0].state == DeliveryState::Delivered {
            break;
        }
        assert!(Instant::now() < deadline, "not recorded: {log:#?}");
        thread::sleep(Duration::from_millis(20));
    }
    let got = receiver.log();
    assert_eq!(got.len(), 1, "exactly once: {got:#?}");
    assert_eq!(got[0].event_id, event_id);
    assert_eq!(got[0].event_type, "callback.registered");
    assert_eq!(got[0].callback_id, id);
    assert!(got[0].signature_ok, "{got:#?}");
    engine.stop();
    engine.assert_no_panic();
}
