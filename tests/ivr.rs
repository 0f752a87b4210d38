//! The IVR callback registration end to end, in-process: a test caller
//! (hand-written SIP UA, RTP socket) against `engine::start_with_store`.
//!
//! What the caller hears is read from the audio itself: every received RTP
//! payload is matched against the prompts' pre-encoded frames
//! ([`common::segments`]), so "the caller hears 'unable'" means the engine
//! sent exactly that recording's frames. Keys are pressed as RFC 4733 events,
//! SIP INFO, or real DTMF tones in the G.711 audio. Each test has its own RTP
//! range (`rtp_base(40..)`) and store file, ends with a leak check (no call,
//! transaction, timer or RTP port left) and stays under [`TEST_LIMIT`].

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::time::timeout;
use tracing_subscriber::EnvFilter;

use callbackd::callback::cdr::CdrRecord;
use callbackd::callback::hours::Gates;
use callbackd::callback::store::testing::{FailingStore, arm_commit_failure};
use callbackd::callback::store::{
    Attempt, AttemptRow, CallbackRow, LaunchStore, NewCallback, NewTask, NextStep, Recorded,
    Recovery, Registration, SqliteStore, Status, Store, StoreError, TaskFilter,
};
use callbackd::callback::{CallbackId, QueueId};
use callbackd::config::Config;
use callbackd::engine::{self, EngineHandle};
use callbackd::media::dtmf::{DtmfDigit, DtmfSender};
use callbackd::media::g711::Law;
use callbackd::media::inband::{COLUMN_HZ, DBM0_PEAK, KEYPAD, ROW_HZ};
use callbackd::media::prompt::PromptLibrary;
use callbackd::media::rtp::{PayloadType, SendStream, write_rtp};
use callbackd::sip::message::{Message, Request};

use common::*;

/// Upper bound for a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// How long a call's timers may take to run out (64·T1 = 3.2 s, plus slack).
const IDLE_WITHIN: Duration = Duration::from_secs(5);
/// Longest wait for one expected prompt (the longest prompt is 6 s).
const HEAR_WITHIN: Duration = Duration::from_secs(12);
/// The number the tests register: repeated digits on purpose.
const NUMBER: &str = "3125550188";
/// Its read-back.
const READ_BACK: [&str; 12] = [
    "you_entered",
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
    "confirm",
];
/// The telephone-event payload type of [`pcmu_offer`].
const TELEPHONE_EVENT: u8 = 101;

/// The prompts as the engine encodes them (the same files, the same code).
fn lib() -> &'static PromptLibrary {
    static LIB: OnceLock<PromptLibrary> = OnceLock::new();
    LIB.get_or_init(|| {
        let config = Config::from_toml_str("", "defaults.toml").expect("defaults");
        let settings = config.check(repo()).expect("valid config");
        engine::load_prompts(&settings).expect("prompts load")
    })
}

/// [`config`] with short IVR timeouts (a mistake shows as a timeout within
/// seconds, not minutes) and no periodic re-announcement within a test
/// (the longest interval the check accepts; 0 is refused).
fn ivr_config(slot: u16, tweak: impl FnOnce(&mut Config)) -> Config {
    config(slot, |c| {
        c.ivr.first_digit_timeout_s = 4;
        c.ivr.inter_digit_timeout_s = 3;
        c.ivr.announce_interval_s = 3600;
        tweak(c);
    })
}

/// The store file [`config`] chose for this test.
fn store_path(config: &Config) -> PathBuf {
    config.store_path(repo())
}

/// Every row of the store file, read over a connection of our own.
fn rows(path: &Path) -> Vec<CallbackRow> {
    SqliteStore::open(path)
        .expect("open the store file")
        .list()
        .expect("list callbacks")
}

/// Starts an engine over `store`.
async fn start_on(config: Config, store: impl LaunchStore + 'static) -> TestEngine {
    let files = StoreFiles::of(&config);
    let settings = config.check(repo()).expect("valid config");
    TestEngine::new(
        engine::start_with_store(settings, Box::new(store))
            .await
            .expect("engine starts"),
        files,
    )
}

/// Starts an engine over the SQLite file of its configuration.
async fn start_sqlite(config: Config) -> (TestEngine, PathBuf) {
    let path = store_path(&config);
    let store = SqliteStore::open(&path).expect("open the store");
    (start_on(config, store).await, path)
}

