//! `[acl]`: the allow-lists by role — trunks/proxies (`sip`), agents'
//! phones (`agents`) and RTP (`rtp`) — checked at the socket.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::acl::{self, Acl, AclAction, Sources};

/// `[acl]`: allow-lists for SIP and RTP sources.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    /// Trunks and proxies: may send any SIP, new INVITEs included (empty =
    /// nobody). The addresses the trunk's termination resolves to are
    /// added automatically.
    #[serde(deserialize_with = "deserialize_sip_nets")]
    pub sip: Vec<IpNet>,
    /// Agents' phones: may REGISTER (with digest), answer OPTIONS and take
    /// part in the calls made to them; a new INVITE from an address only
    /// in this list gets 403. Empty (the default) = no one beyond `sip`.
    #[serde(deserialize_with = "deserialize_agent_nets")]
    pub agents: Vec<IpNet>,
    /// Networks allowed to send RTP (empty = nobody).
    #[serde(deserialize_with = "deserialize_rtp_nets")]
    pub rtp: Vec<IpNet>,
    /// What happens to SIP requests from other sources.
    pub action: AclAction,
}

impl AclConfig {
    /// The SIP allow-list, ready for per-message checks.
    pub fn sip_acl(&self) -> Acl {
        Acl::new(&self.sip)
    }

    /// The agents' allow-list.
    pub fn agents_acl(&self) -> Acl {
        Acl::new(&self.agents)
    }

    /// The signalling sources by role (no resolved trunk target yet).
    pub fn sources(&self) -> Sources {
        Sources::new(self.sip_acl(), self.agents_acl())
    }

    /// The RTP allow-list, ready for per-packet checks.
    pub fn rtp_acl(&self) -> Acl {
        Acl::new(&self.rtp)
    }
}

impl Default for AclConfig {
    fn default() -> AclConfig {
        let loopback = IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST));
        AclConfig {
            sip: vec![loopback],
            agents: Vec::new(),
            rtp: vec![loopback],
            action: AclAction::Reject,
        }
    }
}

fn deserialize_sip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    deserialize_nets(d, "acl.sip")
}

fn deserialize_agent_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    deserialize_nets(d, "acl.agents")
}

fn deserialize_rtp_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    deserialize_nets(d, "acl.rtp")
}

/// A list of CIDR strings (bare addresses allowed, see [`acl::parse_cidr`]);
/// the error names the field and the entry index.
fn deserialize_nets<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<Vec<IpNet>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            acl::parse_cidr(entry)
                .map_err(|e| serde::de::Error::custom(format!("{field}[{i}]: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn shipped_acl_allows_loopback_only() {
        let c = parse(SHIPPED).expect("shipped config.toml");
        for acl in [c.acl.sip_acl(), c.acl.rtp_acl()] {
            assert!(acl.allows("127.0.0.1".parse().expect("ip")));
            assert!(acl.allows("::ffff:127.0.0.1".parse().expect("ip")));
            assert!(!acl.allows("127.0.0.2".parse().expect("ip")), "outsider");
            assert!(!acl.allows("192.0.2.1".parse().expect("ip")));
        }
    }

    #[test]
    fn rejects_bad_cidr() {
        let e = error("[acl]\nsip = [\n  \"10.0.0.1\",\n  \"10.0.0.300/8\",\n]\n");
        assert!(
            e.starts_with("config.toml:2:7: acl.sip[1]: invalid CIDR \"10.0.0.300/8\": "),
            "{e}"
        );
        let e = error("[acl]\nrtp = [\"10.0.0.0/33\"]\n");
        assert!(
            e.contains("acl.rtp[0]: invalid CIDR \"10.0.0.0/33\": prefix length /33"),
            "{e}"
        );
    }

    #[test]
    fn agents_list_gives_the_agent_role() {
        use crate::acl::Role;
        let c = parse("[acl]\nsip = [\"10.0.0.1\"]\nagents = [\"0.0.0.0/0\"]\n").expect("valid");
        let s = c.acl.sources();
        assert_eq!(s.classify("10.0.0.1".parse().expect("ip")), Role::Trunk);
        assert_eq!(s.classify("203.0.113.5".parse().expect("ip")), Role::Agent);
        assert_eq!(
            s.classify("2001:db8::1".parse().expect("ip")),
            Role::Outsider
        );
        let shipped = parse(SHIPPED).expect("shipped");
        assert!(shipped.acl.agents.is_empty(), "no agent network by default");
        let e = error("[acl]\nagents = [\"nope\"]\n");
        assert!(e.contains("acl.agents[0]: invalid CIDR"), "{e}");
    }

    #[test]
    fn rejects_unknown_acl_action() {
        let e = error("[acl]\naction = \"deny\"\n");
        assert!(
            e.starts_with("config.toml:2:10: in [acl]: unknown variant `deny`"),
            "{e}"
        );
    }
}
