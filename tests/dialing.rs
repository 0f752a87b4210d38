//! Calling back, in-process (issue 4 points 3, 5, 6, 8): the engine on
//! `127.0.0.1:0` with a callback inserted into its store file, a tiny agent
//! UA and a tiny carrier UA written here (UDP SIP sockets that answer, ring,
//! reject, take CANCEL and BYE, and send and receive RTP). The tests assert
//! what reaches the agent and the carrier (SIP and RTP, in order) and what
//! the store holds afterwards (callback status, attempts, CDR rows).
//!
//! Short timeouts throughout: poll 200 ms, agent ring 2 s, customer ring
//! 3 s, retry 2 s. Each test has its own RTP range (`rtp_base(60..)`) and
//! store file. The last test runs the release binary as a child, to kill it
//! with SIGKILL in the middle of an attempt.

mod common;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::net::UdpSocket;

use callbackd::callback::cdr::{CdrRecord, Leg, LegOutcome};
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{
    Attempt, AttemptRow, CallbackRow, LaunchStore, NewCallback, NextStep, Recorded, Registration,
    SqliteStore, Status, Store, StoreError,
};
use callbackd::callback::{CallbackId, QueueId};
use callbackd::config::Config;
use callbackd::engine;
use callbackd::media::g711::Law;
use callbackd::media::prompt::PromptLibrary;
use callbackd::sip::message::{self, Message, Request};

use common::{Listener, Rtp, RtpSock, SdpInfo, find_run, heard, media_addr, repo, rtp_base};

/// The customer's number as stored (NANP digits).
const NUMBER: &str = "3125550188";
/// The queue's callback number (caller ID).
const CALLER_ID: &str = "3125550100";
/// What the carrier's RTP payloads are filled with (PCMU, not silence).
const CARRIER_FILL: u8 = 0x11;
/// What the agent's RTP payloads are filled with.
const AGENT_FILL: u8 = 0x22;
/// The whisper the agent must hear: "callback for" and the number's digits.
const WHISPER: [&str; 11] = [
    "agent_whisper",
    "digit_3",
    "digit_1",
    "digit_2",
    "digit_5",
    "digit_5",
    "digit_5",
    "digit_0",
    "digit_1",
    "digit_8",
    "digit_8",
];
/// Longest wait for something the engine should do "soon".
const SOON: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// 1. Happy path
// ---------------------------------------------------------------------------

/// Agent first, whisper, customer INVITE through the trunk (Request-URI,
/// From, P-Asserted-Identity), bridge both ways, the carrier's BYE ends the
/// agent too; the store holds one answered attempt, status completed, and a
/// CDR row per leg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_first_whisper_then_customer_bridged_and_recorded() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(300, 1500)], CARRIER_FILL).await;
    let setup = Setup::new(60, &[("alice", &agent)], &carrier);
    let config = setup.config();
    let _files = StoreFiles::of(&config);
    let lib = library(&config);
    let id = register(&config, NUMBER);
    let before = Timestamp::now();
    let engine = common::start(config.clone()).await;

    // The agent is INVITEd first; the carrier hears nothing until the
    // whisper is over.
    let agent_invite = agent.wait_invite(1, SOON).await;
    assert!(
        carrier.invites().is_empty(),
        "the customer was called before the agent"
    );
    assert_eq!(&*agent_invite.1.uri, agent.uri().as_str());
    let carrier_invite = carrier.wait_invite(1, SOON).await;
    let acked = agent.acked_at(0).expect("the agent's 200 was ACKed");
    assert!(
        acked < carrier_invite.0,
        "the agent answered before the customer INVITE"
    );
    let before_customer = agent.rtp_before(carrier_invite.0);
    let said = heard(&before_customer, &lib, Law::Ulaw);
    assert!(
        find_run(&said, &WHISPER).is_some(),
        "before the customer INVITE the agent must hear the whole whisper, heard {said:?}"
    );
    let whisper_end = whisper_end(&before_customer, &lib);
    assert!(
        whisper_end <= carrier_invite.0,
        "the whisper ended after the customer INVITE"
    );

    // The customer INVITE as the trunk wants it.
    let invite = &carrier_invite.1;
    let port = carrier.sip_addr().port();
    assert_eq!(
        &*invite.uri,
        format!("sip:+1{NUMBER}@127.0.0.1:{port};user=phone").as_str()
    );
    let want_id = format!("sip:+1{CALLER_ID}@127.0.0.1;user=phone");
    assert_eq!(&*invite.headers.from.uri, want_id.as_str(), "From");
    assert!(invite.headers.from.tag.is_some(), "From carries our tag");
    let pai = common::header(&invite.headers, "P-Asserted-Identity").expect("PAI present");
    assert_eq!(pai, format!("<{want_id}>"), "P-Asserted-Identity");

    // The carrier hangs up 1.5 s after its 200 was ACKed: the engine BYEs
    // the agent.
    let bye = agent.wait_request("BYE", 1, SOON).await;
    let carrier_bye = carrier
        .sent_bye_at()
        .expect("the carrier sent its BYE before the agent's");
    assert!(
        bye.0 >= carrier_bye,
        "the agent's BYE follows the carrier's"
    );
    assert!(
        carrier.response_to_bye().is_some_and(|s| s == 200),
        "the engine answers the carrier's BYE with 200"
    );

    // Bridged RTP: the carrier's audio reached the agent and the agent's
    // the carrier, while both legs were up.
    let answered = carrier.acked_at(0).expect("the customer's 200 was ACKed");
    // The carrier's 180 had no SDP: local ringback to the agent until the
    // customer answered.
    let ringing = heard(
        &agent.rtp_between(carrier_invite.0, answered),
        &lib,
        Law::Ulaw,
    );
    assert!(
        ringing.contains(&"ringback"),
        "the agent hears ringback while the customer rings, heard {ringing:?}"
    );
    let to_agent = agent.rtp_filled(CARRIER_FILL);
    let to_carrier = carrier.rtp_filled(AGENT_FILL);
    assert_eq!(
        to_carrier.len(),
        carrier.rtp_before(Instant::now()).len(),
        "the customer hears the agent only (no whisper, no prompt)"
    );
    assert!(
        to_agent.len() >= 25,
        "the carrier's RTP reaches the agent: {} packets",
        to_agent.len()
    );
    assert!(
        to_carrier.len() >= 25,
        "the agent's RTP reaches the carrier: {} packets",
        to_carrier.len()
    );
    assert!(to_agent.iter().all(|p| p.at >= answered));
    assert!(to_carrier.iter().all(|p| p.at >= answered));
    assert_eq!(
        to_agent[0].from.port(),
        SdpInfo::parse(&agent_invite.1.body).port,
        "relayed from the agent leg's own port"
    );

    // The store: completed, one answered attempt, a CDR row per leg.
    let row = wait_status(&config, id, Status::Completed, SOON).await;
    assert_eq!(row.attempts, 1, "{row:?}");
    let attempts = attempts(&config, id);
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].attempt.outcome, Outcome::Answered);
    assert_eq!(attempts[0].attempt.sip_status, Some(200));
    assert_eq!(attempts[0].attempt.agent.as_deref(), Some("alice"));
    let cdrs = wait_cdrs(&config, id, 2).await;
    let agent_cdr = cdr_of(&cdrs, Leg::Agent);
    let customer_cdr = cdr_of(&cdrs, Leg::Customer);
    for (cdr, peer) in [
        (agent_cdr, agent.uri()),
        (customer_cdr, invite.uri.to_string()),
    ] {
        assert_eq!(cdr.outcome, LegOutcome::Answered, "{cdr:?}");
        assert_eq!(cdr.sip_code, Some(200), "{cdr:?}");
        let answer = cdr.answer.expect("an answer time");
        assert!(
            before <= cdr.start && cdr.start <= answer && answer <= cdr.end,
            "{cdr:?}"
        );
        assert_eq!(cdr.peer, peer);
        assert_eq!(cdr.inbound_call_id, "inbound-1@test");
    }
    assert!(
        agent_cdr.start < customer_cdr.start,
        "the agent leg started first: {cdrs:#?}"
    );
    common::wait_idle(&engine, SOON).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. No answer, then retried and answered
