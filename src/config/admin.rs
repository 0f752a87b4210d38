//! `[log]` and `[api]`: how the running process is observed and administered.

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

use super::sip::{SipConfig, Transport};
use super::{Fault, Invalid, fail};

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Least severe level written.
    pub level: LogLevel,
}

/// A log verbosity, as in `tracing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation (the default).
    #[default]
    Info,
    /// Per-call detail.
    Debug,
    /// Per-message detail.
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> tracing::Level {
        match level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// `[api]`: the admin HTTP API (health, statistics, gates, callbacks, agents,
/// accounts, Prometheus metrics; see [`crate::api`]). Every route but
/// `/health` (and `/metrics` while `metrics_public`) takes a bearer token;
/// there is no TLS: keep it on loopback, or behind a TLS proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the API at all.
    pub enabled: bool,
    /// Local address of the HTTP listener.
    pub bind: SocketAddr,
    /// `/metrics` answers without a token (Prometheus scrapers); false
    /// makes it need one like any read. The figures are counts, no phone
    /// numbers or names.
    pub metrics_public: bool,
}

impl ApiConfig {
    /// The `[api]` value rules; `sip` is checked for a clash of
    /// listeners.
    pub(super) fn check(&self, sip: &SipConfig) -> Result<(), Fault> {
        if self.bind.port() == 0 {
            return fail("api.bind", Invalid::PortZero);
        }
        if sip.serves(Transport::Tcp) && same_listener(self.bind, sip.bind) {
            return fail(
                "api.bind",
                Invalid::SipTcpListener {
                    addr: self.bind,
                    sip: sip.bind,
                },
            );
        }
        Ok(())
    }
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            enabled: true,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8089)),
            metrics_public: true,
        }
    }
}

/// Whether TCP listeners on `a` and `b` would collide: the same port, and
/// the same IP or either one a wildcard.
fn same_listener(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::*;

    #[test]
    fn rejects_unknown_log_level() {
        let e = error("[log]\nlevel = \"verbose\"\n");
        assert!(
            e.starts_with("config.toml:2:9: in [log]: unknown variant `verbose`"),
            "{e}"
        );
    }

    #[test]
    fn api_defaults_to_loopback_and_enabled() {
        let c = Config::default();
        assert!(c.api.enabled);
        assert_eq!(c.api.bind, "127.0.0.1:8089".parse().expect("addr"));
        assert!(c.api.bind.ip().is_loopback());
        assert!(c.api.metrics_public);
    }

    #[test]
    fn reads_api_section() {
        let c = parse("[api]\nenabled = false\nbind = \"[::1]:9000\"\n").expect("api section");
        assert!(!c.api.enabled);
        assert_eq!(c.api.bind, "[::1]:9000".parse().expect("addr"));
        assert!(c.api.metrics_public, "default");
        let c = parse("[api]\nmetrics_public = false\n").expect("api section");
        assert!(!c.api.metrics_public);
    }

    #[test]
    fn rejects_api_bind_port_zero() {
        let e = error("[api]\nbind = \"127.0.0.1:0\"\n");
        assert_eq!(e, "config.toml: api.bind: port 0 is not allowed");
    }

    #[test]
    fn rejects_api_bind_on_the_sip_tcp_listener() {
        let e = error("[api]\nbind = \"127.0.0.1:5060\"\n");
        assert_eq!(
            e,
            "config.toml: api.bind: 127.0.0.1:5060 overlaps sip.bind 127.0.0.1:5060, \
             where SIP over TCP listens"
        );
        let e = error("[api]\nbind = \"0.0.0.0:5060\"\n");
        assert!(
            e.starts_with("config.toml: api.bind: 0.0.0.0:5060 overlaps"),
            "{e}"
        );
    }

    #[test]
    fn accepts_api_on_the_sip_port_when_sip_is_udp_only() {
        let c = parse("[sip]\ntransports = [\"udp\"]\n[api]\nbind = \"127.0.0.1:5060\"\n")
            .expect("UDP and TCP do not collide");
        assert_eq!(c.api.bind.port(), c.sip.bind.port());
    }

    #[test]
    fn rejects_unknown_api_key() {
        let e = error("[api]\nport = 8089\n");
        assert!(
            e.starts_with("config.toml:2:1: in [api]: unknown field `port`"),
            "{e}"
        );
    }

    #[test]
    fn rejects_api_bind_without_port() {
        let e = error("[api]\nbind = \"127.0.0.1\"\n");
        assert!(e.starts_with("config.toml:2:8: in [api]: "), "{e}");
    }
}
