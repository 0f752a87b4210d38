//! IP access control: CIDR allow-lists for SIP signalling and RTP.
//!
//! An [`Acl`] is an allow-list. An address is allowed when it falls into at
//! least one listed network; **an empty list allows nobody**. There is no
//! implicit "allow all": a deployment that really wants it writes `0.0.0.0/0`
//! and `::/0` explicitly, and the shipped configuration lists `127.0.0.1/32`.
//!
//! Sources arriving on a dual-stack socket as IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) are matched as the IPv4 address they
//! carry, and listed networks inside `::ffff:0:0/96` are stored as the IPv4
//! network they denote, so `10.0.0.0/8` and `::ffff:10.0.0.0/104` mean the
//! same. IPv6 networks shorter than /96 (`::/0` included) therefore do not
//! cover IPv4 sources: list `0.0.0.0/0` for those.
//!
//! [`Acl::allows`] runs for every datagram before any state is created, so it
//! does not allocate: the networks are kept as (network, mask) integer pairs
//! and checked with one AND and one compare each.

use std::collections::HashMap;
use std::fmt;
use std::net::{AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use thiserror::Error;

/// What the SIP layer does with a request whose source the ACL refuses.
///
/// RTP from a refused source is always dropped: there is nothing to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    /// Answer with a stateless 403 Forbidden (RFC 3261 §21.4.4); no
    /// transaction or dialog is created.
    #[default]
    Reject,
    /// Ignore the message silently; a UDP sender sees a timeout.
    Drop,
}

/// A CIDR allow-list; see the module documentation for the matching rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// IPv4 entries as (network, netmask), host bits already cleared.
    v4: Vec<(u32, u32)>,
    /// IPv6 entries as (network, netmask), host bits already cleared.
    v6: Vec<(u128, u128)>,
}

impl Acl {
    /// Builds an allow-list from networks; host bits set in an entry are
    /// ignored (`10.1.2.3/8` allows `10.0.0.0/8`). An empty slice allows
    /// nobody.
    pub fn new(nets: &[IpNet]) -> Acl {
        let mut acl = Acl::default();
        for net in nets {
            match canonical_net(*net) {
                IpNet::V4(n) => acl
                    .v4
                    .push((u32::from(n.network()), u32::from(n.netmask()))),
                IpNet::V6(n) => acl
                    .v6
                    .push((u128::from(n.network()), u128::from(n.netmask()))),
            }
        }
        acl
    }

    /// Parses configuration strings with [`parse_cidr`] and builds the list.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Acl, AclParseError> {
        let mut nets = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let net =
                parse_cidr(entry.as_ref()).map_err(|source| AclParseError { index, source })?;
            nets.push(net);
        }
        Ok(Acl::new(&nets))
    }

    /// Whether `addr` falls into one of the listed networks. IPv4-mapped
    /// IPv6 addresses are checked as IPv4. Does not allocate.
    pub fn allows(&self, addr: IpAddr) -> bool {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }

    /// True when no network is listed, i.e. every address is refused.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Lists the networks as CIDRs, comma-separated (for start-up logs).
impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(nobody)");
        }
        let v4 = self
            .v4
            .iter()
            .map(|&(net, mask)| (IpAddr::V4(Ipv4Addr::from(net)), mask.count_ones()));
        let v6 = self
            .v6
            .iter()
            .map(|&(net, mask)| (IpAddr::V6(Ipv6Addr::from(net)), mask.count_ones()));
        for (i, (net, len)) in v4.chain(v6).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}/{len}")?;
        }
        Ok(())
    }
}

