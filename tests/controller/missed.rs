//! Missed-call rules (issue 13) on the fake clock: which hang-ups count,
//! when the automatic callback is dialed (intervals, schedule, the
//! customer's calling window), agent first with the rule's prompt, the
//! caller ID, success by bridge length, cancellation and the lines.

use super::*;
use callbackd::callback::rules::{MissKind, TaskSettings};
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{CallbackRow, LaunchStore, Source, Status};

/// One queue (`support`, DID 3125550100, callback number 800-555-0100),
/// agent alice, the trunk, and `rules` / `extra` appended.
fn missed_config(extra: &str) -> String {
    format!(
        "[trunk]\ntermination = \"{CARRIER}\"\n\
         [callbacks]\npoll_interval_ms = 500\n\
         [[queues]]\nid = \"support\"\ncallback_number = \"8005550100\"\ndids = [\"3125550100\"]\n\
         retry_time_s = 2\nmax_retries = 3\nagent_ring_timeout_s = 2\n\
         customer_ring_timeout_s = 3\nagent_cooldown_s = 5\n\
         [[agents]]\nid = \"alice\"\nuri = \"sip:alice@{AGENT}\"\nqueues = [\"support\"]\n{extra}"
    )
}

/// An IVR rule: 5 s minimum, attempts after 1 then 2 minutes, 20 s of
/// customer ringing, 10 s of talk for success.
const IVR_RULE: &str = "[[missed_call_rules]]\nid = \"ivr\"\nkind = \"ivr\"\nmin_time_s = 5\n\
     intervals_min = [1, 2]\nwait_for_answer_s = 20\nsuccess_after_s = 10\n";

fn harness(extra: &str) -> Harness {
    let config = driver::config(&missed_config(extra));
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    h.answers_bye.extend([addr(AGENT), addr(CARRIER)]);
    h
}

/// A caller from `from_user` calls in and hangs up (BYE) `after` the ACK.
fn call_and_hang_up(h: &mut Harness, call_id: &str, from_user: &str, after: std::time::Duration) {
    let mut caller = Peer::new("127.0.0.1:5070", call_id);
    let invite = caller
        .request("INVITE", Some(&offer(40000, 1, "sendrecv")))
        .replace(
            "From: <sip:3125550111@",
            &format!("From: <sip:{from_user}@"),
        );
    h.deliver(caller.addr, &invite);
    let ok = h.responses(call_id, 200, "INVITE")[0]
        .response()
        .expect("200")
        .clone();
    caller.learn(&ok);
    let ack = caller.request("ACK", None);
    h.deliver(caller.addr, &ack);
    h.advance(after);
    let bye = caller.request("BYE", None).replace(
        "From: <sip:3125550111@",
        &format!("From: <sip:{from_user}@"),
    );
    h.deliver(caller.addr, &bye);
}

fn tasks(h: &Harness) -> Vec<CallbackRow> {
    h.rows()
        .into_iter()
        .filter(|r| r.source == Source::MissedCall)
        .collect()
}

fn wall(offset: std::time::Duration) -> jiff::Timestamp {
    let w: jiff::Timestamp = WALL0.parse().expect("timestamp");
    w + jiff::SignedDuration::try_from(offset).expect("duration")
}

fn customer_invite_for(number: &'static str) -> impl Fn(&Sent) -> bool {
    move |s: &Sent| {
        s.request()
            .is_some_and(|r| r.method.as_str() == "INVITE" && r.uri.contains(number))
    }
}