// ---------------------------------------------------------------------------

/// The customer only rings: CANCEL after customer_ring_timeout (3 s), the
/// agent hears "customer_no_answer", the attempt is no_answer and the
/// callback is pending again due retry_time (2 s) later; the second attempt
/// is answered and completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_is_cancelled_then_retried_and_completed() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start(
        "carrier",
        vec![Reply::Ring, Reply::hangup(200, 500)],
        CARRIER_FILL,
    )
    .await;
    let setup = Setup::new(61, &[("alice", &agent)], &carrier);
    let config = setup.config();
    let _files = StoreFiles::of(&config);
    let lib = library(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    let first = carrier.wait_invite(1, SOON).await;
    let cancel = carrier.wait_request("CANCEL", 1, SOON).await;
    let rang = cancel.0 - first.0;
    assert!(
        rang >= Duration::from_millis(2_900) && rang <= Duration::from_millis(4_000),
        "CANCEL {rang:?} after the customer INVITE, want the 3 s ring timeout"
    );
    // The agent is told, then hung up.
    let bye = agent.wait_request("BYE", 1, SOON).await;
    let told = agent.rtp_between(cancel.0, bye.0);
    assert!(
        find_run(
            &heard(&told, &lib, Law::Ulaw),
            &["customer_no_answer", "goodbye"]
        )
        .is_some(),
        "after the CANCEL the agent hears customer_no_answer, heard {:?}",
        common::segments(&told, &lib, Law::Ulaw)
    );
    let pending = wait_attempts(&config, id, 1).await;
    let recorded = Timestamp::now();
    assert_eq!(pending.status, Status::Pending, "{pending:?}");
    assert_eq!(pending.attempts, 1);
    let next = pending.next_attempt_at.expect("a retry time");
    let delta = next.duration_since(recorded).as_secs_f64();
    assert!(
        (0.5..=2.5).contains(&delta),
        "next attempt {delta:.2} s after the attempt was recorded, want ≈ retry_time 2 s"
    );
    let after_first = attempts(&config, id);
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].attempt.outcome, Outcome::NoAnswer);

    // The retry: not before retry_time, then answered.
    let second_agent = agent.wait_invite(2, SOON).await;
    assert!(
        second_agent.0 - bye.0 >= Duration::from_millis(1_500),
        "the retry came {:?} after the first attempt ended",
        second_agent.0 - bye.0
    );
    carrier.wait_invite(2, Duration::from_secs(15)).await;
    let row = wait_status(&config, id, Status::Completed, Duration::from_secs(15)).await;
    assert_eq!(row.attempts, 2);
    let all = attempts(&config, id);
    let outcomes: Vec<Outcome> = all.iter().map(|a| a.attempt.outcome).collect();
    assert_eq!(outcomes, [Outcome::NoAnswer, Outcome::Answered]);
    let cdrs = wait_cdrs(&config, id, 4).await;
    let customer: Vec<&CdrRecord> = cdrs.iter().filter(|c| c.leg == Leg::Customer).collect();
    assert_eq!(customer.len(), 2, "{cdrs:#?}");
    assert_eq!(customer[0].outcome, LegOutcome::Cancelled, "{cdrs:#?}");
    assert_eq!(customer[0].answer, None);
    assert_eq!(customer[1].outcome, LegOutcome::Answered);
    legs_closed(&engine).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. Retries exhausted
// ---------------------------------------------------------------------------

