//! The carrier trunk callbacks go out through: how the customer's number and
//! the caller ID are written, how fast calls may be placed, and which
//! resolved target to try next when one fails.
//!
//! Pure: no IO, no clock. Resolution of the termination host (RFC 3263) is
//! done by `crate::engine::resolve`, which fills a [`TargetList`].
//!
//! # Number formats
//!
//! | number | [`NumberFormat::E164`] | [`NumberFormat::National`] |
//! |---|---|---|
//! | national `3125550188` | `+13125550188` | `3125550188` |
//! | international `011442079460000` | `+442079460000` | `011442079460000` |
//!
//! The Request-URI is `sip:<number>@<termination host>[:port]`; with
//! `user_phone` the E.164 form gets `;user=phone` (RFC 3261 §19.1.1). A
//! national number never does: RFC 3966 §5.1.5 requires a local number to
//! carry a `phone-context`, which NANP carriers do not expect, so the
//! configuration refuses `user_phone` with the national format rather than
//! send something half-right.
//!
//! # Caller ID
//!
//! The queue's callback number goes into From and, when enabled, into
//! P-Asserted-Identity (RFC 3325 §9.1), both as a SIP URI in the trunk's
//! number format at the termination host: `<sip:+13125550100@host;user=phone>`.
//! North American carriers take the calling number from the PAI user part
//! (falling back to From) and accept the SIP form everywhere, whereas a
//! `tel:` PAI is refused by some; the host is the carrier's domain, which
//! digest-authenticated trunks require in From and IP-authenticated ones
//! ignore.
//!
//! # Failover (RFC 3263 §4.3)
//!
//! ```text
//!   resolve ──▶ TargetList [t1, t2, …] (SRV priority, then weight)
//!                   │ first(now, health)
//!                   ▼
//!   INVITE ──▶ t1 ── 503 / 408 / timeout / transport error, no 18x yet
//!                   │ next_after(failure, now, health)   (t1 held down)
//!                   ▼
//!   INVITE ──▶ t2 ── any other final response (486, 404, 200 …): done,
//!                    it is the customer's answer, not the target's fault
//! ```
//!
//! A target that sent `503` with `Retry-After` is not used again until then
//! (RFC 3261 §21.5.4), by any call; one that timed out, refused the
//! connection or sent `503` without `Retry-After` is held down for the
//! configured hold-down time: still used, but after every healthy target.
//! A 503 or 408 that follows a 180/183 is not failed over: the customer's
//! phone has rung, and another target would ring it again.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Deserialize;
use thiserror::Error;

use crate::callback::number::PhoneNumber;
use crate::sip::endpoint::Destination;
use crate::sip::message::{SipUri, split_host_port};

/// Everything about the trunk that shapes an outbound customer call.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkSettings {
    /// Where customer INVITEs go.
    pub termination: Termination,
    /// The transport to use; `None` lets RFC 3263 choose (SRV for UDP and
    /// TCP, UDP preferred; UDP for an IP literal or an explicit port).
    pub transport: Option<TrunkTransport>,
    /// How numbers are written in the Request-URI, From and PAI.
    pub number_format: NumberFormat,
    /// Add `;user=phone` to E.164 SIP URIs (RFC 3261 §19.1.1).
    pub user_phone: bool,
    /// Send P-Asserted-Identity with the caller ID (RFC 3325).
    pub p_asserted_identity: bool,
    /// Most new calls per second (see [`CpsLimiter`]).
    pub cps_limit: f64,
    /// Digest credentials for 401/407 challenges, if the trunk asks.
    pub credentials: Option<Credentials>,
    /// Most targets one call tries before it fails (RFC 3263 §4.3).
    pub max_targets: usize,
    /// How long a target that timed out, refused the connection or sent 503
    /// without Retry-After is tried after the healthy ones.
    pub holddown: Duration,
}

impl TrunkSettings {
    /// A limiter for this trunk's calls-per-second cap, with a burst of one:
    /// calls are spaced `1 / cps_limit` apart, so no one-second window (as
    /// carriers count, sliding) holds more than `cps_limit` of them.
    pub fn cps_limiter(&self) -> Result<CpsLimiter, TrunkError> {
        CpsLimiter::new(self.cps_limit, 1)
    }

    /// Target health for this trunk (one per trunk, shared by its calls).
    pub fn target_health(&self) -> TargetHealth {
        TargetHealth::new(self.holddown)
    }
}

/// The termination host: a DNS name or an IP literal, and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// The host.
    pub host: TerminationHost,
    /// The port, when one is given (no SRV lookup then, RFC 3263 §4.2).
    pub port: Option<u16>,
}

/// The host part of the termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminationHost {
    /// An IPv4 or IPv6 literal: no DNS at all (RFC 3263 §4.2).
    Ip(IpAddr),
    /// A DNS name, lower-cased, without a trailing dot.
    Name(Box<str>),
}

impl Termination {
    /// Parses `sip:host[:port]` or bare `host[:port]` (IPv6 in brackets).
    ///
    /// Refused: `sips:` (no TLS transport here), a user part (the user is
    /// the customer's number), a `transport` parameter (the transport is a
    /// setting of its own) and `maddr` (it would redirect the resolution).
    pub fn parse(text: &str) -> Result<Termination, TrunkError> {
        let text = text.trim();
        let bad = || TrunkError::BadTermination { text: text.into() };
        let has_scheme = text
            .get(..4)
            .is_some_and(|s| s.eq_ignore_ascii_case("sip:"))
            || text
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("sips:"));
        let (host, port) = if has_scheme {
            let uri = SipUri::parse(text).map_err(|_| bad())?;
            if uri.secure {
                return Err(TrunkError::SecureScheme);
            }
            if uri.user.is_some() {
                return Err(TrunkError::UserPart);
            }
            if uri.transport.is_some() {
                return Err(TrunkError::TransportParameter);
            }
            if uri.maddr.is_some() {
                return Err(TrunkError::Maddr);
            }
            (String::from(uri.host), uri.port)
        } else {
            let (host, port) = split_host_port(text).ok_or_else(bad)?;
            (host.to_owned(), port)
        };
        if port == Some(0) {
            return Err(bad());
        }
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => TerminationHost::Ip(ip),
            Err(_) if is_dns_name(&host) => {
                TerminationHost::Name(host.trim_end_matches('.').to_ascii_lowercase().into())
            }
            Err(_) => return Err(bad()),
        };
        Ok(Termination { host, port })
    }
}

