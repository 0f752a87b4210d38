//! Configuration: the TOML schema, its defaults and field-level validation.
//!
//! Every key is optional. A missing key takes the built-in default, and the
//! built-in defaults are exactly the values in the shipped `config.toml`
//! (a test holds the two together), so an empty file is a valid configuration:
//! loopback only, SIP on 127.0.0.1:5060, ACL allowing 127.0.0.1/32, callbacks
//! offered around the clock for one queue, `support`.
//! Unknown keys are refused (`deny_unknown_fields` on every table) so that a
//! typo cannot silently fall back to a default.
//!
//! Loading happens in three steps, each of which names the file, the field
//! and the reason on failure:
//!
//! 1. TOML syntax and schema (types, unknown keys, enum values, CIDRs, host
//!    names) — [`ConfigError::Syntax`], with line and column;
//! 2. value rules (ranges, orderings, duplicates, cross-field limits,
//!    business hours and time zone) — [`ConfigError::Invalid`] with the
//!    dotted field path (`org.hours.mon`, `queues[1].dids[0]`), no IO;
//! 3. prompt files exist — [`Config::validate_prompts`], the only step that
//!    touches the file system besides reading the file itself.
//!
//! [`Config::load`] runs all three; [`Config::from_toml_str`] runs 1 and 2.
//! Both return the raw, serde-shaped [`Config`], which tests and
//! `check-config` may still change. [`Config::check`] runs 2 and 3 again and
//! converts each section once into [`Settings`] (durations, addresses,
//! business hours, phone numbers, trunk and agent URIs parsed): the only
//! thing the engine and the controller accept.

mod acl;
mod admin;
mod agents;
mod callbacks;
mod edge;
mod error;
mod ivr;
mod org;
mod organisation;
mod queues;
mod rtp;
mod rules;
mod settings;
mod sip;
#[cfg(test)]
mod test_support;
mod trunk;
mod webhooks;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use acl::AclConfig;
pub use admin::{ApiConfig, LogConfig, LogLevel};
pub use agents::{AgentConfig, AgentUri, AgentUriError, RegistrarConfig};
pub use callbacks::{CallbacksConfig, StoreConfig};
pub use edge::{Capacity, EdgeConfig, RESERVED_FDS};
pub use error::{ConfigError, Invalid, Location};
pub use ivr::{EcbtConfig, IvrConfig};
pub use org::OrgConfig;
pub use organisation::Organisation;
pub use queues::QueueConfig;
pub use rtp::{CallConfig, Codec, MediaConfig, PromptsConfig, RtpConfig};
pub use rules::MissedCallRuleConfig;
pub use settings::{
    AgentSettings, CallerIdRefused, OrgSettings, QueueSettings, RegistrarSetup, Routes, Settings,
};
pub use sip::{Host, InvalidHost, SipConfig, Transport};
pub use trunk::{TrunkConfig, TrunkTransportSetting};
pub use webhooks::WebhooksConfig;

use error::syntax_error;

/// Every prompt the call flows play (one list, owned by the prompt module);
/// the file for `name` is `<prompts.dir>/<name>.wav` unless
/// `[prompts.files]` overrides it. Start-up fails when one is missing.
pub use crate::media::prompt::STANDARD_PROMPTS as PROMPT_NAMES;

