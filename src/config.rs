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

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::acd::agents::{Agent, AgentError, AgentId, Agents, Contact};
use crate::acl::{self, Acl, AclAction};
use crate::callback::QueueId;
use crate::callback::hours::{BusinessHours, Gates, HoursError};
use crate::callback::number::{self, InvalidNumber, NumberPolicy, PhoneNumber};
use crate::callback::scheduler::{QueueSchedule, RetryPolicy};
use crate::callback::trunk::{
    CpsLimiter, Credentials, NumberFormat, Password, Termination, TrunkError, TrunkSettings,
    TrunkTransport,
};
use crate::ivr::ecbt::{EcbtSettings, EcbtSettingsError, Estimator};
use crate::sip::digest::{Algorithm, Secret};
use crate::sip::message::SipUri;
use crate::sip::registrar::RegistrarSettings;

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
    /// `[[queues]]`: the queues callers wait in (at least one).
    pub queues: Vec<QueueConfig>,
    /// `[[agents]]`: who takes the calls (none shipped).
    pub agents: Vec<AgentConfig>,
    /// Name used in error messages (the file path, or a label).
    #[serde(skip)]
    origin: String,
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
        let mut missing = PROMPT_NAMES
            .iter()
            .map(|name| self.prompts.file_path(base_dir, name))
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

    /// The queue a call to `called_user` (the Request-URI or To user part)
    /// goes to: the queue listing it in `dids`, else the first queue. A
    /// leading `+` is ignored; otherwise the digits must match exactly.
    ///
    /// # Panics
    ///
    /// If `queues` is empty, which [`Config::from_toml_str`] and
    /// [`Config::validate`] refuse.
    pub fn queue_for(&self, called_user: &str) -> &QueueConfig {
        let digits = called_user.strip_prefix('+').unwrap_or(called_user);
        self.queues
            .iter()
            .find(|q| q.dids.iter().any(|did| did == digits))
            .or_else(|| self.queues.first())
            .expect("validation requires at least one queue")
    }

    /// The name errors use for this configuration: the file path given to
    /// [`Config::load`], the origin given to [`Config::from_toml_str`], or
    /// `<built-in defaults>`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Step 2: value rules, in file order; the first failure is returned.
    fn check_values(&self) -> Result<(), ConfigError> {
        let fail = |field: &str, reason: Invalid| Err(self.invalid(field, reason));
        let in_range = |field: &str, value: u64, range: RangeInclusive<u64>| {
            if range.contains(&value) {
                return Ok(());
            }
            let (min, max) = range.into_inner();
            fail(field, Invalid::OutOfRange { value, min, max })
        };
        let sip = &self.sip;
        if sip.bind.port() == 0 {
            return fail("sip.bind", Invalid::PortZero);
        }
        match &sip.advertised_host {
            None if sip.bind.ip().is_unspecified() => {
                return fail(
                    "sip.advertised_host",
                    Invalid::WildcardNeedsAdvertised {
                        bound_field: "sip.bind",
                        ip: sip.bind.ip(),
                    },
                );
            }
            Some(Host::Ip(ip)) if ip.is_unspecified() => {
                return fail("sip.advertised_host", Invalid::Unspecified { ip: *ip });
            }
            None | Some(Host::Ip(_)) | Some(Host::Name(_)) => {}
        }
        if sip.advertised_port == Some(0) {
            return fail("sip.advertised_port", Invalid::PortZero);
        }
        if sip.transports.is_empty() {
            return fail("sip.transports", Invalid::Empty);
        }
        if let Some(dup) = first_duplicate(&sip.transports) {
            return fail("sip.transports", Invalid::duplicate(dup.as_str()));
        }
        in_range(
            "sip.max_message_size",
            u64::try_from(sip.max_message_size).unwrap_or(u64::MAX),
            1500..=1_048_576,
        )?;
        in_range("sip.t1_ms", sip.t1_ms, 1..=60_000)?;
        in_range("sip.t2_ms", sip.t2_ms, 1..=60_000)?;
        if sip.t1_ms > sip.t2_ms {
            // RFC 3261 §17.1.2.2: T2 caps the doubling interval that starts at T1.
            return fail(
                "sip.t1_ms",
                Invalid::exceeds(sip.t1_ms, "sip.t2_ms", sip.t2_ms),
            );
        }
        in_range("sip.t4_ms", sip.t4_ms, 1..=60_000)?;
        if !is_header_text(&sip.user_agent) {
            return fail("sip.user_agent", Invalid::NotHeaderText);
        }
        if sip.min_se_s < MIN_SE_FLOOR_S {
            // RFC 4028 §5: the Min-SE value MUST NOT be less than 90 seconds.
            return fail(
                "sip.min_se_s",
                Invalid::BelowRfcMinimum {
                    value: sip.min_se_s.into(),
                    min: MIN_SE_FLOOR_S.into(),
                    rule: "RFC 4028 §5",
                },
            );
        }
        if sip.min_se_s > sip.session_expires_s {
            return fail(
                "sip.min_se_s",
                Invalid::exceeds(sip.min_se_s, "sip.session_expires_s", sip.session_expires_s),
            );
        }
        in_range("sip.max_forwards", sip.max_forwards.into(), 1..=255)?;
        in_range("sip.tcp_idle_timeout_s", sip.tcp_idle_timeout_s, 1..=86_400)?;

        let rtp = &self.rtp;
        match rtp.advertised_ip {
            None if rtp.bind_ip.is_unspecified() => {
                return fail(
                    "rtp.advertised_ip",
                    Invalid::WildcardNeedsAdvertised {
                        bound_field: "rtp.bind_ip",
                        ip: rtp.bind_ip,
                    },
                );
            }
            Some(ip) if ip.is_unspecified() => {
                return fail("rtp.advertised_ip", Invalid::Unspecified { ip });
            }
            None | Some(_) => {}
        }
        in_range("rtp.port_min", u64::from(rtp.port_min), 1024..=65_535)?;
        in_range("rtp.port_max", u64::from(rtp.port_max), 1024..=65_535)?;
        if !rtp.port_min.is_multiple_of(2) {
            // RFC 3550 §11: RTP on an even port, RTCP on the next (odd) one.
            return fail(
                "rtp.port_min",
                Invalid::OddPort {
                    value: rtp.port_min,
                },
            );
        }
        if rtp.port_min > rtp.port_max {
            return fail(
                "rtp.port_min",
                Invalid::exceeds(rtp.port_min, "rtp.port_max", rtp.port_max),
            );
        }
        if rtp.port_min == rtp.port_max {
            return fail("rtp.port_max", Invalid::SinglePort { port: rtp.port_max });
        }
        in_range("rtp.rtp_timeout_s", rtp.rtp_timeout_s, 1..=3600)?;

        let media = &self.media;
        if media.codecs.is_empty() {
            return fail("media.codecs", Invalid::Empty);
        }
        if let Some(dup) = first_duplicate(&media.codecs) {
            return fail("media.codecs", Invalid::duplicate(dup.encoding_name()));
        }
        in_range("media.ptime_ms", u64::from(media.ptime_ms), 10..=60)?;
        if !media.ptime_ms.is_multiple_of(10) {
            return fail(
                "media.ptime_ms",
                Invalid::NotMultiple {
                    value: media.ptime_ms.into(),
                    of: 10,
                },
            );
        }

        if self.prompts.dir.as_os_str().is_empty() {
            return fail("prompts.dir", Invalid::EmptyPath);
        }
        for (name, file) in &self.prompts.files {
            let field = format!("prompts.files.{name}");
            if !PROMPT_NAMES.contains(&name.as_str()) {
                return fail(&field, Invalid::UnknownPrompt { name: name.clone() });
            }
            if file.as_os_str().is_empty() {
                return fail(&field, Invalid::EmptyPath);
            }
        }

        if self.call.max_duration_s == 0 {
            return fail("call.max_duration_s", Invalid::Zero);
        }
        if self.call.max_calls == 0 {
            return fail("call.max_calls", Invalid::Zero);
        }
        let pairs = rtp.port_pairs();
        if self.call.max_calls > u32::from(pairs) {
            return fail(
                "call.max_calls",
                Invalid::NotEnoughPorts {
                    calls: self.call.max_calls,
                    pairs,
                },
            );
        }

        let api = &self.api;
        if api.bind.port() == 0 {
            return fail("api.bind", Invalid::PortZero);
        }
        if sip.serves(Transport::Tcp) && same_listener(api.bind, sip.bind) {
            return fail(
                "api.bind",
                Invalid::SipTcpListener {
                    addr: api.bind,
                    sip: sip.bind,
                },
            );
        }

        if self.store.path.as_os_str().is_empty() {
            return fail("store.path", Invalid::EmptyPath);
        }

        let org = &self.org;
        // Time zone, holidays and weekly hours in one go; the error is
        // placed on the key it came from.
        if let Err(e) = org.business_hours() {
            let (field, reason) = hours_invalid(org, "org.hours", e);
            return fail(&field, reason);
        }
        if let Some(reason) = bad_rate(org.max_rate_per_minute) {
            return fail("org.max_rate_per_minute", reason);
        }
        for (i, entry) in org.blacklist.iter().enumerate() {
            if !is_digits(entry) {
                return fail(&format!("org.blacklist[{i}]"), Invalid::not_digits(entry));
            }
        }
        for (prefix, rate) in &org.rates {
            let field = format!("org.rates.{prefix}");
            if !is_digits(prefix) {
                return fail(&field, Invalid::not_digits(prefix));
            }
            if let Some(reason) = bad_rate(*rate) {
                return fail(&field, reason);
            }
        }

        let ivr = &self.ivr;
        in_range(
            "ivr.first_digit_timeout_s",
            ivr.first_digit_timeout_s,
            1..=120,
        )?;
        in_range(
            "ivr.inter_digit_timeout_s",
            ivr.inter_digit_timeout_s,
            1..=120,
        )?;
        in_range("ivr.max_invalid", ivr.max_invalid.into(), 1..=10)?;
        in_range(
            "ivr.announce_interval_s",
            ivr.announce_interval_s,
            10..=3600,
        )?;

        let ecbt = &self.ecbt;
        in_range("ecbt.aht_s", ecbt.aht_s, 1..=86_400)?;
        // The estimator's own rules first, so config and estimator agree.
        match Estimator::new(ecbt.settings()) {
            Ok(_) => {}
            Err(EcbtSettingsError::ZeroWindow) => return fail("ecbt.window", Invalid::Zero),
            Err(EcbtSettingsError::FloorAboveCeiling { floor, ceiling }) => {
                return fail(
                    "ecbt.floor_minutes",
                    Invalid::exceeds(floor, "ecbt.ceiling_minutes", ceiling),
                );
            }
        }
        in_range(
            "ecbt.window",
            u64::try_from(ecbt.window).unwrap_or(u64::MAX),
            1..=MAX_ECBT_WINDOW,
        )?;
        if ecbt.ceiling_minutes == 0 {
            return fail("ecbt.ceiling_minutes", Invalid::Zero);
        }
        if ecbt.ceiling_minutes > MAX_SPOKEN_NUMBER {
            return fail(
                "ecbt.ceiling_minutes",
                Invalid::NotSpeakable {
                    value: ecbt.ceiling_minutes,
                    max: MAX_SPOKEN_NUMBER,
                },
            );
        }

        let trunk = &self.trunk;
        if let Err(e) = Termination::parse(&trunk.termination) {
            return fail("trunk.termination", Invalid::Trunk(e));
        }
        if trunk.user_phone && trunk.number_format == NumberFormat::National {
            return fail("trunk.user_phone", Invalid::UserPhoneNeedsE164);
        }
        if let Err(e) = CpsLimiter::new(trunk.cps_limit, 1) {
            return fail("trunk.cps_limit", Invalid::Trunk(e));
        }
        match (&trunk.username, &trunk.password) {
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
        in_range("trunk.max_targets", trunk.max_targets.into(), 1..=16)?;
        in_range("trunk.holddown_s", trunk.holddown_s, 0..=3600)?;

        let callbacks = &self.callbacks;
        in_range(
            "callbacks.max_lines",
            callbacks.max_lines.into(),
            1..=MAX_LINES,
        )?;
        in_range(
            "callbacks.poll_interval_ms",
            callbacks.poll_interval_ms,
            100..=60_000,
        )?;
        in_range(
            "callbacks.recording_retention_days",
            callbacks.recording_retention_days,
            1..=3650,
        )?;
        if callbacks.recordings_dir.as_os_str().is_empty() {
            return fail("callbacks.recordings_dir", Invalid::EmptyValue);
        }

        let registrar = &self.registrar;
        if !is_header_text(&registrar.realm) || registrar.realm.contains(['"', '\\']) {
            return fail("registrar.realm", Invalid::BadRealm);
        }
        if registrar.digest_algorithms.is_empty() {
            return fail("registrar.digest_algorithms", Invalid::Empty);
        }
        for (i, a) in registrar.digest_algorithms.iter().enumerate() {
            if registrar.digest_algorithms[..i].contains(a) {
                return fail(
                    "registrar.digest_algorithms",
                    Invalid::Duplicate {
                        entry: a.to_string(),
                    },
                );
            }
        }
        let (min, max, default) = (
            registrar.min_expires_s,
            registrar.max_expires_s,
            registrar.default_expires_s,
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

        if self.queues.is_empty() {
            return fail("queues", Invalid::Empty);
        }
        for (i, queue) in self.queues.iter().enumerate() {
            let at = |key: &str| format!("queues[{i}].{key}");
            if !is_queue_id(queue.id.as_str()) {
                return fail(
                    &at("id"),
                    Invalid::BadQueueId {
                        id: queue.id.as_str().to_owned(),
                    },
                );
            }
            if self.queues[..i].iter().any(|q| q.id == queue.id) {
                return fail(&at("id"), Invalid::duplicate(queue.id.as_str()));
            }
            in_range(&at("offer_after_s"), queue.offer_after_s, 0..=3600)?;
            in_range(
                &at("staffed_agents"),
                queue.staffed_agents.into(),
                0..=10_000,
            )?;
            in_range(&at("callback_expiry_h"), queue.callback_expiry_h, 1..=720)?;
            for (j, did) in queue.dids.iter().enumerate() {
                let field = format!("queues[{i}].dids[{j}]");
                if !is_digits(did) {
                    return fail(&field, Invalid::not_digits(did));
                }
                if queue.dids[..j].contains(did) {
                    return fail(&field, Invalid::duplicate(did));
                }
                if let Some(owner) = self.queues[..i].iter().find(|q| q.dids.contains(did)) {
                    return fail(
                        &field,
                        Invalid::DidClaimed {
                            did: did.clone(),
                            queue: owner.id.as_str().to_owned(),
                        },
                    );
                }
            }
            if let Err(e) = queue.hours(org) {
                let (field, reason) = hours_invalid(org, &at("hours"), e);
                return fail(&field, reason);
            }
            if let Err(reason) = queue.caller_id() {
                return fail(
                    &at("callback_number"),
                    Invalid::BadCallbackNumber {
                        value: queue.callback_number.clone(),
                        reason,
                    },
                );
            }
            in_range(&at("retry_time_s"), queue.retry_time_s, 1..=86_400)?;
            in_range(&at("max_retries"), queue.max_retries.into(), 0..=100)?;
            if let Some(failover) = &queue.failover {
                if *failover == queue.id {
                    return fail(&at("failover"), Invalid::FailoverToItself);
                }
                if !self.queues.iter().any(|q| q.id == *failover) {
                    return fail(&at("failover"), Invalid::unknown_queue(failover));
                }
            }
            in_range(
                &at("agent_ring_timeout_s"),
                queue.agent_ring_timeout_s,
                1..=MAX_RING_S,
            )?;
            in_range(
                &at("customer_ring_timeout_s"),
                queue.customer_ring_timeout_s,
                1..=MAX_RING_S,
            )?;
            in_range(&at("agent_cooldown_s"), queue.agent_cooldown_s, 0..=3600)?;
        }

        for (i, agent) in self.agents.iter().enumerate() {
            let at = |key: &str| format!("agents[{i}].{key}");
            if !is_queue_id(agent.id.as_str()) {
                return fail(
                    &at("id"),
                    Invalid::BadAgentId {
                        id: agent.id.as_str().to_owned(),
                    },
                );
            }
            let earlier = &self.agents[..i];
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
                if !self.queues.iter().any(|q| q.id == *queue) {
                    return fail(&field, Invalid::unknown_queue(queue));
                }
            }
        }
        Ok(())
    }

    /// The agent roster of `[[agents]]`, every agent available and idle
    /// since `now`, with `[callbacks] max_lines`. Registered agents start
    /// unreachable until their phone REGISTERs. Cannot fail on a validated
    /// configuration (ids are unique).
    pub fn agents(&self, now: Instant) -> Result<Agents, AgentError> {
        let mut roster = Agents::new(self.callbacks.max_lines);
        for agent in &self.agents {
            roster.add(Agent::new(
                agent.id.clone(),
                agent.contact(&self.sip),
                agent.queues.clone(),
                now,
            ))?;
        }
        Ok(roster)
    }

    /// The registrar's users: the `user` and `password` of every agent that
    /// REGISTERs. Empty when every agent is static: then there is no
    /// registrar, and REGISTER is answered 405 as before.
    pub fn registrar_users(&self) -> Vec<(String, Secret)> {
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
            queues: vec![QueueConfig::default()],
            agents: Vec::new(),
            origin: DEFAULTS_ORIGIN.to_owned(),
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
            queues,
            agents,
            origin: _,
        } = self;
        *sip == other.sip
            && *rtp == other.rtp
            && *media == other.media
            && *prompts == other.prompts
            && *acl == other.acl
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
            && *queues == other.queues
            && *agents == other.agents
    }
}

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