/// `host[:port]` as written in a SIP URI: IPv6 in brackets.
impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// As written in a SIP URI: IPv6 in brackets.
impl fmt::Display for TerminationHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TerminationHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            TerminationHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            TerminationHost::Name(name) => f.write_str(name),
        }
    }
}

/// A SIP transport a trunk target is reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    /// SIP over UDP (RFC 3261 §18).
    Udp,
    /// SIP over TCP (RFC 3261 §18).
    Tcp,
}

impl TrunkTransport {
    /// The SRV service label (RFC 3263 §4.1): `_udp` or `_tcp`.
    pub fn srv_label(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "_udp",
            TrunkTransport::Tcp => "_tcp",
        }
    }
}

/// How telephone numbers are written towards the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberFormat {
    /// E.164 with a plus: `+13125550188`, `+442079460000`.
    E164,
    /// As dialled in North America: `3125550188`, `011442079460000`.
    National,
}

/// Digest credentials for the trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The digest username.
    pub username: Box<str>,
    /// The digest password.
    pub password: Password,
}

/// A password: its `Debug` form does not show it, so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct Password(Box<str>);

impl Password {
    /// The password itself, for computing a digest response.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(text: String) -> Password {
        Password(text.into_boxed_str())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The Request-URI of the customer leg:
/// `sip:+13125550188@host[:port];user=phone` or `sip:3125550188@host[:port]`.
pub fn customer_request_uri(number: &PhoneNumber, trunk: &TrunkSettings) -> String {
    let mut uri = String::with_capacity(48);
    push_sip_uri(&mut uri, number, trunk, true);
    uri
}

/// The From value for the customer leg, without a tag (the UAC adds
/// `;tag=`): `<sip:+13125550100@host;user=phone>`.
pub fn from_header(caller_id: &PhoneNumber, trunk: &TrunkSettings) -> String {
    let mut value = String::with_capacity(48);
    value.push('<');
    push_sip_uri(&mut value, caller_id, trunk, false);
    value.push('>');
    value
}

/// The P-Asserted-Identity value for the customer leg (RFC 3325 §9.1), the
/// same URI as [`from_header`]; `None` when the trunk does not want one.
pub fn pai_header(caller_id: &PhoneNumber, trunk: &TrunkSettings) -> Option<String> {
    trunk
        .p_asserted_identity
        .then(|| from_header(caller_id, trunk))
}

/// The caller ID a callback presents to the customer:
///
/// 1. the one it asked for (`asked`, plain digits), while it is still one of
///    the organisation's numbers (`org`; empty: no central list) and the
///    agent may present it;
/// 2. else the queue's number (`queue`), when the agent may present it;
/// 3. else the agent's first own number (an agent restricted to others
///    presents its own);
/// 4. else the queue's number.
///
/// An agent "may present" a number when its list (`agent`) is empty or
/// holds it. `None` only for a queue no longer configured and an agent
/// without a list (the leg then goes out with our own identity).
pub fn presented_caller_id(
    asked: Option<&str>,
    queue: Option<&PhoneNumber>,
    agent: &[PhoneNumber],
    org: &[PhoneNumber],
) -> Option<PhoneNumber> {
    let agent_may = |n: &PhoneNumber| agent.is_empty() || agent.contains(n);
    if let Some(asked) = asked.and_then(|d| crate::callback::number::own_number(d).ok())
        && (org.is_empty() || org.contains(&asked))
        && agent_may(&asked)
    {
        return Some(asked);
    }
    queue
        .filter(|q| agent_may(q))
        .or_else(|| agent.first())
        .or(queue)
        .cloned()
}

/// A token-bucket limit on how fast calls are placed, as a generic cell
/// rate algorithm: one token every `1 / rate` seconds, at most `burst`
/// saved up. Time is passed in.
#[derive(Debug, Clone)]
pub struct CpsLimiter {
    /// Time between tokens.
    interval: Duration,
    /// How far ahead of `now` the theoretical arrival time may run:
    /// `(burst - 1) * interval`.
    tolerance: Duration,
    /// When the next call would be due at the steady rate (GCRA's TAT);
    /// `None` before the first call.
    next_due: Option<Instant>,
}

impl CpsLimiter {
    /// `rate` calls per second (finite, 0.001..=1000), `burst` of them at
    /// once (at least 1).
    pub fn new(rate: f64, burst: u32) -> Result<CpsLimiter, TrunkError> {
        let bad = || TrunkError::BadCpsLimit {
            value: rate.to_string(),
        };
        if !(MIN_CPS..=MAX_CPS).contains(&rate) {
            return Err(bad());
        }
        let interval = Duration::try_from_secs_f64(1.0 / rate).map_err(|_| bad())?;
        Ok(CpsLimiter {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            next_due: None,
        })
    }

    /// Takes a token for a call placed at `now`, or says how long to wait
    /// for one (nothing is taken then).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        let due = self.next_due.map_or(now, |due| due.max(now));
        let ahead = due - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        self.next_due = Some(due + self.interval);
        Ok(())
    }
}

