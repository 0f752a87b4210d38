//! `[sip]`: the signalling listener, the advertised host and the RFC 3261 /
//! RFC 4028 parameters.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use super::{Fault, Invalid, fail, first_duplicate, in_range, is_header_text};

/// `[sip]`: the signalling listener and RFC 3261 / RFC 4028 parameters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Local address for SIP over both UDP and TCP.
    pub bind: SocketAddr,
    /// Host put in Via sent-by and Contact; `None` = the IP of `bind`.
    pub advertised_host: Option<Host>,
    /// Port put next to `advertised_host`; `None` = the port of `bind`.
    pub advertised_port: Option<u16>,
    /// Transports served on `bind`.
    pub transports: Vec<Transport>,
    /// Largest SIP message accepted, in bytes.
    pub max_message_size: usize,
    /// RFC 3261 T1 (RTT estimate), milliseconds.
    pub t1_ms: u64,
    /// RFC 3261 T2 (retransmit interval cap), milliseconds.
    pub t2_ms: u64,
    /// RFC 3261 T4 (maximum message lifetime in the network), milliseconds.
    pub t4_ms: u64,
    /// Value of the User-Agent and Server header fields.
    pub user_agent: String,
    /// RFC 4028 Session-Expires we request, seconds.
    pub session_expires_s: u32,
    /// RFC 4028 Min-SE we accept, seconds (≥ 90).
    pub min_se_s: u32,
    /// Max-Forwards in requests we originate.
    pub max_forwards: u8,
    /// Idle TCP connections are closed after this many seconds.
    pub tcp_idle_timeout_s: u64,
}

impl SipConfig {
    /// The host for Via sent-by and Contact: `advertised_host`, else the IP
    /// of `bind`.
    pub fn advertised_host(&self) -> Host {
        self.advertised_host
            .clone()
            .unwrap_or(Host::Ip(self.bind.ip()))
    }

    /// The port for Via sent-by and Contact: `advertised_port`, else the
    /// port of `bind`.
    pub fn advertised_port(&self) -> u16 {
        self.advertised_port.unwrap_or(self.bind.port())
    }

    /// Whether `transport` is enabled.
    pub fn serves(&self, transport: Transport) -> bool {
        self.transports.contains(&transport)
    }

    /// T1 as a duration.
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }

    /// T2 as a duration.
    pub fn t2(&self) -> Duration {
        Duration::from_millis(self.t2_ms)
    }

    /// T4 as a duration.
    pub fn t4(&self) -> Duration {
        Duration::from_millis(self.t4_ms)
    }

    /// The TCP idle timeout as a duration.
    pub fn tcp_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.tcp_idle_timeout_s)
    }

    /// The `[sip]` value rules, in file order.
    /// `sip.bind`'s port-0 rule is checked by the whole configuration, as
    /// [`Config::bind_ephemeral_sip_port`](super::Config::bind_ephemeral_sip_port) waives it.
    pub(super) fn check(&self) -> Result<(), Fault> {
        match &self.advertised_host {
            None if self.bind.ip().is_unspecified() => {
                return fail(
                    "sip.advertised_host",
                    Invalid::WildcardNeedsAdvertised {
                        bound_field: "sip.bind",
                        ip: self.bind.ip(),
                    },
                );
            }
            Some(Host::Ip(ip)) if ip.is_unspecified() => {
                return fail("sip.advertised_host", Invalid::Unspecified { ip: *ip });
            }
            None | Some(Host::Ip(_)) | Some(Host::Name(_)) => {}
        }
        if self.advertised_port == Some(0) {
            return fail("sip.advertised_port", Invalid::PortZero);
        }
        if self.transports.is_empty() {
            return fail("sip.transports", Invalid::Empty);
        }
        if let Some(dup) = first_duplicate(&self.transports) {
            return fail("sip.transports", Invalid::duplicate(dup.as_str()));
        }
        in_range(
            "sip.max_message_size",
            u64::try_from(self.max_message_size).unwrap_or(u64::MAX),
            1500..=1_048_576,
        )?;
        in_range("sip.t1_ms", self.t1_ms, 1..=60_000)?;
        in_range("sip.t2_ms", self.t2_ms, 1..=60_000)?;
        if self.t1_ms > self.t2_ms {
            // RFC 3261 §17.1.2.2: T2 caps the doubling interval that starts at T1.
            return fail(
                "sip.t1_ms",
                Invalid::exceeds(self.t1_ms, "sip.t2_ms", self.t2_ms),
            );
        }
        in_range("sip.t4_ms", self.t4_ms, 1..=60_000)?;
        if !is_header_text(&self.user_agent) {
            return fail("sip.user_agent", Invalid::NotHeaderText);
        }
        if self.min_se_s < MIN_SE_FLOOR_S {
            // RFC 4028 §5: the Min-SE value MUST NOT be less than 90 seconds.
            return fail(
                "sip.min_se_s",
                Invalid::BelowRfcMinimum {
                    value: self.min_se_s.into(),
                    min: MIN_SE_FLOOR_S.into(),
                    rule: "RFC 4028 §5",
                },
            );
        }
        if self.min_se_s > self.session_expires_s {
            return fail(
                "sip.min_se_s",
                Invalid::exceeds(
                    self.min_se_s,
                    "sip.session_expires_s",
                    self.session_expires_s,
                ),
            );
        }
        in_range("sip.max_forwards", self.max_forwards.into(), 1..=255)?;
        in_range(
            "sip.tcp_idle_timeout_s",
            self.tcp_idle_timeout_s,
            1..=86_400,
        )?;
        Ok(())
    }
}

