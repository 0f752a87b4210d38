//! The edge, against an engine running in this process over real sockets on
//! loopback (127.x.y.z addresses play other hosts):
//!
//! - sources outside every allow-list are stopped at the socket: UDP gets a
//!   stateless 403 and reaches no transaction, TCP is closed at accept;
//!   TCP caps (total, per source) and the per-source message rate hold;
//!   each drop is counted by reason (and shown in `/metrics`);
//! - an agent's phone in `acl.agents` only (outside the trunk list)
//!   registers, is called back, and its own INVITE gets 403;
//! - the address a trunk name resolves to is allowed once the name resolves
//!   again, without a configuration change;
//! - `check-config` prints the capacity and refuses a `max_calls` the
//!   open-files limit cannot hold, naming the field.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::timeout;

use callbackd::api::metrics;
use callbackd::config::Config;
use callbackd::engine::EngineStatus;
use callbackd::engine::transport::DropReason;
use callbackd::sip::digest::{Credentials, DigestRequest};
use callbackd::sip::message::{Message, Request, Response};

use common::dialing::{NUMBER, register};
use common::dns::{FakeDns, Zone};
use common::{Ua, branch};

/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(15);

/// A UA on `ip` (a loopback address other than 127.0.0.1: another host).
async fn ua_on(ip: &str, engine: SocketAddr) -> Ua {
    let sock = UdpSocket::bind((ip, 0)).await.expect("bind UA");
    let local = sock.local_addr().expect("UA address");
    Ua {
        sock,
        local,
        engine,
    }
}

async fn status(engine: &callbackd::engine::EngineHandle) -> EngineStatus {
    engine.status().await.expect("engine running")
}

/// Waits until the engine's edge counters satisfy `check`.
async fn wait_edge(
    engine: &callbackd::engine::EngineHandle,
    what: &str,
    check: impl Fn(&EngineStatus) -> bool,
) -> EngineStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = status(engine).await;
        if check(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {WAIT:?}: {:?}",
            s.edge
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// OPTIONS from `ua`; its final response, or `None` within `within`.
async fn options(ua: &Ua, within: Duration) -> Option<Response> {
    let dialog = ua.dialog();
    ua.send(dialog.request("OPTIONS", 1, &branch(), None)).await;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ua.try_recv(left).await? {
            Message::Response(r) if r.status >= 200 => return Some(r),
            _ => continue,
        }
    }
}