/// The whole configuration file.
///
/// Equality compares the settings only, not where they were read from, so
/// `Config::default() == Config::from_toml_str("", "x")?`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[sip]`: signalling listener and protocol timers.
    pub sip: SipConfig,
    /// `[rtp]`: media addresses and port range.
    pub rtp: RtpConfig,
    /// `[media]`: codecs and packetization.
    pub media: MediaConfig,
    /// `[prompts]`: where the prompt WAV files are.
    pub prompts: PromptsConfig,
    /// `[acl]`: who may send SIP and RTP.
    pub acl: AclConfig,
    /// `[edge]`: TCP and rate caps, overload control, brute-force
    /// protection.
    pub edge: EdgeConfig,
    /// `[call]`: per-call and global call limits.
    pub call: CallConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[api]`: the admin HTTP API.
    pub api: ApiConfig,
    /// `[store]`: where the callback requests are kept.
    pub store: StoreConfig,
    /// `[org]`: organisation-wide callback policy and business hours.
    pub org: OrgConfig,
    /// `[ivr]`: caller-side timeouts and retries.
    pub ivr: IvrConfig,
    /// `[ecbt]`: how the estimated callback time is computed.
    pub ecbt: EcbtConfig,
    /// `[trunk]`: the carrier trunk callbacks are dialled through.
    pub trunk: TrunkConfig,
    /// `[callbacks]`: how many callbacks run at once, how often due ones
    /// are looked up.
    pub callbacks: CallbacksConfig,
    /// `[registrar]`: REGISTER handling for agents' phones.
    pub registrar: RegistrarConfig,
    /// `[webhooks]`: how webhook deliveries are timed and retried.
    pub webhooks: WebhooksConfig,
    /// `[[queues]]`: the queues callers wait in (at least one).
    pub queues: Vec<QueueConfig>,
    /// `[[agents]]`: who takes the calls (none shipped).
    pub agents: Vec<AgentConfig>,
    /// `[[missed_call_rules]]`: missed calls called back automatically
    /// (none shipped).
    pub missed_call_rules: Vec<MissedCallRuleConfig>,
    /// Name used in error messages (the file path, or a label).
    #[serde(skip)]
    origin: String,
    /// Set by [`Config::bind_ephemeral_sip_port`]: `sip.bind` may be port 0.
    #[serde(skip)]
    ephemeral_sip_port: bool,
}

impl Config {
    /// Reads, parses and fully validates the file at `path`, including that
    /// every prompt file exists; relative prompt paths are resolved against
    /// the directory containing `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::from_toml_str(&text, &path.display().to_string())?;
        config.validate_prompts(path.parent().unwrap_or(Path::new("")))?;
        Ok(config)
    }

    /// Parses TOML text and checks every value rule (steps 1 and 2 of the
    /// module documentation; no IO). `origin` names the text in errors,
    /// normally the file path.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| syntax_error(text, origin, &e))?;
        config.origin = origin.to_owned();
        config.check_values()?;
        Ok(config)
    }

    /// Checks every value rule and that every prompt file exists under
    /// `base_dir` (the directory relative paths are resolved against). For
    /// configurations built or modified in code.
    pub fn validate(&self, base_dir: &Path) -> Result<(), ConfigError> {
        self.check_values()?;
        self.validate_prompts(base_dir)
    }

    /// Checks that the file of every name in [`PROMPT_NAMES`] exists, as
    /// resolved by [`PromptsConfig::file_path`]. The error names the first
    /// missing file and how many more are missing.
    pub fn validate_prompts(&self, base_dir: &Path) -> Result<(), ConfigError> {
        let mut missing = self
            .prompt_files(base_dir)
            .into_iter()
            .map(|(_, path)| path)
            .filter(|path| !path.is_file());
        let Some(first) = missing.next() else {
            return Ok(());
        };
        let more = missing.count();
        Err(self.invalid("prompts", Invalid::MissingPromptFile { path: first, more }))
    }

    /// Where the SQLite file is: `store.path` resolved against `base_dir`
    /// (the configuration file's directory; an absolute path stays as is).
    pub fn store_path(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(&self.store.path)
    }

    /// How many calls fit under an open-files limit of `open_files` (see
    /// [`Capacity`]).
    pub fn capacity(&self, open_files: u64) -> Capacity {
        Capacity::new(
            open_files,
            &self.edge,
            &self.rtp,
            &self.call,
            &self.callbacks,
        )
    }

    /// Refuses `call.max_calls` when the open-files limit `open_files`
    /// cannot hold it with the callback legs (see [`Capacity::check`]).
    pub fn check_capacity(&self, open_files: u64) -> Result<Capacity, ConfigError> {
        let capacity = self.capacity(open_files);
        capacity
            .check()
            .map_err(|(field, reason)| self.invalid(&field, reason))?;
        Ok(capacity)
    }

    /// The name errors use for this configuration: the file path given to
    /// [`Config::load`], the origin given to [`Config::from_toml_str`], or
    /// `<built-in defaults>`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Step 2: value rules, in file order; the first failure is returned.
    fn check_values(&self) -> Result<(), ConfigError> {
        self.check_sections()
            .map_err(|(field, reason)| self.invalid(&field, reason))
    }

    /// The section rules in file order; each section checks its own keys,
    /// given the sections it is bounded by.
    fn check_sections(&self) -> Result<(), Fault> {
        self.check_bind_port()?;
        self.sip.check()?;
        self.rtp.check()?;
        self.media.check()?;
        self.prompts.check()?;
        self.edge.check()?;
        self.api.check(&self.sip)?;
        self.store.check()?;
        self.org.check()?;
        self.ivr.check()?;
        self.ecbt.check()?;
        self.trunk.check()?;
        self.callbacks.check()?;
        self.call
            .check(&self.rtp, self.callbacks.max_lines.saturating_mul(2))?;
        self.registrar.check()?;
        self.webhooks.check()?;
        queues::check_queues(&self.queues, &self.org)?;
        agents::check_agents(&self.agents, &self.queues, &self.org)?;
        rules::check_rules(&self.missed_call_rules, &self.queues, &self.org)
    }

    /// Every prompt the engine loads: the standard ones, then those the
    /// missed-call rules name that are not standard (each once), with
    /// their files as [`PromptsConfig::file_path`] resolves them.
    pub fn prompt_files(&self, base_dir: &Path) -> Vec<(String, PathBuf)> {
        let mut names: Vec<String> = PROMPT_NAMES.iter().map(|n| (*n).to_owned()).collect();
        for rule in &self.missed_call_rules {
            for name in rule.prompt_names() {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
        }
        names
            .into_iter()
            .map(|name| {
                let path = self.prompts.file_path(base_dir, &name);
                (name, path)
            })
            .collect()
    }

    fn invalid(&self, field: &str, reason: Invalid) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            field: field.to_owned(),
            reason,
        }
    }
}