/// One resolved place to send the customer INVITE to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Address and port.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: TrunkTransport,
    /// SRV priority (lower first); 0 without SRV.
    pub priority: u16,
    /// SRV weight; 0 without SRV.
    pub weight: u16,
    /// The name the address came from (SRV target or host), for logs.
    pub name: Box<str>,
}

impl Target {
    /// Where the endpoint must send to reach this target.
    pub fn destination(&self) -> Destination {
        match self.transport {
            TrunkTransport::Udp => Destination::Udp(self.addr),
            TrunkTransport::Tcp => Destination::Tcp {
                conn: None,
                remote: self.addr,
            },
        }
    }
}

/// Why a target failed, in the sense of RFC 3263 §4.3 (a reason to try the
/// next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFailure {
    /// `503 Service Unavailable`, with its Retry-After if it had one.
    ServiceUnavailable {
        /// The Retry-After delay.
        retry_after: Option<Duration>,
    },
    /// No response: the INVITE transaction timed out (Timer B, RFC 3261
    /// §17.1.1.2), or the target sent `408` itself.
    Timeout,
    /// The transport failed: ICMP unreachable, TCP connection refused or
    /// reset (RFC 3261 §18.4).
    Transport,
}

impl TargetFailure {
    /// The failure a final status means for the target, if any, and only
    /// before the customer's phone rang (`rang`: a 180/183 arrived): a 503
    /// (received, or ours for a transport error: RFC 3263 §4.3), or a 408
    /// that was *not* `received` (Timer B: the target never answered). A 408
    /// the carrier sent is the customer's outcome (nobody answered there),
    /// like every other status, and must not be retried elsewhere.
    pub fn from_response(
        status: u16,
        retry_after: Option<Duration>,
        rang: bool,
        received: bool,
    ) -> Option<TargetFailure> {
        match status {
            _ if rang => None,
            503 => Some(TargetFailure::ServiceUnavailable { retry_after }),
            408 if !received => Some(TargetFailure::Timeout),
            _ => None,
        }
    }
}

/// Whether a target may be used, as [`TargetHealth`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Nothing known against it.
    Up,
    /// It failed recently: tried after every healthy target.
    HeldDown,
    /// It asked not to be used before `until` (503 Retry-After).
    Unavailable {
        /// When it may be used again.
        until: Instant,
    },
}

/// What the trunk remembers about its targets across calls: Retry-After
/// and hold-downs. One per trunk.
#[derive(Debug, Clone)]
pub struct TargetHealth {
    holddown: Duration,
    down: HashMap<(SocketAddr, TrunkTransport), Down>,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    until: Instant,
    /// Set by Retry-After: skipped, not just tried last.
    hard: bool,
}

impl TargetHealth {
    /// Health with nothing known, holding failed targets down for
    /// `holddown`.
    pub fn new(holddown: Duration) -> TargetHealth {
        TargetHealth {
            holddown,
            down: HashMap::new(),
        }
    }

    /// How `target` stands at `now`.
    pub fn availability(&self, target: &Target, now: Instant) -> Availability {
        match self.down.get(&(target.addr, target.transport)) {
            Some(down) if down.until > now && down.hard => {
                Availability::Unavailable { until: down.until }
            }
            Some(down) if down.until > now => Availability::HeldDown,
            Some(_) | None => Availability::Up,
        }
    }

    /// The target must not be used before `until` (RFC 3261 §21.5.4,
    /// Retry-After on a 503). A later deadline already set is kept.
    pub fn mark_unavailable(&mut self, target: &Target, until: Instant) {
        let entry = self
            .down
            .entry((target.addr, target.transport))
            .or_insert(Down { until, hard: true });
        if !entry.hard || entry.until < until {
            *entry = Down { until, hard: true };
        }
    }

    /// The target failed at `now` without saying for how long: held down
    /// for the hold-down time (a Retry-After deadline already set is kept).
    pub fn mark_failed(&mut self, target: &Target, now: Instant) {
        self.prune(now);
        let Some(until) = now.checked_add(self.holddown) else {
            return;
        };
        let entry = self
            .down
            .entry((target.addr, target.transport))
            .or_insert(Down { until, hard: false });
        if !entry.hard && entry.until < until {
            entry.until = until;
        }
    }

    /// The target answered (any response): it is alive, its hold-down ends.
    /// A Retry-After deadline stays: the target itself asked for it.
    pub fn mark_alive(&mut self, target: &Target) {
        let key = (target.addr, target.transport);
        if self.down.get(&key).is_some_and(|d| !d.hard) {
            self.down.remove(&key);
        }
    }

    /// Records `failure` of `target` at `now`.
    pub fn record(&mut self, target: &Target, failure: TargetFailure, now: Instant) {
        match failure {
            TargetFailure::ServiceUnavailable {
                retry_after: Some(delay),
            } => {
                // Capped, so a hostile or mistyped value cannot take a
                // target out for days (or overflow the clock).
                let delay = delay.min(MAX_RETRY_AFTER);
                match now.checked_add(delay) {
                    Some(until) => self.mark_unavailable(target, until),
                    None => self.mark_failed(target, now),
                }
            }
            TargetFailure::ServiceUnavailable { retry_after: None }
            | TargetFailure::Timeout
            | TargetFailure::Transport => self.mark_failed(target, now),
        }
    }

    /// Forgets deadlines that have passed.
    fn prune(&mut self, now: Instant) {
        self.down.retain(|_, down| down.until > now);
    }
}

/// The resolved targets of one call, in the order RFC 3263 gives them, and
/// which of them this call has tried.
#[derive(Debug, Clone)]
pub struct TargetList {
    targets: Vec<Target>,
    tried: Vec<bool>,
    current: Option<usize>,
    attempts: usize,
    max_attempts: usize,
}

