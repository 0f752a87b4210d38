//! REGISTER handling for agents' phones (RFC 3261 §10.3), sans-IO.
//!
//! Agents' softphones register to callbackd so it can call them. Users and
//! passwords come from the configuration; each REGISTER is authenticated
//! with Digest ([`crate::sip::digest`]), and each binding keeps the [`Flow`]
//! the REGISTER arrived on: behind a NAT the Contact names a private address,
//! so the agent is called back where its REGISTER came from (the idea of
//! RFC 5626, without its flow tokens).
//!
//! Keeping that flow open (a NAT forgets an idle UDP mapping in as little
//! as 30 s, and the phone then hears nothing from us):
//!
//! - **Keep-alives** (like Kamailio's nathelper with `sipping`, or
//!   Asterisk's `qualify`): every `keepalive` interval (80–100 % of it,
//!   fixed per source address: [`keepalive_period`]) each binding on UDP
//!   gets an OPTIONS, out of dialog, to its Contact through its flow
//!   ([`Registrar::poll_keepalive`]; the caller builds and sends it). An
//!   OPTIONS rather than RFC 5626's CRLF or STUN: every SIP phone answers
//!   it (§11), and the answer tells a live phone from a dead one. Anything
//!   heard from the flow's address counts as an answer
//!   ([`Registrar::heard_from`]); after [`KEEPALIVE_MISSES`] pings in a row
//!   go unanswered the binding is dropped, like an expired one.
//! - **Shorter Expires behind NAT**: a REGISTER whose source differs from
//!   its Contact or from its top Via's sent-by (what RFC 3581's
//!   `received`/`rport` would record) gets at most `nat_expires`, so the
//!   phone's own refreshes keep the mapping open too.
//! - **TCP connections held**: a connection that carries a live binding is
//!   reported ([`Registrar::poll_connection_hold`]) so the transport does
//!   not close it as idle.
//!
//! ```text
//!  REGISTER ─▶ To a SIP(S) URI? ── no ─▶ 400
//!                 ▼
//!              authenticate (§10.3 step 3) ── no/wrong credentials ─▶ 401 + challenges
//!                 │                          └ old nonce, right password ─▶ 401 stale=true
//!                 ▼                          └ malformed credentials ─▶ 400
//!              To user = authenticated user? (step 4) ── no ─▶ 403
//!                 ▼
//!              Contact: * ? (step 6) ── with Expires: 0 only ─▶ remove all ─▶ 200
//!                 ▼                    └ otherwise ─▶ 400
//!              each Contact: expires = param | Expires | default (step 7)
//!                 │  0 < expires < min_expires ─▶ 423 + Min-Expires
//!                 │  same Call-ID, CSeq not higher ─▶ 500 (out of order)
//!                 ▼
//!              commit all or nothing; 200 + every binding with its expires + Date (step 8)
//! ```
//!
//! Brute force (before all of the above): an address whose REGISTERs
//! failed `slowdown_after` times (wrong password or unknown user) may try
//! once a second, then every 2, 4, 8 … 64 s; attempts in between get 403
//! without being examined. After `block_after` failures every REGISTER from
//! it gets 403 for `block_for`. The table of addresses is bounded
//! ([`MAX_GUARDED_SOURCES`]); nonces cost nothing per challenge (they are
//! HMAC-signed and verify themselves; only nonces used with the right
//! password are remembered, boundedly, against replay).
//!
//! Not done here (the endpoint does it before calling in): Require/420
//! (step 2). Not done at all: the domain check of the Request-URI (steps
//! 1, 5: this registrar serves any domain), `q` ordering (bindings are
//! listed most recently refreshed first), URI comparison beyond
//! case-insensitive equality (§19.1.4).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::fmt::rfc2822::DateTimePrinter;
use tracing::info;

use crate::sip::digest::{Algorithm, AuthError, Challenger, DigestRequest, Secret};
use crate::sip::endpoint::{Flow, FlowTransport};
use crate::sip::message::{CallId, HeaderName, Method, NameAddr, Request, SipUri, params_iter};

/// Registrar settings.
#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    /// The Digest realm of the challenges.
    pub realm: String,
    /// Shorter registrations get 423 (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// Longer registrations are shortened to this.
    pub max_expires: u32,
    /// The interval when a REGISTER names none.
    pub default_expires: u32,
    /// How long a nonce may be used before it is stale.
    pub nonce_lifetime: Duration,
    /// Bindings kept per user; a new one beyond this drops the oldest.
    pub max_bindings_per_user: usize,
    /// Digest algorithms offered, preferred first (RFC 8760 §2.4).
    pub algorithms: Vec<Algorithm>,
    /// Brute-force protection.
    pub guard: GuardSettings,
    /// How often each binding on UDP is pinged (`None`: never).
    pub keepalive: Option<Duration>,
    /// The longest interval granted to a phone that registers from behind
    /// a NAT (`None`: as for any other).
    pub nat_expires: Option<u32>,
}

/// Unanswered keep-alives in a row after which a binding is dropped.
pub const KEEPALIVE_MISSES: u32 = 3;

/// When failed REGISTERs from one address slow it down, then block it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    /// Failures after which the address may try once a second (doubling).
    pub slowdown_after: u32,
    /// Failures after which the address is refused for `block_for`.
    pub block_after: u32,
    /// How long a blocked address is refused; failures older than this are
    /// forgotten.
    pub block_for: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            slowdown_after: 5,
            block_after: 20,
            block_for: Duration::from_secs(300),
        }
    }
}

/// Addresses with failed REGISTERs remembered at once.
pub const MAX_GUARDED_SOURCES: usize = 10_000;

/// Longest wait between examined attempts of a slowed address.
const MAX_SLOWDOWN: Duration = Duration::from_secs(64);

/// Counts of the brute-force protection since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// REGISTERs whose credentials were wrong (bad password, unknown user).
    pub failures: u64,
    /// REGISTERs refused unexamined (slowed down or blocked address).
    pub refused: u64,
    /// Addresses blocked (each time one reaches `block_after`).
    pub blocked: u64,
    /// Addresses with failures remembered now.
    pub tracked: usize,
}

/// Failed REGISTERs per source address.
#[derive(Debug)]
struct Guard {
    settings: GuardSettings,
    sources: HashMap<IpAddr, Failures>,
    stats: GuardStats,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No attempt is examined before this.
    next_try: Instant,
}

impl Guard {
    /// `Some(retry after, in seconds)` when an attempt from `ip` at `now`
    /// is refused unexamined.
    fn refuse(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        let f = self.sources.get(&ip)?;
        if now.saturating_duration_since(f.last) >= self.settings.block_for && f.next_try <= now {
            self.sources.remove(&ip);
            return None;
        }
        if f.next_try <= now {
            return None;
        }
        self.stats.refused += 1;
        Some(f.next_try.saturating_duration_since(now).as_secs().max(1))
    }

    fn failed(&mut self, ip: IpAddr, now: Instant) {
        self.stats.failures += 1;
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_GUARDED_SOURCES {
            let block_for = self.settings.block_for;
            self.sources.retain(|_, f| {
                f.next_try > now || now.saturating_duration_since(f.last) < block_for
            });
            if self.sources.len() >= MAX_GUARDED_SOURCES {
                // Full of live entries: this address is not slowed down,
                // but the others stay remembered (memory stays bounded).
                return;
            }
        }
        let f = self.sources.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            next_try: now,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        let s = self.settings;
        if f.count >= s.block_after {
            if f.count == s.block_after {
                self.stats.blocked += 1;
            }
            f.next_try = now + s.block_for;
        } else if f.count >= s.slowdown_after {
            let doublings = (f.count - s.slowdown_after).min(6);
            f.next_try = now + Duration::from_secs(1 << doublings).min(MAX_SLOWDOWN);
        }
    }

