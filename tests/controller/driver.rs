//! The controller on a fake clock (quinn's `Pair::drive`, str0m's
//! `progress()`): no socket, no thread, no sleep.
//!
//! - **Clock**: `now` starts at `t0` and only moves when a test says so;
//!   [`Harness::run_until`] jumps from one wake-up to the next (the
//!   controller's `poll_timeout`, or a prompt finishing), so a 40-second call
//!   runs in microseconds and every instant asserted is exact. The wall clock
//!   follows from [`WALL0`].
//! - **Media plane** ([`FakeMedia`]): records every command; answers `Add`
//!   with `Ready` (or `AddFailed` for ports the test marks busy), `Remove`
//!   with `Removed`; a play list of prompts reports `Idle` when the
//!   prompts' durations have passed on the fake clock (loops never end).
//!   Digits and RTP timeouts are events a test injects.
//! - **Store**: every request is carried out at once, in order, on an
//!   in-memory SQLite store with `b2bua::store::execute` (the engine's own
//!   path), unless the test holds replies back.
//! - **SIP peers**: [`Peer`] writes what a carrier, an agent phone or a trunk
//!   sends; everything the controller transmits is parsed and kept with its
//!   instant in [`Harness::sent`].

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use callbackd::b2bua::media::{MediaCommand, MediaEvent, StreamParams};
use callbackd::b2bua::store::{StoreReply, StoreRequest, execute};
use callbackd::b2bua::{Controller, Setup, WallClock};
use callbackd::callback::store::{CallbackRow, SqliteStore, Store};
use callbackd::callback::trunk::{Target as TrunkTarget, TrunkTransport};
use callbackd::config::Config;
use callbackd::media::dtmf::DtmfDigit;
use callbackd::media::player::Item;
use callbackd::media::prompt::PromptLibrary;
use callbackd::sip::endpoint::{Destination, Flow, FlowTransport};
use callbackd::sip::message::{self, Message, Request, Response};

/// The wall clock at `t0`: a Monday afternoon, inside any business hours.
pub const WALL0: &str = "2026-12-07T15:00:00Z";

/// The engine's own address in these tests.
pub const ENGINE: &str = "127.0.0.1:5060";

/// A configuration for the controller tests: `extra` TOML is appended
/// (sections not named keep their defaults).
pub fn config(extra: &str) -> Config {
    let text =
        format!("[sip]\nbind = \"{ENGINE}\"\n[rtp]\nport_min = 20000\nport_max = 20999\n{extra}");
    Config::from_toml_str(&text, "controller-test.toml").expect("valid test config")
}

/// The repository's prompts, loaded once for every test of the binary.
pub fn prompts() -> Arc<PromptLibrary> {
    static LIB: OnceLock<Arc<PromptLibrary>> = OnceLock::new();
    LIB.get_or_init(|| {
        let config = config("");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let settings = config.check(root).expect("valid config");
        Arc::new(callbackd::engine::load_prompts(&settings).expect("prompts load"))
    })
    .clone()
}

/// One message the controller sent, with when (offset from `t0`) and where.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Duration,
    pub to: Destination,
    pub message: Message,
}

