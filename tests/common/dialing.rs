//! The kit of the calling-back tests (`tests/dialing*.rs`): a scripted SIP
//! UA that plays the agent's phone or the carrier ([`Peer`]: answers, rings,
//! rejects, challenges, sends early media, puts the call on hold, hangs up;
//! sends and records RTP), the engine configuration for one queue, one
//! trunk and its agents ([`Setup`]), and readers of the callback store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::net::UdpSocket;

use callbackd::callback::cdr::{CdrRecord, Leg};
use callbackd::callback::store::{
    AttemptRow, CallbackRow, LaunchStore, NewCallback, Registration, SqliteStore, Status, Store,
};
use callbackd::callback::{CallbackId, QueueId};
use callbackd::config::Config;
use callbackd::engine;
use callbackd::media::g711::Law;
use callbackd::media::prompt::PromptLibrary;
use callbackd::sip::message::{self, Message, Request, Response};

use super::{Listener, Rtp, RtpSock, SdpInfo, find_run, media_addr, repo, rtp_base};

/// The customer's number as stored (NANP digits).
pub const NUMBER: &str = "3125550188";
/// The queue's callback number (caller ID).
pub const CALLER_ID: &str = "3125550100";
/// What the carrier's RTP payloads are filled with (PCMU, not silence).
pub const CARRIER_FILL: u8 = 0x11;
/// What the agent's RTP payloads are filled with.
pub const AGENT_FILL: u8 = 0x22;
/// The whisper the agent must hear: "callback for" and the number's digits.
pub const WHISPER: [&str; 11] = [
    "agent_whisper",
    "digit_3",
    "digit_1",
    "digit_2",
    "digit_5",
    "digit_5",
    "digit_5",
    "digit_0",
    "digit_1",
    "digit_8",
    "digit_8",
];
/// Longest wait for something the engine should do "soon".
pub const SOON: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Engine configuration and store helpers
// ---------------------------------------------------------------------------

/// What a test varies in the dialing configuration.
pub struct Setup {
    pub slot: u16,
    pub agents: Vec<(String, String)>,
    /// The trunk's termination (`host[:port]`).
    pub termination: String,
    pub poll_ms: u64,
    pub retry_time_s: u64,
    pub max_retries: u32,
    pub agent_ring_timeout_s: u64,
    pub customer_ring_timeout_s: u64,
    pub agent_cooldown_s: u64,
    /// The trunk's calls-per-second cap.
    pub cps_limit: f64,
    /// Another test's store file instead of this slot's own.
    pub store: Option<PathBuf>,
}

impl Setup {
    pub fn new(slot: u16, agents: &[(&str, &Peer)], carrier: &Peer) -> Setup {
        Setup {
            slot,
            agents: agents
                .iter()
                .map(|(id, peer)| ((*id).to_owned(), peer.uri()))
                .collect(),
            termination: carrier.sip_addr().to_string(),
            poll_ms: 200,
            retry_time_s: 2,
            max_retries: 3,
            agent_ring_timeout_s: 2,
            customer_ring_timeout_s: 3,
            agent_cooldown_s: 60,
            cps_limit: 100.0,
            store: None,
        }
    }

    /// The configuration: super::config's (SIP on port 0, T1 50 ms, RTP
    /// range of the slot, a fresh store file) plus trunk, agents, callbacks
    /// and one queue.
    pub fn config(&self) -> Config {
        let min = rtp_base(self.slot);
        let store = self.store.clone().unwrap_or_else(|| {
            // The path super::config would choose, emptied.
            let path = std::env::temp_dir().join(format!(
                "callbackd-dialing-test-{}-{}.sqlite",
                std::process::id(),
                self.slot
            ));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            path
        });
        let mut text = format!(
            "[sip]\nbind = \"127.0.0.1:5060\"\nt1_ms = 50\nt2_ms = 400\nt4_ms = 500\n\
             [rtp]\nport_min = {min}\nport_max = {}\n\
             [call]\nmax_calls = 20\n\
             [store]\npath = {:?}\n\
             [trunk]\ntermination = \"{}\"\ncps_limit = {}\n\
             [callbacks]\npoll_interval_ms = {}\n\
             [[queues]]\nid = \"support\"\ncallback_number = \"{CALLER_ID}\"\n\
             retry_time_s = {}\nmax_retries = {}\nagent_ring_timeout_s = {}\n\
             customer_ring_timeout_s = {}\nagent_cooldown_s = {}\n",
            min + 99,
            store.display().to_string(),
            self.termination,
            self.cps_limit,
            self.poll_ms,
            self.retry_time_s,
            self.max_retries,
            self.agent_ring_timeout_s,
            self.customer_ring_timeout_s,
            self.agent_cooldown_s,
        );
        for (id, uri) in &self.agents {
            text.push_str(&format!(
                "[[agents]]\nid = \"{id}\"\nuri = \"{uri}\"\nqueues = [\"support\"]\n"
            ));
        }
        let mut config = Config::from_toml_str(&text, "dialing-test.toml")
            .unwrap_or_else(|e| panic!("valid test config: {e}\n{text}"));
        config.bind_ephemeral_sip_port();
        // Tests run at any hour: customers may be called around the clock.
        config.org.calling_window = "00:00-24:00".into();
        config
    }
}