impl TargetList {
    /// `targets` in the order to try them; at most `max_attempts` of them
    /// are tried by one call.
    pub fn new(targets: Vec<Target>, max_attempts: usize) -> TargetList {
        TargetList {
            tried: vec![false; targets.len()],
            targets,
            current: None,
            attempts: 0,
            max_attempts,
        }
    }

    /// Every target, in order.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The target last handed out.
    pub fn current(&self) -> Option<&Target> {
        self.current.and_then(|i| self.targets.get(i))
    }

    /// The next target to send to (on a fresh list, the first): the first
    /// untried one that is [`Availability::Up`], else the first untried one
    /// held down; targets under a Retry-After are skipped. `None` when none
    /// is left or `max_attempts` targets have been handed out.
    pub fn first(&mut self, now: Instant, health: &TargetHealth) -> Option<&Target> {
        if self.attempts >= self.max_attempts {
            self.current = None;
            return None;
        }
        let untried = || (0..self.targets.len()).filter(|&i| !self.tried[i]);
        let state = |i: usize| health.availability(&self.targets[i], now);
        let pick = untried()
            .find(|&i| state(i) == Availability::Up)
            .or_else(|| untried().find(|&i| state(i) == Availability::HeldDown));
        self.current = pick;
        let i = pick?;
        self.tried[i] = true;
        self.attempts += 1;
        self.targets.get(i)
    }

    /// The current target failed: records it in `health` and hands out the
    /// next one as [`TargetList::first`] does (RFC 3263 §4.3).
    pub fn next_after(
        &mut self,
        failure: TargetFailure,
        now: Instant,
        health: &mut TargetHealth,
    ) -> Option<&Target> {
        if let Some(current) = self.current() {
            let current = current.clone();
            health.record(&current, failure, now);
        }
        self.first(now, health)
    }
}

/// Orders items as RFC 2782 orders SRV records, `key` giving each one's
/// `(priority, weight)`: by priority, lowest first; within a priority by
/// weighted random selection, drawing from `rng`.
///
/// The draw is from `1..=sum` rather than RFC 2782's `0..=sum`, so an item
/// is picked with exactly its share of the weight (3:1 is 75 % : 25 %);
/// the inclusive zero would hand the first item in the list an extra
/// `1 / (sum + 1)`. Items of weight 0 therefore come after the weighted
/// ones of their priority, in the order given.
pub fn order_weighted<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> (u16, u16),
    rng: &mut fastrand::Rng,
) -> Vec<T> {
    // A stable sort: equal priorities keep the order given.
    items.sort_by_key(|i| key(i).0);
    let mut ordered = Vec::with_capacity(items.len());
    let mut rest = items;
    while let Some(first) = rest.first() {
        let priority = key(first).0;
        let len = rest.iter().take_while(|i| key(i).0 == priority).count();
        let tail = rest.split_off(len);
        let mut group = rest;
        while !group.is_empty() {
            let sum: u32 = group.iter().map(|i| u32::from(key(i).1)).sum();
            let index = if sum == 0 {
                0
            } else {
                // The first item whose running sum reaches the draw.
                let pick = rng.u32(1..=sum);
                let mut running = 0u32;
                group
                    .iter()
                    .position(|i| {
                        running += u32::from(key(i).1);
                        running >= pick
                    })
                    .unwrap_or(0)
            };
            ordered.push(group.remove(index));
        }
        rest = tail;
    }
    ordered
}

/// The order one call tries the trunk's resolved targets in. RFC 2782's
/// weighted choice is drawn again for every call, so equal-priority SRV
/// targets share the calls by weight (a single draw at resolution time
/// would send every call to the same one until the next lookup).
///
/// `targets` is the resolver's list: transport blocks (UDP's targets, then
/// TCP's) kept in that order; within a block, the addresses of one SRV
/// record (same name, port, priority and weight) stay together and in
/// order, and the records are ordered by [`order_weighted`].
pub fn order_for_call(targets: &[Target], rng: &mut fastrand::Rng) -> Vec<Target> {
    let mut out = Vec::with_capacity(targets.len());
    let mut block_start = 0;
    while let Some(first) = targets.get(block_start) {
        let len = targets[block_start..]
            .iter()
            .take_while(|t| t.transport == first.transport)
            .count();
        let block = &targets[block_start..block_start + len];
        // One group per SRV record, in first-appearance order.
        let mut groups: Vec<Vec<&Target>> = Vec::new();
        for t in block {
            match groups.iter_mut().find(|g| same_record(g[0], t)) {
                Some(group) => group.push(t),
                None => groups.push(vec![t]),
            }
        }
        for group in order_weighted(groups, |g| (g[0].priority, g[0].weight), rng) {
            out.extend(group.into_iter().cloned());
        }
        block_start += len;
    }
    out
}

/// Whether two targets came from the same SRV record (or the same host's
/// A/AAAA records).
fn same_record(a: &Target, b: &Target) -> bool {
    a.name == b.name
        && a.addr.port() == b.addr.port()
        && a.priority == b.priority
        && a.weight == b.weight
}

/// Why a trunk setting cannot be used. All are local (configuration)
/// faults.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrunkError {
    /// Neither `sip:host[:port]` nor `host[:port]` with a valid host.
    #[error("{text:?} is not sip:host[:port] or host[:port]")]
    BadTermination {
        /// The text as written.
        text: Box<str>,
    },
    /// A `sips:` URI: TLS is not a transport callbackd has.
    #[error("sips: needs TLS, which is not supported; use sip:")]
    SecureScheme,
    /// A user part in the termination URI: the user is the customer.
    #[error("must not have a user part: the customer's number is put there")]
    UserPart,
    /// A `transport` URI parameter: the transport is its own setting.
    #[error("must not have a transport parameter: set the transport on its own")]
    TransportParameter,
    /// An `maddr` URI parameter.
    #[error("maddr is not supported")]
    Maddr,
    /// A calls-per-second cap that is not a finite number in range.
    #[error("{value} is not a call rate in 0.001..=1000 per second")]
    BadCpsLimit {
        /// The rate as given.
        value: String,
    },
}

