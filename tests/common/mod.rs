//! A small hand-written SIP/RTP user agent for the engine's integration
//! tests: SIP text is built by hand, responses are parsed with the crate's
//! parser, RTP is read on plain blocking sockets so arrival times are taken
//! right at the socket. Traffic goes to 127.0.0.0/8 only and every wait is
//! bounded.

#![allow(dead_code)]

pub mod dialing;
pub mod dns;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use callbackd::config::Config;
use callbackd::engine::{self, EngineHandle, EngineStats};
use callbackd::media::g711::Law;
use callbackd::media::prompt::{Frames, PromptLibrary, Ptime, STANDARD_PROMPTS, silence_frame};
use callbackd::sip::message::{self, HeaderName, Message, Request, Response};

/// Tests that measure packet timing hold this exclusively, every other test
/// shares it: the timing tests then run while this binary's other engines
/// are idle (the machine may still be busy with other work).
pub static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Longest wait for any single SIP message.
pub const WAIT: Duration = Duration::from_secs(5);

/// The repository root (prompts live in `<root>/prompts`).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The first RTP port of test number `slot` (ranges never overlap).
pub fn rtp_base(slot: u16) -> u16 {
    31_000 + 100 * slot
}

/// A test configuration: SIP on 127.0.0.1 (port 0 after validation), T1 =
/// 50 ms so transactions end within 64·T1 = 3.2 s, RTP ports
/// `rtp_base(slot)..+99`; `tweak` changes anything else.
pub fn config(slot: u16, tweak: impl FnOnce(&mut Config)) -> Config {
    let min = rtp_base(slot);
    // Each test its own callback store, fresh every run.
    let store = std::env::temp_dir().join(format!(
        "callbackd-engine-test-{}-{slot}.sqlite",
        std::process::id()
    ));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let text = format!(
        "[sip]\nbind = \"127.0.0.1:5060\"\nt1_ms = 50\nt2_ms = 400\nt4_ms = 500\n\
         [rtp]\nport_min = {min}\nport_max = {}\n\
         [call]\nmax_calls = 20\n\
         [store]\npath = {:?}\n",
        min + 99,
        store.display().to_string()
    );
    let mut config = Config::from_toml_str(&text, "test.toml").expect("valid test config");
    // A file may not ask for port 0 (a daemon must listen somewhere known);
    // code may, and the engine reports the port it got.
    config.bind_ephemeral_sip_port();
    // Tests run at any hour: customers may be called around the clock
    // (the calling window has tests of its own).
    config.org.calling_window = "00:00-24:00".into();
    tweak(&mut config);
    config
}

/// Starts an engine on `config` with the repository's prompts.
pub async fn start(config: Config) -> TestEngine {
    let files = StoreFiles::of(&config);
    let settings = config.check(repo()).expect("valid config");
    TestEngine::new(engine::start(settings).await.expect("engine starts"), files)
}

/// A running engine and its store file, removed when the test is done with
/// the engine (passed or failed). Everything else is the handle's.
pub struct TestEngine {
    handle: EngineHandle,
    _files: StoreFiles,
}

impl TestEngine {
    /// `handle`, whose store is `files`.
    pub fn new(handle: EngineHandle, files: StoreFiles) -> TestEngine {
        TestEngine {
            handle,
            _files: files,
        }
    }

    /// Stops the engine ([`EngineHandle::shutdown`]), then removes its store.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

impl std::ops::Deref for TestEngine {
    type Target = EngineHandle;

