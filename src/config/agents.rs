//! `[registrar]` and `[[agents]]`: REGISTER handling and who takes the calls.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::acd::agents::{AgentId, Contact};
use crate::callback::QueueId;
use crate::callback::trunk::Password;
use crate::sip::digest::{Algorithm, Secret};
use crate::sip::message::SipUri;
use crate::sip::registrar::RegistrarSettings;

use super::queues::{QueueConfig, deserialize_queue_ids};
use super::sip::{Host, SipConfig};
use super::{Config, Fault, Invalid, fail, in_range, is_header_text, is_queue_id};

impl Config {
    /// The registrar's users: the `user` and `password` of every agent that
    /// REGISTERs. Empty when every agent is static: then there is no
    /// registrar, and REGISTER is answered 405 as before.
    pub(super) fn registrar_users(&self) -> Vec<(String, Secret)> {
        self.agents
            .iter()
            .filter_map(|a| match (&a.user, &a.password) {
                (Some(user), Some(password)) => {
                    Some((user.clone(), Secret::Password(password.expose().to_owned())))
                }
                (Some(_), None) | (None, Some(_)) | (None, None) => None,
            })
            .collect()
    }
}

/// `[registrar]`: REGISTER handling for agents that register (RFC 3261
/// §10.3; see [`crate::sip::registrar`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// The Digest realm of the challenges (phones hash it with the
    /// password).
    pub realm: String,
    /// Shorter registrations get 423 Interval Too Brief.
    pub min_expires_s: u32,
    /// Longer registrations are shortened to this.
    pub max_expires_s: u32,
    /// The interval when a REGISTER names none.
    pub default_expires_s: u32,
    /// The digest algorithms challenged with, one WWW-Authenticate each,
    /// preferred first (RFC 8760 §2.4).
    #[serde(deserialize_with = "deserialize_algorithms")]
    pub digest_algorithms: Vec<Algorithm>,
    /// Every this many seconds each phone registered over UDP gets an
    /// OPTIONS through the flow its REGISTER came on, keeping its NAT
    /// mapping open; three unanswered in a row drop the binding. 0: off.
    pub nat_keepalive_s: u32,
    /// The longest interval granted to a phone that registers from behind
    /// a NAT (source ≠ Contact or Via), so its refreshes keep the mapping
    /// open too. 0: no limit beyond `max_expires_s`.
    pub nat_register_expires_s: u32,
}

impl RegistrarConfig {
    /// The registrar's settings; nonce lifetime and bindings per user keep
    /// their defaults.
    pub fn settings(&self) -> RegistrarSettings {
        RegistrarSettings {
            realm: self.realm.clone(),
            min_expires: self.min_expires_s,
            max_expires: self.max_expires_s,
            default_expires: self.default_expires_s,
            algorithms: self.digest_algorithms.clone(),
            keepalive: (self.nat_keepalive_s > 0)
                .then(|| Duration::from_secs(self.nat_keepalive_s.into())),
            nat_expires: (self.nat_register_expires_s > 0).then_some(self.nat_register_expires_s),
            ..RegistrarSettings::default()
        }
    }