/// The built-in defaults: the values of the shipped `config.toml`.
impl Default for Config {
    fn default() -> Config {
        Config {
            sip: SipConfig::default(),
            rtp: RtpConfig::default(),
            media: MediaConfig::default(),
            prompts: PromptsConfig::default(),
            acl: AclConfig::default(),
            edge: EdgeConfig::default(),
            call: CallConfig::default(),
            log: LogConfig::default(),
            api: ApiConfig::default(),
            store: StoreConfig::default(),
            org: OrgConfig::default(),
            ivr: IvrConfig::default(),
            ecbt: EcbtConfig::default(),
            trunk: TrunkConfig::default(),
            callbacks: CallbacksConfig::default(),
            registrar: RegistrarConfig::default(),
            webhooks: WebhooksConfig::default(),
            queues: vec![QueueConfig::default()],
            missed_call_rules: Vec::new(),
            agents: Vec::new(),
            origin: DEFAULTS_ORIGIN.to_owned(),
            ephemeral_sip_port: false,
        }
    }
}

/// Compares the settings; [`Config::origin`] is deliberately left out.
impl PartialEq for Config {
    fn eq(&self, other: &Config) -> bool {
        let Config {
            sip,
            rtp,
            media,
            prompts,
            acl,
            edge,
            call,
            log,
            api,
            store,
            org,
            ivr,
            ecbt,
            trunk,
            callbacks,
            registrar,
            webhooks,
            queues,
            agents,
            missed_call_rules,
            origin: _,
            ephemeral_sip_port: _,
        } = self;
        *sip == other.sip
            && *rtp == other.rtp
            && *media == other.media
            && *prompts == other.prompts
            && *acl == other.acl
            && *edge == other.edge
            && *call == other.call
            && *log == other.log
            && *api == other.api
            && *store == other.store
            && *org == other.org
            && *ivr == other.ivr
            && *ecbt == other.ecbt
            && *trunk == other.trunk
            && *callbacks == other.callbacks
            && *registrar == other.registrar
            && *webhooks == other.webhooks
            && *queues == other.queues
            && *agents == other.agents
            && *missed_call_rules == other.missed_call_rules
    }
}

/// Origin of [`Config::default`].
const DEFAULTS_ORIGIN: &str = "<built-in defaults>";

/// A broken rule: the dotted path of the field and the rule it breaks.
/// [`Config::invalid`] adds the origin.
type Fault = (String, Invalid);