impl Default for SipConfig {
    fn default() -> SipConfig {
        SipConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
            advertised_host: None,
            advertised_port: None,
            transports: vec![Transport::Udp, Transport::Tcp],
            max_message_size: 65_535,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            user_agent: "callbackd".to_owned(),
            session_expires_s: 1800,
            min_se_s: MIN_SE_FLOOR_S,
            max_forwards: 70,
            tcp_idle_timeout_s: 600,
        }
    }
}

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SIP over UDP (RFC 3261 §18).
    Udp,
    /// SIP over TCP (RFC 3261 §18).
    Tcp,
}

impl Transport {
    /// The lowercase name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A host for Via sent-by and Contact: an IP address or a DNS name
/// (RFC 3261 §25.1 `host`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Host {
    /// A literal IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name (letters, digits, hyphens; the last label starts with a
    /// letter, so a mistyped dotted quad is not taken for a name).
    Name(String),
}

/// Formats as in a SIP URI: IPv6 addresses in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl FromStr for Host {
    type Err = InvalidHost;

    /// Accepts an IPv4 address, an IPv6 address with or without brackets,
    /// or a DNS name (RFC 3261 §25.1 `hostname`, without a trailing dot).
    fn from_str(text: &str) -> Result<Host, InvalidHost> {
        let invalid = || InvalidHost {
            text: text.to_owned(),
        };
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return match inner.parse() {
                Ok(ip) => Ok(Host::Ip(IpAddr::V6(ip))),
                Err(_) => Err(invalid()),
            };
        }
        if let Ok(ip) = text.parse() {
            return Ok(Host::Ip(ip));
        }
        if text.is_empty() || text.len() > 253 {
            return Err(invalid());
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let top_starts_with_letter = text
            .rsplit('.')
            .next()
            .and_then(|top| top.bytes().next())
            .is_some_and(|b| b.is_ascii_alphabetic());
        if text.split('.').all(label_ok) && top_starts_with_letter {
            Ok(Host::Name(text.to_owned()))
        } else {
            Err(invalid())
        }
    }
}

impl TryFrom<String> for Host {
    type Error = InvalidHost;

    fn try_from(text: String) -> Result<Host, InvalidHost> {
        text.parse()
    }
}

/// A string that is neither an IP address nor a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid host {text:?}: expected an IP address or a DNS name")]
pub struct InvalidHost {
    /// The text as written.
    pub text: String,
}

