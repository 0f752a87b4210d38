//! Finds where requests go, RFC 3263 §4: the trunk's termination, giving an
//! ordered [`TargetList`] of customer INVITE targets, and the next hop of a
//! request whose URI names a host ([`resolve_next_hop`]: one address, on a
//! transport already chosen).
//!
//! ```text
//!   IP literal ───────────────────────▶ ip:port (5060 if none), no DNS
//!   name:port  ──▶ A/AAAA(name) ──────▶ addr:port
//!   name       ──▶ SRV _sip._udp.name / _sip._tcp.name (per transport)
//!                   ├─ records ──▶ priority, then RFC 2782 weighted order
//!                   │              ──▶ A/AAAA of each SRV target ──▶ addr:srv-port
//!                   ├─ only "." ─▶ error: service not available (RFC 2782)
//!                   └─ none ─────▶ A/AAAA(name) ──▶ addr:5060 (RFC 3263 §4.2)
//! ```
//!
//! Choices, each where RFC 3263 leaves room:
//!
//! - NAPTR (§4.1) is skipped: carriers publish SRV for SIP trunks, and
//!   without TLS or SCTP the NAPTR step could only choose between UDP and
//!   TCP, which the trunk's `transport` setting already does.
//! - With no transport set, SRV is asked for both UDP and TCP; the UDP
//!   targets come first, then the TCP ones (§4.1 lets the client prefer).
//! - A SRV query that fails (timeout, SERVFAIL) is treated like one that
//!   found nothing, and the host's own A/AAAA records are used: this is how
//!   a name known only to `/etc/hosts` still works.
//! - `localhost` and `*.localhost` are never asked for SRV (RFC 6761 §6.3:
//!   such names do not go to DNS); their addresses come from the hosts file.
//! - An SRV target that has no address is skipped; the rest are kept.
//!
//! DNS goes through the [`Lookup`] trait: [`HickoryLookup`] in production
//! (the system's resolv.conf and hosts file), a fake in tests, which
//! therefore never reach a name server. The weighted-random SRV order takes
//! its random numbers from the caller, so tests are deterministic.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use thiserror::Error;
use tracing::{debug, warn};

use crate::callback::trunk::{
    Target, TargetList, TerminationHost, TrunkSettings, TrunkTransport, order_weighted,
};

/// The DNS questions RFC 3263 needs, so resolution can be tested without a
/// name server.
pub trait Lookup: Send + Sync {
    /// The SRV records of `name` (e.g. `_sip._udp.carrier.example.net`), as
    /// served (unordered).
    fn srv(&self, name: &str) -> impl Future<Output = Result<Vec<SrvRecord>, LookupError>> + Send;

    /// The IPv4 and IPv6 addresses of `name`, hosts file first.
    fn ip(&self, name: &str) -> impl Future<Output = Result<Vec<IpAddr>, LookupError>> + Send;
}

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative weight within a priority.
    pub weight: u16,
    /// The port on the target.
    pub port: u16,
    /// The target host; `"."` (or empty) means "no service here".
    pub target: Box<str>,
}