/// max_retries = 1 and the customer is always busy (486): two customer
/// attempts, both busy, then failed; no third INVITE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_until_retries_exhausted_then_failed() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::Reject(486)], CARRIER_FILL).await;
    let mut setup = Setup::new(62, &[("alice", &agent)], &carrier);
    setup.max_retries = 1;
    let config = setup.config();
    let _files = StoreFiles::of(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    let row = wait_status(&config, id, Status::Failed, Duration::from_secs(40)).await;
    assert_eq!(row.attempts, 2, "{row:?}");
    let all = attempts(&config, id);
    let got: Vec<(Outcome, Option<u16>)> = all
        .iter()
        .map(|a| (a.attempt.outcome, a.attempt.sip_status))
        .collect();
    assert_eq!(
        got,
        [(Outcome::Busy, Some(486)), (Outcome::Busy, Some(486))]
    );
    // Nothing more is dialed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(carrier.invites().len(), 2, "customer INVITEs");
    assert_eq!(agent.invites().len(), 2, "agent INVITEs");
    let cdrs = wait_cdrs(&config, id, 4).await;
    for c in cdrs.iter().filter(|c| c.leg == Leg::Customer) {
        assert_eq!(
            (c.outcome, c.sip_code),
            (LegOutcome::Busy, Some(486)),
            "{c:?}"
        );
    }
    legs_closed(&engine).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Invalid number
// ---------------------------------------------------------------------------

/// The network rejects the number (404): failed at once, never retried even
/// though retries are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_number_fails_at_once_without_retry() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::Reject(404)], CARRIER_FILL).await;
    let setup = Setup::new(63, &[("alice", &agent)], &carrier);
    let config = setup.config();
    let _files = StoreFiles::of(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    let row = wait_status(&config, id, Status::Failed, Duration::from_secs(20)).await;
    assert_eq!(row.attempts, 1, "{row:?}");
    let all = attempts(&config, id);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].attempt.outcome, Outcome::InvalidNumber);
    assert_eq!(all[0].attempt.sip_status, Some(404));
    // retry_time is 2 s: wait past it, nothing is dialed again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(carrier.invites().len(), 1);
    assert_eq!(agent.invites().len(), 1);
    let cdrs = wait_cdrs(&config, id, 2).await;
    let customer = cdr_of(&cdrs, Leg::Customer);
    assert_eq!(
        (customer.outcome, customer.sip_code),
        (LegOutcome::InvalidNumber, Some(404))
    );
    legs_closed(&engine).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. The agent does not answer
// ---------------------------------------------------------------------------

/// The agent only rings: CANCEL after agent_ring_timeout (2 s) — on time
/// even with a 10 s poll interval —, no customer INVITE, an agent_no_answer
/// attempt that does not count, the agent cools down (4 s) and the callback
/// stays pending; the agent is offered it again only after the cool-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_no_answer_cancels_and_cools_down() {
    let agent = Peer::start("agent", vec![Reply::Ring, Reply::Reject(603)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::after(100)], CARRIER_FILL).await;
    let mut setup = Setup::new(64, &[("alice", &agent)], &carrier);
    setup.agent_cooldown_s = 4;
    setup.poll_ms = 10_000;
    let config = setup.config();
    let _files = StoreFiles::of(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    let invite = agent.wait_invite(1, SOON).await;
    let cancel = agent.wait_request("CANCEL", 1, SOON).await;
    let rang = cancel.0 - invite.0;
    assert!(
        rang >= Duration::from_millis(1_900) && rang <= Duration::from_millis(3_000),
        "the agent leg was cancelled {rang:?} after its INVITE, want the 2 s ring timeout"
    );
    let agents = engine.agents().await.expect("engine running");
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].state_name(), "cooling_down", "{agents:?}");
    let row = wait_attempts(&config, id, 1).await;
    assert_eq!(row.status, Status::Pending);
    assert_eq!(
        row.attempts, 0,
        "an agent's no-answer is not a customer attempt"
    );
    let all = attempts(&config, id);
    assert_eq!(all[0].attempt.outcome, Outcome::AgentNoAnswer);
    assert_eq!(all[0].attempt.sip_status, None);

    // Offered again once the cool-down is over (the 603 ends that one).
    let again = agent.wait_invite(2, Duration::from_secs(20)).await;
    let cooled = again.0 - cancel.0;
    assert!(
        cooled >= Duration::from_millis(3_900),
        "the agent was offered the callback again {cooled:?} after not answering (cool-down 4 s)"
    );
    assert!(
        carrier.invites().is_empty(),
        "no customer INVITE without an agent"
    );
    let cdrs = wait_cdrs(&config, id, 2).await;
    assert!(cdrs.iter().all(|c| c.leg == Leg::Agent), "{cdrs:#?}");
    assert_eq!(cdrs[0].outcome, LegOutcome::Cancelled);
    assert_eq!(cdrs[0].answer, None);
    assert_eq!(cdrs[1].sip_code, Some(603));
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Never dialed twice at once
// ---------------------------------------------------------------------------

/// Two engines on ONE store file, one agent each, one due callback. Both
/// stores hold their first non-empty `due()` answer until the other has one
/// too, so both engines plan the same callback at the same moment and race
/// to claim it: exactly one claim wins, one agent and one customer are
/// called, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_store_dial_a_callback_once() {
    let alice = Peer::start("alice", vec![Reply::after(100)], AGENT_FILL).await;
    let bob = Peer::start("bob", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(100, 500)], CARRIER_FILL).await;
    let config_a = Setup::new(65, &[("alice", &alice)], &carrier).config();
    let mut setup_b = Setup::new(66, &[("bob", &bob)], &carrier);
    setup_b.store = Some(config_a.store_path(repo()));
    let config_b = setup_b.config();
    let _files = StoreFiles::of(&config_a);
    assert_eq!(config_a.store_path(repo()), config_b.store_path(repo()));
    let id = register(&config_a, NUMBER);

    let race = Arc::new(Race::default());
    let gate = Arc::new(Barrier::new(2));
    let mut engines = Vec::new();
    for config in [config_a.clone(), config_b] {
        let store = Racing {
            inner: SqliteStore::open(&config.store_path(repo())).expect("open the store"),
            gate: gate.clone(),
            gated: AtomicBool::new(false),
            race: race.clone(),
        };
        engines.push(
            engine::start_with_store(config, repo(), Box::new(store))
                .await
                .expect("engine starts"),
        );
    }

    let row = wait_status(&config_a, id, Status::Completed, Duration::from_secs(20)).await;
    assert_eq!(row.attempts, 1);
    // Let both engines poll a few more times.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(race.won.load(Ordering::SeqCst), 1, "claims won");
    assert_eq!(race.lost.load(Ordering::SeqCst), 1, "claims lost");
    assert_eq!(carrier.invites().len(), 1, "customer INVITEs");
    assert_eq!(
        alice.invites().len() + bob.invites().len(),
        1,
        "agent INVITEs (alice {}, bob {})",
        alice.invites().len(),
        bob.invites().len()
    );
    assert_eq!(attempts(&config_a, id).len(), 1);
    for engine in engines {
        legs_closed(&engine).await;
        engine.shutdown().await;
    }
}