/// RFC 4028 §5: no Min-SE below 90 seconds.
const MIN_SE_FLOOR_S: u32 = 90;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn rejects_min_se_below_90() {
        let e = error("[sip]\nmin_se_s = 89\n");
        assert_eq!(
            e,
            "config.toml: sip.min_se_s: 89 is below 90, the minimum set by RFC 4028 §5"
        );
    }

    #[test]
    fn rejects_min_se_above_session_expires() {
        let e = error("[sip]\nsession_expires_s = 300\nmin_se_s = 600\n");
        assert_eq!(
            e,
            "config.toml: sip.min_se_s: 600 is greater than sip.session_expires_s 300"
        );
    }

    #[test]
    fn rejects_t1_above_t2() {
        let e = error("[sip]\nt1_ms = 5000\nt2_ms = 4000\n");
        assert_eq!(
            e,
            "config.toml: sip.t1_ms: 5000 is greater than sip.t2_ms 4000"
        );
    }

    #[test]
    fn rejects_max_message_size_out_of_range() {
        let e = error("[sip]\nmax_message_size = 1499\n");
        assert_eq!(
            e,
            "config.toml: sip.max_message_size: 1499 is outside 1500..=1048576"
        );
        let e = error("[sip]\nmax_message_size = 1048577\n");
        assert_eq!(
            e,
            "config.toml: sip.max_message_size: 1048577 is outside 1500..=1048576"
        );
    }

    #[test]
    fn rejects_zero_max_forwards() {
        let e = error("[sip]\nmax_forwards = 0\n");
        assert_eq!(e, "config.toml: sip.max_forwards: 0 is outside 1..=255");
    }

    #[test]
    fn rejects_empty_and_duplicate_transports() {
        let e = error("[sip]\ntransports = []\n");
        assert_eq!(
            e,
            "config.toml: sip.transports: must list at least one entry"
        );
        let e = error("[sip]\ntransports = [\"udp\", \"udp\"]\n");
        assert_eq!(e, "config.toml: sip.transports: udp is listed twice");
        let e = error("[sip]\ntransports = [\"tls\"]\n");
        assert!(e.contains("unknown variant `tls`"), "{e}");
    }

    #[test]
    fn rejects_header_injection_in_user_agent() {
        let e = error("[sip]\nuser_agent = \"x\\r\\nVia: evil\"\n");
        assert!(
            e.starts_with("config.toml: sip.user_agent: must be 1..=256 printable ASCII"),
            "{e}"
        );
        let e = error("[sip]\nuser_agent = \"\"\n");
        assert!(e.starts_with("config.toml: sip.user_agent: "), "{e}");
    }

    #[test]
    fn rejects_wildcard_bind_without_advertised_host() {
        let e = error("[sip]\nbind = \"0.0.0.0:5060\"\n");
        assert_eq!(
            e,
            "config.toml: sip.advertised_host: must be set when sip.bind is the wildcard address 0.0.0.0"
        );
        parse("[sip]\nbind = \"0.0.0.0:5060\"\nadvertised_host = \"203.0.113.10\"\n")
            .expect("wildcard with advertised host");
    }

    #[test]
    fn rejects_invalid_advertised_host() {
        for bad in [
            "10.0.0.300",
            "-sip.example.com",
            "sip..example.com",
            "sip_x.example.com",
            "[10.0.0.1]",
            "",
        ] {
            let e = error(&format!("[sip]\nadvertised_host = \"{bad}\"\n"));
            assert!(
                e.starts_with("config.toml:2:19: in [sip]: invalid host"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn host_parses_addresses_and_names() {
        assert_eq!(
            "[2001:db8::1]".parse(),
            Ok(Host::Ip("2001:db8::1".parse().expect("ip")))
        );
        assert_eq!(
            "2001:db8::1".parse::<Host>().map(|h| h.to_string()),
            Ok("[2001:db8::1]".into())
        );
        assert_eq!(
            "192.0.2.1".parse::<Host>().map(|h| h.to_string()),
            Ok("192.0.2.1".into())
        );
        assert_eq!(
            "pbx-1.example.net".parse(),
            Ok(Host::Name("pbx-1.example.net".into()))
        );
        assert_eq!("localhost".parse(), Ok(Host::Name("localhost".into())));
    }

    #[test]
    fn rejects_bind_port_zero() {
        let e = error("[sip]\nbind = \"127.0.0.1:0\"\n");
        assert_eq!(e, "config.toml: sip.bind: port 0 is not allowed");
    }
}
