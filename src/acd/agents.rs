//! Agents, pure: who may take a call now, one call per agent, and the
//! `max_lines` cap on concurrent callback calls.
//!
//! # Agent states
//!
//! ```text
//!              reserve(work)              answered
//!   Available ───────────────▶ Ringing ────────────▶ OnCall
//!    ▲  │  ▲                    │   │                  │
//!    │  │  └──── released ──────┼───┴──────────────────┘
//!    │  │ pause                 │ no_answer(cooldown)
//!    │  ▼                       ▼
//!    │ Paused ◀──── pause ─── CoolingDown { until }
//!    │  │                       │ reserve once now ≥ until
//!    └──┘ unpause               └──────────▶ Ringing
//! ```
//!
//! - **Available**: idle; offered work for its queues.
//! - **Ringing(work)**: reserved for one piece of work (a callback or a
//!   live caller); its leg is being set up (agent-first dialing).
//! - **OnCall(work)**: the agent answered.
//! - **Paused**: not offered work (break, wrap-up) until unpaused.
//! - **CoolingDown { until }**: the agent did not answer its last offer
//!   (issue 4 point 5: not a customer attempt; that agent cools down). It is
//!   free again from `until` on, without any event: [`Agent::is_free`] reads
//!   the state against the `now` it is given.
//!
//! One call per agent holds by construction: only a free agent can be
//! reserved, and a reserved agent is not free until released.
//!
//! # Who gets the next call
//!
//! Among the free agents serving a queue, the one **idle the longest**
//! (earliest `idle_since`; the agent id breaks ties) — the usual
//! "longest idle agent" ACD rule, which spreads work evenly. An agent
//! becomes idle when it is added, released, unpaused, or when its cool-down
//! ends (`idle_since = until`): an agent that just failed to answer goes to
//! the back of the line, not the front.
//!
//! # Reachability
//!
//! Agents with a static URI (a PBX extension) are always reachable. Agents
//! that REGISTER with callbackd are reachable only while the registrar holds
//! a binding for their address-of-record; the engine reports that with
//! [`Agents::set_reachable`]. An unreachable agent is never offered work.
//!
//! # Lines
//!
//! `max_lines` caps concurrent **callback** calls (shipped default 15): an
//! agent reserved for a callback holds one line from the reservation until
//! it is released or does not answer. Serving a live caller uses no line —
//! the caller is already on an inbound line. Lowering the cap below the
//! lines in use ends no call; new callbacks wait until usage is under it.
//!
//! Pure: nothing here reads a clock; `now: Instant` comes in as an argument.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::acd::CallerId;
use crate::callback::number::PhoneNumber;
use crate::callback::scheduler::FreeAgent;
use crate::callback::{CallbackId, QueueId};

/// The longest cool-down [`Agents::no_answer`] applies (longer ones are
/// cut to it, which also keeps `now + cooldown` far from overflow).
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);

/// An agent's identifier from the configuration (e.g. `"alice"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub Box<str>);

impl AgentId {
    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AgentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for AgentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an agent is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// A fixed SIP URI from the configuration (a PBX extension,
    /// `sip:201@pbx.example.com`). Always reachable.
    Static(String),
    /// An address-of-record that REGISTERs with callbackd; the registrar
    /// resolves it to the current binding (contact and source address).
    Registered {
        /// The AoR, e.g. `sip:alice@callbackd.example.com`.
        aor: String,
    },
}

/// What an agent is reserved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// A stored callback being launched (holds a line).
    Callback(CallbackId),
    /// A live caller waiting in a queue (holds no line).
    Live(CallerId),
}

/// An agent's state; see the module documentation for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Idle and offered work.
    Available,
    /// Reserved for `Work`; its leg is ringing.
    Ringing(Work),
    /// Talking, on `Work`.
    OnCall(Work),
    /// Not offered work until unpaused.
    Paused,
    /// Did not answer its last offer; free again from `until` on.
    CoolingDown {
        /// When the cool-down ends.
        until: Instant,
    },
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    id: AgentId,
    contact: Contact,
    queues: Vec<QueueId>,
    state: AgentState,
    idle_since: Instant,
    reachable: bool,
    callback_numbers: Vec<PhoneNumber>,
}