#[test]
fn a_caller_hanging_up_in_the_ivr_is_called_back_agent_first_with_the_did_as_caller_id() {
    let mut h = harness(IVR_RULE);
    // Hung up in the welcome, 6 s after the answer (Chicago, 09:00).
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    let hung_up = h.elapsed();
    let task = tasks(&h).pop().expect("a task");
    assert_eq!(task.status, Status::Pending);
    assert_eq!(task.number, "3125550111");
    assert_eq!(task.rule.as_deref(), Some("ivr"));
    assert_eq!(task.next_attempt_at, Some(wall(hung_up + secs(60))));
    // Nothing before the first interval; then, at the first poll after it,
    // the agent first.
    h.advance(secs(59));
    assert!(invites_to(&h, AGENT).is_empty(), "not before the interval");
    let invite = agent_answers(&mut h, ms(300));
    let agent_call = invite.headers.call_id.as_str().to_owned();
    let rung_at = h.sent_for(&agent_call)[0].0;
    assert!(
        rung_at >= hung_up + secs(60) && rung_at <= hung_up + secs(60) + ms(500),
        "rung at {rung_at:?}, due {:?}",
        hung_up + secs(60)
    );
    // The agent hears the rule's prompt, then the number.
    let told = h.plays(&agent_call)[0].clone();
    assert_eq!(told.1[0], "missed_call_agent");
    assert_eq!(told.1.len(), 11);
    assert!(invites_to(&h, CARRIER).is_empty(), "the customer waits");
    // Then the customer, presented the number they dialed.
    let i = h.run_until_sent(secs(20), customer_invite_for("3125550111"));
    let customer = h.sent[i].request().expect("INVITE").clone();
    assert!(
        customer.headers.from.uri.contains("3125550100"),
        "{}",
        customer.headers.from.raw
    );
    // Answered and bridged 12 s (success takes 10): completed.
    h.advance(secs(1));
    let ok = answer(
        &customer,
        200,
        "cust",
        CARRIER,
        Some(&offer(42000, 1, "sendrecv")),
    );
    h.deliver(addr(CARRIER), &ok);
    h.advance(secs(12));
    h.deliver(
        addr(CARRIER),
        &in_dialog(&customer, "BYE", "cust", CARRIER, 2),
    );
    let task = tasks(&h).pop().expect("the task");
    assert_eq!(task.status, Status::Completed);
    let attempts = LaunchStore::attempts(&h.store, task.id).expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attempt.outcome, Outcome::Answered);
    // Its CDR legs carry the type.
    let cdrs = LaunchStore::cdrs(&h.store, None, None).expect("cdrs");
    let legs: Vec<_> = cdrs
        .iter()
        .filter(|c| c.callback == Some(task.id))
        .collect();
    assert_eq!(legs.len(), 2, "agent and customer legs");
    assert!(legs.iter().all(|c| c.source == Some(Source::MissedCall)));
}

#[test]
fn a_short_bridge_is_a_failed_attempt_and_the_next_interval_follows() {
    let mut h = harness(IVR_RULE);
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    h.advance(secs(60));
    agent_answers(&mut h, ms(100));
    let i = h.run_until_sent(secs(20), customer_invite_for("3125550111"));
    let customer = h.sent[i].request().expect("INVITE").clone();
    let ok = answer(
        &customer,
        200,
        "cust",
        CARRIER,
        Some(&offer(42000, 1, "sendrecv")),
    );
    h.deliver(addr(CARRIER), &ok);
    // 4 s of talk, fewer than the 10 the rule asks.
    h.advance(secs(4));
    h.deliver(
        addr(CARRIER),
        &in_dialog(&customer, "BYE", "cust", CARRIER, 2),
    );
    let ended = h.elapsed();
    let task = tasks(&h).pop().expect("the task");
    assert_eq!(task.status, Status::Pending);
    assert_eq!(task.attempts, 1);
    // The second interval (2 min) counts from that attempt's end (the
    // store keeps milliseconds).
    let due = wall(ended + secs(120));
    let due = jiff::Timestamp::from_millisecond(due.as_millisecond()).expect("in range");
    assert_eq!(task.next_attempt_at, Some(due));
    let attempts = LaunchStore::attempts(&h.store, task.id).expect("attempts");
    assert_eq!(attempts[0].attempt.outcome, Outcome::ShortCall);
}