    fn succeeded(&mut self, ip: IpAddr) {
        self.sources.remove(&ip);
    }
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        RegistrarSettings {
            realm: "callbackd".into(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            nonce_lifetime: Duration::from_secs(300),
            max_bindings_per_user: 5,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            guard: GuardSettings::default(),
            keepalive: None,
            nat_expires: None,
        }
    }
}

/// One registered contact of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI, without angle brackets or header parameters.
    pub contact: Box<str>,
    /// Where the REGISTER came from: call the agent back through this
    /// (source address and transport, or the TCP connection).
    pub flow: Flow,
    /// When the binding lapses unless refreshed.
    pub expires_at: Instant,
    /// When it was last registered or refreshed.
    pub refreshed_at: Instant,
    /// The Call-ID of the REGISTER that last touched it (§10.3 step 7).
    pub call_id: CallId,
    /// That REGISTER's CSeq number.
    pub cseq: u32,
    /// The REGISTER came from behind a NAT (see the module documentation).
    pub behind_nat: bool,
    /// When the next keep-alive is due (bindings on UDP, keep-alives on).
    next_keepalive: Option<Instant>,
    /// When the last keep-alive went out.
    last_keepalive: Option<Instant>,
    /// Keep-alives in a row with nothing heard from the flow after them.
    missed: u32,
}

/// A keep-alive to send: an OPTIONS to `contact` through `flow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    /// The binding's Contact URI (the OPTIONS' Request-URI and To).
    pub contact: Box<str>,
    /// The flow its REGISTER came on.
    pub flow: Flow,
}

/// A TCP connection that started or stopped carrying a live binding: the
/// transport must not close a held connection as idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionHold {
    /// The engine's connection id ([`FlowTransport::Tcp`]).
    pub conn: u64,
    /// Held (true) or released.
    pub held: bool,
}

/// What to answer a REGISTER with: the caller builds the response with
/// [`Request::response`] and adds `headers` in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// The status code.
    pub status: u16,
    /// Header fields to add (WWW-Authenticate, Min-Expires, Contact, Date).
    pub headers: Vec<(&'static str, String)>,
    /// The authenticated user, when authentication succeeded.
    pub user: Option<String>,
}

/// Changes in who is reachable, for the agent roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrarEvent {
    /// The user went from no binding to at least one.
    Registered {
        /// The user.
        user: String,
    },
    /// The user's last binding was removed or expired.
    Unregistered {
        /// The user.
        user: String,
    },
}

/// The registrar: users from the configuration, bindings per user.
#[derive(Debug)]
pub struct Registrar {
    settings: RegistrarSettings,
    challenger: Challenger,
    users: HashMap<String, Secret>,
    /// user → bindings, most recently refreshed first; never an empty list.
    bindings: HashMap<String, Vec<Binding>>,
    events: VecDeque<RegistrarEvent>,
    guard: Guard,
    /// When something was last heard from each UDP binding's address.
    heard: HashMap<SocketAddr, Instant>,
    keepalives: VecDeque<KeepAlive>,
    /// TCP connections carrying a live binding.
    held: HashSet<u64>,
    holds: VecDeque<ConnectionHold>,
}

impl Registrar {
    /// A registrar for `users` (user part of the AoR → secret). `nonce_key`
    /// must be random (the engine draws it at start-up).
    pub fn new(
        settings: RegistrarSettings,
        users: impl IntoIterator<Item = (String, Secret)>,
        nonce_key: [u8; 32],
        now: Instant,
    ) -> Registrar {
        let challenger = Challenger::new(&settings.realm, settings.nonce_lifetime, nonce_key, now)
            .with_algorithms(&settings.algorithms);
        let guard = Guard {
            settings: settings.guard,
            sources: HashMap::new(),
            stats: GuardStats::default(),
        };
        Registrar {
            settings,
            guard,
            challenger,
            users: users.into_iter().collect(),
            bindings: HashMap::new(),
            events: VecDeque::new(),
            heard: HashMap::new(),
            keepalives: VecDeque::new(),
            held: HashSet::new(),
            holds: VecDeque::new(),
        }
    }

    /// Replaces the user table (configuration reload); bindings of users no
    /// longer configured are dropped.
    pub fn set_users(&mut self, users: impl IntoIterator<Item = (String, Secret)>) {
        self.users = users.into_iter().collect();
        let users = &self.users;
        let events = &mut self.events;
        self.bindings.retain(|user, _| {
            let keep = users.contains_key(user);
            if !keep {
                events.push_back(RegistrarEvent::Unregistered { user: user.clone() });
            }
            keep
        });
        self.sync_flows();
    }