/// Slowest call rate a limiter accepts (one call every 1000 s).
const MIN_CPS: f64 = 0.001;

/// Fastest call rate a limiter accepts.
const MAX_CPS: f64 = 1000.0;

/// Longest Retry-After honoured for a target.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Writes `sip:<number>@host` (with the port when `with_port`) and
/// `;user=phone` when the trunk wants it and the number is global.
fn push_sip_uri(out: &mut String, number: &PhoneNumber, trunk: &TrunkSettings, with_port: bool) {
    use std::fmt::Write as _;
    out.push_str("sip:");
    let format = trunk.number_format;
    match (format, number) {
        (NumberFormat::E164, PhoneNumber::National { .. }) => out.push_str("+1"),
        (NumberFormat::E164, PhoneNumber::International { .. }) => out.push('+'),
        (NumberFormat::National, PhoneNumber::National { .. }) => {}
        (NumberFormat::National, PhoneNumber::International { .. }) => out.push_str("011"),
    }
    match number {
        PhoneNumber::National { digits } => {
            out.extend(digits.iter().map(|&d| char::from(d)));
        }
        PhoneNumber::International { digits } => out.push_str(digits),
    }
    out.push('@');
    let termination = &trunk.termination;
    // Writing into a String cannot fail.
    let _ = if with_port {
        write!(out, "{termination}")
    } else {
        write!(out, "{}", termination.host)
    };
    if trunk.user_phone && format == NumberFormat::E164 {
        out.push_str(";user=phone");
    }
}

