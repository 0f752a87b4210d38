//! Agents registering to an engine running in this process, over real UDP
//! on 127.0.0.1: the 401 challenge, the digest answer, 423 with Min-Expires
//! for a too brief interval, 200 with Contact;expires and Date, a wrong
//! password, unregistering, a registration that lapses — and the engine's
//! view of the agent through `EngineHandle::agents` and `GET /v1/agents`.
//! Without an agent that registers, REGISTER keeps its 405.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tower::ServiceExt;

use callbackd::api;
use callbackd::callback::store::{AccountStore, Change, Role, SqliteStore};
use callbackd::config::Config;
use callbackd::engine::{self, EngineHandle};
use callbackd::sip::digest::{Credentials, DigestRequest};
use callbackd::sip::message::{self, HeaderName, Message, Response};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(5);

/// A directory under cargo's target tmp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("register-{name}-{}-{n}", std::process::id()));
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

/// An engine (SIP on an ephemeral UDP port) with `agents` appended to its
/// configuration, and the admin API's router over it.
struct Harness {
    engine: Option<EngineHandle>,
    app: Router,
    sip: SocketAddr,
    tcp: Option<SocketAddr>,
    /// A viewer's API token.
    token: String,
    _dir: TempDir,
}

impl Harness {
    async fn start(name: &str, rtp_base: u16, extra: &str) -> Harness {
        Harness::start_with_sip(name, rtp_base, "transports = [\"udp\"]", extra).await
    }

    /// [`Harness::start`] with `sip` as the rest of the `[sip]` section.
    async fn start_with_sip(name: &str, rtp_base: u16, sip: &str, extra: &str) -> Harness {
        let dir = TempDir::new(name);
        let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let text = format!(
            r#"
            [sip]
            # Replaced by port 0 below (the configuration refuses port 0).
            bind = "127.0.0.1:5999"
            {sip}
            [rtp]
            port_min = {rtp_base}
            port_max = {}
            [call]
            max_calls = 10
            [prompts]
            dir = '{}'
            [store]
            path = "callbacks.sqlite"
            {extra}
            "#,
            rtp_base + 99,
            prompts.display()
        );
        let mut config = Config::from_toml_str(&text, "register-test").expect("test config");
        config.sip.bind = "127.0.0.1:0".parse().expect("addr");
        config.bind_ephemeral_sip_port();
        let store_path = config.store_path(&dir.0);
        let settings = config.check(&dir.0).expect("valid config");
        let options = api::ApiOptions::new(&settings);
        // A viewer reads the agents (all of them: its unit groups every queue).
        let token = {
            let mut store = SqliteStore::open(&store_path).expect("store");
            let change = Change {
                actor: "test".into(),
                at: jiff::Timestamp::now(),
            };
            let queues: Vec<_> = options.queues.clone();
            store.create_unit("all", &queues, &change).expect("unit");
            callbackd::callback::store::testing::user_with_token(
                &mut store,
                "reader",
                Role::Viewer,
                &["all"],
            )
        };
        let engine = engine::start(settings).await.expect("engine starts");
        let sip = engine.udp_addr().expect("UDP bound");
        let tcp = engine.tcp_addr();
        let app = api::router(engine.control(), options);
        Harness {
            engine: Some(engine),
            app,
            sip,
            tcp,
            token,
            _dir: dir,
        }
    }

    fn engine(&self) -> &EngineHandle {
        self.engine.as_ref().expect("engine still running")
    }