impl Sent {
    pub fn response(&self) -> Option<&Response> {
        match &self.message {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }

    pub fn request(&self) -> Option<&Request> {
        match &self.message {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }

    pub fn call_id(&self) -> &str {
        match &self.message {
            Message::Request(r) => r.headers.call_id.as_str(),
            Message::Response(r) => r.headers.call_id.as_str(),
        }
    }

    pub fn body(&self) -> &[u8] {
        match &self.message {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// `INVITE`, `200 INVITE`, … — for readable failure messages.
    pub fn label(&self) -> String {
        match &self.message {
            Message::Request(r) => r.method.as_str().to_owned(),
            Message::Response(r) => format!("{} {}", r.status, r.headers.cseq.method.as_str()),
        }
    }
}

/// A stream of the fake media plane.
#[derive(Debug, Clone)]
pub struct FakeStream {
    pub port: u16,
    pub call_id: Arc<str>,
    pub params: StreamParams,
    /// The current play list's prompt names (`loop:` before a loop's).
    pub playing: Vec<String>,
    pub token: u32,
    /// When the current play list runs out (`None`: silent or looping).
    pub idle_at: Option<Instant>,
    pub bridged_with: Option<u64>,
}

/// The fake media plane.
#[derive(Default)]
pub struct FakeMedia {
    pub streams: HashMap<u64, FakeStream>,
    pub busy_ports: HashSet<u16>,
    /// This many more `Add`s fail (a port held by another process).
    pub fail_next_adds: usize,
    /// While true, `Ready` events wait (a slow bind) in `held_ready`.
    pub hold_ready: bool,
    held_ready: VecDeque<MediaEvent>,
    /// Every command, with its instant (offset from `t0`).
    pub log: Vec<(Duration, MediaCommand)>,
    /// Every play list asked for: (offset, stream key, prompt names).
    pub plays: Vec<(Duration, u64, Vec<String>)>,
    events: VecDeque<MediaEvent>,
}

impl FakeMedia {
    fn command(&mut self, lib: &PromptLibrary, t0: Instant, now: Instant, command: &MediaCommand) {
        match command {
            MediaCommand::Add {
                key,
                call_id,
                ports,
                params,
            } => {
                if self.busy_ports.contains(ports) || self.fail_next_adds > 0 {
                    self.fail_next_adds = self.fail_next_adds.saturating_sub(1);
                    self.events.push_back(MediaEvent::AddFailed { key: *key });
                    return;
                }
                self.streams.insert(
                    *key,
                    FakeStream {
                        port: *ports,
                        call_id: call_id.clone(),
                        params: params.clone(),
                        playing: Vec::new(),
                        token: 0,
                        idle_at: None,
                        bridged_with: None,
                    },
                );
                if self.hold_ready {
                    self.held_ready.push_back(MediaEvent::Ready { key: *key });
                } else {
                    self.events.push_back(MediaEvent::Ready { key: *key });
                }
            }
            MediaCommand::Update { key, params } => {
                if let Some(s) = self.streams.get_mut(key) {
                    s.params = params.clone();
                }
            }
            MediaCommand::Play { key, items, token } => {
                let names: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        Item::Prompt(id) => lib.name(*id).to_owned(),
                        Item::Loop(id) => format!("loop:{}", lib.name(*id)),
                        Item::Silence(d) => format!("silence:{}ms", d.as_millis()),
                    })
                    .collect();
                self.plays.push((now - t0, *key, names.clone()));
                let Some(s) = self.streams.get_mut(key) else {
                    return;
                };
                let looping = items.iter().any(|i| matches!(i, Item::Loop(_)));
                let length: Duration = items
                    .iter()
                    .map(|i| match i {
                        Item::Prompt(id) => lib.duration(*id),
                        Item::Silence(d) => *d,
                        Item::Loop(_) => Duration::ZERO,
                    })
                    .sum();
                s.playing = names;
                s.token = *token;
                s.idle_at = (!looping && !items.is_empty()).then_some(now + length);
            }
            MediaCommand::Remove { key } => {
                self.streams.remove(key);
                self.events.push_back(MediaEvent::Removed { key: *key });
            }
            MediaCommand::Extra { .. }
            | MediaCommand::Record { .. }
            | MediaCommand::Reload { .. } => {}
            MediaCommand::Bridge { a, b } => {
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(s) = self.streams.get_mut(x) {
                        s.bridged_with = Some(*y);
                        s.playing.clear();
                        s.idle_at = None;
                    }
                }
            }
            MediaCommand::Unbridge { a, b } => {
                for x in [a, b] {
                    if let Some(s) = self.streams.get_mut(x) {
                        s.bridged_with = None;
                    }
                }
            }
        }
    }

    /// The earliest instant a play list runs out.
    fn next_idle(&self) -> Option<Instant> {
        self.streams.values().filter_map(|s| s.idle_at).min()
    }

    /// Play lists that ran out by `now` report `Idle`.
    fn fire_idle(&mut self, now: Instant) {
        let mut due: Vec<(Instant, u64)> = self
            .streams
            .iter()
            .filter_map(|(k, s)| s.idle_at.filter(|at| *at <= now).map(|at| (at, *k)))
            .collect();
        due.sort();
        for (_, key) in due {
            if let Some(s) = self.streams.get_mut(&key) {
                s.idle_at = None;
                s.playing.clear();
                self.events.push_back(MediaEvent::Idle {
                    key,
                    token: s.token,
                });
            }
        }
    }
}

/// The controller, its fake surroundings and what it did.
pub struct Harness {
    pub ctl: Controller,
    /// The checked configuration the controller started with (change its
    /// organisation with `with_organisation`, then `ctl.apply_settings`).
    pub settings: callbackd::config::Settings,
    pub t0: Instant,
    pub now: Instant,
    pub store: SqliteStore,
    pub media: FakeMedia,
    /// Everything transmitted, in order.
    pub sent: Vec<Sent>,
    /// Every store request, with its instant.
    pub store_log: Vec<(Duration, StoreRequest)>,
    /// Phones that answer every BYE sent to them with 200 at once.
    pub answers_bye: HashSet<SocketAddr>,
    /// Phones that answer every OPTIONS sent to them (keep-alives) with 200
    /// at once.
    pub answers_options: HashSet<SocketAddr>,
    /// While true, store replies wait in `held` (a slow disk).
    pub hold_store: bool,
    pub held: VecDeque<StoreReply>,
    prompts: Arc<PromptLibrary>,
    longest_ring: Duration,
    /// Wake-ups run in a row at the same instant: a timer that stays in the
    /// past makes an event loop spin, so past a bound the test fails.
    same_instant: u32,
}

/// More wake-ups than this at one instant is a timer stuck in the past.
const MAX_WAKEUPS_AT_ONE_INSTANT: u32 = 1000;

impl Harness {
    /// A controller for `config` (checked here) at `t0`, with no trunk target.
    pub fn new(config: &Config) -> Harness {
        Harness::with_trunk(config, Vec::new())
    }