    fn deref(&self) -> &EngineHandle {
        &self.handle
    }
}

/// Removes a test's store file (and its WAL and shared-memory files) when
/// dropped, whether the test passed or failed: runs leave nothing in the
/// temporary directory. Set `CALLBACKD_KEEP_TEST_FILES=1` to keep them for
/// a post-mortem.
pub struct StoreFiles(pub PathBuf);

impl StoreFiles {
    /// The store of `config`.
    pub fn of(config: &Config) -> StoreFiles {
        StoreFiles(config.store_path(repo()))
    }
}

impl Drop for StoreFiles {
    fn drop(&mut self) {
        if std::env::var_os("CALLBACKD_KEEP_TEST_FILES").is_some() {
            eprintln!("store kept: {}", self.0.display());
            return;
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// How often the `wait_*` helpers look again at a condition that nothing
/// notifies (a counter, a log line, a thread count).
pub const POLL: Duration = Duration::from_millis(10);

/// Waits until `check` yields a value, or panics naming `what` after
/// `within`. Checked first at once, then every [`POLL`].
pub async fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not after {within:?}");
        // The poll interval of a wait on a condition, not a wait by itself.
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the future `cond` makes resolves to true, or panics naming
/// `what` after `within`.
pub async fn wait_until_async<F: std::future::Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not after {within:?}");
        // The poll interval of a wait on a condition, not a wait by itself.
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `cond` holds, or panics naming `what` after `within`.
pub async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(within, what, || cond().then_some(())).await;
}

/// Polls the engine's counters until every one is zero (calls, transactions,
/// timers, RTP ports), or panics with the last value after `within`.
pub async fn wait_idle(engine: &EngineHandle, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let stats = engine.stats().await.expect("engine running");
        if stats == EngineStats::default() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "engine not idle after {within:?}: {stats:?}"
        );
        // Poll interval: the engine does not notify idleness.
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until `check(stats)` holds, or panics after `within`.
pub async fn wait_stats(
    engine: &EngineHandle,
    within: Duration,
    what: &str,
    check: impl Fn(&EngineStats) -> bool,
) -> EngineStats {
    let deadline = Instant::now() + within;
    loop {
        let stats = engine.stats().await.expect("engine running");
        if check(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached after {within:?}: {stats:?}"
        );
        // Poll interval: the engine does not notify counter changes.
        tokio::time::sleep(POLL).await;
    }
}

/// A unique token for tags, branches and Call-IDs.
pub fn token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// One SIP dialog as the test UA sees it.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our (From) tag.
    pub from_tag: String,
    /// The engine's (To) tag, once known.
    pub to_tag: Option<String>,
    /// Our address (for Via and Contact).
    pub local: SocketAddr,
    /// The engine's SIP address.
    pub engine: SocketAddr,
    /// "UDP" or "TCP".
    pub transport: &'static str,
}

impl Dialog {
    /// A new dialog (no To-tag yet).
    pub fn new(local: SocketAddr, engine: SocketAddr, transport: &'static str) -> Dialog {
        Dialog {
            call_id: format!("{}@test", token()),
            from_tag: token(),
            to_tag: None,
            local,
            engine,
            transport,
        }
    }

    /// A request in (or opening) this dialog, with a fresh branch unless
    /// `branch` is given.
    pub fn request(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        body: Option<(&str, &str)>,
    ) -> String {
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let transport_param = if self.transport == "TCP" {
            ";transport=tcp"
        } else {
            ""
        };
        let (content_type, body) = match body {
            Some((ct, b)) => (format!("Content-Type: {ct}\r\n"), b),
            None => (String::new(), ""),
        };
        format!(
            "{method} sip:callback@{engine}{transport_param} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Test\" <sip:alice@{local_ip}>;tag={from_tag}\r\n\
             To: <sip:callback@{engine_ip}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:alice@{local}{transport_param}>\r\n\
             User-Agent: callbackd-engine-test\r\n\
             {content_type}\
             Content-Length: {len}\r\n\r\n{body}",
            engine = self.engine,
            transport = self.transport,
            local = self.local,
            local_ip = self.local.ip(),
            engine_ip = self.engine.ip(),
            from_tag = self.from_tag,
            call_id = self.call_id,
            len = body.len(),
        )
    }

    /// An INVITE with an SDP offer (or none for a late offer).
    pub fn invite(&self, cseq: u32, branch: &str, sdp: Option<&str>) -> String {
        self.request("INVITE", cseq, branch, sdp.map(|s| ("application/sdp", s)))
    }

    /// Remembers the engine's To-tag from a response.
    pub fn learn_tag(&mut self, response: &Response) {
        let tag = response
            .headers
            .to
            .tag
            .as_deref()
            .expect("the engine's response carries a To-tag");
        self.to_tag = Some(tag.to_owned());
    }
}

/// A fresh RFC 3261 branch.
pub fn branch() -> String {
    format!("z9hG4bK-{}", token())
}

/// A hand-built response to a request the engine sent (e.g. its BYE).
pub fn response_to(req: &Request, status: u16, reason: &str) -> String {
    let mut text = format!("SIP/2.0 {status} {reason}\r\n");
    for via in &req.headers.vias {
        text.push_str(&format!("Via: {}\r\n", via.raw));
    }
    let to = if req.headers.to.tag.is_some() {
        req.headers.to.raw.to_string()
    } else {
        format!("{};tag={}", req.headers.to.raw, token())
    };
    text.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContent-Length: 0\r\n\r\n",
        req.headers.from.raw,
        req.headers.call_id.as_str(),
        req.headers.cseq.seq,
        req.headers.cseq.method.as_str(),
    ));
    text
}