/// A DNS host name (RFC 1123 §2.1 labels; the last one starts with a
/// letter, so a mistyped dotted quad is not taken for a name), optionally
/// with a trailing dot.
fn is_dns_name(text: &str) -> bool {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() || text.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let top_is_alpha = text
        .rsplit('.')
        .next()
        .and_then(|top| top.bytes().next())
        .is_some_and(|b| b.is_ascii_alphabetic());
    text.split('.').all(label_ok) && top_is_alpha
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::number::{NumberPolicy, validate};

    fn national(digits: &str) -> PhoneNumber {
        validate(digits, &NumberPolicy::default()).expect("valid national number")
    }

    fn international(keyed: &str) -> PhoneNumber {
        let policy = NumberPolicy {
            allow_international: true,
            max_rate_per_minute: 1.0,
            rates: vec![(String::new(), 0.0)],
            blacklist: Vec::new(),
        };
        validate(keyed, &policy).expect("valid international number")
    }

    fn trunk(termination: &str, format: NumberFormat, user_phone: bool) -> TrunkSettings {
        TrunkSettings {
            termination: Termination::parse(termination).expect("termination"),
            transport: Some(TrunkTransport::Udp),
            number_format: format,
            user_phone,
            p_asserted_identity: true,
            cps_limit: 10.0,
            credentials: None,
            max_targets: 4,
            holddown: Duration::from_secs(30),
        }
    }

    fn target(last_octet: u8, transport: TrunkTransport) -> Target {
        Target {
            addr: SocketAddr::from(([192, 0, 2, last_octet], 5060)),
            transport,
            priority: 0,
            weight: 0,
            name: "sip.carrier.example".into(),
        }
    }

    fn srv_target(
        name: &str,
        last_octet: u8,
        (priority, weight): (u16, u16),
        transport: TrunkTransport,
    ) -> Target {
        Target {
            addr: SocketAddr::from(([192, 0, 2, last_octet], 5060)),
            transport,
            priority,
            weight,
            name: name.into(),
        }
    }

    #[test]
    fn order_for_call_shares_equal_priorities_by_weight() {
        use TrunkTransport::Udp;
        // a: weight 3 with two addresses, b: weight 1, c: the backup.
        let targets = vec![
            srv_target("a", 1, (10, 3), Udp),
            srv_target("a", 2, (10, 3), Udp),
            srv_target("b", 3, (10, 1), Udp),
            srv_target("c", 4, (20, 0), Udp),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut a_first = 0;
        for _ in 0..4_000 {
            let order = order_for_call(&targets, &mut rng);
            let names: Vec<&str> = order.iter().map(|t| &*t.name).collect();
            let octets: Vec<u8> = order
                .iter()
                .map(|t| match t.addr.ip() {
                    std::net::IpAddr::V4(v4) => v4.octets()[3],
                    std::net::IpAddr::V6(_) => 0,
                })
                .collect();
            match names.as_slice() {
                ["a", "a", "b", "c"] => {
                    a_first += 1;
                    assert_eq!(octets, [1, 2, 3, 4]);
                }
                ["b", "a", "a", "c"] => assert_eq!(octets, [3, 1, 2, 4]),
                other => panic!("one record's addresses split or backup first: {other:?}"),
            }
        }
        // 3:1 → 75 %; ±5 % is far outside chance for 4,000 draws.
        assert!(
            (2_800..=3_200).contains(&a_first),
            "a first {a_first} / 4000"
        );
    }

    #[test]
    fn order_for_call_keeps_udp_targets_before_tcp() {
        use TrunkTransport::{Tcp, Udp};
        let targets = vec![
            srv_target("u", 1, (20, 1), Udp),
            srv_target("u2", 2, (20, 1), Udp),
            srv_target("t", 3, (10, 1), Tcp),
        ];
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..100 {
            let order = order_for_call(&targets, &mut rng);
            let transports: Vec<TrunkTransport> = order.iter().map(|t| t.transport).collect();
            assert_eq!(transports, [Udp, Udp, Tcp]);
        }
        assert!(order_for_call(&[], &mut rng).is_empty());
    }

    fn list(n: u8, max_attempts: usize) -> TargetList {
        TargetList::new(
            (1..=n).map(|i| target(i, TrunkTransport::Udp)).collect(),
            max_attempts,
        )
    }

    fn octet(t: Option<&Target>) -> Option<u8> {
        t.map(|t| match t.addr.ip() {
            IpAddr::V4(ip) => ip.octets()[3],
            IpAddr::V6(_) => panic!("v4 targets only"),
        })
    }

    #[test]
    fn parses_termination_forms() {
        let cases: [(&str, &str, Option<u16>); 7] = [
            ("sip:carrier.example.net", "carrier.example.net", None),
            (
                "SIP:Carrier.Example.NET:5080",
                "carrier.example.net",
                Some(5080),
            ),
            ("sip:carrier.example.net;lr", "carrier.example.net", None),
            ("127.0.0.1:5070", "127.0.0.1", Some(5070)),
            ("[2001:db8::1]:5070", "[2001:db8::1]", Some(5070)),
            ("sip:[2001:db8::1]", "[2001:db8::1]", None),
            ("localhost", "localhost", None),
        ];
        for (text, host, port) in cases {
            let t = Termination::parse(text).expect(text);
            assert_eq!(
                (t.host.to_string().as_str(), t.port),
                (host, port),
                "{text}"
            );
        }
        assert_eq!(
            Termination::parse("192.0.2.7").expect("ip").host,
            TerminationHost::Ip(IpAddr::from([192, 0, 2, 7]))
        );
        assert_eq!(
            Termination::parse("carrier.example.net.")
                .expect("fqdn")
                .host,
            TerminationHost::Name("carrier.example.net".into())
        );
    }

    #[test]
    fn rejects_malformed_termination() {
        for text in [
            "",
            "carrier example",
            "carrier.example.net:x",
            "carrier.example.net:0",
            "sip:",
            "sip:carrier_example.net",
            "192.0.2.300",
            "-carrier.example.net",
            "tel:+13125550100",
        ] {
            assert!(
                matches!(
                    Termination::parse(text),
                    Err(TrunkError::BadTermination { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn rejects_sips_termination() {
        assert_eq!(
            Termination::parse("sips:carrier.example.net"),
            Err(TrunkError::SecureScheme)
        );
    }

    #[test]
    fn rejects_termination_with_user_part() {
        assert_eq!(
            Termination::parse("sip:trunk@carrier.example.net"),
            Err(TrunkError::UserPart)
        );
    }

    #[test]
    fn rejects_termination_with_transport_or_maddr() {
        assert_eq!(
            Termination::parse("sip:carrier.example.net;transport=tcp"),
            Err(TrunkError::TransportParameter)
        );
        assert_eq!(
            Termination::parse("sip:carrier.example.net;maddr=192.0.2.1"),
            Err(TrunkError::Maddr)
        );
    }

    #[test]
    fn request_uri_in_e164_with_user_phone() {
        let t = trunk("sip:carrier.example.net", NumberFormat::E164, true);
        assert_eq!(
            customer_request_uri(&national("3125550188"), &t),
            "sip:+13125550188@carrier.example.net;user=phone"
        );
        assert_eq!(
            customer_request_uri(&international("011442079460000"), &t),
            "sip:+442079460000@carrier.example.net;user=phone"
        );
        let plain = trunk("sip:carrier.example.net", NumberFormat::E164, false);
        assert_eq!(
            customer_request_uri(&national("3125550188"), &plain),
            "sip:+13125550188@carrier.example.net"
        );
    }

    #[test]
    fn request_uri_in_national_format() {
        // user_phone is ignored for a national number (RFC 3966 §5.1.5).
        let t = trunk("127.0.0.1:5070", NumberFormat::National, true);
        assert_eq!(
            customer_request_uri(&national("3125550188"), &t),
            "sip:3125550188@127.0.0.1:5070"
        );
        assert_eq!(
            customer_request_uri(&international("011442079460000"), &t),
            "sip:011442079460000@127.0.0.1:5070"
        );
    }

    #[test]
    fn request_uri_brackets_ipv6_and_keeps_the_port() {
        let t = trunk("[2001:db8::1]:5070", NumberFormat::E164, true);
        assert_eq!(
            customer_request_uri(&national("3125550188"), &t),
            "sip:+13125550188@[2001:db8::1]:5070;user=phone"
        );
    }

    #[test]
    fn the_presented_caller_id_follows_the_ask_the_queue_then_the_agent() {
        let n = |d: &str| crate::callback::number::own_number(d).expect("own number");
        let (queue, toll_free, alice) = (n("3125550100"), n("8005550100"), n("2125550100"));
        let org = [queue.clone(), toll_free.clone(), alice.clone()];
        let pick = |asked, queue: Option<&PhoneNumber>, agent: &[PhoneNumber], org| {
            presented_caller_id(asked, queue, agent, org).map(|c| c.as_digits())
        };
        let digits = |p: &PhoneNumber| Some(p.as_digits());
        // Asked, and the agent may present it (no list, or in its list).
        assert_eq!(
            pick(Some("8005550100"), Some(&queue), &[], &org),
            digits(&toll_free)
        );
        assert_eq!(
            pick(
                Some("8005550100"),
                Some(&queue),
                std::slice::from_ref(&toll_free),
                &org
            ),
            digits(&toll_free)
        );
        // Asked but no longer one of the org's: the queue's.
        assert_eq!(
            pick(Some("8005550100"), Some(&queue), &[], &org[..1]),
            digits(&queue)
        );
        // No central list: what the API accepted is presented.
        assert_eq!(
            pick(Some("8005550100"), Some(&queue), &[], &[]),
            digits(&toll_free)
        );
        // Not asked: the queue's, unless the agent is restricted to others,
        // then the agent's first.
        assert_eq!(pick(None, Some(&queue), &[], &org), digits(&queue));
        assert_eq!(
            pick(None, Some(&queue), &[alice.clone(), queue.clone()], &org),
            digits(&queue)
        );
        assert_eq!(
            pick(None, Some(&queue), std::slice::from_ref(&alice), &org),
            digits(&alice)
        );
        // Asked, but the agent may not: its own (the scheduler avoids this;
        // an organisation changed meanwhile can bring it about).
        assert_eq!(
            pick(
                Some("8005550100"),
                Some(&queue),
                std::slice::from_ref(&alice),
                &org
            ),
            digits(&alice)
        );
        // A queue no longer configured.
        assert_eq!(
            pick(None, None, std::slice::from_ref(&alice), &org),
            digits(&alice)
        );
        assert_eq!(pick(None, None, &[], &org), None);
        // Garbage stored as asked is ignored.
        assert_eq!(pick(Some("12"), Some(&queue), &[], &org), digits(&queue));
    }

    #[test]
    fn caller_id_in_from_and_pai() {
        let mut t = trunk("sip:carrier.example.net:5080", NumberFormat::E164, true);
        let cid = national("3125550100");
        let expected = "<sip:+13125550100@carrier.example.net;user=phone>";
        assert_eq!(from_header(&cid, &t), expected, "no port in an identity");
        assert_eq!(pai_header(&cid, &t).as_deref(), Some(expected));
        t.p_asserted_identity = false;
        assert_eq!(pai_header(&cid, &t), None);
        let n = trunk("127.0.0.1:5070", NumberFormat::National, false);
        assert_eq!(from_header(&cid, &n), "<sip:3125550100@127.0.0.1>");
    }

    #[test]
    fn cps_limiter_spaces_calls_at_the_steady_rate() {
        let t0 = Instant::now();
        let mut cps = CpsLimiter::new(10.0, 1).expect("rate");
        assert_eq!(cps.try_acquire(t0), Ok(()));
        assert_eq!(cps.try_acquire(t0), Err(Duration::from_millis(100)));
        assert_eq!(
            cps.try_acquire(t0 + Duration::from_millis(40)),
            Err(Duration::from_millis(60))
        );
        assert_eq!(cps.try_acquire(t0 + Duration::from_millis(100)), Ok(()));
        // Over ten seconds of asking every millisecond, 100 calls pass.
        let mut cps = CpsLimiter::new(10.0, 1).expect("rate");
        let granted = (0..10_000)
            .filter(|ms| cps.try_acquire(t0 + Duration::from_millis(*ms)).is_ok())
            .count();
        assert_eq!(granted, 100);
    }

    #[test]
    fn cps_limiter_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut cps = CpsLimiter::new(2.0, 3).expect("rate");
        for _ in 0..3 {
            assert_eq!(cps.try_acquire(t0), Ok(()));
        }
        assert_eq!(cps.try_acquire(t0), Err(Duration::from_millis(500)));
        assert_eq!(cps.try_acquire(t0 + Duration::from_millis(500)), Ok(()));
        assert!(cps.try_acquire(t0 + Duration::from_millis(500)).is_err());
        // Idle long enough: the burst is back, and no more than it.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(cps.try_acquire(later), Ok(()));
        }
        assert!(cps.try_acquire(later).is_err());
    }

    #[test]
    fn cps_limiter_takes_fractional_rates() {
        let t0 = Instant::now();
        let mut cps = CpsLimiter::new(0.5, 1).expect("rate");
        assert_eq!(cps.try_acquire(t0), Ok(()));
        assert_eq!(
            cps.try_acquire(t0 + Duration::from_secs(1)),
            Err(Duration::from_secs(1))
        );
        assert_eq!(cps.try_acquire(t0 + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn rejects_unusable_cps_limits() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.0001, 1000.5] {
            assert!(
                matches!(
                    CpsLimiter::new(rate, 1),
                    Err(TrunkError::BadCpsLimit { .. })
                ),
                "{rate}"
            );
        }
    }

    #[test]
    fn fails_over_only_on_503_or_an_unanswered_invite_before_ringing() {
        let ra = Some(Duration::from_secs(5));
        for received in [true, false] {
            assert_eq!(
                TargetFailure::from_response(503, ra, false, received),
                Some(TargetFailure::ServiceUnavailable { retry_after: ra })
            );
        }
        // Timer B: the target never answered.
        assert_eq!(
            TargetFailure::from_response(408, None, false, false),
            Some(TargetFailure::Timeout)
        );
        // A 408 the carrier sent: nobody answered the customer's phone.
        assert_eq!(TargetFailure::from_response(408, None, false, true), None);
        for status in [486, 600, 404, 484, 480, 500, 403, 200] {
            assert_eq!(
                TargetFailure::from_response(status, None, false, true),
                None
            );
        }
        assert_eq!(TargetFailure::from_response(503, None, true, true), None);
        assert_eq!(TargetFailure::from_response(408, None, true, false), None);
    }

    #[test]
    fn next_after_walks_the_list_in_order() {
        let t0 = Instant::now();
        let mut health = TargetHealth::new(Duration::from_secs(30));
        let mut targets = list(3, 8);
        assert_eq!(octet(targets.first(t0, &health)), Some(1));
        assert_eq!(octet(targets.current()), Some(1));
        let next = targets.next_after(TargetFailure::Timeout, t0, &mut health);
        assert_eq!(octet(next), Some(2));
        let next = targets.next_after(TargetFailure::Transport, t0, &mut health);
        assert_eq!(octet(next), Some(3));
        let none = targets.next_after(
            TargetFailure::ServiceUnavailable { retry_after: None },
            t0,
            &mut health,
        );
        assert_eq!(octet(none), None);
        assert_eq!(targets.current(), None);
    }

    #[test]
    fn max_targets_caps_the_attempts() {
        let t0 = Instant::now();
        let mut health = TargetHealth::new(Duration::from_secs(30));
        let mut targets = list(5, 2);
        assert_eq!(octet(targets.first(t0, &health)), Some(1));
        assert_eq!(
            octet(targets.next_after(TargetFailure::Timeout, t0, &mut health)),
            Some(2)
        );
        assert_eq!(
            octet(targets.next_after(TargetFailure::Timeout, t0, &mut health)),
            None
        );
    }

    #[test]
    fn retry_after_skips_the_target_for_later_calls_until_it_passes() {
        let t0 = Instant::now();
        let mut health = TargetHealth::new(Duration::from_secs(30));
        let mut call1 = list(2, 8);
        assert_eq!(octet(call1.first(t0, &health)), Some(1));
        let failure = TargetFailure::ServiceUnavailable {
            retry_after: Some(Duration::from_secs(120)),
        };
        assert_eq!(octet(call1.next_after(failure, t0, &mut health)), Some(2));
        let t1 = &call1.targets()[0];
        assert_eq!(
            health.availability(t1, t0 + Duration::from_secs(60)),
            Availability::Unavailable {
                until: t0 + Duration::from_secs(120)
            }
        );
        // A later call skips target 1 entirely while the deadline holds…
        let mut call2 = list(2, 8);
        let at = t0 + Duration::from_secs(60);
        assert_eq!(octet(call2.first(at, &health)), Some(2));
        assert_eq!(
            octet(call2.next_after(TargetFailure::Timeout, at, &mut health)),
            None,
            "an unavailable target is not a last resort"
        );
        // …and uses it again once it has passed.
        let mut call3 = list(2, 8);
        let after = t0 + Duration::from_secs(121);
        assert_eq!(octet(call3.first(after, &health)), Some(1));
    }

    #[test]
    fn retry_after_is_capped() {
        let t0 = Instant::now();
        let mut health = TargetHealth::new(Duration::from_secs(30));
        let t = target(1, TrunkTransport::Udp);
        health.record(
            &t,
            TargetFailure::ServiceUnavailable {
                retry_after: Some(Duration::from_secs(u64::MAX)),
            },
            t0,
        );
        assert_eq!(
            health.availability(&t, t0),
            Availability::Unavailable {
                until: t0 + MAX_RETRY_AFTER
            }
        );
    }

    #[test]
    fn held_down_targets_are_tried_last_not_skipped() {
        let t0 = Instant::now();
        let mut health = TargetHealth::new(Duration::from_secs(30));
        let mut call1 = list(2, 8);
        call1.first(t0, &health);
        call1.next_after(TargetFailure::Timeout, t0, &mut health);
        let t1 = call1.targets()[0].clone();
        assert_eq!(health.availability(&t1, t0), Availability::HeldDown);
        // The next call goes to target 2 first, then still tries target 1.
        let at = t0 + Duration::from_secs(10);
        let mut call2 = list(2, 8);
        assert_eq!(octet(call2.first(at, &health)), Some(2));
        assert_eq!(
            octet(call2.next_after(TargetFailure::Transport, at, &mut health)),
            Some(1)
        );
        // The hold-down ends by time, or when the target answers.
        assert_eq!(
            health.availability(&t1, t0 + Duration::from_secs(31)),
            Availability::Up
        );
        health.mark_alive(&t1);
        assert_eq!(health.availability(&t1, at), Availability::Up);
    }

    #[test]
    fn mark_alive_keeps_a_retry_after() {
        let t0 = Instant::now();
        let mut health = TargetHealth::new(Duration::from_secs(30));
        let t = target(1, TrunkTransport::Udp);
        health.mark_unavailable(&t, t0 + Duration::from_secs(60));
        health.mark_alive(&t);
        health.mark_failed(&t, t0);
        assert_eq!(
            health.availability(&t, t0),
            Availability::Unavailable {
                until: t0 + Duration::from_secs(60)
            }
        );
        // An earlier deadline does not shorten a later one.
        health.mark_unavailable(&t, t0 + Duration::from_secs(5));
        assert_eq!(
            health.availability(&t, t0 + Duration::from_secs(10)),
            Availability::Unavailable {
                until: t0 + Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn health_is_per_transport() {
        let t0 = Instant::now();
        let mut health = TargetHealth::new(Duration::from_secs(30));
        let udp = target(1, TrunkTransport::Udp);
        let tcp = target(1, TrunkTransport::Tcp);
        health.mark_failed(&udp, t0);
        assert_eq!(health.availability(&udp, t0), Availability::HeldDown);
        assert_eq!(health.availability(&tcp, t0), Availability::Up);
    }

    #[test]
    fn target_destination_follows_the_transport() {
        let udp = target(1, TrunkTransport::Udp);
        assert_eq!(udp.destination(), Destination::Udp(udp.addr));
        let tcp = target(1, TrunkTransport::Tcp);
        assert_eq!(
            tcp.destination(),
            Destination::Tcp {
                conn: None,
                remote: tcp.addr
            }
        );
    }

    #[test]
    fn password_debug_hides_the_secret() {
        let c = Credentials {
            username: "acme".into(),
            password: Password::from("hunter2".to_owned()),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("acme") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(c.password.expose(), "hunter2");
    }
}