#[test]
fn outside_the_calling_window_the_call_waits_for_eight_in_the_morning_local() {
    // 15:00Z is 05:00 in Honolulu: the window opens at 08:00 there, 18:00Z.
    let mut h = harness(&format!("{IVR_RULE}[org]\nallow_international = false\n"));
    call_and_hang_up(&mut h, "in-1", "8085550111", secs(6));
    let task = tasks(&h).pop().expect("a task");
    assert_eq!(
        task.next_attempt_at,
        Some("2026-12-07T18:00:00Z".parse().expect("timestamp"))
    );
    // Nothing is dialed before then, and at 08:00 local the agent is rung.
    h.advance(std::time::Duration::from_secs(3 * 3600 - 10));
    assert!(invites_to(&h, AGENT).is_empty(), "not before 08:00 local");
    // 08:00 local and the next poll (every 500 ms).
    h.advance(secs(10) + ms(600));
    assert_eq!(invites_to(&h, AGENT).len(), 1, "rung at 08:00 local");
}

#[test]
fn an_unknown_time_zone_without_fallback_starts_no_call_and_says_why() {
    let mut h = harness(IVR_RULE);
    // Area code 999 is in no zone map.
    call_and_hang_up(&mut h, "in-1", "9995550111", secs(6));
    let task = tasks(&h).pop().expect("a row");
    assert_eq!(task.status, Status::Failed);
    assert_eq!(task.closed_reason.as_deref(), Some("unknown_time_zone"));
    assert_eq!(task.next_attempt_at, None);
    h.advance(secs(300));
    assert!(invites_to(&h, AGENT).is_empty());
    // With a fallback zone it is called.
    let mut h = harness(&format!(
        "{IVR_RULE}fallback_timezone = \"America/Chicago\"\n"
    ));
    call_and_hang_up(&mut h, "in-1", "9995550111", secs(6));
    assert_eq!(tasks(&h).pop().expect("a task").status, Status::Pending);
    h.advance(secs(61));
    assert_eq!(invites_to(&h, AGENT).len(), 1);
}

#[test]
fn a_customer_who_calls_again_and_registers_is_not_called_twice() {
    let mut h = harness(IVR_RULE);
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    assert_eq!(tasks(&h).len(), 1);
    // The customer calls back and registers a callback for their number.
    h.advance(secs(10));
    let _caller = call_in(&mut h, "127.0.0.1:5071", "in-2", 40010);
    let first = after_pressing_1(&mut h, "in-2");
    assert_eq!(first[0], "ani_offer");
    h.advance(secs(1));
    h.digit("in-2", '1');
    let task = tasks(&h).pop().expect("the task");
    assert_eq!(task.status, Status::Cancelled);
    assert_eq!(task.closed_reason.as_deref(), Some("customer_registered"));
    let ivr: Vec<_> = h
        .rows()
        .into_iter()
        .filter(|r| r.source == Source::Ivr)
        .collect();
    assert_eq!(ivr.len(), 1, "the registration stands");
    // Past the task's time: it stays cancelled, never attempted.
    h.advance(secs(120));
    let task = tasks(&h).pop().expect("the task");
    assert_eq!(task.status, Status::Cancelled);
    assert!(
        LaunchStore::attempts(&h.store, task.id)
            .expect("attempts")
            .is_empty()
    );
}

#[test]
fn switching_the_rule_off_cancels_its_pending_tasks() {
    let mut h = harness(IVR_RULE);
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    let mut organisation = h.settings.organisation();
    organisation.missed_call_rules[0].enabled = false;
    let settings = h
        .settings
        .with_organisation(organisation)
        .expect("valid organisation");
    let now = h.now;
    h.ctl.apply_settings(now, &settings);
    h.advance(secs(1));
    let task = tasks(&h).pop().expect("the task");
    assert_eq!(task.status, Status::Cancelled);
    assert_eq!(task.closed_reason.as_deref(), Some("rule_disabled"));
    h.advance(secs(120));
    assert!(invites_to(&h, AGENT).is_empty());
}