#[allow(unused_imports)] // not every test binary uses it from here
pub use super::StoreFiles;

pub fn library(config: &Config) -> PromptLibrary {
    let settings = config.clone().check(repo()).expect("valid config");
    engine::load_prompts(&settings).expect("prompts load")
}

/// Registers a due callback for `number` in the configuration's store file.
pub fn register(config: &Config, number: &str) -> CallbackId {
    register_at(&config.store_path(repo()), number)
}

pub fn register_at(path: &Path, number: &str) -> CallbackId {
    let mut store = SqliteStore::open(path).expect("open the store");
    let now = Timestamp::now();
    let new = NewCallback {
        queue: QueueId("support".into()),
        number: number.into(),
        caller_ani: "3125550111".into(),
        called_number: "8005550100".into(),
        priority: 0,
        queued_at: now,
        registered_at: now,
        ecbt_quoted_minutes: 1,
        expires_at: now + jiff::SignedDuration::from_hours(1),
        inbound_call_id: "inbound-1@test".into(),
        sip_context: None,
    };
    match store.register(&new).expect("register") {
        Registration::Registered(id) => id,
        other => panic!("not registered: {other:?}"),
    }
}

pub fn row(path: &Path, id: CallbackId) -> CallbackRow {
    let rows = SqliteStore::open(path)
        .and_then(|s| s.list())
        .expect("list callbacks");
    rows.into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("callback {id} not stored"))
}

pub fn attempts(config: &Config, id: CallbackId) -> Vec<AttemptRow> {
    attempts_at(&config.store_path(repo()), id)
}

pub fn attempts_at(path: &Path, id: CallbackId) -> Vec<AttemptRow> {
    SqliteStore::open(path)
        .and_then(|s| s.attempts(id))
        .expect("read attempts")
}

pub async fn wait_status(
    config: &Config,
    id: CallbackId,
    want: Status,
    within: Duration,
) -> CallbackRow {
    wait_status_at(&config.store_path(repo()), id, want, within).await
}

pub async fn wait_status_at(
    path: &Path,
    id: CallbackId,
    want: Status,
    within: Duration,
) -> CallbackRow {
    let deadline = Instant::now() + within;
    loop {
        let r = row(path, id);
        if r.status == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "callback not {want} after {within:?}: {r:?}\nattempts: {:#?}",
            attempts_at(path, id)
        );
        // Poll interval of a wait with a deadline (asserted above): the store
        // file is written by the engine's store thread; nothing notifies the test.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `count` attempts are stored; returns the row then.
pub async fn wait_attempts(config: &Config, id: CallbackId, count: usize) -> CallbackRow {
    let deadline = Instant::now() + SOON;
    while attempts(config, id).len() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} attempts stored"
        );
        // Poll interval of a wait with a deadline (asserted above): the store
        // file is written by the engine's store thread; nothing notifies the test.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    row(&config.store_path(repo()), id)
}

