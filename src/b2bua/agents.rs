//! The engine's agent roster: the pure [`Agents`] of the configuration, the
//! [`Registrar`] their phones REGISTER with, and where an agent's INVITE goes.
//!
//! ```text
//!  Event::Register ─▶ Registrar (digest, expiry, 423) ─▶ Endpoint::respond
//!                         │ RegistrarEvent::Registered / Unregistered
//!                         ▼
//!                     Agents::set_reachable ─▶ offered work / not
//!  poll_timeout/handle_timeout: lapsed bindings ─▶ Unregistered ─▶ unreachable
//!
//!  dial_target(agent): static URI  ─▶ Request-URI = the URI, next hop = its host
//!                                      (IP as is, a name resolved, RFC 3263 §4)
//!                      registered  ─▶ Request-URI = the binding's Contact,
//!                                      next hop = the flow its REGISTER came
//!                                      on (behind NAT: the public address)
//! ```
//!
//! The registrar runs only when at least one agent has a `user` (see
//! [`Roster::registrar_enabled`]); the core then sets
//! [`crate::sip::endpoint::EndpointConfig::registrar`] so REGISTERs reach it,
//! and REGISTER keeps its 405 otherwise.
//!
//! Like the call layer, the roster reads no clock: the core passes `now`
//! (and the wall clock for the 200's Date header).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use jiff::Timestamp;
use tracing::{debug, info, warn};

use crate::acd::agents::{AgentError, AgentId, AgentState, Agents, Contact};
use crate::config::{AgentUri, Host, Settings};
use crate::sip::endpoint::{ALLOW, Destination, Endpoint, Flow, FlowTransport, ServerTx};
use crate::sip::message::Request;
use crate::sip::registrar::{
    ConnectionHold, KeepAlive, RegisterOutcome, Registrar, RegistrarEvent,
};

/// The agents, their registrations, and how to reach each.
#[derive(Debug)]
pub struct Roster {
    agents: Agents,
    /// `None` when no agent registers.
    registrar: Option<Registrar>,
    /// Registrar user → the agent it belongs to.
    by_user: HashMap<String, AgentId>,
    /// Static agents' URIs, taken apart for dialling.
    static_uris: HashMap<AgentId, AgentUri>,
    /// Agents deleted from the organisation while ringing or talking: they
    /// serve no queue and go once their call ends.
    retiring: Vec<AgentId>,
    /// Keys the nonces of a registrar created at run time.
    nonce_key: [u8; 32],
}

/// Where an agent's INVITE goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget {
    /// The Request-URI (and To): the static URI, or the registered Contact.
    pub request_uri: String,
    /// The first hop; for a registered agent the flow of its REGISTER.
    pub next_hop: Destination,
    /// A registered agent: the whole dialog stays on the REGISTER's flow
    /// ([`OutboundInvite::stay_on_flow`](crate::sip::uac::OutboundInvite::stay_on_flow)).
    pub stay_on_flow: bool,
}

/// Why an agent cannot be dialled now (a local fault of the caller, or the
/// agent being offline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// No agent with this id.
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    /// A registering agent without a live binding.
    #[error("agent {0} is not registered")]
    NotRegistered(AgentId),
}

/// One agent as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// The agent.
    pub id: AgentId,
    /// Its state; a cool-down that is over reads as
    /// [`AgentState::Available`].
    pub state: AgentState,
    /// Static, or registered with a live binding.
    pub reachable: bool,
}

impl AgentStatus {
    /// The state's name: `available`, `ringing`, `on_call`, `paused` or
    /// `cooling_down`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            AgentState::Available => "available",
            AgentState::Ringing(_) => "ringing",
            AgentState::OnCall(_) => "on_call",
            AgentState::Paused => "paused",
            AgentState::CoolingDown { .. } => "cooling_down",
        }
    }
}

impl Roster {
    /// The roster of `settings`'s `[[agents]]`, all available since `now`;
    /// a registrar with `[registrar]`'s settings when any agent registers.
    /// `nonce_key` keys the digest nonces ([`random_nonce_key`] in
    /// production, a fixed one in tests).
    pub fn new(settings: &Settings, nonce_key: [u8; 32], now: Instant) -> Roster {
        let mut by_user = HashMap::new();
        let mut static_uris = HashMap::new();
        for agent in settings.agents() {
            if let Some(user) = &agent.user {
                by_user.insert(user.clone(), agent.id.clone());
            }
            if let Some(uri) = &agent.uri {
                static_uris.insert(agent.id.clone(), uri.clone());
            }
        }
        let registrar = settings
            .registrar()
            .map(|r| Registrar::new(r.settings.clone(), r.users.clone(), nonce_key, now));
        Roster {
            agents: settings.roster(now),
            registrar,
            by_user,
            static_uris,
            retiring: Vec::new(),
            nonce_key,
        }
    }