#[test]
fn freezing_the_organisation_cancels_tasks_and_dials_nothing() {
    let mut h = harness(IVR_RULE);
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    let mut organisation = h.settings.organisation();
    organisation.org.frozen = true;
    let settings = h
        .settings
        .with_organisation(organisation)
        .expect("valid organisation");
    let now = h.now;
    h.ctl.apply_settings(now, &settings);
    h.advance(secs(1));
    let task = tasks(&h).pop().expect("the task");
    assert_eq!(task.closed_reason.as_deref(), Some("org_frozen"));
    // A new missed call starts nothing while frozen.
    call_and_hang_up(&mut h, "in-2", "3125550122", secs(6));
    assert_eq!(tasks(&h).len(), 1);
}

#[test]
fn sixteen_tasks_due_at_once_use_fifteen_lines_and_the_sixteenth_waits() {
    let agents: String = (1..=16)
        .map(|i| {
            format!(
                "[[agents]]\nid = \"a{i}\"\nuri = \"sip:a{i}@127.0.0.1:{}\"\nqueues = [\"support\"]\n",
                6000 + i
            )
        })
        .collect();
    let mut h = harness(&format!("{agents}{IVR_RULE}"));
    // Sixteen callers in at once, each hanging up 6 s later.
    let mut callers = Vec::new();
    for i in 0..16u16 {
        let call_id = format!("in-{i}");
        let user = format!("31255501{:02}", 20 + i);
        let mut caller = Peer::new(&format!("127.0.0.1:{}", 5100 + i), &call_id);
        let invite = caller
            .request("INVITE", Some(&offer(40000 + 2 * i, 1, "sendrecv")))
            .replace("From: <sip:3125550111@", &format!("From: <sip:{user}@"));
        h.deliver(caller.addr, &invite);
        let ok = h.responses(&call_id, 200, "INVITE")[0]
            .response()
            .expect("200")
            .clone();
        caller.learn(&ok);
        let ack = caller.request("ACK", None);
        h.deliver(caller.addr, &ack);
        callers.push((caller, user));
    }
    h.advance(secs(6));
    for (caller, user) in &mut callers {
        let bye = caller
            .request("BYE", None)
            .replace("From: <sip:3125550111@", &format!("From: <sip:{user}@"));
        h.deliver(caller.addr, &bye);
    }
    assert_eq!(tasks(&h).len(), 16);
    // All due at the same instant, 60 s after the hang-ups, with 17 agents
    // free: at the first poll 15 are rung, never more (before any ring
    // timeout frees a line).
    h.advance(secs(60) + ms(700));
    let rung = h
        .sent
        .iter()
        .filter(|s| s.request().is_some_and(|r| r.method.as_str() == "INVITE"))
        .map(Sent::call_id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(rung, 15);
    let dialing = tasks(&h)
        .iter()
        .filter(|t| t.status == Status::Dialing)
        .count();
    assert_eq!(dialing, 15);
}

/// A contact-center rule: 20 s minimum, one attempt 5 minutes later.
const CC_RULE: &str = "[[missed_call_rules]]\nid = \"cc\"\nkind = \"contact_center\"\n\
     min_time_s = 20\nintervals_min = [5]\n";

fn is_cancel(s: &Sent) -> bool {
    s.request().is_some_and(|r| r.method.as_str() == "CANCEL")
}

#[test]
fn a_caller_abandoning_in_the_queue_is_the_contact_center_rules() {
    let mut h = harness(&format!("{IVR_RULE}{CC_RULE}"));
    // The caller waits in the queue; alice is rung for them, never
    // answers and ignores the CANCEL too (a phone gone away). The caller
    // gives up a minute in.
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(60));
    let hung_up = h.elapsed();
    // Without a provisional response no CANCEL may go out (RFC 3261
    // 9.1): the INVITE transaction times out instead; meanwhile the ring
    // timeout has passed and must not fire again and again.
    assert!(
        !invites_to(&h, AGENT).is_empty(),
        "alice rung for the caller"
    );
    assert!(!h.sent.iter().any(is_cancel), "no CANCEL before a 1xx");
    let task = tasks(&h).pop().expect("a task");
    assert_eq!(task.rule.as_deref(), Some("cc"), "not the IVR rule");
    assert_eq!(task.next_attempt_at, Some(wall(hung_up + secs(300))));
    let settings =
        TaskSettings::from_json(task.task.as_deref().expect("settings")).expect("they parse");
    assert_eq!(settings.miss, MissKind::ContactCenter);
}

