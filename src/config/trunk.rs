//! `[trunk]`: the carrier trunk callbacks are dialled through.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::callback::trunk::{
    CpsLimiter, Credentials, NumberFormat, Password, Termination, TrunkError, TrunkSettings,
    TrunkTransport,
};

use super::{Fault, Invalid, fail, in_range, is_header_text};

/// `[trunk]`: the carrier trunk callbacks are dialled through (see
/// [`crate::callback::trunk`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrunkConfig {
    /// Where customer INVITEs go: `sip:host[:port]` or `host[:port]`.
    pub termination: String,
    /// The transport towards the trunk.
    pub transport: TrunkTransportSetting,
    /// How numbers are written in the Request-URI, From and PAI.
    pub number_format: NumberFormat,
    /// Add `;user=phone` to E.164 SIP URIs.
    pub user_phone: bool,
    /// Send P-Asserted-Identity with the caller ID.
    pub p_asserted_identity: bool,
    /// Most new calls per second.
    pub cps_limit: f64,
    /// Digest username for 401/407 challenges (with `password`).
    pub username: Option<String>,
    /// Digest password (with `username`); never shown by `Debug`.
    pub password: Option<Password>,
    /// Most targets one call tries before it fails (RFC 3263 §4.3).
    pub max_targets: u8,
    /// Seconds a failed target is tried after the healthy ones.
    pub holddown_s: u64,
    /// Name servers asked for SRV and A/AAAA records — the termination's,
    /// and those of next hops named by host (agents' URIs, Contacts,
    /// Routes) — instead of `/etc/resolv.conf`'s (the hosts file is still
    /// read first); `ip` or `ip:port`, port 53 by default.
    #[serde(deserialize_with = "deserialize_dns_servers")]
    pub dns_servers: Vec<SocketAddr>,
}

impl TrunkConfig {
    /// The settings the dialer uses. Fails only on values
    /// [`Config::check`](super::Config::check) refuses; [`super::Settings`]
    /// holds the result.
    pub(super) fn settings(&self) -> Result<TrunkSettings, TrunkError> {
        let credentials = match (&self.username, &self.password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.as_str().into(),
                password: password.clone(),
            }),
            (Some(_), None) | (None, Some(_)) | (None, None) => None,
        };
        Ok(TrunkSettings {
            termination: Termination::parse(&self.termination)?,
            transport: self.transport.transport(),
            number_format: self.number_format,
            user_phone: self.user_phone,
            p_asserted_identity: self.p_asserted_identity,
            cps_limit: self.cps_limit,
            credentials,
            max_targets: self.max_targets.into(),
            holddown: Duration::from_secs(self.holddown_s),
        })
    }

    /// The `[trunk]` value rules, in file order.
    pub(super) fn check(&self) -> Result<(), Fault> {
        if let Err(e) = Termination::parse(&self.termination) {
            return fail("trunk.termination", Invalid::Trunk(e));
        }
        if self.user_phone && self.number_format == NumberFormat::National {
            return fail("trunk.user_phone", Invalid::UserPhoneNeedsE164);
        }
        if let Err(e) = CpsLimiter::new(self.cps_limit, 1) {
            return fail("trunk.cps_limit", Invalid::Trunk(e));
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return fail(
                    "trunk.password",
                    Invalid::RequiredWith {
                        other_field: "trunk.username",
                    },
                );
            }
            (None, Some(_)) => {
                return fail(
                    "trunk.username",
                    Invalid::RequiredWith {
                        other_field: "trunk.password",
                    },
                );
            }
            (Some(username), Some(password)) => {
                if !is_header_text(username) {
                    return fail("trunk.username", Invalid::NotHeaderText);
                }
                if password.expose().is_empty() {
                    return fail("trunk.password", Invalid::EmptyValue);
                }
            }
            (None, None) => {}
        }
        in_range("trunk.max_targets", self.max_targets.into(), 1..=16)?;
        in_range("trunk.holddown_s", self.holddown_s, 0..=3600)?;
        Ok(())
    }
}

impl Default for TrunkConfig {
    fn default() -> TrunkConfig {
        TrunkConfig {
            // A loopback placeholder: a test carrier (sipp) on port 5070.
            termination: "127.0.0.1:5070".to_owned(),
            transport: TrunkTransportSetting::Udp,
            number_format: NumberFormat::E164,
            user_phone: true,
            p_asserted_identity: true,
            cps_limit: 10.0,
            username: None,
            password: None,
            max_targets: 4,
            holddown_s: 30,
            dns_servers: Vec::new(),
        }
    }
}