/// A store that counts `register` calls and passes everything on.
struct Counting<S> {
    inner: S,
    registers: Arc<AtomicU32>,
}

impl<S: Store> Store for Counting<S> {
    fn register(&mut self, new: &NewCallback) -> Result<Registration, StoreError> {
        self.registers.fetch_add(1, Ordering::SeqCst);
        self.inner.register(new)
    }

    fn list(&self) -> Result<Vec<CallbackRow>, StoreError> {
        self.inner.list()
    }

    fn pending_ahead(&self, queue: &QueueId, queued_at: Timestamp) -> Result<u32, StoreError> {
        self.inner.pending_ahead(queue, queued_at)
    }
}

/// The engine's store must also serve the dialing side; passed through.
impl<S: LaunchStore> LaunchStore for Counting<S> {
    fn due(&self, now: Timestamp) -> Result<Vec<CallbackRow>, StoreError> {
        self.inner.due(now)
    }

    fn claim(&mut self, id: CallbackId, now: Timestamp) -> Result<bool, StoreError> {
        self.inner.claim(id, now)
    }

    fn record_attempt(
        &mut self,
        id: CallbackId,
        attempt: &Attempt,
        next: &NextStep,
    ) -> Result<Recorded, StoreError> {
        self.inner.record_attempt(id, attempt, next)
    }

    fn record_connected(
        &mut self,
        id: CallbackId,
        at: Timestamp,
        agent: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.record_connected(id, at, agent)
    }

    fn expire(&mut self, now: Timestamp) -> Result<Vec<CallbackId>, StoreError> {
        self.inner.expire(now)
    }

    fn set_claimant(&mut self, node: &str, lease: Duration) {
        self.inner.set_claimant(node, lease);
    }

    fn renew_claims(&mut self, now: Timestamp) -> Result<usize, StoreError> {
        self.inner.renew_claims(now)
    }

    fn recover_interrupted(
        &mut self,
        now: Timestamp,
        longest_ring: Duration,
        scope: Recovery,
    ) -> Result<Vec<CallbackId>, StoreError> {
        self.inner.recover_interrupted(now, longest_ring, scope)
    }

    fn attempts(&self, id: CallbackId) -> Result<Vec<AttemptRow>, StoreError> {
        self.inner.attempts(id)
    }

    fn create_task(&mut self, task: &NewTask) -> Result<Registration, StoreError> {
        self.inner.create_task(task)
    }

    fn cancel_tasks(
        &mut self,
        which: &TaskFilter,
        reason: &str,
        now: Timestamp,
    ) -> Result<Vec<CallbackId>, StoreError> {
        self.inner.cancel_tasks(which, reason, now)
    }

    fn write_cdr(&mut self, record: &CdrRecord) -> Result<(), StoreError> {
        self.inner.write_cdr(record)
    }

    fn cdrs(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Vec<CdrRecord>, StoreError> {
        self.inner.cdrs(since, until)
    }
}

/// The engine's call-layer log lines (debug: digits, ECBT positions,
/// queue returns), captured in-process for the whole test binary.
fn logs() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .with_env_filter(EnvFilter::new("callbackd::b2bua::calls=debug"))
            .try_init()
            .expect("the only subscriber of this test binary");
        buf
    })
}

/// A PCMU-only offer: no telephone-event, so keys can only be heard in the
/// audio.
fn pcmu_only_offer(port: u16) -> String {
    sdp(
        1,
        port,
        "0",
        &["a=rtpmap:0 PCMU/8000", "a=ptime:20", "a=sendrecv"],
    )
}

/// One test caller: its own SIP socket and dialog, its own RTP socket, an
/// ear on everything the engine sends, and a keypad (RFC 4733).
struct Caller {
    ua: Ua,
    dialog: Dialog,
    rtp: RtpSock,
    /// The engine's RTP address (from its answer).
    media: SocketAddr,
    answer: SdpInfo,
    ear: Listener,
    events: SendStream,
    cseq: u32,
    law: Law,
}