impl Agent {
    /// A new agent, available and idle since `now`. Static agents start
    /// reachable; registered ones start unreachable (no binding yet).
    pub fn new(id: AgentId, contact: Contact, queues: Vec<QueueId>, now: Instant) -> Self {
        let reachable = match contact {
            Contact::Static(_) => true,
            Contact::Registered { .. } => false,
        };
        Agent {
            id,
            contact,
            queues,
            state: AgentState::Available,
            idle_since: now,
            reachable,
            callback_numbers: Vec::new(),
        }
    }

    /// The agent restricted to presenting these caller IDs on its callbacks
    /// (empty: any of the organisation's).
    pub fn with_callback_numbers(mut self, numbers: Vec<PhoneNumber>) -> Self {
        self.callback_numbers = numbers;
        self
    }

    /// The caller IDs the agent's callbacks may present (empty: any).
    pub fn callback_numbers(&self) -> &[PhoneNumber] {
        &self.callback_numbers
    }

    /// The agent's identifier.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// How the agent is reached.
    pub fn contact(&self) -> &Contact {
        &self.contact
    }

    /// The queues the agent serves.
    pub fn queues(&self) -> &[QueueId] {
        &self.queues
    }

    /// Whether the agent serves `queue`.
    pub fn serves(&self, queue: &QueueId) -> bool {
        self.queues.contains(queue)
    }

    /// The agent's state.
    pub fn state(&self) -> AgentState {
        self.state
    }

    /// Since when the agent has been idle (meaningful while free).
    pub fn idle_since(&self) -> Instant {
        self.idle_since
    }

    /// Whether the agent can be called (static, or registered with a binding).
    pub fn is_reachable(&self) -> bool {
        self.reachable
    }

    /// Whether the agent may be offered work at `now`: reachable, and
    /// available or past its cool-down.
    pub fn is_free(&self, now: Instant) -> bool {
        self.reachable
            && match self.state {
                AgentState::Available => true,
                AgentState::CoolingDown { until } => until <= now,
                AgentState::Ringing(_) | AgentState::OnCall(_) | AgentState::Paused => false,
            }
    }

    /// Whether the agent holds one of the `max_lines` (reserved for or on a
    /// callback).
    pub fn holds_line(&self) -> bool {
        match self.state {
            AgentState::Ringing(Work::Callback(_)) | AgentState::OnCall(Work::Callback(_)) => true,
            AgentState::Ringing(Work::Live(_))
            | AgentState::OnCall(Work::Live(_))
            | AgentState::Available
            | AgentState::Paused
            | AgentState::CoolingDown { .. } => false,
        }
    }
}

/// A misuse of [`Agents`] by its owner (the engine): all local faults.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AgentError {
    /// No agent with this id.
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    /// Two agents with the same id.
    #[error("agent {0} is defined twice")]
    DuplicateAgent(AgentId),
    /// The agent is already ringing or on a call (one call per agent).
    #[error("agent {0} is busy")]
    Busy(AgentId),
    /// The agent is paused.
    #[error("agent {0} is paused")]
    Paused(AgentId),
    /// The agent is cooling down after a missed offer.
    #[error("agent {agent} is cooling down")]
    CoolingDown {
        /// The agent.
        agent: AgentId,
        /// When its cool-down ends.
        until: Instant,
    },
    /// The agent has no registration binding (a registered agent offline).
    #[error("agent {0} is not reachable (not registered)")]
    Unreachable(AgentId),
    /// Every line is in use: no further callback call may start.
    #[error("all {max_lines} callback lines are in use")]
    NoFreeLine {
        /// The cap.
        max_lines: u32,
    },
    /// `answered`/`no_answer` for an agent that is not ringing.
    #[error("agent {0} is not ringing")]
    NotRinging(AgentId),
    /// `released` for an agent that is neither ringing nor on a call.
    #[error("agent {0} has no call to release")]
    NoCall(AgentId),
    /// `remove` of an agent that is ringing or on a call.
    #[error("agent {0} cannot be removed during a call")]
    RemoveBusy(AgentId),
}

/// Every agent, by id, and the line cap.
#[derive(Debug, Clone)]
pub struct Agents {
    agents: BTreeMap<AgentId, Agent>,
    max_lines: u32,
}

