//! [`Settings`]: a configuration that passed [`Config::check`], each section
//! converted once into the typed values the engine and the controller use.
//!
//! Every conversion that can fail (business hours in a time zone, caller
//! IDs as [`PhoneNumber`]s, the trunk's termination, static agent URIs, the
//! estimator, scheduler, ACD and RTP port pool) runs here, once, after the
//! value rules passed; use-sites read fields and have no error left to
//! handle. Sections whose values need no parsing beyond serde (`[sip]`,
//! `[rtp]`, `[media]`, `[acl]`, `[call]`, `[ivr]`, `[callbacks]`, `[log]`,
//! `[api]`) are kept as their checked section structs, whose accessors are
//! infallible (`sip().t1()` is a `Duration`, `sip().bind` a `SocketAddr`).
//!
//! A `Settings` cannot be built except by [`Config::check`], nor changed
//! afterwards: its fields are private and read through accessors, so an
//! embedder cannot start the engine with an unchecked configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::acd::agents::{Agent, AgentId, Agents, Contact};
use crate::acd::{Acd, Queue};
use crate::callback::QueueId;
use crate::callback::hours::{BusinessHours, Gates};
use crate::callback::number::{self, NumberPolicy, PhoneNumber};
use crate::callback::rules::{Rule, RuleBook};
use crate::callback::scheduler::Scheduler;
use crate::callback::timezone::CallingWindow;
use crate::callback::trunk::TrunkSettings;
use crate::ivr::ecbt::Estimator;
use crate::media::ports::PortPool;
use crate::sip::digest::Secret;
use crate::sip::registrar::RegistrarSettings;

use super::{
    AclConfig, AgentUri, ApiConfig, CallConfig, CallbacksConfig, Capacity, Config, ConfigError,
    EdgeConfig, Invalid, IvrConfig, LogConfig, MediaConfig, RtpConfig, SipConfig, WebhooksConfig,
};

/// A checked configuration (see the module documentation).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration these settings were converted from, to convert
    /// again with another organisation ([`Settings::with_organisation`]).
    pub(super) source: Config,
    origin: String,
    base_dir: PathBuf,
    sip: SipConfig,
    rtp: RtpConfig,
    media: MediaConfig,
    prompt_files: Vec<(String, PathBuf)>,
    acl: AclConfig,
    edge: EdgeConfig,
    call: CallConfig,
    log: LogConfig,
    api: ApiConfig,
    store_path: PathBuf,
    ivr: IvrConfig,
    callbacks: CallbacksConfig,
    webhooks: WebhooksConfig,
    org: OrgSettings,
    estimator: Estimator,
    trunk: TrunkSettings,
    trunk_dns_servers: Vec<SocketAddr>,
    registrar: Option<RegistrarSetup>,
    queues: Vec<QueueSettings>,
    acd: Acd,
    scheduler: Scheduler,
    rtp_ports: PortPool,
    agents: Vec<AgentSettings>,
}

/// `[org]` as the call layer uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgSettings {
    /// Business hours in the organisation's zone, with its holidays.
    pub hours: BusinessHours,
    /// The configured registration and launch switches.
    pub gates: Gates,
    /// The rules a caller's number must pass.
    pub number_policy: NumberPolicy,
    /// Whether "011" is spoken before an international number.
    pub spoken_international_prefix: bool,
    /// `[org] callback_numbers`: the numbers presented to customers (empty:
    /// no central list, the queues' own numbers are the set).
    pub callback_numbers: Vec<PhoneNumber>,
    /// When a customer may be rung, in the customer's local time.
    pub calling_window: CallingWindow,
    /// Automatic callback calls at once.
    pub auto_callback_lines: u32,
    /// The organisation is frozen (no rule in force, nothing dialed).
    pub frozen: bool,
    /// The missed-call rules, in file order.
    pub rules: Vec<Rule>,
}

impl OrgSettings {
    /// The missed-call rules with the calling window and the freeze.
    pub fn rule_book(&self) -> RuleBook {
        RuleBook {
            rules: self.rules.clone(),
            window: self.calling_window,
            frozen: self.frozen,
        }
    }
}