/// `[rtp]`: media addresses and the port range.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtpConfig {
    /// Local IP the RTP/RTCP sockets bind to.
    pub bind_ip: IpAddr,
    /// IP put in the SDP c= line; `None` = `bind_ip`.
    pub advertised_ip: Option<IpAddr>,
    /// First port of the range (even).
    pub port_min: u16,
    /// Last port of the range (inclusive).
    pub port_max: u16,
    /// Hang up after this many seconds without incoming RTP.
    pub rtp_timeout_s: u64,
}

impl RtpConfig {
    /// The IP for the SDP c= line: `advertised_ip`, else `bind_ip`.
    pub fn advertised_ip(&self) -> IpAddr {
        self.advertised_ip.unwrap_or(self.bind_ip)
    }

    /// The configured ports, `port_min..=port_max`.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.port_min..=self.port_max
    }

    /// How many (even RTP, odd RTCP) port pairs fit into the range, i.e. how
    /// many media streams can be open at once. Zero for an invalid range.
    pub fn port_pairs(&self) -> u16 {
        let first = self.port_min.saturating_add(self.port_min % 2);
        if self.port_max <= first {
            return 0;
        }
        (self.port_max - first).div_ceil(2)
    }

    /// The RTP inactivity timeout as a duration.
    pub fn rtp_timeout(&self) -> Duration {
        Duration::from_secs(self.rtp_timeout_s)
    }
}

impl Default for RtpConfig {
    fn default() -> RtpConfig {
        RtpConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertised_ip: None,
            port_min: 20_000,
            port_max: 20_999,
            rtp_timeout_s: 60,
        }
    }
}

/// `[media]`: codecs and packetization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Codecs in order of preference.
    pub codecs: Vec<Codec>,
    /// Packetization time of the audio we send, milliseconds.
    pub ptime_ms: u32,
}

impl MediaConfig {
    /// The packetization time as a duration.
    pub fn ptime(&self) -> Duration {
        Duration::from_millis(self.ptime_ms.into())
    }
}

impl Default for MediaConfig {
    fn default() -> MediaConfig {
        MediaConfig {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            ptime_ms: 20,
        }
    }
}

/// An audio codec callbackd can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0 (RFC 3551 §6).
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law, static payload type 8 (RFC 3551 §6).
    #[serde(rename = "PCMA")]
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551 §6, Table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The SDP encoding name (`a=rtpmap:<pt> <name>/8000`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// `[prompts]`: where the prompt WAV files are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptsConfig {
    /// Prompt directory; relative to the configuration file's directory.
    pub dir: PathBuf,
    /// Per-prompt file overrides, `name -> file` relative to `dir`.
    pub files: BTreeMap<String, PathBuf>,
}

impl PromptsConfig {
    /// Where the file for prompt `name` is: `base_dir/dir/<override or
    /// name.wav>` (an absolute `dir` or override replaces what precedes it).
    pub fn file_path(&self, base_dir: &Path, name: &str) -> PathBuf {
        let dir = base_dir.join(&self.dir);
        match self.files.get(name) {
            Some(file) => dir.join(file),
            None => dir.join(format!("{name}.wav")),
        }
    }
}

impl Default for PromptsConfig {
    fn default() -> PromptsConfig {
        PromptsConfig {
            dir: PathBuf::from("prompts"),
            files: BTreeMap::new(),
        }
    }
}

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

/// `[call]`: call limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallConfig {
    /// Longest call, seconds; the engine sends BYE when it is reached.
    pub max_duration_s: u64,
    /// Most concurrent calls; INVITEs above it are answered 503.
    pub max_calls: u32,
}

impl CallConfig {
    /// The longest call as a duration.
    pub fn max_duration(&self) -> Duration {
        Duration::from_secs(self.max_duration_s)
    }
}