/// The CDR rows of callback `id`, once there are at least `count`.
pub async fn wait_cdrs(config: &Config, id: CallbackId, count: usize) -> Vec<CdrRecord> {
    let path = config.store_path(repo());
    let deadline = Instant::now() + SOON;
    loop {
        let rows: Vec<CdrRecord> = SqliteStore::open(&path)
            .and_then(|s| s.cdrs(None, None))
            .expect("read CDRs")
            .into_iter()
            .filter(|c| c.callback == Some(id))
            .collect();
        if rows.len() >= count {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} CDR rows, want {count}: {rows:#?}",
            rows.len()
        );
        // Poll interval of a wait with a deadline (asserted above): the store
        // file is written by the engine's store thread; nothing notifies the test.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every leg is gone: no call, no dialog, no RTP port. (INVITE client
/// transactions that ended with a non-2xx final keep Timer D running for
/// 32 s, RFC 3261 §17.1.1.2, so `wait_idle` would wait that long.)
pub async fn legs_closed(engine: &engine::EngineHandle) {
    super::wait_stats(engine, SOON, "legs closed", |s| {
        s.calls == 0 && s.sip.calls == 0 && s.rtp_ports == 0
    })
    .await;
}

pub fn cdr_of(cdrs: &[CdrRecord], leg: Leg) -> &CdrRecord {
    let of: Vec<&CdrRecord> = cdrs.iter().filter(|c| c.leg == leg).collect();
    assert_eq!(of.len(), 1, "one {leg:?} CDR: {cdrs:#?}");
    of[0]
}

/// Whether the whole whisper has arrived, its last digit whole.
pub fn whisper_heard_whole(packets: &[Rtp], lib: &PromptLibrary) -> bool {
    let segments = super::segments(packets, lib, Law::Ulaw);
    let said: Vec<&str> = segments.iter().map(|s| s.name).collect();
    find_run(&said, &WHISPER).is_some_and(|at| segments[at + WHISPER.len() - 1].complete())
}

/// When the whisper's last digit began and ended arriving (its first and
/// last frames), the digit played whole.
pub fn whisper_last_digit(packets: &[Rtp], lib: &PromptLibrary) -> (Instant, Instant) {
    let audio: Vec<&Rtp> = packets
        .iter()
        .filter(|p| p.pt == Law::Ulaw.payload_type())
        .collect();
    let segments = super::segments(packets, lib, Law::Ulaw);
    let said: Vec<&str> = segments.iter().map(|s| s.name).collect();
    let at = find_run(&said, &WHISPER).expect("the whisper was heard");
    let last = segments[at + WHISPER.len() - 1];
    assert!(last.complete(), "the last digit was played whole");
    (audio[last.start].at, audio[last.start + last.frames - 1].at)
}

// ---------------------------------------------------------------------------
// A tiny UA: agent phone or carrier
// ---------------------------------------------------------------------------

/// What the carrier's RTP payloads are filled with before it answers (183
/// early media).
pub const EARLY_FILL: u8 = 0x33;

/// How the peer answers its n-th INVITE (the last entry repeats). An
/// INVITE retried with credentials after a challenge is a new INVITE here.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// Answered (see [`Answer`]).
    Answer(Answer),
    /// 180 and nothing more (until CANCEL).
    Ring,
    /// This final status at once.
    Reject(u16),
    /// A digest challenge: 401 with WWW-Authenticate or 407 with
    /// Proxy-Authenticate (realm [`REALM`], nonce [`NONCE`]), with
    /// `qop="auth"` when `qop`.
    Challenge { status: u16, qop: bool },
    /// 503 Service Unavailable, with `Retry-After: <seconds>` if given.
    Unavailable { retry_after: Option<u32> },
}

/// The realm and nonce of [`Reply::Challenge`].
pub const REALM: &str = "carrier.test";
pub const NONCE: &str = "5a1d2c3b4e";

/// An answered call's script; times after the INVITE (`ring`) or after the
/// ACK (the rest).
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// From the INVITE to the 200.
    pub ring: Duration,
    /// 183 with SDP at once and RTP of [`EARLY_FILL`] until the 200,
    /// instead of a 180 without SDP.
    pub early_media: bool,
    /// The 183 is sent reliably (RFC 3262: `Require: 100rel`, `RSeq: 1`);
    /// its PRACK is answered 200 (the 183 itself is not retransmitted).
    pub reliable: bool,
    /// Our BYE.
    pub hangup: Option<Duration>,
    /// A re-INVITE putting the call on hold (`a=<direction>`, our RTP
    /// stops) at the first time, resumed (`a=sendrecv`, RTP again) at the
    /// second.
    pub hold: Option<(Duration, Duration, &'static str)>,
    /// Our RTP stops (the call stays up, no re-INVITE).
    pub silent: Option<Duration>,
}

impl Answer {
    /// 180, then 200 after `ring_ms`.
    pub fn after(ring_ms: u64) -> Answer {
        Answer {
            ring: Duration::from_millis(ring_ms),
            early_media: false,
            reliable: false,
            hangup: None,
            hold: None,
            silent: None,
        }
    }

    pub fn with_early_media(mut self) -> Answer {
        self.early_media = true;
        self
    }

    /// Early media in a reliable 183 (RFC 3262).
    pub fn reliably(mut self) -> Answer {
        self.early_media = true;
        self.reliable = true;
        self
    }

    pub fn hangup_after(mut self, ms: u64) -> Answer {
        self.hangup = Some(Duration::from_millis(ms));
        self
    }

    /// On hold with `direction` (sendonly or inactive) from `at_ms` to
    /// `resume_ms` after the ACK.
    pub fn hold(mut self, at_ms: u64, resume_ms: u64, direction: &'static str) -> Answer {
        self.hold = Some((
            Duration::from_millis(at_ms),
            Duration::from_millis(resume_ms),
            direction,
        ));
        self
    }

    pub fn silent_after(mut self, ms: u64) -> Answer {
        self.silent = Some(Duration::from_millis(ms));
        self
    }

    pub fn reply(self) -> Reply {
        Reply::Answer(self)
    }
}

impl Reply {
    /// 180, then 200 after `ring_ms`.
    pub fn after(ring_ms: u64) -> Reply {
        Answer::after(ring_ms).reply()
    }

    /// 180, 200 after `ring_ms`, our BYE `hangup_ms` after the ACK.
    pub fn hangup(ring_ms: u64, hangup_ms: u64) -> Reply {
        Answer::after(ring_ms).hangup_after(hangup_ms).reply()
    }
}

/// What the peer received or sent, with when.
// A few dozen per test: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Seen {
    Received(Instant, Message),
    /// A request of ours (BYE, re-INVITE, ACK to a re-INVITE's 200).
    Sent(Instant, Request),
}