/// Parses one allow-list entry: `addr/prefix-len`, or a bare address taken as
/// a host route (/32 for IPv4, /128 for IPv6). Zone ids and spaces are not
/// accepted.
pub fn parse_cidr(text: &str) -> Result<IpNet, InvalidCidr> {
    let invalid = |reason| InvalidCidr {
        text: text.to_owned(),
        reason,
    };
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|e| invalid(CidrReason::Address(e)))?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match prefix {
        None => max,
        Some(p) => {
            // Digits only: `u8::from_str` would also take a leading '+'.
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(CidrReason::PrefixNotANumber));
            }
            let len: u16 = p
                .parse()
                .map_err(|_| invalid(CidrReason::PrefixNotANumber))?;
            if len > u16::from(max) {
                return Err(invalid(CidrReason::PrefixTooLong { len, max }));
            }
            u8::try_from(len).expect("len <= 128 was checked just above")
        }
    };
    IpNet::new(addr, len).map_err(|_| {
        invalid(CidrReason::PrefixTooLong {
            len: len.into(),
            max,
        })
    })
}

/// An allow-list entry that is not an address or CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid CIDR {text:?}: {reason}")]
pub struct InvalidCidr {
    /// The entry as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: CidrReason,
}

/// Why an allow-list entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrReason {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("{0}")]
    Address(#[from] AddrParseError),
    /// The part after `/` is not a decimal prefix length.
    #[error("prefix length is not a decimal number")]
    PrefixNotANumber,
    /// The prefix length exceeds the address width.
    #[error("prefix length /{len} is longer than /{max}")]
    PrefixTooLong {
        /// Prefix length as written.
        len: u16,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

/// An entry of a list given to [`Acl::parse`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("entry {index}: {source}")]
pub struct AclParseError {
    /// Zero-based position of the entry in the list.
    pub index: usize,
    /// The entry's own error.
    pub source: InvalidCidr,
}

/// Rewrites a network inside `::ffff:0:0/96` as the IPv4 network it denotes,
/// so that it matches canonicalised IPv4-mapped sources.
fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net;
    };
    match (
        v6.network().to_ipv4_mapped(),
        v6.prefix_len().checked_sub(96),
    ) {
        (Some(v4), Some(len)) => {
            IpNet::V4(Ipv4Net::new(v4, len).expect("a /96../128 IPv6 prefix leaves 0..=32 bits"))
        }
        _ => net,
    }
}

/// What a source may do, decided once per datagram or connection at the
/// socket (see [`Sources::classify`]), before anything is queued or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// In no allow-list: dropped (or a stateless 403), TCP closed at accept.
    Outsider,
    /// An agent's phone: REGISTER, OPTIONS, and the dialogs we start towards
    /// it; a new INVITE from it gets 403.
    Agent,
    /// A trunk or proxy (listed, or a resolved trunk target): everything,
    /// new INVITEs included.
    Trunk,
}

impl Role {
    /// Whether the source may start a call (send a dialog-creating INVITE).
    pub fn may_call(self) -> bool {
        self == Role::Trunk
    }

    /// Whether the source may send SIP at all.
    pub fn is_allowed(self) -> bool {
        self != Role::Outsider
    }
}

/// The signalling allow-lists by role: trunks and proxies (configured,
/// plus the addresses the trunk's termination resolved to, which follow
/// the DNS refresh) and agents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    trunks: Acl,
    agents: Acl,
    /// Resolved trunk targets, canonical (IPv4-mapped as IPv4).
    trunk_targets: Vec<IpAddr>,
}

impl Sources {
    /// Sources from the configured trunk and agent lists.
    pub fn new(trunks: Acl, agents: Acl) -> Sources {
        Sources {
            trunks,
            agents,
            trunk_targets: Vec::new(),
        }
    }

    /// Replaces the resolved trunk targets (they are trunks without being
    /// listed); returns whether the set changed.
    pub fn set_trunk_targets(&mut self, targets: impl IntoIterator<Item = IpAddr>) -> bool {
        let mut ips: Vec<IpAddr> = targets.into_iter().map(|ip| ip.to_canonical()).collect();
        ips.sort_unstable();
        ips.dedup();
        let changed = ips != self.trunk_targets;
        self.trunk_targets = ips;
        changed
    }