    /// Takes the agents of `settings` (the organisation changed at run
    /// time): new agents are added (available), kept ones keep their state
    /// and registrations with their new queues and contact, deleted ones go
    /// — at once when idle, after their call otherwise (serving no queue
    /// meanwhile). The registrar's users follow (a deleted user's bindings
    /// go; the first registering agent creates the registrar).
    pub fn apply_settings(&mut self, now: Instant, settings: &Settings) {
        match (settings.registrar(), &mut self.registrar) {
            (Some(setup), Some(registrar)) => registrar.set_users(setup.users.clone()),
            (Some(setup), None) => {
                self.registrar = Some(Registrar::new(
                    setup.settings.clone(),
                    setup.users.clone(),
                    self.nonce_key,
                    now,
                ));
            }
            (None, Some(registrar)) => registrar.set_users([]),
            (None, None) => {}
        }
        self.by_user.clear();
        self.static_uris.clear();
        for agent in settings.agents() {
            if let Some(user) = &agent.user {
                self.by_user.insert(user.clone(), agent.id.clone());
            }
            if let Some(uri) = &agent.uri {
                self.static_uris.insert(agent.id.clone(), uri.clone());
            }
            let known = self.agents.get(&agent.id).is_some();
            let outcome = if known {
                self.agents
                    .reconfigure(&agent.id, agent.contact.clone(), agent.queues.clone())
                    .and_then(|()| {
                        self.agents
                            .set_callback_numbers(&agent.id, agent.callback_numbers.clone())
                    })
            } else {
                self.agents.add(agent.agent(now))
            };
            if let Err(e) = outcome {
                warn!(agent = %agent.id, error = %e, "agent not updated");
                continue;
            }
            if let (Some(user), Some(registrar)) = (&agent.user, &self.registrar) {
                let bound = registrar.lookup(user, now).next().is_some();
                let _ = self.agents.set_reachable(&agent.id, bound);
            }
        }
        let gone: Vec<AgentId> = self
            .agents
            .iter()
            .map(|a| a.id().clone())
            .filter(|id| !settings.agents().iter().any(|a| a.id == *id))
            .collect();
        for id in gone {
            if let Some(agent) = self.agents.get(&id) {
                let contact = agent.contact().clone();
                // Serves nothing from now on: offered no new work.
                let _ = self.agents.reconfigure(&id, contact, Vec::new());
            }
            if !self.retiring.contains(&id) {
                self.retiring.push(id);
            }
        }
        self.remove_retired();
        self.apply_registrar_events();
    }

    /// Removes the deleted agents whose call has ended.
    fn remove_retired(&mut self) {
        let agents = &mut self.agents;
        self.retiring.retain(|id| match agents.remove(id) {
            Ok(_) => {
                info!(agent = %id, "agent removed");
                false
            }
            Err(AgentError::RemoveBusy(_)) => true,
            Err(_) => false,
        });
    }

    /// The registrar's brute-force protection counts (zero without one).
    pub fn guard_stats(&self) -> crate::sip::registrar::GuardStats {
        self.registrar
            .as_ref()
            .map(Registrar::guard_stats)
            .unwrap_or_default()
    }

    /// Whether REGISTERs are handled here (some agent registers).
    pub fn registrar_enabled(&self) -> bool {
        self.registrar.is_some()
    }

    /// The agents (states, lines, who is free).
    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    /// The agents, to reserve, release or pause them.
    pub fn agents_mut(&mut self) -> &mut Agents {
        &mut self.agents
    }