/// One `[[queues]]` entry, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// The queue.
    pub id: QueueId,
    /// Higher first when several queues have callbacks due.
    pub priority: i32,
    /// The wait before the callback offer.
    pub offer_after: Duration,
    /// How long a pending callback stays valid.
    pub callback_expiry: Duration,
    /// The queue's own hours when it overrides the organisation's.
    pub hours: Option<BusinessHours>,
    /// The dialled numbers routed to this queue.
    pub dids: Vec<String>,
    /// The caller ID of this queue's callbacks.
    pub caller_id: PhoneNumber,
    /// Whether bridged callbacks are recorded.
    pub recording: bool,
    /// Whether the recording notice is played.
    pub recording_notice: bool,
    /// How long an agent who did not answer cools down.
    pub agent_cooldown: Duration,
    /// The queue's own registration and launch switches (each applies
    /// together with the organisation's).
    pub gates: Gates,
    /// Agents the ECBT assumes until agents are reachable.
    pub staffed_agents: u32,
}

/// One `[[agents]]` entry, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// The agent.
    pub id: AgentId,
    /// How the agent is reached.
    pub contact: Contact,
    /// The queues the agent serves.
    pub queues: Vec<QueueId>,
    /// The registrar user, for an agent that REGISTERs.
    pub user: Option<String>,
    /// The static URI taken apart for dialling, for a static agent.
    pub uri: Option<AgentUri>,
    /// The caller IDs this agent's callbacks may present (empty: any of the
    /// organisation's).
    pub callback_numbers: Vec<PhoneNumber>,
}

impl AgentSettings {
    /// The roster's agent for this entry: available, idle since `now`.
    pub fn agent(&self, now: Instant) -> Agent {
        Agent::new(
            self.id.clone(),
            self.contact.clone(),
            self.queues.clone(),
            now,
        )
        .with_callback_numbers(self.callback_numbers.clone())
    }
}

/// The registrar, present when some agent REGISTERs.
#[derive(Debug, Clone)]
pub struct RegistrarSetup {
    /// `[registrar]`'s settings.
    pub settings: RegistrarSettings,
    /// Every registering agent's user and password.
    pub users: Vec<(String, Secret)>,
}

impl Config {
    /// Runs every value rule, checks that the prompt files exist under
    /// `base_dir` (the directory relative paths are resolved against), and
    /// converts each section once into [`Settings`]. The errors are those
    /// of [`Config::validate`], field by field.
    pub fn check(self, base_dir: &Path) -> Result<Settings, ConfigError> {
        self.validate(base_dir)?;
        let source = self.clone();
        let mut settings = self.convert(base_dir);
        settings.source = source;
        Ok(settings)
    }