    /// A controller for `config` at `t0` whose trunk resolved to `targets`.
    pub fn with_trunk(config: &Config, trunk_targets: Vec<TrunkTarget>) -> Harness {
        let t0 = Instant::now();
        let prompts = prompts();
        let wall: Timestamp = WALL0.parse().expect("WALL0 is a timestamp");
        let settings = config
            .clone()
            .check(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("the configuration passes its check");
        let ctl = Controller::new(
            &settings,
            Setup {
                prompts: prompts.clone(),
                advertised_port: 5060,
                trunk_targets,
                nonce_key: [7; 32],
                seed: 7,
                clock: WallClock { instant: t0, wall },
                recordings_dir: std::env::temp_dir().join("callbackd-controller-test-unused"),
            },
        );
        let longest_ring = ctl.longest_ring();
        let mut store = SqliteStore::open_in_memory().expect("in-memory store");
        callbackd::callback::store::LaunchStore::set_claimant(
            &mut store,
            "controller-test",
            Duration::from_secs(30),
        );
        let mut h = Harness {
            ctl,
            settings,
            t0,
            now: t0,
            store,
            media: FakeMedia::default(),
            sent: Vec::new(),
            store_log: Vec::new(),
            answers_bye: HashSet::new(),
            answers_options: HashSet::new(),
            hold_store: false,
            held: VecDeque::new(),
            prompts,
            longest_ring,
            same_instant: 0,
        };
        h.settle();
        h
    }

    /// Offset of `now` from `t0`.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// A SIP message from `from` (UDP) at the current instant.
    pub fn deliver(&mut self, from: SocketAddr, text: &str) {
        let flow = Flow {
            remote: from,
            transport: FlowTransport::Udp,
        };
        self.ctl.handle_message(self.now, text.as_bytes(), flow);
        self.settle();
    }

    /// A media event at the current instant (a digit, an RTP timeout).
    pub fn media_event(&mut self, event: MediaEvent) {
        self.ctl.handle_media_event(self.now, event);
        self.settle();
    }

    /// An RFC 4733 digit on the stream of the call `call_id`.
    pub fn digit(&mut self, call_id: &str, key: char) {
        let stream = self.stream_key(call_id);
        let digit = DtmfDigit::try_from(key).expect("a DTMF key");
        self.media_event(MediaEvent::Digit {
            key: stream,
            digit,
            inband: false,
        });
    }

    /// Several digits, `gap` apart (the clock moves between them).
    pub fn digits(&mut self, call_id: &str, keys: &str, gap: Duration) {
        for (i, key) in keys.chars().enumerate() {
            if i > 0 {
                self.advance(gap);
            }
            self.digit(call_id, key);
        }
    }

    /// Store replies held back so far are delivered now.
    pub fn release_store(&mut self) {
        self.hold_store = false;
        while let Some(reply) = self.held.pop_front() {
            self.ctl.handle_store_reply(self.now, reply);
            self.settle();
        }
    }

    /// `Ready` events held back so far are delivered now.
    pub fn release_media(&mut self) {
        while let Some(event) = self.media.held_ready.pop_front() {
            self.ctl.handle_media_event(self.now, event);
            self.settle();
        }
    }

    /// Moves the clock forward by `d`, running every wake-up on the way.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs every wake-up up to `until`, then sets the clock there.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(next) = self.next_wakeup() {
            if next > until {
                break;
            }
            self.step(next);
        }
        self.now = until.max(self.now);
    }