impl Agents {
    /// No agents; at most `max_lines` concurrent callback calls.
    pub fn new(max_lines: u32) -> Self {
        Agents {
            agents: BTreeMap::new(),
            max_lines,
        }
    }

    /// Adds an agent (from the configuration).
    pub fn add(&mut self, agent: Agent) -> Result<(), AgentError> {
        if self.agents.contains_key(&agent.id) {
            return Err(AgentError::DuplicateAgent(agent.id));
        }
        self.agents.insert(agent.id.clone(), agent);
        Ok(())
    }

    /// Changes how an agent is reached and the queues it serves (the
    /// organisation changed at run time); its state and idle time stay. A
    /// static contact makes it reachable; a registered one keeps the
    /// reachability last recorded until [`Agents::set_reachable`].
    pub fn reconfigure(
        &mut self,
        id: &AgentId,
        contact: Contact,
        queues: Vec<QueueId>,
    ) -> Result<(), AgentError> {
        let agent = self.get_mut_ok(id)?;
        if matches!(contact, Contact::Static(_)) {
            agent.reachable = true;
        }
        agent.contact = contact;
        agent.queues = queues;
        Ok(())
    }

    /// Restricts the caller IDs agent `id`'s callbacks may present (empty:
    /// any); from its next callback on.
    pub fn set_callback_numbers(
        &mut self,
        id: &AgentId,
        numbers: Vec<PhoneNumber>,
    ) -> Result<(), AgentError> {
        self.get_mut_ok(id)?.callback_numbers = numbers;
        Ok(())
    }

    /// Removes an agent that is not ringing or on a call (config reload).
    pub fn remove(&mut self, id: &AgentId) -> Result<Agent, AgentError> {
        let agent = self.get_ok(id)?;
        if matches!(agent.state, AgentState::Ringing(_) | AgentState::OnCall(_)) {
            return Err(AgentError::RemoveBusy(id.clone()));
        }
        Ok(self.agents.remove(id).expect("looked up just above"))
    }