/// An SDP offer/answer body: one audio stream on 127.0.0.1:`port` with the
/// given formats and attribute lines.
pub fn sdp(version: u32, port: u16, formats: &str, attributes: &[&str]) -> String {
    let mut text = format!(
        "v=0\r\no=alice 4242 {version} IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 127.0.0.1\r\n\
         t=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n"
    );
    for a in attributes {
        text.push_str(a);
        text.push_str("\r\n");
    }
    text
}

/// A PCMU (0) + telephone-event (101) offer.
pub fn pcmu_offer(port: u16) -> String {
    sdp(
        1,
        port,
        "0 101",
        &[
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=sendrecv",
        ],
    )
}

/// A PCMA (8) + telephone-event (101) offer.
pub fn pcma_offer(port: u16) -> String {
    sdp(
        1,
        port,
        "8 101",
        &[
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=sendrecv",
        ],
    )
}

/// What the tests read from the engine's SDP.
#[derive(Debug, Clone, Default)]
pub struct SdpInfo {
    /// The c= address.
    pub connection: String,
    /// The m=audio port.
    pub port: u16,
    /// The m=audio formats, in order.
    pub formats: Vec<u8>,
    /// Every a= line (without "a=").
    pub attributes: Vec<String>,
}

impl SdpInfo {
    /// Reads an SDP body by hand (not with the crate's parser, so a parser
    /// bug cannot hide an answer bug).
    pub fn parse(body: &[u8]) -> SdpInfo {
        let text = std::str::from_utf8(body).expect("SDP is UTF-8");
        let mut info = SdpInfo::default();
        for line in text.lines() {
            if let Some(c) = line.strip_prefix("c=IN IP4 ") {
                info.connection = c.trim().to_owned();
            } else if let Some(m) = line.strip_prefix("m=audio ") {
                let mut parts = m.split_whitespace();
                info.port = parts.next().expect("m= port").parse().expect("port");
                assert_eq!(parts.next(), Some("RTP/AVP"), "m= proto in {text}");
                info.formats = parts.map(|f| f.parse().expect("format")).collect();
            } else if let Some(a) = line.strip_prefix("a=") {
                info.attributes.push(a.trim().to_owned());
            }
        }
        assert!(info.port != 0, "no m=audio in {text}");
        info
    }

    /// Whether `a=<attr>` is present.
    pub fn has(&self, attr: &str) -> bool {
        self.attributes.iter().any(|a| a == attr)
    }

    /// The encoding name of an rtpmap for `pt`, upper-cased.
    pub fn rtpmap(&self, pt: u8) -> Option<String> {
        let prefix = format!("rtpmap:{pt} ");
        self.attributes
            .iter()
            .find_map(|a| a.strip_prefix(&prefix))
            .map(|v| v.to_ascii_uppercase())
    }
}

/// A SIP UA on a UDP socket bound to 127.0.0.1:0.
pub struct Ua {
    /// The socket.
    pub sock: UdpSocket,
    /// Its address.
    pub local: SocketAddr,
    /// The engine's SIP address.
    pub engine: SocketAddr,
}