    /// The `[registrar]` value rules, in file order.
    pub(super) fn check(&self) -> Result<(), Fault> {
        if !is_header_text(&self.realm) || self.realm.contains(['"', '\\']) {
            return fail("registrar.realm", Invalid::BadRealm);
        }
        if self.digest_algorithms.is_empty() {
            return fail("registrar.digest_algorithms", Invalid::Empty);
        }
        for (i, a) in self.digest_algorithms.iter().enumerate() {
            if self.digest_algorithms[..i].contains(a) {
                return fail(
                    "registrar.digest_algorithms",
                    Invalid::Duplicate {
                        entry: a.to_string(),
                    },
                );
            }
        }
        let (min, max, default) = (
            self.min_expires_s,
            self.max_expires_s,
            self.default_expires_s,
        );
        in_range("registrar.min_expires_s", min.into(), 1..=MAX_EXPIRES_S)?;
        in_range("registrar.max_expires_s", max.into(), 1..=MAX_EXPIRES_S)?;
        if min > max {
            return fail(
                "registrar.min_expires_s",
                Invalid::exceeds(min, "registrar.max_expires_s", max),
            );
        }
        if default < min {
            // RFC 3261 §10.3 step 7: the default applies like a requested
            // interval, so it must not itself earn a 423.
            return fail(
                "registrar.default_expires_s",
                Invalid::Below {
                    value: default.into(),
                    other_field: "registrar.min_expires_s",
                    other: min.into(),
                },
            );
        }
        if default > max {
            return fail(
                "registrar.default_expires_s",
                Invalid::exceeds(default, "registrar.max_expires_s", max),
            );
        }
        in_range(
            "registrar.nat_keepalive_s",
            self.nat_keepalive_s.into(),
            0..=MAX_KEEPALIVE_S,
        )?;
        let nat = self.nat_register_expires_s;
        if nat > 0 && nat < min {
            // Granted, it would earn the phone's next REGISTER a 423.
            return fail(
                "registrar.nat_register_expires_s",
                Invalid::Below {
                    value: nat.into(),
                    other_field: "registrar.min_expires_s",
                    other: min.into(),
                },
            );
        }
        if nat > max {
            return fail(
                "registrar.nat_register_expires_s",
                Invalid::exceeds(nat, "registrar.max_expires_s", max),
            );
        }
        Ok(())
    }
}

impl Default for RegistrarConfig {
    fn default() -> RegistrarConfig {
        RegistrarConfig {
            realm: "callbackd".to_owned(),
            min_expires_s: 60,
            max_expires_s: 3600,
            default_expires_s: 3600,
            digest_algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nat_keepalive_s: 20,
            nat_register_expires_s: 120,
        }
    }
}

/// One `[[agents]]` entry: a static SIP URI (`uri`, e.g. a PBX extension)
/// or a phone that REGISTERs with callbackd (`user` and `password`), never
/// both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name: 1..=64 of `A-Z a-z 0-9 - _ .`, unique.
    #[serde(deserialize_with = "deserialize_agent_id")]
    pub id: AgentId,
    /// A static agent's SIP URI, always reachable.
    #[serde(default)]
    pub uri: Option<String>,
    /// A registering agent's user name (the user part of its AoR and its
    /// digest username), unique.
    #[serde(default)]
    pub user: Option<String>,
    /// A registering agent's digest password; never shown by `Debug`.
    #[serde(default, serialize_with = "serialize_password")]
    pub password: Option<Password>,
    /// The queues the agent serves (at least one, each configured).
    #[serde(default, deserialize_with = "deserialize_queue_ids")]
    pub queues: Vec<QueueId>,
    /// The caller IDs this agent's callbacks may present, each one of
    /// `[org] callback_numbers`; empty: any of them.
    #[serde(default)]
    pub callback_numbers: Vec<String>,
}

impl AgentConfig {
    /// How the agent is reached: its static URI, or the address-of-record
    /// `sip:<user>@<sip advertised host>` that the registrar binds.
    pub fn contact(&self, sip: &SipConfig) -> Contact {
        match (&self.uri, &self.user) {
            (Some(uri), _) => Contact::Static(uri.clone()),
            (None, Some(user)) => Contact::Registered {
                aor: format!("sip:{user}@{}", sip.advertised_host()),
            },
            // Refused by validation; an empty static URI fails to parse
            // when dialled rather than panicking here.
            (None, None) => Contact::Static(String::new()),
        }
    }
}

/// A static agent's URI, checked and taken apart for dialling: where the
/// INVITE goes is the URI's own host (RFC 3263 §4: a port or an IP skips
/// SRV; a name without a port is asked for SRV of its transport, then for
/// A/AAAA on 5060).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUri {
    /// The URI as configured: the Request-URI of the agent's INVITE.
    pub uri: String,
    /// Its host.
    pub host: Host,
    /// Its port, if given (an IP without one means 5060).
    pub port: Option<u16>,
    /// `transport=tcp`.
    pub tcp: bool,
}