    /// Step 4: the conversions, on values the rules accepted. Each `expect`
    /// below names the rule of `check_sections` that makes it hold.
    fn convert(self, base_dir: &Path) -> Settings {
        let org = &self.org;
        let org_settings = OrgSettings {
            hours: org
                .business_hours()
                .expect("org.hours and org.timezone passed check_sections"),
            gates: org.gates(),
            number_policy: org.number_policy(),
            spoken_international_prefix: org.spoken_international_prefix,
            callback_numbers: org
                .callback_numbers
                .iter()
                .map(|n| number::own_number(n).expect("org.callback_numbers: OrgConfig::check"))
                .collect(),
            calling_window: CallingWindow::parse(&org.calling_window)
                .expect("org.calling_window: OrgConfig::check"),
            auto_callback_lines: org.auto_callback_lines,
            frozen: org.frozen,
            rules: self.missed_call_rules.iter().map(|r| r.rule(org)).collect(),
        };
        let mut acd = Acd::new();
        let mut queues = Vec::with_capacity(self.queues.len());
        let mut schedules = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            acd.add_queue(Queue::new(q.id.clone(), q.priority), q.staffed_agents)
                .expect("queue ids are unique: check_queues");
            schedules.push(q.schedule(org).expect("queue hours: check_queues"));
            queues.push(QueueSettings {
                id: q.id.clone(),
                priority: q.priority,
                offer_after: q.offer_after(),
                callback_expiry: q.callback_expiry(),
                hours: q.hours(org).expect("queue hours: check_queues"),
                dids: q.dids.clone(),
                caller_id: q.caller_id().expect("callback_number: check_queues"),
                recording: q.recording,
                recording_notice: q.recording_notice,
                agent_cooldown: q.agent_cooldown(),
                gates: Gates {
                    registration_enabled: q.registration_enabled,
                    launch_enabled: q.launch_enabled,
                },
                staffed_agents: q.staffed_agents,
            });
        }
        let scheduler = Scheduler::new(org_settings.hours.clone(), schedules)
            .expect("queue ids unique and failovers configured: check_queues")
            .with_calling_window(org_settings.calling_window);
        let agents = self
            .agents
            .iter()
            .map(|a| AgentSettings {
                id: a.id.clone(),
                contact: a.contact(&self.sip),
                queues: a.queues.clone(),
                user: a.user.clone(),
                uri: a
                    .uri
                    .as_deref()
                    .map(|uri| AgentUri::parse(uri).expect("static agent URIs: check_agents")),
                callback_numbers: a
                    .callback_numbers
                    .iter()
                    .map(|n| number::own_number(n).expect("agents' callback_numbers: check_agents"))
                    .collect(),
            })
            .collect();
        let users = self.registrar_users();
        let registrar = (!users.is_empty()).then(|| RegistrarSetup {
            settings: RegistrarSettings {
                guard: self.edge.guard(),
                ..self.registrar.settings()
            },
            users,
        });
        Settings {
            source: Config::default(),
            base_dir: base_dir.to_owned(),
            prompt_files: self.prompt_files(base_dir),
            store_path: self.store_path(base_dir),
            org: org_settings,
            estimator: Estimator::new(self.ecbt.settings()).expect("[ecbt] passed its check"),
            trunk: self.trunk.settings().expect("[trunk] passed its check"),
            trunk_dns_servers: self.trunk.dns_servers.clone(),
            registrar,
            queues,
            acd,
            scheduler,
            rtp_ports: PortPool::new(self.rtp.port_min, self.rtp.port_max)
                .expect("rtp.port_min/port_max: even, nonzero, min < max")
                .with_rest(PortPool::DEFAULT_REST),
            agents,
            origin: self.origin,
            sip: self.sip,
            rtp: self.rtp,
            media: self.media,
            acl: self.acl,
            edge: self.edge,
            call: self.call,
            log: self.log,
            api: self.api,
            ivr: self.ivr,
            callbacks: self.callbacks,
            webhooks: self.webhooks,
        }
    }

    /// Binds SIP to port 0 (the system picks a free port; the engine
    /// advertises the one it got) and lets [`Config::check`] accept it.
    /// For tests and embedders that run several engines side by side: a
    /// configuration file cannot ask for this, because a daemon must listen
    /// somewhere known (`sip.bind` of port 0 in a file stays refused).
    pub fn bind_ephemeral_sip_port(&mut self) {
        self.sip.bind.set_port(0);
        self.ephemeral_sip_port = true;
    }

    /// `sip.bind`'s port-0 rule, waived by [`Config::bind_ephemeral_sip_port`].
    pub(super) fn check_bind_port(&self) -> Result<(), super::Fault> {
        if self.sip.bind.port() == 0 && !self.ephemeral_sip_port {
            return super::fail("sip.bind", Invalid::PortZero);
        }
        Ok(())
    }
}

impl Settings {
    /// The name errors and logs use for the configuration (its file).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The directory relative paths were resolved against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// `[sip]`.
    pub fn sip(&self) -> &SipConfig {
        &self.sip
    }

    /// `[rtp]`.
    pub fn rtp(&self) -> &RtpConfig {
        &self.rtp
    }

    /// `[media]`.
    pub fn media(&self) -> &MediaConfig {
        &self.media
    }

    /// Every prompt and its file, resolved (each exists at check): the
    /// standard ones, then those the missed-call rules name.
    pub fn prompt_files(&self) -> &[(String, PathBuf)] {
        &self.prompt_files
    }