impl Ua {
    /// A UA talking to `engine`.
    pub async fn new(engine: SocketAddr) -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind UA");
        let local = sock.local_addr().expect("UA address");
        Ua {
            sock,
            local,
            engine,
        }
    }

    /// A new dialog from this UA.
    pub fn dialog(&self) -> Dialog {
        Dialog::new(self.local, self.engine, "UDP")
    }

    /// Sends a datagram to the engine.
    pub async fn send(&self, data: impl AsRef<[u8]>) {
        self.sock
            .send_to(data.as_ref(), self.engine)
            .await
            .expect("send to the engine");
    }

    /// The next SIP message within `within`, or `None`.
    pub async fn try_recv(&self, within: Duration) -> Option<Message> {
        let mut buf = vec![0u8; 65_536];
        let (len, _) = timeout(within, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .expect("UA receive");
        match message::parse(&buf[..len]) {
            Ok(m) => Some(m),
            Err(e) => panic!(
                "engine sent unparsable SIP ({:?}): {}",
                e.error,
                String::from_utf8_lossy(&buf[..len])
            ),
        }
    }

    /// The first message satisfying `pred` within [`WAIT`]; others are
    /// skipped (retransmissions, 100 Trying).
    pub async fn recv_where(&self, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.try_recv(left).await else {
                panic!("no {what} within {WAIT:?}");
            };
            if pred(&m) {
                return m;
            }
        }
    }

    /// The first final response for CSeq `seq`/`method`.
    pub async fn final_response(&self, seq: u32, method: &str) -> Response {
        match self
            .recv_where(&format!("final response to {seq} {method}"), |m| {
                is_final_for(m, seq, method)
            })
            .await
        {
            Message::Response(r) => r,
            Message::Request(_) => unreachable!("predicate accepts responses only"),
        }
    }

    /// The first request with `method` from the engine.
    pub async fn request(&self, method: &str) -> Request {
        match self
            .recv_where(
                &format!("{method} from the engine"),
                |m| matches!(m, Message::Request(r) if r.method.as_str() == method),
            )
            .await
        {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!("predicate accepts requests only"),
        }
    }

    /// Sends INVITE with `sdp`, expects 100 then 200, sends ACK; returns the
    /// dialog and the 200.
    pub async fn call(&self, sdp: Option<&str>) -> (Dialog, Response) {
        let mut dialog = self.dialog();
        self.send(dialog.invite(1, &branch(), sdp)).await;
        let ok = self.final_response(1, "INVITE").await;
        assert_eq!(ok.status, 200, "INVITE answered {}", ok.status);
        dialog.learn_tag(&ok);
        self.send(dialog.request("ACK", 1, &branch(), None)).await;
        (dialog, ok)
    }

    /// Sends BYE (CSeq `seq`) and expects 200.
    pub async fn bye(&self, dialog: &Dialog, seq: u32) {
        self.send(dialog.request("BYE", seq, &branch(), None)).await;
        let r = self.final_response(seq, "BYE").await;
        assert_eq!(r.status, 200, "BYE answered {}", r.status);
    }
}

/// Whether `m` is a final response for CSeq `seq`/`method`.
pub fn is_final_for(m: &Message, seq: u32, method: &str) -> bool {
    matches!(m, Message::Response(r)
        if r.status >= 200 && r.headers.cseq.seq == seq && r.headers.cseq.method.as_str() == method)
}

/// The first value of header field `name` (known or not), by its full
/// name, case-insensitively.
pub fn header<'a>(headers: &'a message::Headers, name: &str) -> Option<&'a str> {
    headers
        .fields()
        .iter()
        .find(|f| {
            f.name.as_str().eq_ignore_ascii_case(name)
                || f.other_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|f| &*f.value)
}

/// The Contact header of a message.
pub fn contact(headers: &message::Headers) -> Option<&str> {
    headers.get(HeaderName::Contact)
}

/// A SIP UA over one TCP connection, with Content-Length framing.
pub struct TcpUa {
    /// The connection.
    pub stream: TcpStream,
    /// Our end of it.
    pub local: SocketAddr,
    /// The engine's end.
    pub engine: SocketAddr,
    buf: Vec<u8>,
}

impl TcpUa {
    /// Connects to the engine.
    pub async fn connect(engine: SocketAddr) -> TcpUa {
        let stream = timeout(WAIT, TcpStream::connect(engine))
            .await
            .expect("connect in time")
            .expect("connect to the engine");
        let local = stream.local_addr().expect("local address");
        TcpUa {
            stream,
            local,
            engine,
            buf: Vec::new(),
        }
    }

    /// A new dialog over this connection.
    pub fn dialog(&self) -> Dialog {
        Dialog::new(self.local, self.engine, "TCP")
    }

    /// Writes a message.
    pub async fn send(&mut self, data: impl AsRef<[u8]>) {
        self.stream
            .write_all(data.as_ref())
            .await
            .expect("write to the engine");
    }