/// A SIP UA on 127.0.0.1:0 answering the engine by a script, with an RTP
/// socket that records everything it receives and sends PCMU packets of
/// `fill` bytes every 20 ms to the engine while a call is up.
pub struct Peer {
    name: &'static str,
    sip: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    listener: Listener,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

struct PeerCall {
    invite: Request,
    engine: SocketAddr,
    tag: String,
    answer: Reply,
    last_response: Option<String>,
    answered: bool,
    confirmed: bool,
    ended: bool,
    /// Our next in-dialog CSeq.
    cseq: u32,
    /// Our SDP's o= version.
    sdp_version: u32,
    /// The CSeq of our re-INVITE awaiting its 200.
    reinvite: Option<u32>,
}

enum Due {
    Answer(String),
    Hangup(String),
    Hold(String, &'static str),
    Resume(String),
    Silence(String),
}

/// The RTP sender's state: where to, and with what.
struct Media {
    target: Mutex<Option<SocketAddr>>,
    fill: AtomicU8,
}

impl Peer {
    pub async fn start(name: &'static str, script: Vec<Reply>, fill: u8) -> Peer {
        assert!(!script.is_empty());
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind peer SIP");
        let sip = sock.local_addr().expect("peer address");
        let rtp = RtpSock::bind("127.0.0.1");
        let listener = Listener::start(&rtp, Duration::from_secs(120));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let media = Arc::new(Media {
            target: Mutex::new(None),
            fill: AtomicU8::new(fill),
        });
        let stop = Arc::new(AtomicBool::new(false));
        spawn_rtp_sender(rtp.clone(), media.clone(), stop.clone());
        let task = tokio::spawn(run_peer(
            sock,
            rtp.port(),
            script,
            seen.clone(),
            media,
            fill,
        ));
        Peer {
            name,
            sip,
            seen,
            listener,
            stop,
            task,
        }
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip
    }

    /// The static agent URI that reaches this peer.
    pub fn uri(&self) -> String {
        format!("sip:{}@{}", self.name, self.sip)
    }

    /// Requests received, one per transaction (retransmissions left out).
    pub fn requests(&self, method: &str) -> Vec<(Instant, Request)> {
        let seen = self.seen.lock().expect("peer lock");
        let mut out: Vec<(Instant, Request)> = Vec::new();
        for s in seen.iter() {
            if let Seen::Received(at, Message::Request(r)) = s
                && r.method.as_str() == method
                && !out.iter().any(|(_, o)| {
                    o.headers.call_id == r.headers.call_id && o.headers.cseq == r.headers.cseq
                })
            {
                out.push((*at, r.clone()));
            }
        }
        out
    }