impl AgentUri {
    /// Parses a `sip:` URI with an IP or DNS host, an optional port and an
    /// optional `transport` of `udp` or `tcp`.
    pub fn parse(text: &str) -> Result<AgentUri, AgentUriError> {
        let uri = SipUri::parse(text).map_err(|_| AgentUriError::NotSipUri)?;
        if uri.secure {
            return Err(AgentUriError::Sips);
        }
        if uri.maddr.is_some() {
            return Err(AgentUriError::Maddr);
        }
        let tcp = match uri.transport.as_deref() {
            None | Some("udp") => false,
            Some("tcp") => true,
            Some(other) => {
                return Err(AgentUriError::Transport {
                    transport: other.to_owned(),
                });
            }
        };
        let host = uri
            .host
            .parse::<Host>()
            .map_err(|_| AgentUriError::BadHost)?;
        if uri.port == Some(0) {
            return Err(AgentUriError::PortZero);
        }
        Ok(AgentUri {
            uri: text.trim().to_owned(),
            host,
            port: uri.port,
            tcp,
        })
    }
}

/// Why a static agent's `uri` cannot be dialled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AgentUriError {
    /// Not `sip:…` (or not a URI at all).
    #[error("is not a sip: URI")]
    NotSipUri,
    /// `sips:` needs TLS.
    #[error("sips: needs TLS, which is not supported; use sip:")]
    Sips,
    /// The host is neither an IP address nor a DNS name.
    #[error("its host is not an IP address or a DNS name")]
    BadHost,
    /// Port 0.
    #[error("port 0 is not allowed")]
    PortZero,
    /// A transport other than UDP or TCP.
    #[error("transport={transport} is not supported (udp or tcp)")]
    Transport {
        /// The parameter's value.
        transport: String,
    },
    /// `maddr` would send the INVITE somewhere else than the host.
    #[error("must not have a maddr parameter")]
    Maddr,
}

/// Longest registration interval `[registrar]` accepts: one day.
const MAX_EXPIRES_S: u64 = 86_400;
/// The longest keep-alive interval (a NAT keeping mappings longer needs none).
const MAX_KEEPALIVE_S: u64 = 3_600;

/// The password as written in the file (for `callbackd export`; the API
/// shows the organisation without it).
fn serialize_password<S: Serializer>(password: &Option<Password>, s: S) -> Result<S::Ok, S::Error> {
    match password {
        Some(p) => s.serialize_some(p.expose()),
        None => s.serialize_none(),
    }
}

fn deserialize_agent_id<'de, D: Deserializer<'de>>(d: D) -> Result<AgentId, D::Error> {
    String::deserialize(d).map(|id| AgentId(id.into_boxed_str()))
}

/// A plain SIP user part (RFC 3261 §25.1 `user`, restricted): 1..=64 of
/// `A-Z a-z 0-9 - _ . +`, so it needs no escaping in a URI and no quoting
/// in a digest `username`.
fn is_sip_user(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

/// `registrar.digest_algorithms`: "SHA-256", "MD5" (and their "-sess"
/// forms), case-insensitive.
fn deserialize_algorithms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Algorithm>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            Algorithm::parse(entry).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "registrar.digest_algorithms[{i}]: {entry:?} is not one of \"SHA-256\", \"MD5\", \"SHA-256-sess\", \"MD5-sess\""
                ))
            })
        })
        .collect()
}