/// Why a DNS question got no answer. All are faults of the DNS, not ours.
#[derive(Debug, Error)]
pub enum LookupError {
    /// The name does not exist (NXDOMAIN).
    #[error("no such domain")]
    NxDomain,
    /// The name exists but has no record of the type asked (NODATA).
    #[error("no records of that type")]
    NoRecords,
    /// No name server answered in time.
    #[error("timed out")]
    Timeout,
    /// The query failed otherwise: SERVFAIL, REFUSED, no name server
    /// reachable, a malformed answer.
    #[error("query failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why the termination could not be resolved.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// Neither SRV nor A/AAAA records give an address for the host (DNS or
    /// configuration fault: the name is wrong or unpublished).
    #[error("{host}: no SRV, A or AAAA record gives an address")]
    NotFound {
        /// The termination host, or the SRV target that failed last.
        host: Box<str>,
    },
    /// The host's SRV records say SIP is decidedly not offered there
    /// (target `"."`, RFC 2782).
    #[error("{host}: SRV says SIP is not available at this domain")]
    ServiceNotAvailable {
        /// The termination host.
        host: Box<str>,
    },
    /// An address query failed (DNS fault, possibly transient).
    #[error("{host}: {source}")]
    Lookup {
        /// The name that was asked for.
        host: Box<str>,
        /// What went wrong.
        source: LookupError,
    },
    /// The system resolver configuration (resolv.conf) could not be read
    /// (local fault).
    #[error("cannot set up the DNS resolver: {0}")]
    SystemConfig(#[source] NetError),
}

/// Resolves the trunk's termination per RFC 3263 §4 into the targets to
/// try, in order (see the module documentation). `rng` orders SRV records
/// of equal priority by weight (RFC 2782).
pub async fn resolve_termination<L: Lookup>(
    lookup: &L,
    trunk: &TrunkSettings,
    rng: &mut fastrand::Rng,
) -> Result<TargetList, ResolveError> {
    let termination = &trunk.termination;
    let targets = match &termination.host {
        TerminationHost::Ip(ip) => {
            // RFC 3263 §4.2: a numeric IP is used as is, port 5060 if none;
            // §4.1: with no transport in the URI, UDP for a sip: URI.
            let port = termination.port.unwrap_or(SIP_PORT);
            vec![Target {
                addr: SocketAddr::new(*ip, port),
                transport: trunk.transport.unwrap_or(TrunkTransport::Udp),
                priority: 0,
                weight: 0,
                name: ip.to_string().into(),
            }]
        }
        TerminationHost::Name(name) => {
            resolve_name(lookup, name, termination.port, trunk.transport, rng).await?
        }
    };
    Ok(TargetList::new(targets, trunk.max_targets))
}

/// Resolves the next hop of a request whose URI names a host (a Contact,
/// a Route, a static agent's URI): RFC 3263 §4 as for the termination, on
/// the transport already chosen (`;transport=` or the flow's), SRV first
/// when the URI has no port. Gives the first target: one transaction, one
/// address (the engine asks once per transaction).
pub async fn resolve_next_hop<L: Lookup>(
    lookup: &L,
    host: &str,
    port: Option<u16>,
    transport: TrunkTransport,
    rng: &mut fastrand::Rng,
) -> Result<SocketAddr, ResolveError> {
    let targets = resolve_name(lookup, host, port, Some(transport), rng).await?;
    targets
        .first()
        .map(|t| t.addr)
        .ok_or_else(|| ResolveError::NotFound { host: host.into() })
}

/// RFC 3263 §4.1–4.2 for a host name: with a port, its A/AAAA; without,
/// SRV for `transport` (both when `None`, UDP first), falling back to the
/// name's A/AAAA on 5060. Ordered, deduplicated, never empty.
async fn resolve_name<L: Lookup>(
    lookup: &L,
    name: &str,
    port: Option<u16>,
    transport: Option<TrunkTransport>,
    rng: &mut fastrand::Rng,
) -> Result<Vec<Target>, ResolveError> {
    // RFC 3263 §4.1: with no transport in the URI, a numeric IP or an
    // explicit port means UDP for a sip: URI.
    let default_transport = transport.unwrap_or(TrunkTransport::Udp);
    let mut targets = Targets::default();
    if let Some(port) = port {
        // RFC 3263 §4.2: a port but no numeric IP: A/AAAA only.
        let addrs = addresses(lookup, name).await?;
        targets.extend(&addrs, port, default_transport, name, (0, 0));
        return Ok(targets.list);
    }

    let transports: &[TrunkTransport] = match transport {
        Some(TrunkTransport::Udp) => &[TrunkTransport::Udp],
        Some(TrunkTransport::Tcp) => &[TrunkTransport::Tcp],
        None => &[TrunkTransport::Udp, TrunkTransport::Tcp],
    };
    let mut found_srv = false;
    let mut first_error = None;
    if !is_localhost(name) {
        for &transport in transports {
            // RFC 3263 §4.1: "_sip._udp.<domain>" / "_sip._tcp.<domain>".
            let query = format!("_sip.{}.{name}", transport.srv_label());
            let records = match lookup.srv(&query).await {
                Ok(records) => records,
                Err(LookupError::NxDomain | LookupError::NoRecords) => continue,
                Err(e) => {
                    warn!(%query, error = %e, "SRV query failed; falling back to A/AAAA");
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            found_srv = true;
            for srv in order_srv(records, rng) {
                let target = srv.target.trim_end_matches('.');
                if target.is_empty() {
                    // RFC 2782: target "." = decidedly not available.
                    continue;
                }
                match addresses(lookup, target).await {
                    Ok(addrs) => targets.extend(
                        &addrs,
                        srv.port,
                        transport,
                        target,
                        (srv.priority, srv.weight),
                    ),
                    Err(e) => {
                        warn!(%query, %target, error = %e, "SRV target has no address; skipped");
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
    }
    if !found_srv {
        // RFC 3263 §4.2: no SRV records: the host's A/AAAA, port 5060.
        let addrs = addresses(lookup, name).await?;
        targets.extend(&addrs, SIP_PORT, default_transport, name, (0, 0));
    }
    if targets.list.is_empty() {
        return Err(match first_error {
            Some(e) => e,
            None => ResolveError::ServiceNotAvailable { host: name.into() },
        });
    }
    debug!(host = %name, targets = targets.list.len(), "host resolved");
    Ok(targets.list)
}

/// Orders SRV records as RFC 2782 asks: by priority, lowest first; within a
/// priority by weighted random selection, drawing from `rng` (see
/// [`order_weighted`]).
pub fn order_srv(records: Vec<SrvRecord>, rng: &mut fastrand::Rng) -> Vec<SrvRecord> {
    order_weighted(records, |r| (r.priority, r.weight), rng)
}

/// [`Lookup`] through the hickory resolver.
#[derive(Debug, Clone)]
pub struct HickoryLookup {
    resolver: TokioResolver,
}

impl HickoryLookup {
    /// A resolver with the system's configuration (`/etc/resolv.conf`),
    /// answering from `/etc/hosts` before asking DNS. Must be called inside
    /// a tokio runtime.
    pub fn from_system() -> Result<HickoryLookup, ResolveError> {
        let mut builder = TokioResolver::builder_tokio().map_err(ResolveError::SystemConfig)?;
        builder.options_mut().use_hosts_file = ResolveHosts::Always;
        let resolver = builder.build().map_err(ResolveError::SystemConfig)?;
        Ok(HickoryLookup { resolver })
    }

    /// A resolver asking `servers` (UDP, then TCP for truncated answers)
    /// instead of the system's name servers, still answering from
    /// `/etc/hosts` first. Must be called inside a tokio runtime.
    pub fn with_servers(servers: &[SocketAddr]) -> Result<HickoryLookup, ResolveError> {
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for server in servers {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            config.add_name_server(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
        }
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        builder.options_mut().use_hosts_file = ResolveHosts::Always;
        let resolver = builder.build().map_err(ResolveError::SystemConfig)?;
        Ok(HickoryLookup { resolver })
    }

    /// Wraps a resolver configured by the caller.
    pub fn from_resolver(resolver: TokioResolver) -> HickoryLookup {
        HickoryLookup { resolver }
    }
}

impl Lookup for HickoryLookup {
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, LookupError> {
        let lookup = self.resolver.srv_lookup(name).await.map_err(lookup_error)?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii().into(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn ip(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        let lookup = self.resolver.lookup_ip(name).await.map_err(lookup_error)?;
        Ok(lookup.iter().collect())
    }
}

/// RFC 3261 §19.1.2: the default port of a sip: URI.
const SIP_PORT: u16 = 5060;

/// Most targets one resolution yields (several SRV targets, each with
/// several addresses, are bounded here).
const MAX_RESOLVED_TARGETS: usize = 32;

/// The targets collected so far, each (address, transport) once.
#[derive(Default)]
struct Targets {
    list: Vec<Target>,
    seen: HashSet<(SocketAddr, TrunkTransport)>,
}

impl Targets {
    fn extend(
        &mut self,
        addrs: &[IpAddr],
        port: u16,
        transport: TrunkTransport,
        name: &str,
        (priority, weight): (u16, u16),
    ) {
        for &ip in addrs {
            let addr = SocketAddr::new(ip, port);
            if self.list.len() >= MAX_RESOLVED_TARGETS || !self.seen.insert((addr, transport)) {
                continue;
            }
            self.list.push(Target {
                addr,
                transport,
                priority,
                weight,
                name: name.into(),
            });
        }
    }
}

/// The addresses of `name`; none at all is an error naming it.
async fn addresses<L: Lookup>(lookup: &L, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    match lookup.ip(name).await {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs),
        Ok(_) | Err(LookupError::NxDomain | LookupError::NoRecords) => {
            Err(ResolveError::NotFound { host: name.into() })
        }
        Err(source) => Err(ResolveError::Lookup {
            host: name.into(),
            source,
        }),
    }
}

/// RFC 6761 §6.3: `localhost` and names under it.
fn is_localhost(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name
            .len()
            .checked_sub(".localhost".len())
            .and_then(|i| name.get(i..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
}

fn lookup_error(error: NetError) -> LookupError {
    if error.is_nx_domain() {
        LookupError::NxDomain
    } else if error.is_no_records_found() {
        LookupError::NoRecords
    } else if matches!(error, NetError::Timeout) {
        LookupError::Timeout
    } else {
        LookupError::Failed(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::callback::trunk::{NumberFormat, Termination};

    /// A DNS that knows what the test tells it and records every question.
    #[derive(Default)]
    struct FakeDns {
        srv: HashMap<&'static str, Vec<SrvRecord>>,
        ip: HashMap<&'static str, Vec<IpAddr>>,
        /// Names whose queries time out.
        timeouts: Vec<&'static str>,
        asked: Mutex<Vec<String>>,
    }

    impl FakeDns {
        fn with_srv(mut self, name: &'static str, records: &[(u16, u16, u16, &str)]) -> Self {
            let records = records
                .iter()
                .map(|&(priority, weight, port, target)| SrvRecord {
                    priority,
                    weight,
                    port,
                    target: target.into(),
                })
                .collect();
            self.srv.insert(name, records);
            self
        }

        fn with_ip(mut self, name: &'static str, addrs: &[&str]) -> Self {
            let addrs = addrs.iter().map(|a| a.parse().expect("ip")).collect();
            self.ip.insert(name, addrs);
            self
        }

        fn asked(&self) -> Vec<String> {
            self.asked.lock().expect("lock").clone()
        }

        fn answer<T: Clone>(
            &self,
            kind: &str,
            name: &str,
            table: &HashMap<&'static str, Vec<T>>,
        ) -> Result<Vec<T>, LookupError> {
            self.asked
                .lock()
                .expect("lock")
                .push(format!("{kind} {name}"));
            if self.timeouts.contains(&name) {
                return Err(LookupError::Timeout);
            }
            table.get(name).cloned().ok_or(LookupError::NxDomain)
        }
    }

    impl Lookup for FakeDns {
        async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, LookupError> {
            self.answer("SRV", name, &self.srv)
        }

        async fn ip(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
            self.answer("A", name, &self.ip)
        }
    }

    fn trunk(termination: &str, transport: Option<TrunkTransport>) -> TrunkSettings {
        TrunkSettings {
            termination: Termination::parse(termination).expect("termination"),
            transport,
            number_format: NumberFormat::E164,
            user_phone: true,
            p_asserted_identity: true,
            cps_limit: 10.0,
            credentials: None,
            max_targets: 4,
            holddown: Duration::from_secs(30),
        }
    }

    /// `addr/transport` of every target, in order.
    fn summary(list: &TargetList) -> Vec<String> {
        list.targets()
            .iter()
            .map(|t| {
                let transport = match t.transport {
                    TrunkTransport::Udp => "udp",
                    TrunkTransport::Tcp => "tcp",
                };
                format!("{}/{transport}", t.addr)
            })
            .collect()
    }

    async fn resolve(dns: &FakeDns, trunk: &TrunkSettings) -> Result<TargetList, ResolveError> {
        resolve_termination(dns, trunk, &mut fastrand::Rng::with_seed(1)).await
    }

    #[tokio::test]
    async fn ip_literal_needs_no_dns() {
        let dns = FakeDns::default();
        let list = resolve(&dns, &trunk("127.0.0.1:5070", Some(TrunkTransport::Udp)))
            .await
            .expect("resolved");
        assert_eq!(summary(&list), ["127.0.0.1:5070/udp"]);
        let list = resolve(&dns, &trunk("sip:[2001:db8::1]", None))
            .await
            .expect("resolved");
        assert_eq!(summary(&list), ["[2001:db8::1]:5060/udp"], "5060, UDP");
        let list = resolve(&dns, &trunk("192.0.2.1", Some(TrunkTransport::Tcp)))
            .await
            .expect("resolved");
        assert_eq!(summary(&list), ["192.0.2.1:5060/tcp"]);
        assert!(dns.asked().is_empty(), "{:?}", dns.asked());
    }

    #[tokio::test]
    async fn name_with_port_skips_srv() {
        let dns = FakeDns::default()
            .with_srv(
                "_sip._udp.carrier.example.net",
                &[(0, 0, 5099, "x.example.net")],
            )
            .with_ip("carrier.example.net", &["192.0.2.10", "2001:db8::10"]);
        let list = resolve(&dns, &trunk("carrier.example.net:5070", None))
            .await
            .expect("resolved");
        assert_eq!(
            summary(&list),
            ["192.0.2.10:5070/udp", "[2001:db8::10]:5070/udp"]
        );
        assert_eq!(dns.asked(), ["A carrier.example.net"]);
    }

    #[tokio::test]
    async fn next_hop_without_port_asks_srv_of_its_transport_only() {
        let dns = FakeDns::default()
            .with_srv(
                "_sip._udp.pbx.example.com",
                &[
                    (20, 0, 5092, "b.example.com"),
                    (10, 0, 5091, "a.example.com"),
                ],
            )
            .with_srv(
                "_sip._tcp.pbx.example.com",
                &[(0, 0, 5093, "t.example.com")],
            )
            .with_ip("a.example.com", &["192.0.2.1"])
            .with_ip("b.example.com", &["192.0.2.2"])
            .with_ip("t.example.com", &["192.0.2.3"]);
        let mut rng = fastrand::Rng::with_seed(1);
        let udp = resolve_next_hop(&dns, "pbx.example.com", None, TrunkTransport::Udp, &mut rng)
            .await
            .expect("resolved");
        assert_eq!(
            udp,
            "192.0.2.1:5091".parse().expect("addr"),
            "lowest priority"
        );
        let tcp = resolve_next_hop(&dns, "pbx.example.com", None, TrunkTransport::Tcp, &mut rng)
            .await
            .expect("resolved");
        assert_eq!(tcp, "192.0.2.3:5093".parse().expect("addr"));
        assert_eq!(
            dns.asked(),
            [
                "SRV _sip._udp.pbx.example.com",
                "A a.example.com",
                "A b.example.com",
                "SRV _sip._tcp.pbx.example.com",
                "A t.example.com"
            ]
        );
    }

    #[tokio::test]
    async fn next_hop_with_port_or_without_srv_takes_the_address() {
        let dns = FakeDns::default().with_ip("phone.example.com", &["192.0.2.7"]);
        let mut rng = fastrand::Rng::with_seed(1);
        let given = resolve_next_hop(
            &dns,
            "phone.example.com",
            Some(5070),
            TrunkTransport::Udp,
            &mut rng,
        )
        .await
        .expect("resolved");
        assert_eq!(given, "192.0.2.7:5070".parse().expect("addr"));
        assert_eq!(dns.asked(), ["A phone.example.com"], "a port skips SRV");
        let fallback = resolve_next_hop(
            &dns,
            "phone.example.com",
            None,
            TrunkTransport::Tcp,
            &mut rng,
        )
        .await
        .expect("resolved");
        assert_eq!(
            fallback,
            "192.0.2.7:5060".parse().expect("addr"),
            "no SRV: 5060"
        );
        let e = resolve_next_hop(
            &dns,
            "gone.example.com",
            None,
            TrunkTransport::Udp,
            &mut rng,
        )
        .await
        .expect_err("no such name");
        assert!(e.to_string().contains("gone.example.com"), "{e}");
    }

    #[tokio::test]
    async fn srv_orders_by_priority_then_weight() {
        let dns = FakeDns::default()
            .with_srv(
                "_sip._udp.carrier.example.net",
                &[
                    (20, 0, 5060, "backup.carrier.example.net."),
                    (10, 1, 5062, "b.carrier.example.net."),
                    (10, 3, 5061, "a.carrier.example.net."),
                ],
            )
            .with_ip("a.carrier.example.net", &["192.0.2.1"])
            .with_ip("b.carrier.example.net", &["192.0.2.2"])
            .with_ip("backup.carrier.example.net", &["192.0.2.3"]);
        let t = trunk("sip:carrier.example.net", Some(TrunkTransport::Udp));
        let mut a_first = 0;
        for seed in 0..400 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let list = resolve_termination(&dns, &t, &mut rng)
                .await
                .expect("resolved");
            let order = summary(&list);
            // The priority-20 target is always last; the two priority-10
            // ones in either order.
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "192.0.2.3:5060/udp");
            if order[0] == "192.0.2.1:5061/udp" {
                a_first += 1;
            } else {
                assert_eq!(order[..2], ["192.0.2.2:5062/udp", "192.0.2.1:5061/udp"]);
            }
            let first = &list.targets()[0];
            let expected = if order[0] == "192.0.2.1:5061/udp" {
                "a.carrier.example.net"
            } else {
                "b.carrier.example.net"
            };
            assert_eq!((first.priority, &*first.name), (10, expected));
        }
        // Weight 3 against 1: about three in four draws put `a` first.
        assert!((260..=340).contains(&a_first), "a first {a_first} of 400");
        // The same seed gives the same order.
        let once = resolve_termination(&dns, &t, &mut fastrand::Rng::with_seed(9)).await;
        let again = resolve_termination(&dns, &t, &mut fastrand::Rng::with_seed(9)).await;
        assert_eq!(
            summary(&once.expect("resolved")),
            summary(&again.expect("resolved"))
        );
        assert!(!dns.asked().iter().any(|q| q.contains("_tcp")), "UDP only");
    }

    #[test]
    fn order_srv_puts_zero_weights_after_weighted_ones() {
        let rec = |priority, weight, target: &str| SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        };
        for seed in 0..200 {
            let ordered = order_srv(
                vec![
                    rec(1, 0, "zero"),
                    rec(1, 100, "heavy"),
                    rec(1, 1, "light"),
                    rec(0, 0, "top"),
                ],
                &mut fastrand::Rng::with_seed(seed),
            );
            let names: Vec<&str> = ordered.iter().map(|r| &*r.target).collect();
            assert_eq!(names[0], "top");
            assert_eq!(names[3], "zero", "seed {seed}: {names:?}");
        }
        assert!(order_srv(Vec::new(), &mut fastrand::Rng::with_seed(1)).is_empty());
    }

    #[tokio::test]
    async fn without_transport_srv_for_udp_then_tcp() {
        let dns = FakeDns::default()
            .with_srv(
                "_sip._udp.carrier.example.net",
                &[(10, 0, 5060, "u.carrier.example.net")],
            )
            .with_srv(
                "_sip._tcp.carrier.example.net",
                &[(5, 0, 5060, "t.carrier.example.net")],
            )
            .with_ip("u.carrier.example.net", &["192.0.2.1"])
            .with_ip("t.carrier.example.net", &["192.0.2.2"]);
        let list = resolve(&dns, &trunk("sip:carrier.example.net", None))
            .await
            .expect("resolved");
        assert_eq!(summary(&list), ["192.0.2.1:5060/udp", "192.0.2.2:5060/tcp"]);
    }

    #[tokio::test]
    async fn no_srv_falls_back_to_a_on_5060() {
        let dns = FakeDns::default().with_ip("carrier.example.net", &["192.0.2.7"]);
        let list = resolve(
            &dns,
            &trunk("sip:carrier.example.net", Some(TrunkTransport::Tcp)),
        )
        .await
        .expect("resolved");
        assert_eq!(summary(&list), ["192.0.2.7:5060/tcp"]);
        assert_eq!(
            dns.asked(),
            ["SRV _sip._tcp.carrier.example.net", "A carrier.example.net"]
        );
    }

    #[tokio::test]
    async fn failed_srv_query_falls_back_to_a() {
        let dns = FakeDns {
            timeouts: vec!["_sip._udp.carrier.example.net"],
            ..FakeDns::default()
        }
        .with_ip("carrier.example.net", &["192.0.2.7"]);
        let list = resolve(
            &dns,
            &trunk("sip:carrier.example.net", Some(TrunkTransport::Udp)),
        )
        .await
        .expect("resolved");
        assert_eq!(summary(&list), ["192.0.2.7:5060/udp"]);
    }

    #[tokio::test]
    async fn rejects_nxdomain_naming_the_host() {
        let dns = FakeDns::default();
        let e = resolve(&dns, &trunk("sip:nowhere.example.net", None))
            .await
            .expect_err("nothing to resolve");
        assert!(matches!(&e, ResolveError::NotFound { host } if &**host == "nowhere.example.net"));
        assert_eq!(
            e.to_string(),
            "nowhere.example.net: no SRV, A or AAAA record gives an address"
        );
        let e = resolve(&dns, &trunk("nowhere.example.net:5070", None))
            .await
            .expect_err("nothing to resolve");
        assert!(e.to_string().starts_with("nowhere.example.net: "), "{e}");
    }

    #[tokio::test]
    async fn rejects_address_lookup_timeout_naming_the_host() {
        let dns = FakeDns {
            timeouts: vec!["carrier.example.net"],
            ..FakeDns::default()
        };
        let e = resolve(&dns, &trunk("carrier.example.net:5070", None))
            .await
            .expect_err("timed out");
        assert!(matches!(
            &e,
            ResolveError::Lookup { host, source: LookupError::Timeout } if &**host == "carrier.example.net"
        ));
        assert_eq!(e.to_string(), "carrier.example.net: timed out");
    }

    #[tokio::test]
    async fn rejects_srv_saying_service_not_available() {
        let dns = FakeDns::default()
            .with_srv("_sip._udp.carrier.example.net", &[(0, 0, 0, ".")])
            .with_ip("carrier.example.net", &["192.0.2.7"]);
        let e = resolve(
            &dns,
            &trunk("sip:carrier.example.net", Some(TrunkTransport::Udp)),
        )
        .await
        .expect_err("no service");
        assert!(matches!(e, ResolveError::ServiceNotAvailable { .. }), "{e}");
        assert!(
            !dns.asked().contains(&"A carrier.example.net".to_owned()),
            "no A fallback"
        );
    }

    #[tokio::test]
    async fn srv_target_without_address_is_skipped() {
        let dns = FakeDns::default()
            .with_srv(
                "_sip._udp.carrier.example.net",
                &[
                    (10, 0, 5060, "gone.carrier.example.net"),
                    (20, 0, 5060, "ok.carrier.example.net"),
                ],
            )
            .with_ip("ok.carrier.example.net", &["192.0.2.9"]);
        let list = resolve(
            &dns,
            &trunk("sip:carrier.example.net", Some(TrunkTransport::Udp)),
        )
        .await
        .expect("resolved");
        assert_eq!(summary(&list), ["192.0.2.9:5060/udp"]);
        // With every SRV target gone, the error names the target.
        let dns = FakeDns::default().with_srv(
            "_sip._udp.carrier.example.net",
            &[(10, 0, 5060, "gone.carrier.example.net")],
        );
        let e = resolve(
            &dns,
            &trunk("sip:carrier.example.net", Some(TrunkTransport::Udp)),
        )
        .await
        .expect_err("no address");
        assert!(
            matches!(&e, ResolveError::NotFound { host } if &**host == "gone.carrier.example.net")
        );
    }

    #[tokio::test]
    async fn localhost_is_not_asked_for_srv() {
        let dns = FakeDns::default().with_ip("localhost", &["127.0.0.1"]);
        let list = resolve(&dns, &trunk("sip:localhost", None))
            .await
            .expect("resolved");
        assert_eq!(summary(&list), ["127.0.0.1:5060/udp"]);
        assert_eq!(dns.asked(), ["A localhost"]);
        assert!(is_localhost("pbx.LOCALHOST") && !is_localhost("notlocalhost"));
    }

    #[tokio::test]
    async fn duplicate_addresses_are_kept_once() {
        let dns = FakeDns::default()
            .with_srv(
                "_sip._udp.carrier.example.net",
                &[
                    (10, 0, 5060, "a.carrier.example.net"),
                    (20, 0, 5060, "b.carrier.example.net"),
                ],
            )
            .with_ip("a.carrier.example.net", &["192.0.2.1"])
            .with_ip("b.carrier.example.net", &["192.0.2.1", "192.0.2.2"]);
        let list = resolve(
            &dns,
            &trunk("sip:carrier.example.net", Some(TrunkTransport::Udp)),
        )
        .await
        .expect("resolved");
        assert_eq!(summary(&list), ["192.0.2.1:5060/udp", "192.0.2.2:5060/udp"]);
    }

    /// The real hickory resolver, with no name server at all and a hosts
    /// table of its own: the SRV query fails at once (nothing to ask) and the
    /// hosts entry answers, so this proves the hosts path without touching
    /// the network.
    #[tokio::test]
    async fn hickory_answers_from_hosts_without_a_name_server() {
        use hickory_resolver::Hosts;
        use hickory_resolver::config::ResolverConfig;
        use hickory_resolver::net::runtime::TokioRuntimeProvider;

        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], vec![]),
            TokioRuntimeProvider::default(),
        );
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        let mut resolver = builder.build().expect("resolver");
        let mut hosts = Hosts::default();
        hosts
            .read_hosts_conf(&b"192.0.2.44 carrier.test\n"[..])
            .expect("hosts");
        resolver.set_hosts(std::sync::Arc::new(hosts));
        let dns = HickoryLookup::from_resolver(resolver);
        let resolved = tokio::time::timeout(
            Duration::from_secs(10),
            resolve_termination(
                &dns,
                &trunk("sip:carrier.test", Some(TrunkTransport::Udp)),
                &mut fastrand::Rng::with_seed(1),
            ),
        )
        .await
        .expect("no network wait");
        assert_eq!(
            summary(&resolved.expect("resolved")),
            ["192.0.2.44:5060/udp"]
        );
        let missing = tokio::time::timeout(Duration::from_secs(10), dns.ip("absent.test"))
            .await
            .expect("no network wait");
        assert!(missing.is_err());
    }
}