#[test]
fn too_short_in_the_system_or_no_rule_of_that_kind_starts_nothing() {
    // In the queue (alice is being rung for the caller) but 19 s in the
    // system, under the rule's 20: not a missed call.
    let mut h = harness(&format!("{IVR_RULE}{CC_RULE}"));
    let mut caller = call_in(&mut h, "127.0.0.1:5070", "in-1", 40000);
    let answered = h.elapsed();
    let i = h.run_until_sent(secs(19), is_agent_invite);
    assert!(h.sent[i].at < answered + secs(19), "queued in time");
    h.run_until(h.t0 + answered + secs(19));
    let bye = caller.request("BYE", None);
    h.deliver(caller.addr, &bye);
    assert!(tasks(&h).is_empty(), "{:?}", tasks(&h));
    // 4 s in the IVR, under the IVR rule's 5.
    call_and_hang_up(&mut h, "in-2", "3125550122", secs(4));
    assert!(tasks(&h).is_empty(), "{:?}", tasks(&h));
    // A minute in the queue, but only an IVR rule: nothing either.
    let mut h = harness(IVR_RULE);
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(60));
    let rung = invites_to(&h, AGENT).len();
    assert!(rung > 0, "queued: alice was rung");
    assert!(tasks(&h).is_empty(), "{:?}", tasks(&h));
    h.advance(secs(600));
    assert_eq!(invites_to(&h, AGENT).len(), rung, "and no one since");
}

const BOB_URI: &str = "127.0.0.1:5083";

fn rings_an_agent(s: &Sent) -> bool {
    s.request().is_some_and(|r| {
        r.method.as_str() == "INVITE" && (r.uri.contains("alice@") || r.uri.contains("bob@"))
    })
}

/// alice (from [`missed_config`]) and bob, and a contact-center rule that
/// sends the task back to the agent that missed it (no forward-to-queue):
/// 1 s minimum, 5 minutes to the attempt.
fn two_agents(with_bob: bool) -> String {
    let bob = if with_bob {
        format!("[[agents]]\nid = \"bob\"\nuri = \"sip:bob@{BOB_URI}\"\nqueues = [\"support\"]\n")
    } else {
        String::new()
    };
    format!(
        "{bob}[[missed_call_rules]]\nid = \"cc\"\nkind = \"contact_center\"\n\
         min_time_s = 1\nintervals_min = [5]\n"
    )
}

/// A caller waits in the queue; the agent rung for them declines (486)
/// and the caller hangs up at that instant. Gives the agent's id.
fn missed_by_an_agent(h: &mut Harness, call_id: &str) -> &'static str {
    let mut caller = call_in(h, "127.0.0.1:5070", call_id, 40000);
    let i = h.run_until_sent(secs(30), rings_an_agent);
    let invite = h.sent[i].request().expect("INVITE").clone();
    let (who, at) = if invite.uri.contains("bob@") {
        ("bob", BOB_URI)
    } else {
        ("alice", AGENT)
    };
    h.advance(ms(500));
    h.deliver(addr(at), &answer(&invite, 486, "busy", at, None));
    let bye = caller.request("BYE", None);
    h.deliver(caller.addr, &bye);
    who
}