    /// Runs wake-ups until `pred` holds for something sent, at most `limit`
    /// from now; gives its index in [`Harness::sent`]. Panics otherwise.
    pub fn run_until_sent(&mut self, limit: Duration, pred: impl Fn(&Sent) -> bool) -> usize {
        let from = self.sent.len();
        let until = self.now + limit;
        loop {
            if let Some(i) = self.sent[from..].iter().position(&pred) {
                return from + i;
            }
            match self.next_wakeup() {
                Some(next) if next <= until => self.step(next),
                _ => panic!(
                    "nothing expected was sent within {limit:?}; sent since: {:?}",
                    self.sent[from..]
                        .iter()
                        .map(Sent::label)
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        [self.ctl.poll_timeout(), self.media.next_idle()]
            .into_iter()
            .flatten()
            .min()
    }

    fn step(&mut self, at: Instant) {
        if at <= self.now {
            self.same_instant += 1;
            assert!(
                self.same_instant < MAX_WAKEUPS_AT_ONE_INSTANT,
                "the controller wakes again and again at {:?}: a timer stays in the past",
                self.now - self.t0
            );
        } else {
            self.same_instant = 0;
        }
        self.now = at.max(self.now);
        self.media.fire_idle(self.now);
        if self.ctl.poll_timeout().is_some_and(|t| t <= self.now) {
            self.ctl.handle_timeout(self.now);
        }
        self.settle();
    }

    /// Carries out everything the controller asks for, and feeds back what
    /// that produces, until it is quiet.
    pub fn settle(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(command) = self.ctl.poll_media() {
                progressed = true;
                self.media
                    .command(&self.prompts, self.t0, self.now, &command);
                self.media.log.push((self.now - self.t0, command));
            }
            while let Some(request) = self.ctl.poll_store() {
                progressed = true;
                self.store_log.push((self.now - self.t0, request.clone()));
                if let Some(reply) = execute(&mut self.store, self.longest_ring, request) {
                    if self.hold_store {
                        self.held.push_back(reply);
                    } else {
                        self.ctl.handle_store_reply(self.now, reply);
                    }
                }
            }
            let mut to_answer = Vec::new();
            while let Some(t) = self.ctl.poll_transmit() {
                progressed = true;
                let message = message::parse(&t.data).expect("the controller sends valid SIP");
                if let (Message::Request(r), Destination::Udp(to)) = (&message, &t.destination)
                    && ((r.method.as_str() == "BYE" && self.answers_bye.contains(to))
                        || (r.method.as_str() == "OPTIONS" && self.answers_options.contains(to)))
                {
                    to_answer.push((*to, r.clone()));
                }
                self.sent.push(Sent {
                    at: self.now - self.t0,
                    to: t.destination,
                    message,
                });
            }
            for (from, req) in to_answer {
                let ok = answer(&req, 200, "", &from.to_string(), None);
                let flow = Flow {
                    remote: from,
                    transport: FlowTransport::Udp,
                };
                self.ctl.handle_message(self.now, ok.as_bytes(), flow);
            }
            while let Some(event) = self.media.events.pop_front() {
                progressed = true;
                self.ctl.handle_media_event(self.now, event);
            }
            if !progressed {
                return;
            }
        }
    }

    // -----------------------------------------------------------------
    // Reading what happened

    /// The media stream key of the call `call_id`.
    pub fn stream_key(&self, call_id: &str) -> u64 {
        self.media
            .log
            .iter()
            .find_map(|(_, c)| match c {
                MediaCommand::Add {
                    key, call_id: id, ..
                } if &**id == call_id => Some(*key),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no stream for {call_id}"))
    }

    /// Play lists asked for on the call `call_id`: (offset, prompt names).
    pub fn plays(&self, call_id: &str) -> Vec<(Duration, Vec<String>)> {
        let key = self.stream_key(call_id);
        self.media
            .plays
            .iter()
            .filter(|(_, k, _)| *k == key)
            .map(|(at, _, names)| (*at, names.clone()))
            .collect()
    }

    /// The offset at which a play list containing `prompt` was first asked
    /// for on `call_id`.
    pub fn played_at(&self, call_id: &str, prompt: &str) -> Option<Duration> {
        self.plays(call_id)
            .into_iter()
            .find(|(_, names)| names.iter().any(|n| n == prompt))
            .map(|(at, _)| at)
    }

    /// How long `prompt` plays.
    pub fn prompt_len(&self, prompt: &str) -> Duration {
        let id = self.prompts.id(prompt).expect("a known prompt");
        self.prompts.duration(id)
    }

    /// Messages sent about the call `call_id`, labelled, with offsets.
    pub fn sent_for(&self, call_id: &str) -> Vec<(Duration, String)> {
        self.sent
            .iter()
            .filter(|s| s.call_id() == call_id)
            .map(|s| (s.at, s.label()))
            .collect()
    }

    /// Responses with `status` to `method` for `call_id`.
    pub fn responses(&self, call_id: &str, status: u16, method: &str) -> Vec<&Sent> {
        self.sent
            .iter()
            .filter(|s| {
                s.call_id() == call_id
                    && s.response().is_some_and(|r| {
                        r.status == status && r.headers.cseq.method.as_str() == method
                    })
            })
            .collect()
    }

    /// Requests of `method` sent for `call_id`.
    pub fn requests(&self, call_id: &str, method: &str) -> Vec<&Sent> {
        self.sent
            .iter()
            .filter(|s| {
                s.call_id() == call_id && s.request().is_some_and(|r| r.method.as_str() == method)
            })
            .collect()
    }

    /// Every stored callback.
    pub fn rows(&self) -> Vec<CallbackRow> {
        self.store.list().expect("list the store")
    }
}

/// A scripted SIP peer (a carrier's UAC) on one dialog.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    pub cseq: u32,
    branch: u32,
}

impl Peer {
    /// A caller at `addr` with a fresh Call-ID.
    pub fn new(addr: &str, call_id: &str) -> Peer {
        Peer {
            addr: addr.parse().expect("a socket address"),
            call_id: call_id.to_owned(),
            from_tag: format!("tag-{call_id}"),
            to_tag: None,
            cseq: 0,
            branch: 0,
        }
    }

    /// A new request in (or opening) the dialog; `cseq` is the next one
    /// unless the method is ACK or CANCEL (which reuse the INVITE's).
    pub fn request(&mut self, method: &str, body: Option<&str>) -> String {
        if method != "ACK" && method != "CANCEL" {
            self.cseq += 1;
        }
        if method != "CANCEL" {
            self.branch += 1;
        }
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let (content_type, body) = match body {
            Some(b) => ("Content-Type: application/sdp\r\n", b),
            None => ("", ""),
        };
        format!(
            "{method} sip:3125550100@{ENGINE} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {addr};branch=z9hG4bK-{call_id}-{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:3125550111@{ip}>;tag={from_tag}\r\n\
             To: <sip:3125550100@{ENGINE}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:carrier@{addr}>\r\n\
             Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE\r\n\
             {content_type}\
             Content-Length: {len}\r\n\r\n{body}",
            addr = self.addr,
            ip = self.addr.ip(),
            call_id = self.call_id,
            branch = self.branch,
            from_tag = self.from_tag,
            cseq = self.cseq,
            len = body.len(),
        )
    }

    /// Learns the engine's To-tag from a response.
    pub fn learn(&mut self, response: &Response) {
        if let Some(tag) = &response.headers.to.tag {
            self.to_tag = Some(tag.to_string());
        }
    }

    /// A 200 to a request the engine sent (its BYE).
    pub fn ok_to(&self, req: &Request) -> String {
        let mut text = String::from("SIP/2.0 200 OK\r\n");
        for via in &req.headers.vias {
            text.push_str(&format!("Via: {}\r\n", via.raw));
        }
        text.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContent-Length: 0\r\n\r\n",
            req.headers.from.raw,
            req.headers.to.raw,
            req.headers.call_id.as_str(),
            req.headers.cseq.seq,
            req.headers.cseq.method.as_str(),
        ));
        text
    }
}

/// An SDP offer: PCMU and telephone-event on 101 at 127.0.0.1:`port`,
/// session version `version`, direction `dir` (`sendrecv`, `sendonly`, …).
pub fn offer(port: u16, version: u32, dir: &str) -> String {
    format!(
        "v=0\r\no=carrier 4242 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
         t=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\na={dir}\r\n"
    )
}

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A UDP trunk target at `addr`.
pub fn udp_target(addr: &str) -> TrunkTarget {
    TrunkTarget {
        addr: addr.parse().expect("a socket address"),
        transport: TrunkTransport::Udp,
        priority: 0,
        weight: 0,
        name: addr.into(),
    }
}

/// A response from a scripted UAS (an agent phone, the carrier) to a
/// request the controller sent: Vias, From, Call-ID and CSeq copied, To
/// tagged with `tag`, a Contact at `contact`, and SDP when given.
pub fn answer(req: &Request, status: u16, tag: &str, contact: &str, sdp: Option<&str>) -> String {
    let mut text = format!("SIP/2.0 {status} {}\r\n", message::reason_phrase(status));
    for via in &req.headers.vias {
        text.push_str(&format!("Via: {}\r\n", via.raw));
    }
    let to = if req.headers.to.tag.is_some() {
        req.headers.to.raw.to_string()
    } else {
        format!("{};tag={tag}", req.headers.to.raw)
    };
    let (ct, body) = match sdp {
        Some(b) => ("Content-Type: application/sdp\r\n", b),
        None => ("", ""),
    };
    text.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContact: <sip:peer@{contact}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        req.headers.from.raw,
        req.headers.call_id.as_str(),
        req.headers.cseq.seq,
        req.headers.cseq.method.as_str(),
        body.len(),
    ));
    text
}

/// An ACK (or BYE) from a scripted UAS in the dialog of the INVITE `req`
/// it answered with To-tag `tag`; `cseq` for a BYE, the INVITE's for ACK.
pub fn in_dialog(req: &Request, method: &str, tag: &str, from_addr: &str, cseq: u32) -> String {
    // The UAS's own request: From is the INVITE's To (with our tag), To is
    // the INVITE's From.
    format!(
        "{method} sip:callbackd@{ENGINE} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from_addr};branch=z9hG4bK-{tag}-{method}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: {};tag={tag}\r\n\
         To: {}\r\n\
         Call-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        req.headers.to.raw,
        req.headers.from.raw,
        req.headers.call_id.as_str(),
    )
}