impl Caller {
    /// Calls the engine with `offer(rtp_port)` (PCMU) and completes the
    /// INVITE/200/ACK; the ear is listening before the INVITE goes out.
    async fn dial(engine: &EngineHandle, offer: impl FnOnce(u16) -> String) -> Caller {
        let ua = Ua::new(engine.udp_addr().expect("UDP served")).await;
        let rtp = RtpSock::bind("127.0.0.1");
        let ear = Listener::start(&rtp, TEST_LIMIT);
        let (dialog, ok) = ua.call(Some(&offer(rtp.port()))).await;
        let answer = SdpInfo::parse(&ok.body);
        Caller {
            ua,
            dialog,
            media: media_addr(&answer),
            answer,
            rtp,
            ear,
            events: SendStream::from_seed(
                fastrand::u64(..),
                PayloadType::new(0).expect("PT 0"),
                8000,
            ),
            cseq: 1,
            law: Law::Ulaw,
        }
    }

    /// The prompts heard so far.
    fn heard(&self) -> Vec<&'static str> {
        self.ear.with(|p| heard(p, lib(), self.law))
    }

    /// The segments heard so far.
    fn segments(&self) -> Vec<Segment> {
        self.ear.with(|p| segments(p, lib(), self.law))
    }

    /// Whether the segments heard come to satisfy `done` within `within`:
    /// packets the engine sent before its BYE may still be on their way to
    /// the receiving thread when the BYE is read.
    async fn segments_settle(&self, within: Duration, done: impl Fn(&[Segment]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.segments()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Poll interval of a wait bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until what was heard satisfies `done`; panics with what was
    /// heard after [`HEAR_WITHIN`].
    async fn hear(&self, what: &str, done: impl Fn(&[&'static str]) -> bool) -> Vec<&'static str> {
        let deadline = Instant::now() + HEAR_WITHIN;
        loop {
            let heard = self.heard();
            if done(&heard) {
                return heard;
            }
            assert!(
                Instant::now() < deadline,
                "{}: never heard {what}; heard {heard:?}",
                self.dialog.call_id
            );
            // Poll interval: the listener does not notify new prompts.
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `name` has been heard `times` times (a prompt counts as
    /// soon as its first frames arrive).
    async fn hear_nth(&self, name: &str, times: usize) -> Vec<&'static str> {
        self.hear(&format!("{name} ×{times}"), |h| count(h, name) >= times)
            .await
    }

    /// Presses `keys` as RFC 4733 events, one after the other.
    async fn press(&mut self, keys: &str) {
        for key in keys.chars() {
            let first = self.key_down(key);
            self.key_up(first).await;
        }
    }

    /// Sends the first packet of an RFC 4733 event for `key`; the rest
    /// follows with [`Caller::key_up`].
    fn key_down(&mut self, key: char) -> DtmfSender {
        let digit = DtmfDigit::try_from(key).expect("a DTMF key");
        // 60 ms events, a packet every 20 ms of media time.
        let mut sender = DtmfSender::new(digit, self.events.next_timestamp(), 480, 160, 10);
        let packet = sender.next_packet().expect("a first packet");
        self.send_event(packet);
        sender
    }

    /// Sends the remaining packets of an event (updates, then the end packet
    /// three times), 10 ms apart, and a 40 ms pause after it. The pauses are
    /// the phone's pacing of what it sends, not waits for the engine.
    async fn key_up(&mut self, sender: DtmfSender) {
        for packet in sender {
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.send_event(packet);
        }
        // The pause between keys passes in media time too.
        self.events.skip(320);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    fn send_event(&mut self, packet: callbackd::media::dtmf::DtmfPacket) {
        let pt = PayloadType::new(TELEPHONE_EVENT).expect("dynamic PT");
        let header = self
            .events
            .next_header_with(pt, packet.timestamp, packet.marker, 160);
        let mut buf = Vec::with_capacity(16);
        write_rtp(&mut buf, &header, &packet.event.write());
        self.rtp
            .sock
            .send_to(&buf, self.media)
            .expect("send telephone-event");
    }

    /// Sends `key` as SIP INFO (`application/dtmf-relay`) without waiting
    /// for the answer; returns its CSeq.
    async fn info(&mut self, key: char) -> u32 {
        self.cseq += 1;
        let body = format!("Signal={key}\r\nDuration=160\r\n");
        self.ua
            .send(self.dialog.request(
                "INFO",
                self.cseq,
                &branch(),
                Some(("application/dtmf-relay", &body)),
            ))
            .await;
        self.cseq
    }

    /// Waits for the engine's BYE (within `within`), answers 200, and
    /// returns what was heard by then.
    async fn await_bye(&self, within: Duration) -> Vec<&'static str> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.ua.try_recv(left).await else {
                panic!(
                    "{}: no BYE within {within:?}; heard {:?}",
                    self.dialog.call_id,
                    self.heard()
                );
            };
            if let Message::Request(req) = m
                && req.method.as_str() == "BYE"
            {
                self.answer_bye(&req).await;
                return self.heard();
            }
        }
    }

    async fn answer_bye(&self, bye: &Request) {
        assert_eq!(bye.headers.call_id.as_str(), self.dialog.call_id);
        self.ua.send(response_to(bye, 200, "OK")).await;
    }

    /// Hangs up (BYE from our side).
    async fn hang_up(&mut self) {
        self.cseq += 1;
        self.ua.bye(&self.dialog, self.cseq).await;
    }
}

/// What follows the first occurrence of `after` in `heard`, prompts only
/// (hold music, silence and stray frames left out).
fn prompts_after<'a>(heard: &[&'a str], after: &str) -> Vec<&'a str> {
    let at = heard
        .iter()
        .position(|n| *n == after)
        .unwrap_or_else(|| panic!("{after} not heard: {heard:?}"));
    heard[at + 1..]
        .iter()
        .copied()
        .filter(|n| ![SILENCE, UNKNOWN, "hold_music"].contains(n))
        .collect()
}

/// Whether `run` was heard as consecutive prompts.
fn heard_run(heard: &[&str], run: &[&str]) -> bool {
    find_run(heard, run).is_some()
}

/// The RFC 4733 registration every happy-path test walks: '1' during the
/// greeting, the number during "enter_number", '1' during "confirm".
async fn register_by_rfc4733(caller: &mut Caller, number: &str) {
    caller.hear_nth("welcome", 1).await;
    caller.press("1").await;
    caller.hear_nth("enter_number", 1).await;
    caller.press(number).await;
    caller.hear_nth("confirm", 1).await;
    caller.press("1").await;
}

// ---------------------------------------------------------------------------
// 1. A failing commit: "unable", nothing stored.

async fn commit_failure(slot: u16, sqlite: bool) {
    let config = ivr_config(slot, |_| {});
    let path = store_path(&config);
    let registers = Arc::new(AtomicU32::new(0));
    let engine = if sqlite {
        let store = SqliteStore::open(&path).expect("open the store");
        arm_commit_failure(&store).expect("arm the commit failure");
        let store = Counting {
            inner: store,
            registers: registers.clone(),
        };
        start_on(config, store).await
    } else {
        let store = Counting {
            inner: FailingStore::default(),
            registers: registers.clone(),
        };
        start_on(config, store).await
    };
    let mut caller = Caller::dial(&engine, pcmu_offer).await;
    register_by_rfc4733(&mut caller, NUMBER).await;
    let heard = caller.await_bye(HEAR_WITHIN).await;
    assert_eq!(
        registers.load(Ordering::SeqCst),
        1,
        "the registration reached the store once"
    );
    assert_eq!(
        prompts_after(&heard, "confirm"),
        ["unable", "goodbye"],
        "after confirming, the caller hears unable + goodbye (sqlite: {sqlite}); heard {heard:?}"
    );
    assert!(
        caller
            .segments_settle(Duration::from_secs(2), |s| s
                .last()
                .is_some_and(Segment::complete))
            .await,
        "goodbye played to its end before the BYE: {:?}",
        caller.segments()
    );
    if sqlite {
        assert!(
            rows(&path).is_empty(),
            "a failed commit leaves no row: {:?}",
            rows(&path)
        );
    }
    wait_idle(&engine, IDLE_WITHIN).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_commit_failure_plays_unable_and_writes_nothing() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        tokio::join!(commit_failure(40, false), commit_failure(41, true));
    })
    .await
    .expect("test within its time limit");
}