/// `trunk.transport`: a fixed transport, or `auto` to let RFC 3263 choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransportSetting {
    /// SRV for UDP and TCP, UDP preferred; UDP for an IP or explicit port.
    Auto,
    /// UDP only.
    Udp,
    /// TCP only.
    Tcp,
}

impl TrunkTransportSetting {
    /// The fixed transport, or `None` for `auto`.
    pub fn transport(self) -> Option<TrunkTransport> {
        match self {
            TrunkTransportSetting::Auto => None,
            TrunkTransportSetting::Udp => Some(TrunkTransport::Udp),
            TrunkTransportSetting::Tcp => Some(TrunkTransport::Tcp),
        }
    }
}

/// `trunk.dns_servers`: `ip`, `ip:port`, `[v6]:port`; port 53 if none. The
/// error names the entry index.
fn deserialize_dns_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    /// RFC 1035 §4.2: DNS over UDP and TCP on port 53.
    const DNS_PORT: u16 = 53;
    let entries = Vec::<String>::deserialize(d)?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let addr = entry
                .parse::<SocketAddr>()
                .or_else(|_| entry.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, DNS_PORT)))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "trunk.dns_servers[{i}]: {entry:?} is not an IP address or ip:port"
                    ))
                })?;
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return Err(serde::de::Error::custom(format!(
                    "trunk.dns_servers[{i}]: {entry:?} cannot be asked (port 0 or unspecified address)"
                )));
            }
            Ok(addr)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::*;

    #[test]
    fn trunk_defaults_are_the_documented_values() {
        let c = Config::default();
        let t = c.trunk.settings().expect("default trunk");
        assert_eq!(t.termination.to_string(), "127.0.0.1:5070");
        assert_eq!(t.transport, Some(TrunkTransport::Udp));
        assert_eq!(t.number_format, NumberFormat::E164);
        assert!(t.user_phone && t.p_asserted_identity);
        assert_eq!(t.cps_limit, 10.0);
        assert_eq!(t.credentials, None);
        assert_eq!(t.max_targets, 4);
        assert_eq!(t.holddown, Duration::from_secs(30));
        let q = &c.queues[0];
        assert_eq!(q.callback_number, "3125550100");
        assert_eq!(
            q.caller_id().expect("valid").as_digits(),
            "3125550100",
            "the shipped caller ID is a valid number"
        );
        let empty = parse("[trunk]\n").expect("empty trunk table");
        assert_eq!(empty.trunk, TrunkConfig::default());
    }

    #[test]
    fn reads_the_trunk_section() {
        let c = parse(
            r#"
            [trunk]
            termination = "sip:termination.carrier.example.net"
            transport = "auto"
            number_format = "national"
            user_phone = false
            p_asserted_identity = false
            cps_limit = 2.5
            username = "acme"
            password = "hunter2"
            max_targets = 2
            holddown_s = 0
            [[queues]]
            id = "sales"
            callback_number = "011442079460000"
            "#,
        )
        .expect("trunk section");
        let t = c.trunk.settings().expect("trunk settings");
        assert_eq!(t.termination.to_string(), "termination.carrier.example.net");
        assert_eq!(t.transport, None);
        assert_eq!(t.number_format, NumberFormat::National);
        assert!(!t.user_phone && !t.p_asserted_identity);
        assert_eq!(t.cps_limit, 2.5);
        let creds = t.credentials.expect("credentials");
        assert_eq!(
            (&*creds.username, creds.password.expose()),
            ("acme", "hunter2")
        );
        assert_eq!((t.max_targets, t.holddown), (2, Duration::ZERO));
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "password not in Debug"
        );
        let cid = c.queues[0].caller_id().expect("international caller ID");
        assert_eq!(cid.as_digits(), "011442079460000");
        let tcp = parse("[trunk]\ntransport = \"tcp\"\n").expect("tcp");
        assert_eq!(tcp.trunk.transport.transport(), Some(TrunkTransport::Tcp));
    }

    #[test]
    fn rejects_malformed_trunk_termination() {
        let e = error("[trunk]\ntermination = \"carrier example\"\n");
        assert_eq!(
            e,
            "config.toml: trunk.termination: \"carrier example\" is not sip:host[:port] or host[:port]"
        );
        let e = error("[trunk]\ntermination = \"sips:carrier.example.net\"\n");
        assert_eq!(
            e,
            "config.toml: trunk.termination: sips: needs TLS, which is not supported; use sip:"
        );
        let e = error("[trunk]\ntermination = \"sip:carrier.example.net;transport=tcp\"\n");
        assert!(
            e.starts_with("config.toml: trunk.termination: must not have a transport"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_trunk_transport_and_number_format() {
        let e = error("[trunk]\ntransport = \"tls\"\n");
        assert!(e.contains("tls") && e.contains("trunk"), "{e}");
        let e = error("[trunk]\nnumber_format = \"E.164\"\n");
        assert!(e.contains("E.164"), "{e}");
    }

    #[test]
    fn rejects_trunk_cps_limit_out_of_range() {
        for value in ["0", "-1", "nan", "inf", "1000.5"] {
            let e = error(&format!("[trunk]\ncps_limit = {value}\n"));
            assert!(
                e.starts_with("config.toml: trunk.cps_limit: ")
                    && e.ends_with("is not a call rate in 0.001..=1000 per second"),
                "{value}: {e}"
            );
        }
        parse("[trunk]\ncps_limit = 1000\n").expect("upper bound");
        parse("[trunk]\ncps_limit = 0.5\n").expect("one call every two seconds");
    }

    #[test]
    fn rejects_user_phone_with_national_numbers() {
        let e = error("[trunk]\nnumber_format = \"national\"\n");
        assert!(
            e.starts_with("config.toml: trunk.user_phone: needs number_format = \"e164\""),
            "{e}"
        );
        parse("[trunk]\nnumber_format = \"national\"\nuser_phone = false\n")
            .expect("national without user=phone");
    }

    #[test]
    fn rejects_trunk_username_without_password() {
        let e = error("[trunk]\nusername = \"acme\"\n");
        assert_eq!(
            e,
            "config.toml: trunk.password: must be set when trunk.username is"
        );
        let e = error("[trunk]\npassword = \"secret\"\n");
        assert_eq!(
            e,
            "config.toml: trunk.username: must be set when trunk.password is"
        );
        let e = error("[trunk]\nusername = \"acme\"\npassword = \"\"\n");
        assert_eq!(e, "config.toml: trunk.password: must not be empty");
        let e = error("[trunk]\nusername = \"a\\nb\"\npassword = \"x\"\n");
        assert!(
            e.starts_with("config.toml: trunk.username: must be 1..=256"),
            "{e}"
        );
    }

    #[test]
    fn rejects_trunk_failover_settings_out_of_range() {
        let e = error("[trunk]\nmax_targets = 0\n");
        assert_eq!(e, "config.toml: trunk.max_targets: 0 is outside 1..=16");
        let e = error("[trunk]\nmax_targets = 17\n");
        assert_eq!(e, "config.toml: trunk.max_targets: 17 is outside 1..=16");
        let e = error("[trunk]\nholddown_s = 3601\n");
        assert_eq!(e, "config.toml: trunk.holddown_s: 3601 is outside 0..=3600");
    }

    #[test]
    fn trunk_dns_servers_take_ip_or_ip_port() {
        let c = parse(
            "[trunk]\ndns_servers = [\"192.0.2.53\", \"127.0.0.1:5353\", \"[::1]:53\", \"::1\"]\n",
        )
        .expect("valid name servers");
        let want: Vec<SocketAddr> = ["192.0.2.53:53", "127.0.0.1:5353", "[::1]:53", "[::1]:53"]
            .iter()
            .map(|a| a.parse().expect("test address"))
            .collect();
        assert_eq!(c.trunk.dns_servers, want);
        assert!(Config::default().trunk.dns_servers.is_empty());
    }

    #[test]
    fn rejects_bad_trunk_dns_servers() {
        for (text, index, entry) in [
            ("[\"ns1.example.net\"]", 0, "ns1.example.net"),
            ("[\"127.0.0.1\", \"127.0.0.1:99999\"]", 1, "127.0.0.1:99999"),
            ("[\"127.0.0.1:0\"]", 0, "127.0.0.1:0"),
            ("[\"0.0.0.0\"]", 0, "0.0.0.0"),
        ] {
            let e = error(&format!("[trunk]\ndns_servers = {text}\n"));
            assert!(
                e.contains(&format!("trunk.dns_servers[{index}]: \"{entry}\"")),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn rejects_unknown_trunk_key() {
        let e = error("[trunk]\ncaller_id = \"3125550100\"\n");
        assert!(e.contains("caller_id"), "{e}");
    }
}