    /// `[acl]`.
    pub fn acl(&self) -> &AclConfig {
        &self.acl
    }

    /// `[call]`.
    pub fn call(&self) -> &CallConfig {
        &self.call
    }

    /// `[edge]`.
    pub fn edge(&self) -> &EdgeConfig {
        &self.edge
    }

    /// How many calls fit under an open-files limit of `open_files`.
    pub fn capacity(&self, open_files: u64) -> Capacity {
        Capacity::new(
            open_files,
            &self.edge,
            &self.rtp,
            &self.call,
            &self.callbacks,
        )
    }

    /// [`Settings::capacity`], refusing `call.max_calls` when it does not fit.
    pub fn check_capacity(&self, open_files: u64) -> Result<Capacity, ConfigError> {
        let capacity = self.capacity(open_files);
        capacity
            .check()
            .map_err(|(field, reason)| ConfigError::Invalid {
                origin: self.origin.clone(),
                field,
                reason,
            })?;
        Ok(capacity)
    }

    /// `[log]`.
    pub fn log(&self) -> &LogConfig {
        &self.log
    }

    /// `[api]`.
    pub fn api(&self) -> &ApiConfig {
        &self.api
    }

    /// The SQLite file of the callback store, resolved.
    pub fn store_path(&self) -> &Path {
        &self.store_path
    }

    /// `[ivr]`.
    pub fn ivr(&self) -> &IvrConfig {
        &self.ivr
    }

    /// `[callbacks]`.
    pub fn callbacks(&self) -> &CallbacksConfig {
        &self.callbacks
    }

    /// `[webhooks]`.
    pub fn webhooks(&self) -> &WebhooksConfig {
        &self.webhooks
    }

    /// Where recordings go, resolved.
    pub fn recordings_dir(&self) -> PathBuf {
        self.callbacks.recordings_dir(&self.base_dir)
    }

    /// `[org]`, typed.
    pub fn org(&self) -> &OrgSettings {
        &self.org
    }

    /// A fresh estimator with `[ecbt]`'s settings.
    pub fn estimator(&self) -> Estimator {
        self.estimator.clone()
    }

    /// `[trunk]`, typed.
    pub fn trunk(&self) -> &TrunkSettings {
        &self.trunk
    }

    /// The DNS servers for the trunk's termination (empty: the system's).
    pub fn trunk_dns_servers(&self) -> &[SocketAddr] {
        &self.trunk_dns_servers
    }

    /// The registrar, when some agent REGISTERs.
    pub fn registrar(&self) -> Option<&RegistrarSetup> {
        self.registrar.as_ref()
    }

    /// `[[queues]]`, typed, in file order.
    pub fn queues(&self) -> &[QueueSettings] {
        &self.queues
    }

    /// Which queue each dialled number goes to (the one routing rule; the
    /// controller asks it for every inbound call).
    pub fn routes(&self) -> Routes {
        Routes {
            by_did: self
                .queues
                .iter()
                .enumerate()
                .flat_map(|(i, q)| q.dids.iter().map(move |d| (d.clone(), i)))
                .collect(),
            default: 0,
        }
    }

    /// A fresh ACD with every queue and its staffing.
    pub fn acd(&self) -> Acd {
        self.acd.clone()
    }

    /// A fresh scheduler over the organisation's and the queues' hours.
    pub fn scheduler(&self) -> Scheduler {
        self.scheduler.clone()
    }

    /// A fresh RTP port pool over `[rtp]`'s range, starting at a random
    /// pair (a restarted process must not hand out first the ports its
    /// killed predecessor's calls are still streaming to).
    pub fn rtp_ports(&self) -> PortPool {
        self.rtp_ports.clone().start_at(fastrand::usize(..))
    }