/// Refuses `field` for `reason`.
fn fail(field: &str, reason: Invalid) -> Result<(), Fault> {
    Err((field.to_owned(), reason))
}

/// Refuses `field` unless `value` is in `range`.
fn in_range(field: &str, value: u64, range: RangeInclusive<u64>) -> Result<(), Fault> {
    if range.contains(&value) {
        return Ok(());
    }
    let (min, max) = range.into_inner();
    fail(field, Invalid::OutOfRange { value, min, max })
}

/// One or more ASCII digits.
fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// 1..=64 of `A-Z a-z 0-9 - _ .`: no spaces or commas, so an id can be put
/// in a list, a log line or a command line as it is.
fn is_queue_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn first_duplicate<T: PartialEq>(items: &[T]) -> Option<&T> {
    items
        .iter()
        .enumerate()
        .find(|(i, item)| items[..*i].contains(item))
        .map(|(_, item)| item)
}

/// 1..=256 characters of printable ASCII (space through `~`): nothing that
/// could end or fold a header line.
fn is_header_text(text: &str) -> bool {
    (1..=256).contains(&text.len()) && text.bytes().all(|b| (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use super::error::{locate, table_header};
    use super::*;
    use crate::acl::AclAction;
    use crate::callback::hours::Gates;
    use crate::callback::scheduler::RetryPolicy;
    use crate::config::test_support::*;
    use crate::ivr::ecbt::EcbtSettings;

    #[test]
    fn shipped_config_parses_and_equals_defaults() {
        let shipped = parse(SHIPPED).expect("shipped config.toml");
        assert_eq!(shipped, Config::default());
        assert_eq!(shipped.origin(), "config.toml");
    }

    #[test]
    fn shipped_config_validates_with_prompts_present() {
        let dir = TempDir::with_prompts(&[]);
        let shipped = parse(SHIPPED).expect("shipped config.toml");
        shipped.validate(&dir.0).expect("all prompts exist");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let empty = parse("").expect("empty file");
        assert_eq!(empty, Config::default());
        let sections_only =
            parse("[sip]\n[rtp]\n[media]\n[prompts]\n[prompts.files]\n[acl]\n[edge]\n[call]\n[log]\n[store]\n[org]\n[org.rates]\n[ivr]\n[ecbt]\n[callbacks]\n[registrar]\n")
                .expect("empty tables");
        assert_eq!(sections_only, Config::default());
        let support = parse("[[queues]]\nid = \"support\"\n").expect("one bare queue");
        assert_eq!(
            support,
            Config::default(),
            "queue keys default as documented"
        );
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let c = Config::default();
        assert_eq!(c.sip.bind, "127.0.0.1:5060".parse().expect("addr"));
        assert_eq!(
            c.sip.advertised_host(),
            Host::Ip("127.0.0.1".parse().expect("ip"))
        );
        assert_eq!(c.sip.advertised_port(), 5060);
        assert!(c.sip.serves(Transport::Udp) && c.sip.serves(Transport::Tcp));
        assert_eq!(c.sip.max_message_size, 65_535);
        assert_eq!(
            (c.sip.t1(), c.sip.t2(), c.sip.t4()),
            (
                Duration::from_millis(500),
                Duration::from_millis(4000),
                Duration::from_millis(5000),
            )
        );
        assert_eq!(
            (c.sip.session_expires_s, c.sip.min_se_s, c.sip.max_forwards),
            (1800, 90, 70)
        );
        assert_eq!(c.rtp.advertised_ip(), c.rtp.bind_ip);
        assert_eq!(c.rtp.ports(), 20_000..=20_999);
        assert_eq!(c.rtp.port_pairs(), 500);
        assert_eq!(c.rtp.rtp_timeout(), Duration::from_secs(60));
        assert_eq!(c.media.codecs, [Codec::Pcmu, Codec::Pcma]);
        assert_eq!(c.media.ptime(), Duration::from_millis(20));
        assert_eq!(c.prompts.dir, Path::new("prompts"));
        assert_eq!(c.acl.action, AclAction::Reject);
        assert_eq!(c.call.max_duration(), Duration::from_secs(14_400));
        assert_eq!(c.log.level, LogLevel::Info);
        assert_eq!(c.origin(), "<built-in defaults>");
        assert_eq!(c.store.path, Path::new("callbackd.sqlite"));
        assert_eq!(c.org.timezone, "America/Chicago");
        assert_eq!(
            c.org.gates(),
            Gates {
                registration_enabled: true,
                launch_enabled: true
            }
        );
        assert!(c.org.holidays.is_empty() && c.org.blacklist.is_empty());
        assert!(!c.org.allow_international && c.org.spoken_international_prefix);
        assert_eq!(c.org.max_rate_per_minute, 0.10);
        assert!(c.org.rates.is_empty());
        assert_eq!(
            (
                c.ivr.first_digit_timeout(),
                c.ivr.inter_digit_timeout(),
                c.ivr.max_invalid,
                c.ivr.announce_interval()
            ),
            (
                Duration::from_secs(10),
                Duration::from_secs(5),
                3,
                Duration::from_secs(60)
            )
        );
        assert_eq!(
            c.ecbt.settings(),
            EcbtSettings {
                aht_seed: Duration::from_secs(300),
                window: 20,
                floor_minutes: 1,
                ceiling_minutes: 60,
            }
        );
        let [q] = c.queues.as_slice() else {
            panic!("one default queue: {:?}", c.queues);
        };
        assert_eq!(q.id.as_str(), "support");
        assert_eq!((q.priority, q.staffed_agents), (0, 1));
        assert_eq!(q.offer_after(), Duration::ZERO);
        assert_eq!(q.callback_expiry(), Duration::from_secs(24 * 3600));
        assert!(q.dids.is_empty());
        assert_eq!(q.hours(&c.org).expect("no override"), None);
    }

    #[test]
    fn reads_every_field() {
        let c = parse(
            r#"
            [sip]
            bind = "0.0.0.0:5080"
            advertised_host = "sip.example.com"
            advertised_port = 5070
            transports = ["tcp"]
            max_message_size = 1500
            t1_ms = 250
            t2_ms = 250
            t4_ms = 2500
            user_agent = "acme-ivr/2"
            session_expires_s = 600
            min_se_s = 120
            max_forwards = 20
            tcp_idle_timeout_s = 30
            [rtp]
            bind_ip = "::"
            advertised_ip = "2001:db8::5"
            port_min = 30000
            port_max = 30005
            rtp_timeout_s = 5
            [media]
            codecs = ["PCMA"]
            ptime_ms = 30
            [prompts]
            dir = "/srv/prompts"
            files = { welcome = "hello.wav" }
            [acl]
            sip = ["198.51.100.0/24", "2001:db8::1"]
            rtp = []
            action = "drop"
            [call]
            max_duration_s = 60
            max_calls = 1
            [callbacks]
            max_lines = 1
            [log]
            level = "trace"
            "#,
        )
        .expect("full config");
        assert_eq!(
            c.sip.advertised_host(),
            Host::Name("sip.example.com".into())
        );
        assert_eq!(c.sip.advertised_port(), 5070);
        assert!(!c.sip.serves(Transport::Udp));
        assert_eq!(c.sip.t4(), Duration::from_millis(2500));
        assert_eq!(
            c.rtp.advertised_ip(),
            "2001:db8::5".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            c.rtp.port_pairs(),
            3,
            "one for the call, two for the line's legs"
        );
        assert_eq!(c.media.codecs, [Codec::Pcma]);
        assert_eq!(
            c.prompts.file_path(Path::new("/etc"), "welcome"),
            Path::new("/srv/prompts/hello.wav")
        );
        assert_eq!(
            c.prompts.file_path(Path::new("/etc"), "goodbye"),
            Path::new("/srv/prompts/goodbye.wav")
        );
        assert_eq!(c.acl.sip[1].prefix_len(), 128);
        assert!(c.acl.rtp_acl().is_empty());
        assert_eq!(c.acl.action, AclAction::Drop);
        assert_eq!(tracing::Level::from(c.log.level), tracing::Level::TRACE);
    }

    #[test]
    fn rejects_unknown_key() {
        let e = error("[sip]\nbind = \"127.0.0.1:5060\"\nbnd = \"127.0.0.1:5060\"\n");
        assert!(
            e.starts_with("config.toml:3:1: in [sip]: unknown field `bnd`, expected one of"),
            "{e}"
        );
        assert!(e.contains("`bind`"), "{e}");
    }

    #[test]
    fn rejects_unknown_table() {
        let e = error("[sip]\n[sipp]\nbind = 1\n");
        assert!(
            e.starts_with("config.toml:2:2: unknown field `sipp`"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_nested_key() {
        let e = error("[prompts]\nfiles = {}\ndirr = \"x\"\n");
        assert!(
            e.starts_with("config.toml:3:1: in [prompts]: unknown field `dirr`"),
            "{e}"
        );
    }

    #[test]
    fn rejects_toml_syntax_error() {
        let e = error("[sip\nbind = 1\n");
        assert!(e.starts_with("config.toml:1:"), "{e}");
    }

    #[test]
    fn rejects_wrong_type_with_position() {
        let e = error("[rtp]\nport_min = \"20000\"\n");
        assert!(
            e.starts_with("config.toml:2:12: in [rtp]: invalid type: string"),
            "{e}"
        );
        let e = error("[sip]\nbind = \"localhost:5060\"\n");
        assert!(
            e.starts_with("config.toml:2:8: in [sip]: invalid socket address"),
            "{e}"
        );
    }

    #[test]
    fn load_resolves_prompts_next_to_the_file() {
        let dir = TempDir::with_prompts(&[]);
        let path = dir.0.join("callbackd.toml");
        std::fs::write(&path, "[call]\nmax_calls = 10\n").expect("write config");
        let c = Config::load(&path).expect("load");
        assert_eq!(c.call.max_calls, 10);
        assert_eq!(c.origin(), path.display().to_string());
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = TempDir::new();
        let path = dir.0.join("callbackd.toml");
        let e = Config::load(&path).expect_err("no file").to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, "[rtp]\nport_min = 20001\n").expect("write config");
        let e = Config::load(&path).expect_err("odd port").to_string();
        assert!(
            e.starts_with(&format!("{}: rtp.port_min: 20001 is odd", path.display())),
            "{e}"
        );
        std::fs::write(&path, "").expect("write config");
        let e = Config::load(&path).expect_err("no prompts").to_string();
        assert!(
            e.starts_with(&format!("{}: prompts: missing prompt file", path.display())),
            "{e}"
        );
    }

    #[test]
    fn locate_counts_lines_columns_and_tables() {
        let text = "a = 1\n[sip]\n# [not]\nsip = [\n  [1],\n]\nx = 2\n";
        let at = text.find("x =").expect("x");
        let loc = locate(text, at).expect("in range");
        assert_eq!(
            (loc.line, loc.column, loc.table.as_deref()),
            (7, 1, Some("sip"))
        );
        assert_eq!(locate(text, 2).expect("start").table, None);
        assert_eq!(locate(text, text.len() + 1), None);
        assert_eq!(table_header("[[ a.b ]] # c"), Some("a.b".into()));
        assert_eq!(table_header("[\"quoted\"]"), None);
    }

    #[test]
    fn issue4_defaults_are_the_documented_values() {
        let c = Config::default();
        assert_eq!(c.callbacks.max_lines, 15, "issue 4: shipped default 15");
        assert_eq!(c.callbacks.poll_interval(), Duration::from_secs(1));
        let r = c.registrar.settings();
        assert_eq!(r.realm, "callbackd");
        assert_eq!(
            (r.min_expires, r.max_expires, r.default_expires),
            (60, 3600, 3600)
        );
        let q = &c.queues[0];
        assert_eq!(
            q.retry_policy(),
            RetryPolicy {
                retry_time: Duration::from_secs(300),
                max_retries: 3,
                failover: None,
                agent_ring_timeout: Duration::from_secs(20),
                customer_ring_timeout: Duration::from_secs(30),
            }
        );
        assert_eq!(q.agent_cooldown(), Duration::from_secs(60));
        assert!(c.agents.is_empty());
        assert!(c.registrar_users().is_empty(), "no registrar as shipped");
        let t0 = Instant::now();
        let roster = checked(c.clone()).roster(t0);
        assert_eq!((roster.iter().count(), roster.max_lines()), (0, 15));
    }
}