impl Default for CallConfig {
    fn default() -> CallConfig {
        CallConfig {
            max_duration_s: 14_400,
            max_calls: 200,
        }
    }
}

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
/// Prometheus metrics; see [`crate::api`]). It has no authentication: keep
/// it on loopback, or behind a proxy that authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the API at all.
    pub enabled: bool,
    /// Local address of the HTTP listener.
    pub bind: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            enabled: true,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8089)),
        }
    }
}

/// `[store]`: the durable store of callback requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file; relative to the configuration file's directory (see
    /// [`Config::store_path`]).
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            path: PathBuf::from("callbackd.sqlite"),
        }
    }
}

/// `[org]`: the organisation's callback policy, business hours and
/// holidays.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrgConfig {
    /// IANA time zone the hours and holidays are written in.
    pub timezone: String,
    /// Callbacks are offered at all (a runtime switch can override).
    pub registration_enabled: bool,
    /// Registered callbacks are launched; when off, registration still
    /// works but no ECBT is announced.
    pub launch_enabled: bool,
    /// Local dates (`YYYY-MM-DD`) closed all day, for every queue.
    pub holidays: Vec<String>,
    /// Numbers entered with the `011` international prefix may be accepted.
    pub allow_international: bool,
    /// International destinations dearer than this per minute are refused.
    pub max_rate_per_minute: f64,
    /// Numbers or prefixes (digits) never called back.
    pub blacklist: Vec<String>,
    /// Read back "international" before a number entered with `011`.
    pub spoken_international_prefix: bool,
    /// Weekday (`mon`…`sun`) → `HH:MM-HH:MM` or `closed`; a day not listed
    /// is closed. The default is open around the clock.
    pub hours: BTreeMap<String, String>,
    /// International destination prefix (the digits after `011`) → price
    /// per minute.
    pub rates: BTreeMap<String, f64>,
}

impl OrgConfig {
    /// The organisation's business hours: [`OrgConfig::timezone`],
    /// [`OrgConfig::hours`] and [`OrgConfig::holidays`]. Cannot fail on a
    /// configuration that passed [`Config::from_toml_str`] or
    /// [`Config::validate`].
    pub fn business_hours(&self) -> Result<BusinessHours, HoursError> {
        self.business_hours_with(&self.hours)
    }

    /// The configured on/off switches, before any runtime override.
    pub fn gates(&self) -> Gates {
        Gates {
            registration_enabled: self.registration_enabled,
            launch_enabled: self.launch_enabled,
        }
    }

    /// The number rules for [`crate::callback::number::validate`]: one
    /// place applies blacklist and international rates.
    pub fn number_policy(&self) -> crate::callback::number::NumberPolicy {
        crate::callback::number::NumberPolicy {
            allow_international: self.allow_international,
            max_rate_per_minute: self.max_rate_per_minute,
            rates: self.rates.iter().map(|(p, r)| (p.clone(), *r)).collect(),
            blacklist: self.blacklist.clone(),
        }
    }

    /// Business hours from `weekly` in this organisation's zone, with its
    /// holidays.
    fn business_hours_with(
        &self,
        weekly: &BTreeMap<String, String>,
    ) -> Result<BusinessHours, HoursError> {
        let days: Vec<(&str, &str)> = weekly
            .iter()
            .map(|(day, range)| (day.as_str(), range.as_str()))
            .collect();
        let holidays: Vec<&str> = self.holidays.iter().map(String::as_str).collect();
        BusinessHours::parse(&self.timezone, &days, &holidays)
    }
}

impl Default for OrgConfig {
    fn default() -> OrgConfig {
        OrgConfig {
            timezone: "America/Chicago".to_owned(),
            registration_enabled: true,
            launch_enabled: true,
            holidays: Vec::new(),
            allow_international: false,
            max_rate_per_minute: 0.10,
            blacklist: Vec::new(),
            spoken_international_prefix: true,
            // Open around the clock, so a fresh checkout can be tried at
            // any hour.
            hours: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .into_iter()
                .map(|day| (day.to_owned(), "00:00-24:00".to_owned()))
                .collect(),
            rates: BTreeMap::new(),
        }
    }
}

/// `[ivr]`: the caller-side timeouts and retry limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IvrConfig {
    /// Wait for the first digit of an entry, seconds.
    pub first_digit_timeout_s: u64,
    /// Wait between digits of an entry, seconds.
    pub inter_digit_timeout_s: u64,
    /// Invalid entries before the caller is returned to the queue.
    pub max_invalid: u32,
    /// While a caller holds, the ECBT is announced again this often, seconds.
    pub announce_interval_s: u64,
}

impl IvrConfig {
    /// The first-digit timeout as a duration.
    pub fn first_digit_timeout(&self) -> Duration {
        Duration::from_secs(self.first_digit_timeout_s)
    }

    /// The inter-digit timeout as a duration.
    pub fn inter_digit_timeout(&self) -> Duration {
        Duration::from_secs(self.inter_digit_timeout_s)
    }

    /// The ECBT re-announcement interval as a duration.
    pub fn announce_interval(&self) -> Duration {
        Duration::from_secs(self.announce_interval_s)
    }
}

impl Default for IvrConfig {
    fn default() -> IvrConfig {
        IvrConfig {
            first_digit_timeout_s: 10,
            inter_digit_timeout_s: 5,
            max_invalid: 3,
            announce_interval_s: 60,
        }
    }
}

/// `[ecbt]`: the estimated-callback-time estimator (see
/// [`crate::ivr::ecbt`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcbtConfig {
    /// Average handle time assumed before calls have been handled, seconds.
    pub aht_s: u64,
    /// Handle-time samples in the rolling average.
    pub window: usize,
    /// Smallest figure announced, minutes.
    pub floor_minutes: u32,
    /// Above this, "more than N minutes" is announced.
    pub ceiling_minutes: u32,
}

impl EcbtConfig {
    /// The estimator settings ([`Estimator::new`] accepts them once the
    /// configuration is validated).
    pub fn settings(&self) -> EcbtSettings {
        EcbtSettings {
            aht_seed: Duration::from_secs(self.aht_s),
            window: self.window,
            floor_minutes: self.floor_minutes,
            ceiling_minutes: self.ceiling_minutes,
        }
    }
}

impl Default for EcbtConfig {
    fn default() -> EcbtConfig {
        EcbtConfig {
            aht_s: 300,
            window: 20,
            floor_minutes: 1,
            ceiling_minutes: 60,
        }
    }
}

/// One `[[queues]]` entry. `id` is required; every other key has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The queue's name: 1..=64 of `A-Z a-z 0-9 - _ .`, unique.
    #[serde(deserialize_with = "deserialize_queue_id")]
    pub id: QueueId,
    /// Order across queues; higher is served first.
    #[serde(default)]
    pub priority: i32,
    /// Seconds in the queue before the callback offer is made.
    #[serde(default)]
    pub offer_after_s: u64,
    /// Agents the ECBT assumes (until agents are managed).
    #[serde(default = "default_staffed_agents")]
    pub staffed_agents: u32,
    /// A pending callback expires this many hours after registration.
    #[serde(default = "default_callback_expiry_h")]
    pub callback_expiry_h: u64,
    /// Called numbers (Request-URI / To user part, digits) routed here.
    #[serde(default)]
    pub dids: Vec<String>,
    /// Weekly hours replacing [`OrgConfig::hours`] for this queue, same
    /// format; the organisation's time zone and holidays still apply.
    #[serde(default)]
    pub hours: Option<BTreeMap<String, String>>,
    /// The number customers see when called back (From and
    /// P-Asserted-Identity), keyed as a caller would: ten NANP digits, or
    /// `011` and an international number.
    #[serde(default = "default_callback_number")]
    pub callback_number: String,
    /// Seconds between a failed attempt and the next one.
    #[serde(default = "default_retry_time_s")]
    pub retry_time_s: u64,
    /// Retries after the first attempt (a customer is called at most
    /// `max_retries + 1` times in this queue).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Where a callback goes once its retries are exhausted: another
    /// configured queue; `None`: it is failed.
    #[serde(default, deserialize_with = "deserialize_optional_queue_id")]
    pub failover: Option<QueueId>,
    /// Seconds the agent's leg rings before it is cancelled.
    #[serde(default = "default_agent_ring_timeout_s")]
    pub agent_ring_timeout_s: u64,
    /// Seconds the customer's leg rings before it is cancelled (the
    /// queue's wait-for-answer time).
    #[serde(default = "default_customer_ring_timeout_s")]
    pub customer_ring_timeout_s: u64,
    /// Seconds an agent who did not answer is not offered work.
    #[serde(default = "default_agent_cooldown_s")]
    pub agent_cooldown_s: u64,
    /// Record bridged callback calls of this queue (stereo WAV: agent left,
    /// customer right) into `[callbacks] recordings_dir`.
    #[serde(default)]
    pub recording: bool,
    /// Play the "recording_notice" prompt to the customer before recording.
    #[serde(default = "default_true")]
    pub recording_notice: bool,
}

impl QueueConfig {
    /// This queue's own business hours, if it overrides the organisation's:
    /// its weekly hours in `org`'s time zone, closed on `org`'s holidays.
    /// Cannot fail on a validated configuration.
    pub fn hours(&self, org: &OrgConfig) -> Result<Option<BusinessHours>, HoursError> {
        self.hours
            .as_ref()
            .map(|weekly| org.business_hours_with(weekly))
            .transpose()
    }

    /// The wait before the callback offer, as a duration.
    pub fn offer_after(&self) -> Duration {
        Duration::from_secs(self.offer_after_s)
    }

    /// How long a pending callback stays valid, as a duration.
    pub fn callback_expiry(&self) -> Duration {
        Duration::from_secs(self.callback_expiry_h.saturating_mul(3600))
    }

    /// The caller ID of this queue's callbacks: [`QueueConfig::callback_number`]
    /// under the numbering rules of a callback entry. The organisation's
    /// blacklist and international rates do not apply: they guard what
    /// customers may ask for, and this is the organisation's own number.
    /// Cannot fail on a validated configuration.
    pub fn caller_id(&self) -> Result<PhoneNumber, InvalidNumber> {
        let own_number = NumberPolicy {
            allow_international: true,
            max_rate_per_minute: 0.0,
            rates: vec![(String::new(), 0.0)],
            blacklist: Vec::new(),
        };
        number::validate(&self.callback_number, &own_number)
    }

    /// Retries, failover and ring timeouts for the scheduler and dialer.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retry_time: Duration::from_secs(self.retry_time_s),
            max_retries: self.max_retries,
            failover: self.failover.clone(),
            agent_ring_timeout: Duration::from_secs(self.agent_ring_timeout_s),
            customer_ring_timeout: Duration::from_secs(self.customer_ring_timeout_s),
        }
    }

    /// How long an agent who did not answer cools down, as a duration.
    pub fn agent_cooldown(&self) -> Duration {
        Duration::from_secs(self.agent_cooldown_s)
    }

    /// The queue as the scheduler sees it: id, priority, own hours (in
    /// `org`'s zone, with its holidays) and retry policy. Cannot fail on a
    /// validated configuration.
    pub fn schedule(&self, org: &OrgConfig) -> Result<QueueSchedule, HoursError> {
        Ok(QueueSchedule {
            id: self.id.clone(),
            priority: self.priority,
            hours: self.hours(org)?,
            policy: self.retry_policy(),
        })
    }
}