// ---------------------------------------------------------------------------
// 2. The happy path over RFC 4733.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_with_rfc4733_completes() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let (engine, path) = start_sqlite(ivr_config(42, |_| {})).await;
        let mut caller = Caller::dial(&engine, pcmu_offer).await;
        register_by_rfc4733(&mut caller, NUMBER).await;
        let heard = caller.hear_nth("registered", 1).await;
        // The commit happens before "registered" is played.
        let stored = rows(&path);
        assert_eq!(stored.len(), 1, "one row once 'registered' plays");
        assert_eq!(heard.first(), Some(&"welcome"), "{heard:?}");
        assert!(
            heard_run(&heard, &READ_BACK),
            "the number read back digit by digit, then confirm: {heard:?}"
        );
        let heard = caller.await_bye(HEAR_WITHIN).await;
        assert_eq!(
            prompts_after(&heard, "confirm"),
            ["registered", "ecbt_about", "number_1", "minute", "goodbye"],
            "{heard:?}"
        );
        let row = &stored[0];
        assert_eq!(row.number, NUMBER);
        assert_eq!(row.queue.to_string(), "support");
        assert_eq!(row.status, Status::Pending);
        assert_eq!(row.caller_ani, "alice", "From user part");
        assert_eq!(row.inbound_call_id, caller.dialog.call_id);
        assert_eq!(row.ecbt_quoted_minutes, 1, "the ECBT the caller heard");
        assert!(row.queued_at <= row.registered_at);
        assert_eq!(rows(&path).len(), 1);
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