    /// `GET /v1/agents` through the router.
    async fn agents(&self) -> Vec<AgentBody> {
        let request = HttpRequest::builder()
            .uri("/v1/agents")
            .header("authorization", format!("Bearer {}", self.token))
            .body(Body::empty())
            .expect("request");
        let response = tokio::time::timeout(WAIT, self.app.clone().oneshot(request))
            .await
            .expect("answered in time")
            .expect("router is infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        match axum::Json::<Vec<AgentBody>>::from_bytes(&body) {
            Ok(axum::Json(agents)) => agents,
            Err(e) => panic!("{e}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Bob's entry, from the API and from the engine handle (they agree).
    async fn bob(&self) -> AgentBody {
        let api = self.agents().await;
        let bob = api
            .iter()
            .find(|a| a.id == "bob")
            .cloned()
            .expect("bob is listed");
        let handle = self.engine().agents().await.expect("engine running");
        let from_handle = handle
            .iter()
            .find(|a| a.id.as_str() == "bob")
            .expect("bob is known to the engine");
        assert_eq!(from_handle.reachable, bob.reachable);
        assert_eq!(from_handle.state_name(), bob.state);
        bob
    }

    async fn shutdown(mut self) {
        self.engine.take().expect("engine").shutdown().await;
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    id: String,
    state: String,
    reachable: bool,
}

/// Bob's softphone: one Call-ID, CSeq counting up, answering the last
/// challenge with nc + 1 like a real phone.
struct Phone {
    socket: UdpSocket,
    engine: SocketAddr,
    password: &'static str,
    cseq: u32,
    challenge: Option<Response>,
    nc: u32,
}

impl Phone {
    async fn new(engine: SocketAddr, password: &'static str) -> Phone {
        Phone {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
            engine,
            password,
            cseq: 0,
            challenge: None,
            nc: 0,
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().expect("bound").port()
    }

    fn request_uri(&self) -> String {
        format!("sip:{}", self.engine)
    }

    /// Sends one REGISTER (`expires`: the Expires header, if any) and
    /// returns the final response.
    async fn register(&mut self, expires: Option<u32>) -> Response {
        self.cseq += 1;
        let port = self.port();
        let uri = self.request_uri();
        let mut headers = String::new();
        if let Some(expires) = expires {
            headers.push_str(&format!("Expires: {expires}\r\n"));
        }
        if let Some(challenge) = &self.challenge {
            self.nc += 1;
            let answer = Credentials::new("bob", self.password)
                .answer(
                    challenge,
                    &DigestRequest {
                        method: "REGISTER",
                        uri: &uri,
                        body: b"",
                    },
                    "0a4f113b",
                    self.nc,
                )
                .expect("answers the challenge");
            headers.push_str(&format!("Authorization: {}\r\n", answer.value));
        }
        let text = format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-reg-{}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:bob@127.0.0.1>;tag=phone1\r\n\
             To: <sip:bob@127.0.0.1>\r\n\
             Call-ID: bob-phone-1\r\n\
             CSeq: {} REGISTER\r\n\
             Contact: <sip:bob@127.0.0.1:{port}>\r\n\
             {headers}Content-Length: 0\r\n\r\n",
            self.cseq, self.cseq
        );
        self.socket
            .send_to(text.as_bytes(), self.engine)
            .await
            .expect("send");
        let response = self.receive().await;
        if response.status == 401 {
            self.challenge = Some(response.clone());
            self.nc = 0;
        }
        response
    }

    async fn receive(&self) -> Response {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
                .await
                .expect("a response in time")
                .expect("recv");
            match message::parse(&buf[..n]) {
                Ok(Message::Response(r)) if r.status >= 200 => return r,
                Ok(Message::Response(_)) => continue,
                other => panic!("expected a response, got {other:?}"),
            }
        }
    }
}

fn header_fields(response: &Response, name: HeaderName) -> Vec<&str> {
    response
        .headers
        .fields()
        .iter()
        .filter(|f| f.name == name)
        .map(|f| &*f.value)
        .collect()
}

const AGENTS: &str = r#"
    [registrar]
    realm = "callbackd.test"
    min_expires_s = 60
    [[agents]]
    id = "alice"
    uri = "sip:1001@127.0.0.1:5080"
    queues = ["support"]
    [[agents]]
    id = "bob"
    user = "bob"
    password = "s3cret"
    queues = ["support"]
"#;

#[tokio::test]
async fn agent_registers_with_digest_and_the_engine_sees_it() {
    let h = Harness::start("digest", 36_200, AGENTS).await;
    assert_eq!(
        h.agents().await,
        [
            AgentBody {
                id: "alice".into(),
                state: "available".into(),
                reachable: true,
            },
            AgentBody {
                id: "bob".into(),
                state: "available".into(),
                reachable: false,
            },
        ],
        "a static agent is reachable, a registering one not yet"
    );

    let mut phone = Phone::new(h.sip, "s3cret").await;
    // No credentials: 401 with a challenge per algorithm, SHA-256 first.
    let challenged = phone.register(Some(3600)).await;
    assert_eq!(challenged.status, 401);
    let challenges = header_fields(&challenged, HeaderName::WwwAuthenticate);
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    assert!(challenges[0].contains("realm=\"callbackd.test\""));
    assert!(challenges[0].contains("algorithm=SHA-256"));
    assert!(challenges[1].contains("algorithm=MD5"));
    assert!(!h.bob().await.reachable);

    // Authenticated but too brief: 423 with our minimum (RFC 3261 §10.3).
    let brief = phone.register(Some(30)).await;
    assert_eq!(brief.status, 423);
    assert_eq!(brief.headers.get(HeaderName::MinExpires), Some("60"));
    assert!(!h.bob().await.reachable);

    // Authenticated, acceptable: 200 listing the binding and the Date.
    let ok = phone.register(Some(3600)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        header_fields(&ok, HeaderName::Contact),
        [format!("<sip:bob@127.0.0.1:{}>;expires=3600", phone.port()).as_str()]
    );
    let date = ok.headers.other("Date");
    assert!(date.is_some_and(|d| d.ends_with(" GMT")), "{date:?}");
    assert_eq!(
        h.bob().await,
        AgentBody {
            id: "bob".into(),
            state: "available".into(),
            reachable: true,
        }
    );

    // Unregister (Expires: 0): 200 without bindings, and bob is offline.
    let gone = phone.register(Some(0)).await;
    assert_eq!(gone.status, 200);
    assert!(header_fields(&gone, HeaderName::Contact).is_empty());
    assert!(!h.bob().await.reachable);
    h.shutdown().await;
}

#[tokio::test]
async fn rejects_wrong_password_with_another_challenge() {
    let h = Harness::start("password", 36_300, AGENTS).await;
    let mut phone = Phone::new(h.sip, "guess").await;
    assert_eq!(phone.register(Some(3600)).await.status, 401);
    let again = phone.register(Some(3600)).await;
    assert_eq!(again.status, 401, "wrong password: challenged again");
    assert!(!header_fields(&again, HeaderName::WwwAuthenticate).is_empty());
    assert!(!h.bob().await.reachable);
    h.shutdown().await;
}

#[tokio::test]
async fn registration_lapses_at_its_expiry() {
    let h = Harness::start(
        "lapse",
        36_400,
        &AGENTS.replace("min_expires_s = 60", "min_expires_s = 1"),
    )
    .await;
    let mut phone = Phone::new(h.sip, "s3cret").await;
    assert_eq!(phone.register(Some(1)).await.status, 401);
    assert_eq!(phone.register(Some(1)).await.status, 200);
    assert!(h.bob().await.reachable);
    // Nothing refreshes it: the engine's own timer drops the binding (at
    // which instant: the registrar's binding_lapses_when_not_refreshed).
    // One snapshot per look (bob() reads the API and the handle one after
    // the other, which can straddle the expiry instant).
    let harness = &h;
    common::wait_until_async(WAIT, "binding still live", || async move {
        let agents = harness.engine().agents().await.expect("engine running");
        agents
            .iter()
            .any(|a| a.id.as_str() == "bob" && !a.reachable)
    })
    .await;
    // Lapsed for good: the API and the handle agree.
    assert!(!h.bob().await.reachable);
    h.shutdown().await;
}

#[tokio::test]
async fn rejects_register_with_405_without_registering_agents() {
    let h = Harness::start(
        "no-registrar",
        36_500,
        "[[agents]]\nid = \"alice\"\nuri = \"sip:1001@127.0.0.1:5080\"\nqueues = [\"support\"]\n",
    )
    .await;
    let mut phone = Phone::new(h.sip, "s3cret").await;
    let refused = phone.register(Some(3600)).await;
    assert_eq!(refused.status, 405);
    let allow = refused.headers.get(HeaderName::Allow).unwrap_or("");
    assert!(
        allow.contains("INVITE") && !allow.contains("REGISTER"),
        "{allow}"
    );
    h.shutdown().await;
}

/// A SIP peer on one TCP connection (messages without bodies).
struct TcpLink {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpLink {
    async fn connect(engine: SocketAddr) -> TcpLink {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(engine))
            .await
            .expect("connected in time")
            .expect("connect");
        TcpLink {
            stream,
            buf: Vec::new(),
        }
    }

    fn port(&self) -> u16 {
        self.stream.local_addr().expect("bound").port()
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.expect("write");
    }

    /// The next final response (every one here has Content-Length: 0).
    async fn response(&mut self) -> Response {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 4).collect();
                match message::parse(&frame) {
                    Ok(Message::Response(r)) if r.status >= 200 => return r,
                    Ok(Message::Response(_)) => continue,
                    other => panic!("expected a response, got {other:?}"),
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a response in time")
                .expect("read");
            assert!(n > 0, "the engine closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the engine closes the connection within `WAIT`.
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// A REGISTER for bob over this connection; answers a 401 with the
    /// digest once. Gives the final response.
    async fn register(&mut self, expires: u32, cseq: u32) -> Response {
        let uri = "sip:127.0.0.1";
        let port = self.port();
        let text = |cseq: u32, auth: &str| {
            format!(
                "REGISTER {uri} SIP/2.0\r\n\
                 Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK-tcp-{cseq}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:bob@127.0.0.1>;tag=tcp1\r\n\
                 To: <sip:bob@127.0.0.1>\r\n\
                 Call-ID: bob-tcp-1\r\n\
                 CSeq: {cseq} REGISTER\r\n\
                 Contact: <sip:bob@127.0.0.1:{port};transport=tcp>\r\n\
                 Expires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n"
            )
        };
        self.send(&text(cseq, "")).await;
        let challenge = self.response().await;
        assert_eq!(challenge.status, 401);
        let answer = Credentials::new("bob", "s3cret")
            .answer(
                &challenge,
                &DigestRequest {
                    method: "REGISTER",
                    uri,
                    body: b"",
                },
                "0a4f113b",
                1,
            )
            .expect("answers the challenge");
        self.send(&text(
            cseq + 1,
            &format!("Authorization: {}\r\n", answer.value),
        ))
        .await;
        self.response().await
    }

    /// An OPTIONS on this connection; gives its final response.
    async fn options(&mut self, call_id: &str) -> Response {
        let port = self.port();
        self.send(&format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK-{call_id}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:probe@127.0.0.1>;tag=p1\r\n\
             To: <sip:127.0.0.1>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        ))
        .await;
        self.response().await
    }
}

#[tokio::test]
async fn a_tcp_connection_carrying_a_registration_is_not_closed_as_idle() {
    let h = Harness::start_with_sip(
        "tcp-held",
        36_600,
        "transports = [\"udp\", \"tcp\"]\ntcp_idle_timeout_s = 1",
        AGENTS,
    )
    .await;
    let tcp = h.tcp.expect("TCP bound");
    let mut phone = TcpLink::connect(tcp).await;
    assert_eq!(phone.register(3600, 1).await.status, 200);
    assert!(h.bob().await.reachable);
    // A connection opened after the phone's and carrying no registration
    // is closed as idle (after 1 s)…
    let mut other = TcpLink::connect(tcp).await;
    assert_eq!(other.options("probe-1").await.status, 200);
    assert!(other.closed().await, "an idle connection is closed");
    // … while the phone's, idle for longer, is still open and served.
    assert_eq!(phone.options("probe-2").await.status, 200);
    assert!(h.bob().await.reachable);
    // Unregistered, it is an idle connection like any other.
    assert_eq!(phone.register(0, 3).await.status, 200);
    assert!(phone.closed().await, "closed as idle once unregistered");
    h.shutdown().await;
}