/// The queue an empty file gets: `support`, one agent, offer at once.
impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            id: QueueId("support".into()),
            priority: 0,
            offer_after_s: 0,
            staffed_agents: 1,
            callback_expiry_h: 24,
            dids: Vec::new(),
            hours: None,
            callback_number: DEFAULT_CALLBACK_NUMBER.to_owned(),
            retry_time_s: 300,
            max_retries: 3,
            failover: None,
            agent_ring_timeout_s: 20,
            customer_ring_timeout_s: 30,
            agent_cooldown_s: 60,
            recording: false,
            recording_notice: true,
        }
    }
}

/// `[callbacks]`: the launcher's limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Most callback calls at once (issue 4: shipped 15).
    pub max_lines: u32,
    /// How often due callbacks are looked up, milliseconds.
    pub poll_interval_ms: u64,
    /// Where call recordings go; relative to the configuration's directory.
    pub recordings_dir: PathBuf,
    /// Recordings older than this many days are deleted.
    pub recording_retention_days: u64,
}

impl CallbacksConfig {
    /// The look-up interval as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The recordings directory, resolved against `base_dir`.
    pub fn recordings_dir(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(&self.recordings_dir)
    }

    /// How long recordings are kept.
    pub fn recording_retention(&self) -> Duration {
        Duration::from_secs(self.recording_retention_days.saturating_mul(86_400))
    }
}

impl Default for CallbacksConfig {
    fn default() -> CallbacksConfig {
        CallbacksConfig {
            max_lines: 15,
            poll_interval_ms: 1000,
            recordings_dir: PathBuf::from("recordings"),
            recording_retention_days: 30,
        }
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
            ..RegistrarSettings::default()
        }
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
        }
    }
}

/// One `[[agents]]` entry: a static SIP URI (`uri`, e.g. a PBX extension)
/// or a phone that REGISTERs with callbackd (`user` and `password`), never
/// both.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    #[serde(default)]
    pub password: Option<Password>,
    /// The queues the agent serves (at least one, each configured).
    #[serde(default, deserialize_with = "deserialize_queue_ids")]
    pub queues: Vec<QueueId>,
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
/// SRV; a name without a port is looked up for A/AAAA on 5060).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUri {
    /// The URI as configured: the Request-URI of the agent's INVITE.
    pub uri: String,
    /// Its host.
    pub host: Host,
    /// Its port, 5060 when none is given.
    pub port: u16,
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
            port: uri.port.unwrap_or(5060),
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
    /// Name servers asked for the termination's SRV and A/AAAA records
    /// instead of `/etc/resolv.conf`'s (the hosts file is still read
    /// first); `ip` or `ip:port`, port 53 by default.
    #[serde(deserialize_with = "deserialize_dns_servers")]
    pub dns_servers: Vec<SocketAddr>,
}

impl TrunkConfig {
    /// The settings the dialer uses. Cannot fail on a configuration that
    /// passed [`Config::from_toml_str`] or [`Config::validate`].
    pub fn settings(&self) -> Result<TrunkSettings, TrunkError> {
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

/// Why a configuration was refused. All are local faults (the operator's
/// file), displayed as `origin: where: what`.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The path given to [`Config::load`].
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The text is not TOML or does not fit the schema: bad syntax, unknown
    /// key, wrong type, unknown enum value, malformed address.
    #[error("{origin}{}: {message}", location_prefix(location.as_ref(), message))]
    Syntax {
        /// The file (or label) the text came from.
        origin: String,
        /// Where in the text, when the parser knows.
        location: Option<Location>,
        /// The parser's description.
        message: String,
    },
    /// A well-formed value breaks a rule.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// The file (or label) the configuration came from.
        origin: String,
        /// Dotted path of the field, e.g. `rtp.port_min` or `acl.sip[1]`.
        field: String,
        /// The rule it breaks.
        reason: Invalid,
    },
}

/// A position in the configuration text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The `[table]` header the position is under, if any.
    pub table: Option<String>,
}

/// The rule a configuration value breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Invalid {
    /// A number is outside its allowed range.
    #[error("{value} is outside {min}..={max}")]
    OutOfRange {
        /// The configured value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A value must not exceed another field.
    #[error("{value} is greater than {other_field} {other}")]
    Exceeds {
        /// The configured value.
        value: u64,
        /// The field it is compared with.
        other_field: &'static str,
        /// That field's value.
        other: u64,
    },
    /// A value is below a floor set by a standard.
    #[error("{value} is below {min}, the minimum set by {rule}")]
    BelowRfcMinimum {
        /// The configured value.
        value: u64,
        /// The floor.
        min: u64,
        /// Where the floor comes from.
        rule: &'static str,
    },
    /// A value must be a multiple of a step.
    #[error("{value} is not a multiple of {of}")]
    NotMultiple {
        /// The configured value.
        value: u64,
        /// The step.
        of: u64,
    },
    /// A value must be at least 1.
    #[error("must be at least 1")]
    Zero,
    /// Port 0 (an ephemeral port) cannot be configured.
    #[error("port 0 is not allowed")]
    PortZero,
    /// The RTP range must start on an even port.
    #[error(
        "{value} is odd; RTP takes the even port of each pair and RTCP the odd one (RFC 3550 §11)"
    )]
    OddPort {
        /// The configured port.
        value: u16,
    },
    /// The RTP range holds a single port.
    #[error("equals rtp.port_min {port}; the range needs at least one RTP/RTCP port pair")]
    SinglePort {
        /// The port.
        port: u16,
    },
    /// More concurrent calls than RTP port pairs.
    #[error(
        "{calls} calls need more RTP port pairs than the {pairs} in rtp.port_min..=rtp.port_max"
    )]
    NotEnoughPorts {
        /// Configured concurrent calls.
        calls: u32,
        /// Port pairs in the range.
        pairs: u16,
    },
    /// A wildcard bind address cannot be put into Via, Contact or SDP.
    #[error("must be set when {bound_field} is the wildcard address {ip}")]
    WildcardNeedsAdvertised {
        /// The bind field.
        bound_field: &'static str,
        /// Its wildcard IP.
        ip: IpAddr,
    },
    /// The unspecified address cannot be advertised.
    #[error("{ip} cannot be advertised to peers")]
    Unspecified {
        /// The configured IP.
        ip: IpAddr,
    },
    /// A list must not be empty.
    #[error("must list at least one entry")]
    Empty,
    /// A list names an entry twice.
    #[error("{entry} is listed twice")]
    Duplicate {
        /// The repeated entry.
        entry: String,
    },
    /// A header value with control characters or non-ASCII text.
    #[error("must be 1..=256 printable ASCII characters (it becomes a header value)")]
    NotHeaderText,
    /// A path is empty.
    #[error("must not be empty")]
    EmptyPath,
    /// `[prompts.files]` names a prompt that does not exist.
    #[error("unknown prompt name {name:?} (see config::PROMPT_NAMES)")]
    UnknownPrompt {
        /// The name as written.
        name: String,
    },
    /// A prompt file is not there.
    #[error("missing prompt file {}{}", path.display(), and_more(*more))]
    MissingPromptFile {
        /// The first missing file, as resolved.
        path: PathBuf,
        /// How many other prompt files are missing too.
        more: usize,
    },
    /// The time zone is not in the IANA database.
    #[error("unknown time zone {name:?} (expected an IANA name such as \"America/Chicago\")")]
    UnknownTimeZone {
        /// The name as written.
        name: String,
    },
    /// An hours key that is not a weekday.
    #[error("unknown weekday (expected mon, tue, wed, thu, fri, sat or sun)")]
    UnknownWeekday,
    /// Two hours keys name the same weekday (e.g. `Mon` and `mon`).
    #[error("names a weekday that is already given")]
    DuplicateWeekday,
    /// Opening hours that are not `HH:MM-HH:MM` or `closed`.
    #[error("{range:?} is not HH:MM-HH:MM (24-hour clock, 24:00 = midnight) or \"closed\"")]
    BadHours {
        /// The hours as written.
        range: String,
    },
    /// Opening hours that close before they open (write a window across
    /// midnight as two days).
    #[error("closes at {close}, which is not after it opens at {open}")]
    CloseNotAfterOpen {
        /// Opening time as written.
        open: String,
        /// Closing time as written.
        close: String,
    },
    /// A date that is not a real `YYYY-MM-DD` date.
    #[error("{value:?} is not a YYYY-MM-DD date")]
    BadDate {
        /// The date as written.
        value: String,
    },
    /// A number or prefix with something other than the digits 0-9.
    #[error("{value:?} must be digits 0-9 only, at least one")]
    NotDigits {
        /// The value as written.
        value: String,
    },
    /// A price that is negative, infinite or not a number.
    #[error("{value} is not a finite price of 0 or more")]
    BadRate {
        /// The price as parsed.
        value: String,
    },
    /// A queue id that is empty, too long, or has spaces, commas or other
    /// characters outside the allowed set.
    #[error("{id:?} must be 1..=64 characters of A-Z a-z 0-9 - _ .")]
    BadQueueId {
        /// The id as written.
        id: String,
    },
    /// A called number already routed to an earlier queue.
    #[error("{did} is already routed to queue {queue:?}")]
    DidClaimed {
        /// The called number.
        did: String,
        /// The queue that lists it first.
        queue: String,
    },
    /// A TCP listener on the address SIP over TCP already listens on.
    #[error("{addr} overlaps sip.bind {sip}, where SIP over TCP listens")]
    SipTcpListener {
        /// The configured address.
        addr: SocketAddr,
        /// SIP's listening address.
        sip: SocketAddr,
    },
    /// A trunk setting the trunk cannot use (termination, call rate).
    #[error("{0}")]
    Trunk(TrunkError),
    /// `user=phone` asked for national numbers.
    #[error(
        "needs number_format = \"e164\": a national number with user=phone must carry a phone-context (RFC 3966 §5.1.5)"
    )]
    UserPhoneNeedsE164,
    /// One of a pair of settings without the other.
    #[error("must be set when {other_field} is")]
    RequiredWith {
        /// The field that is set.
        other_field: &'static str,
    },
    /// A text value is empty.
    #[error("must not be empty")]
    EmptyValue,
    /// A queue's callback number is not a number that can be called.
    #[error("{value:?} is not a callable number: {reason}")]
    BadCallbackNumber {
        /// The number as written.
        value: String,
        /// Why not.
        reason: InvalidNumber,
    },
    /// A value must not be below another field.
    #[error("{value} is less than {other_field} {other}")]
    Below {
        /// The configured value.
        value: u64,
        /// The field it is compared with.
        other_field: &'static str,
        /// That field's value.
        other: u64,
    },
    /// A realm that cannot be put in a quoted string.
    #[error(
        "must be 1..=256 printable ASCII characters without \" or \\ (it is quoted in WWW-Authenticate)"
    )]
    BadRealm,
    /// A queue id that names no configured queue.
    #[error("{id:?} is not a configured queue")]
    UnknownQueue {
        /// The id as written.
        id: String,
    },
    /// A queue failing over to itself.
    #[error("must name another queue, not the queue itself")]
    FailoverToItself,
    /// An agent id that is empty, too long, or has characters outside the
    /// allowed set.
    #[error("{id:?} must be 1..=64 characters of A-Z a-z 0-9 - _ .")]
    BadAgentId {
        /// The id as written.
        id: String,
    },
    /// Neither or both of two alternative settings.
    #[error("set exactly one of {first} or {second}")]
    ExactlyOneOf {
        /// One setting.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// A setting that only means something with another one.
    #[error("is only allowed with {other_field}")]
    OnlyWith {
        /// The setting it needs.
        other_field: &'static str,
    },
    /// A static agent URI that cannot be dialled.
    #[error("{value:?} {reason}")]
    BadAgentUri {
        /// The URI as written.
        value: String,
        /// Why not.
        reason: AgentUriError,
    },
    /// A user name that is not a plain SIP user part.
    #[error("{user:?} must be 1..=64 characters of A-Z a-z 0-9 - _ . +")]
    BadSipUser {
        /// The user as written.
        user: String,
    },
    /// A number of minutes the number prompts cannot say.
    #[error("{value} minutes cannot be announced; the prompts say numbers up to {max}")]
    NotSpeakable {
        /// The configured value.
        value: u32,
        /// The largest number prompt (`number_<max>`).
        max: u32,
    },
}