    /// Handles a REGISTER (RFC 3261 §10.3) that arrived on `flow`; `date`
    /// is the wall clock for the Date header of a 200.
    pub fn handle_register(
        &mut self,
        now: Instant,
        date: Timestamp,
        request: &Request,
        flow: Flow,
    ) -> RegisterOutcome {
        if request.method != Method::Register {
            return RegisterOutcome::bare(405);
        }
        // §10.2: the address of record in To is a SIP or SIPS URI; anything
        // else is refused before any challenge (RFC 4475 §3.3.4).
        if SipUri::parse(&request.headers.to.uri).is_err() {
            return RegisterOutcome::bare(400);
        }
        let source = flow.remote.ip().to_canonical();
        if let Some(retry_after) = self.guard.refuse(source, now) {
            return RegisterOutcome {
                status: 403,
                headers: vec![
                    ("Retry-After", retry_after.to_string()),
                    (
                        "Warning",
                        "399 callbackd \"too many failed attempts\"".to_owned(),
                    ),
                ],
                user: None,
            };
        }
        // RFC 3261 §10.3 step 3 and §22.2: authenticate.
        let credentials = request
            .headers
            .fields()
            .iter()
            .filter(|f| f.name == HeaderName::Authorization)
            .map(|f| &*f.value);
        let digest_request = DigestRequest {
            method: Method::Register.as_str(),
            uri: &request.uri,
            body: &request.body,
        };
        let users = &self.users;
        let user = match self.challenger.verify(
            credentials,
            &digest_request,
            &|name| users.get(name).cloned(),
            now,
        ) {
            Ok(user) => {
                self.guard.succeeded(source);
                user
            }
            Err(AuthError::Malformed(_)) => return RegisterOutcome::bare(400),
            Err(e) => {
                if matches!(e, AuthError::BadResponse | AuthError::UnknownUser) {
                    self.guard.failed(source, now);
                }
                let stale = e == AuthError::StaleNonce;
                let headers = self
                    .challenger
                    .challenges(now, stale)
                    .into_iter()
                    .map(|c| ("WWW-Authenticate", c))
                    .collect();
                return RegisterOutcome {
                    status: 401,
                    headers,
                    user: None,
                };
            }
        };

        // Step 4: the authenticated user may only register its own AoR.
        let aor_user = SipUri::parse(&request.headers.to.uri)
            .ok()
            .and_then(|uri| uri.user);
        if aor_user.as_deref() != Some(user.as_str()) {
            return RegisterOutcome::bare(403);
        }

        // Steps 6–7: validate every Contact before changing anything.
        let expires_header = request
            .headers
            .get(HeaderName::Expires)
            .and_then(parse_delta);
        let Some(contacts) = parse_contacts(request) else {
            return RegisterOutcome::bare(400);
        };
        let call_id = &request.headers.call_id;
        let cseq = request.headers.cseq.seq;
        let behind_nat = behind_nat(request, &contacts, flow);
        let nat_cap = self.settings.nat_expires.filter(|_| behind_nat);
        let existing = self.bindings.get(&user).map_or(&[][..], Vec::as_slice);
        // Step 7: a binding last touched by this Call-ID with a CSeq at
        // least as high means this REGISTER is older: "the update MUST be
        // aborted and the request fails" (RFC names no code: 500).
        let out_of_order = |b: &Binding| b.call_id == *call_id && cseq <= b.cseq;
        // `None`: remove every binding.
        let plan: Option<Vec<(&str, u32)>> = match contacts {
            Contacts::Wildcard => {
                // Step 6: "*" only alone and with Expires: 0.
                if expires_header != Some(0) {
                    return RegisterOutcome::bare(400);
                }
                if existing.iter().any(out_of_order) {
                    return RegisterOutcome::bare(500);
                }
                None
            }
            Contacts::List(list) => {
                let mut plan = Vec::with_capacity(list.len());
                for (uri, param) in list {
                    let expires = param
                        .or(expires_header)
                        .unwrap_or(self.settings.default_expires);
                    if expires > 0 && expires < self.settings.min_expires {
                        return RegisterOutcome {
                            status: 423,
                            headers: vec![("Min-Expires", self.settings.min_expires.to_string())],
                            user: Some(user),
                        };
                    }
                    if existing
                        .iter()
                        .any(|b| b.contact.eq_ignore_ascii_case(uri) && out_of_order(b))
                    {
                        return RegisterOutcome::bare(500);
                    }
                    let mut granted = expires.min(self.settings.max_expires);
                    if let Some(cap) = nat_cap {
                        granted = granted.min(cap);
                    }
                    plan.push((uri, granted));
                }
                Some(plan)
            }
        };

        // Commit (step 7: all or nothing, and nothing failed above).
        let was_registered = self.bindings.contains_key(&user);
        let list = self.bindings.entry(user.clone()).or_default();
        // Lapsed bindings are gone before they could be refreshed.
        list.retain(|b| b.expires_at > now);
        let Some(plan) = plan else {
            list.clear();
            return self.finish(now, date, user, was_registered);
        };
        let keepalive = self
            .settings
            .keepalive
            .filter(|_| flow.transport == FlowTransport::Udp);
        for (uri, expires) in plan {
            let found = list
                .iter()
                .position(|b| b.contact.eq_ignore_ascii_case(uri));
            let old = found.map(|i| list.remove(i));
            if expires == 0 {
                continue;
            }
            let binding = Binding {
                contact: old.map_or_else(|| uri.into(), |b| b.contact),
                flow,
                expires_at: now + Duration::from_secs(u64::from(expires)),
                refreshed_at: now,
                call_id: call_id.clone(),
                cseq,
                behind_nat,
                next_keepalive: keepalive
                    .map(|interval| now + keepalive_period(interval, flow.remote)),
                last_keepalive: None,
                missed: 0,
            };
            list.insert(0, binding);
        }
        list.truncate(self.settings.max_bindings_per_user.max(1));
        if flow.transport == FlowTransport::Udp {
            self.heard.insert(flow.remote, now);
        }
        self.finish(now, date, user, was_registered)
    }

    /// Something arrived from `remote` at `now` (any message): a phone
    /// there is alive, whatever it answers to keep-alives.
    pub fn heard_from(&mut self, now: Instant, remote: SocketAddr) {
        if let Some(heard) = self.heard.get_mut(&remote) {
            *heard = now;
        }
    }

    /// The next keep-alive to send.
    pub fn poll_keepalive(&mut self) -> Option<KeepAlive> {
        self.keepalives.pop_front()
    }

    /// The next change of the TCP connections that carry live bindings.
    pub fn poll_connection_hold(&mut self) -> Option<ConnectionHold> {
        self.holds.pop_front()
    }

    /// The live bindings of `user`, most recently refreshed first.
    pub fn lookup(&self, user: &str, now: Instant) -> impl Iterator<Item = &Binding> {
        self.bindings
            .get(user)
            .into_iter()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// Bindings held, all users together (lapsed ones count until
    /// [`Registrar::handle_timeout`] removes them).
    pub fn bindings_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// The brute-force protection's counts.
    pub fn guard_stats(&self) -> GuardStats {
        GuardStats {
            tracked: self.guard.sources.len(),
            ..self.guard.stats
        }
    }

    /// When the next binding lapses or the next keep-alive is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bindings
            .values()
            .flatten()
            .flat_map(|b| [Some(b.expires_at), b.next_keepalive])
            .flatten()
            .min()
    }

    /// Removes the bindings that lapsed by `now`, and those whose last
    /// [`KEEPALIVE_MISSES`] keep-alives went unanswered; queues the
    /// keep-alives due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // The controller calls this on every wake-up of anything it runs.
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let events = &mut self.events;
        let heard = &self.heard;
        let keepalives = &mut self.keepalives;
        let interval = self.settings.keepalive;
        self.bindings.retain(|user, list| {
            list.retain(|b| b.expires_at > now);
            for b in list.iter_mut() {
                let (Some(due), Some(interval)) = (b.next_keepalive, interval) else {
                    continue;
                };
                if due > now {
                    continue;
                }
                if let Some(sent) = b.last_keepalive {
                    let answered = heard.get(&b.flow.remote).is_some_and(|&h| h >= sent);
                    b.missed = if answered { 0 } else { b.missed + 1 };
                }
                if b.missed >= KEEPALIVE_MISSES {
                    info!(
                        user = %user,
                        contact = %b.contact,
                        remote = %b.flow.remote,
                        missed = b.missed,
                        "binding dropped: keep-alives unanswered"
                    );
                    b.expires_at = now;
                    b.next_keepalive = None;
                    continue;
                }
                keepalives.push_back(KeepAlive {
                    contact: b.contact.clone(),
                    flow: b.flow,
                });
                b.last_keepalive = Some(now);
                b.next_keepalive = Some(now + keepalive_period(interval, b.flow.remote));
            }
            list.retain(|b| b.expires_at > now);
            if list.is_empty() {
                events.push_back(RegistrarEvent::Unregistered { user: user.clone() });
            }
            !list.is_empty()
        });
        self.sync_flows();
    }

    /// Forgets the addresses no UDP binding uses any more, and reports the
    /// TCP connections that started or stopped carrying a binding.
    fn sync_flows(&mut self) {
        let mut udp = HashSet::new();
        let mut tcp = HashSet::new();
        for b in self.bindings.values().flatten() {
            match b.flow.transport {
                FlowTransport::Udp => udp.insert(b.flow.remote),
                FlowTransport::Tcp(conn) => tcp.insert(conn),
            };
        }
        self.heard.retain(|remote, _| udp.contains(remote));
        for &conn in tcp.difference(&self.held) {
            self.holds.push_back(ConnectionHold { conn, held: true });
        }
        for &conn in self.held.difference(&tcp) {
            self.holds.push_back(ConnectionHold { conn, held: false });
        }
        self.held = tcp;
    }

    /// The next registration change.
    pub fn poll_event(&mut self) -> Option<RegistrarEvent> {
        self.events.pop_front()
    }

    /// Step 8: 200 with every current binding and its remaining time; the
    /// events for a change of registered-or-not.
    fn finish(
        &mut self,
        now: Instant,
        date: Timestamp,
        user: String,
        was_registered: bool,
    ) -> RegisterOutcome {
        let list = self.bindings.get(&user).map_or(&[][..], Vec::as_slice);
        let mut headers: Vec<(&'static str, String)> = list
            .iter()
            .map(|b| {
                let left = b.expires_at.saturating_duration_since(now).as_secs();
                ("Contact", format!("<{}>;expires={left}", b.contact))
            })
            .collect();
        if let Ok(date) = DateTimePrinter::new().timestamp_to_rfc9110_string(&date) {
            headers.push(("Date", date));
        }
        let registered = !list.is_empty();
        if !registered {
            self.bindings.remove(&user);
        }
        self.sync_flows();
        match (was_registered, registered) {
            (false, true) => self
                .events
                .push_back(RegistrarEvent::Registered { user: user.clone() }),
            (true, false) => self
                .events
                .push_back(RegistrarEvent::Unregistered { user: user.clone() }),
            (true, true) | (false, false) => {}
        }
        RegisterOutcome {
            status: 200,
            headers,
            user: Some(user),
        }
    }
}

