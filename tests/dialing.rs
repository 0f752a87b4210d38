//! Calling back, in-process (issue 4 points 3, 5, 6, 8): the engine on
//! `127.0.0.1:0` with a callback inserted into its store file, a tiny agent
//! UA and a tiny carrier UA (`common::dialing::Peer`: UDP SIP sockets that
//! answer, ring, reject, take CANCEL and BYE, and send and receive RTP). The tests assert
//! what reaches the agent and the carrier (SIP and RTP, in order) and what
//! the store holds afterwards (callback status, attempts, CDR rows).
//!
//! Short timeouts throughout: poll 200 ms, agent ring 2 s, customer ring
//! 3 s, retry 2 s. Each test has its own RTP range (`rtp_base(60..)`) and
//! store file. The last test runs the release binary as a child, to kill it
//! with SIGKILL in the middle of an attempt.

mod common;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use callbackd::callback::cdr::{CdrRecord, Leg, LegOutcome};
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{
    Attempt, AttemptRow, CallbackRow, LaunchStore, NewCallback, NewTask, NextStep, Recorded,
    Recovery, Registration, SqliteStore, Status, Store, StoreError, TaskFilter,
};
use callbackd::callback::{CallbackId, QueueId};
use callbackd::engine;
use callbackd::media::g711::Law;

use common::dialing::*;
use common::{SdpInfo, find_run, heard, repo, wait_for};

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
    // The whisper's last frame and the customer INVITE leave together (the
    // fake-clock test in tests/controller.rs pins the exact instant); here
    // they cross two sockets and two threads, so which one lands first is
    // the machine's load. What must hold on the wire: the agent hears the
    // whole whisper, and the customer is not called before its last digit
    // has begun.
    let all = wait_for(SOON, "the agent hears the whole whisper", || {
        let all = agent.rtp_before(Instant::now());
        whisper_heard_whole(&all, &lib).then_some(all)
    })
    .await;
    let (last_digit, _) = whisper_last_digit(&all, &lib);
    assert!(
        last_digit <= carrier_invite.0,
        "the customer was INVITEd before the whisper's last digit"
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
    // That nothing more is dialed later is tests/controller.rs's (busy
    // until 1 + max_retries attempts, then failed).
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
    // Failed is final: that it is never retried is the scheduler's
    // answered_completes_and_invalid_number_is_never_retried.
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
            engine::start_with_store(config.check(repo()).expect("valid config"), Box::new(store))
                .await
                .expect("engine starts"),
        );
    }

    let row = wait_status(&config_a, id, Status::Completed, Duration::from_secs(20)).await;
    assert_eq!(row.attempts, 1);
    // Both engines poll a few more times (a poll starts only when the one
    // before has been handled).
    polls_pass(&race, 6).await;
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

/// Engine A is dialing (the customer rings for 2.5 s) when engine B starts on
/// the same store file: B's start-up recovery leaves A's live claim alone
/// (it is another node's, under a lease A renews), so the callback stays
/// dialing, no interrupted attempt is written, B calls nobody, and A's call
/// completes: one agent call, one customer call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_starting_mid_attempt_leaves_the_claim_alone() {
    let alice = Peer::start("alice", vec![Reply::after(100)], AGENT_FILL).await;
    let bob = Peer::start("bob", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(2_500, 500)], CARRIER_FILL).await;
    let config_a = Setup::new(67, &[("alice", &alice)], &carrier).config();
    let mut setup_b = Setup::new(68, &[("bob", &bob)], &carrier);
    setup_b.store = Some(config_a.store_path(repo()));
    let config_b = setup_b.config();
    let _files = StoreFiles::of(&config_a);
    let id = register(&config_a, NUMBER);
    let engine_a = common::start(config_a.clone()).await;

    carrier.wait_invite(1, SOON).await;
    assert_eq!(
        row(&config_a.store_path(repo()), id).status,
        Status::Dialing
    );
    let (engine_b, polls_b) = start_counting(config_b).await;
    // B has started (recovery done) and polled a few times.
    polls_pass(&polls_b, 3).await;
    let during = row(&config_a.store_path(repo()), id);
    assert_eq!(
        during.status,
        Status::Dialing,
        "B reset A's claim: {during:?}"
    );
    assert!(
        attempts(&config_a, id).is_empty(),
        "an interrupted attempt was written for a live call"
    );

    let done = wait_status(&config_a, id, Status::Completed, SOON).await;
    assert_eq!(done.attempts, 1);
    let outcomes: Vec<Outcome> = attempts(&config_a, id)
        .iter()
        .map(|a| a.attempt.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::Answered]);
    polls_pass(&polls_b, 3).await;
    assert_eq!(carrier.invites().len(), 1, "customer INVITEs");
    assert_eq!(alice.invites().len(), 1);
    assert!(bob.invites().is_empty(), "B dialed A's callback");
    for engine in [engine_a, engine_b] {
        legs_closed(&engine).await;
        engine.shutdown().await;
    }
}