    /// Whether a callback of `queue` may ask to present `asked`: it must be
    /// one of the organisation's callback numbers (`[org] callback_numbers`,
    /// or without that list one of the queues' own numbers), and when the
    /// queue has agents, one of them must be allowed to present it (an agent
    /// restricted to other numbers never takes it).
    pub fn check_caller_id(
        &self,
        queue: &QueueId,
        asked: &PhoneNumber,
    ) -> Result<(), CallerIdRefused> {
        let listed = if self.org.callback_numbers.is_empty() {
            self.queues.iter().any(|q| q.caller_id == *asked)
        } else {
            self.org.callback_numbers.contains(asked)
        };
        if !listed {
            return Err(CallerIdRefused::NotACallbackNumber);
        }
        let mut serving = self.agents.iter().filter(|a| a.queues.contains(queue));
        let mut any = false;
        let allowed = serving.any(|a| {
            any = true;
            a.callback_numbers.is_empty() || a.callback_numbers.contains(asked)
        });
        if any && !allowed {
            return Err(CallerIdRefused::NoAgentMayPresent);
        }
        Ok(())
    }

    /// `[[agents]]`, typed, in file order.
    pub fn agents(&self) -> &[AgentSettings] {
        &self.agents
    }

    /// The agent roster, every agent available and idle since `now`, with
    /// `[callbacks] max_lines`. Registered agents start unreachable until
    /// their phone REGISTERs.
    pub fn roster(&self, now: Instant) -> Agents {
        let mut roster = Agents::new(self.callbacks.max_lines);
        for agent in &self.agents {
            roster
                .add(agent.agent(now))
                // check_agents refused duplicate ids.
                .expect("agent ids are unique: check_agents");
        }
        roster
    }
}

/// Why a callback may not present the caller ID it asks for
/// ([`Settings::check_caller_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallerIdRefused {
    /// Not one of the organisation's callback numbers.
    #[error("not one of the organisation's callback numbers")]
    NotACallbackNumber,
    /// Every agent of the queue is restricted to other numbers.
    #[error("no agent of the queue may present it")]
    NoAgentMayPresent,
}

/// DID routing: a call to a number listed in a queue's `dids` goes to that
/// queue, any other to the first queue (validation refuses a DID listed
/// twice, and a configuration without queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    by_did: std::collections::HashMap<String, usize>,
    /// Where any other number goes: the first queue.
    default: usize,
}

impl Routes {
    /// The index (into [`Settings::queues`]) of the queue a call to
    /// `called_user` (the Request-URI or To user part) goes to. A leading
    /// `+` is ignored; otherwise the digits must match exactly.
    pub fn queue_for(&self, called_user: &str) -> usize {
        let digits = called_user.strip_prefix('+').unwrap_or(called_user);
        self.by_did.get(digits).copied().unwrap_or(self.default)
    }