    /// Decides a REGISTER (RFC 3261 §10.3) that arrived on `source`, and
    /// marks its agent reachable or not when its registration changed.
    /// `date` is the wall clock for the 200's Date header. Without a
    /// registrar: 405.
    pub fn handle_register(
        &mut self,
        now: Instant,
        date: Timestamp,
        request: &Request,
        source: Flow,
    ) -> RegisterOutcome {
        let Some(registrar) = &mut self.registrar else {
            return RegisterOutcome {
                status: 405,
                headers: vec![("Allow", ALLOW.to_owned())],
                user: None,
            };
        };
        let outcome = registrar.handle_register(now, date, request, source);
        match outcome.status {
            200 => debug!(user = ?outcome.user, remote = %source.remote, "REGISTER accepted"),
            401 => debug!(remote = %source.remote, "REGISTER challenged"),
            status => info!(
                status,
                user = ?outcome.user,
                remote = %source.remote,
                call_id = %request.headers.call_id,
                "REGISTER refused"
            ),
        }
        self.apply_registrar_events();
        outcome
    }

    /// [`Roster::handle_register`] for an [`crate::sip::endpoint::Event::Register`],
    /// answered through its server transaction.
    pub fn answer_register(
        &mut self,
        now: Instant,
        date: Timestamp,
        request: &Request,
        source: Flow,
        tx: ServerTx,
        endpoint: &mut Endpoint,
    ) {
        let outcome = self.handle_register(now, date, request, source);
        let headers: Vec<(&str, &str)> = outcome
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        if let Err(e) = endpoint.respond(now, tx, outcome.status, &headers) {
            warn!(error = %e, "cannot answer a REGISTER");
        }
    }

    /// When the next registration lapses.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.registrar.as_ref().and_then(Registrar::poll_timeout)
    }

    /// Drops the registrations that lapsed by `now`; their agents become
    /// unreachable.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(registrar) = &mut self.registrar {
            registrar.handle_timeout(now);
        }
        self.apply_registrar_events();
        if !self.retiring.is_empty() {
            self.remove_retired();
        }
    }

    /// A message arrived on `source` at `now`: a phone registered from
    /// there is alive (keep-alives, see [`crate::sip::registrar`]).
    pub fn heard_from(&mut self, now: Instant, source: Flow) {
        if let (Some(registrar), FlowTransport::Udp) = (&mut self.registrar, source.transport) {
            registrar.heard_from(now, source.remote);
        }
    }

    /// The next keep-alive to send to a registered phone.
    pub fn poll_keepalive(&mut self) -> Option<KeepAlive> {
        self.registrar.as_mut()?.poll_keepalive()
    }

    /// The next TCP connection that started or stopped carrying a
    /// registration.
    pub fn poll_connection_hold(&mut self) -> Option<ConnectionHold> {
        self.registrar.as_mut()?.poll_connection_hold()
    }

    /// Where to send agent `id`'s INVITE at `now`: a static agent's URI and
    /// host; a registered agent's most recently refreshed binding, sent
    /// back on the flow its REGISTER came from.
    pub fn dial_target(&self, id: &AgentId, now: Instant) -> Result<DialTarget, DialError> {
        let agent = self
            .agents
            .get(id)
            .ok_or_else(|| DialError::UnknownAgent(id.clone()))?;
        match agent.contact() {
            Contact::Static(_) => {
                let uri = self
                    .static_uris
                    .get(id)
                    .ok_or_else(|| DialError::UnknownAgent(id.clone()))?;
                Ok(DialTarget {
                    request_uri: uri.uri.clone(),
                    next_hop: static_next_hop(uri),
                    stay_on_flow: false,
                })
            }
            Contact::Registered { .. } => {
                let binding = self
                    .by_user
                    .iter()
                    .find(|(_, agent)| *agent == id)
                    .zip(self.registrar.as_ref())
                    .and_then(|((user, _), registrar)| registrar.lookup(user, now).next())
                    .ok_or_else(|| DialError::NotRegistered(id.clone()))?;
                Ok(DialTarget {
                    request_uri: binding.contact.to_string(),
                    next_hop: flow_destination(binding.flow),
                    stay_on_flow: true,
                })
            }
        }
    }

    /// Every agent with its state and reachability at `now`, in id order.
    pub fn status(&self, now: Instant) -> Vec<AgentStatus> {
        self.agents
            .iter()
            .map(|agent| AgentStatus {
                id: agent.id().clone(),
                state: match agent.state() {
                    AgentState::CoolingDown { until } if until <= now => AgentState::Available,
                    state => state,
                },
                reachable: agent.is_reachable(),
            })
            .collect()
    }

    /// Carries the registrar's changes over to the agents.
    fn apply_registrar_events(&mut self) {
        let Some(registrar) = &mut self.registrar else {
            return;
        };
        while let Some(event) = registrar.poll_event() {
            let (user, reachable) = match event {
                RegistrarEvent::Registered { user } => (user, true),
                RegistrarEvent::Unregistered { user } => (user, false),
            };
            let Some(id) = self.by_user.get(&user) else {
                continue;
            };
            match self.agents.set_reachable(id, reachable) {
                Ok(()) => info!(agent = %id, user, reachable, "agent registration changed"),
                Err(e) => warn!(agent = %id, error = %e, "registration for a missing agent"),
            }
        }
    }
}