#[test]
fn a_task_sent_back_to_the_agent_that_missed_it_rings_only_that_agent() {
    let mut h = harness(&two_agents(true));
    h.answers_bye.insert(addr(BOB_URI));
    let missed_by = missed_by_an_agent(&mut h, "in-1");
    let task = tasks(&h).pop().expect("a task");
    let settings =
        TaskSettings::from_json(task.task.as_deref().expect("settings")).expect("they parse");
    assert_eq!(settings.agent.as_deref(), Some(missed_by));
    let before = h.sent.len();
    // Five minutes on both agents are free, the other one idle longer:
    // only the agent that missed the call is rung for it.
    h.advance(secs(301));
    let mut rung: Vec<(Box<str>, String)> = h.sent[before..]
        .iter()
        .filter(|s| rings_an_agent(s))
        .filter_map(|s| {
            s.request()
                .map(|r| (r.uri.clone(), r.headers.call_id.as_str().to_owned()))
        })
        .collect();
    rung.dedup();
    let log: Vec<_> = h.sent[before..].iter().map(|s| (s.at, s.label())).collect();
    assert_eq!(rung.len(), 1, "missed by {missed_by}: {rung:?} {log:#?}");
    assert!(rung[0].0.contains(&format!("{missed_by}@")), "{rung:?}");
}