    /// The same routes with each queue index `i` replaced by `index[i]`
    /// (the caller keeps queues in an order of its own). An index beyond
    /// `index` stays as it is.
    pub fn renumbered(&self, index: &[usize]) -> Routes {
        let map = |i: usize| index.get(i).copied().unwrap_or(i);
        Routes {
            by_did: self
                .by_did
                .iter()
                .map(|(d, &i)| (d.clone(), map(i)))
                .collect(),
            default: map(self.default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn check_converts_each_section_once() {
        let s = checked(parse(TWO_QUEUES).expect("two queues"));
        assert_eq!(s.origin(), "config.toml");
        assert_eq!(s.queues().len(), 2);
        assert_eq!(s.queues()[0].offer_after, Duration::ZERO);
        assert_eq!(s.sip().t1(), Duration::from_millis(500));
        assert_eq!(
            s.store_path(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("callbackd.sqlite")
        );
        assert_eq!(s.prompt_files().len(), crate::config::PROMPT_NAMES.len());
        assert!(s.registrar().is_none(), "no agent registers");
    }

    #[test]
    fn a_callback_may_present_an_org_number_an_agent_of_its_queue_may() {
        let queues = "[[queues]]\nid = \"support\"\ncallback_number = \"3125550100\"\n\
                      [[queues]]\nid = \"sales\"\ncallback_number = \"3125550200\"\n";
        let agent = |id: &str, queue: &str, numbers: &str| {
            format!(
                "[[agents]]\nid = \"{id}\"\nuri = \"sip:{id}@127.0.0.1\"\n\
                 queues = [\"{queue}\"]\ncallback_numbers = [{numbers}]\n"
            )
        };
        let n = |d: &str| number::own_number(d).expect("own number");
        let (support, sales) = (QueueId("support".into()), QueueId("sales".into()));
        // No central list: the queues' own numbers are the set.
        let s = checked(parse(queues).expect("queues"));
        assert_eq!(s.check_caller_id(&support, &n("3125550200")), Ok(()));
        assert_eq!(
            s.check_caller_id(&support, &n("8005550100")),
            Err(CallerIdRefused::NotACallbackNumber)
        );
        // A list: only its numbers; a queue whose every agent is restricted
        // to others refuses the rest; a queue without agents does not.
        let org = "[org]\ncallback_numbers = [\"3125550100\", \"3125550200\", \"8005550100\"]\n";
        let s = checked(
            parse(&format!(
                "{org}{queues}{}{}",
                agent("alice", "support", "\"3125550100\""),
                agent("bob", "support", "\"3125550200\"")
            ))
            .expect("restricted agents"),
        );
        assert_eq!(s.check_caller_id(&support, &n("3125550200")), Ok(()));
        assert_eq!(
            s.check_caller_id(&support, &n("8005550100")),
            Err(CallerIdRefused::NoAgentMayPresent)
        );
        assert_eq!(s.check_caller_id(&sales, &n("8005550100")), Ok(()));
        assert_eq!(
            s.check_caller_id(&sales, &n("2125550100")),
            Err(CallerIdRefused::NotACallbackNumber)
        );
        assert_eq!(s.agents()[1].callback_numbers, [n("3125550200")]);
        assert_eq!(s.org().callback_numbers.len(), 3);
    }

    #[test]
    fn routes_go_by_did_else_to_the_first_queue() {
        let s = checked(parse(TWO_QUEUES).expect("two queues"));
        let routes = s.routes();
        let queue = |called: &str| s.queues()[routes.queue_for(called)].id.as_str().to_owned();
        assert_eq!(queue("8005550199"), "sales");
        assert_eq!(queue("+8005550199"), "sales");
        assert_eq!(queue("3125550100"), "support");
        assert_eq!(queue("8005550100"), "support");
        // No queue claims these: the first queue takes them.
        for other in [
            "9995550100",
            "800555019",
            "80055501990",
            "",
            "callbackd",
            "+",
        ] {
            assert_eq!(queue(other), "support", "{other:?}");
        }
        let reordered = TWO_QUEUES.replacen("id = \"support\"", "id = \"helpdesk\"", 1);
        let s = checked(parse(&reordered).expect("renamed"));
        assert_eq!(
            s.queues()[s.routes().queue_for("unknown")].id.as_str(),
            "helpdesk"
        );
        let s = checked(Config::default());
        assert_eq!(
            s.queues()[s.routes().queue_for("3125550100")].id.as_str(),
            "support"
        );
    }

    #[test]
    fn check_refuses_what_validation_refuses() {
        let mut c = Config::default();
        c.rtp.port_min = 20_001;
        let e = c
            .check(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect_err("odd port")
            .to_string();
        assert!(
            e.starts_with("<built-in defaults>: rtp.port_min: 20001 is odd"),
            "{e}"
        );
    }

    #[test]
    fn check_refuses_missing_prompts() {
        let dir = TempDir::new();
        let e = Config::default()
            .check(&dir.0)
            .expect_err("no prompts")
            .to_string();
        assert!(e.contains("prompts: missing prompt file"), "{e}");
    }

    #[test]
    fn sip_port_zero_only_through_the_builder() {
        let e = error("[sip]\nbind = \"127.0.0.1:0\"\n");
        assert!(e.starts_with("config.toml: sip.bind:"), "{e}");
        let mut c = Config::default();
        c.sip.bind.set_port(0);
        assert!(
            c.clone()
                .check(Path::new(env!("CARGO_MANIFEST_DIR")))
                .is_err(),
            "set in code without asking: still refused"
        );
        c.bind_ephemeral_sip_port();
        let s = checked(c);
        assert_eq!(s.sip().bind.port(), 0);
    }
}