/// Claims counted across both engines' stores.
#[derive(Default)]
struct Race {
    won: AtomicU32,
    lost: AtomicU32,
}

/// A store that makes the claim race happen: its first non-empty `due()`
/// waits at a barrier shared with the other engine's store.
struct Racing {
    inner: SqliteStore,
    gate: Arc<Barrier>,
    gated: AtomicBool,
    race: Arc<Race>,
}

impl Store for Racing {
    fn register(&mut self, new: &NewCallback) -> Result<Registration, StoreError> {
        self.inner.register(new)
    }

    fn list(&self) -> Result<Vec<CallbackRow>, StoreError> {
        self.inner.list()
    }

    fn pending_ahead(&self, queue: &QueueId, queued_at: Timestamp) -> Result<u32, StoreError> {
        self.inner.pending_ahead(queue, queued_at)
    }
}

impl LaunchStore for Racing {
    fn due(&self, now: Timestamp) -> Result<Vec<CallbackRow>, StoreError> {
        let rows = self.inner.due(now)?;
        if !rows.is_empty() && !self.gated.swap(true, Ordering::SeqCst) {
            // Both store threads have the row as due before either claims.
            self.gate.wait();
        }
        Ok(rows)
    }

    fn claim(&mut self, id: CallbackId, now: Timestamp) -> Result<bool, StoreError> {
        let won = self.inner.claim(id, now)?;
        let counter = if won { &self.race.won } else { &self.race.lost };
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(won)
    }

    fn record_attempt(
        &mut self,
        id: CallbackId,
        attempt: &Attempt,
        next: &NextStep,
    ) -> Result<Recorded, StoreError> {
        self.inner.record_attempt(id, attempt, next)
    }

    fn expire(&mut self, now: Timestamp) -> Result<Vec<CallbackId>, StoreError> {
        self.inner.expire(now)
    }

    fn recover_interrupted(
        &mut self,
        now: Timestamp,
        longest_ring: Duration,
    ) -> Result<Vec<CallbackId>, StoreError> {
        self.inner.recover_interrupted(now, longest_ring)
    }

    fn attempts(&self, id: CallbackId) -> Result<Vec<AttemptRow>, StoreError> {
        self.inner.attempts(id)
    }

    fn write_cdr(&mut self, record: &CdrRecord) -> Result<(), StoreError> {
        self.inner.write_cdr(record)
    }

    fn cdrs(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Vec<CdrRecord>, StoreError> {
        self.inner.cdrs(since, until)
    }
}

// ---------------------------------------------------------------------------
// 7. Restart safety (release binary)
// ---------------------------------------------------------------------------

/// The release binary dials a callback; while the customer rings it is
/// killed with SIGKILL. The row stays dialing on disk. Restarted on the same
/// store, the row is pending again with an interrupted attempt, is not
/// redialed before the longest ring time (customer ring 6 s) and then is:
/// agent, customer, completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_an_attempt_recovers_and_redials_after_the_ring_time() {
    let test = "killed_during_an_attempt_recovers";
    if !support::require_tools(test, &["kill"]) {
        return;
    }
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start(
        "carrier",
        vec![Reply::Ring, Reply::hangup(100, 500)],
        CARRIER_FILL,
    )
    .await;
    let dir = support::TestDir::new(test);
    let ports = support::Ports::allocate();
    let mut config = support::EngineConfig::new(&ports);
    config.t1_ms = 50;
    config.callbacks = Some(support::CallbackConfig {
        termination: carrier.sip_addr(),
        agents: vec![("alice".into(), agent.uri())],
        poll_interval_ms: 200,
        retry_time_s: 2,
        max_retries: 3,
        agent_ring_timeout_s: 2,
        customer_ring_timeout_s: 6,
        agent_cooldown_s: 60,
        callback_number: CALLER_ID.into(),
    });
    let store_path = dir.join("callbackd.sqlite");
    let id = register_at(&store_path, NUMBER);

    let engine = tokio::task::block_in_place(|| support::Engine::start(&config, &dir));
    carrier.wait_invite(1, SOON).await;
    let dialing = row(&store_path, id);
    assert_eq!(dialing.status, Status::Dialing, "{dialing:?}");
    let killed = std::process::Command::new("kill")
        .args(["-9", &engine.pid().to_string()])
        .status()
        .expect("kill can be spawned");
    assert!(killed.success());
    drop(engine);
    assert_eq!(row(&store_path, id).status, Status::Dialing);