    /// The resolved trunk targets allowed now.
    pub fn trunk_targets(&self) -> &[IpAddr] {
        &self.trunk_targets
    }

    /// The role of `addr`: trunk before agent before outsider. Does not
    /// allocate.
    pub fn classify(&self, addr: IpAddr) -> Role {
        let canonical = addr.to_canonical();
        if self.trunks.allows(canonical) || self.trunk_targets.contains(&canonical) {
            Role::Trunk
        } else if self.agents.allows(canonical) {
            Role::Agent
        } else {
            Role::Outsider
        }
    }
}

/// Per-source token buckets: at most `rate` messages per second from one
/// address, in bursts of up to `burst`. Time is an argument.
///
/// The table is bounded: when `max_sources` addresses are tracked, buckets
/// that have refilled completely (idle sources) are swept; if none can be
/// swept the newcomer shares one overflow bucket with every other untracked
/// source, so a spray of spoofed addresses cannot grow memory or escape the
/// limit altogether.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: u32,
    burst: u32,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in thousandths of a message.
    milli_tokens: u64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            milli_tokens: u64::from(burst) * 1000,
            at: now,
        }
    }

    /// Refills for the time since the last look and takes one token.
    fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let refill = elapsed.as_micros().saturating_mul(u128::from(rate)) / 1000;
        let cap = u64::from(burst) * 1000;
        self.milli_tokens = u64::try_from(u128::from(self.milli_tokens) + refill)
            .unwrap_or(u64::MAX)
            .min(cap);
        self.at = now;
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now` (the source is idle).
    fn is_full(&self, rate: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let refill = elapsed.as_micros().saturating_mul(u128::from(rate)) / 1000;
        u128::from(self.milli_tokens) + refill >= u128::from(burst) * 1000
    }
}

impl RateLimiter {
    /// `rate` messages per second per source, bursts up to `burst` (at
    /// least 1), at most `max_sources` addresses tracked.
    pub fn new(rate: u32, burst: u32, max_sources: usize, now: Instant) -> RateLimiter {
        let burst = burst.max(1);
        RateLimiter {
            rate,
            burst,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            overflow: Bucket::full(burst, now),
        }
    }

    /// Whether one more message from `addr` at `now` is within its limit.
    pub fn allow(&mut self, addr: IpAddr, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        let addr = addr.to_canonical();
        if let Some(bucket) = self.buckets.get_mut(&addr) {
            return bucket.take(rate, burst, now);
        }
        if self.buckets.len() >= self.max_sources {
            self.buckets.retain(|_, b| !b.is_full(rate, burst, now));
        }
        if self.buckets.len() >= self.max_sources {
            return self.overflow.take(rate, burst, now);
        }
        let mut bucket = Bucket::full(burst, now);
        let allowed = bucket.take(rate, burst, now);
        self.buckets.insert(addr, bucket);
        allowed
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn acl(entries: &[&str]) -> Acl {
        Acl::parse(entries).expect("test ACL")
    }

    #[test]
    fn host_route_allows_only_that_host() {
        let a = acl(&["127.0.0.1/32"]);
        assert!(a.allows(ip("127.0.0.1")));
        assert!(!a.allows(ip("127.0.0.2")), "outsider on loopback");
        assert!(!a.allows(ip("127.0.0.0")));
        assert!(!a.allows(ip("::1")));
    }

    #[test]
    fn bare_address_is_a_host_route() {
        let a = acl(&["192.0.2.7", "2001:db8::7"]);
        assert!(a.allows(ip("192.0.2.7")));
        assert!(!a.allows(ip("192.0.2.8")));
        assert!(a.allows(ip("2001:db8::7")));
        assert!(!a.allows(ip("2001:db8::8")));
        assert_eq!(parse_cidr("192.0.2.7").map(|n| n.prefix_len()), Ok(32));
        assert_eq!(parse_cidr("2001:db8::7").map(|n| n.prefix_len()), Ok(128));
    }

    #[test]
    fn slash_24_covers_its_block_only() {
        let a = acl(&["198.51.100.0/24"]);
        assert!(a.allows(ip("198.51.100.0")));
        assert!(a.allows(ip("198.51.100.255")));
        assert!(!a.allows(ip("198.51.101.0")));
        assert!(!a.allows(ip("198.51.99.255")));
    }

    #[test]
    fn host_bits_in_entry_are_ignored() {
        let a = acl(&["10.1.2.3/8"]);
        assert!(a.allows(ip("10.200.0.1")));
        assert!(!a.allows(ip("11.0.0.1")));
    }

    #[test]
    fn slash_0_allows_every_ipv4_but_no_ipv6() {
        let a = acl(&["0.0.0.0/0"]);
        assert!(a.allows(ip("0.0.0.0")));
        assert!(a.allows(ip("255.255.255.255")));
        assert!(a.allows(ip("::ffff:203.0.113.9")), "mapped is IPv4");
        assert!(!a.allows(ip("2001:db8::1")));
    }

    #[test]
    fn ipv6_prefix_matches() {
        let a = acl(&["2001:db8:1::/48", "::1/128"]);
        assert!(a.allows(ip("2001:db8:1:ffff::1")));
        assert!(!a.allows(ip("2001:db8:2::1")));
        assert!(a.allows(ip("::1")));
        assert!(!a.allows(ip("127.0.0.1")), "::1 is not 127.0.0.1");
        let all6 = acl(&["::/0"]);
        assert!(all6.allows(ip("fe80::1")));
        assert!(!all6.allows(ip("192.0.2.1")));
        assert!(
            !all6.allows(ip("::ffff:192.0.2.1")),
            "mapped sources are IPv4"
        );
    }

    #[test]
    fn mapped_source_matches_ipv4_entry() {
        let a = acl(&["127.0.0.1/32", "10.0.0.0/8"]);
        assert!(a.allows(ip("::ffff:127.0.0.1")));
        assert!(a.allows(ip("::ffff:10.9.8.7")));
        assert!(!a.allows(ip("::ffff:127.0.0.2")));
        assert!(!a.allows(ip("::ffff:11.0.0.1")));
    }

    #[test]
    fn mapped_entry_matches_plain_ipv4_source() {
        let a = acl(&["::ffff:10.0.0.0/104"]);
        assert!(a.allows(ip("10.1.2.3")));
        assert!(a.allows(ip("::ffff:10.1.2.3")));
        assert!(!a.allows(ip("11.1.2.3")));
        assert_eq!(a, acl(&["10.0.0.0/8"]));
    }

    #[test]
    fn empty_list_allows_nobody() {
        let a = Acl::new(&[]);
        assert!(a.is_empty());
        assert!(!a.allows(ip("127.0.0.1")));
        assert!(!a.allows(ip("::1")));
        assert_eq!(a.to_string(), "(nobody)");
    }

    #[test]
    fn display_lists_normalised_networks() {
        let a = acl(&["10.1.2.3/8", "2001:db8::/32", "127.0.0.1"]);
        assert_eq!(a.to_string(), "10.0.0.0/8, 127.0.0.1/32, 2001:db8::/32");
    }

    #[test]
    fn rejects_bad_address() {
        let e = parse_cidr("10.0.0.300/8").expect_err("octet 300");
        assert!(matches!(e.reason, CidrReason::Address(_)));
        assert!(
            e.to_string().starts_with("invalid CIDR \"10.0.0.300/8\": "),
            "{e}"
        );
    }

    #[test]
    fn rejects_prefix_too_long() {
        let e = parse_cidr("10.0.0.0/33").expect_err("/33");
        assert_eq!(e.reason, CidrReason::PrefixTooLong { len: 33, max: 32 });
        let e = parse_cidr("::/129").expect_err("/129");
        assert_eq!(e.reason, CidrReason::PrefixTooLong { len: 129, max: 128 });
        let e = parse_cidr("10.0.0.0/999").expect_err("/999");
        assert_eq!(e.reason, CidrReason::PrefixTooLong { len: 999, max: 32 });
    }

    #[test]
    fn rejects_non_numeric_prefix() {
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0/x",
            "10.0.0.0/1234",
        ] {
            let e = parse_cidr(bad).expect_err(bad);
            assert_eq!(e.reason, CidrReason::PrefixNotANumber, "{bad}");
        }
    }

    #[test]
    fn rejects_zone_id_and_spaces() {
        assert!(parse_cidr("fe80::1%eth0").is_err());
        assert!(parse_cidr(" 10.0.0.1").is_err());
        assert!(parse_cidr("").is_err());
    }

    #[test]
    fn parse_reports_entry_index() {
        let e = Acl::parse(&["127.0.0.1", "nope"]).expect_err("second entry");
        assert_eq!(e.index, 1);
        assert_eq!(e.source.text, "nope");
    }

    #[test]
    fn action_deserializes_lowercase() {
        #[derive(Deserialize)]
        struct T {
            a: AclAction,
        }
        let t: T = toml::from_str("a = \"drop\"").expect("drop");
        assert_eq!(t.a, AclAction::Drop);
        let t: T = toml::from_str("a = \"reject\"").expect("reject");
        assert_eq!(t.a, AclAction::Reject);
        assert!(toml::from_str::<T>("a = \"Deny\"").is_err());
        assert_eq!(AclAction::default(), AclAction::Reject);
    }

    #[test]
    fn classify_by_role_with_trunk_first() {
        let mut s = Sources::new(acl(&["10.0.0.1"]), acl(&["0.0.0.0/0"]));
        assert_eq!(s.classify(ip("10.0.0.1")), Role::Trunk);
        assert_eq!(s.classify(ip("::ffff:10.0.0.1")), Role::Trunk);
        assert_eq!(s.classify(ip("192.0.2.9")), Role::Agent);
        assert_eq!(s.classify(ip("2001:db8::1")), Role::Outsider);
        assert!(s.set_trunk_targets([ip("::ffff:192.0.2.9")]));
        assert_eq!(s.classify(ip("192.0.2.9")), Role::Trunk, "resolved target");
        assert!(!s.set_trunk_targets([ip("192.0.2.9")]), "same set");
        assert!(s.set_trunk_targets([]));
        assert_eq!(s.classify(ip("192.0.2.9")), Role::Agent, "target gone");
        assert!(Role::Trunk.may_call() && !Role::Agent.may_call());
        assert!(!Role::Outsider.is_allowed() && Role::Agent.is_allowed());
    }

    #[test]
    fn rate_limiter_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10, 5, 16, t0);
        let a = ip("127.0.0.3");
        let passed = (0..20).filter(|_| l.allow(a, t0)).count();
        assert_eq!(passed, 5, "the burst");
        let t1 = t0 + std::time::Duration::from_millis(100);
        assert!(l.allow(a, t1), "one token after 100 ms at 10/s");
        assert!(!l.allow(a, t1));
        assert!(l.allow(ip("127.0.0.4"), t1), "another source has its own");
    }

    #[test]
    fn rate_limiter_table_is_bounded_and_sweeps_idle_sources() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1, 1, 4, t0);
        for i in 0..100u8 {
            l.allow(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), t0);
        }
        assert_eq!(l.tracked(), 4, "bounded");
        // Untracked sources share the overflow bucket: not unlimited.
        assert!(!l.allow(ip("10.0.1.1"), t0));
        let later = t0 + std::time::Duration::from_secs(2);
        assert!(l.allow(ip("10.0.1.1"), later), "idle ones swept");
        assert!(l.tracked() <= 4);
    }
}