    /// The next framed message within [`WAIT`].
    pub async fn recv(&mut self) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(len) = frame_len(&self.buf) {
                let frame: Vec<u8> = self.buf.drain(..len).collect();
                return message::parse(&frame).unwrap_or_else(|e| {
                    panic!(
                        "engine sent unparsable SIP ({:?}): {}",
                        e.error,
                        String::from_utf8_lossy(&frame)
                    )
                });
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("a SIP message over TCP in time")
                .expect("TCP read");
            assert!(n > 0, "engine closed the TCP connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The first final response for CSeq `seq`/`method`.
    pub async fn final_response(&mut self, seq: u32, method: &str) -> Response {
        loop {
            let m = self.recv().await;
            if is_final_for(&m, seq, method)
                && let Message::Response(r) = m
            {
                return r;
            }
        }
    }
}

/// The length of the first complete message in `buf` (headers, blank line,
/// Content-Length bytes of body), if it is all there. Leading CRLF
/// keep-alives count as part of the message and are skipped by the parser.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).expect("SIP headers are UTF-8");
    let length =
        head.lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                let name = name.trim();
                (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                    .then(|| {
                        value
                            .trim()
                            .parse::<usize>()
                            .expect("numeric Content-Length")
                    })
            })
            .expect("Content-Length on a TCP message");
    (buf.len() >= end + length).then_some(end + length)
}

/// One received RTP packet.
#[derive(Debug, Clone)]
pub struct Rtp {
    /// When it arrived (taken right after the receive call).
    pub at: Instant,
    /// Where from.
    pub from: SocketAddr,
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Reads a 12-byte RTP header by hand (no CSRC, no extension, no padding:
/// the engine sends none of them).
pub fn parse_rtp(data: &[u8], at: Instant, from: SocketAddr) -> Rtp {
    assert!(data.len() >= 12, "short RTP packet: {} bytes", data.len());
    assert_eq!(data[0], 0x80, "V=2, no padding/extension/CSRC expected");
    Rtp {
        at,
        from,
        marker: data[1] & 0x80 != 0,
        pt: data[1] & 0x7f,
        seq: u16::from_be_bytes([data[2], data[3]]),
        ts: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        payload: data[12..].to_vec(),
    }
}

/// An RTP socket of the test UA (blocking std socket, read on a blocking
/// thread so arrival times are not delayed by the async scheduler).
#[derive(Clone)]
pub struct RtpSock {
    /// The socket.
    pub sock: Arc<StdUdpSocket>,
    /// Its address.
    pub local: SocketAddr,
    /// The RTCP port (RTP + 1), held so that no other socket of the test —
    /// its SIP socket, on another ephemeral port — can be given it and
    /// receive the engine's RTCP (RFC 3550 §11 sends it there).
    _rtcp: Arc<StdUdpSocket>,
}

impl RtpSock {
    /// Binds an RTP port on `ip` and RTCP on the next one, as a phone does.
    pub fn bind(ip: &str) -> RtpSock {
        for _ in 0..64 {
            let sock = StdUdpSocket::bind((ip, 0)).expect("bind RTP socket");
            let local = sock.local_addr().expect("RTP address");
            let Some(next) = local.port().checked_add(1) else {
                continue;
            };
            let Ok(rtcp) = StdUdpSocket::bind((ip, next)) else {
                continue;
            };
            sock.set_read_timeout(Some(Duration::from_millis(10)))
                .expect("read timeout");
            return RtpSock {
                sock: Arc::new(sock),
                local,
                _rtcp: Arc::new(rtcp),
            };
        }
        panic!("no free RTP/RTCP port pair on {ip}");
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// Starts reading at once; the handle yields every packet arriving
    /// during `for_`.
    pub fn capture(&self, for_: Duration) -> tokio::task::JoinHandle<Vec<Rtp>> {
        let sock = self.sock.clone();
        tokio::task::spawn_blocking(move || {
            let end = Instant::now() + for_;
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                match sock.recv_from(&mut buf) {
                    Ok((len, from)) => out.push(parse_rtp(&buf[..len], Instant::now(), from)),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("RTP receive: {e}"),
                }
            }
            out
        })
    }

    /// Drops whatever is queued.
    pub fn drain(&self) {
        let mut buf = [0u8; 2048];
        while self.sock.recv_from(&mut buf).is_ok() {}
    }

    /// Sends `count` PCMU packets of silence to `to` (SSRC `ssrc`).
    pub fn send_rtp(&self, to: SocketAddr, ssrc: u32, pt: u8, count: u16) {
        for i in 0..count {
            let mut packet = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            packet[2..4].copy_from_slice(&(1000 + i).to_be_bytes());
            packet[4..8].copy_from_slice(&(u32::from(i) * 160).to_be_bytes());
            packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
            packet.extend_from_slice(&[0xff; 160]);
            self.sock.send_to(&packet, to).expect("send RTP");
        }
    }
}

/// How late this process's threads wake up while a measurement runs: a
/// thread sleeping 1 ms in a loop records its oversleep, to tell a stalled
/// machine from a badly paced sender.
pub struct Canary;

/// What the canary saw.
#[derive(Debug, Clone, Copy)]
pub struct Stalls {
    /// Worst oversleep, ms.
    pub worst_ms: f64,
    /// Wake-ups more than 2 ms late.
    pub over_2ms: usize,
}

impl std::fmt::Display for Stalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "canary: worst oversleep {:.2} ms, {} wake-ups > 2 ms late",
            self.worst_ms, self.over_2ms
        )
    }
}