    let restart_at = Instant::now();
    let restarted_ts = Timestamp::now();
    let mut engine = tokio::task::block_in_place(|| support::Engine::start(&config, &dir));
    let recovered = row(&store_path, id);
    assert_eq!(recovered.status, Status::Pending, "{recovered:?}");
    assert_eq!(
        recovered.attempts, 0,
        "an interrupted attempt does not count"
    );
    let due = recovered.next_attempt_at.expect("due again at a set time");
    let wait = due.duration_since(restarted_ts).as_secs_f64();
    assert!(
        (5.0..=7.0).contains(&wait),
        "due {wait:.2} s after the restart, want the longest ring time (6 s)"
    );
    let all = attempts_at(&store_path, id);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].attempt.outcome, Outcome::Interrupted);

    // Not redialed before the ring time; then agent, customer, completed.
    let again = agent.wait_invite(2, Duration::from_secs(15)).await;
    let after = again.0 - restart_at;
    assert!(
        after >= Duration::from_millis(5_800),
        "redialed {after:?} after the restart, before the longest ring time"
    );
    carrier.wait_invite(2, Duration::from_secs(15)).await;
    let done = wait_status_at(&store_path, id, Status::Completed, Duration::from_secs(15)).await;
    assert_eq!(done.attempts, 1);
    let outcomes: Vec<Outcome> = attempts_at(&store_path, id)
        .iter()
        .map(|a| a.attempt.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::Interrupted, Outcome::Answered]);
    tokio::task::block_in_place(|| {
        engine.stop();
        engine.assert_no_panic();
    });
}

// ---------------------------------------------------------------------------
// Engine configuration and store helpers
// ---------------------------------------------------------------------------

/// What a test varies in the dialing configuration.
struct Setup {
    slot: u16,
    agents: Vec<(String, String)>,
    termination: SocketAddr,
    poll_ms: u64,
    retry_time_s: u64,
    max_retries: u32,
    agent_ring_timeout_s: u64,
    customer_ring_timeout_s: u64,
    agent_cooldown_s: u64,
    /// Another test's store file instead of this slot's own.
    store: Option<PathBuf>,
}

impl Setup {
    fn new(slot: u16, agents: &[(&str, &Peer)], carrier: &Peer) -> Setup {
        Setup {
            slot,
            agents: agents
                .iter()
                .map(|(id, peer)| ((*id).to_owned(), peer.uri()))
                .collect(),
            termination: carrier.sip_addr(),
            poll_ms: 200,
            retry_time_s: 2,
            max_retries: 3,
            agent_ring_timeout_s: 2,
            customer_ring_timeout_s: 3,
            agent_cooldown_s: 60,
            store: None,
        }
    }

    /// The configuration: common::config's (SIP on port 0, T1 50 ms, RTP
    /// range of the slot, a fresh store file) plus trunk, agents, callbacks
    /// and one queue.
    fn config(&self) -> Config {
        let min = rtp_base(self.slot);
        let store = self.store.clone().unwrap_or_else(|| {
            // The path common::config would choose, emptied.
            let path = std::env::temp_dir().join(format!(
                "callbackd-dialing-test-{}-{}.sqlite",
                std::process::id(),
                self.slot
            ));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            path
        });
        let mut text = format!(
            "[sip]\nbind = \"127.0.0.1:5060\"\nt1_ms = 50\nt2_ms = 400\nt4_ms = 500\n\
             [rtp]\nport_min = {min}\nport_max = {}\n\
             [call]\nmax_calls = 20\n\
             [store]\npath = {:?}\n\
             [trunk]\ntermination = \"{}\"\ncps_limit = 100\n\
             [callbacks]\npoll_interval_ms = {}\n\
             [[queues]]\nid = \"support\"\ncallback_number = \"{CALLER_ID}\"\n\
             retry_time_s = {}\nmax_retries = {}\nagent_ring_timeout_s = {}\n\
             customer_ring_timeout_s = {}\nagent_cooldown_s = {}\n",
            min + 99,
            store.display().to_string(),
            self.termination,
            self.poll_ms,
            self.retry_time_s,
            self.max_retries,
            self.agent_ring_timeout_s,
            self.customer_ring_timeout_s,
            self.agent_cooldown_s,
        );
        for (id, uri) in &self.agents {
            text.push_str(&format!(
                "[[agents]]\nid = \"{id}\"\nuri = \"{uri}\"\nqueues = [\"support\"]\n"
            ));
        }
        let mut config = Config::from_toml_str(&text, "dialing-test.toml")
            .unwrap_or_else(|e| panic!("valid test config: {e}\n{text}"));
        config.sip.bind.set_port(0);
        config
    }
}

/// Removes a test's store file (and its WAL and shared-memory files) when
/// the test passed; a failing test leaves it for the post-mortem.
struct StoreFiles(PathBuf);

impl StoreFiles {
    fn of(config: &Config) -> StoreFiles {
        StoreFiles(config.store_path(repo()))
    }
}

impl Drop for StoreFiles {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("store kept: {}", self.0.display());
            return;
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn library(config: &Config) -> PromptLibrary {
    engine::load_prompts(config, repo()).expect("prompts load")
}

/// Registers a due callback for `number` in the configuration's store file.
fn register(config: &Config, number: &str) -> CallbackId {
    register_at(&config.store_path(repo()), number)
}

fn register_at(path: &Path, number: &str) -> CallbackId {
    let mut store = SqliteStore::open(path).expect("open the store");
    let now = Timestamp::now();
    let new = NewCallback {
        queue: QueueId("support".into()),
        number: number.into(),
        caller_ani: "3125550111".into(),
        called_number: "8005550100".into(),
        priority: 0,
        queued_at: now,
        registered_at: now,
        ecbt_quoted_minutes: 1,
        expires_at: now + jiff::SignedDuration::from_hours(1),
        inbound_call_id: "inbound-1@test".into(),
    };
    match store.register(&new).expect("register") {
        Registration::Registered(id) => id,
        other => panic!("not registered: {other:?}"),
    }
}

fn row(path: &Path, id: CallbackId) -> CallbackRow {
    let rows = SqliteStore::open(path)
        .and_then(|s| s.list())
        .expect("list callbacks");
    rows.into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("callback {id} not stored"))
}

fn attempts(config: &Config, id: CallbackId) -> Vec<AttemptRow> {
    attempts_at(&config.store_path(repo()), id)
}