impl RegisterOutcome {
    fn bare(status: u16) -> RegisterOutcome {
        RegisterOutcome {
            status,
            headers: Vec::new(),
            user: None,
        }
    }
}

// ---------------------------------------------------------------------------
// helpers

/// Whether a REGISTER that arrived on `flow` was sent from behind a NAT
/// (the tests of Kamailio's `nat_uac_test`): a Contact that names an IP
/// address other than the source's (or, on UDP, another port), or a top
/// Via whose sent-by does — what RFC 3581's `received` and `rport` would
/// record. On TCP the source port is the connection's, never the listening
/// one, so only addresses are compared there.
fn behind_nat(request: &Request, contacts: &Contacts<'_>, flow: Flow) -> bool {
    let udp = flow.transport == FlowTransport::Udp;
    let differs = |host: &str, port: Option<u16>| -> bool {
        let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() else {
            // A name: nothing to compare it with.
            return false;
        };
        ip.to_canonical() != flow.remote.ip().to_canonical()
            || (udp && port.unwrap_or(5060) != flow.remote.port())
    };
    let via = request.headers.top_via();
    if differs(&via.host, via.port) {
        return true;
    }
    let Contacts::List(list) = contacts else {
        return false;
    };
    list.iter()
        .any(|(uri, _)| SipUri::parse(uri).is_ok_and(|uri| differs(&uri.host, uri.port)))
}

/// The Contact header fields of a REGISTER.
enum Contacts<'a> {
    /// `Contact: *` (remove all).
    Wildcard,
    /// URIs with their `expires` parameter (none: a query, §10.2.3).
    List(Vec<(&'a str, Option<u32>)>),
}

/// `None` when a Contact is malformed, or `*` is not alone (§10.3 step 6).
fn parse_contacts(request: &Request) -> Option<Contacts<'_>> {
    let mut list = Vec::new();
    let mut wildcard = false;
    for value in request.headers.get_all(HeaderName::Contact) {
        if value == "*" {
            wildcard = true;
            continue;
        }
        let uri = NameAddr::parse(value).ok()?.uri;
        // The URI as a sub-slice of `value`, so the plan can borrow it.
        let start = value.find(&*uri)?;
        let uri = value.get(start..start + uri.len())?;
        // Header parameters follow the `>`, or the URI without brackets.
        let params = match value.rfind('>') {
            Some(close) => value.get(close + 1..)?,
            None => value.get(start + uri.len()..)?,
        };
        let expires = params_iter(params)
            .find(|(name, _)| name.eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v)
            .and_then(parse_delta);
        list.push((uri, expires));
    }
    match (wildcard, list.is_empty()) {
        (true, true) => Some(Contacts::Wildcard),
        (true, false) => None,
        (false, _) => Some(Contacts::List(list)),
    }
}

/// delta-seconds (RFC 3261 §25.1); values past 2^32−1 are clamped, and a
/// malformed value counts as absent (§10.2.1.1: treated as the default).
fn parse_delta(value: &str) -> Option<u32> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u32>().unwrap_or(u32::MAX))
}

