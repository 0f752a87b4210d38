//! `[acl]`: the allow-lists for SIP and RTP sources.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::acl::{self, Acl, AclAction};

/// `[acl]`: allow-lists for SIP and RTP sources.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    /// Networks allowed to send SIP (empty = nobody).
    #[serde(deserialize_with = "deserialize_sip_nets")]
    pub sip: Vec<IpNet>,
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
            rtp: vec![loopback],
            action: AclAction::Reject,
        }
    }
}

fn deserialize_sip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    deserialize_nets(d, "acl.sip")
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
    fn rejects_unknown_acl_action() {
        let e = error("[acl]\naction = \"deny\"\n");
        assert!(
            e.starts_with("config.toml:2:10: in [acl]: unknown variant `deny`"),
            "{e}"
        );
    }
}
