//! The organisation: `[org]`, `[[queues]]` and `[[agents]]` — the part of
//! the configuration an operator changes at run time.
//!
//! The store keeps it once the engine has started: `config.toml` seeds it on
//! the first start (an empty store), and from then on the stored version
//! wins over the file's sections; the admin API changes it without a
//! restart, and `callbackd export` writes it back out as TOML in the same
//! shape as the file's sections (paste it into `config.toml`, or keep it as
//! a backup). Everything else in the file (listeners, ACL, trunk, media,
//! prompts, limits) is the engine's and is read from the file only.

use serde::{Deserialize, Serialize};

use super::{
    AgentConfig, Config, ConfigError, MissedCallRuleConfig, OrgConfig, QueueConfig, Settings,
};

/// The organisation's sections of the configuration, as stored and as
/// exported (TOML) or shown by the API (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// `[org]`: name, policy, hours, holidays, switches.
    #[serde(default)]
    pub org: OrgConfig,
    /// `[[queues]]`, at least one.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// `[[agents]]`.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// `[[missed_call_rules]]`.
    #[serde(default)]
    pub missed_call_rules: Vec<MissedCallRuleConfig>,
}

impl Organisation {
    /// Parses a stored or exported document (TOML).
    pub fn from_toml(text: &str) -> Result<Organisation, toml::de::Error> {
        toml::from_str(text)
    }

    /// The document as TOML: `[org]`, then every `[[queues]]` and
    /// `[[agents]]` table, agents' passwords included (it is a backup).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect(
            "every field is a string, number, bool, array or string-keyed table: TOML holds it",
        )
    }
}

impl Config {
    /// The organisation's sections of this configuration.
    pub fn organisation(&self) -> Organisation {
        Organisation {
            org: self.org.clone(),
            queues: self.queues.clone(),
            agents: self.agents.clone(),
            missed_call_rules: self.missed_call_rules.clone(),
        }
    }

    /// Replaces the organisation's sections (checked with the rest by
    /// [`Config::check`]).
    pub fn set_organisation(&mut self, organisation: Organisation) {
        self.org = organisation.org;
        self.queues = organisation.queues;
        self.agents = organisation.agents;
        self.missed_call_rules = organisation.missed_call_rules;
    }
}

impl Settings {
    /// The organisation these settings were converted from.
    pub fn organisation(&self) -> Organisation {
        self.source.organisation()
    }

    /// These settings with another organisation: every value rule runs
    /// again over the whole configuration, so an error names the field as
    /// it would in the file (`queues[1].hours.mon`, `org.blacklist[0]`).
    pub fn with_organisation(&self, organisation: Organisation) -> Result<Settings, ConfigError> {
        let mut config = self.source.clone();
        config.set_organisation(organisation);
        config.check(self.base_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn toml_round_trip_keeps_every_field() {
        let config = parse(TWO_QUEUES).expect("two queues");
        let organisation = config.organisation();
        let text = organisation.to_toml();
        let back = Organisation::from_toml(&text).expect("exported TOML parses");
        assert_eq!(back, organisation, "exported:\n{text}");
    }

    #[test]
    fn exported_sections_are_a_valid_configuration_file() {
        let config = parse(TWO_QUEUES).expect("two queues");
        let text = config.organisation().to_toml();
        let again = Config::from_toml_str(&text, "export").expect("export is a config file");
        assert_eq!(again.organisation(), config.organisation(), "{text}");
    }

    #[test]
    fn with_organisation_checks_every_rule_and_names_the_field() {
        let settings = checked(parse(TWO_QUEUES).expect("two queues"));
        let mut organisation = settings.organisation();
        organisation.queues[1]
            .hours
            .get_or_insert_default()
            .insert("mon".into(), "25:00-26:00".into());
        let err = settings
            .with_organisation(organisation)
            .expect_err("bad hours refused");
        assert!(err.to_string().contains("queues[1].hours"), "{err}");

        let mut organisation = settings.organisation();
        organisation.org.blacklist = vec!["911".into(), "411".into()];
        organisation.queues[0].registration_enabled = false;
        let changed = settings
            .with_organisation(organisation.clone())
            .expect("a valid change");
        assert_eq!(changed.organisation(), organisation);
        assert!(!changed.queues()[0].gates.registration_enabled);
        assert!(changed.queues()[1].gates.registration_enabled);
        assert_eq!(changed.org().number_policy.blacklist, ["911", "411"]);
        // The engine's sections are kept.
        assert_eq!(changed.sip(), settings.sip());
    }
}