fn attempts_at(path: &Path, id: CallbackId) -> Vec<AttemptRow> {
    SqliteStore::open(path)
        .and_then(|s| s.attempts(id))
        .expect("read attempts")
}

async fn wait_status(
    config: &Config,
    id: CallbackId,
    want: Status,
    within: Duration,
) -> CallbackRow {
    wait_status_at(&config.store_path(repo()), id, want, within).await
}

async fn wait_status_at(
    path: &Path,
    id: CallbackId,
    want: Status,
    within: Duration,
) -> CallbackRow {
    let deadline = Instant::now() + within;
    loop {
        let r = row(path, id);
        if r.status == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "callback not {want} after {within:?}: {r:?}\nattempts: {:#?}",
            attempts_at(path, id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `count` attempts are stored; returns the row then.
async fn wait_attempts(config: &Config, id: CallbackId, count: usize) -> CallbackRow {
    let deadline = Instant::now() + SOON;
    while attempts(config, id).len() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} attempts stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    row(&config.store_path(repo()), id)
}

/// The CDR rows of callback `id`, once there are at least `count`.
async fn wait_cdrs(config: &Config, id: CallbackId, count: usize) -> Vec<CdrRecord> {
    let path = config.store_path(repo());
    let deadline = Instant::now() + SOON;
    loop {
        let rows: Vec<CdrRecord> = SqliteStore::open(&path)
            .and_then(|s| s.cdrs(None, None))
            .expect("read CDRs")
            .into_iter()
            .filter(|c| c.callback == Some(id))
            .collect();
        if rows.len() >= count {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} CDR rows, want {count}: {rows:#?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every leg is gone: no call, no dialog, no RTP port. (INVITE client
/// transactions that ended with a non-2xx final keep Timer D running for
/// 32 s, RFC 3261 §17.1.1.2, so `wait_idle` would wait that long.)
async fn legs_closed(engine: &engine::EngineHandle) {
    common::wait_stats(engine, SOON, "legs closed", |s| {
        s.calls == 0 && s.sip.calls == 0 && s.rtp_ports == 0
    })
    .await;
}

fn cdr_of(cdrs: &[CdrRecord], leg: Leg) -> &CdrRecord {
    let of: Vec<&CdrRecord> = cdrs.iter().filter(|c| c.leg == leg).collect();
    assert_eq!(of.len(), 1, "one {leg:?} CDR: {cdrs:#?}");
    of[0]
}

/// When the last frame of the whisper (the last digit) arrived.
fn whisper_end(packets: &[Rtp], lib: &PromptLibrary) -> Instant {
    let audio: Vec<&Rtp> = packets
        .iter()
        .filter(|p| p.pt == Law::Ulaw.payload_type())
        .collect();
    let segments = common::segments(packets, lib, Law::Ulaw);
    let said: Vec<&str> = segments.iter().map(|s| s.name).collect();
    let at = find_run(&said, &WHISPER).expect("the whisper was heard");
    let last = segments[at + WHISPER.len() - 1];
    assert!(last.complete(), "the last digit was played whole");
    audio[last.start + last.frames - 1].at
}

// ---------------------------------------------------------------------------
// A tiny UA: agent phone or carrier
// ---------------------------------------------------------------------------

/// How the peer answers its n-th INVITE (the last entry repeats).
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// 180, then 200 with an SDP answer after `ring`; a BYE of ours
    /// `hangup` after the ACK, if given.
    Answer {
        ring: Duration,
        hangup: Option<Duration>,
    },
    /// 180 and nothing more (until CANCEL).
    Ring,
    /// This final status at once.
    Reject(u16),
}

impl Reply {
    fn after(ring_ms: u64) -> Reply {
        Reply::Answer {
            ring: Duration::from_millis(ring_ms),
            hangup: None,
        }
    }

    fn hangup(ring_ms: u64, hangup_ms: u64) -> Reply {
        Reply::Answer {
            ring: Duration::from_millis(ring_ms),
            hangup: Some(Duration::from_millis(hangup_ms)),
        }
    }
}

/// What the peer received or sent, with when.
// A few dozen per test: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Seen {
    Received(Instant, Message),
    SentBye(Instant),
}

/// A SIP UA on 127.0.0.1:0 answering the engine by a script, with an RTP
/// socket that records everything it receives and sends PCMU packets of
/// `fill` bytes every 20 ms to the engine while a call is up.
struct Peer {
    name: &'static str,
    sip: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    listener: Listener,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

struct PeerCall {
    invite: Request,
    engine: SocketAddr,
    tag: String,
    answer: Reply,
    last_response: Option<String>,
    answered: bool,
    confirmed: bool,
    ended: bool,
}

enum Due {
    Answer(String),
    Hangup(String),
}

impl Peer {
    async fn start(name: &'static str, script: Vec<Reply>, fill: u8) -> Peer {
        assert!(!script.is_empty());
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind peer SIP");
        let sip = sock.local_addr().expect("peer address");
        let rtp = RtpSock::bind("127.0.0.1");
        let listener = Listener::start(&rtp, Duration::from_secs(120));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        spawn_rtp_sender(rtp.clone(), target.clone(), fill, stop.clone());
        let task = tokio::spawn(run_peer(sock, rtp.port(), script, seen.clone(), target));
        Peer {
            name,
            sip,
            seen,
            listener,
            stop,
            task,
        }
    }

    fn sip_addr(&self) -> SocketAddr {
        self.sip
    }

    /// The static agent URI that reaches this peer.
    fn uri(&self) -> String {
        format!("sip:{}@{}", self.name, self.sip)
    }

    fn requests(&self, method: &str) -> Vec<(Instant, Request)> {
        let seen = self.seen.lock().expect("peer lock");
        let mut out: Vec<(Instant, Request)> = Vec::new();
        for s in seen.iter() {
            if let Seen::Received(at, Message::Request(r)) = s
                && r.method.as_str() == method
                && !out.iter().any(|(_, o)| {
                    o.headers.call_id == r.headers.call_id && o.headers.cseq == r.headers.cseq
                })
            {
                out.push((*at, r.clone()));
            }
        }
        out
    }

    fn invites(&self) -> Vec<(Instant, Request)> {
        // Initial INVITEs only (no To-tag), one per call.
        self.requests("INVITE")
            .into_iter()
            .filter(|(_, r)| r.headers.to.tag.is_none())
            .collect()
    }

    async fn wait_request(&self, method: &str, n: usize, within: Duration) -> (Instant, Request) {
        let deadline = Instant::now() + within;
        loop {
            let got = if method == "INVITE" {
                self.invites()
            } else {
                self.requests(method)
            };
            if let Some(r) = got.into_iter().nth(n - 1) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {method} #{n} within {within:?}; seen: {:#?}",
                self.name,
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_invite(&self, n: usize, within: Duration) -> (Instant, Request) {
        self.wait_request("INVITE", n, within).await
    }

    /// When the ACK for call number `index` (0-based) arrived.
    fn acked_at(&self, index: usize) -> Option<Instant> {
        let invite = self.invites().into_iter().nth(index)?;
        self.requests("ACK")
            .into_iter()
            .find(|(_, r)| r.headers.call_id == invite.1.headers.call_id)
            .map(|(at, _)| at)
    }

    fn sent_bye_at(&self) -> Option<Instant> {
        self.seen
            .lock()
            .expect("peer lock")
            .iter()
            .find_map(|s| match s {
                Seen::SentBye(at) => Some(*at),
                Seen::Received(..) => None,
            })
    }

    fn response_to_bye(&self) -> Option<u16> {
        self.seen
            .lock()
            .expect("peer lock")
            .iter()
            .find_map(|s| match s {
                Seen::Received(_, Message::Response(r))
                    if r.headers.cseq.method.as_str() == "BYE" =>
                {
                    Some(r.status)
                }
                _ => None,
            })
    }

    fn rtp_between(&self, from: Instant, to: Instant) -> Vec<Rtp> {
        self.listener.with(|p| {
            p.iter()
                .filter(|p| p.at >= from && p.at < to)
                .cloned()
                .collect()
        })
    }

    fn rtp_before(&self, to: Instant) -> Vec<Rtp> {
        self.listener
            .with(|p| p.iter().filter(|p| p.at < to).cloned().collect())
    }

    /// Received packets whose payload is all `fill` (the other peer's).
    fn rtp_filled(&self, fill: u8) -> Vec<Rtp> {
        self.listener.with(|p| {
            p.iter()
                .filter(|p| !p.payload.is_empty() && p.payload.iter().all(|&b| b == fill))
                .cloned()
                .collect()
        })
    }

    fn summary(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("peer lock")
            .iter()
            .map(|s| match s {
                Seen::Received(_, Message::Request(r)) => {
                    format!(
                        "{} {} ({})",
                        r.method.as_str(),
                        r.uri,
                        r.headers.call_id.as_str()
                    )
                }
                Seen::Received(_, Message::Response(r)) => {
                    format!("{} to {}", r.status, r.headers.cseq.method.as_str())
                }
                Seen::SentBye(_) => "sent BYE".into(),
            })
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// Sends 20 ms PCMU packets of `fill` to the current target.
fn spawn_rtp_sender(
    rtp: RtpSock,
    target: Arc<Mutex<Option<SocketAddr>>>,
    fill: u8,
    stop: Arc<AtomicBool>,
) {
    std::thread::Builder::new()
        .name("test-rtp-sender".into())
        .spawn(move || {
            let ssrc = fastrand::u32(..);
            let mut seq: u16 = fastrand::u16(..);
            let mut ts: u32 = fastrand::u32(..);
            let mut packet = vec![0u8; 12 + 160];
            packet[0] = 0x80;
            packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
            packet[12..].fill(fill);
            let start = Instant::now();
            let mut n: u32 = 0;
            let end = start + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                n += 1;
                let next = start + Duration::from_millis(20) * n;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let to = *target.lock().expect("target lock");
                let Some(to) = to else { continue };
                packet[1] = Law::Ulaw.payload_type();
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                packet[4..8].copy_from_slice(&ts.to_be_bytes());
                let _ = rtp.sock.send_to(&packet, to);
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
            }
        })
        .expect("start the RTP sender");
}

async fn run_peer(
    sock: UdpSocket,
    rtp_port: u16,
    script: Vec<Reply>,
    seen: Arc<Mutex<Vec<Seen>>>,
    target: Arc<Mutex<Option<SocketAddr>>>,
) {
    let local = sock.local_addr().expect("peer address");
    let mut calls: HashMap<String, PeerCall> = HashMap::new();
    let mut timers: Vec<(Instant, Due)> = Vec::new();
    let mut invites = 0usize;
    let mut buf = vec![0u8; 65_536];
    loop {
        let next = timers.iter().map(|(at, _)| *at).min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = sock.recv_from(&mut buf) => {
                let Ok((len, from)) = got else { return };
                let Ok(msg) = message::parse(&buf[..len]) else {
                    panic!("engine sent unparsable SIP: {}", String::from_utf8_lossy(&buf[..len]));
                };
                let now = Instant::now();
                seen.lock()
                    .expect("peer lock")
                    .push(Seen::Received(now, msg.clone()));
                let Message::Request(req) = msg else { continue };
                let call_id = req.headers.call_id.as_str().to_owned();
                match req.method.as_str() {
                    "INVITE" if req.headers.to.tag.is_none() => {
                        if let Some(call) = calls.get(&call_id) {
                            // A retransmission: the last response again.
                            if let Some(last) = &call.last_response {
                                let _ = sock.send_to(last.as_bytes(), from).await;
                            }
                            continue;
                        }
                        let answer = script[invites.min(script.len() - 1)];
                        invites += 1;
                        let mut call = PeerCall {
                            invite: req.clone(),
                            engine: from,
                            tag: common::token(),
                            answer,
                            last_response: None,
                            answered: false,
                            confirmed: false,
                            ended: false,
                        };
                        let text = match answer {
                            Reply::Reject(status) => response(&req, status, &call.tag, local, None),
                            Reply::Ring | Reply::Answer { .. } => {
                                response(&req, 180, &call.tag, local, None)
                            }
                        };
                        let _ = sock.send_to(text.as_bytes(), from).await;
                        call.last_response = Some(text);
                        if let Reply::Answer { ring, .. } = answer {
                            timers.push((now + ring, Due::Answer(call_id.clone())));
                        }
                        calls.insert(call_id, call);
                    }
                    "ACK" => {
                        if let Some(call) = calls.get_mut(&call_id)
                            && call.answered
                            && !call.confirmed
                        {
                            call.confirmed = true;
                            let offer = SdpInfo::parse(&call.invite.body);
                            *target.lock().expect("target lock") = Some(media_addr(&offer));
                            if let Reply::Answer { hangup: Some(after), .. } = call.answer {
                                timers.push((now + after, Due::Hangup(call_id.clone())));
                            }
                        }
                    }
                    "BYE" => {
                        let tag = calls.get(&call_id).map_or_else(common::token, |c| c.tag.clone());
                        let ok = response(&req, 200, &tag, local, None);
                        let _ = sock.send_to(ok.as_bytes(), from).await;
                        if let Some(call) = calls.get_mut(&call_id) {
                            call.ended = true;
                            stop_media(&target, &call.invite);
                        }
                    }
                    "CANCEL" => {
                        let Some(call) = calls.get_mut(&call_id) else { continue };
                        let ok = response(&req, 200, &call.tag, local, None);
                        let _ = sock.send_to(ok.as_bytes(), from).await;
                        if !call.answered && !call.ended {
                            let terminated = response(&call.invite, 487, &call.tag, local, None);
                            let _ = sock.send_to(terminated.as_bytes(), call.engine).await;
                            call.last_response = Some(terminated);
                            call.ended = true;
                        }
                    }
                    _ => {
                        // Anything else in a dialog (re-INVITE, UPDATE,
                        // OPTIONS): not what these tests are about.
                        let tag = calls.get(&call_id).map_or_else(common::token, |c| c.tag.clone());
                        let no = response(&req, 501, &tag, local, None);
                        let _ = sock.send_to(no.as_bytes(), from).await;
                    }
                }
            }
            () = sleep => {
                let now = Instant::now();
                let (due, rest): (Vec<_>, Vec<_>) = timers.drain(..).partition(|(at, _)| *at <= now);
                timers = rest;
                for (_, due) in due {
                    match due {
                        Due::Answer(id) => {
                            let Some(call) = calls.get_mut(&id) else { continue };
                            if call.ended {
                                continue;
                            }
                            let body = answer_sdp(rtp_port);
                            let ok = response(&call.invite, 200, &call.tag, local, Some(&body));
                            let _ = sock.send_to(ok.as_bytes(), call.engine).await;
                            call.last_response = Some(ok);
                            call.answered = true;
                        }
                        Due::Hangup(id) => {
                            let Some(call) = calls.get_mut(&id) else { continue };
                            if call.ended {
                                continue;
                            }
                            call.ended = true;
                            stop_media(&target, &call.invite);
                            let bye = bye(&call.invite, &call.tag, local);
                            let _ = sock.send_to(bye.as_bytes(), call.engine).await;
                            seen.lock().expect("peer lock").push(Seen::SentBye(Instant::now()));
                        }
                    }
                }
            }
        }
    }
}

/// Stops sending RTP if it goes to this call's engine port.
fn stop_media(target: &Mutex<Option<SocketAddr>>, invite: &Request) {
    let addr = media_addr(&SdpInfo::parse(&invite.body));
    let mut target = target.lock().expect("target lock");
    if *target == Some(addr) {
        *target = None;
    }
}

fn answer_sdp(port: u16) -> String {
    common::sdp(
        1,
        port,
        "0",
        &["a=rtpmap:0 PCMU/8000", "a=ptime:20", "a=sendrecv"],
    )
}

/// A response to `req` with our To-tag, Contact and optional SDP.
fn response(req: &Request, status: u16, tag: &str, local: SocketAddr, sdp: Option<&str>) -> String {
    let reason = match status {
        180 => "Ringing",
        200 => "OK",
        404 => "Not Found",
        486 => "Busy Here",
        487 => "Request Terminated",
        501 => "Not Implemented",
        603 => "Decline",
        _ => "Whatever",
    };
    let mut text = format!("SIP/2.0 {status} {reason}\r\n");
    for via in &req.headers.vias {
        text.push_str(&format!("Via: {}\r\n", via.raw));
    }
    let to = if req.headers.to.tag.is_some() {
        req.headers.to.raw.to_string()
    } else {
        format!("{};tag={tag}", req.headers.to.raw)
    };
    let (content_type, body) = match sdp {
        Some(b) => ("Content-Type: application/sdp\r\n", b),
        None => ("", ""),
    };
    text.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContact: <sip:peer@{local}>\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        req.headers.from.raw,
        req.headers.call_id.as_str(),
        req.headers.cseq.seq,
        req.headers.cseq.method.as_str(),
        body.len(),
    ));
    text
}

/// Our BYE in the dialog `invite` created (we are its UAS).
fn bye(invite: &Request, tag: &str, local: SocketAddr) -> String {
    let target = common::contact(&invite.headers)
        .map(|c| {
            c.trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or(c)
                .to_owned()
        })
        .expect("the engine's INVITE has a Contact");
    format!(
        "BYE {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={};rport\r\n\
         Max-Forwards: 70\r\n\
         From: {};tag={tag}\r\n\
         To: {}\r\n\
         Call-ID: {}\r\n\
         CSeq: 1 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        common::branch(),
        invite.headers.to.raw,
        invite.headers.from.raw,
        invite.headers.call_id.as_str(),
    )
}