/// A paused agent (through the control channel the admin API uses) is not
/// offered a due callback; once unpaused it is at the next poll. While it
/// rings it cannot be paused (one call per agent, pause after the call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_is_not_offered_callbacks_until_unpaused() {
    let alice = Peer::start("alice", vec![Reply::after(1_000)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(100, 500)], CARRIER_FILL).await;
    let config = Setup::new(69, &[("alice", &alice)], &carrier).config();
    let _files = StoreFiles::of(&config);
    let (engine, polls) = start_counting(config.clone()).await;
    let control = engine.control();
    let paused = control
        .set_agent_paused("alice", true)
        .await
        .expect("engine running")
        .expect("alice can be paused");
    assert_eq!(paused.state_name(), "paused");
    let id = register(&config, NUMBER);

    // Several polls pass: nothing is launched.
    polls_pass(&polls, 4).await;
    assert!(alice.invites().is_empty(), "a paused agent was rung");
    assert_eq!(row(&config.store_path(repo()), id).status, Status::Pending);

    let available = control
        .set_agent_paused("alice", false)
        .await
        .expect("engine running")
        .expect("alice can be unpaused");
    assert_eq!(available.state_name(), "available");
    // Rung at the next poll (when exactly: the controller's business).
    alice.wait_invite(1, SOON).await;
    // Ringing: not pausable.
    let busy = control
        .set_agent_paused("alice", true)
        .await
        .expect("engine running");
    assert!(
        matches!(busy, Err(callbackd::acd::agents::AgentError::Busy(_))),
        "{busy:?}"
    );
    wait_status(&config, id, Status::Completed, SOON).await;
    legs_closed(&engine).await;
    let after = control
        .set_agent_paused("alice", true)
        .await
        .expect("engine running")
        .expect("free again after the call");
    assert_eq!(after.state_name(), "paused");
    engine.shutdown().await;
}

/// The launch switch (`[org] launch_enabled`, `PUT /v1/gates`) stops new
/// launches at once: a due callback waits while it is off and is dialed at
/// the next poll once it is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launch_switch_holds_due_callbacks() {
    let alice = Peer::start("alice", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(100, 500)], CARRIER_FILL).await;
    let mut config = Setup::new(79, &[("alice", &alice)], &carrier).config();
    config.org.launch_enabled = false;
    let _files = StoreFiles::of(&config);
    let id = register(&config, NUMBER);
    let (engine, polls) = start_counting(config.clone()).await;
    let control = engine.control();

    polls_pass(&polls, 4).await;
    assert!(alice.invites().is_empty(), "dialed with launching off");
    assert_eq!(row(&config.store_path(repo()), id).status, Status::Pending);
    let mut gates = control.gates().await.expect("engine running");
    assert!(!gates.launch_enabled);
    gates.launch_enabled = true;
    control.set_gates(gates).await.expect("engine running");
    alice.wait_invite(1, SOON).await;
    wait_status(&config, id, Status::Completed, SOON).await;

    // Off again: a new due callback waits.
    gates.launch_enabled = false;
    control.set_gates(gates).await.expect("engine running");
    let second = register(&config, "3125550199");
    polls_pass(&polls, 4).await;
    assert_eq!(alice.invites().len(), 1);
    assert_eq!(
        row(&config.store_path(repo()), second).status,
        Status::Pending
    );
    legs_closed(&engine).await;
    engine.shutdown().await;
}

/// Claims counted across both engines' stores.
#[derive(Default)]
struct Race {
    won: AtomicU32,
    lost: AtomicU32,
    /// `due()` calls: the engines' polls of the store.
    polls: AtomicU32,
}

/// Waits until the store(s) counted by `race` have been polled `n` more
/// times.
async fn polls_pass(race: &Race, n: u32) {
    let target = race.polls.load(Ordering::SeqCst) + n;
    common::wait_until(SOON, &format!("{n} more store polls"), || {
        race.polls.load(Ordering::SeqCst) >= target
    })
    .await;
}

/// Starts an engine on the SQLite store of `config`, counting its polls
/// (a [`Racing`] store with nobody to race).
async fn start_counting(config: callbackd::config::Config) -> (common::TestEngine, Arc<Race>) {
    let race = Arc::new(Race::default());
    let store = Racing {
        inner: SqliteStore::open(&config.store_path(repo())).expect("open the store"),
        gate: Arc::new(Barrier::new(1)),
        gated: AtomicBool::new(false),
        race: race.clone(),
    };
    let files = StoreFiles::of(&config);
    let settings = config.check(repo()).expect("valid config");
    let engine = engine::start_with_store(settings, Box::new(store))
        .await
        .expect("engine starts");
    (common::TestEngine::new(engine, files), race)
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
        self.race.polls.fetch_add(1, Ordering::SeqCst);
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

    fn record_connected(
        &mut self,
        id: CallbackId,
        at: Timestamp,
        agent: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.record_connected(id, at, agent)
    }

    fn expire(&mut self, now: Timestamp) -> Result<Vec<CallbackId>, StoreError> {
        self.inner.expire(now)
    }

    fn set_claimant(&mut self, node: &str, lease: Duration) {
        self.inner.set_claimant(node, lease);
    }

    fn renew_claims(&mut self, now: Timestamp) -> Result<usize, StoreError> {
        self.inner.renew_claims(now)
    }

    fn recover_interrupted(
        &mut self,
        now: Timestamp,
        longest_ring: Duration,
        scope: Recovery,
    ) -> Result<Vec<CallbackId>, StoreError> {
        self.inner.recover_interrupted(now, longest_ring, scope)
    }

    fn attempts(&self, id: CallbackId) -> Result<Vec<AttemptRow>, StoreError> {
        self.inner.attempts(id)
    }

    fn create_task(&mut self, task: &NewTask) -> Result<Registration, StoreError> {
        self.inner.create_task(task)
    }

    fn cancel_tasks(
        &mut self,
        which: &TaskFilter,
        reason: &str,
        now: Timestamp,
    ) -> Result<Vec<CallbackId>, StoreError> {
        self.inner.cancel_tasks(which, reason, now)
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
        registered_agents: Vec::new(),
        digest_algorithms: Vec::new(),
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