impl Canary {
    /// Runs for `for_` on a blocking thread.
    pub fn start(for_: Duration) -> tokio::task::JoinHandle<Stalls> {
        tokio::task::spawn_blocking(move || {
            let end = Instant::now() + for_;
            let mut stalls = Stalls {
                worst_ms: 0.0,
                over_2ms: 0,
            };
            while Instant::now() < end {
                let before = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                let late = (before.elapsed().as_secs_f64() - 0.001) * 1000.0;
                stalls.worst_ms = stalls.worst_ms.max(late);
                stalls.over_2ms += usize::from(late > 2.0);
            }
            stalls
        })
    }
}

/// The engine's RTP address from its SDP.
pub fn media_addr(info: &SdpInfo) -> SocketAddr {
    SocketAddr::new(info.connection.parse().expect("c= is an IP"), info.port)
}

/// The p-th percentile (0..=100) of `values` (sorted copy).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The prompt directory's path.
pub fn prompts_dir() -> PathBuf {
    repo().join("prompts")
}

/// Everything the engine sends to one RTP socket, read on a thread of its
/// own until dropped (or until `within` has passed), and readable while it
/// runs: a test can wait for a prompt and then react.
pub struct Listener {
    packets: Arc<std::sync::Mutex<Vec<Rtp>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Starts reading `sock` at once, for at most `within`.
    pub fn start(sock: &RtpSock, within: Duration) -> Listener {
        let packets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sock = sock.sock.clone();
        let thread = {
            let packets = packets.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("test-rtp-listener".into())
                .spawn(move || {
                    let end = Instant::now() + within;
                    let mut buf = [0u8; 2048];
                    while Instant::now() < end && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match sock.recv_from(&mut buf) {
                            Ok((len, from)) => {
                                let packet = parse_rtp(&buf[..len], Instant::now(), from);
                                packets.lock().expect("listener lock").push(packet);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(e) => panic!("RTP receive: {e}"),
                        }
                    }
                })
                .expect("start the RTP listener")
        };
        Listener {
            packets,
            stop,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the packets received so far.
    pub fn with<R>(&self, f: impl FnOnce(&[Rtp]) -> R) -> R {
        f(&self.packets.lock().expect("listener lock"))
    }

    /// Packets received so far.
    pub fn len(&self) -> usize {
        self.with(<[Rtp]>::len)
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// [`Segment::name`] of a run of silence-coded frames that belong to no prompt.
pub const SILENCE: &str = "silence";
/// [`Segment::name`] of a run of frames that match no prompt.
pub const UNKNOWN: &str = "unknown";

/// A stretch of received audio identified as (part of) one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The prompt's name ([`STANDARD_PROMPTS`] spelling), or [`SILENCE`] /
    /// [`UNKNOWN`].
    pub name: &'static str,
    /// Index of its first packet among the audio packets.
    pub start: usize,
    /// Frames received.
    pub frames: usize,
    /// Frames the prompt has (for [`SILENCE`]/[`UNKNOWN`]: `frames`). Hold
    /// music loops: consecutive rounds form one segment of `frames` >
    /// `total`.
    pub total: usize,
}

impl Segment {
    /// The whole prompt was received (or more, for looping hold music).
    pub fn complete(&self) -> bool {
        self.frames >= self.total
    }
}

/// A prompt cut short (by barge-in, or still playing at the end of the
/// capture) must match at least this many frames to count; fewer are
/// [`UNKNOWN`]. So a prompt is "heard" once 60 ms of it arrived.
pub const MIN_PARTIAL_FRAMES: usize = 3;

/// What the caller hears, as the sequence of prompt names (see [`segments`]).
pub fn heard(packets: &[Rtp], lib: &PromptLibrary, law: Law) -> Vec<&'static str> {
    segments(packets, lib, law).iter().map(|s| s.name).collect()
}

/// Splits the received audio (packets of `law`'s static payload type, in
/// arrival order) into the prompts it is made of, by comparing payloads
/// with the library's pre-encoded frames at the received packet time.
///
/// At each packet the prompt whose frames match the longest run from there
/// wins; a run shorter than the prompt (stopped by barge-in, or still
/// playing) counts only when it has at least [`MIN_PARTIAL_FRAMES`] frames. Several prompts with the
/// very same audio (`digit_N` and `number_N` are one recording) are told
/// apart by context: after "about"/"more than" it is a number, elsewhere a
/// digit. Silence-coded frames outside prompts become [`SILENCE`], anything
/// else [`UNKNOWN`]; consecutive rounds of hold music are one segment.
pub fn segments(packets: &[Rtp], lib: &PromptLibrary, law: Law) -> Vec<Segment> {
    let audio: Vec<&[u8]> = packets
        .iter()
        .filter(|p| p.pt == law.payload_type())
        .map(|p| p.payload.as_slice())
        .collect();
    let Some(first) = audio.first() else {
        return Vec::new();
    };
    let ptime = u16::try_from(first.len() / 8)
        .ok()
        .and_then(Ptime::from_ms)
        .unwrap_or_else(|| panic!("audio payload of {} bytes is no packet time", first.len()));
    let silence = silence_frame(law, ptime);
    let prompts: Vec<(&'static str, Frames<'_>)> = STANDARD_PROMPTS
        .iter()
        .filter_map(|&name| {
            let id = lib.id(name)?;
            Some((name, lib.frames(id, law, ptime)?))
        })
        .collect();
    let mut out: Vec<Segment> = Vec::new();
    let mut i = 0;
    while i < audio.len() {
        // The longest run of matching frames from `i`, per prompt.
        let mut best = 0;
        let mut candidates: Vec<(&'static str, usize)> = Vec::new();
        for &(name, frames) in &prompts {
            let run = frames
                .iter()
                .zip(&audio[i..])
                .take_while(|(want, got)| *want == **got)
                .count();
            if run == 0 || run < best {
                continue;
            }
            if run > best {
                best = run;
                candidates.clear();
            }
            candidates.push((name, frames.len()));
        }
        let acceptable = best > 0
            && candidates
                .iter()
                .any(|&(_, total)| best >= total.min(MIN_PARTIAL_FRAMES));
        if !acceptable {
            let name = if audio[i] == silence {
                SILENCE
            } else {
                UNKNOWN
            };
            match out.last_mut() {
                Some(last) if last.name == name && last.start + last.frames == i => {
                    last.frames += 1;
                    last.total += 1;
                }
                _ => out.push(Segment {
                    name,
                    start: i,
                    frames: 1,
                    total: 1,
                }),
            }
            i += 1;
            continue;
        }
        let after_about = out
            .last()
            .is_some_and(|s| s.name == "ecbt_about" || s.name == "ecbt_more_than");
        let preferred = if after_about { "number_" } else { "digit_" };
        let &(name, total) = candidates
            .iter()
            .find(|(n, _)| n.starts_with(preferred))
            .unwrap_or(&candidates[0]);
        match out.last_mut() {
            // Hold music loops: the next round continues the segment.
            Some(last) if name == "hold_music" && last.name == name && last.complete() => {
                last.frames += best;
            }
            _ => out.push(Segment {
                name,
                start: i,
                frames: best,
                total,
            }),
        }
        i += best;
    }
    out
}

/// Where `run` occurs as consecutive items of `seq`, if it does.
pub fn find_run(seq: &[&str], run: &[&str]) -> Option<usize> {
    if run.is_empty() {
        return Some(0);
    }
    seq.windows(run.len()).position(|w| w == run)
}

/// How often `name` occurs in `seq`.
pub fn count(seq: &[&str], name: &str) -> usize {
    seq.iter().filter(|n| **n == name).count()
}

/// Log lines captured from a `tracing` subscriber (tests read what the
/// engine logs, e.g. the digits it counted).
#[derive(Clone, Default)]
pub struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuf {
    /// Captured lines containing every one of `needles`.
    pub fn lines(&self, needles: &[&str]) -> Vec<String> {
        let bytes = self.0.lock().expect("log lock").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for LogBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;

    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}