/// A TCP connection from `ip`; whether the engine closed it (EOF or reset)
/// within `within`.
async fn closed_by_engine(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    match timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

async fn connect_from(ip: &str, engine: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("TCP socket");
    socket
        .bind(SocketAddr::new(ip.parse().expect("ip"), 0))
        .expect("bind source address");
    socket.connect(engine).await.expect("TCP connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_caps_and_rates_are_enforced_at_the_socket_and_counted() {
    let engine = common::start(common::config(300, |c| {
        c.acl.agents = vec!["127.0.0.3/32".parse().expect("net")];
        c.edge.max_tcp_connections = 3;
        c.edge.max_tcp_per_source = 2;
        c.edge.max_messages_per_source = 10;
    }))
    .await;
    let udp = engine.udp_addr().expect("UDP");
    let tcp = engine.tcp_addr().expect("TCP");

    // UDP from an outsider: a stateless 403, nothing reaches the core.
    let outsider = ua_on("127.0.0.2", udp).await;
    let r = options(&outsider, WAIT).await.expect("an answer");
    assert_eq!(r.status, 403);
    let s = status(&engine).await;
    assert_eq!(s.edge.dropped(DropReason::Outsider), 1);
    assert_eq!(s.edge.rejected_403, 1);
    assert_eq!(
        s.stats.sip.transactions, 0,
        "no transaction for an outsider"
    );

    // TCP from an outsider: closed at accept.
    let mut conn = connect_from("127.0.0.2", tcp).await;
    assert!(
        closed_by_engine(&mut conn, WAIT).await,
        "outsider's TCP closed"
    );
    wait_edge(&engine, "outsider TCP counted", |s| {
        s.edge.dropped(DropReason::OutsiderTcp) == 1
    })
    .await;

    // Caps: two per source, three in all.
    let mut a1 = connect_from("127.0.0.1", tcp).await;
    let mut a2 = connect_from("127.0.0.1", tcp).await;
    wait_edge(&engine, "two connections open", |s| {
        s.edge.tcp_connections == 2
    })
    .await;
    let mut a3 = connect_from("127.0.0.1", tcp).await;
    assert!(
        closed_by_engine(&mut a3, WAIT).await,
        "third from one source"
    );
    let mut b1 = connect_from("127.0.0.3", tcp).await;
    wait_edge(&engine, "three connections open", |s| {
        s.edge.tcp_connections == 3
    })
    .await;
    let mut b2 = connect_from("127.0.0.3", tcp).await;
    assert!(closed_by_engine(&mut b2, WAIT).await, "fourth in all");
    let s = wait_edge(&engine, "caps counted", |s| {
        s.edge.dropped(DropReason::TcpSourceCap) == 1
            && s.edge.dropped(DropReason::TcpTotalCap) == 1
    })
    .await;
    assert_eq!(s.edge.tcp_connections, 3);
    for conn in [&mut a1, &mut a2, &mut b1] {
        assert!(
            !closed_by_engine(conn, Duration::from_millis(50)).await,
            "connections within the caps stay open"
        );
    }
    drop((a1, a2, b1));
    wait_edge(&engine, "connections forgotten", |s| {
        s.edge.tcp_connections == 0
    })
    .await;

    // The per-source rate: 10 a second, bursts of 20; 60 at once exceed it.
    let ua = ua_on("127.0.0.1", udp).await;
    let dialog = ua.dialog();
    for seq in 1..=60 {
        ua.send(dialog.request("OPTIONS", seq, &branch(), None))
            .await;
    }
    let s = wait_edge(&engine, "rate drops counted", |s| {
        s.edge.dropped(DropReason::SourceRate) > 0
    })
    .await;
    // Every drop reason and the caps show in /metrics.
    let text = metrics::render(&s);
    for reason in DropReason::ALL {
        let line = format!(
            "callbackd_edge_dropped_total{{reason=\"{}\"}} {}",
            reason.label(),
            s.edge.dropped(reason)
        );
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(
        text.contains("\ncallbackd_edge_rejected_403_total 1\n"),
        "{text}"
    );
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// Agents outside the trunk list
// ---------------------------------------------------------------------------

/// An agent's phone on its own address, registering with digest.
struct Phone {
    ua: Ua,
    cseq: u32,
}

impl Phone {
    async fn register(&mut self, password: &str) -> Response {
        let uri = format!("sip:{}", self.ua.engine);
        let mut challenge: Option<Response> = None;
        loop {
            self.cseq += 1;
            let auth = match &challenge {
                Some(c) => {
                    let answer = Credentials::new("bob", password)
                        .answer(
                            c,
                            &DigestRequest {
                                method: "REGISTER",
                                uri: &uri,
                                body: b"",
                            },
                            "0a4f113b",
                            1,
                        )
                        .expect("answers the challenge");
                    format!("Authorization: {}\r\n", answer.value)
                }
                None => String::new(),
            };
            let local = self.ua.local;
            let text = format!(
                "REGISTER {uri} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch={};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:bob@callbackd.test>;tag=phone\r\n\
                 To: <sip:bob@callbackd.test>\r\n\
                 Call-ID: bob-phone@{}\r\n\
                 CSeq: {} REGISTER\r\n\
                 Contact: <sip:bob@{local}>\r\n\
                 Expires: 600\r\n\
                 {auth}Content-Length: 0\r\n\r\n",
                branch(),
                local.ip(),
                self.cseq
            );
            self.ua.send(text).await;
            let r = self.ua.final_response(self.cseq, "REGISTER").await;
            if r.status == 401 && challenge.is_none() {
                challenge = Some(r);
                continue;
            }
            return r;
        }
    }
}

/// A configuration with one registering agent (`bob`), a trunk that goes
/// nowhere (the agent never answers here) and the callbacks poll at 200 ms.
fn agent_config(slot: u16, agents: &[&str]) -> Config {
    common::config(slot, |c| {
        let text = format!(
            "[acl]\nsip = [\"127.0.0.1/32\"]\nagents = {agents:?}\nrtp = [\"127.0.0.0/8\"]\n\
             [trunk]\ntermination = \"127.0.0.1:9\"\n\
             [callbacks]\npoll_interval_ms = 200\n\
             [registrar]\nrealm = \"callbackd.test\"\n\
             [[queues]]\nid = \"support\"\ncallback_number = \"3125550100\"\n\
             [[agents]]\nid = \"bob\"\nuser = \"bob\"\npassword = \"s3cret\"\nqueues = [\"support\"]\n"
        );
        let extra = Config::from_toml_str(&text, "edge-test").expect("valid agent config");
        c.acl = extra.acl;
        c.trunk = extra.trunk;
        c.callbacks = extra.callbacks;
        c.registrar = extra.registrar;
        c.queues = extra.queues;
        c.agents = extra.agents;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_outside_the_trunk_list_registers_gets_a_callback_and_its_invite_gets_403() {
    let config = agent_config(301, &["127.0.0.7/32"]);
    let engine = common::start(config.clone()).await;
    let udp = engine.udp_addr().expect("UDP");

    // Outside every list: refused at the socket.
    let mut stranger = Phone {
        ua: ua_on("127.0.0.8", udp).await,
        cseq: 0,
    };
    assert_eq!(stranger.register("s3cret").await.status, 403);

    // In the agents' list only: registers with digest.
    let mut phone = Phone {
        ua: ua_on("127.0.0.7", udp).await,
        cseq: 0,
    };
    assert_eq!(phone.register("s3cret").await.status, 200);
    let agents = engine.agents().await.expect("agents");
    assert!(
        agents
            .iter()
            .any(|a| a.id.to_string() == "bob" && a.reachable),
        "{agents:?}"
    );

    // A callback is due: the engine calls the agent where it registered.
    let _id = register(&config, NUMBER);
    let invite: Request = loop {
        match phone
            .ua
            .try_recv(WAIT)
            .await
            .expect("the callback's INVITE")
        {
            Message::Request(r) if r.method.as_str() == "INVITE" => break r,
            _ => continue,
        }
    };
    assert!(invite.uri.contains("bob@127.0.0.7"), "{}", invite.uri);
    let busy = common::response_to(&invite, 486, "Busy Here");
    phone.ua.send(busy).await;

    // Its own INVITE is not a call: 403.
    let dialog = phone.ua.dialog();
    phone
        .ua
        .send(dialog.invite(1, &branch(), Some(&common::pcmu_offer(4000))))
        .await;
    let r = phone.ua.final_response(1, "INVITE").await;
    assert_eq!(r.status, 403, "INVITE from an agent-only source");
    // The trunk side still places calls.
    let trunk = Ua::new(udp).await;
    let r = options(&trunk, WAIT).await.expect("OPTIONS answered");
    assert_eq!(r.status, 200);
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// Trunk addresses from DNS
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_address_from_dns_is_allowed_after_the_next_lookup() {
    let dns = FakeDns::start(
        vec![("carrier.test.", Zone::A(Ipv4Addr::new(127, 0, 0, 5)))],
        Duration::ZERO,
    );
    let mut config = common::config(302, |_| {});
    config.trunk = Config::from_toml_str(
        "[trunk]\ntermination = \"carrier.test:5090\"\n",
        "edge-test",
    )
    .expect("trunk")
    .trunk;
    config.trunk.dns_servers = vec![dns.addr];
    let engine = common::start(config).await;
    let udp = engine.udp_addr().expect("UDP");

    // The carrier's SBC is in no list and the name does not resolve yet.
    let carrier = ua_on("127.0.0.5", udp).await;
    assert_eq!(options(&carrier, WAIT).await.map(|r| r.status), Some(403));
    assert_eq!(status(&engine).await.edge.trunk_targets, 0);

    // The name resolves at the next lookup: its address is a trunk now.
    dns.set_up(true);
    wait_edge(&engine, "the resolved address allowed", |s| {
        s.edge.trunk_targets == 1
    })
    .await;
    assert_eq!(options(&carrier, WAIT).await.map(|r| r.status), Some(200));
    let dialog = carrier.dialog();
    carrier
        .send(dialog.invite(1, &branch(), Some(&common::pcmu_offer(4002))))
        .await;
    let r = carrier.final_response(1, "INVITE").await;
    assert_eq!(r.status, 200, "the carrier may place calls");
    let mut dialog = dialog;
    dialog.learn_tag(&r);
    carrier
        .send(dialog.request("ACK", 1, &branch(), None))
        .await;
    carrier.bye(&dialog, 2).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// Capacity
// ---------------------------------------------------------------------------

/// `callbackd check-config` under an open-files limit of `limit` (set by the
/// shell, soft and hard, before it runs the binary).
fn check_config(limit: u32, config: &str) -> std::process::Output {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("edge-capacity-{}-{limit}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("config.toml");
    let prompts = common::repo().join("prompts");
    std::fs::write(
        &file,
        format!("[prompts]\ndir = '{}'\n{config}", prompts.display()),
    )
    .expect("write config");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {limit} && exec \"$0\" check-config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_callbackd"))
        .arg(&file)
        .output()
        .expect("run check-config");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn check_config_prints_the_capacity_and_refuses_max_calls_over_it() {
    let config = "[rtp]\nport_min = 20000\nport_max = 20999\n[call]\nmax_calls = 200\n";
    // 4,096 files: 256 reserved + 1,024 TCP leave 1,408 sockets, 1,408
    // media streams; the 500 port pairs are the limit.
    let out = check_config(4096, config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "capacity: 500 media streams (open files 4096 - 1280 reserved = 1408 streams; RTP ports 500 pairs)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("470 inbound calls fit"), "{stdout}");
    // 1,500 files leave 110 streams: 200 calls + 30 callback legs do not fit.
    let out = check_config(1500, config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted under 1,500 files");
    assert!(
        stderr.contains(
            "call.max_calls: 200 calls + 30 callback legs need more media streams than the 110"
        ),
        "{stderr}"
    );
    // The RTP range counts the callback legs too: 50 pairs do not hold
    // 30 calls + 30 legs, whatever the open-files limit.
    let out = check_config(
        4096,
        "[rtp]\nport_min = 20000\nport_max = 20099\n[call]\nmax_calls = 30\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted 30 calls + 30 legs on 50 pairs"
    );
    assert!(
        stderr.contains(
            "call.max_calls: 30 calls + 30 callback legs need more RTP port pairs than the 50"
        ),
        "{stderr}"
    );
    // Fewer calls fit again.
    let out = check_config(1500, "[call]\nmax_calls = 80\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