    /// The agent, if known.
    pub fn get(&self, id: &AgentId) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Every agent, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Agent> + '_ {
        self.agents.values()
    }

    /// The cap on concurrent callback calls.
    pub fn max_lines(&self) -> u32 {
        self.max_lines
    }

    /// Callback calls in progress (agents reserved for or on a callback).
    pub fn lines_in_use(&self) -> u32 {
        let n = self.agents.values().filter(|a| a.holds_line()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Lines still free: `max_lines - lines_in_use`, never negative.
    pub fn free_lines(&self) -> u32 {
        self.max_lines.saturating_sub(self.lines_in_use())
    }

    /// Agents that serve `queue`, are reachable and not paused — the
    /// staffing the ECBT estimate divides by (busy agents count: they will
    /// take the next call when they finish).
    pub fn staffed(&self, queue: &QueueId) -> u32 {
        let n = self
            .agents
            .values()
            .filter(|a| a.reachable && a.serves(queue) && a.state != AgentState::Paused)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The free agent serving `queue` that has been idle the longest
    /// (earliest `idle_since`, then lowest id), if any.
    pub fn available_for(&self, queue: &QueueId, now: Instant) -> Option<&AgentId> {
        self.agents
            .values()
            .filter(|a| a.is_free(now) && a.serves(queue))
            .min_by_key(|a| (a.idle_since, &a.id))
            .map(|a| &a.id)
    }

    /// Every free agent at `now`, longest idle first — the scheduler's input
    /// ([`crate::callback::scheduler::Snapshot::free_agents`]).
    pub fn free_agents(&self, now: Instant) -> Vec<FreeAgent<'_, AgentId>> {
        let mut free: Vec<&Agent> = self.agents.values().filter(|a| a.is_free(now)).collect();
        free.sort_by_key(|a| (a.idle_since, &a.id));
        free.into_iter()
            .map(|a| FreeAgent {
                id: a.id.clone(),
                queues: &a.queues,
                callback_numbers: &a.callback_numbers,
            })
            .collect()
    }

    /// Reserves a free agent for `work`: its leg may now ring. A callback
    /// also needs a free line.
    pub fn reserve(&mut self, id: &AgentId, work: Work, now: Instant) -> Result<(), AgentError> {
        let needs_line = matches!(work, Work::Callback(_));
        if needs_line && self.lines_in_use() >= self.max_lines {
            return Err(AgentError::NoFreeLine {
                max_lines: self.max_lines,
            });
        }
        let agent = self.get_mut_ok(id)?;
        if !agent.reachable {
            return Err(AgentError::Unreachable(id.clone()));
        }
        agent.apply(Event::Reserve(work), now)
    }

    /// The agent answered its ringing leg.
    pub fn answered(&mut self, id: &AgentId, now: Instant) -> Result<(), AgentError> {
        self.get_mut_ok(id)?.apply(Event::Answer, now)
    }

    /// The agent's call ended (or its reservation was given up before it
    /// answered, e.g. the callback could not be claimed): available again,
    /// idle from `now`.
    pub fn released(&mut self, id: &AgentId, now: Instant) -> Result<(), AgentError> {
        self.get_mut_ok(id)?.apply(Event::Release, now)
    }

    /// The agent did not answer (its leg timed out or was refused): it
    /// cools down for `cooldown` (at most [`MAX_COOLDOWN`]) and is free
    /// again from `now + cooldown`.
    pub fn no_answer(
        &mut self,
        id: &AgentId,
        now: Instant,
        cooldown: Duration,
    ) -> Result<(), AgentError> {
        let until = now + cooldown.min(MAX_COOLDOWN);
        self.get_mut_ok(id)?.apply(Event::NoAnswer { until }, now)
    }

    /// Stops offering work to a free agent. Idempotent. A ringing or
    /// talking agent cannot be paused (pause it after the call).
    pub fn pause(&mut self, id: &AgentId, now: Instant) -> Result<(), AgentError> {
        self.get_mut_ok(id)?.apply(Event::Pause, now)
    }

    /// Makes a paused agent available, idle from `now`. Idempotent on an
    /// agent that is not paused.
    pub fn unpause(&mut self, id: &AgentId, now: Instant) -> Result<(), AgentError> {
        self.get_mut_ok(id)?.apply(Event::Unpause, now)
    }

    /// Records whether a registered agent has a binding (the registrar's
    /// view). Static agents stay reachable whatever is passed.
    pub fn set_reachable(&mut self, id: &AgentId, reachable: bool) -> Result<(), AgentError> {
        let agent = self.get_mut_ok(id)?;
        agent.reachable = match agent.contact {
            Contact::Static(_) => true,
            Contact::Registered { .. } => reachable,
        };
        Ok(())
    }

    fn get_ok(&self, id: &AgentId) -> Result<&Agent, AgentError> {
        self.agents
            .get(id)
            .ok_or_else(|| AgentError::UnknownAgent(id.clone()))
    }

    fn get_mut_ok(&mut self, id: &AgentId) -> Result<&mut Agent, AgentError> {
        self.agents
            .get_mut(id)
            .ok_or_else(|| AgentError::UnknownAgent(id.clone()))
    }
}

/// What happens to an agent.
#[derive(Debug, Clone, Copy)]
enum Event {
    Reserve(Work),
    Answer,
    Release,
    NoAnswer { until: Instant },
    Pause,
    Unpause,
}

impl Agent {
    /// The state machine of the module documentation.
    fn apply(&mut self, event: Event, now: Instant) -> Result<(), AgentError> {
        use AgentState::{Available, CoolingDown, OnCall, Paused, Ringing};
        let id = || self.id.clone();
        let (state, idle_since) = match (self.state, event) {
            (Available, Event::Reserve(work)) => (Ringing(work), self.idle_since),
            (CoolingDown { until }, Event::Reserve(work)) => {
                if until > now {
                    return Err(AgentError::CoolingDown { agent: id(), until });
                }
                (Ringing(work), self.idle_since)
            }
            (Ringing(_) | OnCall(_), Event::Reserve(_)) => return Err(AgentError::Busy(id())),
            (Paused, Event::Reserve(_)) => return Err(AgentError::Paused(id())),

            (Ringing(work), Event::Answer) => (OnCall(work), self.idle_since),
            (Available | OnCall(_) | Paused | CoolingDown { .. }, Event::Answer) => {
                return Err(AgentError::NotRinging(id()));
            }

            (Ringing(_) | OnCall(_), Event::Release) => (Available, now),
            (Available | Paused | CoolingDown { .. }, Event::Release) => {
                return Err(AgentError::NoCall(id()));
            }

            // Issue 4 point 5: the agent did not answer → it cools down and
            // goes to the back of the idle line when the cool-down ends.
            (Ringing(_), Event::NoAnswer { until }) => (CoolingDown { until }, until),
            (Available | OnCall(_) | Paused | CoolingDown { .. }, Event::NoAnswer { .. }) => {
                return Err(AgentError::NotRinging(id()));
            }

            (Available | Paused | CoolingDown { .. }, Event::Pause) => (Paused, self.idle_since),
            (Ringing(_) | OnCall(_), Event::Pause) => return Err(AgentError::Busy(id())),

            (Paused, Event::Unpause) => (Available, now),
            (state @ (Available | CoolingDown { .. } | Ringing(_) | OnCall(_)), Event::Unpause) => {
                (state, self.idle_since)
            }
        };
        self.state = state;
        self.idle_since = idle_since;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aid(s: &str) -> AgentId {
        AgentId(s.into())
    }

    fn qid(s: &str) -> QueueId {
        QueueId(s.into())
    }

    fn static_agent(id: &str, queues: &[&str], now: Instant) -> Agent {
        Agent::new(
            aid(id),
            Contact::Static(format!("sip:{id}@pbx.example.com")),
            queues.iter().map(|q| qid(q)).collect(),
            now,
        )
    }

    fn agents_of(max_lines: u32, list: Vec<Agent>) -> Agents {
        let mut agents = Agents::new(max_lines);
        for a in list {
            agents.add(a).unwrap();
        }
        agents
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn longest_idle_agent_of_the_queue_is_chosen() {
        let t0 = Instant::now();
        let mut agents = agents_of(
            15,
            vec![
                static_agent("carol", &["support"], t0 + 2 * S),
                static_agent("alice", &["support"], t0 + 5 * S),
                static_agent("bob", &["billing"], t0),
            ],
        );
        let support = qid("support");
        let now = t0 + 10 * S;
        assert_eq!(agents.available_for(&support, now), Some(&aid("carol")));
        // Carol takes a call and comes back: now Alice has waited longer.
        agents
            .reserve(&aid("carol"), Work::Live(CallerId(1)), now)
            .unwrap();
        assert_eq!(agents.available_for(&support, now), Some(&aid("alice")));
        agents.released(&aid("carol"), now + S).unwrap();
        assert_eq!(agents.available_for(&support, now + S), Some(&aid("alice")));
        assert_eq!(agents.available_for(&qid("sales"), now), None);
        // Ties go to the lower id.
        let tie = agents_of(
            1,
            vec![
                static_agent("zed", &["support"], t0),
                static_agent("amy", &["support"], t0),
            ],
        );
        assert_eq!(tie.available_for(&support, t0), Some(&aid("amy")));
    }

    #[test]
    fn one_call_per_agent() {
        let t0 = Instant::now();
        let mut agents = agents_of(15, vec![static_agent("alice", &["support"], t0)]);
        let alice = aid("alice");
        agents
            .reserve(&alice, Work::Callback(CallbackId(1)), t0)
            .unwrap();
        assert_eq!(
            agents.reserve(&alice, Work::Live(CallerId(9)), t0),
            Err(AgentError::Busy(alice.clone()))
        );
        assert_eq!(agents.available_for(&qid("support"), t0), None);
        agents.answered(&alice, t0 + S).unwrap();
        assert_eq!(
            agents.get(&alice).unwrap().state(),
            AgentState::OnCall(Work::Callback(CallbackId(1)))
        );
        assert_eq!(
            agents.reserve(&alice, Work::Callback(CallbackId(2)), t0 + S),
            Err(AgentError::Busy(alice.clone()))
        );
        agents.released(&alice, t0 + 60 * S).unwrap();
        assert_eq!(agents.get(&alice).unwrap().state(), AgentState::Available);
        assert_eq!(agents.get(&alice).unwrap().idle_since(), t0 + 60 * S);
    }

    #[test]
    fn max_lines_caps_callback_calls_but_not_live_callers() {
        let t0 = Instant::now();
        let mut agents = agents_of(
            2,
            vec![
                static_agent("a", &["support"], t0),
                static_agent("b", &["support"], t0),
                static_agent("c", &["support"], t0),
                static_agent("d", &["support"], t0),
            ],
        );
        agents
            .reserve(&aid("a"), Work::Callback(CallbackId(1)), t0)
            .unwrap();
        agents
            .reserve(&aid("b"), Work::Callback(CallbackId(2)), t0)
            .unwrap();
        assert_eq!((agents.lines_in_use(), agents.free_lines()), (2, 0));
        assert_eq!(
            agents.reserve(&aid("c"), Work::Callback(CallbackId(3)), t0),
            Err(AgentError::NoFreeLine { max_lines: 2 })
        );
        assert_eq!(
            agents.get(&aid("c")).unwrap().state(),
            AgentState::Available
        );
        // A live caller needs no line.
        agents
            .reserve(&aid("c"), Work::Live(CallerId(7)), t0)
            .unwrap();
        assert_eq!(agents.lines_in_use(), 2);
        // A missed offer frees its line.
        agents.no_answer(&aid("a"), t0 + S, 30 * S).unwrap();
        assert_eq!(agents.lines_in_use(), 1);
        agents
            .reserve(&aid("d"), Work::Callback(CallbackId(3)), t0 + S)
            .unwrap();
        assert_eq!(agents.lines_in_use(), 2);
    }

    #[test]
    fn agent_that_did_not_answer_cools_down_then_goes_to_the_back() {
        let t0 = Instant::now();
        let mut agents = agents_of(
            15,
            vec![
                static_agent("alice", &["support"], t0),
                static_agent("bob", &["support"], t0 + S),
            ],
        );
        let (alice, support) = (aid("alice"), qid("support"));
        agents
            .reserve(&alice, Work::Callback(CallbackId(1)), t0 + 2 * S)
            .unwrap();
        agents.no_answer(&alice, t0 + 22 * S, 30 * S).unwrap();
        let until = t0 + 52 * S;
        assert_eq!(
            agents.get(&alice).unwrap().state(),
            AgentState::CoolingDown { until }
        );
        assert_eq!(
            agents.available_for(&support, t0 + 22 * S),
            Some(&aid("bob"))
        );
        agents.pause(&aid("bob"), t0 + 22 * S).unwrap();
        assert_eq!(agents.available_for(&support, until - S), None);
        assert_eq!(
            agents.reserve(&alice, Work::Live(CallerId(1)), until - S),
            Err(AgentError::CoolingDown {
                agent: alice.clone(),
                until
            })
        );
        // Free again exactly at `until`, idle from then.
        assert_eq!(agents.available_for(&support, until), Some(&alice));
        agents.unpause(&aid("bob"), t0 + 40 * S).unwrap();
        // Bob became idle at 40 s, Alice at 52 s: Bob first.
        assert_eq!(agents.available_for(&support, until), Some(&aid("bob")));
        agents
            .reserve(&alice, Work::Live(CallerId(1)), until)
            .unwrap();
    }

    #[test]
    fn pause_and_unpause() {
        let t0 = Instant::now();
        let mut agents = agents_of(15, vec![static_agent("alice", &["support"], t0)]);
        let alice = aid("alice");
        agents.pause(&alice, t0).unwrap();
        agents.pause(&alice, t0).unwrap();
        assert_eq!(agents.available_for(&qid("support"), t0), None);
        assert_eq!(agents.staffed(&qid("support")), 0);
        assert_eq!(
            agents.reserve(&alice, Work::Live(CallerId(1)), t0),
            Err(AgentError::Paused(alice.clone()))
        );
        agents.unpause(&alice, t0 + 5 * S).unwrap();
        agents.unpause(&alice, t0 + 9 * S).unwrap();
        assert_eq!(agents.get(&alice).unwrap().idle_since(), t0 + 5 * S);
        assert_eq!(agents.staffed(&qid("support")), 1);
        assert_eq!(agents.available_for(&qid("support"), t0), Some(&alice));
    }

    #[test]
    fn rejects_pausing_an_agent_on_a_call() {
        let t0 = Instant::now();
        let mut agents = agents_of(15, vec![static_agent("alice", &["support"], t0)]);
        let alice = aid("alice");
        agents.reserve(&alice, Work::Live(CallerId(1)), t0).unwrap();
        assert_eq!(
            agents.pause(&alice, t0),
            Err(AgentError::Busy(alice.clone()))
        );
        agents.answered(&alice, t0).unwrap();
        assert_eq!(
            agents.pause(&alice, t0),
            Err(AgentError::Busy(alice.clone()))
        );
        assert_eq!(
            agents.get(&alice).unwrap().state(),
            AgentState::OnCall(Work::Live(CallerId(1)))
        );
    }

    #[test]
    fn rejects_events_out_of_order() {
        let t0 = Instant::now();
        let mut agents = agents_of(15, vec![static_agent("alice", &["support"], t0)]);
        let alice = aid("alice");
        assert_eq!(
            agents.answered(&alice, t0),
            Err(AgentError::NotRinging(alice.clone()))
        );
        assert_eq!(
            agents.no_answer(&alice, t0, S),
            Err(AgentError::NotRinging(alice.clone()))
        );
        assert_eq!(
            agents.released(&alice, t0),
            Err(AgentError::NoCall(alice.clone()))
        );
        agents.reserve(&alice, Work::Live(CallerId(1)), t0).unwrap();
        agents.answered(&alice, t0).unwrap();
        assert_eq!(
            agents.no_answer(&alice, t0, S),
            Err(AgentError::NotRinging(alice.clone()))
        );
        assert_eq!(
            agents.answered(&alice, t0),
            Err(AgentError::NotRinging(alice.clone()))
        );
        assert_eq!(
            agents.answered(&aid("nobody"), t0),
            Err(AgentError::UnknownAgent(aid("nobody")))
        );
    }

    #[test]
    fn registered_agent_is_offered_work_only_while_reachable() {
        let t0 = Instant::now();
        let mut agents = Agents::new(15);
        let bob = aid("bob");
        agents
            .add(Agent::new(
                bob.clone(),
                Contact::Registered {
                    aor: "sip:bob@callbackd.example.com".into(),
                },
                vec![qid("support")],
                t0,
            ))
            .unwrap();
        agents.add(static_agent("pbx", &["billing"], t0)).unwrap();
        assert_eq!(agents.available_for(&qid("support"), t0), None);
        assert_eq!(agents.staffed(&qid("support")), 0);
        assert_eq!(
            agents.reserve(&bob, Work::Live(CallerId(1)), t0),
            Err(AgentError::Unreachable(bob.clone()))
        );
        agents.set_reachable(&bob, true).unwrap();
        assert_eq!(agents.available_for(&qid("support"), t0), Some(&bob));
        agents.set_reachable(&bob, false).unwrap();
        assert_eq!(agents.available_for(&qid("support"), t0), None);
        // A static agent cannot be made unreachable.
        agents.set_reachable(&aid("pbx"), false).unwrap();
        assert_eq!(agents.available_for(&qid("billing"), t0), Some(&aid("pbx")));
    }

    #[test]
    fn free_agents_lists_longest_idle_first() {
        let t0 = Instant::now();
        let mut agents = agents_of(
            15,
            vec![
                static_agent("a", &["support"], t0 + 3 * S),
                static_agent("b", &["support", "billing"], t0 + S),
                static_agent("c", &["billing"], t0 + 2 * S),
                static_agent("d", &["billing"], t0),
            ],
        );
        agents.pause(&aid("d"), t0).unwrap();
        let free = agents.free_agents(t0 + 10 * S);
        let ids: Vec<&str> = free.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
        assert_eq!(free[0].queues, [qid("support"), qid("billing")]);
    }

    #[test]
    fn rejects_duplicate_and_busy_removal() {
        let t0 = Instant::now();
        let mut agents = agents_of(15, vec![static_agent("alice", &["support"], t0)]);
        assert_eq!(
            agents.add(static_agent("alice", &["billing"], t0)),
            Err(AgentError::DuplicateAgent(aid("alice")))
        );
        agents
            .reserve(&aid("alice"), Work::Live(CallerId(1)), t0)
            .unwrap();
        assert_eq!(
            agents.remove(&aid("alice")).map(|_| ()),
            Err(AgentError::RemoveBusy(aid("alice")))
        );
        agents.released(&aid("alice"), t0).unwrap();
        assert_eq!(agents.remove(&aid("alice")).unwrap().id(), &aid("alice"));
        assert!(agents.get(&aid("alice")).is_none());
    }
}