impl Invalid {
    fn exceeds(value: impl Into<u64>, other_field: &'static str, other: impl Into<u64>) -> Invalid {
        Invalid::Exceeds {
            value: value.into(),
            other_field,
            other: other.into(),
        }
    }

    fn duplicate(entry: &str) -> Invalid {
        Invalid::Duplicate {
            entry: entry.to_owned(),
        }
    }

    fn not_digits(value: &str) -> Invalid {
        Invalid::NotDigits {
            value: value.to_owned(),
        }
    }

    fn unknown_queue(id: &QueueId) -> Invalid {
        Invalid::UnknownQueue {
            id: id.as_str().to_owned(),
        }
    }
}

/// Origin of [`Config::default`].
const DEFAULTS_ORIGIN: &str = "<built-in defaults>";

/// RFC 4028 §5: no Min-SE below 90 seconds.
const MIN_SE_FLOOR_S: u32 = 90;

/// Largest rolling handle-time window (samples kept per queue).
const MAX_ECBT_WINDOW: u64 = 10_000;

/// The largest number the prompts can say: [`PROMPT_NAMES`] has
/// `number_0` … `number_60`.
const MAX_SPOKEN_NUMBER: u32 = 60;

fn default_staffed_agents() -> u32 {
    QueueConfig::default().staffed_agents
}

fn default_callback_expiry_h() -> u64 {
    QueueConfig::default().callback_expiry_h
}

/// The shipped caller ID: 312-555-0100, from the 555-0100…0199 range kept
/// for fiction, so a placeholder never shows a real subscriber's number.
const DEFAULT_CALLBACK_NUMBER: &str = "3125550100";

fn default_callback_number() -> String {
    DEFAULT_CALLBACK_NUMBER.to_owned()
}

fn default_retry_time_s() -> u64 {
    QueueConfig::default().retry_time_s
}

fn default_max_retries() -> u32 {
    QueueConfig::default().max_retries
}

fn default_agent_ring_timeout_s() -> u64 {
    QueueConfig::default().agent_ring_timeout_s
}

fn default_customer_ring_timeout_s() -> u64 {
    QueueConfig::default().customer_ring_timeout_s
}

fn default_true() -> bool {
    true
}

fn default_agent_cooldown_s() -> u64 {
    QueueConfig::default().agent_cooldown_s
}

/// Most concurrent callback calls `[callbacks] max_lines` may allow.
const MAX_LINES: u64 = 10_000;

/// Longest registration interval `[registrar]` accepts: one day.
const MAX_EXPIRES_S: u64 = 86_400;

/// Longest ring time of an agent or customer leg, seconds.
const MAX_RING_S: u64 = 300;

fn deserialize_queue_id<'de, D: Deserializer<'de>>(d: D) -> Result<QueueId, D::Error> {
    String::deserialize(d).map(|id| QueueId(id.into_boxed_str()))
}

fn deserialize_optional_queue_id<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<QueueId>, D::Error> {
    Option::<String>::deserialize(d).map(|id| id.map(|id| QueueId(id.into_boxed_str())))
}

fn deserialize_queue_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<QueueId>, D::Error> {
    Vec::<String>::deserialize(d).map(|ids| {
        ids.into_iter()
            .map(|id| QueueId(id.into_boxed_str()))
            .collect()
    })
}

fn deserialize_agent_id<'de, D: Deserializer<'de>>(d: D) -> Result<AgentId, D::Error> {
    String::deserialize(d).map(|id| AgentId(id.into_boxed_str()))
}

/// Where a business-hours error belongs in the file, and why. `hours_field`
/// is the table the weekly hours came from (`org.hours`, `queues[1].hours`);
/// the time zone and holidays are always the organisation's.
fn hours_invalid(org: &OrgConfig, hours_field: &str, error: HoursError) -> (String, Invalid) {
    match error {
        HoursError::UnknownZone { name, source: _ } => {
            ("org.timezone".to_owned(), Invalid::UnknownTimeZone { name })
        }
        HoursError::UnknownDay { day } => (format!("{hours_field}.{day}"), Invalid::UnknownWeekday),
        HoursError::DuplicateDay { day } => {
            (format!("{hours_field}.{day}"), Invalid::DuplicateWeekday)
        }
        HoursError::BadRange { day, range } => {
            (format!("{hours_field}.{day}"), Invalid::BadHours { range })
        }
        HoursError::CloseNotAfterOpen { day, open, close } => (
            format!("{hours_field}.{day}"),
            Invalid::CloseNotAfterOpen { open, close },
        ),
        HoursError::BadHoliday { value, source: _ } => {
            let field = org.holidays.iter().position(|h| *h == value).map_or_else(
                || "org.holidays".to_owned(),
                |i| format!("org.holidays[{i}]"),
            );
            (field, Invalid::BadDate { value })
        }
    }
}