/// The keep-alive period of a binding from `remote`: between 80 % and
/// 100 % of `interval` (as RFC 5626 §4.4.1 has a client choose its own),
/// fixed per address, so phones that registered together — after an outage,
/// a restart — are not all pinged in the same instant.
pub fn keepalive_period(interval: Duration, remote: SocketAddr) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    remote.hash(&mut h);
    let percent = 80 + (h.finish() % 21) as u32;
    interval * percent / 100
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::sip::digest::{Challenge, Credentials};
    use crate::sip::endpoint::FlowTransport;
    use crate::sip::message::{Message, Response, parse};

    const DOMAIN: &str = "callbackd.example";

    fn settings() -> RegistrarSettings {
        RegistrarSettings {
            realm: DOMAIN.into(),
            ..RegistrarSettings::default()
        }
    }

    fn registrar(t0: Instant) -> Registrar {
        Registrar::new(
            settings(),
            [
                ("agent7".to_owned(), Secret::Password("s3cret".into())),
                ("agent8".to_owned(), Secret::Password("other".into())),
            ],
            [9; 32],
            t0,
        )
    }

    fn date() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn udp(addr: &str) -> Flow {
        Flow {
            remote: addr.parse::<SocketAddr>().expect("address"),
            transport: FlowTransport::Udp,
        }
    }

    /// A NATed phone: its Contact names 192.168.1.10, its packets come
    /// from 203.0.113.5:40000.
    fn nat() -> Flow {
        udp("203.0.113.5:40000")
    }

    fn request(to_user: &str, call_id: &str, cseq: u32, headers: &str) -> Request {
        let text = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK{cseq}{call_id}\r\n\
             From: <sip:{to_user}@{DOMAIN}>;tag=f\r\nTo: <sip:{to_user}@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("fixture does not parse: {other:?}"),
        }
    }

    /// The response the endpoint would send for `outcome`, parsed back.
    fn response_to(req: &Request, outcome: &RegisterOutcome) -> Response {
        let mut builder = req.response(outcome.status, Some("reg"));
        for (name, value) in &outcome.headers {
            builder = builder.header(name, value);
        }
        match parse(&builder.finish(None, b"")) {
            Ok(Message::Response(r)) => r,
            other => panic!("response does not parse: {other:?}"),
        }
    }

    fn header<'a>(outcome: &'a RegisterOutcome, name: &str) -> Vec<&'a str> {
        outcome
            .headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A softphone: one Call-ID, CSeq counting up, reuses the last
    /// challenge with nc + 1 and answers a 401 once per REGISTER.
    struct Phone {
        user: &'static str,
        aor: &'static str,
        password: &'static str,
        call_id: &'static str,
        cseq: u32,
        challenge: Option<Challenge>,
        nc: u32,
    }

    impl Phone {
        fn new(user: &'static str, password: &'static str) -> Phone {
            Phone {
                user,
                aor: user,
                password,
                call_id: "reg-1",
                cseq: 0,
                challenge: None,
                nc: 0,
            }
        }

        fn build(&mut self, headers: &str) -> Request {
            self.cseq += 1;
            let mut headers = headers.to_owned();
            if let Some(challenge) = &self.challenge {
                self.nc += 1;
                let digest_request = DigestRequest {
                    method: "REGISTER",
                    uri: &format!("sip:{DOMAIN}"),
                    body: b"",
                };
                let value = Credentials::new(self.user, self.password)
                    .respond(challenge, &digest_request, "0badcafe", self.nc)
                    .expect("responds");
                headers.push_str(&format!("Authorization: {value}\r\n"));
            }
            request(self.aor, self.call_id, self.cseq, &headers)
        }

        fn register(
            &mut self,
            reg: &mut Registrar,
            now: Instant,
            flow: Flow,
            headers: &str,
        ) -> RegisterOutcome {
            let req = self.build(headers);
            let outcome = reg.handle_register(now, date(), &req, flow);
            if outcome.status != 401 {
                return outcome;
            }
            let resp = response_to(&req, &outcome);
            let values = resp
                .headers
                .fields()
                .iter()
                .filter(|f| f.name == HeaderName::WwwAuthenticate)
                .map(|f| &*f.value);
            self.challenge = Some(
                Credentials::new(self.user, self.password)
                    .choose(values)
                    .expect("a usable challenge"),
            );
            self.nc = 0;
            let req = self.build(headers);
            reg.handle_register(now, date(), &req, flow)
        }
    }

    const CONTACT: &str = "Contact: <sip:agent7@192.168.1.10:5060;transport=udp>\r\n";

    #[test]
    fn challenges_then_binds_with_source_kept_for_nat() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        // Without credentials: 401 with SHA-256 and MD5 challenges.
        let req = request("agent7", "reg-1", 1, CONTACT);
        let first = reg.handle_register(t0, date(), &req, nat());
        assert_eq!(first.status, 401);
        let challenges = header(&first, "WWW-Authenticate");
        assert_eq!(challenges.len(), 2);
        assert!(
            challenges[0].contains("algorithm=SHA-256"),
            "{challenges:?}"
        );
        assert!(challenges[1].contains("algorithm=MD5"), "{challenges:?}");
        assert_eq!(reg.bindings_count(), 0);

        let mut phone = Phone::new("agent7", "s3cret");
        let ok = phone.register(&mut reg, t0, nat(), CONTACT);
        assert_eq!(ok.status, 200);
        assert_eq!(ok.user.as_deref(), Some("agent7"));
        assert_eq!(
            header(&ok, "Contact"),
            ["<sip:agent7@192.168.1.10:5060;transport=udp>;expires=3600"]
        );
        assert_eq!(header(&ok, "Date"), ["Tue, 14 Nov 2023 22:13:20 GMT"]);
        let bindings: Vec<&Binding> = reg.lookup("agent7", t0).collect();
        assert_eq!(bindings.len(), 1);
        assert_eq!(
            &*bindings[0].contact,
            "sip:agent7@192.168.1.10:5060;transport=udp"
        );
        assert_eq!(bindings[0].flow, nat(), "the NAT's public side is kept");
        assert_eq!(bindings[0].expires_at, t0 + Duration::from_secs(3600));
        assert_eq!(
            reg.poll_event(),
            Some(RegistrarEvent::Registered {
                user: "agent7".into()
            })
        );
        assert_eq!(reg.poll_event(), None);
    }

    #[test]
    fn wrong_password_is_challenged_again() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let outcome = Phone::new("agent7", "guess").register(&mut reg, t0, nat(), CONTACT);
        assert_eq!(outcome.status, 401);
        assert!(
            header(&outcome, "WWW-Authenticate")
                .iter()
                .all(|c| !c.contains("stale"))
        );
        assert_eq!(reg.bindings_count(), 0);
        assert_eq!(reg.poll_event(), None);
    }

    #[test]
    fn unknown_user_is_challenged_again() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let outcome = Phone::new("mallory", "x").register(&mut reg, t0, nat(), CONTACT);
        assert_eq!(outcome.status, 401);
        assert_eq!(reg.bindings_count(), 0);
    }

    #[test]
    fn credentials_for_another_realm_are_challenged() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let challenge =
            Challenge::parse("Digest realm=\"elsewhere\", nonce=\"n\", qop=auth").expect("parses");
        let value = Credentials::new("agent7", "s3cret")
            .respond(
                &challenge,
                &DigestRequest {
                    method: "REGISTER",
                    uri: &format!("sip:{DOMAIN}"),
                    body: b"",
                },
                "c",
                1,
            )
            .expect("responds");
        let req = request(
            "agent7",
            "reg-1",
            1,
            &format!("{CONTACT}Authorization: {value}\r\n"),
        );
        let outcome = reg.handle_register(t0, date(), &req, nat());
        assert_eq!(outcome.status, 401);
        assert_eq!(header(&outcome, "WWW-Authenticate").len(), 2);
    }

    #[test]
    fn rejects_registering_another_users_aor_with_403() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        phone.aor = "agent8";
        let outcome = phone.register(&mut reg, t0, nat(), CONTACT);
        assert_eq!(outcome.status, 403);
        assert_eq!(reg.bindings_count(), 0);
    }

    #[test]
    fn rejects_malformed_credentials_with_400() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let req = request(
            "agent7",
            "reg-1",
            1,
            &format!("{CONTACT}Authorization: Digest username=\"agent7\", realm=\"{DOMAIN}\"\r\n"),
        );
        assert_eq!(reg.handle_register(t0, date(), &req, nat()).status, 400);
    }

    #[test]
    fn rejects_an_aor_that_is_not_a_sip_uri_before_challenging() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let text = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10;branch=z9hG4bKi\r\n\
             From: <http://www.example.com>;tag=f\r\nTo: isbn:2983792873\r\n\
             Call-ID: i\r\nCSeq: 1 REGISTER\r\n{CONTACT}\r\n"
        );
        let Ok(Message::Request(req)) = parse(text.as_bytes()) else {
            panic!("RFC 4475 §3.3.4 parses")
        };
        let outcome = reg.handle_register(t0, date(), &req, nat());
        assert_eq!(outcome.status, 400);
        assert!(outcome.headers.is_empty(), "no challenge");
    }

    #[test]
    fn too_brief_gets_423_with_min_expires() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        let by_param = phone.register(
            &mut reg,
            t0,
            nat(),
            "Contact: <sip:agent7@192.168.1.10>;expires=30\r\n",
        );
        assert_eq!(by_param.status, 423);
        assert_eq!(header(&by_param, "Min-Expires"), ["60"]);
        let by_header = phone.register(
            &mut reg,
            t0,
            nat(),
            "Contact: <sip:agent7@192.168.1.10>\r\nExpires: 59\r\n",
        );
        assert_eq!(by_header.status, 423);
        assert_eq!(reg.bindings_count(), 0);
        // The minimum itself is accepted.
        let ok = phone.register(
            &mut reg,
            t0,
            nat(),
            "Contact: <sip:agent7@192.168.1.10>\r\nExpires: 60\r\n",
        );
        assert_eq!(ok.status, 200);
        assert_eq!(
            header(&ok, "Contact"),
            ["<sip:agent7@192.168.1.10>;expires=60"]
        );
    }

    #[test]
    fn expires_param_beats_header_and_is_capped_at_max() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        let ok = phone.register(
            &mut reg,
            t0,
            nat(),
            "Contact: <sip:a@10.0.0.1>;expires=120, <sip:b@10.0.0.2>\r\n\
             Contact: sip:c@10.0.0.3;expires=99999999999\r\nExpires: 600\r\n",
        );
        assert_eq!(ok.status, 200);
        let mut contacts = header(&ok, "Contact");
        contacts.sort_unstable();
        assert_eq!(
            contacts,
            [
                "<sip:a@10.0.0.1>;expires=120",
                "<sip:b@10.0.0.2>;expires=600",
                "<sip:c@10.0.0.3>;expires=3600",
            ]
        );
    }

    #[test]
    fn expires_zero_removes_only_that_binding() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        let two = "Contact: <sip:a@10.0.0.1>, <sip:b@10.0.0.2>\r\n";
        assert_eq!(phone.register(&mut reg, t0, nat(), two).status, 200);
        assert_eq!(reg.bindings_count(), 2);
        let t1 = t0 + Duration::from_secs(10);
        let ok = phone.register(
            &mut reg,
            t1,
            nat(),
            "Contact: <sip:a@10.0.0.1>;expires=0\r\n",
        );
        assert_eq!(ok.status, 200);
        assert_eq!(header(&ok, "Contact"), ["<sip:b@10.0.0.2>;expires=3590"]);
        let ok = phone.register(
            &mut reg,
            t1,
            nat(),
            "Contact: <sip:b@10.0.0.2>\r\nExpires: 0\r\n",
        );
        assert_eq!(ok.status, 200);
        assert!(header(&ok, "Contact").is_empty());
        assert_eq!(reg.bindings_count(), 0);
        assert_eq!(
            reg.poll_event(),
            Some(RegistrarEvent::Registered {
                user: "agent7".into()
            })
        );
        assert_eq!(
            reg.poll_event(),
            Some(RegistrarEvent::Unregistered {
                user: "agent7".into()
            })
        );
    }

    #[test]
    fn wildcard_with_expires_zero_removes_all() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        let two = "Contact: <sip:a@10.0.0.1>, <sip:b@10.0.0.2>\r\n";
        assert_eq!(phone.register(&mut reg, t0, nat(), two).status, 200);
        let ok = phone.register(&mut reg, t0, nat(), "Contact: *\r\nExpires: 0\r\n");
        assert_eq!(ok.status, 200);
        assert!(header(&ok, "Contact").is_empty());
        assert_eq!(reg.bindings_count(), 0);
        assert_eq!(reg.lookup("agent7", t0).count(), 0);
    }

    #[test]
    fn rejects_wildcard_without_expires_zero_or_with_other_contacts() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        assert_eq!(phone.register(&mut reg, t0, nat(), CONTACT).status, 200);
        for headers in [
            "Contact: *\r\n",
            "Contact: *\r\nExpires: 60\r\n",
            "Contact: *, <sip:a@10.0.0.1>\r\nExpires: 0\r\n",
            "Contact: *;expires=0\r\n",
        ] {
            let outcome = phone.register(&mut reg, t0, nat(), headers);
            assert_eq!(outcome.status, 400, "{headers:?}");
        }
        assert_eq!(reg.bindings_count(), 1, "nothing was removed");
    }

    #[test]
    fn rejects_malformed_contact_with_400() {
        // A Contact that is not `*` nor a name-addr fails to parse: the
        // endpoint answers 400 before the registrar sees it.
        for contact in ["<sip:a@10.0.0.1", "nonsense"] {
            let text = format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10;branch=z9hG4bKc\r\n\
                 From: <sip:agent7@{DOMAIN}>;tag=f\r\nTo: <sip:agent7@{DOMAIN}>\r\n\
                 Call-ID: c\r\nCSeq: 1 REGISTER\r\nContact: {contact}\r\n\r\n"
            );
            let failure = parse(text.as_bytes()).expect_err(contact);
            assert!(failure.seed.is_some(), "{contact}: answerable with 400");
        }
    }

    #[test]
    fn binding_lapses_when_not_refreshed() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        let ok = phone.register(
            &mut reg,
            t0,
            nat(),
            "Contact: <sip:a@10.0.0.1>;expires=120\r\n",
        );
        assert_eq!(ok.status, 200);
        let deadline = t0 + Duration::from_secs(120);
        assert_eq!(reg.poll_timeout(), Some(deadline));
        let just_before = deadline - Duration::from_millis(1);
        assert_eq!(reg.lookup("agent7", just_before).count(), 1);
        assert_eq!(reg.lookup("agent7", deadline).count(), 0);
        reg.handle_timeout(just_before);
        assert_eq!(reg.bindings_count(), 1);
        reg.handle_timeout(deadline);
        assert_eq!(reg.bindings_count(), 0);
        assert_eq!(reg.poll_timeout(), None);
        assert_eq!(
            reg.poll_event(),
            Some(RegistrarEvent::Registered {
                user: "agent7".into()
            })
        );
        assert_eq!(
            reg.poll_event(),
            Some(RegistrarEvent::Unregistered {
                user: "agent7".into()
            })
        );
    }

    #[test]
    fn refresh_from_new_address_moves_binding_first_and_updates_flow() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        let a = "Contact: <sip:a@10.0.0.1>\r\n";
        let b = "Contact: <sip:b@10.0.0.2>\r\n";
        assert_eq!(phone.register(&mut reg, t0, nat(), a).status, 200);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(phone.register(&mut reg, t1, nat(), b).status, 200);
        let order: Vec<&str> = reg.lookup("agent7", t1).map(|b| &*b.contact).collect();
        assert_eq!(order, ["sip:b@10.0.0.2", "sip:a@10.0.0.1"]);
        // The NAT rebinds: a refresh of `a` comes from a new port.
        let t2 = t0 + Duration::from_secs(10);
        let moved = udp("203.0.113.5:41234");
        assert_eq!(phone.register(&mut reg, t2, moved, a).status, 200);
        let first = reg.lookup("agent7", t2).next().expect("bound");
        assert_eq!(&*first.contact, "sip:a@10.0.0.1");
        assert_eq!(first.flow, moved);
        assert_eq!(first.refreshed_at, t2);
        assert_eq!(first.expires_at, t2 + Duration::from_secs(3600));
        assert_eq!(reg.bindings_count(), 2);
    }

    #[test]
    fn tcp_flow_is_kept_with_its_connection() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let flow = Flow {
            remote: "198.51.100.7:50000".parse().expect("address"),
            transport: FlowTransport::Tcp(17),
        };
        let mut phone = Phone::new("agent7", "s3cret");
        assert_eq!(phone.register(&mut reg, t0, flow, CONTACT).status, 200);
        let binding = reg.lookup("agent7", t0).next().expect("bound");
        assert_eq!(binding.flow.transport, FlowTransport::Tcp(17));
    }

    #[test]
    fn query_without_contact_lists_bindings() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        assert_eq!(phone.register(&mut reg, t0, nat(), CONTACT).status, 200);
        let t1 = t0 + Duration::from_secs(100);
        let ok = phone.register(&mut reg, t1, nat(), "");
        assert_eq!(ok.status, 200);
        assert_eq!(
            header(&ok, "Contact"),
            ["<sip:agent7@192.168.1.10:5060;transport=udp>;expires=3500"]
        );
    }

    #[test]
    fn rejects_out_of_order_register_with_500() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        assert_eq!(phone.register(&mut reg, t0, nat(), CONTACT).status, 200);
        // The binding holds CSeq 2 (1 was challenged). An older REGISTER of
        // the same Call-ID arriving late:
        phone.cseq = 0;
        let outcome = phone.register(
            &mut reg,
            t0,
            nat(),
            "Contact: <sip:agent7@192.168.1.10:5060;transport=udp>;expires=0\r\n",
        );
        assert_eq!(outcome.status, 500);
        assert_eq!(
            reg.bindings_count(),
            1,
            "the late unregister changed nothing"
        );
        // Another Call-ID (the phone rebooted) may replace it at any CSeq.
        phone.call_id = "reg-2";
        let ok = phone.register(&mut reg, t0, nat(), CONTACT);
        assert_eq!(ok.status, 200);
        assert_eq!(
            reg.lookup("agent7", t0)
                .next()
                .expect("bound")
                .call_id
                .as_str(),
            "reg-2"
        );
    }

    #[test]
    fn replayed_register_is_refused() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        assert_eq!(phone.register(&mut reg, t0, nat(), CONTACT).status, 200);
        // An attacker resends the exact authorized REGISTER (same nonce,
        // same nc), from elsewhere, to steal the agent's calls.
        phone.cseq -= 1;
        phone.nc -= 1;
        let replay = phone.build(CONTACT);
        let outcome = reg.handle_register(t0, date(), &replay, udp("192.0.2.66:5060"));
        assert_eq!(outcome.status, 401);
        assert_eq!(reg.lookup("agent7", t0).next().expect("bound").flow, nat());
    }

    #[test]
    fn stale_nonce_gets_401_with_stale_true_then_succeeds() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        assert_eq!(phone.register(&mut reg, t0, nat(), CONTACT).status, 200);
        // Refresh after the nonce lifetime (300 s) with the old nonce.
        let t1 = t0 + Duration::from_secs(1800);
        let req = phone.build(CONTACT);
        let stale = reg.handle_register(t1, date(), &req, nat());
        assert_eq!(stale.status, 401);
        let challenges = header(&stale, "WWW-Authenticate");
        assert!(
            challenges.iter().all(|c| c.contains("stale=true")),
            "{challenges:?}"
        );
        // The phone retries with the new nonce, without asking anyone.
        let ok = phone.register(&mut reg, t1, nat(), CONTACT);
        assert_eq!(ok.status, 200);
        assert!(phone.challenge.as_ref().is_some_and(|c| c.stale));
    }

    #[test]
    fn keeps_at_most_max_bindings_dropping_the_oldest() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        for i in 0..7u64 {
            let now = t0 + Duration::from_secs(i);
            let contact = format!("Contact: <sip:a@10.0.0.{i}>\r\n");
            assert_eq!(phone.register(&mut reg, now, nat(), &contact).status, 200);
        }
        let now = t0 + Duration::from_secs(7);
        let kept: Vec<&str> = reg.lookup("agent7", now).map(|b| &*b.contact).collect();
        assert_eq!(
            kept,
            [
                "sip:a@10.0.0.6",
                "sip:a@10.0.0.5",
                "sip:a@10.0.0.4",
                "sip:a@10.0.0.3",
                "sip:a@10.0.0.2"
            ]
        );
    }

    #[test]
    fn removing_a_user_drops_its_bindings() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut phone = Phone::new("agent7", "s3cret");
        assert_eq!(phone.register(&mut reg, t0, nat(), CONTACT).status, 200);
        reg.poll_event();
        reg.set_users([("agent8".to_owned(), Secret::Password("other".into()))]);
        assert_eq!(reg.bindings_count(), 0);
        assert_eq!(
            reg.poll_event(),
            Some(RegistrarEvent::Unregistered {
                user: "agent7".into()
            })
        );
        // And the removed user can no longer register.
        assert_eq!(phone.register(&mut reg, t0, nat(), CONTACT).status, 401);
    }

    #[test]
    fn users_are_kept_apart() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let mut seven = Phone::new("agent7", "s3cret");
        let mut eight = Phone::new("agent8", "other");
        eight.call_id = "reg-8";
        assert_eq!(seven.register(&mut reg, t0, nat(), CONTACT).status, 200);
        assert_eq!(
            eight
                .register(
                    &mut reg,
                    t0,
                    udp("198.51.100.1:5060"),
                    "Contact: <sip:agent8@10.1.1.1>\r\n"
                )
                .status,
            200
        );
        assert_eq!(reg.bindings_count(), 2);
        let eights: Vec<&str> = reg.lookup("agent8", t0).map(|b| &*b.contact).collect();
        assert_eq!(eights, ["sip:agent8@10.1.1.1"]);
        assert_eq!(reg.lookup("nobody", t0).count(), 0);
    }

    #[test]
    fn brute_force_is_slowed_then_blocked_and_costs_no_nonce_memory() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        let attacker = udp("203.0.113.66:5060");
        let mut now = t0;
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let out = Phone::new("agent7", "guess").register(&mut reg, now, attacker, CONTACT);
            statuses.push(out.status);
        }
        assert_eq!(statuses, [401; 5], "examined and challenged");
        // Slowed: the next attempt within a second is refused unexamined,
        // even with the right password.
        let out = Phone::new("agent7", "s3cret").register(&mut reg, now, attacker, CONTACT);
        assert_eq!(out.status, 403);
        assert_eq!(header(&out, "Retry-After"), ["1"]);
        assert_eq!(reg.bindings_count(), 0);
        // Another address is not affected.
        let ok = Phone::new("agent7", "s3cret").register(&mut reg, now, nat(), CONTACT);
        assert_eq!(ok.status, 200);
        // After the pause it is examined again; the waits double.
        let mut examined = 5;
        let mut refused = 0;
        while examined < 20 {
            now += Duration::from_millis(500);
            let out = Phone::new("agent7", "guess").register(&mut reg, now, attacker, CONTACT);
            match out.status {
                401 => examined += 1,
                403 => refused += 1,
                s => panic!("unexpected {s}"),
            }
        }
        assert!(refused > 20, "{refused} refusals: the attacker was slowed");
        // Blocked: 403 for block_for, then forgotten.
        let out = Phone::new("agent7", "s3cret").register(
            &mut reg,
            now + Duration::from_secs(299),
            attacker,
            CONTACT,
        );
        assert_eq!(out.status, 403, "blocked even with the right password");
        let later = now + Duration::from_secs(301);
        let mut phone = Phone::new("agent7", "s3cret");
        phone.call_id = "reg-2";
        let out = phone.register(&mut reg, later, attacker, CONTACT);
        assert_eq!(out.status, 200, "unblocked after auth_block_s");
        let stats = reg.guard_stats();
        assert_eq!(stats.failures, 20);
        assert_eq!(stats.blocked, 1);
        assert!(stats.refused >= 22);
        assert_eq!(stats.tracked, 0, "success forgets the address");
        // Nonces: thousands of challenges and wrong answers leave no state
        // behind in the challenger (only right passwords are remembered).
        let mut reg = registrar(t0);
        for i in 0..5000u32 {
            let from = udp(&format!("198.51.{}.{}:5060", (i / 250) % 250, i % 250));
            Phone::new("agent7", "wrong").register(&mut reg, t0, from, CONTACT);
        }
        assert_eq!(reg.challenger.tracked_nonces(), 0);
        assert_eq!(reg.guard_stats().tracked, 5000);
    }

    #[test]
    fn guard_table_is_bounded() {
        let t0 = Instant::now();
        let mut reg = registrar(t0);
        for i in 0..(MAX_GUARDED_SOURCES as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            reg.guard.failed(IpAddr::V4(ip), t0);
        }
        assert_eq!(reg.guard_stats().tracked, MAX_GUARDED_SOURCES);
        // Old failures are swept when room is needed.
        let later = t0 + Duration::from_secs(301);
        reg.guard.failed("192.0.2.1".parse().expect("ip"), later);
        assert_eq!(reg.guard_stats().tracked, 1);
    }

    fn nat_aware(t0: Instant) -> Registrar {
        Registrar::new(
            RegistrarSettings {
                keepalive: Some(Duration::from_secs(20)),
                nat_expires: Some(120),
                ..settings()
            },
            [("agent7".to_owned(), Secret::Password("s3cret".into()))],
            [9; 32],
            t0,
        )
    }

    fn tcp(addr: &str, conn: u64) -> Flow {
        Flow {
            remote: addr.parse::<SocketAddr>().expect("address"),
            transport: FlowTransport::Tcp(conn),
        }
    }

    #[test]
    fn nat_is_told_by_source_contact_and_via() {
        let t0 = Instant::now();
        let contact = |c: &str| format!("Contact: <{c}>\r\nExpires: 3600\r\n");
        // (flow, Contact, granted): the Via says 192.168.1.10:5060.
        let cases = [
            (nat(), "sip:agent7@192.168.1.10", "120"),
            (udp("192.168.1.10:5060"), "sip:agent7@192.168.1.10", "3600"),
            // Same address, another port (UDP): a NAT (or a port mapper).
            (udp("192.168.1.10:40000"), "sip:agent7@192.168.1.10", "120"),
            // TCP comes from an ephemeral port: only addresses count.
            (
                tcp("192.168.1.10:40000", 3),
                "sip:agent7@192.168.1.10;transport=tcp",
                "3600",
            ),
            (
                tcp("203.0.113.5:40000", 3),
                "sip:agent7@192.168.1.10;transport=tcp",
                "120",
            ),
            // A Contact naming the source, but the Via does not.
            (nat(), "sip:agent7@203.0.113.5:40000", "120"),
            // A host name in the Contact tells nothing; the Via does.
            (udp("192.168.1.10:5060"), "sip:agent7@phone.example", "3600"),
        ];
        for (flow, uri, granted) in cases {
            let mut reg = nat_aware(t0);
            let out = Phone::new("agent7", "s3cret").register(&mut reg, t0, flow, &contact(uri));
            assert_eq!(out.status, 200);
            assert_eq!(
                header(&out, "Contact"),
                [format!("<{uri}>;expires={granted}")],
                "{flow:?} {uri}"
            );
            let binding = reg.lookup("agent7", t0).next().expect("bound");
            assert_eq!(binding.behind_nat, granted == "120");
        }
    }

    #[test]
    fn udp_bindings_get_keepalives_until_three_go_unanswered() {
        let t0 = Instant::now();
        // Every period this phone's share of the 20 s interval.
        let period = keepalive_period(Duration::from_secs(20), nat().remote);
        assert!(
            (Duration::from_secs(16)..=Duration::from_secs(20)).contains(&period),
            "{period:?}"
        );
        let mut reg = nat_aware(t0);
        let out = Phone::new("agent7", "s3cret").register(&mut reg, t0, nat(), CONTACT);
        assert_eq!(
            header(&out, "Contact"),
            [format!("{};expires=120", &CONTACT[9..CONTACT.len() - 2])]
        );
        while reg.poll_event().is_some() {}
        let mut pings = Vec::new();
        let mut dropped = None;
        while let Some(now) = reg.poll_timeout() {
            reg.handle_timeout(now);
            while let Some(k) = reg.poll_keepalive() {
                assert_eq!(&*k.contact, "sip:agent7@192.168.1.10:5060;transport=udp");
                assert_eq!(k.flow, nat());
                pings.push(now - t0);
            }
            if now == t0 + period {
                // The phone answers the first ping only.
                reg.heard_from(now + Duration::from_secs(1), nat().remote);
            }
            if now == t0 + period * 3 {
                // Another address says nothing about this phone.
                reg.heard_from(
                    now + Duration::from_secs(5),
                    udp("203.0.113.5:40001").remote,
                );
            }
            if let Some(RegistrarEvent::Unregistered { .. }) = reg.poll_event() {
                dropped = Some(now - t0);
            }
        }
        assert_eq!(pings, [period, period * 2, period * 3, period * 4]);
        assert_eq!(
            dropped,
            Some(period * 5),
            "unanswered at the 2nd, 3rd and 4th: dropped when the next is due, before it lapses at 120 s"
        );
    }

    /// Phones registering in the same instant (after an outage) are pinged
    /// spread over 80–100 % of the interval, not all at once.
    #[test]
    fn keepalives_of_phones_registered_together_are_spread() {
        let t0 = Instant::now();
        // The test phone takes 'static names: 50 small leaks in a test.
        let users: Vec<&'static str> = (0..50)
            .map(|n| &*Box::leak(format!("agent{n}").into_boxed_str()))
            .collect();
        let mut reg = Registrar::new(
            RegistrarSettings {
                keepalive: Some(Duration::from_secs(20)),
                nat_expires: Some(120),
                ..settings()
            },
            users
                .iter()
                .map(|u| ((*u).to_owned(), Secret::Password("s3cret".into()))),
            [9; 32],
            t0,
        );
        for (port, &user) in (40_000u16..).zip(&users) {
            let flow = udp(&format!("203.0.113.5:{port}"));
            let contact = format!("Contact: <sip:{user}@203.0.113.5:{port}>\r\nExpires: 3600\r\n");
            let out = Phone::new(user, "s3cret").register(&mut reg, t0, flow, &contact);
            assert_eq!(out.status, 200);
        }
        let mut first = std::collections::BTreeSet::new();
        while let Some(now) = reg.poll_timeout() {
            if now > t0 + Duration::from_secs(20) {
                break;
            }
            reg.handle_timeout(now);
            while reg.poll_keepalive().is_some() {
                first.insert(now - t0);
            }
        }
        assert!(
            first.len() >= 10,
            "50 phones pinged at {} instants",
            first.len()
        );
        let (lo, hi) = (first.first().copied(), first.last().copied());
        assert!(
            lo >= Some(Duration::from_secs(16)) && hi <= Some(Duration::from_secs(20)),
            "{lo:?}..{hi:?}"
        );
    }

    #[test]
    fn tcp_bindings_hold_their_connection_and_get_no_keepalive() {
        let t0 = Instant::now();
        let mut reg = nat_aware(t0);
        let flow = tcp("203.0.113.5:40000", 7);
        let contact = "Contact: <sip:agent7@192.168.1.10;transport=tcp>\r\nExpires: 60\r\n";
        let mut phone = Phone::new("agent7", "s3cret");
        assert_eq!(phone.register(&mut reg, t0, flow, contact).status, 200);
        assert_eq!(
            reg.poll_connection_hold(),
            Some(ConnectionHold {
                conn: 7,
                held: true
            })
        );
        assert_eq!(reg.poll_connection_hold(), None);
        // A refresh on the same connection changes nothing.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(phone.register(&mut reg, t1, flow, contact).status, 200);
        assert_eq!(reg.poll_connection_hold(), None);
        assert_eq!(
            reg.poll_timeout(),
            Some(t1 + Duration::from_secs(60)),
            "no keep-alive timer"
        );
        reg.handle_timeout(t1 + Duration::from_secs(60));
        assert_eq!(reg.poll_keepalive(), None);
        assert_eq!(
            reg.poll_connection_hold(),
            Some(ConnectionHold {
                conn: 7,
                held: false
            }),
            "lapsed: released"
        );
    }
}