/// A key for the registrar's nonces, from the operating system's
/// randomness: four SipHash outputs keyed by std's per-process random keys
/// (no extra dependency; the key never leaves the process).
pub fn random_nonce_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_usize(i);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    key
}

/// The first hop of a static URI (RFC 3263 §4.2: an IP address is used as
/// is; a name is resolved).
fn static_next_hop(uri: &AgentUri) -> Destination {
    match &uri.host {
        Host::Ip(ip) => {
            let addr = std::net::SocketAddr::new(*ip, uri.port.unwrap_or(5060));
            if uri.tcp {
                Destination::Tcp {
                    conn: None,
                    remote: addr,
                }
            } else {
                Destination::Udp(addr)
            }
        }
        Host::Name(name) => Destination::Resolve {
            host: name.as_str().into(),
            port: uri.port,
            tcp: uri.tcp,
        },
    }
}

/// Back where a message came from: the UDP source, or its TCP connection.
fn flow_destination(flow: Flow) -> Destination {
    match flow.transport {
        FlowTransport::Udp => Destination::Udp(flow.remote),
        FlowTransport::Tcp(conn) => Destination::Tcp {
            conn: Some(conn),
            remote: flow.remote,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::acd::agents::Work;
    use crate::callback::CallbackId;
    use crate::config::{Config, ConfigError};
    use crate::sip::digest::{Credentials, DigestRequest};
    use crate::sip::message::{Message, Response, parse};

    const CONFIG: &str = r#"
        [registrar]
        min_expires_s = 60
        # Keep-alives are shown in sip::registrar and tests/controller.rs.
        nat_keepalive_s = 0
        [[queues]]
        id = "support"
        [[agents]]
        id = "alice"
        uri = "sip:1001@192.0.2.10:5080"
        queues = ["support"]
        [[agents]]
        id = "carol"
        uri = "sip:1002@pbx.example.com;transport=tcp"
        queues = ["support"]
        [[agents]]
        id = "bob"
        user = "bob"
        password = "s3cret"
        queues = ["support"]
    "#;

    fn roster(text: &str, t0: Instant) -> Roster {
        let settings = Config::from_toml_str(text, "test")
            .and_then(|c| c.check(Path::new(env!("CARGO_MANIFEST_DIR"))))
            .expect("valid config");
        Roster::new(&settings, [7; 32], t0)
    }

    fn id(s: &str) -> AgentId {
        AgentId(s.into())
    }

    fn date() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    /// Bob's phone behind a NAT: Contact 192.168.1.20, packets from
    /// 203.0.113.9:41000.
    fn nat() -> Flow {
        Flow {
            remote: "203.0.113.9:41000".parse().expect("addr"),
            transport: FlowTransport::Udp,
        }
    }

    fn register(cseq: u32, headers: &str) -> Request {
        let text = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-r{cseq}\r\n\
             From: <sip:bob@127.0.0.1>;tag=b1\r\nTo: <sip:bob@127.0.0.1>\r\n\
             Call-ID: bob-reg\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:bob@192.168.1.20:5060>\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("fixture does not parse: {other:?}"),
        }
    }

    /// REGISTERs as bob: unauthenticated first, then answers the 401.
    fn register_bob(
        roster: &mut Roster,
        now: Instant,
        cseq: u32,
        headers: &str,
    ) -> RegisterOutcome {
        let first = register(cseq, headers);
        let outcome = roster.handle_register(now, date(), &first, nat());
        assert_eq!(outcome.status, 401, "challenged first");
        let challenge = response_to(&first, &outcome);
        let answer = authorization(&challenge);
        let second = register(cseq + 1, &format!("{headers}Authorization: {answer}\r\n"));
        roster.handle_register(now, date(), &second, nat())
    }

    /// The response the endpoint would send for `outcome`, parsed back.
    fn response_to(request: &Request, outcome: &RegisterOutcome) -> Response {
        let mut builder = request.response(outcome.status, Some("t"));
        for (name, value) in &outcome.headers {
            builder = builder.header(name, value);
        }
        match parse(&builder.finish(None, b"")) {
            Ok(Message::Response(response)) => response,
            other => panic!("response does not parse: {other:?}"),
        }
    }

    fn authorization(challenge: &Response) -> String {
        Credentials::new("bob", "s3cret")
            .answer(
                challenge,
                &DigestRequest {
                    method: "REGISTER",
                    uri: "sip:127.0.0.1",
                    body: b"",
                },
                "c0ffee",
                1,
            )
            .expect("answers the challenge")
            .value
            .to_string()
    }

    fn reachable(roster: &Roster, agent: &str, now: Instant) -> bool {
        roster
            .status(now)
            .iter()
            .find(|s| s.id == id(agent))
            .expect("listed")
            .reachable
    }

    #[test]
    fn static_agents_dial_their_uri_host() {
        let t0 = Instant::now();
        let roster = roster(CONFIG, t0);
        assert_eq!(
            roster.dial_target(&id("alice"), t0),
            Ok(DialTarget {
                request_uri: "sip:1001@192.0.2.10:5080".into(),
                next_hop: Destination::Udp("192.0.2.10:5080".parse().expect("addr")),
                stay_on_flow: false,
            })
        );
        assert_eq!(
            roster.dial_target(&id("carol"), t0),
            Ok(DialTarget {
                request_uri: "sip:1002@pbx.example.com;transport=tcp".into(),
                next_hop: Destination::Resolve {
                    host: "pbx.example.com".into(),
                    port: None,
                    tcp: true,
                },
                stay_on_flow: false,
            })
        );
        let tcp_ip = AgentUri::parse("sip:7@[2001:db8::1];transport=tcp").expect("valid");
        assert_eq!(
            static_next_hop(&tcp_ip),
            Destination::Tcp {
                conn: None,
                remote: "[2001:db8::1]:5060".parse().expect("addr"),
            }
        );
    }

    #[test]
    fn registered_agent_is_reachable_at_its_binding_behind_nat() {
        let t0 = Instant::now();
        let mut roster = roster(CONFIG, t0);
        assert!(roster.registrar_enabled());
        assert!(!reachable(&roster, "bob", t0), "not registered yet");
        assert_eq!(
            roster.dial_target(&id("bob"), t0),
            Err(DialError::NotRegistered(id("bob")))
        );
        assert_eq!(
            roster
                .agents()
                .available_for(&crate::callback::QueueId("support".into()), t0),
            Some(&id("alice")),
        );

        let ok = register_bob(&mut roster, t0, 1, "Expires: 120\r\n");
        assert_eq!(ok.status, 200);
        assert!(
            ok.headers
                .contains(&("Contact", "<sip:bob@192.168.1.20:5060>;expires=120".into())),
            "{:?}",
            ok.headers
        );
        assert!(reachable(&roster, "bob", t0));
        assert_eq!(
            roster.dial_target(&id("bob"), t0),
            Ok(DialTarget {
                request_uri: "sip:bob@192.168.1.20:5060".into(),
                next_hop: Destination::Udp("203.0.113.9:41000".parse().expect("addr")),
                stay_on_flow: true,
            }),
            "the private Contact, reached through the NAT's public side"
        );

        // The binding lapses: the roster wakes up then and marks bob offline.
        let lapse = t0 + Duration::from_secs(120);
        assert_eq!(roster.poll_timeout(), Some(lapse));
        roster.handle_timeout(lapse - Duration::from_millis(1));
        assert!(reachable(&roster, "bob", lapse), "not before it lapses");
        roster.handle_timeout(lapse);
        assert!(!reachable(&roster, "bob", lapse));
        assert_eq!(roster.poll_timeout(), None);
        assert_eq!(
            roster.dial_target(&id("bob"), lapse),
            Err(DialError::NotRegistered(id("bob")))
        );
    }

    #[test]
    fn unregistering_makes_the_agent_unreachable() {
        let t0 = Instant::now();
        let mut roster = roster(CONFIG, t0);
        assert_eq!(register_bob(&mut roster, t0, 1, "").status, 200);
        assert!(reachable(&roster, "bob", t0));
        let gone = register_bob(&mut roster, t0, 3, "Expires: 0\r\n");
        assert_eq!(gone.status, 200);
        assert!(!reachable(&roster, "bob", t0));
    }

    #[test]
    fn rejects_too_brief_registration_with_423() {
        let t0 = Instant::now();
        let mut roster = roster(CONFIG, t0);
        let outcome = register_bob(&mut roster, t0, 1, "Expires: 59\r\n");
        assert_eq!(outcome.status, 423);
        assert_eq!(outcome.headers, [("Min-Expires", "60".to_owned())]);
        assert!(!reachable(&roster, "bob", t0));
    }

    #[test]
    fn rejects_wrong_password_without_registering() {
        let t0 = Instant::now();
        let mut roster = roster(CONFIG, t0);
        let first = register(1, "");
        let outcome = roster.handle_register(t0, date(), &first, nat());
        assert_eq!(outcome.status, 401);
        let challenge = response_to(&first, &outcome);
        let guess = Credentials::new("bob", "guess")
            .answer(
                &challenge,
                &DigestRequest {
                    method: "REGISTER",
                    uri: "sip:127.0.0.1",
                    body: b"",
                },
                "c0ffee",
                1,
            )
            .expect("answers")
            .value;
        let second = register(2, &format!("Authorization: {guess}\r\n"));
        assert_eq!(
            roster.handle_register(t0, date(), &second, nat()).status,
            401
        );
        assert!(!reachable(&roster, "bob", t0));
        assert_eq!(
            roster.dial_target(&id("bob"), t0),
            Err(DialError::NotRegistered(id("bob")))
        );
    }

    #[test]
    fn without_registering_agents_there_is_no_registrar() {
        let t0 = Instant::now();
        let mut roster = roster(
            "[[agents]]\nid = \"alice\"\nuri = \"sip:1@127.0.0.1\"\nqueues = [\"support\"]\n",
            t0,
        );
        assert!(!roster.registrar_enabled());
        let outcome = roster.handle_register(t0, date(), &register(1, ""), nat());
        assert_eq!(outcome.status, 405);
        assert_eq!(outcome.headers, [("Allow", ALLOW.to_owned())]);
        assert_eq!(roster.poll_timeout(), None);
    }

    #[test]
    fn status_lists_every_agent_with_state_and_reachability() {
        let t0 = Instant::now();
        let mut roster = roster(CONFIG, t0);
        let agents = roster.agents_mut();
        agents
            .reserve(&id("alice"), Work::Callback(CallbackId(1)), t0)
            .expect("free");
        agents
            .reserve(&id("carol"), Work::Callback(CallbackId(2)), t0)
            .expect("free");
        agents
            .no_answer(&id("carol"), t0, Duration::from_secs(60))
            .expect("ringing");
        let names = |now| {
            roster
                .status(now)
                .iter()
                .map(|s| (s.id.to_string(), s.state_name(), s.reachable))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(t0),
            [
                ("alice".into(), "ringing", true),
                ("bob".into(), "available", false),
                ("carol".into(), "cooling_down", true),
            ]
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(names(later)[2], ("carol".into(), "available", true));
    }

    #[test]
    fn rejects_dialling_an_unknown_agent() {
        let t0 = Instant::now();
        let roster = roster(CONFIG, t0);
        assert_eq!(
            roster.dial_target(&id("mallory"), t0),
            Err(DialError::UnknownAgent(id("mallory")))
        );
    }

    #[test]
    fn a_changed_config_with_a_bad_static_uri_never_reaches_the_roster() {
        let mut config = Config::from_toml_str(CONFIG, "test").expect("valid");
        config.agents[0].uri = Some("sips:1001@pbx.example.com".into());
        let err = config
            .check(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect_err("sips is refused");
        assert!(
            matches!(&err, ConfigError::Invalid { field, .. } if field == "agents[0].uri"),
            "{err}"
        );
    }

    #[test]
    fn nonce_keys_differ() {
        assert_ne!(random_nonce_key(), random_nonce_key());
        assert_ne!(random_nonce_key(), [0; 32]);
    }

    #[test]
    fn tcp_binding_is_dialled_on_its_connection() {
        let flow = Flow {
            remote: SocketAddr::from(([198, 51, 100, 4], 50000)),
            transport: FlowTransport::Tcp(12),
        };
        assert_eq!(
            flow_destination(flow),
            Destination::Tcp {
                conn: Some(12),
                remote: flow.remote,
            }
        );
    }
}