/// Why `rate` is not a usable price, if it is not.
fn bad_rate(rate: f64) -> Option<Invalid> {
    (!rate.is_finite() || rate < 0.0).then(|| Invalid::BadRate {
        value: rate.to_string(),
    })
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

/// A plain SIP user part (RFC 3261 §25.1 `user`, restricted): 1..=64 of
/// `A-Z a-z 0-9 - _ . +`, so it needs no escaping in a URI and no quoting
/// in a digest `username`.
fn is_sip_user(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

/// Whether TCP listeners on `a` and `b` would collide: the same port, and
/// the same IP or either one a wildcard.
fn same_listener(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
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

fn deserialize_sip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    deserialize_nets(d, "acl.sip")
}

fn deserialize_rtp_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    deserialize_nets(d, "acl.rtp")
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

/// Turns a toml error into [`ConfigError::Syntax`] with line, column and the
/// enclosing table.
fn syntax_error(text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
    let location = error.span().and_then(|span| locate(text, span.start));
    ConfigError::Syntax {
        origin: origin.to_owned(),
        location,
        message: error.message().trim_end().replace('\n', "; "),
    }
}

/// Line, column and enclosing `[table]` of byte offset `offset`.
fn locate(text: &str, offset: usize) -> Option<Location> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    // The table is the last header line above this one. Only lines that look
    // like a header of bare keys count, so an array element on a line of its
    // own is not mistaken for one. An error on a header line itself (an
    // unknown table) is about a key whose parent the header spells out, so
    // no enclosing table is named for it.
    let this_line = text[line_start..].lines().next().unwrap_or("");
    let table = match table_header(this_line) {
        Some(_) => None,
        None => before[..line_start].lines().rev().find_map(table_header),
    };
    Some(Location {
        line,
        column,
        table,
    })
}

/// The table name if `line` is a `[table]` or `[[table]]` header of bare keys.
fn table_header(line: &str) -> Option<String> {
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(inner);
    let name: String = inner.chars().filter(|c| *c != ' ' && *c != '\t').collect();
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    (!name.is_empty() && name.chars().all(bare)).then_some(name)
}

/// `:line:column` and, unless the message already names it, `: in [table]`.
fn location_prefix(location: Option<&Location>, message: &str) -> String {
    let Some(loc) = location else {
        return String::new();
    };
    match &loc.table {
        Some(table) if !message.starts_with(&format!("{table}.")) => {
            format!(":{}:{}: in [{table}]", loc.line, loc.column)
        }
        Some(_) | None => format!(":{}:{}", loc.line, loc.column),
    }
}

fn and_more(more: usize) -> String {
    match more {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const SHIPPED: &str = include_str!("../config.toml");

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("callbackd-config-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        /// Creates `prompts/<name>.wav` for every prompt except `skip`.
        fn with_prompts(skip: &[&str]) -> TempDir {
            let t = TempDir::new();
            let dir = t.0.join("prompts");
            std::fs::create_dir_all(&dir).expect("create prompts dir");
            for name in PROMPT_NAMES.iter().filter(|n| !skip.contains(n)) {
                std::fs::write(dir.join(format!("{name}.wav")), b"RIFF").expect("write prompt");
            }
            t
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "config.toml")
    }

    /// Parses `text`, expects an error, returns its display.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

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
            parse("[sip]\n[rtp]\n[media]\n[prompts]\n[prompts.files]\n[acl]\n[call]\n[log]\n[store]\n[org]\n[org.rates]\n[ivr]\n[ecbt]\n[callbacks]\n[registrar]\n")
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
            port_max = 30001
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
        assert_eq!(c.rtp.port_pairs(), 1);
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

    #[test]
    fn rejects_inverted_port_range() {
        let e = error("[rtp]\nport_min = 30000\nport_max = 20000\n");
        assert_eq!(
            e,
            "config.toml: rtp.port_min: 30000 is greater than rtp.port_max 20000"
        );
    }

    #[test]
    fn rejects_single_port_range() {
        let e = error("[rtp]\nport_min = 30000\nport_max = 30000\n");
        assert!(
            e.starts_with("config.toml: rtp.port_max: equals rtp.port_min 30000"),
            "{e}"
        );
    }

    #[test]
    fn rejects_odd_port_min() {
        let e = error("[rtp]\nport_min = 20001\n");
        assert!(
            e.starts_with("config.toml: rtp.port_min: 20001 is odd"),
            "{e}"
        );
    }

    #[test]
    fn rejects_privileged_rtp_port() {
        let e = error("[rtp]\nport_min = 1000\nport_max = 2000\n");
        assert_eq!(e, "config.toml: rtp.port_min: 1000 is outside 1024..=65535");
    }

    #[test]
    fn rejects_missing_prompt_file() {
        let dir = TempDir::with_prompts(&["welcome", "goodbye"]);
        let c = parse("").expect("defaults");
        let e = c
            .validate_prompts(&dir.0)
            .expect_err("two missing")
            .to_string();
        let expected = dir.0.join("prompts").join("welcome.wav");
        assert_eq!(
            e,
            format!(
                "config.toml: prompts: missing prompt file {} (and 1 more)",
                expected.display()
            )
        );
    }

    #[test]
    fn rejects_missing_prompt_dir() {
        let dir = TempDir::new();
        let e = Config::default()
            .validate(&dir.0)
            .expect_err("no prompts")
            .to_string();
        assert!(
            e.starts_with("<built-in defaults>: prompts: missing prompt file"),
            "{e}"
        );
        assert!(
            e.ends_with(&format!("(and {} more)", PROMPT_NAMES.len() - 1)),
            "{e}"
        );
    }

    #[test]
    fn prompt_override_replaces_default_file() {
        let dir = TempDir::with_prompts(&["welcome"]);
        std::fs::write(dir.0.join("prompts").join("hi.wav"), b"RIFF").expect("write");
        let c = parse("[prompts.files]\nwelcome = \"hi.wav\"\n").expect("override");
        c.validate_prompts(&dir.0)
            .expect("override satisfies welcome");
        let c = parse("[prompts.files]\nwelcome = \"nope.wav\"\n").expect("override");
        let e = c
            .validate_prompts(&dir.0)
            .expect_err("override missing")
            .to_string();
        assert!(
            e.contains("prompts: missing prompt file") && e.ends_with("nope.wav"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_prompt_override() {
        let e = error("[prompts.files]\nwelcom = \"w.wav\"\n");
        assert_eq!(
            e,
            "config.toml: prompts.files.welcom: unknown prompt name \"welcom\" (see config::PROMPT_NAMES)"
        );
    }

    #[test]
    fn rejects_empty_prompt_dir() {
        let e = error("[prompts]\ndir = \"\"\n");
        assert_eq!(e, "config.toml: prompts.dir: must not be empty");
    }

    #[test]
    fn rejects_duplicate_codec() {
        let e = error("[media]\ncodecs = [\"PCMA\", \"PCMU\", \"PCMA\"]\n");
        assert_eq!(e, "config.toml: media.codecs: PCMA is listed twice");
    }

    #[test]
    fn rejects_empty_codec_list() {
        let e = error("[media]\ncodecs = []\n");
        assert_eq!(e, "config.toml: media.codecs: must list at least one entry");
    }

    #[test]
    fn rejects_unknown_codec() {
        let e = error("[media]\ncodecs = [\"G729\"]\n");
        assert!(
            e.starts_with("config.toml:2:11: in [media]: unknown variant `G729`"),
            "{e}"
        );
    }

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
    fn rejects_bad_ptime() {
        let e = error("[media]\nptime_ms = 25\n");
        assert_eq!(e, "config.toml: media.ptime_ms: 25 is not a multiple of 10");
        let e = error("[media]\nptime_ms = 70\n");
        assert_eq!(e, "config.toml: media.ptime_ms: 70 is outside 10..=60");
        let e = error("[media]\nptime_ms = 0\n");
        assert_eq!(e, "config.toml: media.ptime_ms: 0 is outside 10..=60");
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
    fn rejects_wildcard_rtp_bind_without_advertised_ip() {
        let e = error("[rtp]\nbind_ip = \"::\"\n");
        assert_eq!(
            e,
            "config.toml: rtp.advertised_ip: must be set when rtp.bind_ip is the wildcard address ::"
        );
        let e = error("[rtp]\nadvertised_ip = \"0.0.0.0\"\n");
        assert_eq!(
            e,
            "config.toml: rtp.advertised_ip: 0.0.0.0 cannot be advertised to peers"
        );
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

    #[test]
    fn rejects_zero_call_limits() {
        let e = error("[call]\nmax_duration_s = 0\n");
        assert_eq!(e, "config.toml: call.max_duration_s: must be at least 1");
        let e = error("[call]\nmax_calls = 0\n");
        assert_eq!(e, "config.toml: call.max_calls: must be at least 1");
    }

    #[test]
    fn rejects_max_calls_beyond_port_pairs() {
        let e = error("[rtp]\nport_min = 20000\nport_max = 20009\n[call]\nmax_calls = 6\n");
        assert_eq!(
            e,
            "config.toml: call.max_calls: 6 calls need more RTP port pairs than the 5 in rtp.port_min..=rtp.port_max"
        );
        parse("[rtp]\nport_min = 20000\nport_max = 20009\n[call]\nmax_calls = 5\n")
            .expect("5 pairs");
    }

    #[test]
    fn port_pairs_need_the_odd_rtcp_port() {
        let rtp = |port_min, port_max| RtpConfig {
            port_min,
            port_max,
            ..RtpConfig::default()
        };
        assert_eq!(rtp(20_000, 20_001).port_pairs(), 1);
        assert_eq!(
            rtp(20_000, 20_002).port_pairs(),
            1,
            "20002 has no RTCP partner"
        );
        assert_eq!(rtp(20_000, 20_003).port_pairs(), 2);
        assert_eq!(rtp(20_000, 20_000).port_pairs(), 0);
        assert_eq!(rtp(30_000, 20_000).port_pairs(), 0);
        assert_eq!(rtp(65_534, 65_535).port_pairs(), 1);
    }

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
    }

    #[test]
    fn reads_api_section() {
        let c = parse("[api]\nenabled = false\nbind = \"[::1]:9000\"\n").expect("api section");
        assert!(!c.api.enabled);
        assert_eq!(c.api.bind, "[::1]:9000".parse().expect("addr"));
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
    fn prompt_names_match_prompts_md() {
        assert_eq!(PROMPT_NAMES.len(), 97);
        assert_eq!(first_duplicate(&PROMPT_NAMES), None);
        for n in 0..=60 {
            assert!(
                PROMPT_NAMES.contains(&format!("number_{n}").as_str()),
                "number_{n}"
            );
        }
        for d in 0..=9 {
            assert!(
                PROMPT_NAMES.contains(&format!("digit_{d}").as_str()),
                "digit_{d}"
            );
        }
        assert_eq!(PROMPT_NAMES.first(), Some(&"welcome"));
        assert_eq!(PROMPT_NAMES.last(), Some(&"goodbye"));
        for name in [
            "ecbt_more_than",
            "digit_star",
            "digit_pound",
            "international_prefix",
            "hold_music",
            "ringback",
        ] {
            assert!(PROMPT_NAMES.contains(&name), "{name}");
        }
    }

    fn ts(text: &str) -> jiff::Timestamp {
        text.parse().expect("test timestamp")
    }

    #[test]
    fn shipped_hours_are_open_around_the_clock_in_chicago() {
        let c = parse(SHIPPED).expect("shipped config.toml");
        let hours = c.org.business_hours().expect("valid hours");
        assert_eq!(
            hours.tz,
            jiff::tz::TimeZone::get("America/Chicago").expect("zone")
        );
        assert!(hours.holidays.is_empty());
        // Sunday 03:00 local, Christmas evening, Monday midnight.
        for at in [
            "2026-06-07T08:00:00Z",
            "2026-12-26T03:00:00Z",
            "2026-06-08T05:00:00Z",
        ] {
            assert!(hours.is_open(ts(at)), "{at}");
        }
    }

    #[test]
    fn org_hours_table_closes_days_it_does_not_list() {
        let c = parse(
            "[org]\ntimezone = \"America/Chicago\"\nholidays = [\"2026-12-25\"]\n\
             [org.hours]\nmon = \"08:00-18:00\"\nthu = \"08:00-18:00\"\nsat = \"closed\"\n",
        )
        .expect("office hours");
        let hours = c.org.business_hours().expect("valid hours");
        // Monday 2026-06-08, CDT (UTC-5).
        assert!(hours.is_open(ts("2026-06-08T13:00:00Z")), "mon 08:00");
        assert!(!hours.is_open(ts("2026-06-08T23:00:00Z")), "mon 18:00");
        assert!(!hours.is_open(ts("2026-06-09T15:00:00Z")), "tue not listed");
        assert!(!hours.is_open(ts("2026-06-13T15:00:00Z")), "sat closed");
        // Thursday 2026-12-24 is open, Thursday 2026-12-25 a holiday (CST).
        assert!(hours.is_open(ts("2026-12-24T18:00:00Z")));
        assert!(!hours.is_open(ts("2026-12-25T18:00:00Z")), "holiday");
    }

    #[test]
    fn rejects_unknown_time_zone() {
        let e = error("[org]\ntimezone = \"America/Gotham\"\n");
        assert_eq!(
            e,
            "config.toml: org.timezone: unknown time zone \"America/Gotham\" (expected an IANA name such as \"America/Chicago\")"
        );
    }

    #[test]
    fn rejects_malformed_org_hours() {
        let e = error("[org.hours]\nmon = \"8-18\"\n");
        assert_eq!(
            e,
            "config.toml: org.hours.mon: \"8-18\" is not HH:MM-HH:MM (24-hour clock, 24:00 = midnight) or \"closed\""
        );
    }

    #[test]
    fn rejects_org_hours_closing_before_opening() {
        let e = error("[org.hours]\nfri = \"18:00-08:00\"\n");
        assert_eq!(
            e,
            "config.toml: org.hours.fri: closes at 08:00, which is not after it opens at 18:00"
        );
    }

    #[test]
    fn rejects_unknown_weekday_in_hours() {
        let e = error("[org.hours]\nmonday = \"08:00-18:00\"\n");
        assert_eq!(
            e,
            "config.toml: org.hours.monday: unknown weekday (expected mon, tue, wed, thu, fri, sat or sun)"
        );
    }

    #[test]
    fn rejects_weekday_given_twice_in_hours() {
        let e = error("[org.hours]\nMon = \"08:00-12:00\"\nmon = \"13:00-18:00\"\n");
        assert_eq!(
            e,
            "config.toml: org.hours.mon: names a weekday that is already given"
        );
    }

    #[test]
    fn rejects_malformed_holiday() {
        let e = error("[org]\nholidays = [\"2026-12-25\", \"2026-02-30\"]\n");
        assert_eq!(
            e,
            "config.toml: org.holidays[1]: \"2026-02-30\" is not a YYYY-MM-DD date"
        );
        let e = error("[org]\nholidays = [\"christmas\"]\n");
        assert!(e.starts_with("config.toml: org.holidays[0]: "), "{e}");
    }

    #[test]
    fn rejects_malformed_queue_hours_override() {
        let e = error("[[queues]]\nid = \"support\"\n[queues.hours]\ntue = \"09:00-25:00\"\n");
        assert!(
            e.starts_with("config.toml: queues[0].hours.tue: \"09:00-25:00\" is not HH:MM-HH:MM"),
            "{e}"
        );
        let e = error(
            "[[queues]]\nid = \"a\"\n[[queues]]\nid = \"b\"\n[queues.hours]\nsat = \"13:00-09:00\"\n",
        );
        assert_eq!(
            e,
            "config.toml: queues[1].hours.sat: closes at 09:00, which is not after it opens at 13:00"
        );
    }

    #[test]
    fn rejects_negative_or_non_finite_max_rate() {
        for (text, shown) in [("-0.01", "-0.01"), ("nan", "NaN"), ("inf", "inf")] {
            let e = error(&format!("[org]\nmax_rate_per_minute = {text}\n"));
            assert_eq!(
                e,
                format!(
                    "config.toml: org.max_rate_per_minute: {shown} is not a finite price of 0 or more"
                )
            );
        }
        parse("[org]\nmax_rate_per_minute = 0.0\n").expect("zero allows only free destinations");
    }

    #[test]
    fn rejects_negative_or_non_finite_rate() {
        let e = error("[org.rates]\n\"44\" = 0.02\n\"52\" = -1.5\n");
        assert_eq!(
            e,
            "config.toml: org.rates.52: -1.5 is not a finite price of 0 or more"
        );
        let e = error("[org.rates]\n\"44\" = inf\n");
        assert_eq!(
            e,
            "config.toml: org.rates.44: inf is not a finite price of 0 or more"
        );
    }

    #[test]
    fn rejects_rate_prefix_that_is_not_digits() {
        let e = error("[org.rates]\n\"+44\" = 0.02\n");
        assert_eq!(
            e,
            "config.toml: org.rates.+44: \"+44\" must be digits 0-9 only, at least one"
        );
    }

    #[test]
    fn rejects_blacklist_entry_that_is_not_digits() {
        let e = error("[org]\nblacklist = [\"900\", \"312-555-0100\"]\n");
        assert_eq!(
            e,
            "config.toml: org.blacklist[1]: \"312-555-0100\" must be digits 0-9 only, at least one"
        );
        let e = error("[org]\nblacklist = [\"\"]\n");
        assert_eq!(
            e,
            "config.toml: org.blacklist[0]: \"\" must be digits 0-9 only, at least one"
        );
    }

    #[test]
    fn rejects_digit_timeouts_out_of_range() {
        for key in ["first_digit_timeout_s", "inter_digit_timeout_s"] {
            parse(&format!("[ivr]\n{key} = 1\n")).expect("1 s");
            parse(&format!("[ivr]\n{key} = 120\n")).expect("120 s");
            for bad in [0, 121] {
                let e = error(&format!("[ivr]\n{key} = {bad}\n"));
                assert_eq!(
                    e,
                    format!("config.toml: ivr.{key}: {bad} is outside 1..=120")
                );
            }
        }
    }

    #[test]
    fn rejects_max_invalid_out_of_range() {
        let e = error("[ivr]\nmax_invalid = 0\n");
        assert_eq!(e, "config.toml: ivr.max_invalid: 0 is outside 1..=10");
        let e = error("[ivr]\nmax_invalid = 11\n");
        assert_eq!(e, "config.toml: ivr.max_invalid: 11 is outside 1..=10");
    }

    #[test]
    fn rejects_announce_interval_out_of_range() {
        let e = error("[ivr]\nannounce_interval_s = 9\n");
        assert_eq!(
            e,
            "config.toml: ivr.announce_interval_s: 9 is outside 10..=3600"
        );
        let e = error("[ivr]\nannounce_interval_s = 3601\n");
        assert_eq!(
            e,
            "config.toml: ivr.announce_interval_s: 3601 is outside 10..=3600"
        );
    }

    #[test]
    fn rejects_zero_aht_seed() {
        let e = error("[ecbt]\naht_s = 0\n");
        assert_eq!(e, "config.toml: ecbt.aht_s: 0 is outside 1..=86400");
    }

    #[test]
    fn rejects_ecbt_floor_above_ceiling() {
        let e = error("[ecbt]\nfloor_minutes = 31\nceiling_minutes = 30\n");
        assert_eq!(
            e,
            "config.toml: ecbt.floor_minutes: 31 is greater than ecbt.ceiling_minutes 30"
        );
        parse("[ecbt]\nfloor_minutes = 30\nceiling_minutes = 30\n").expect("floor == ceiling");
    }

    #[test]
    fn rejects_zero_ecbt_window() {
        let e = error("[ecbt]\nwindow = 0\n");
        assert_eq!(e, "config.toml: ecbt.window: must be at least 1");
    }

    #[test]
    fn rejects_oversized_ecbt_window() {
        let e = error("[ecbt]\nwindow = 10001\n");
        assert_eq!(e, "config.toml: ecbt.window: 10001 is outside 1..=10000");
    }

    #[test]
    fn rejects_zero_ecbt_ceiling() {
        let e = error("[ecbt]\nfloor_minutes = 0\nceiling_minutes = 0\n");
        assert_eq!(e, "config.toml: ecbt.ceiling_minutes: must be at least 1");
    }

    #[test]
    fn rejects_ecbt_ceiling_the_prompts_cannot_say() {
        let e = error("[ecbt]\nceiling_minutes = 61\n");
        assert_eq!(
            e,
            "config.toml: ecbt.ceiling_minutes: 61 minutes cannot be announced; the prompts say numbers up to 60"
        );
        let said = |n: u32| PROMPT_NAMES.contains(&format!("number_{n}").as_str());
        assert!(said(MAX_SPOKEN_NUMBER) && !said(MAX_SPOKEN_NUMBER + 1));
    }

    #[test]
    fn rejects_empty_queue_list() {
        let e = error("queues = []\n");
        assert_eq!(e, "config.toml: queues: must list at least one entry");
    }

    #[test]
    fn rejects_queue_without_id() {
        let e = error("[[queues]]\npriority = 1\n");
        assert!(e.contains("missing field `id`"), "{e}");
    }

    #[test]
    fn rejects_malformed_queue_id() {
        let long = "q".repeat(65);
        for bad in [
            "",
            "sales team",
            "sales,vip",
            "ventes-québec",
            long.as_str(),
        ] {
            let e = error(&format!("[[queues]]\nid = \"{bad}\"\n"));
            assert_eq!(
                e,
                format!(
                    "config.toml: queues[0].id: {bad:?} must be 1..=64 characters of A-Z a-z 0-9 - _ ."
                )
            );
        }
        parse(&format!("[[queues]]\nid = \"{}\"\n", "q".repeat(64))).expect("64 chars");
        parse("[[queues]]\nid = \"sales-2.vip_EN\"\n").expect("all allowed characters");
    }

    #[test]
    fn rejects_duplicate_queue_id() {
        let e = error(
            "[[queues]]\nid = \"sales\"\n[[queues]]\nid = \"support\"\n[[queues]]\nid = \"sales\"\n",
        );
        assert_eq!(e, "config.toml: queues[2].id: sales is listed twice");
    }

    #[test]
    fn rejects_did_that_is_not_digits() {
        let e = error("[[queues]]\nid = \"support\"\ndids = [\"+13125550100\"]\n");
        assert_eq!(
            e,
            "config.toml: queues[0].dids[0]: \"+13125550100\" must be digits 0-9 only, at least one"
        );
    }

    #[test]
    fn rejects_did_listed_twice_in_a_queue() {
        let e = error("[[queues]]\nid = \"support\"\ndids = [\"3125550100\", \"3125550100\"]\n");
        assert_eq!(
            e,
            "config.toml: queues[0].dids[1]: 3125550100 is listed twice"
        );
    }

    #[test]
    fn rejects_did_claimed_by_two_queues() {
        let e = error(
            "[[queues]]\nid = \"sales\"\ndids = [\"3125550100\"]\n\
             [[queues]]\nid = \"support\"\ndids = [\"3125550199\", \"3125550100\"]\n",
        );
        assert_eq!(
            e,
            "config.toml: queues[1].dids[1]: 3125550100 is already routed to queue \"sales\""
        );
    }

    #[test]
    fn rejects_queue_timings_out_of_range() {
        let queue = |line: &str| format!("[[queues]]\nid = \"support\"\n{line}\n");
        let e = error(&queue("offer_after_s = 3601"));
        assert_eq!(
            e,
            "config.toml: queues[0].offer_after_s: 3601 is outside 0..=3600"
        );
        let e = error(&queue("callback_expiry_h = 0"));
        assert_eq!(
            e,
            "config.toml: queues[0].callback_expiry_h: 0 is outside 1..=720"
        );
        let e = error(&queue("staffed_agents = 10001"));
        assert_eq!(
            e,
            "config.toml: queues[0].staffed_agents: 10001 is outside 0..=10000"
        );
        parse(&queue("staffed_agents = 0")).expect("no agents: ECBT says more than");
    }

    #[test]
    fn rejects_empty_store_path() {
        let e = error("[store]\npath = \"\"\n");
        assert_eq!(e, "config.toml: store.path: must not be empty");
    }

    #[test]
    fn store_path_resolves_against_the_config_directory() {
        let c = Config::default();
        assert_eq!(
            c.store_path(Path::new("/etc/callbackd")),
            Path::new("/etc/callbackd/callbackd.sqlite")
        );
        let c = parse("[store]\npath = \"/var/lib/callbackd/cb.sqlite\"\n").expect("absolute");
        assert_eq!(
            c.store_path(Path::new("/etc/callbackd")),
            Path::new("/var/lib/callbackd/cb.sqlite")
        );
    }

    /// Two queues, the second with its own hours and a higher priority.
    const TWO_QUEUES: &str = r#"
        [org]
        timezone = "America/New_York"
        holidays = ["2026-07-03"]
        [org.hours]
        mon = "08:00-18:00"
        tue = "08:00-18:00"
        wed = "08:00-18:00"
        thu = "08:00-18:00"
        fri = "08:00-18:00"

        [[queues]]
        id = "support"
        dids = ["8005550100", "3125550100"]

        [[queues]]
        id = "sales"
        priority = 10
        offer_after_s = 30
        staffed_agents = 4
        callback_expiry_h = 48
        dids = ["8005550199"]
        [queues.hours]
        fri = "08:00-12:00"
        sat = "10:00-14:00"
    "#;

    #[test]
    fn two_queues_with_an_hours_override_parse() {
        let c = parse(TWO_QUEUES).expect("two queues");
        let [support, sales] = c.queues.as_slice() else {
            panic!("two queues: {:?}", c.queues);
        };
        assert_eq!(support.id.as_str(), "support");
        assert_eq!(
            (
                support.priority,
                support.staffed_agents,
                support.callback_expiry_h
            ),
            (0, 1, 24),
            "defaults for keys not written"
        );
        assert_eq!(support.hours(&c.org).expect("valid"), None);
        assert_eq!(sales.id.as_str(), "sales");
        assert_eq!(sales.priority, 10);
        assert_eq!(sales.offer_after(), Duration::from_secs(30));
        assert_eq!(sales.staffed_agents, 4);
        assert_eq!(sales.callback_expiry(), Duration::from_secs(48 * 3600));

        let org = c.org.business_hours().expect("org hours");
        let own = sales
            .hours(&c.org)
            .expect("valid")
            .expect("sales overrides the hours");
        assert_eq!(own.tz, org.tz, "the override keeps the org's zone");
        // Saturday 2026-06-13 11:00 EDT (UTC-4): only sales is open.
        let saturday = ts("2026-06-13T15:00:00Z");
        assert!(!org.is_open(saturday) && own.is_open(saturday));
        // Friday 2026-06-12 13:00 EDT: org open, sales closed since noon.
        let friday = ts("2026-06-12T17:00:00Z");
        assert!(org.is_open(friday) && !own.is_open(friday));
        // Monday is not in the override: sales is closed all day.
        assert!(!own.is_open(ts("2026-06-08T14:00:00Z")));
        // Friday 2026-07-03 is an org holiday, and closes sales too.
        let holiday = ts("2026-07-03T14:00:00Z");
        assert!(!org.is_open(holiday) && !own.is_open(holiday));
    }

    #[test]
    fn queue_for_routes_by_did_else_to_the_first_queue() {
        let c = parse(TWO_QUEUES).expect("two queues");
        assert_eq!(c.queue_for("8005550199").id.as_str(), "sales");
        assert_eq!(c.queue_for("+8005550199").id.as_str(), "sales");
        assert_eq!(c.queue_for("3125550100").id.as_str(), "support");
        assert_eq!(c.queue_for("8005550100").id.as_str(), "support");
        // No queue claims these: the first queue takes them.
        for other in [
            "9995550100",
            "800555019",
            "80055501990",
            "",
            "callbackd",
            "+",
        ] {
            assert_eq!(c.queue_for(other).id.as_str(), "support", "{other:?}");
        }
        let reordered = TWO_QUEUES.replacen("id = \"support\"", "id = \"helpdesk\"", 1);
        let c = parse(&reordered).expect("renamed");
        assert_eq!(c.queue_for("unknown").id.as_str(), "helpdesk");
        assert_eq!(
            Config::default().queue_for("3125550100").id.as_str(),
            "support"
        );
    }

    #[test]
    fn ecbt_settings_are_accepted_by_the_estimator() {
        let c = parse("[ecbt]\naht_s = 240\nwindow = 5\nfloor_minutes = 2\nceiling_minutes = 45\n")
            .expect("ecbt");
        let estimator = Estimator::new(c.ecbt.settings()).expect("validated settings");
        assert_eq!(estimator.average_handle_time(), Duration::from_secs(240));
        assert_eq!(estimator.settings().window, 5);
        // 10 ahead × 4 min / 1 agent = 40 min; 12 ahead = 48 > 45.
        assert_eq!(estimator.estimate(10, 1), crate::ivr::Ecbt::Minutes(40));
        assert_eq!(estimator.estimate(12, 1), crate::ivr::Ecbt::MoreThan(45));
        assert_eq!(estimator.estimate(0, 1), crate::ivr::Ecbt::Minutes(2));
    }

    #[test]
    fn number_policy_carries_the_org_rules() {
        let c = parse(
            "[org]\nallow_international = true\nmax_rate_per_minute = 0.05\nblacklist = [\"900\"]\n[org.rates]\n\"44\" = 0.02\n",
        )
        .expect("org");
        let policy = c.org.number_policy();
        assert!(policy.allow_international);
        assert_eq!(policy.max_rate_per_minute, 0.05);
        assert_eq!(policy.rates, vec![("44".to_string(), 0.02)]);
        assert_eq!(policy.blacklist, vec!["900".to_string()]);
        use crate::callback::number::{InvalidNumber, validate};
        assert_eq!(
            validate("9005551234", &policy),
            Err(InvalidNumber::Blacklisted)
        );
        assert!(validate("011442071234567", &policy).is_ok());
    }

    #[test]
    fn reads_the_callback_switches() {
        let c = parse(
            "[org]\nregistration_enabled = false\nlaunch_enabled = false\n\
             spoken_international_prefix = false\n",
        )
        .expect("switches");
        assert_eq!(
            c.org.gates(),
            Gates {
                registration_enabled: false,
                launch_enabled: false
            }
        );
        assert!(!c.org.spoken_international_prefix);
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

    #[test]
    fn rejects_invalid_callback_number() {
        let cases = [
            ("13125550100", "area code must start with 2-9"),
            ("+13125550100", "not all digits"),
            ("312555010", "too few digits"),
            ("9115550100", "N11 service code"),
            ("011", "too few digits"),
        ];
        for (number, reason) in cases {
            let e = error(&format!(
                "[[queues]]\nid = \"support\"\n[[queues]]\nid = \"sales\"\ncallback_number = \"{number}\"\n"
            ));
            assert_eq!(
                e,
                format!(
                    "config.toml: queues[1].callback_number: {number:?} is not a callable number: {reason}"
                )
            );
        }
    }

    #[test]
    fn callback_number_ignores_the_customer_blacklist() {
        let c = parse(
            "[org]\nblacklist = [\"312\"]\n[[queues]]\nid = \"support\"\ncallback_number = \"3125550100\"\n",
        )
        .expect("the organisation's own number is not a customer entry");
        assert_eq!(
            c.queues[0].caller_id().expect("caller ID").as_digits(),
            "3125550100"
        );
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
        let roster = c.agents(t0).expect("no agents");
        assert_eq!((roster.iter().count(), roster.max_lines()), (0, 15));
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

    /// Two queues with failover, a static and a registered agent.
    const AGENTS: &str = r#"
        [callbacks]
        max_lines = 2
        poll_interval_ms = 250
        [registrar]
        realm = "acme.example"
        min_expires_s = 30
        max_expires_s = 600
        default_expires_s = 120

        [[queues]]
        id = "support"
        retry_time_s = 5
        max_retries = 1
        failover = "sales"
        agent_ring_timeout_s = 7
        customer_ring_timeout_s = 9
        agent_cooldown_s = 0

        [[queues]]
        id = "sales"
        priority = 5

        [[agents]]
        id = "alice"
        uri = "sip:1001@127.0.0.1:5080"
        queues = ["support"]

        [[agents]]
        id = "bob"
        user = "bob"
        password = "hunter2"
        queues = ["support", "sales"]
    "#;

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

        let t0 = Instant::now();
        let roster = c.agents(t0).expect("roster");
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
                port: 5080,
                tcp: false,
            }
        );
    }

    #[test]
    fn agent_uri_takes_host_port_and_transport() {
        let uri = AgentUri::parse("sip:201@pbx.example.com;transport=TCP").expect("valid");
        assert_eq!(uri.host, Host::Name("pbx.example.com".into()));
        assert_eq!((uri.port, uri.tcp), (5060, true));
        let uri = AgentUri::parse("sip:[2001:db8::7]:5070").expect("no user part is fine");
        assert_eq!(uri.host, Host::Ip("2001:db8::7".parse().expect("ip")));
        assert_eq!((uri.port, uri.tcp), (5070, false));
    }

    /// `AGENTS` with `old` replaced by `new` (which must be there).
    fn agents_with(old: &str, new: &str) -> String {
        assert!(AGENTS.contains(old), "fixture has {old:?}");
        AGENTS.replacen(old, new, 1)
    }

    #[test]
    fn rejects_max_lines_out_of_range() {
        let e = error("[callbacks]\nmax_lines = 0\n");
        assert_eq!(
            e,
            "config.toml: callbacks.max_lines: 0 is outside 1..=10000"
        );
        let e = error("[callbacks]\nmax_lines = 10001\n");
        assert_eq!(
            e,
            "config.toml: callbacks.max_lines: 10001 is outside 1..=10000"
        );
    }

    #[test]
    fn rejects_recording_retention_out_of_range_and_empty_dir() {
        let e = error("[callbacks]\nrecording_retention_days = 0\n");
        assert_eq!(
            e,
            "config.toml: callbacks.recording_retention_days: 0 is outside 1..=3650"
        );
        let e = error("[callbacks]\nrecordings_dir = \"\"\n");
        assert!(
            e.starts_with("config.toml: callbacks.recordings_dir: "),
            "{e}"
        );
        let c = parse("[[queues]]\nid = \"support\"\nrecording = true\nrecording_notice = false\n")
            .expect("recording keys");
        assert!(c.queues[0].recording && !c.queues[0].recording_notice);
    }

    #[test]
    fn rejects_poll_interval_out_of_range() {
        let e = error("[callbacks]\npoll_interval_ms = 99\n");
        assert_eq!(
            e,
            "config.toml: callbacks.poll_interval_ms: 99 is outside 100..=60000"
        );
        let e = error("[callbacks]\npoll_interval_ms = 60001\n");
        assert_eq!(
            e,
            "config.toml: callbacks.poll_interval_ms: 60001 is outside 100..=60000"
        );
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
    fn rejects_failover_to_itself() {
        let e = error(&agents_with(
            "failover = \"sales\"",
            "failover = \"support\"",
        ));
        assert_eq!(
            e,
            "config.toml: queues[0].failover: must name another queue, not the queue itself"
        );
    }

    #[test]
    fn rejects_failover_to_unknown_queue() {
        let e = error(&agents_with(
            "failover = \"sales\"",
            "failover = \"billing\"",
        ));
        assert_eq!(
            e,
            "config.toml: queues[0].failover: \"billing\" is not a configured queue"
        );
    }

    #[test]
    fn rejects_queue_retry_settings_out_of_range() {
        let queue = |line: &str| format!("[[queues]]\nid = \"support\"\n{line}\n");
        let cases = [
            ("retry_time_s = 0", "retry_time_s: 0 is outside 1..=86400"),
            ("max_retries = 101", "max_retries: 101 is outside 0..=100"),
            (
                "agent_ring_timeout_s = 0",
                "agent_ring_timeout_s: 0 is outside 1..=300",
            ),
            (
                "customer_ring_timeout_s = 301",
                "customer_ring_timeout_s: 301 is outside 1..=300",
            ),
            (
                "agent_cooldown_s = 3601",
                "agent_cooldown_s: 3601 is outside 0..=3600",
            ),
        ];
        for (line, message) in cases {
            assert_eq!(
                error(&queue(line)),
                format!("config.toml: queues[0].{message}")
            );
        }
        parse(&queue("max_retries = 0")).expect("no retries: one attempt");
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