#[test]
fn a_task_whose_agent_was_deleted_does_not_start() {
    let mut h = harness(&two_agents(true));
    h.answers_bye.insert(addr(BOB_URI));
    let missed_by = missed_by_an_agent(&mut h, "in-1");
    // The agent that missed it is deleted (bob, or alice: the config
    // keeps the other one).
    let text = if missed_by == "bob" {
        missed_config(&two_agents(false))
    } else {
        missed_config(&two_agents(true))
            .replace("[[agents]]\nid = \"alice\"\nuri = \"sip:alice@127.0.0.1:5080\"\nqueues = [\"support\"]\n", "")
    };
    assert!(!text.contains(&format!("id = \"{missed_by}\"")), "{text}");
    let settings = driver::config(&text)
        .check(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("valid");
    let now = h.now;
    h.ctl.apply_settings(now, &settings);
    let before = h.sent.len();
    h.advance(secs(301));
    let task = tasks(&h).pop().expect("the task");
    assert_eq!(task.status, Status::Cancelled);
    assert_eq!(task.closed_reason.as_deref(), Some("agent_deleted"));
    assert!(
        !h.sent[before..].iter().any(rings_an_agent),
        "no one rung for it"
    );
}

/// A second queue, sales (callback number 800-555-0200), whose only agent
/// is bob.
const SALES: &str = "[[queues]]\nid = \"sales\"\ncallback_number = \"8005550200\"\n\
     agent_ring_timeout_s = 5\n\
     [[agents]]\nid = \"bob\"\nuri = \"sip:bob@127.0.0.1:5083\"\nqueues = [\"sales\"]\n";

/// bob's INVITE (the first after `from`), answered at once; gives it.
fn bob_answers(h: &mut Harness, limit: std::time::Duration) -> callbackd::sip::message::Request {
    let i = h.run_until_sent(limit, |s| {
        s.request()
            .is_some_and(|r| r.method.as_str() == "INVITE" && r.uri.contains("bob@"))
    });
    let invite = h.sent[i].request().expect("INVITE").clone();
    let ok = answer(
        &invite,
        200,
        "bob-tag",
        BOB_URI,
        Some(&offer(41000, 1, "sendrecv")),
    );
    h.deliver(addr(BOB_URI), &ok);
    invite
}

#[test]
fn the_rules_caller_id_queue_prompt_and_ring_time_shape_its_attempt() {
    let rule = "[[missed_call_rules]]\nid = \"full\"\nkind = \"ivr\"\nmin_time_s = 5\n\
         intervals_min = [1]\ncaller_id = \"8005550200\"\nforward_to_queue = \"sales\"\n\
         wait_for_answer_s = 7\nagent_prompt = \"ani_offer\"\n";
    let mut h = harness(&format!("{SALES}{rule}"));
    h.answers_bye.insert(addr(BOB_URI));
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    let task = tasks(&h).pop().expect("a task");
    assert_eq!(task.queue.as_str(), "sales", "forward-to-queue");
    // The sales agent, not alice, hears the rule's prompt first.
    let invite = bob_answers(&mut h, secs(61));
    assert!(invites_to(&h, AGENT).is_empty(), "alice is not in sales");
    let agent_call = invite.headers.call_id.as_str().to_owned();
    assert_eq!(h.plays(&agent_call)[0].1[0], "ani_offer");
    // The customer is shown the rule's caller ID and rings 7 s.
    let i = h.run_until_sent(secs(20), customer_invite_for("3125550111"));
    let customer = h.sent[i].request().expect("INVITE").clone();
    assert!(
        customer.headers.from.uri.contains("8005550200"),
        "{}",
        customer.headers.from.raw
    );
    h.deliver(
        addr(CARRIER),
        &answer(&customer, 180, "cust", CARRIER, None),
    );
    let c = h.run_until_sent(secs(30), |s| {
        s.request().is_some_and(|r| {
            r.method.as_str() == "CANCEL" && r.headers.call_id == customer.headers.call_id
        })
    });
    assert_eq!(h.sent[c].at, h.sent[i].at + secs(7), "wait_for_answer_s");
}

#[test]
fn the_rules_recording_has_its_notice_its_folder_and_its_retention() {
    let rule = "[[missed_call_rules]]\nid = \"rec\"\nkind = \"ivr\"\nmin_time_s = 5\n\
         intervals_min = [1]\nrecording_notice = \"recording_notice\"\n\
         recording_retention_days = 3\n";
    let mut h = harness(rule);
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    h.advance(secs(60));
    agent_answers(&mut h, ms(100));
    let i = h.run_until_sent(secs(20), customer_invite_for("3125550111"));
    let customer = h.sent[i].request().expect("INVITE").clone();
    let ok = answer(
        &customer,
        200,
        "cust",
        CARRIER,
        Some(&offer(42000, 1, "sendrecv")),
    );
    h.deliver(addr(CARRIER), &ok);
    let record = h
        .media
        .log
        .iter()
        .find_map(|(_, c)| match c {
            callbackd::b2bua::media::MediaCommand::Record { path, notice, .. } => {
                Some((path.clone(), notice.clone()))
            }
            _ => None,
        })
        .expect("recorded");
    assert!(
        record.0.parent().is_some_and(|d| d.ends_with("rules/rec")),
        "{record:?}"
    );
    assert_eq!(record.1.as_deref(), Some("recording_notice"));
    // The rule's recordings are purged on the rule's own period.
    let purges: Vec<_> = h
        .store_log
        .iter()
        .filter_map(|(_, r)| match r {
            callbackd::b2bua::store::StoreRequest::PurgeRecordings { dir, retention } => {
                Some((dir.clone(), *retention))
            }
            _ => None,
        })
        .collect();
    assert!(
        purges
            .iter()
            .any(|(dir, kept)| dir.ends_with("rules/rec") && *kept == secs(3 * 86_400)),
        "{purges:?}"
    );
}

#[test]
fn a_call_missed_outside_the_rules_schedule_is_not_called_back() {
    // Monday 09:00 in Chicago (the org's zone); the rule works 10:00-17:00
    // on weekdays.
    let rule = "[[missed_call_rules]]\nid = \"day\"\nkind = \"ivr\"\nmin_time_s = 5\n\
         intervals_min = [1]\nweekdays = \"10:00-17:00\"\n";
    let mut h = harness(rule);
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    assert!(tasks(&h).is_empty(), "{:?}", tasks(&h));
    // At 10:00 a missed call is taken.
    h.advance(secs(3600));
    call_and_hang_up(&mut h, "in-2", "3125550122", secs(6));
    assert_eq!(tasks(&h).len(), 1);
}

#[test]
fn an_edit_applies_to_attempts_not_yet_scheduled_and_a_scheduled_one_keeps_its_settings() {
    let rule = "[[missed_call_rules]]\nid = \"ivr\"\nkind = \"ivr\"\nmin_time_s = 5\n\
         intervals_min = [1, 1]\nwait_for_answer_s = 20\n";
    let mut h = harness(rule);
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    // The rule is edited after the first attempt was scheduled: the
    // customer now rings 5 s and the agent hears another prompt.
    let mut organisation = h.settings.organisation();
    organisation.missed_call_rules[0].wait_for_answer_s = 5;
    organisation.missed_call_rules[0].agent_prompt = "ani_offer".into();
    let settings = h
        .settings
        .with_organisation(organisation)
        .expect("valid organisation");
    let now = h.now;
    h.ctl.apply_settings(now, &settings);
    // The first attempt keeps what it was scheduled with.
    h.advance(secs(59));
    let invite = agent_answers(&mut h, ms(100));
    let agent_call = invite.headers.call_id.as_str().to_owned();
    assert_eq!(h.plays(&agent_call)[0].1[0], "missed_call_agent");
    let i = h.run_until_sent(secs(20), customer_invite_for("3125550111"));
    let customer = h.sent[i].request().expect("INVITE").clone();
    h.deliver(addr(CARRIER), &answer(&customer, 180, "c1", CARRIER, None));
    let cancelled_at = |h: &Harness, call_id: &str| {
        h.sent
            .iter()
            .find(|s| {
                s.request().is_some_and(|r| {
                    r.method.as_str() == "CANCEL" && r.headers.call_id.as_str() == call_id
                })
            })
            .map(|s| s.at)
    };
    h.advance(secs(21));
    let call_id = customer.headers.call_id.as_str().to_owned();
    assert_eq!(cancelled_at(&h, &call_id), Some(h.sent[i].at + secs(20)));
    h.deliver(addr(CARRIER), &answer(&customer, 487, "c1", CARRIER, None));
    // The second attempt was scheduled after the edit: the new settings.
    let k = h.run_until_sent(secs(70), is_agent_invite);
    let second = h.sent[k].request().expect("the agent rung again").clone();
    let ok = answer(
        &second,
        200,
        "agent-2",
        AGENT,
        Some(&offer(41000, 1, "sendrecv")),
    );
    h.deliver(addr(AGENT), &ok);
    let agent_call = second.headers.call_id.as_str().to_owned();
    assert_eq!(h.plays(&agent_call)[0].1[0], "ani_offer");
    let j = h.run_until_sent(secs(20), customer_invite_for("3125550111"));
    let customer = h.sent[j].request().expect("INVITE").clone();
    h.deliver(addr(CARRIER), &answer(&customer, 180, "c2", CARRIER, None));
    h.advance(secs(6));
    let call_id = customer.headers.call_id.as_str().to_owned();
    assert_eq!(cancelled_at(&h, &call_id), Some(h.sent[j].at + secs(5)));
}

#[test]
fn a_task_whose_queue_was_deleted_does_not_start() {
    let rule = "[[missed_call_rules]]\nid = \"fw\"\nkind = \"ivr\"\nmin_time_s = 5\n\
         intervals_min = [1]\nforward_to_queue = \"sales\"\n";
    let mut h = harness(&format!("{SALES}{rule}"));
    call_and_hang_up(&mut h, "in-1", "3125550111", secs(6));
    assert_eq!(tasks(&h).pop().expect("a task").queue.as_str(), "sales");
    // sales (and bob, its agent) go; the rule now forwards to support.
    let text = missed_config(&rule.replace("\"sales\"", "\"support\""));
    let settings = driver::config(&text)
        .check(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("valid");
    let now = h.now;
    h.ctl.apply_settings(now, &settings);
    let before = h.sent.len();
    h.advance(secs(120));
    let task = tasks(&h).pop().expect("the task");
    assert_eq!(task.status, Status::Cancelled);
    assert_eq!(task.closed_reason.as_deref(), Some("queue_deleted"));
    assert!(!h.sent[before..].iter().any(rings_an_agent), "no one rung");
}