    /// Responses received to our requests of `method`.
    pub fn responses(&self, method: &str) -> Vec<(Instant, Response)> {
        self.seen
            .lock()
            .expect("peer lock")
            .iter()
            .filter_map(|s| match s {
                Seen::Received(at, Message::Response(r))
                    if r.headers.cseq.method.as_str() == method =>
                {
                    Some((*at, r.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Requests we sent, of `method`.
    pub fn sent(&self, method: &str) -> Vec<(Instant, Request)> {
        self.seen
            .lock()
            .expect("peer lock")
            .iter()
            .filter_map(|s| match s {
                Seen::Sent(at, r) if r.method.as_str() == method => Some((*at, r.clone())),
                _ => None,
            })
            .collect()
    }

    /// Initial INVITEs (no To-tag), one per transaction.
    pub fn invites(&self) -> Vec<(Instant, Request)> {
        self.requests("INVITE")
            .into_iter()
            .filter(|(_, r)| r.headers.to.tag.is_none())
            .collect()
    }

    pub async fn wait_request(
        &self,
        method: &str,
        n: usize,
        within: Duration,
    ) -> (Instant, Request) {
        let deadline = Instant::now() + within;
        loop {
            let got = if method == "INVITE" {
                self.invites()
            } else {
                self.requests(method)
            };
            if let Some(r) = got.into_iter().nth(n - 1) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {method} #{n} within {within:?}; seen: {:#?}",
                self.name,
                self.summary()
            );
            // Poll interval of a wait with a deadline (asserted above) on what
            // the peer's socket thread has recorded.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_invite(&self, n: usize, within: Duration) -> (Instant, Request) {
        self.wait_request("INVITE", n, within).await
    }

    /// Waits for our `n`-th request of `method` to get a final response.
    pub async fn wait_response(
        &self,
        method: &str,
        n: usize,
        within: Duration,
    ) -> (Instant, Response) {
        let deadline = Instant::now() + within;
        loop {
            let finals: Vec<(Instant, Response)> = self
                .responses(method)
                .into_iter()
                .filter(|(_, r)| r.status >= 200)
                .collect();
            let sent = self.sent(method);
            if let Some((_, ours)) = sent.get(n - 1)
                && let Some(r) = finals
                    .into_iter()
                    .find(|(_, r)| r.headers.cseq.seq == ours.headers.cseq.seq)
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no final response to our {method} #{n} within {within:?}; seen: {:#?}",
                self.name,
                self.summary()
            );
            // Poll interval of a wait with a deadline (asserted above) on what
            // the peer's socket thread has recorded.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// When the ACK for the 2xx of call number `index` (0-based) arrived.
    pub fn acked_at(&self, index: usize) -> Option<Instant> {
        let invite = self.invites().into_iter().nth(index)?;
        self.requests("ACK")
            .into_iter()
            .find(|(_, r)| {
                r.headers.call_id == invite.1.headers.call_id
                    && r.headers.cseq.seq == invite.1.headers.cseq.seq
                    && r.headers.to.tag.is_some()
            })
            .map(|(at, _)| at)
    }

    pub fn sent_bye_at(&self) -> Option<Instant> {
        self.sent("BYE").first().map(|(at, _)| *at)
    }

    pub fn response_to_bye(&self) -> Option<u16> {
        self.responses("BYE").first().map(|(_, r)| r.status)
    }

    pub fn rtp_between(&self, from: Instant, to: Instant) -> Vec<Rtp> {
        self.listener.with(|p| {
            p.iter()
                .filter(|p| p.at >= from && p.at < to)
                .cloned()
                .collect()
        })
    }

    pub fn rtp_before(&self, to: Instant) -> Vec<Rtp> {
        self.listener
            .with(|p| p.iter().filter(|p| p.at < to).cloned().collect())
    }

    /// Received packets whose payload is all `fill` (the other peer's).
    pub fn rtp_filled(&self, fill: u8) -> Vec<Rtp> {
        self.listener.with(|p| {
            p.iter()
                .filter(|p| !p.payload.is_empty() && p.payload.iter().all(|&b| b == fill))
                .cloned()
                .collect()
        })
    }

    /// How many received packets are all `fill` and arrived when `when`
    /// says.
    pub fn count_filled(&self, fill: u8, when: impl Fn(Instant) -> bool) -> usize {
        self.rtp_filled(fill).iter().filter(|p| when(p.at)).count()
    }

    pub fn summary(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("peer lock")
            .iter()
            .map(|s| match s {
                Seen::Received(_, Message::Request(r)) => {
                    format!(
                        "{} {} ({} {})",
                        r.method.as_str(),
                        r.uri,
                        r.headers.call_id.as_str(),
                        r.headers.cseq.seq
                    )
                }
                Seen::Received(_, Message::Response(r)) => {
                    format!(
                        "{} to {} {}",
                        r.status,
                        r.headers.cseq.seq,
                        r.headers.cseq.method.as_str()
                    )
                }
                Seen::Sent(_, r) => format!("sent {} {}", r.headers.cseq.seq, r.method.as_str()),
            })
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// Sends 20 ms PCMU packets of the current fill to the current target.
fn spawn_rtp_sender(rtp: RtpSock, media: Arc<Media>, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("test-rtp-sender".into())
        .spawn(move || {
            let ssrc = fastrand::u32(..);
            let mut seq: u16 = fastrand::u16(..);
            let mut ts: u32 = fastrand::u32(..);
            let mut packet = vec![0u8; 12 + 160];
            packet[0] = 0x80;
            packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
            let start = Instant::now();
            let mut n: u32 = 0;
            let end = start + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                n += 1;
                let next = start + Duration::from_millis(20) * n;
                // The fake phone's RTP pacing: one packet every 20 ms, as a phone sends.
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let to = *media.target.lock().expect("target lock");
                let Some(to) = to else { continue };
                packet[1] = Law::Ulaw.payload_type();
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                packet[4..8].copy_from_slice(&ts.to_be_bytes());
                packet[12..].fill(media.fill.load(Ordering::Relaxed));
                let _ = rtp.sock.send_to(&packet, to);
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
            }
        })
        .expect("start the RTP sender");
}

async fn run_peer(
    sock: UdpSocket,
    rtp_port: u16,
    script: Vec<Reply>,
    seen: Arc<Mutex<Vec<Seen>>>,
    media: Arc<Media>,
    fill: u8,
) {
    let local = sock.local_addr().expect("peer address");
    let mut calls: HashMap<String, PeerCall> = HashMap::new();
    let mut timers: Vec<(Instant, Due)> = Vec::new();
    let mut invites = 0usize;
    let mut buf = vec![0u8; 65_536];
    // Sends a request of ours in `call`'s dialog and notes it.
    let send_request = |call: &mut PeerCall, method: &str, body: Option<&str>| {
        let seq = call.cseq;
        call.cseq += 1;
        let text = in_dialog(method, seq, &call.invite, &call.tag, local, body);
        let parsed = match message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("the peer built a bad request: {other:?}\n{text}"),
        };
        seen.lock()
            .expect("peer lock")
            .push(Seen::Sent(Instant::now(), parsed));
        (seq, text)
    };
    loop {
        let next = timers.iter().map(|(at, _)| *at).min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = sock.recv_from(&mut buf) => {
                let Ok((len, from)) = got else { return };
                let Ok(msg) = message::parse(&buf[..len]) else {
                    panic!("engine sent unparsable SIP: {}", String::from_utf8_lossy(&buf[..len]));
                };
                let now = Instant::now();
                seen.lock()
                    .expect("peer lock")
                    .push(Seen::Received(now, msg.clone()));
                let req = match msg {
                    Message::Request(req) => req,
                    Message::Response(resp) => {
                        // The 200 to our re-INVITE is ACKed (every copy).
                        let id = resp.headers.call_id.as_str().to_owned();
                        if resp.headers.cseq.method.as_str() == "INVITE"
                            && resp.status >= 200
                            && let Some(call) = calls.get_mut(&id)
                            && call.reinvite.is_some_and(|s| s <= resp.headers.cseq.seq)
                        {
                            let ack = in_dialog("ACK", resp.headers.cseq.seq, &call.invite, &call.tag, local, None);
                            let _ = sock.send_to(ack.as_bytes(), call.engine).await;
                        }
                        continue;
                    }
                };
                let call_id = req.headers.call_id.as_str().to_owned();
                match req.method.as_str() {
                    "INVITE" if req.headers.to.tag.is_none() => {
                        if let Some(call) = calls.get(&call_id)
                            && call.invite.headers.cseq.seq == req.headers.cseq.seq
                        {
                            // A retransmission: the last response again.
                            if let Some(last) = &call.last_response {
                                let _ = sock.send_to(last.as_bytes(), from).await;
                            }
                            continue;
                        }
                        let answer = script[invites.min(script.len() - 1)];
                        invites += 1;
                        let mut call = PeerCall {
                            invite: req.clone(),
                            engine: from,
                            tag: super::token(),
                            answer,
                            last_response: None,
                            answered: false,
                            confirmed: false,
                            ended: false,
                            cseq: 1,
                            sdp_version: 1,
                            reinvite: None,
                        };
                        let text = match answer {
                            Reply::Reject(status) => response(&req, status, &call.tag, local, None),
                            Reply::Challenge { status, qop } => {
                                let name = if status == 407 { "Proxy-Authenticate" } else { "WWW-Authenticate" };
                                let qop = if qop { ", qop=\"auth\"" } else { "" };
                                let challenge = format!(
                                    "{name}: Digest realm=\"{REALM}\", nonce=\"{NONCE}\", algorithm=MD5{qop}\r\n"
                                );
                                response_with(&req, status, &call.tag, local, None, &challenge)
                            }
                            Reply::Unavailable { retry_after } => {
                                let extra = retry_after
                                    .map(|s| format!("Retry-After: {s}\r\n"))
                                    .unwrap_or_default();
                                response_with(&req, 503, &call.tag, local, None, &extra)
                            }
                            Reply::Answer(a) if a.early_media => {
                                // RFC 3960 early media: 183 with the answer,
                                // our RTP flowing before the 200.
                                let body = answer_sdp(rtp_port, 1, "sendrecv");
                                media.fill.store(EARLY_FILL, Ordering::Relaxed);
                                *media.target.lock().expect("target lock") =
                                    Some(media_addr(&SdpInfo::parse(&req.body)));
                                let extra = if a.reliable { "Require: 100rel\r\nRSeq: 1\r\n" } else { "" };
                                response_with(&req, 183, &call.tag, local, Some(&body), extra)
                            }
                            Reply::Ring | Reply::Answer(_) => {
                                response(&req, 180, &call.tag, local, None)
                            }
                        };
                        let _ = sock.send_to(text.as_bytes(), from).await;
                        call.last_response = Some(text);
                        if let Reply::Answer(a) = answer {
                            timers.push((now + a.ring, Due::Answer(call_id.clone())));
                        }
                        calls.insert(call_id, call);
                    }
                    "ACK" => {
                        if let Some(call) = calls.get_mut(&call_id)
                            && call.answered
                            && !call.confirmed
                        {
                            call.confirmed = true;
                            let offer = SdpInfo::parse(&call.invite.body);
                            media.fill.store(fill, Ordering::Relaxed);
                            *media.target.lock().expect("target lock") = Some(media_addr(&offer));
                            if let Reply::Answer(a) = call.answer {
                                if let Some(after) = a.hangup {
                                    timers.push((now + after, Due::Hangup(call_id.clone())));
                                }
                                if let Some((at, resume, direction)) = a.hold {
                                    timers.push((now + at, Due::Hold(call_id.clone(), direction)));
                                    timers.push((now + resume, Due::Resume(call_id.clone())));
                                }
                                if let Some(at) = a.silent {
                                    timers.push((now + at, Due::Silence(call_id.clone())));
                                }
                            }
                        }
                    }
                    "BYE" => {
                        let tag = calls.get(&call_id).map_or_else(super::token, |c| c.tag.clone());
                        let ok = response(&req, 200, &tag, local, None);
                        let _ = sock.send_to(ok.as_bytes(), from).await;
                        if let Some(call) = calls.get_mut(&call_id) {
                            call.ended = true;
                            stop_media(&media, &call.invite);
                        }
                    }
                    "PRACK" => {
                        // RFC 3262 §3: the PRACK of our reliable 183 gets
                        // its own 200.
                        let tag = calls.get(&call_id).map_or_else(super::token, |c| c.tag.clone());
                        let ok = response(&req, 200, &tag, local, None);
                        let _ = sock.send_to(ok.as_bytes(), from).await;
                    }
                    "CANCEL" => {
                        let Some(call) = calls.get_mut(&call_id) else { continue };
                        let ok = response(&req, 200, &call.tag, local, None);
                        let _ = sock.send_to(ok.as_bytes(), from).await;
                        if !call.answered && !call.ended {
                            let terminated = response(&call.invite, 487, &call.tag, local, None);
                            let _ = sock.send_to(terminated.as_bytes(), call.engine).await;
                            call.last_response = Some(terminated);
                            call.ended = true;
                            stop_media(&media, &call.invite);
                        }
                    }
                    _ => {
                        // Anything else in a dialog (re-INVITE, UPDATE,
                        // OPTIONS): not what these tests are about.
                        let tag = calls.get(&call_id).map_or_else(super::token, |c| c.tag.clone());
                        let no = response(&req, 501, &tag, local, None);
                        let _ = sock.send_to(no.as_bytes(), from).await;
                    }
                }
            }
            () = sleep => {
                let now = Instant::now();
                let (due, rest): (Vec<_>, Vec<_>) = timers.drain(..).partition(|(at, _)| *at <= now);
                timers = rest;
                for (_, due) in due {
                    let id = match &due {
                        Due::Answer(id) | Due::Hangup(id) | Due::Hold(id, _) | Due::Resume(id)
                        | Due::Silence(id) => id.clone(),
                    };
                    let Some(call) = calls.get_mut(&id) else { continue };
                    if call.ended {
                        continue;
                    }
                    match due {
                        Due::Answer(_) => {
                            media.fill.store(fill, Ordering::Relaxed);
                            let body = answer_sdp(rtp_port, call.sdp_version, "sendrecv");
                            let ok = response(&call.invite, 200, &call.tag, local, Some(&body));
                            let _ = sock.send_to(ok.as_bytes(), call.engine).await;
                            call.last_response = Some(ok);
                            call.answered = true;
                        }
                        Due::Hangup(_) => {
                            call.ended = true;
                            stop_media(&media, &call.invite);
                            let (_, bye) = send_request(call, "BYE", None);
                            let _ = sock.send_to(bye.as_bytes(), call.engine).await;
                        }
                        Due::Hold(_, direction) => {
                            stop_media(&media, &call.invite);
                            call.sdp_version += 1;
                            let body = answer_sdp(rtp_port, call.sdp_version, direction);
                            let (seq, invite) = send_request(call, "INVITE", Some(&body));
                            call.reinvite = Some(seq);
                            let _ = sock.send_to(invite.as_bytes(), call.engine).await;
                        }
                        Due::Resume(_) => {
                            call.sdp_version += 1;
                            let body = answer_sdp(rtp_port, call.sdp_version, "sendrecv");
                            let (seq, invite) = send_request(call, "INVITE", Some(&body));
                            call.reinvite = Some(seq);
                            let _ = sock.send_to(invite.as_bytes(), call.engine).await;
                            *media.target.lock().expect("target lock") =
                                Some(media_addr(&SdpInfo::parse(&call.invite.body)));
                        }
                        Due::Silence(_) => stop_media(&media, &call.invite),
                    }
                }
            }
        }
    }
}

/// Stops sending RTP if it goes to this call's engine port.
fn stop_media(media: &Media, invite: &Request) {
    let addr = media_addr(&SdpInfo::parse(&invite.body));
    let mut target = media.target.lock().expect("target lock");
    if *target == Some(addr) {
        *target = None;
    }
}

/// Our SDP: PCMU on `port`, o= version `version`, `a=<direction>`.
fn answer_sdp(port: u16, version: u32, direction: &str) -> String {
    super::sdp(
        version,
        port,
        "0",
        &[
            "a=rtpmap:0 PCMU/8000",
            "a=ptime:20",
            &format!("a={direction}"),
        ],
    )
}

/// A response to `req` with our To-tag, Contact and optional SDP.
fn response(req: &Request, status: u16, tag: &str, local: SocketAddr, sdp: Option<&str>) -> String {
    response_with(req, status, tag, local, sdp, "")
}

/// [`response`] with `extra` header lines (each ending in CRLF).
fn response_with(
    req: &Request,
    status: u16,
    tag: &str,
    local: SocketAddr,
    sdp: Option<&str>,
    extra: &str,
) -> String {
    let reason = match status {
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        401 => "Unauthorized",
        // (PRACK and BYE answers are 200 too.)
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        486 => "Busy Here",
        487 => "Request Terminated",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Whatever",
    };
    let mut text = format!("SIP/2.0 {status} {reason}\r\n");
    for via in &req.headers.vias {
        text.push_str(&format!("Via: {}\r\n", via.raw));
    }
    let to = if req.headers.to.tag.is_some() {
        req.headers.to.raw.to_string()
    } else {
        format!("{};tag={tag}", req.headers.to.raw)
    };
    let (content_type, body) = match sdp {
        Some(b) => ("Content-Type: application/sdp\r\n", b),
        None => ("", ""),
    };
    text.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContact: <sip:peer@{local}>\r\n\
         {extra}{content_type}Content-Length: {}\r\n\r\n{body}",
        req.headers.from.raw,
        req.headers.call_id.as_str(),
        req.headers.cseq.seq,
        req.headers.cseq.method.as_str(),
        body.len(),
    ));
    text
}

/// A request of ours with CSeq `seq` in the dialog `invite` created (we
/// are its UAS): BYE, re-INVITE (with an SDP body), or the ACK of a
/// re-INVITE's 2xx.
fn in_dialog(
    method: &str,
    seq: u32,
    invite: &Request,
    tag: &str,
    local: SocketAddr,
    sdp: Option<&str>,
) -> String {
    let target = super::contact(&invite.headers)
        .map(|c| {
            c.trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or(c)
                .to_owned()
        })
        .expect("the engine's INVITE has a Contact");
    let (extra, body) = match sdp {
        Some(b) => (
            format!("Contact: <sip:peer@{local}>\r\nContent-Type: application/sdp\r\n"),
            b,
        ),
        None => (String::new(), ""),
    };
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={};rport\r\n\
         Max-Forwards: 70\r\n\
         From: {};tag={tag}\r\n\
         To: {}\r\n\
         Call-ID: {}\r\n\
         CSeq: {seq} {method}\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        super::branch(),
        invite.headers.to.raw,
        invite.headers.from.raw,
        invite.headers.call_id.as_str(),
        body.len(),
    )
}