// ---------------------------------------------------------------------------
// 3. In-band DTMF.

/// Sends G.711 audio every 20 ms from the caller's RTP socket: silence, or
/// DTMF tones for the keys queued (each tone −10 dBm0, 80 ms on, 80 ms
/// off), as a phone without RFC 4733 does.
struct Talker {
    keys: Arc<Mutex<VecDeque<char>>>,
    busy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Samples of tone, then of pause, per key (80 ms each).
const TONE_SAMPLES: usize = 640;

impl Talker {
    fn start(sock: &RtpSock, to: SocketAddr, law: Law) -> Talker {
        let keys: Arc<Mutex<VecDeque<char>>> = Arc::default();
        let busy = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let sock = sock.sock.clone();
        let thread = {
            let (keys, busy, stop) = (keys.clone(), busy.clone(), stop.clone());
            std::thread::Builder::new()
                .name("test-talker".into())
                .spawn(move || {
                    let amplitude = DBM0_PEAK * 10f32.powf(-10.0 / 20.0);
                    let pt = PayloadType::new(law.payload_type()).expect("static PT");
                    let mut stream = SendStream::from_seed(fastrand::u64(..), pt, 8000);
                    let mut buf = Vec::with_capacity(200);
                    let mut payload = Vec::with_capacity(160);
                    // (row Hz, column Hz, sample within tone + pause)
                    let mut current: Option<(f32, f32, usize)> = None;
                    let started = Instant::now();
                    let end = started + TEST_LIMIT;
                    for n in 0u32.. {
                        if stop.load(Ordering::Relaxed) || Instant::now() > end {
                            return;
                        }
                        payload.clear();
                        for _ in 0..160 {
                            if current.is_none() {
                                let next = keys.lock().expect("keys").pop_front();
                                current = next.map(|k| {
                                    let (r, c) = key_tones(k);
                                    (r, c, 0)
                                });
                                busy.store(current.is_some(), Ordering::SeqCst);
                            }
                            let sample = match &mut current {
                                Some((row, column, i)) => {
                                    let t = *i as f32 / 8000.0;
                                    let s = if *i < TONE_SAMPLES {
                                        amplitude
                                            * ((std::f32::consts::TAU * *row * t).sin()
                                                + (std::f32::consts::TAU * *column * t).sin())
                                    } else {
                                        0.0
                                    };
                                    *i += 1;
                                    if *i == 2 * TONE_SAMPLES {
                                        current = None;
                                    }
                                    s
                                }
                                None => 0.0,
                            };
                            payload.push(law.encode(sample.round() as i16));
                        }
                        let header = stream.next_header(160, n == 0);
                        write_rtp(&mut buf, &header, &payload);
                        let _ = sock.send_to(&buf, to);
                        // The phone's pacing: one packet every 20 ms.
                        let due = started + Duration::from_millis(20) * (n + 1);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                })
                .expect("start the talker")
        };
        Talker {
            keys,
            busy,
            stop,
            thread: Some(thread),
        }
    }

    /// Queues `keys` and waits until their tones and pauses have been sent.
    async fn press(&self, keys: &str) {
        self.keys.lock().expect("keys").extend(keys.chars());
        self.busy.store(true, Ordering::SeqCst);
        wait_until(Duration::from_secs(5), "talker stuck", || {
            !self.busy.load(Ordering::SeqCst) && self.keys.lock().expect("keys").is_empty()
        })
        .await;
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The row and column frequency of a key.
fn key_tones(key: char) -> (f32, f32) {
    for (r, row) in KEYPAD.iter().enumerate() {
        if let Some(c) = row.iter().position(|&k| k == key) {
            return (ROW_HZ[r], COLUMN_HZ[c]);
        }
    }
    panic!("{key:?} is not on the keypad")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_dtmf_registration() {
    let _shared = TIMING.read().await;
    let logs = logs();
    timeout(TEST_LIMIT, async {
        let (engine, path) = start_sqlite(ivr_config(43, |_| {})).await;
        let caller = Caller::dial(&engine, pcmu_only_offer).await;
        assert_eq!(
            caller.answer.formats,
            [0],
            "no telephone-event in the answer"
        );
        let talker = Talker::start(&caller.rtp, caller.media, Law::Ulaw);
        caller.hear_nth("welcome", 1).await;
        talker.press("1").await;
        caller.hear_nth("enter_number", 1).await;
        talker.press(NUMBER).await;
        let heard = caller.hear_nth("confirm", 1).await;
        assert!(heard_run(&heard, &READ_BACK), "{heard:?}");
        talker.press("1").await;
        let heard = caller.await_bye(HEAR_WITHIN).await;
        drop(talker);
        assert_eq!(
            prompts_after(&heard, "confirm"),
            ["registered", "ecbt_about", "number_1", "minute", "goodbye"],
            "{heard:?}"
        );
        let stored = rows(&path);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0].number, NUMBER);
        let digits = logs.lines(&[&caller.dialog.call_id, " dtmf"]);
        assert_eq!(digits.len(), 12, "1, ten digits, 1: {digits:#?}");
        assert!(
            digits.iter().all(|l| l.contains("source=\"inband\"")),
            "every key heard in the audio: {digits:#?}"
        );
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

// ---------------------------------------------------------------------------
// 4. RFC 4733 and INFO for every key.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_rfc4733_together_count_once() {
    let _shared = TIMING.read().await;
    let logs = logs();
    timeout(TEST_LIMIT, async {
        let (engine, path) = start_sqlite(ivr_config(44, |_| {})).await;
        let mut caller = Caller::dial(&engine, pcmu_offer).await;
        // Each key both ways, the second copy 30 ms after the first (the
        // phone's script: the sleeps below pace what it sends); INFO leads
        // on every other key.
        async fn both(caller: &mut Caller, keys: &str, index: &mut usize) {
            for key in keys.chars() {
                let seq = if (*index).is_multiple_of(2) {
                    let first = caller.key_down(key);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let seq = caller.info(key).await;
                    caller.key_up(first).await;
                    seq
                } else {
                    let seq = caller.info(key).await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let first = caller.key_down(key);
                    caller.key_up(first).await;
                    seq
                };
                let r = caller.ua.final_response(seq, "INFO").await;
                assert_eq!(r.status, 200, "INFO answered {}", r.status);
                *index += 1;
            }
        }
        let mut index = 0;
        caller.hear_nth("welcome", 1).await;
        both(&mut caller, "1", &mut index).await;
        caller.hear_nth("enter_number", 1).await;
        both(&mut caller, NUMBER, &mut index).await;
        let heard = caller.hear_nth("confirm", 1).await;
        assert!(heard_run(&heard, &READ_BACK), "{heard:?}");
        both(&mut caller, "1", &mut index).await;
        let heard = caller.await_bye(HEAR_WITHIN).await;
        assert_eq!(
            prompts_after(&heard, "confirm"),
            ["registered", "ecbt_about", "number_1", "minute", "goodbye"],
            "{heard:?}"
        );
        let stored = rows(&path);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0].number, NUMBER, "no digit counted twice");
        // Both copies of every key reached the engine: each source logged
        // 12 keys, and 12 copies were dropped.
        let id = caller.dialog.call_id.as_str();
        let info = logs.lines(&[id, " dtmf", "source=\"info\""]);
        let rtp = logs.lines(&[id, " dtmf", "source=\"rfc4733\""]);
        let dropped = logs.lines(&[id, "duplicate digit dropped"]);
        assert_eq!(info.len(), 12, "{info:#?}");
        assert_eq!(rtp.len(), 12, "{rtp:#?}");
        assert_eq!(dropped.len(), 12, "{dropped:#?}");
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

// ---------------------------------------------------------------------------
// 5. Gates.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_runtime_switch() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let (engine, path) = start_sqlite(ivr_config(45, |_| {})).await;
        // Registration off: greeting, "unable", hang-up; '1' does nothing.
        assert!(
            engine
                .set_gates(Gates {
                    registration_enabled: false,
                    launch_enabled: true,
                })
                .await
        );
        let mut closed = Caller::dial(&engine, pcmu_offer).await;
        closed.hear_nth("welcome", 1).await;
        closed.press("1").await;
        // Launching off, registration on: no ECBT anywhere.
        assert!(
            engine
                .set_gates(Gates {
                    registration_enabled: true,
                    launch_enabled: false,
                })
                .await
        );
        let mut open = Caller::dial(&engine, pcmu_offer).await;

        let heard = closed.await_bye(HEAR_WITHIN).await;
        assert_eq!(heard, ["welcome", "unable"], "no offer, no ECBT");
        assert!(
            closed
                .segments_settle(Duration::from_secs(2), |s| s.iter().all(Segment::complete))
                .await,
            "'1' does not cut the closing prompts: {:?}",
            closed.segments()
        );

        let heard = open.hear_nth("callback_offer", 1).await;
        assert_eq!(
            heard[..2],
            ["welcome", "callback_offer"],
            "greeting without ECBT"
        );
        register_by_rfc4733(&mut open, NUMBER).await;
        let heard = open.await_bye(HEAR_WITHIN).await;
        assert_eq!(
            prompts_after(&heard, "confirm"),
            ["registered_asap", "goodbye"],
            "{heard:?}"
        );
        for ecbt in ["ecbt_intro", "ecbt_about", "ecbt_more_than"] {
            assert_eq!(count(&heard, ecbt), 0, "{ecbt} heard: {heard:?}");
        }
        let stored = rows(&path);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0].number, NUMBER);
        assert_eq!(
            stored[0].ecbt_quoted_minutes, 0,
            "no ECBT was quoted to the caller"
        );
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_business_hours_play_unable() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let config = ivr_config(46, |c| {
            for day in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] {
                c.org.hours.insert(day.to_owned(), "closed".to_owned());
            }
        });
        let (engine, path) = start_sqlite(config).await;
        let mut caller = Caller::dial(&engine, pcmu_offer).await;
        caller.hear_nth("welcome", 1).await;
        caller.press("1").await;
        let heard = caller.await_bye(HEAR_WITHIN).await;
        assert_eq!(heard, ["welcome", "unable"]);
        assert!(rows(&path).is_empty());
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

// ---------------------------------------------------------------------------
// 6. A second registration of the same number.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_scheduled() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let (engine, path) = start_sqlite(ivr_config(47, |_| {})).await;
        // Everything typed ahead during the greeting: '1', the number, '1'.
        let keys = format!("1{NUMBER}1");
        let mut first = Caller::dial(&engine, pcmu_offer).await;
        first.hear_nth("welcome", 1).await;
        first.press(&keys).await;
        first.hear_nth("registered", 1).await;
        let mut second = Caller::dial(&engine, pcmu_offer).await;
        second.hear_nth("welcome", 1).await;
        second.press(&keys).await;
        let heard = first.await_bye(HEAR_WITHIN).await;
        assert_eq!(
            prompts_after(&heard, "registered"),
            ["ecbt_about", "number_1", "minute", "goodbye"],
            "{heard:?}"
        );
        let heard = second.await_bye(HEAR_WITHIN).await;
        // The typed-ahead keys cut "enter_number" and the read-back short
        // (maybe before a frame of them was sent); the end is certain.
        assert!(
            heard.ends_with(&["already_scheduled", "goodbye"]),
            "{heard:?}"
        );
        assert_eq!(count(&heard, "registered"), 0, "{heard:?}");
        let stored = rows(&path);
        assert_eq!(stored.len(), 1, "no second row: {stored:?}");
        assert_eq!(stored[0].number, NUMBER);
        assert_eq!(stored[0].inbound_call_id, first.dialog.call_id);
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

// ---------------------------------------------------------------------------
// 7. Three invalid entries: back in line at the original place.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_to_queue_keeps_position() {
    let _shared = TIMING.read().await;
    let logs = logs();
    timeout(TEST_LIMIT, async {
        // One agent, 5 minutes a call: each place ahead is 5 minutes.
        let config = ivr_config(48, |c| {
            c.ecbt.aht_s = 300;
            c.ecbt.floor_minutes = 1;
            c.queues[0].staffed_agents = 1;
            c.ivr.max_invalid = 3;
        });
        let (engine, path) = start_sqlite(config).await;
        let mut a = Caller::dial(&engine, pcmu_offer).await;
        a.hear_nth("welcome", 1).await;
        let mut b = Caller::dial(&engine, pcmu_offer).await;
        b.hear_nth("welcome", 1).await;
        let mut c = Caller::dial(&engine, pcmu_offer).await;

        // A leaves the hold for the number entry and keys three invalid
        // numbers (a leading 1 is never valid).
        a.press("1").await;
        for n in 1..=3 {
            a.hear_nth("enter_number", n).await;
            a.press("1234567890").await;
        }
        let heard = a.hear_nth("returning_to_queue", 1).await;
        assert_eq!(count(&heard, "invalid_number"), 3, "{heard:?}");
        let heard = a
            .hear("the ECBT after the return", |h| {
                h.iter()
                    .position(|n| *n == "returning_to_queue")
                    .is_some_and(|at| h[at..].contains(&"callback_offer"))
            })
            .await;
        assert_eq!(
            prompts_after(&heard, "returning_to_queue")[..5],
            [
                "ecbt_intro",
                "ecbt_about",
                "number_1",
                "minute",
                "callback_offer"
            ],
            "A is still first in line: {heard:?}"
        );

        // B (one ahead) and C (two ahead) heard their own places.
        let heard_b = b.hear_nth("minutes", 1).await;
        let heard_c = c.hear_nth("minutes", 1).await;
        assert!(
            heard_run(
                &heard_b,
                &["ecbt_intro", "ecbt_about", "number_5", "minutes"]
            ),
            "{heard_b:?}"
        );
        assert!(
            heard_run(
                &heard_c,
                &["ecbt_intro", "ecbt_about", "number_10", "minutes"]
            ),
            "{heard_c:?}"
        );
        // The engine's own account: A returned at position 1, and its
        // refreshed estimate was computed for position 1.
        let a_id = a.dialog.call_id.as_str();
        let returned = logs.lines(&[a_id, "returned to the queue"]);
        assert_eq!(returned.len(), 1, "{returned:#?}");
        assert!(returned[0].contains("position=Some(1)"), "{}", returned[0]);
        let estimates = logs.lines(&[a_id, "ECBT estimated"]);
        assert_eq!(
            estimates.len(),
            2,
            "at Start and after the return: {estimates:#?}"
        );
        assert!(
            estimates.iter().all(|l| l.contains("position=1")),
            "{estimates:#?}"
        );
        assert!(rows(&path).is_empty(), "nothing registered");

        a.hang_up().await;
        b.hang_up().await;
        c.hang_up().await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}

// ---------------------------------------------------------------------------
// 8. Barge-in.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_stops_the_greeting_and_keeps_the_digit() {
    let _shared = TIMING.read().await;
    timeout(TEST_LIMIT, async {
        let (engine, _path) = start_sqlite(ivr_config(49, |_| {})).await;
        let mut caller = Caller::dial(&engine, pcmu_offer).await;
        caller.hear_nth("welcome", 1).await;
        let pressed = Instant::now();
        caller.press("1").await;
        caller.hear_nth("enter_number", 1).await;
        let segments = caller.segments();
        let [welcome, .., enter] = segments.as_slice() else {
            panic!("{segments:?}")
        };
        assert_eq!(welcome.name, "welcome");
        assert!(
            !welcome.complete(),
            "welcome stopped after {} of {} frames",
            welcome.frames,
            welcome.total
        );
        assert_eq!(enter.name, "enter_number");
        assert_eq!(
            caller.heard(),
            ["welcome", "enter_number"],
            "nothing else of the greeting played"
        );
        let first_enter = caller.ear.with(|p| {
            p.iter()
                .filter(|p| p.pt == 0)
                .nth(enter.start)
                .expect("enter_number's first packet")
                .at
        });
        let latency = first_enter.saturating_duration_since(pressed);
        // A measurement, not a bound: that the key cut the greeting short is
        // asserted above, when is the IVR flow's (exact instants there).
        eprintln!("barge-in: enter_number {latency:?} after the key");
        caller.hang_up().await;
        wait_idle(&engine, IDLE_WITHIN).await;
        engine.shutdown().await;
    })
    .await
    .expect("test within its time limit");
}