/// The `[[agents]]` value rules, agent by agent in file order; every queue
/// an agent serves must be in `queues`.
pub(super) fn check_agents(
    agents: &[AgentConfig],
    queues: &[QueueConfig],
    org: &super::OrgConfig,
) -> Result<(), Fault> {
    for (i, agent) in agents.iter().enumerate() {
        let at = |key: &str| format!("agents[{i}].{key}");
        for (j, text) in agent.callback_numbers.iter().enumerate() {
            // Without a central list the queues' own numbers are the set.
            let listed = crate::domain::number::own_number(text).is_ok_and(|n| {
                if org.callback_numbers.is_empty() {
                    queues
                        .iter()
                        .any(|q| q.caller_id().is_ok_and(|own| own == n))
                } else {
                    org.presents(&n)
                }
            });
            if !listed {
                let value = text.clone();
                return fail(
                    &at(&format!("callback_numbers[{j}]")),
                    if org.callback_numbers.is_empty() {
                        Invalid::NotAQueueNumber { value }
                    } else {
                        Invalid::NotACallbackNumber { value }
                    },
                );
            }
        }
        if !is_queue_id(agent.id.as_str()) {
            return fail(
                &at("id"),
                Invalid::BadAgentId {
                    id: agent.id.as_str().to_owned(),
                },
            );
        }
        let earlier = &agents[..i];
        if earlier.iter().any(|a| a.id == agent.id) {
            return fail(&at("id"), Invalid::duplicate(agent.id.as_str()));
        }
        match (&agent.uri, &agent.user) {
            (None, None) | (Some(_), Some(_)) => {
                return fail(
                    &format!("agents[{i}]"),
                    Invalid::ExactlyOneOf {
                        first: "uri",
                        second: "user",
                    },
                );
            }
            (Some(uri), None) => {
                if let Err(reason) = AgentUri::parse(uri) {
                    return fail(
                        &at("uri"),
                        Invalid::BadAgentUri {
                            value: uri.clone(),
                            reason,
                        },
                    );
                }
                if agent.password.is_some() {
                    return fail(
                        &at("password"),
                        Invalid::OnlyWith {
                            other_field: "user",
                        },
                    );
                }
            }
            (None, Some(user)) => {
                if !is_sip_user(user) {
                    return fail(&at("user"), Invalid::BadSipUser { user: user.clone() });
                }
                if earlier.iter().any(|a| a.user.as_ref() == Some(user)) {
                    return fail(&at("user"), Invalid::duplicate(user));
                }
                match &agent.password {
                    None => {
                        return fail(
                            &at("password"),
                            Invalid::RequiredWith {
                                other_field: "user",
                            },
                        );
                    }
                    Some(password) if password.expose().is_empty() => {
                        return fail(&at("password"), Invalid::EmptyValue);
                    }
                    Some(_) => {}
                }
            }
        }
        if agent.queues.is_empty() {
            return fail(&at("queues"), Invalid::Empty);
        }
        for (j, queue) in agent.queues.iter().enumerate() {
            let field = format!("agents[{i}].queues[{j}]");
            if agent.queues[..j].contains(queue) {
                return fail(&field, Invalid::duplicate(queue.as_str()));
            }
            if !queues.iter().any(|q| q.id == *queue) {
                return fail(&field, Invalid::unknown_queue(queue));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::callback::scheduler::RetryPolicy;
    use crate::config::test_support::*;

    #[test]
    fn registrar_digest_algorithms_in_preference_order() {
        assert_eq!(
            Config::default().registrar.settings().algorithms,
            [Algorithm::Sha256, Algorithm::Md5]
        );
        let c =
            parse("[registrar]\ndigest_algorithms = [\"md5\", \"SHA-256\"]\n").expect("algorithms");
        assert_eq!(
            c.registrar.settings().algorithms,
            [Algorithm::Md5, Algorithm::Sha256]
        );
    }

    #[test]
    fn rejects_bad_registrar_digest_algorithms() {
        let e = error("[registrar]\ndigest_algorithms = []\n");
        assert_eq!(
            e,
            "config.toml: registrar.digest_algorithms: must list at least one entry"
        );
        let e = error("[registrar]\ndigest_algorithms = [\"MD5\", \"md5\"]\n");
        assert_eq!(
            e,
            "config.toml: registrar.digest_algorithms: MD5 is listed twice"
        );
        let e = error("[registrar]\ndigest_algorithms = [\"MD5\", \"SHA-512-256\"]\n");
        assert!(
            e.contains("registrar.digest_algorithms[1]: \"SHA-512-256\" is not one of"),
            "{e}"
        );
    }

    #[test]
    fn shipped_agent_examples_parse_when_uncommented() {
        let start = SHIPPED
            .find("\n# [[agents]]\n")
            .expect("the example in config.toml");
        let example: String = SHIPPED[start..]
            .lines()
            .map(|line| {
                let line = line.strip_prefix('#').unwrap_or(line);
                line.strip_prefix(' ').unwrap_or(line)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!("{}{example}\n", &SHIPPED[..start]);
        let c = parse(&text).expect("uncommented example");
        let ids: Vec<&str> = c.agents.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["alice", "bob"]);
        assert_eq!(c.registrar_users().len(), 1, "bob registers");
    }

    #[test]
    fn reads_agents_registrar_and_queue_policy() {
        let c = parse(AGENTS).expect("agents config");
        assert_eq!(c.callbacks.max_lines, 2);
        assert_eq!(c.callbacks.poll_interval(), Duration::from_millis(250));
        let r = c.registrar.settings();
        assert_eq!(r.realm, "acme.example");
        assert_eq!(
            (r.min_expires, r.max_expires, r.default_expires),
            (30, 600, 120)
        );
        let [support, sales] = c.queues.as_slice() else {
            panic!("two queues: {:?}", c.queues);
        };
        assert_eq!(
            support.retry_policy(),
            RetryPolicy {
                retry_time: Duration::from_secs(5),
                max_retries: 1,
                failover: Some(QueueId("sales".into())),
                agent_ring_timeout: Duration::from_secs(7),
                customer_ring_timeout: Duration::from_secs(9),
            }
        );
        assert_eq!(support.agent_cooldown(), Duration::ZERO);
        assert_eq!(
            sales.retry_policy(),
            QueueConfig::default().retry_policy(),
            "keys not written take the defaults"
        );
        let schedule = sales.schedule(&c.org).expect("schedule");
        assert_eq!(
            (schedule.id.as_str(), schedule.priority, schedule.hours),
            ("sales", 5, None)
        );

        let t0 = std::time::Instant::now();
        let roster = checked(c.clone()).roster(t0);
        assert_eq!(roster.max_lines(), 2);
        let alice = roster.get(&AgentId("alice".into())).expect("alice");
        assert_eq!(
            alice.contact(),
            &Contact::Static("sip:1001@127.0.0.1:5080".into())
        );
        assert!(alice.is_reachable(), "a static agent is always reachable");
        assert_eq!(alice.queues(), [QueueId("support".into())]);
        let bob = roster.get(&AgentId("bob".into())).expect("bob");
        assert_eq!(
            bob.contact(),
            &Contact::Registered {
                aor: "sip:bob@127.0.0.1".into()
            }
        );
        assert!(!bob.is_reachable(), "unreachable until it registers");
        assert_eq!(bob.idle_since(), t0);
        assert_eq!(
            c.registrar_users(),
            [("bob".to_owned(), Secret::Password("hunter2".into()))]
        );
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "password not in Debug"
        );
        let uri = AgentUri::parse(c.agents[0].uri.as_deref().expect("uri")).expect("valid");
        assert_eq!(
            uri,
            AgentUri {
                uri: "sip:1001@127.0.0.1:5080".into(),
                host: Host::Ip("127.0.0.1".parse().expect("ip")),
                port: Some(5080),
                tcp: false,
            }
        );
    }

    #[test]
    fn agent_uri_takes_host_port_and_transport() {
        let uri = AgentUri::parse("sip:201@pbx.example.com;transport=TCP").expect("valid");
        assert_eq!(uri.host, Host::Name("pbx.example.com".into()));
        assert_eq!((uri.port, uri.tcp), (None, true));
        let uri = AgentUri::parse("sip:[2001:db8::7]:5070").expect("no user part is fine");
        assert_eq!(uri.host, Host::Ip("2001:db8::7".parse().expect("ip")));
        assert_eq!((uri.port, uri.tcp), (Some(5070), false));
    }

    #[test]
    fn rejects_realm_that_cannot_be_quoted() {
        for bad in ["", "a\\\"b", "a\\\\b", "tab\\there"] {
            let e = error(&format!("[registrar]\nrealm = \"{bad}\"\n"));
            assert!(
                e.starts_with("config.toml: registrar.realm: must be 1..=256 printable ASCII"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rejects_registrar_expires_out_of_range() {
        let e = error("[registrar]\nmin_expires_s = 0\n");
        assert_eq!(
            e,
            "config.toml: registrar.min_expires_s: 0 is outside 1..=86400"
        );
        let e = error("[registrar]\nmax_expires_s = 86401\n");
        assert_eq!(
            e,
            "config.toml: registrar.max_expires_s: 86401 is outside 1..=86400"
        );
    }

    #[test]
    fn rejects_nat_keepalive_and_nat_expires_out_of_range() {
        let e = error("[registrar]\nnat_keepalive_s = 3601\n");
        assert_eq!(
            e,
            "config.toml: registrar.nat_keepalive_s: 3601 is outside 0..=3600"
        );
        let e = error("[registrar]\nnat_register_expires_s = 59\n");
        assert_eq!(
            e,
            "config.toml: registrar.nat_register_expires_s: 59 is less than registrar.min_expires_s 60"
        );
        let e = error("[registrar]\nnat_register_expires_s = 3601\n");
        assert_eq!(
            e,
            "config.toml: registrar.nat_register_expires_s: 3601 is greater than registrar.max_expires_s 3600"
        );
        let e = error("[registrar]\nnat_keepalive_s = -1\n");
        assert!(e.starts_with("config.toml:2:19: in [registrar]"), "{e}");
    }

    #[test]
    fn rejects_min_expires_above_max_expires() {
        let e = error("[registrar]\nmin_expires_s = 600\nmax_expires_s = 300\n");
        assert_eq!(
            e,
            "config.toml: registrar.min_expires_s: 600 is greater than registrar.max_expires_s 300"
        );
    }

    #[test]
    fn rejects_default_expires_outside_min_and_max() {
        let e = error("[registrar]\ndefault_expires_s = 59\n");
        assert_eq!(
            e,
            "config.toml: registrar.default_expires_s: 59 is less than registrar.min_expires_s 60"
        );
        let e = error("[registrar]\ndefault_expires_s = 3601\n");
        assert_eq!(
            e,
            "config.toml: registrar.default_expires_s: 3601 is greater than registrar.max_expires_s 3600"
        );
    }

    #[test]
    fn rejects_agent_with_neither_uri_nor_user() {
        let e = error(&agents_with("uri = \"sip:1001@127.0.0.1:5080\"", ""));
        assert_eq!(e, "config.toml: agents[0]: set exactly one of uri or user");
    }

    #[test]
    fn rejects_agent_with_both_uri_and_user() {
        let e = error(&agents_with(
            "uri = \"sip:1001@127.0.0.1:5080\"",
            "uri = \"sip:1001@127.0.0.1:5080\"\nuser = \"alice\"\npassword = \"x\"",
        ));
        assert_eq!(e, "config.toml: agents[0]: set exactly one of uri or user");
    }

    #[test]
    fn rejects_malformed_agent_id() {
        let e = error(&agents_with("id = \"alice\"", "id = \"alice smith\""));
        assert_eq!(
            e,
            "config.toml: agents[0].id: \"alice smith\" must be 1..=64 characters of A-Z a-z 0-9 - _ ."
        );
    }

    #[test]
    fn rejects_duplicate_agent_id() {
        let e = error(&agents_with("id = \"bob\"", "id = \"alice\""));
        assert_eq!(e, "config.toml: agents[1].id: alice is listed twice");
    }

    #[test]
    fn rejects_agent_without_id() {
        let e = error("[[agents]]\nuri = \"sip:1@127.0.0.1\"\nqueues = [\"support\"]\n");
        assert!(e.contains("missing field `id`"), "{e}");
    }

    #[test]
    fn rejects_malformed_agent_uri() {
        let cases = [
            ("tel:+13125550100", "is not a sip: URI"),
            ("1001@127.0.0.1", "is not a sip: URI"),
            (
                "sips:1001@pbx.example.com",
                "sips: needs TLS, which is not supported; use sip:",
            ),
            (
                "sip:1001@pbx.example.com;transport=tls",
                "transport=tls is not supported (udp or tcp)",
            ),
            (
                "sip:1001@pbx.example.com;maddr=10.0.0.1",
                "must not have a maddr parameter",
            ),
            (
                "sip:1001@pbx_1.example.com",
                "its host is not an IP address or a DNS name",
            ),
            ("sip:1001@127.0.0.1:0", "port 0 is not allowed"),
        ];
        for (uri, reason) in cases {
            let e = error(&agents_with(
                "uri = \"sip:1001@127.0.0.1:5080\"",
                &format!("uri = \"{uri}\""),
            ));
            assert_eq!(e, format!("config.toml: agents[0].uri: {uri:?} {reason}"));
        }
    }

    #[test]
    fn rejects_password_on_static_agent() {
        let e = error(&agents_with(
            "uri = \"sip:1001@127.0.0.1:5080\"",
            "uri = \"sip:1001@127.0.0.1:5080\"\npassword = \"x\"",
        ));
        assert_eq!(
            e,
            "config.toml: agents[0].password: is only allowed with user"
        );
    }

    #[test]
    fn rejects_registered_agent_without_password() {
        let e = error(&agents_with("password = \"hunter2\"", ""));
        assert_eq!(
            e,
            "config.toml: agents[1].password: must be set when user is"
        );
        let e = error(&agents_with("password = \"hunter2\"", "password = \"\""));
        assert_eq!(e, "config.toml: agents[1].password: must not be empty");
    }

    #[test]
    fn rejects_malformed_agent_user() {
        for bad in ["", "bob@acme", "bob smith", "b:ob"] {
            let e = error(&agents_with("user = \"bob\"", &format!("user = \"{bad}\"")));
            assert_eq!(
                e,
                format!(
                    "config.toml: agents[1].user: {bad:?} must be 1..=64 characters of A-Z a-z 0-9 - _ . +"
                )
            );
        }
        parse(&agents_with("user = \"bob\"", "user = \"+1312.bob_2-x\"")).expect("allowed");
    }

    #[test]
    fn rejects_duplicate_agent_user() {
        let text = format!(
            "{AGENTS}\n[[agents]]\nid = \"bob2\"\nuser = \"bob\"\npassword = \"x\"\nqueues = [\"sales\"]\n"
        );
        let e = error(&text);
        assert_eq!(e, "config.toml: agents[2].user: bob is listed twice");
    }

    #[test]
    fn rejects_agent_without_queues() {
        let e = error(&agents_with("queues = [\"support\"]\n", "queues = []\n"));
        assert_eq!(
            e,
            "config.toml: agents[0].queues: must list at least one entry"
        );
        let e = error("[[agents]]\nid = \"a\"\nuri = \"sip:1@127.0.0.1\"\n");
        assert_eq!(
            e,
            "config.toml: agents[0].queues: must list at least one entry"
        );
    }

    #[test]
    fn rejects_agent_queue_not_configured() {
        let e = error(&agents_with(
            "queues = [\"support\", \"sales\"]",
            "queues = [\"support\", \"billing\"]",
        ));
        assert_eq!(
            e,
            "config.toml: agents[1].queues[1]: \"billing\" is not a configured queue"
        );
    }

    #[test]
    fn rejects_agent_queue_listed_twice() {
        let e = error(&agents_with(
            "queues = [\"support\", \"sales\"]",
            "queues = [\"sales\", \"sales\"]",
        ));
        assert_eq!(e, "config.toml: agents[1].queues[1]: sales is listed twice");
    }

    #[test]
    fn rejects_unknown_agent_key() {
        let e = error(&agents_with(
            "user = \"bob\"",
            "user = \"bob\"\nsecret = \"x\"",
        ));
        assert!(e.contains("unknown field `secret`"), "{e}");
    }
}
