//! The call controller driven on a fake clock (see `controller/driver.rs`):
//! orchestration and timing asserted at exact instants, with no socket and
//! no sleep. Each test names the behaviour it pins down.

#[path = "controller/driver.rs"]
mod driver;
#[path = "controller/missed.rs"]
mod missed;

use callbackd::sip::message::HeaderName;
use callbackd::sip::registrar::keepalive_period;
use driver::*;

/// A carrier call answered and ACKed at `ack_at`: the harness, the caller's
/// dialog (To-tag learned).
fn answered_call(config: &str, call_id: &str, ack_at: std::time::Duration) -> (Harness, Peer) {
    let config = driver::config(config);
    let mut h = Harness::new(&config);
    let mut caller = Peer::new("127.0.0.1:5070", call_id);
    let invite = caller.request("INVITE", Some(&offer(40000, 1, "sendrecv")));
    h.deliver(caller.addr, &invite);
    let ok = h.responses(call_id, 200, "INVITE")[0]
        .response()
        .expect("a response")
        .clone();
    caller.learn(&ok);
    h.advance(ack_at);
    let ack = caller.request("ACK", None);
    h.deliver(caller.addr, &ack);
    (h, caller)
}

/// A caller at `from` calls in with RTP on `rtp_port`; the 200 is ACKed at
/// once.
fn call_in(h: &mut Harness, from: &str, call_id: &str, rtp_port: u16) -> Peer {
    let mut caller = Peer::new(from, call_id);
    let invite = caller.request("INVITE", Some(&offer(rtp_port, 1, "sendrecv")));
    h.deliver(caller.addr, &invite);
    let ok = h.responses(call_id, 200, "INVITE")[0]
        .response()
        .expect("200")
        .clone();
    caller.learn(&ok);
    let ack = caller.request("ACK", None);
    h.deliver(caller.addr, &ack);
    caller
}

/// A carrier call whose INVITE carries `headers` (and From `from` when
/// given), answered and ACKed at 10 ms.
fn call_with_headers(call_id: &str, from: Option<&str>, headers: &str) -> (Harness, Peer) {
    let config = driver::config("");
    let mut h = Harness::new(&config);
    let mut caller = Peer::new("127.0.0.1:5070", call_id);
    let mut invite = caller
        .request("INVITE", Some(&offer(40000, 1, "sendrecv")))
        .replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{headers}"),
        );
    if let Some(from) = from {
        invite = invite.replace("From: <sip:3125550111@127.0.0.1>", &format!("From: {from}"));
    }
    h.deliver(caller.addr, &invite);
    let ok = h.responses(call_id, 200, "INVITE")[0]
        .response()
        .expect("a response")
        .clone();
    caller.learn(&ok);
    h.advance(ms(10));
    let ack = caller.request("ACK", None);
    h.deliver(caller.addr, &ack);
    (h, caller)
}

/// What the caller hears first after pressing 1 at the callback offer.
fn after_pressing_1(h: &mut Harness, call_id: &str) -> Vec<String> {
    h.advance(secs(1));
    h.digit(call_id, '1');
    h.plays(call_id).last().expect("a play list").1.clone()
}

// ---------------------------------------------------------------------------
// The caller's side: answer, IVR, registration, hang-up.

#[test]
fn answer_ivr_registration_then_bye_at_exact_instants() {
    let (mut h, caller) = answered_call("", "call-1", ms(10));
    // 100 and 200 at once: the port was bound in the same instant.
    assert_eq!(
        h.sent_for("call-1")[..2],
        [(ms(0), "100 INVITE".into()), (ms(0), "200 INVITE".into())]
    );
    // The IVR starts on the ACK, once the store said what is ahead.
    let first = &h.plays("call-1")[0];
    assert_eq!(first.0, ms(10));
    assert_eq!(
        first.1,
        [
            "welcome",
            "ecbt_intro",
            "ecbt_about",
            "number_1",
            "minute",
            "callback_offer"
        ]
    );
    let asked = h
        .store_log
        .iter()
        .filter(|(_, r)| {
            matches!(r, callbackd::b2bua::store::StoreRequest::PendingAhead { call, .. }
                if *call == h.stream_key("call-1"))
        })
        .map(|(at, _)| *at)
        .collect::<Vec<_>>();
    assert_eq!(asked, [ms(10)], "the first ECBT is asked for on the ACK");

    // '1' barges in: the ANI offer at once.
    h.advance(secs(2));
    h.digit("call-1", '1');
    assert_eq!(h.played_at("call-1", "ani_offer"), Some(ms(2_010)));
    // A different number, keyed 100 ms apart: read back after the 10th.
    h.advance(secs(1));
    h.digits("call-1", "3125550188", ms(100));
    assert_eq!(h.played_at("call-1", "you_entered"), Some(ms(3_910)));
    // Confirmed: the registration is committed before "registered" plays,
    // in the same instant (the store answered at once).
    h.advance(secs(15));
    h.digit("call-1", '1');
    let register_at = h
        .store_log
        .iter()
        .find(|(_, r)| matches!(r, callbackd::b2bua::store::StoreRequest::Register { .. }))
        .map(|(at, _)| *at);
    assert_eq!(register_at, Some(ms(18_910)));
    let goodbye = h.plays("call-1").last().cloned().expect("a play list");
    assert_eq!(goodbye.0, ms(18_910));
    assert_eq!(
        goodbye.1,
        ["registered", "ecbt_about", "number_1", "minute", "goodbye"]
    );
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].number, "3125550188");
    assert_eq!(rows[0].inbound_call_id, "call-1");
    assert_eq!(rows[0].ecbt_quoted_minutes, 1);
    assert_eq!(rows[0].registered_at.to_string(), "2026-12-07T15:00:18.91Z");
    // The BYE leaves exactly when the last prompt has played.
    let spoken: std::time::Duration = goodbye.1.iter().map(|p| h.prompt_len(p)).sum();
    let i = h.run_until_sent(secs(30), |s| {
        s.request().is_some_and(|r| r.method.as_str() == "BYE")
    });
    assert_eq!(h.sent[i].at, ms(18_910) + spoken);
    let bye = h.sent[i].request().expect("BYE").clone();
    let ok = caller.ok_to(&bye);
    h.deliver(caller.addr, &ok);
    // Everything is released: the call, its stream, its port.
    h.advance(secs(40));
    let stats = h.ctl.stats();
    assert_eq!((stats.calls, stats.rtp_ports), (0, 0), "{stats:?}");
    assert_eq!(stats.sip, Default::default(), "{stats:?}");
    // Its inbound CDR is linked to the callback and typed with its source.
    assert_eq!(rows[0].source, callbackd::callback::store::Source::Ivr);
    let cdrs = callbackd::callback::store::LaunchStore::cdrs(&h.store, None, None).expect("cdrs");
    let inbound = cdrs
        .iter()
        .find(|c| c.call_id == "call-1")
        .expect("the inbound CDR");
    assert_eq!(
        (inbound.callback, inbound.source),
        (
            Some(rows[0].id),
            Some(callbackd::callback::store::Source::Ivr)
        )
    );
    assert!(h.media.streams.is_empty());
}

// ---------------------------------------------------------------------------
// Refreshes: re-INVITE and UPDATE, with and without SDP.

/// RFC 3311 §5.2: an UPDATE without a body is a refresh that carries no
/// offer; its 200 carries none either, and it changes no offer/answer
/// state. A later re-INVITE with SDP and a body-less ACK keeps the call.
#[test]
fn update_without_sdp_then_reinvite_keeps_the_call() {
    let (mut h, mut caller) = answered_call("", "call-u", ms(10));
    h.advance(secs(10));
    let update = caller.request("UPDATE", None);
    h.deliver(caller.addr, &update);
    let ok = h.responses("call-u", 200, "UPDATE");
    assert_eq!(ok.len(), 1, "{:?}", h.sent_for("call-u"));
    assert_eq!(ok[0].at, ms(10_010));
    assert!(
        ok[0].body().is_empty(),
        "a 200 to a body-less UPDATE has no SDP"
    );

    h.advance(secs(10));
    let reinvite = caller.request("INVITE", Some(&offer(40000, 2, "sendrecv")));
    h.deliver(caller.addr, &reinvite);
    let ok = h.responses("call-u", 200, "INVITE");
    assert_eq!(ok.len(), 2, "{:?}", h.sent_for("call-u"));
    assert!(
        !ok[1].body().is_empty(),
        "the re-INVITE's offer is answered"
    );
    h.advance(ms(5));
    let ack = caller.request("ACK", None);
    h.deliver(caller.addr, &ack);
    h.advance(secs(20));
    assert!(
        h.requests("call-u", "BYE").is_empty(),
        "the call was hung up: {:?}",
        h.sent_for("call-u")
    );
    assert_eq!(h.ctl.stats().calls, 1);
}

/// A re-INVITE with SDP refreshes too; the call goes on.
#[test]
fn reinvite_with_sdp_is_answered_and_the_call_goes_on() {
    let (mut h, mut caller) = answered_call("", "call-r", ms(10));
    h.advance(secs(5));
    let reinvite = caller.request("INVITE", Some(&offer(40002, 2, "sendrecv")));
    h.deliver(caller.addr, &reinvite);
    let ok = h.responses("call-r", 200, "INVITE");
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[1].at, ms(5_010));
    h.advance(ms(5));
    let ack = caller.request("ACK", None);
    h.deliver(caller.addr, &ack);
    // The stream follows the new address.
    let key = h.stream_key("call-r");
    let remote = h.media.streams[&key].params.remote;
    assert_eq!(remote, Some("127.0.0.1:40002".parse().expect("addr")));
    h.advance(secs(20));
    assert!(h.requests("call-r", "BYE").is_empty());
}

/// An ACK with `sdp` from `peer` in its dialog (the answer to the offer in
/// our 2xx).
fn ack_with_sdp(peer: &mut Peer, sdp: &str) -> String {
    peer.request("ACK", None).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
    )
}

/// RFC 3264 §8 / RFC 6337 §5.3: a re-INVITE without SDP is answered with
/// our current session, at the same o= version since nothing changed; the
/// answer in the ACK moves the stream.
#[test]
fn a_reinvite_without_sdp_gets_the_current_session_and_the_acks_answer_is_used() {
    let (mut h, mut caller) = answered_call("", "call-ro", ms(10));
    let first = h.responses("call-ro", 200, "INVITE")[0].body().to_vec();
    h.advance(secs(5));
    let reinvite = caller.request("INVITE", None);
    h.deliver(caller.addr, &reinvite);
    let ok = h.responses("call-ro", 200, "INVITE");
    assert_eq!(ok.len(), 2, "{:?}", h.sent_for("call-ro"));
    assert_eq!(
        String::from_utf8_lossy(ok[1].body()),
        String::from_utf8_lossy(&first),
        "the same session, the same o= version"
    );
    h.advance(ms(5));
    let ack = ack_with_sdp(&mut caller, &offer(40006, 2, "sendrecv"));
    h.deliver(caller.addr, &ack);
    let key = h.stream_key("call-ro");
    assert_eq!(
        h.media.streams[&key].params.remote,
        Some("127.0.0.1:40006".parse().expect("addr"))
    );
    assert!(h.requests("call-ro", "BYE").is_empty());
}

/// An UPDATE with SDP is an offer like a re-INVITE's: answered with SDP.
#[test]
fn update_with_sdp_is_answered_with_sdp() {
    let (mut h, mut caller) = answered_call("", "call-us", ms(10));
    h.advance(secs(3));
    let update = caller.request("UPDATE", Some(&offer(40004, 2, "sendrecv")));
    h.deliver(caller.addr, &update);
    let ok = h.responses("call-us", 200, "UPDATE");
    assert_eq!(ok.len(), 1);
    assert!(!ok[0].body().is_empty());
    let key = h.stream_key("call-us");
    assert_eq!(
        h.media.streams[&key].params.remote,
        Some("127.0.0.1:40004".parse().expect("addr"))
    );
}

// ---------------------------------------------------------------------------
// Calling back: agent first, whisper, customer, bridge.

const AGENT: &str = "127.0.0.1:5080";
const CARRIER: &str = "127.0.0.1:5090";

fn callback_config(extra: &str) -> String {
    format!(
        "[trunk]\ntermination = \"{CARRIER}\"\n\
         [callbacks]\npoll_interval_ms = 500\n\
         [[queues]]\nid = \"support\"\ncallback_number = \"3125550100\"\n\
         retry_time_s = 2\nmax_retries = 3\nagent_ring_timeout_s = 2\n\
         customer_ring_timeout_s = 3\nagent_cooldown_s = 5\n\
         [[agents]]\nid = \"alice\"\nuri = \"sip:alice@{AGENT}\"\nqueues = [\"support\"]\n{extra}"
    )
}

/// A harness with one pending callback for 312-555-0188, due at once.
fn with_callback(extra: &str) -> Harness {
    with_callback_to(extra, vec![udp_target(CARRIER)])
}

/// [`with_callback`] with the trunk resolved to `targets`.
fn with_callback_to(extra: &str, targets: Vec<callbackd::callback::trunk::Target>) -> Harness {
    let config = driver::config(&callback_config(extra));
    let mut h = Harness::with_trunk(&config, targets);
    register(&mut h, "3125550188", "inbound-1");
    h.answers_bye.extend([addr(AGENT), addr(CARRIER)]);
    h
}

/// A pending callback for `number` in "support", registered at `WALL0`.
fn register(h: &mut Harness, number: &str, inbound_call_id: &str) {
    let wall: jiff::Timestamp = WALL0.parse().expect("timestamp");
    let new = callbackd::callback::store::NewCallback {
        queue: callbackd::callback::QueueId("support".into()),
        number: number.into(),
        caller_ani: "3125550111".into(),
        called_number: "3125550100".into(),
        priority: 0,
        queued_at: wall,
        registered_at: wall,
        ecbt_quoted_minutes: 1,
        expires_at: wall + jiff::SignedDuration::from_hours(24),
        inbound_call_id: inbound_call_id.into(),
        sip_context: None,
    };
    callbackd::callback::store::Store::register(&mut h.store, &new).expect("registered");
}

/// A callback created as `POST /v1/callbacks` creates it: for 312-555-0188
/// in "support", scheduled `ahead` of `WALL0`, its window ending `window`
/// after that.
fn schedule(h: &mut Harness, ahead: std::time::Duration, window: std::time::Duration) {
    schedule_presenting(h, ahead, window, None);
}

/// [`schedule`], asking to present `caller_id` to the customer.
fn schedule_presenting(
    h: &mut Harness,
    ahead: std::time::Duration,
    window: std::time::Duration,
    caller_id: Option<&str>,
) {
    let wall: jiff::Timestamp = WALL0.parse().expect("timestamp");
    let at = wall + jiff::SignedDuration::try_from(ahead).expect("duration");
    let new = callbackd::callback::store::NewCallback {
        queue: callbackd::callback::QueueId("support".into()),
        number: "3125550188".into(),
        caller_ani: String::new(),
        called_number: String::new(),
        priority: 0,
        queued_at: at,
        registered_at: wall,
        ecbt_quoted_minutes: 0,
        expires_at: at + jiff::SignedDuration::try_from(window).expect("duration"),
        inbound_call_id: String::new(),
        sip_context: None,
    };
    let creation = callbackd::callback::store::Creation {
        scheduled_for: Some(at),
        created_by: "ann".into(),
        data: None,
        caller_id: caller_id.map(str::to_owned),
    };
    callbackd::callback::store::ManageStore::create(&mut h.store, &new, &creation)
        .expect("created");
}

/// The INVITEs sent to `addr`, one per call (retransmissions left out).
fn invites_to(h: &Harness, addr: &str) -> Vec<Sent> {
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    let mut seen = std::collections::HashSet::new();
    h.sent
        .iter()
        .filter(|s| {
            s.request().is_some_and(|r| r.method.as_str() == "INVITE")
                && matches!(s.to, callbackd::sip::endpoint::Destination::Udp(a) if a == addr)
                && seen.insert(s.call_id().to_owned())
        })
        .cloned()
        .collect()
}

fn is_invite_to_customer(s: &Sent) -> bool {
    s.request()
        .is_some_and(|r| r.method.as_str() == "INVITE" && r.uri.contains("3125550188"))
}

/// An INVITE to agent alice.
fn is_agent_invite(s: &Sent) -> bool {
    s.request()
        .is_some_and(|r| r.method.as_str() == "INVITE" && r.uri.contains("alice"))
}

fn is_request(s: &Sent, method: &str, call_id: &str) -> bool {
    s.call_id() == call_id && s.request().is_some_and(|r| r.method.as_str() == method)
}

fn addr(a: &str) -> std::net::SocketAddr {
    a.parse().expect("a socket address")
}

/// The agent's INVITE, answered 200 by the agent `after` it arrived; gives
/// the INVITE.
fn agent_answers(h: &mut Harness, after: std::time::Duration) -> callbackd::sip::message::Request {
    let i = h.run_until_sent(secs(5), is_agent_invite);
    let invite = h.sent[i].request().expect("INVITE").clone();
    h.advance(after);
    let ok = answer(
        &invite,
        200,
        "agent-tag",
        AGENT,
        Some(&offer(41000, 1, "sendrecv")),
    );
    h.deliver(addr(AGENT), &ok);
    invite
}

/// After a customer leg failed: the agent hears why, and is hung up
/// exactly when that has played; gives what it heard.
fn tells_the_agent(h: &mut Harness, agent_call: &str) -> Vec<String> {
    let (at, told) = h.plays(agent_call).last().cloned().expect("a play list");
    assert_eq!(at, h.elapsed(), "told at once");
    assert!(
        h.requests(agent_call, "BYE").is_empty(),
        "not before it was told"
    );
    let spoken: std::time::Duration = told.iter().map(|p| h.prompt_len(p)).sum();
    let i = h.run_until_sent(secs(20), |s| is_request(s, "BYE", agent_call));
    assert_eq!(h.sent[i].at, at + spoken);
    told
}

fn attempts(h: &Harness) -> Vec<callbackd::callback::store::AttemptRow> {
    let id = h.rows()[0].id;
    callbackd::callback::store::LaunchStore::attempts(&h.store, id).expect("attempts")
}

#[test]
fn callback_rings_the_agent_first_whispers_then_calls_the_customer_and_bridges() {
    let mut h = with_callback("");
    let agent_invite = agent_answers(&mut h, ms(500));
    let agent_call = agent_invite.headers.call_id.as_str().to_owned();
    assert_eq!(
        h.sent_for(&agent_call)[0].0,
        ms(0),
        "the first poll launches it"
    );
    assert!(
        invites_to(&h, CARRIER).is_empty(),
        "the customer waits for the agent"
    );
    // The agent hears "callback for" and the number, from the answer on.
    let whisper = h.plays(&agent_call)[0].clone();
    assert_eq!(whisper.0, ms(500));
    assert_eq!(whisper.1[0], "agent_whisper");
    assert_eq!(
        whisper.1[1..],
        [
            "digit_3", "digit_1", "digit_2", "digit_5", "digit_5", "digit_5", "digit_0", "digit_1",
            "digit_8", "digit_8"
        ]
    );
    // The customer is INVITEd exactly when the whisper has played.
    let spoken: std::time::Duration = whisper.1.iter().map(|p| h.prompt_len(p)).sum();
    let i = h.run_until_sent(secs(20), is_invite_to_customer);
    assert_eq!(h.sent[i].at, ms(500) + spoken);
    let invite = h.sent[i].request().expect("INVITE").clone();
    assert_eq!(&*invite.uri, "sip:+13125550188@127.0.0.1:5090;user=phone");
    assert!(
        invite.headers.from.uri.contains("3125550100"),
        "{}",
        invite.headers.from.raw
    );
    let customer_call = invite.headers.call_id.as_str().to_owned();
    let invited = h.elapsed();
    // 180 without SDP: local ringback to the agent at once.
    h.advance(ms(100));
    h.deliver(
        addr(CARRIER),
        &answer(&invite, 180, "cust-tag", CARRIER, None),
    );
    let ringback = h.plays(&agent_call).last().cloned().expect("a play list");
    assert_eq!(
        ringback,
        (invited + ms(100), vec!["loop:ringback".to_owned()])
    );
    // The customer answers: ACK and bridge in the same instant.
    h.advance(secs(2));
    let ok = answer(
        &invite,
        200,
        "cust-tag",
        CARRIER,
        Some(&offer(42000, 1, "sendrecv")),
    );
    h.deliver(addr(CARRIER), &ok);
    let answered = h.elapsed();
    assert_eq!(h.requests(&customer_call, "ACK")[0].at, answered);
    let agent_key = h.stream_key(&agent_call);
    let customer_key = h.stream_key(&customer_call);
    assert_eq!(h.media.streams[&agent_key].bridged_with, Some(customer_key));
    // The customer hangs up: the agent's BYE leaves at once.
    h.advance(secs(10));
    h.deliver(
        addr(CARRIER),
        &in_dialog(&invite, "BYE", "cust-tag", CARRIER, 2),
    );
    let bye = h.requests(&agent_call, "BYE");
    assert_eq!(bye[0].at, answered + secs(10));
    let row = &h.rows()[0];
    assert_eq!(row.status, callbackd::callback::store::Status::Completed);
    assert_eq!(row.attempts, 1);
    let attempts = attempts(&h);
    assert_eq!(
        attempts[0].attempt.outcome,
        callbackd::callback::scheduler::Outcome::Answered
    );
    assert_eq!(attempts[0].attempt.agent.as_deref(), Some("alice"));
}

#[test]
fn customer_no_answer_is_cancelled_at_the_ring_timeout_then_retried() {
    let mut h = with_callback("");
    agent_answers(&mut h, ms(200));
    let i = h.run_until_sent(secs(20), is_invite_to_customer);
    let invite = h.sent[i].request().expect("INVITE").clone();
    let invited = h.sent[i].at;
    let customer_call = invite.headers.call_id.as_str().to_owned();
    h.advance(ms(50));
    h.deliver(addr(CARRIER), &answer(&invite, 180, "c1", CARRIER, None));
    // customer_ring_timeout_s = 3: CANCEL 3 s after the INVITE.
    let i = h.run_until_sent(secs(5), |s| is_request(s, "CANCEL", &customer_call));
    assert_eq!(h.sent[i].at, invited + secs(3));
    let cancel = h.sent[i].request().expect("CANCEL").clone();
    // RFC 3326: the carrier learns why (Q.850 19, no answer).
    assert_eq!(
        cancel.headers.get(HeaderName::Reason),
        Some("Q.850;cause=19;text=\"No answer from user (user alerted)\"")
    );
    h.deliver(addr(CARRIER), &answer(&cancel, 200, "c1", CARRIER, None));
    h.deliver(addr(CARRIER), &answer(&invite, 487, "c1", CARRIER, None));
    let agent_call = h.sent[0].call_id().to_owned();
    tells_the_agent(&mut h, &agent_call);
    let ended = h.elapsed();
    let row = &h.rows()[0];
    assert_eq!(row.status, callbackd::callback::store::Status::Pending);
    assert_eq!(row.attempts, 1);
    assert_eq!(
        attempts(&h)[0].attempt.outcome,
        callbackd::callback::scheduler::Outcome::NoAnswer
    );
    // retry_time_s = 2: not before, and launched by the first poll after it.
    let agent_invites = |h: &Harness| h.sent.iter().filter(|s| is_agent_invite(s)).count();
    h.advance(ms(1_900));
    assert_eq!(agent_invites(&h), 1, "no second attempt before retry_time");
    let i = h.run_until_sent(secs(2), is_agent_invite);
    let again = h.sent[i].at;
    assert!(
        again >= ended + secs(2) && again < ended + secs(2) + ms(500),
        "{again:?} after {ended:?}"
    );
    assert_eq!(again.as_millis() % 500, 0, "launched by a poll");
}

#[test]
fn customer_busy_until_retries_exhausted_then_failed() {
    let mut h = with_callback("");
    // max_retries = 3: the first attempt and three retries.
    for attempt in 1..=4 {
        agent_answers(&mut h, ms(100));
        h.run_until_sent(secs(20), is_invite_to_customer);
        let invite = invites_to(&h, CARRIER).last().cloned().expect("INVITE");
        let invite = invite.request().expect("INVITE").clone();
        h.advance(ms(100));
        h.deliver(addr(CARRIER), &answer(&invite, 486, "busy", CARRIER, None));
        // The agent is told, then hung up; the attempt is written then.
        let agent_call = h
            .sent
            .iter()
            .rev()
            .find(|s| is_agent_invite(s))
            .map(|s| s.call_id().to_owned())
            .expect("agent INVITE");
        let told = tells_the_agent(&mut h, &agent_call);
        let row = &h.rows()[0];
        assert_eq!(row.attempts, attempt);
        let want = if attempt < 4 {
            callbackd::callback::store::Status::Pending
        } else {
            callbackd::callback::store::Status::Failed
        };
        assert_eq!(row.status, want, "after attempt {attempt}");
        assert_eq!(told, ["customer_no_answer", "goodbye"]);
        h.advance(secs(3));
    }
    assert!(
        attempts(&h)
            .iter()
            .all(|a| a.attempt.outcome == callbackd::callback::scheduler::Outcome::Busy)
    );
    h.advance(secs(30));
    assert_eq!(
        invites_to(&h, CARRIER).len(),
        4,
        "failed: never dialed again"
    );
}

#[test]
fn agent_no_answer_is_cancelled_and_the_agent_cools_down() {
    let mut h = with_callback("");
    let i = h.run_until_sent(secs(5), is_agent_invite);
    let invite = h.sent[i].request().expect("INVITE").clone();
    let call = invite.headers.call_id.as_str().to_owned();
    h.deliver(addr(AGENT), &answer(&invite, 180, "a1", AGENT, None));
    // agent_ring_timeout_s = 2.
    let i = h.run_until_sent(secs(3), |s| is_request(s, "CANCEL", &call));
    assert_eq!(h.sent[i].at, secs(2));
    let cancel = h.sent[i].request().expect("CANCEL").clone();
    h.deliver(addr(AGENT), &answer(&cancel, 200, "a1", AGENT, None));
    h.deliver(addr(AGENT), &answer(&invite, 487, "a1", AGENT, None));
    assert!(
        invites_to(&h, CARRIER).is_empty(),
        "no customer call without an agent"
    );
    // agent_cooldown_s = 5: alice is not rung again before 2 s + 5 s.
    h.advance(ms(4_900));
    let rung = |h: &Harness| h.sent.iter().filter(|s| is_agent_invite(s)).count();
    assert_eq!(rung(&h), 1);
    let i = h.run_until_sent(secs(2), is_agent_invite);
    assert!(h.sent[i].at >= secs(7), "{:?}", h.sent[i].at);
    // The agent's no-answer is not a customer attempt.
    assert_eq!(h.rows()[0].attempts, 0);
}

#[test]
fn a_503_from_the_first_trunk_target_fails_over_to_the_next_at_once() {
    let mut h = with_callback_to("", vec![udp_target(CARRIER), udp_target("127.0.0.2:5090")]);
    agent_answers(&mut h, ms(100));
    h.run_until_sent(secs(20), is_invite_to_customer);
    let first = invites_to(&h, CARRIER)[0]
        .request()
        .expect("INVITE")
        .clone();
    h.advance(ms(40));
    let busy = answer(&first, 503, "t1", CARRIER, None);
    let busy = busy.replace("Content-Length: 0", "Retry-After: 30\r\nContent-Length: 0");
    h.deliver(addr(CARRIER), &busy);
    let second = invites_to(&h, "127.0.0.2:5090");
    assert_eq!(
        second.len(),
        1,
        "{:?}",
        h.sent.iter().map(Sent::label).collect::<Vec<_>>()
    );
    assert_eq!(
        second[0].at,
        h.elapsed(),
        "the next target in the same instant"
    );
    assert_eq!(h.rows()[0].attempts, 0, "still the same attempt");
}

/// RFC 3261 §17.1.4 / RFC 3263 §4.3: the first target is TCP and its
/// connection fails (refused); the engine reports it, and the same attempt
/// goes to the next target in the same instant, not after Timer B.
#[test]
fn a_transport_error_on_the_first_trunk_target_fails_over_to_the_next_at_once() {
    use callbackd::sip::endpoint::Destination;
    let mut tcp = udp_target(CARRIER);
    tcp.transport = callbackd::callback::trunk::TrunkTransport::Tcp;
    let mut h = with_callback_to("", vec![tcp, udp_target("127.0.0.2:5090")]);
    agent_answers(&mut h, ms(100));
    let i = h.run_until_sent(secs(20), is_invite_to_customer);
    assert!(
        matches!(h.sent[i].to, Destination::Tcp { remote, .. } if remote == addr(CARRIER)),
        "{:?}",
        h.sent[i].to
    );
    h.advance(ms(3));
    let now = h.now;
    h.ctl.handle_transport_error(
        now,
        &Destination::Tcp {
            conn: Some(4),
            remote: addr(CARRIER),
        },
    );
    h.settle();
    let second = invites_to(&h, "127.0.0.2:5090");
    assert_eq!(
        second.len(),
        1,
        "{:?}",
        h.sent.iter().map(Sent::label).collect::<Vec<_>>()
    );
    assert_eq!(
        second[0].at,
        h.elapsed(),
        "the next target in the same instant"
    );
    assert_eq!(h.rows()[0].attempts, 0, "still the same attempt");
}

/// `[sip] max_forwards` is what the requests we originate carry (RFC 3261
/// §8.1.1.6): the INVITEs to the agent and the customer, the ACKs (for the
/// agent's 2xx and for the customer's 486) and the agent's BYE.
#[test]
fn requests_we_originate_carry_the_configured_max_forwards() {
    let mut config = driver::config(&callback_config(""));
    config.sip.max_forwards = 20;
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    register(&mut h, "3125550188", "inbound-1");
    h.answers_bye.extend([addr(AGENT), addr(CARRIER)]);
    agent_answers(&mut h, ms(100));
    h.run_until_sent(secs(20), is_invite_to_customer);
    let invite = invites_to(&h, CARRIER)[0]
        .request()
        .expect("INVITE")
        .clone();
    h.advance(ms(100));
    h.deliver(addr(CARRIER), &answer(&invite, 486, "busy", CARRIER, None));
    let agent_call = h
        .sent
        .iter()
        .find(|s| is_agent_invite(s))
        .map(|s| s.call_id().to_owned())
        .expect("agent INVITE");
    h.run_until_sent(secs(20), |s| is_request(s, "BYE", &agent_call));
    let mut methods = std::collections::BTreeSet::new();
    for sent in &h.sent {
        let Some(request) = sent.request() else {
            continue;
        };
        assert_eq!(
            request.headers.max_forwards,
            Some(20),
            "{} to {:?}",
            sent.label(),
            sent.to
        );
        methods.insert(request.method.as_str().to_owned());
    }
    assert_eq!(
        methods.into_iter().collect::<Vec<_>>(),
        ["ACK", "BYE", "INVITE"]
    );
}

// ---------------------------------------------------------------------------
// Live callers, limits, shutdown.

#[test]
fn max_call_length_hangs_up_at_the_exact_instant() {
    let (mut h, _caller) = answered_call("[call]\nmax_duration_s = 60\n", "call-m", ms(10));
    let i = h.run_until_sent(secs(120), |s| is_request(s, "BYE", "call-m"));
    assert_eq!(h.sent[i].at, ms(10) + secs(60));
}

#[test]
fn draining_with_no_grace_hangs_up_every_call_and_refuses_new_ones_with_503() {
    let (mut h, _caller) = answered_call("", "call-d", ms(10));
    h.advance(secs(1));
    h.ctl.drain(h.now, secs(0));
    h.settle();
    assert_eq!(h.requests("call-d", "BYE")[0].at, ms(1_010));
    let mut late = Peer::new("127.0.0.1:5072", "call-late");
    let invite = late.request("INVITE", Some(&offer(40010, 1, "sendrecv")));
    h.deliver(late.addr, &invite);
    assert_eq!(
        h.responses("call-late", 503, "INVITE").len(),
        1,
        "{:?}",
        h.sent_for("call-late")
    );
    let options = late.request("OPTIONS", None);
    h.deliver(late.addr, &options);
    assert_eq!(h.responses("call-late", 503, "OPTIONS").len(), 1);
}

#[test]
fn draining_refuses_new_calls_while_a_caller_in_the_ivr_goes_on_until_the_drain_time() {
    let (mut h, caller) = answered_call("", "call-d", ms(10));
    h.advance(secs(1));
    h.ctl.drain(h.now, secs(30));
    h.settle();
    // A dispatcher's OPTIONS ping and a new call: 503, with Retry-After.
    let mut late = Peer::new("127.0.0.1:5072", "call-late");
    let options = late.request("OPTIONS", None);
    h.deliver(late.addr, &options);
    assert_eq!(h.responses("call-late", 503, "OPTIONS").len(), 1);
    let invite = late.request("INVITE", Some(&offer(40010, 1, "sendrecv")));
    h.deliver(late.addr, &invite);
    let refused = h.responses("call-late", 503, "INVITE");
    assert_eq!(refused.len(), 1, "{:?}", h.sent_for("call-late"));
    let response = refused[0].response().expect("a response");
    assert!(
        response
            .headers
            .get(callbackd::sip::message::HeaderName::RetryAfter)
            .is_some()
    );
    // The caller already in the IVR goes on: a key press is heard.
    h.advance(secs(2));
    h.digit("call-d", '1');
    let pressed = h.elapsed();
    assert!(
        h.plays("call-d").iter().any(|(at, _)| *at == pressed),
        "the IVR answered the digit: {:?}",
        h.plays("call-d")
    );
    // An in-dialog request is still served.
    let mut caller = caller;
    let options = caller.request("OPTIONS", None);
    h.deliver(caller.addr, &options);
    assert_eq!(h.responses("call-d", 200, "OPTIONS").len(), 1);
    // Nobody is hung up before the drain time; the call still up then is.
    let i = h.run_until_sent(secs(60), |s| is_request(s, "BYE", "call-d"));
    assert_eq!(h.sent[i].at, ms(1_010) + secs(30));
}

#[test]
fn draining_launches_no_callback_but_a_bridged_one_goes_on_until_the_drain_time() {
    let mut h = with_callback("");
    let (_invite, agent_call, customer_call) = bridged(&mut h);
    let bridged_at = h.elapsed();
    // A second callback is due; a second agent is free.
    register(&mut h, "3125550199", "inbound-2");
    h.ctl.drain(h.now, secs(60));
    h.settle();
    h.run_until(h.now + secs(59));
    assert!(
        !h.sent.iter().any(|s| s
            .request()
            .is_some_and(|r| r.method.as_str() == "INVITE" && r.uri.contains("3125550199"))),
        "no callback launched while draining"
    );
    assert!(h.requests(&agent_call, "BYE").is_empty());
    assert!(h.requests(&customer_call, "BYE").is_empty());
    // At the drain time both legs get their BYE, and once they are
    // answered the controller is idle (the engine may stop).
    h.run_until(h.now + secs(1));
    let end = bridged_at + secs(60);
    assert_eq!(h.requests(&agent_call, "BYE")[0].at, end);
    assert_eq!(h.requests(&customer_call, "BYE")[0].at, end);
    h.settle();
    assert!(h.ctl.is_idle());
    assert_eq!(
        h.rows().len(),
        2,
        "the second callback still waits, untouched"
    );
}

#[test]
fn cancel_while_the_port_is_being_bound_gets_487_and_frees_the_port() {
    let config = driver::config("");
    let mut h = Harness::new(&config);
    h.media.hold_ready = true;
    let mut caller = Peer::new("127.0.0.1:5070", "call-c");
    let invite = caller.request("INVITE", Some(&offer(40000, 1, "sendrecv")));
    h.deliver(caller.addr, &invite);
    assert!(
        h.responses("call-c", 200, "INVITE").is_empty(),
        "the 200 waits for the port"
    );
    h.advance(ms(300));
    let cancel = caller.request("CANCEL", None);
    h.deliver(caller.addr, &cancel);
    assert_eq!(h.responses("call-c", 200, "CANCEL")[0].at, ms(300));
    assert_eq!(h.responses("call-c", 487, "INVITE")[0].at, ms(300));
    h.media.hold_ready = false;
    h.release_media();
    assert!(
        h.responses("call-c", 200, "INVITE").is_empty(),
        "no 200 after the 487"
    );
    let ack = caller.request("ACK", None);
    h.deliver(caller.addr, &ack);
    h.advance(secs(40));
    let stats = h.ctl.stats();
    assert_eq!((stats.calls, stats.rtp_ports), (0, 0), "{stats:?}");
}

#[test]
fn a_port_held_by_another_process_is_skipped_and_the_next_one_answered() {
    let config = driver::config("");
    let mut h = Harness::new(&config);
    // Whichever port the pool hands out first is busy.
    h.media.fail_next_adds = 1;
    let mut caller = Peer::new("127.0.0.1:5070", "call-p");
    let invite = caller.request("INVITE", Some(&offer(40000, 1, "sendrecv")));
    h.deliver(caller.addr, &invite);
    let ok = h.responses("call-p", 200, "INVITE");
    assert_eq!(ok.len(), 1);
    let adds: Vec<u16> = h
        .media
        .log
        .iter()
        .filter_map(|(_, c)| match c {
            callbackd::b2bua::media::MediaCommand::Add { ports, .. } => Some(*ports),
            _ => None,
        })
        .collect();
    assert_eq!(adds.len(), 2, "{adds:?}");
    assert_ne!(adds[0], adds[1]);
    let body = String::from_utf8_lossy(ok[0].body()).into_owned();
    assert!(body.contains(&format!("m=audio {} ", adds[1])), "{body}");
}

/// Bridged: the customer's answer and the agent's, both legs up.
/// Gives (customer INVITE, agent call-id, customer call-id).
fn bridged(h: &mut Harness) -> (callbackd::sip::message::Request, String, String) {
    let agent_invite = agent_answers(h, ms(100));
    let i = h.run_until_sent(secs(20), is_invite_to_customer);
    let invite = h.sent[i].request().expect("INVITE").clone();
    let ok = answer(
        &invite,
        200,
        "cust-tag",
        CARRIER,
        Some(&offer(42000, 1, "sendrecv")),
    );
    h.deliver(addr(CARRIER), &ok);
    let agent_call = agent_invite.headers.call_id.as_str().to_owned();
    let customer_call = invite.headers.call_id.as_str().to_owned();
    let (a, c) = (h.stream_key(&agent_call), h.stream_key(&customer_call));
    assert_eq!(h.media.streams[&a].bridged_with, Some(c));
    (invite, agent_call, customer_call)
}

/// A re-INVITE from the carrier in the customer's dialog.
fn customer_reinvite(invite: &callbackd::sip::message::Request, cseq: u32, sdp: &str) -> String {
    reinvite(invite, "cust-tag", CARRIER, cseq, sdp)
}

/// A re-INVITE from a UAS (tag `tag`, at `from`) in the dialog of `invite`.
fn reinvite(
    invite: &callbackd::sip::message::Request,
    tag: &str,
    from: &str,
    cseq: u32,
    sdp: &str,
) -> String {
    in_dialog(invite, "INVITE", tag, from, cseq)
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Contact: <sip:peer@{from}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
        )
}

#[test]
fn the_customer_holds_and_resumes_a_bridged_callback() {
    let mut h = with_callback("");
    let (invite, agent_call, customer_call) = bridged(&mut h);
    let key = h.stream_key(&customer_call);
    assert!(h.media.streams[&key].params.send);
    // Hold (RFC 3264 §8.4): sendonly is answered recvonly; nothing is sent
    // to the held party, and the RTP timeout pauses (no RTP expected).
    h.advance(secs(1));
    h.deliver(
        addr(CARRIER),
        &customer_reinvite(&invite, 2, &offer(42000, 2, "sendonly")),
    );
    let ok = h.responses(&customer_call, 200, "INVITE");
    let answer_sdp = String::from_utf8_lossy(ok.last().expect("200").body()).into_owned();
    assert!(answer_sdp.contains("a=recvonly"), "{answer_sdp}");
    let held = &h.media.streams[&key].params;
    assert!(!held.send, "nothing sent to a party that holds");
    h.deliver(
        addr(CARRIER),
        &in_dialog(&invite, "ACK", "cust-tag", CARRIER, 2),
    );
    // Resume.
    h.advance(secs(3));
    h.deliver(
        addr(CARRIER),
        &customer_reinvite(&invite, 3, &offer(42000, 3, "sendrecv")),
    );
    let ok = h.responses(&customer_call, 200, "INVITE");
    let answer_sdp = String::from_utf8_lossy(ok.last().expect("200").body()).into_owned();
    assert!(answer_sdp.contains("a=sendrecv"), "{answer_sdp}");
    assert!(h.media.streams[&key].params.send && h.media.streams[&key].params.receive);
    h.deliver(
        addr(CARRIER),
        &in_dialog(&invite, "ACK", "cust-tag", CARRIER, 3),
    );
    // Still bridged, nobody hung up.
    let a = h.stream_key(&agent_call);
    assert_eq!(h.media.streams[&a].bridged_with, Some(key));
    assert!(h.requests(&agent_call, "BYE").is_empty());
    assert!(h.requests(&customer_call, "BYE").is_empty());
}

#[test]
fn a_reinvite_without_sdp_on_the_customer_leg_takes_the_answer_in_the_ack() {
    let mut h = with_callback("");
    let (invite, _agent_call, customer_call) = bridged(&mut h);
    let key = h.stream_key(&customer_call);
    h.advance(secs(2));
    // The carrier asks for our offer (a re-INVITE without SDP) …
    h.deliver(
        addr(CARRIER),
        &in_dialog(&invite, "INVITE", "cust-tag", CARRIER, 2).replace(
            "Content-Length: 0\r\n",
            "Contact: <sip:peer@127.0.0.1:5090>\r\nContent-Length: 0\r\n",
        ),
    );
    let ok = h.responses(&customer_call, 200, "INVITE");
    let ours = String::from_utf8_lossy(ok.last().expect("200").body()).into_owned();
    assert!(ours.contains("m=audio"), "our offer: {ours}");
    // … and answers in the ACK with a new address: the leg's stream moves.
    let sdp = offer(42100, 2, "sendrecv");
    h.deliver(
        addr(CARRIER),
        &in_dialog(&invite, "ACK", "cust-tag", CARRIER, 2).replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
        ),
    );
    assert_eq!(
        h.media.streams[&key].params.remote,
        Some("127.0.0.1:42100".parse().expect("addr")),
        "the ACK's answer was ignored"
    );
}

#[test]
fn rtp_timeout_on_the_agent_leg_hangs_up_both_legs_at_once() {
    let mut h = with_callback("");
    // The agent's phone died: it answers nothing any more.
    h.answers_bye.remove(&addr(AGENT));
    let (_invite, agent_call, customer_call) = bridged(&mut h);
    h.advance(secs(5));
    let dead = h.stream_key(&agent_call);
    h.media_event(callbackd::b2bua::media::MediaEvent::RtpTimeout { key: dead });
    let now = h.elapsed();
    let agent_bye = h.requests(&agent_call, "BYE")[0];
    assert_eq!(agent_bye.at, now);
    let customer_bye = h.requests(&customer_call, "BYE");
    assert_eq!(
        customer_bye.first().map(|s| s.at),
        Some(now),
        "the customer must not wait for a dead agent's 200: {:?}",
        h.sent_for(&customer_call)
    );
    // RFC 3326: each BYE says why — a timer ran out on the agent's leg, an
    // ordinary hang-up toward the customer.
    let reason = |s: &Sent| {
        s.request()
            .and_then(|r| r.headers.get(HeaderName::Reason))
            .map(str::to_owned)
    };
    assert_eq!(
        reason(agent_bye).as_deref(),
        Some("Q.850;cause=102;text=\"Recovery on timer expiry\"")
    );
    assert_eq!(
        reason(customer_bye[0]).as_deref(),
        Some("Q.850;cause=16;text=\"Normal call clearing\"")
    );
    // The customer was reached, so the callback is done — but the attempt
    // says the talk was cut on the agent's side, not that it completed.
    h.settle();
    let row = &h.rows()[0];
    assert_eq!(row.status, callbackd::callback::store::Status::Completed);
    assert_eq!(
        attempts(&h)
            .iter()
            .map(|a| a.attempt.outcome)
            .collect::<Vec<_>>(),
        [callbackd::callback::scheduler::Outcome::AgentLost]
    );
}

#[test]
fn customer_invites_are_spaced_by_the_trunk_cps_cap_while_agents_ring_together() {
    let extra =
        "[[agents]]\nid = \"bob\"\nuri = \"sip:bob@127.0.0.1:5082\"\nqueues = [\"support\"]\n";
    let config = driver::config(
        &callback_config(extra).replace("[callbacks]", "cps_limit = 0.5\n[callbacks]"),
    );
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    h.answers_bye
        .extend([addr(AGENT), addr(CARRIER), addr("127.0.0.1:5082")]);
    for (i, number) in ["3125550188", "3125550199"].iter().enumerate() {
        register(&mut h, number, &format!("inbound-{i}"));
    }
    // Both agents are rung at the first poll, and both answer at once.
    h.advance(ms(1));
    let agent_invites: Vec<Sent> = h
        .sent
        .iter()
        .filter(|s| s.request().is_some_and(|r| r.method.as_str() == "INVITE"))
        .cloned()
        .collect();
    assert_eq!(agent_invites.len(), 2);
    assert!(agent_invites.iter().all(|s| s.at == ms(0)));
    for s in &agent_invites {
        let req = s.request().expect("INVITE");
        let contact = match s.to {
            callbackd::sip::endpoint::Destination::Udp(a) => a.to_string(),
            _ => panic!("UDP"),
        };
        let ok = answer(
            req,
            200,
            "agent",
            &contact,
            Some(&offer(41000, 1, "sendrecv")),
        );
        h.deliver(addr(&contact), &ok);
    }
    // Both whispers end together; the second customer INVITE waits 2 s.
    h.run_until(h.t0 + secs(30));
    let customers = invites_to(&h, CARRIER);
    assert_eq!(customers.len(), 2);
    assert_eq!(
        customers[1].at - customers[0].at,
        secs(2),
        "0.5 calls per second"
    );
}

// ---------------------------------------------------------------------------
// The ECBT learns from handle times.

/// What the second of two callers waiting in line hears as its ECBT (the
/// number prompt after "ecbt_about"): one caller ahead, alice staffing the
/// queue.
fn second_callers_ecbt(h: &mut Harness) -> String {
    for (n, port) in [("wait-a", 40100), ("wait-b", 40102)] {
        call_in(h, "127.0.0.1:5074", n, port);
    }
    let (_, first) = h.plays("wait-b")[0].clone();
    let about = first
        .iter()
        .position(|p| p == "ecbt_about")
        .expect("an ECBT");
    first[about + 1].clone()
}

#[test]
fn the_ecbt_follows_the_handle_time_of_bridged_callbacks() {
    let ecbt = "[ecbt]\naht_s = 60\nwindow = 1\n";
    // Nothing handled yet: the seed (60 s) for the one caller ahead.
    let mut fresh = with_callback(ecbt);
    assert_eq!(second_callers_ecbt(&mut fresh), "number_1");
    // A callback bridged for five minutes replaces the seed.
    let mut h = with_callback(ecbt);
    let (invite, _, _) = bridged(&mut h);
    h.advance(secs(300));
    h.deliver(
        addr(CARRIER),
        &in_dialog(&invite, "BYE", "cust-tag", CARRIER, 2),
    );
    assert_eq!(
        h.rows()[0].status,
        callbackd::callback::store::Status::Completed
    );
    assert_eq!(second_callers_ecbt(&mut h), "number_5");
}

// ---------------------------------------------------------------------------
// Live callers reach a free agent.

#[test]
fn a_live_caller_reaches_the_free_agent_once_the_offer_was_said() {
    let config = driver::config(&callback_config(""));
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    h.answers_bye.extend([addr(AGENT)]);
    call_in(&mut h, "127.0.0.1:5070", "live-1", 40000);
    // Not during the greeting: the caller is still choosing.
    let (at, greeting) = h.plays("live-1")[0].clone();
    let said = at
        + greeting
            .iter()
            .map(|p| h.prompt_len(p))
            .sum::<std::time::Duration>();
    let i = h.run_until_sent(secs(30), is_agent_invite);
    let rung = h.sent[i].at;
    // The first poll (every 500 ms from t0) after the offer was said.
    let poll = std::time::Duration::from_millis((said.as_millis() as u64 / 500 + 1) * 500);
    assert_eq!(rung, poll, "offer said at {said:?}");
    let agent_invite = h.sent[i].request().expect("INVITE").clone();
    h.advance(ms(700));
    let ok = answer(
        &agent_invite,
        200,
        "agent-tag",
        AGENT,
        Some(&offer(41000, 1, "sendrecv")),
    );
    h.deliver(addr(AGENT), &ok);
    let agent_call = agent_invite.headers.call_id.as_str().to_owned();
    let (c, a) = (h.stream_key("live-1"), h.stream_key(&agent_call));
    assert_eq!(
        h.media.streams[&c].bridged_with,
        Some(a),
        "bridged on the answer"
    );
    // The agent hangs up after a minute: the caller's BYE at once.
    h.advance(secs(60));
    h.deliver(
        addr(AGENT),
        &in_dialog(&agent_invite, "BYE", "agent-tag", AGENT, 2),
    );
    let bye = h.requests("live-1", "BYE");
    assert_eq!(bye.first().map(|s| s.at), Some(h.elapsed()));
}

/// One agent rung at a time per live caller: while alice rings, the next
/// polls leave bob alone; at alice's ring timeout bob is rung.
#[test]
fn a_live_caller_rings_one_agent_at_a_time() {
    let config = driver::config(&callback_config(
        "[[agents]]\nid = \"bob\"\nuri = \"sip:bob@127.0.0.1:5083\"\nqueues = [\"support\"]\n",
    ));
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    call_in(&mut h, "127.0.0.1:5070", "live-1", 40000);
    let rings_an_agent = |s: &Sent| {
        s.request()
            .is_some_and(|r| r.method.as_str() == "INVITE" && r.uri.contains("@127.0.0.1:50"))
            && !s.call_id().starts_with("live-")
    };
    let i = h.run_until_sent(secs(30), rings_an_agent);
    let first = h.sent[i].request().expect("INVITE").clone();
    let from = if first.uri.contains("bob@") {
        "127.0.0.1:5083"
    } else {
        AGENT
    };
    // 180 from the agent: ringing. Three polls later, still one agent.
    h.deliver(addr(from), &answer(&first, 180, "r1", from, None));
    h.advance(ms(1_500));
    let rung: std::collections::HashSet<_> = h
        .sent
        .iter()
        .filter(|s| rings_an_agent(s))
        .map(Sent::call_id)
        .collect();
    assert_eq!(rung.len(), 1, "one agent rings for the caller");
    // At the ring timeout the first is cancelled, then the other rung.
    let c = h.run_until_sent(secs(5), |s| {
        s.request().is_some_and(|r| r.method.as_str() == "CANCEL")
    });
    let cancel = h.sent[c].request().expect("CANCEL").clone();
    h.deliver(addr(from), &answer(&cancel, 200, "r1", from, None));
    h.deliver(addr(from), &answer(&first, 487, "r1", from, None));
    let j = h.run_until_sent(secs(3), |s| {
        rings_an_agent(s) && s.call_id() != first.headers.call_id.as_str()
    });
    assert!(h.sent[j].at >= h.sent[i].at + secs(2), "{:?}", h.sent[j].at);
}

/// A live caller's talk with an agent is a handle time too: five minutes
/// of it replace the 60 s seed, and the next caller with one ahead of it
/// hears 5 minutes (one agent).
#[test]
fn the_ecbt_follows_the_handle_time_of_live_calls() {
    let config = driver::config(&callback_config("[ecbt]\naht_s = 60\nwindow = 1\n"));
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    h.answers_bye.extend([addr(AGENT)]);
    call_in(&mut h, "127.0.0.1:5070", "live-1", 40000);
    let i = h.run_until_sent(secs(30), is_agent_invite);
    let agent_invite = h.sent[i].request().expect("INVITE").clone();
    let ok = answer(
        &agent_invite,
        200,
        "agent-tag",
        AGENT,
        Some(&offer(41000, 1, "sendrecv")),
    );
    h.deliver(addr(AGENT), &ok);
    h.advance(secs(300));
    h.deliver(
        addr(AGENT),
        &in_dialog(&agent_invite, "BYE", "agent-tag", AGENT, 2),
    );
    assert_eq!(second_callers_ecbt(&mut h), "number_5");
}

const BOB: &str = "127.0.0.1:5082";

/// The agent INVITE to `who` (its URI names the agent), answered at once.
fn answer_agent(h: &mut Harness, who: &str, contact: &str) -> callbackd::sip::message::Request {
    let i = h.run_until_sent(secs(30), |s| {
        s.request()
            .is_some_and(|r| r.method.as_str() == "INVITE" && r.uri.contains(who))
    });
    let invite = h.sent[i].request().expect("INVITE").clone();
    let tag = format!("{who}-tag");
    let ok = answer(
        &invite,
        200,
        &tag,
        contact,
        Some(&offer(41000, 1, "sendrecv")),
    );
    h.deliver(addr(contact), &ok);
    invite
}

/// Issue 11 acceptance 5. Two agents take two live calls of known length
/// (2 and 6 minutes): the rolling handle time is their mean, 4 minutes,
/// and a caller with one caller ahead hears 1 × 4 / 2 agents = 2 minutes
/// (1 on the 60 s seed). That caller registers; its callback is launched
/// and the customer dialed at an instant the fake clock gives, and the
/// ECBT error stored and exported is exactly that instant minus the
/// registration minus the 2 minutes announced.
#[test]
fn two_agents_set_the_ecbt_and_the_first_customer_dial_records_its_error() {
    let bob =
        format!("[[agents]]\nid = \"bob\"\nuri = \"sip:bob@{BOB}\"\nqueues = [\"support\"]\n");
    let config = driver::config(&callback_config(&format!(
        "[ecbt]\naht_s = 60\nwindow = 2\n{bob}"
    )));
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    h.answers_bye.extend([
        addr(AGENT),
        addr(BOB),
        addr(CARRIER),
        addr("127.0.0.1:5070"),
        addr("127.0.0.1:5072"),
        addr("127.0.0.1:5074"),
        addr("127.0.0.1:5076"),
    ]);
    call_in(&mut h, "127.0.0.1:5070", "live-1", 40000);
    call_in(&mut h, "127.0.0.1:5072", "live-2", 40002);
    let to_alice = answer_agent(&mut h, "alice", AGENT);
    let alice_answered = h.elapsed();
    let to_bob = answer_agent(&mut h, "bob", BOB);
    let bob_answered = h.elapsed();
    // Alice talks 2 minutes, Bob 6 (from their answers).
    h.advance(alice_answered + secs(120) - h.elapsed());
    h.deliver(
        addr(AGENT),
        &in_dialog(&to_alice, "BYE", "alice-tag", AGENT, 2),
    );
    h.advance(bob_answered + secs(360) - h.elapsed());
    h.deliver(addr(BOB), &in_dialog(&to_bob, "BYE", "bob-tag", BOB, 2));
    h.advance(secs(5));
    let support = h.ctl.queue_ecbts();
    assert_eq!(support[0].average_handle_time, secs(240), "{support:?}");
    assert_eq!(support[0].staffed_agents, 2);

    // One caller waiting ahead: 1 × 240 s / 2 agents = 2 minutes.
    call_in(&mut h, "127.0.0.1:5074", "wait-a", 40100);
    let mut caller = call_in(&mut h, "127.0.0.1:5076", "reg", 40102);
    let (_, first) = h.plays("reg")[0].clone();
    assert_eq!(
        first,
        [
            "welcome",
            "ecbt_intro",
            "ecbt_about",
            "number_2",
            "minutes",
            "callback_offer"
        ]
    );
    // The caller ahead leaves; this one keys its number and confirms.
    let mut ahead = Peer::new("127.0.0.1:5074", "wait-a");
    ahead.to_tag = h.responses("wait-a", 200, "INVITE")[0]
        .response()
        .and_then(|r| r.headers.to.tag.as_deref().map(str::to_owned));
    ahead.cseq = 2;
    let bye = ahead.request("BYE", None);
    h.deliver(ahead.addr, &bye);
    h.advance(secs(2));
    h.digit("reg", '1');
    h.advance(secs(1));
    h.digits("reg", "3125550188", ms(100));
    h.advance(secs(15));
    h.digit("reg", '1');
    let row = h.rows().into_iter().next().expect("registered");
    assert_eq!(row.ecbt_quoted_minutes, 2);
    let registered = row.registered_at;
    caller.cseq += 1;

    // Launched at the next poll: an agent answers, the customer is dialed.
    let i = h.run_until_sent(secs(30), |s| {
        s.request().is_some_and(|r| {
            r.method.as_str() == "INVITE" && (r.uri.contains("alice") || r.uri.contains("bob"))
        })
    });
    let agent_invite = h.sent[i].request().expect("INVITE").clone();
    let (tag, contact) = if agent_invite.uri.contains("alice") {
        ("alice-tag", AGENT)
    } else {
        ("bob-tag", BOB)
    };
    h.advance(ms(700));
    let ok = answer(
        &agent_invite,
        200,
        tag,
        contact,
        Some(&offer(41000, 1, "sendrecv")),
    );
    h.deliver(addr(contact), &ok);
    let i = h.run_until_sent(secs(20), is_invite_to_customer);
    let dialed_at: jiff::Timestamp = WALL0.parse::<jiff::Timestamp>().expect("WALL0")
        + jiff::SignedDuration::try_from(h.sent[i].at).expect("offset");
    let error = dialed_at.duration_since(registered) - jiff::SignedDuration::from_mins(2);
    let invite = h.sent[i].request().expect("INVITE").clone();
    let ok = answer(
        &invite,
        200,
        "cust-tag",
        CARRIER,
        Some(&offer(42000, 1, "sendrecv")),
    );
    h.deliver(addr(CARRIER), &ok);
    h.advance(secs(30));
    h.deliver(
        addr(CARRIER),
        &in_dialog(&invite, "BYE", "cust-tag", CARRIER, 2),
    );
    h.advance(secs(5));

    // Stored with the callback...
    let stored = callbackd::callback::store::ManageStore::get(&h.store, row.id)
        .expect("read")
        .expect("stored");
    // The store keeps milliseconds.
    let dialed_ms = dialed_at.as_millisecond();
    assert_eq!(
        stored.row.customer_dialed_at.map(|t| t.as_millisecond()),
        Some(dialed_ms)
    );
    assert_eq!(
        stored.ecbt_error_ms,
        Some(dialed_ms - registered.as_millisecond() - 120_000)
    );
    assert!(
        error.is_negative(),
        "dialed within the 2 minutes: {error:?}"
    );
    // ... and exported per queue, with the gauges the estimate came from.
    let totals = h.ctl.totals();
    let support = callbackd::callback::QueueId("support".into());
    let histogram = &totals.calls.ecbt_error[&support];
    assert_eq!(histogram.count(), 1);
    assert!((histogram.sum() - error.as_secs_f64()).abs() < 1e-9);
    let status = callbackd::engine::EngineStatus {
        stats: h.ctl.stats(),
        gates: h.ctl.gates(),
        draining: false,
        totals,
        edge: Default::default(),
        queues: h.ctl.queue_ecbts(),
        media: Default::default(),
        commits: Default::default(),
        sip_bound: true,
    };
    let text = callbackd::api::metrics::render(&status);
    for line in [
        format!(
            "callbackd_ecbt_error_seconds_sum{{queue=\"support\"}} {}",
            error.as_secs_f64()
        ),
        "callbackd_ecbt_error_seconds_count{queue=\"support\"} 1".to_owned(),
        "callbackd_ecbt_announced_minutes{queue=\"support\"} 2".to_owned(),
        "callbackd_ecbt_staffed_agents{queue=\"support\"} 2".to_owned(),
        // An IVR callback has no due time: its wait is its turn, not lag.
        "callbackd_scheduler_lag_seconds_count 0".to_owned(),
        "callbackd_calls_ended_total{direction=\"outbound_customer\",outcome=\"answered\"} 1"
            .to_owned(),
        "callbackd_dtmf_digits_total{source=\"rfc4733\"} 12".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

#[test]
fn the_ecbt_divides_by_the_agents_staffing_the_queue_now() {
    let bob =
        "[[agents]]\nid = \"bob\"\nuri = \"sip:bob@127.0.0.1:5082\"\nqueues = [\"support\"]\n";
    let ecbt = format!("[ecbt]\naht_s = 240\nwindow = 1\n{bob}");
    // Two agents: one caller ahead × 4 minutes / 2 = 2 minutes.
    let mut both = with_callback(&ecbt);
    assert_eq!(second_callers_ecbt(&mut both), "number_2");
    // Bob paused: alice alone, 4 minutes.
    let mut alone = with_callback(&ecbt);
    let now = alone.now;
    alone
        .ctl
        .set_agent_paused(now, "bob", true)
        .expect("bob can be paused");
    assert_eq!(second_callers_ecbt(&mut alone), "number_4");
}

// ---------------------------------------------------------------------------
// What the real-socket tests no longer time.

#[test]
fn callbacks_wait_without_a_trunk_target_and_launch_at_the_first_poll_after_it_resolves() {
    let mut h = with_callback_to("", Vec::new());
    // No target: no agent is rung only to fail the customer leg.
    h.advance(secs(10));
    assert!(
        h.sent.is_empty(),
        "{:?}",
        h.sent.iter().map(Sent::label).collect::<Vec<_>>()
    );
    // The termination resolves (the engine's DNS refresh) at 10.2 s.
    h.advance(ms(200));
    h.ctl.set_trunk_targets(vec![udp_target(CARRIER)]);
    let i = h.run_until_sent(secs(1), |s| {
        s.request().is_some_and(|r| r.method.as_str() == "INVITE")
    });
    assert_eq!(h.sent[i].at, ms(10_500), "the next poll");
}

#[test]
fn a_caller_hanging_up_mid_entry_leaves_no_row_and_no_timer() {
    let (mut h, mut caller) = answered_call("", "call-h", ms(10));
    h.advance(secs(2));
    h.digit("call-h", '1');
    h.advance(secs(1));
    h.digits("call-h", "31255", ms(100));
    h.advance(ms(500));
    let bye = caller.request("BYE", None);
    h.deliver(caller.addr, &bye);
    assert_eq!(h.responses("call-h", 200, "BYE")[0].at, h.elapsed());
    // Well past every IVR timer and 64·T1.
    h.advance(secs(120));
    assert!(h.rows().is_empty());
    assert!(
        !h.store_log
            .iter()
            .any(|(_, r)| matches!(r, callbackd::b2bua::store::StoreRequest::Register { .. }))
    );
    let stats = h.ctl.stats();
    assert_eq!((stats.calls, stats.rtp_ports), (0, 0), "{stats:?}");
    assert_eq!(
        stats.sip,
        Default::default(),
        "no transaction or timer: {stats:?}"
    );
}

#[test]
fn a_paused_agent_gets_nothing_until_unpaused_then_the_next_poll_rings_it() {
    let mut h = with_callback("");
    let now = h.now;
    h.ctl
        .set_agent_paused(now, "alice", true)
        .expect("alice can be paused");
    h.advance(secs(5));
    assert!(h.sent.is_empty(), "a paused agent is offered nothing");
    h.advance(ms(100));
    let now = h.now;
    h.ctl
        .set_agent_paused(now, "alice", false)
        .expect("alice can be unpaused");
    let i = h.run_until_sent(secs(1), |s| {
        s.request().is_some_and(|r| r.method.as_str() == "INVITE")
    });
    assert_eq!(h.sent[i].at, ms(5_500), "the first poll after the unpause");
}

#[test]
fn the_launch_switch_holds_due_callbacks_and_releases_them_at_the_next_poll() {
    let mut h = with_callback("");
    let gates = h.ctl.gates();
    h.ctl.set_gates(callbackd::callback::hours::Gates {
        launch_enabled: false,
        ..gates
    });
    h.advance(secs(5));
    assert!(h.sent.is_empty(), "launching is off");
    h.advance(ms(100));
    h.ctl.set_gates(gates);
    let i = h.run_until_sent(secs(1), |s| {
        s.request().is_some_and(|r| r.method.as_str() == "INVITE")
    });
    assert_eq!(h.sent[i].at, ms(5_500));
}

#[test]
fn the_agent_holds_and_resumes_a_bridged_callback() {
    let mut h = with_callback("");
    let (_invite, agent_call, customer_call) = bridged(&mut h);
    let agent_invite = h.requests(&agent_call, "INVITE")[0]
        .request()
        .expect("INVITE")
        .clone();
    let key = h.stream_key(&agent_call);
    h.advance(secs(1));
    // inactive: answered inactive, nothing sent to the agent.
    h.deliver(
        addr(AGENT),
        &reinvite(
            &agent_invite,
            "agent-tag",
            AGENT,
            2,
            &offer(41000, 2, "inactive"),
        ),
    );
    let ok = h.responses(&agent_call, 200, "INVITE");
    let sdp = String::from_utf8_lossy(ok.last().expect("200").body()).into_owned();
    assert!(sdp.contains("a=inactive"), "{sdp}");
    assert!(!h.media.streams[&key].params.send);
    assert!(
        !h.media.streams[&key].params.receive,
        "no RTP expected: no RTP timeout"
    );
    h.deliver(
        addr(AGENT),
        &in_dialog(&agent_invite, "ACK", "agent-tag", AGENT, 2),
    );
    h.advance(secs(2));
    h.deliver(
        addr(AGENT),
        &reinvite(
            &agent_invite,
            "agent-tag",
            AGENT,
            3,
            &offer(41000, 3, "sendrecv"),
        ),
    );
    assert!(h.media.streams[&key].params.send && h.media.streams[&key].params.receive);
    let c = h.stream_key(&customer_call);
    assert_eq!(h.media.streams[&key].bridged_with, Some(c));
    assert!(h.requests(&customer_call, "BYE").is_empty());
}

#[test]
fn an_inbound_call_is_routed_to_the_queue_of_its_did() {
    let queues =
        "[[queues]]\nid = \"support\"\n[[queues]]\nid = \"sales\"\ndids = [\"8005550199\"]\n";
    let config = driver::config(queues);
    let mut h = Harness::new(&config);
    for (call_id, user, queue) in [
        ("did-1", "+8005550199", "sales"),
        ("did-2", "3125550100", "support"),
    ] {
        call_to(&mut h, call_id, user);
        let key = h.stream_key(call_id);
        let asked = h.store_log.iter().find_map(|(_, r)| match r {
            callbackd::b2bua::store::StoreRequest::PendingAhead { call, queue, .. }
                if *call == key =>
            {
                Some(queue.as_str().to_owned())
            }
            _ => None,
        });
        assert_eq!(asked.as_deref(), Some(queue), "{call_id} to {user}");
    }
}

#[test]
fn a_408_sent_by_the_carrier_is_the_customers_no_answer_not_a_failover() {
    let mut h = with_callback_to("", vec![udp_target(CARRIER), udp_target("127.0.0.2:5090")]);
    let agent = agent_answers(&mut h, ms(100));
    h.run_until_sent(secs(20), is_invite_to_customer);
    let first = invites_to(&h, CARRIER)[0]
        .request()
        .expect("INVITE")
        .clone();
    h.advance(ms(40));
    h.deliver(addr(CARRIER), &answer(&first, 408, "t1", CARRIER, None));
    assert!(
        invites_to(&h, "127.0.0.2:5090").is_empty(),
        "a carrier's 408 is not the SBC failing"
    );
    tells_the_agent(&mut h, agent.headers.call_id.as_str());
    let row = &h.rows()[0];
    assert_eq!(row.attempts, 1);
    assert_eq!(
        row.status,
        callbackd::callback::store::Status::Pending,
        "retried later"
    );
    assert_eq!(
        attempts(&h)[0].attempt.outcome,
        callbackd::callback::scheduler::Outcome::NoAnswer
    );
}

// ---------------------------------------------------------------------------
// Caller identity (RFC 3325, 3323) and redirection history.

#[test]
fn the_trunks_asserted_identity_is_offered_rather_than_from() {
    // A PBX behind the carrier writes its main number in From; the network
    // asserts the extension's own line.
    let (mut h, _caller) = call_with_headers(
        "call-pai",
        Some("\"Acme\" <sip:2125550000@pbx.example>"),
        "P-Asserted-Identity: <sip:+13125550122@carrier.example;user=phone>\r\n",
    );
    assert_eq!(after_pressing_1(&mut h, "call-pai"), ["ani_offer"]);
    // 1 again takes the asserted number as it is.
    h.advance(secs(1));
    h.digit("call-pai", '1');
    h.run_until(h.now + secs(30));
    let rows = h.rows();
    assert_eq!(rows.len(), 1, "{:?}", h.plays("call-pai"));
    assert_eq!(rows[0].number, "3125550122");
    assert_eq!(
        rows[0].caller_ani, "13125550122",
        "the asserted ANI as received"
    );
}

#[test]
fn a_withheld_number_is_never_offered_nor_stored() {
    for (from, headers) in [
        (None, "Privacy: id\r\n"),
        (
            None,
            "P-Asserted-Identity: <sip:3125550122@carrier.example>\r\nPrivacy: id;header\r\n",
        ),
        (Some("<sip:anonymous@anonymous.invalid>"), ""),
    ] {
        let (mut h, _caller) = call_with_headers("call-priv", from, headers);
        let heard = after_pressing_1(&mut h, "call-priv");
        assert!(
            !heard.iter().any(|p| p == "ani_offer"),
            "{headers:?}: {heard:?}"
        );
        // The caller keys a number: the row holds no trace of the
        // withheld one.
        h.advance(secs(1));
        h.digits("call-priv", "3125550188", ms(200));
        h.advance(secs(1));
        h.digit("call-priv", '1');
        h.run_until(h.now + secs(30));
        let rows = h.rows();
        assert_eq!(rows.len(), 1, "{headers:?}: {:?}", h.plays("call-priv"));
        assert_eq!(rows[0].number, "3125550188");
        assert_eq!(rows[0].caller_ani, "", "{headers:?}");
    }
}

#[test]
fn the_inbound_cdr_keeps_where_the_call_was_diverted_from() {
    let (mut h, mut caller) = call_with_headers(
        "call-div",
        None,
        "Diversion: <sip:3125550199@pbx.example>;reason=no-answer;counter=1\r\n",
    );
    h.advance(secs(2));
    let bye = caller.request("BYE", None);
    h.deliver(caller.addr, &bye);
    h.settle();
    let cdrs = callbackd::callback::store::LaunchStore::cdrs(&h.store, None, None).expect("cdrs");
    let inbound = cdrs
        .iter()
        .find(|c| c.call_id == "call-div")
        .expect("the inbound CDR");
    assert_eq!(
        inbound.redirected_from.as_deref(),
        Some("<sip:3125550199@pbx.example>;reason=no-answer;counter=1")
    );
}

/// Issue 11 point 5: the Diversion, History-Info and User-to-User headers
/// of the caller's INVITE are stored with the callback it registers, and
/// its `callback.registered` webhook payload carries them.
#[test]
fn a_registered_callback_keeps_the_invites_sip_context_for_its_webhook() {
    use callbackd::callback::store::{NewWebhook, WebhookStore};
    use callbackd::callback::webhook::EventKind;
    let (mut h, _caller) = call_with_headers(
        "call-ctx",
        None,
        "Diversion: <sip:3125550199@pbx.example>;reason=no-answer;counter=1\r\n\
         History-Info: <sip:8005550100@carrier.example>;index=1\r\n\
         History-Info: <sip:3125550199@pbx.example>;index=1.1\r\n\
         User-to-User: 56a390f3d2b7310023a2;encoding=hex;purpose=isdn-uui\r\n",
    );
    h.store
        .create_webhook(&NewWebhook {
            url: "http://127.0.0.1:9/hook".into(),
            events: vec![EventKind::Registered],
            secret: "whsec_controller_test".into(),
            enabled: true,
            description: String::new(),
            created_by: "test".into(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
        })
        .expect("subscription");
    after_pressing_1(&mut h, "call-ctx");
    h.advance(secs(1));
    h.digits("call-ctx", "3125550188", ms(100));
    h.advance(secs(15));
    h.digit("call-ctx", '1');
    h.run_until(h.now + secs(30));
    let rows = h.rows();
    assert_eq!(rows.len(), 1, "{:?}", h.plays("call-ctx"));
    let heads = h.store.webhook_heads().expect("heads");
    assert_eq!(heads.len(), 1, "one event for the subscription");
    let event = h
        .store
        .outgoing(heads[0].delivery)
        .expect("read")
        .expect("pending");
    assert_eq!(event.event_type, "callback.registered");
    let body: serde_json::Value = serde_json::from_str(&event.payload).expect("JSON");
    assert_eq!(body["data"]["callback"]["id"], rows[0].id.0);
    assert_eq!(body["data"]["callback"]["number"], "3125550188");
    assert_eq!(
        body["data"]["sip"],
        serde_json::json!({
            "diversion": ["<sip:3125550199@pbx.example>;reason=no-answer;counter=1"],
            "history_info": [
                "<sip:8005550100@carrier.example>;index=1",
                "<sip:3125550199@pbx.example>;index=1.1"
            ],
            "user_to_user": ["56a390f3d2b7310023a2;encoding=hex;purpose=isdn-uui"],
        })
    );
}

// ---------------------------------------------------------------------------
// Agents behind NAT.

/// The NAT's public side of agent bob's phone, and the private Contact the
/// phone writes.
const BOB_PUBLIC: &str = "127.0.0.1:41000";
const BOB_PRIVATE: &str = "192.168.1.20:5060";

/// Bob's phone REGISTERs from `BOB_PUBLIC` with a private Contact,
/// answering the digest challenge.
fn register_bob_behind_nat(h: &mut Harness) {
    let ok = register_bob(h, BOB_PUBLIC, BOB_PRIVATE, BOB_PRIVATE, 3600, 1);
    assert_eq!(ok.status, 200);
}

/// Bob's phone sends a REGISTER from `from` with a Via sent-by `via`,
/// Contact `contact` and `Expires: expires` (CSeq `cseq`), answers the
/// digest challenge (CSeq + 1) and gets the final response.
fn register_bob(
    h: &mut Harness,
    from: &str,
    via: &str,
    contact: &str,
    expires: u32,
    cseq: u32,
) -> callbackd::sip::message::Response {
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{ENGINE} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {via};branch=z9hG4bK-reg-{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:bob@{ENGINE}>;tag=reg-bob\r\nTo: <sip:bob@{ENGINE}>\r\n\
             Call-ID: reg-bob\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:bob@{contact}>\r\nExpires: {expires}\r\n{auth}\
             Content-Length: 0\r\n\r\n"
        )
    };
    h.deliver(addr(from), &register(cseq, ""));
    let challenge = h
        .responses("reg-bob", 401, "REGISTER")
        .last()
        .and_then(|s| s.response())
        .expect("a 401")
        .clone();
    let answer = callbackd::sip::digest::Credentials::new("bob", "s3cret")
        .answer(
            &challenge,
            &callbackd::sip::digest::DigestRequest {
                method: "REGISTER",
                uri: &format!("sip:{ENGINE}"),
                body: b"",
            },
            "c0ffee",
            1,
        )
        .expect("answers the challenge");
    let before = h.sent.len();
    h.deliver(
        addr(from),
        &register(cseq + 1, &format!("Authorization: {}\r\n", answer.value)),
    );
    h.sent[before..]
        .iter()
        .filter_map(Sent::response)
        .find(|r| r.headers.call_id.as_str() == "reg-bob" && r.status >= 200 && r.status != 401)
        .expect("a final response to the REGISTER")
        .clone()
}

#[test]
fn an_agent_behind_nat_gets_ack_and_bye_through_the_flow_it_registered_from() {
    let config = driver::config(&format!(
        "[trunk]\ntermination = \"{CARRIER}\"\n\
         [callbacks]\npoll_interval_ms = 500\n\
         [[queues]]\nid = \"support\"\ncallback_number = \"3125550100\"\n\
         [[agents]]\nid = \"bob\"\nuser = \"bob\"\npassword = \"s3cret\"\nqueues = [\"support\"]\n"
    ));
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    register_bob_behind_nat(&mut h);
    register(&mut h, "3125550188", "inbound-1");
    h.answers_bye.extend([addr(BOB_PUBLIC), addr(CARRIER)]);
    let public = callbackd::sip::endpoint::Destination::Udp(addr(BOB_PUBLIC));
    // The INVITE goes to the NAT's public side, for the private Contact.
    let i = h.run_until_sent(secs(5), |s| {
        s.request()
            .is_some_and(|r| r.method.as_str() == "INVITE" && r.uri.contains("bob"))
    });
    assert_eq!(h.sent[i].to, public);
    let invite = h.sent[i].request().expect("INVITE").clone();
    assert_eq!(&*invite.uri, format!("sip:bob@{BOB_PRIVATE}"));
    let bob_call = invite.headers.call_id.as_str().to_owned();
    // The phone answers with its private Contact again: the ACK still
    // goes through the NAT (RFC 3261 would send it to the Contact).
    h.advance(ms(300));
    let ok = answer(
        &invite,
        200,
        "bob-tag",
        BOB_PRIVATE,
        Some(&offer(41000, 1, "sendrecv")),
    );
    h.deliver(addr(BOB_PUBLIC), &ok);
    let ack = &h.requests(&bob_call, "ACK")[0];
    assert_eq!(ack.to, public);
    assert!(
        ack.request().is_some_and(|r| r.uri.contains(BOB_PRIVATE)),
        "the ACK is addressed to the Contact, sent through the flow"
    );
    // Bridged with the customer, who later hangs up: bob's BYE goes
    // through the NAT too.
    let i = h.run_until_sent(secs(20), is_invite_to_customer);
    let customer_invite = h.sent[i].request().expect("INVITE").clone();
    h.deliver(
        addr(CARRIER),
        &answer(
            &customer_invite,
            200,
            "cust-tag",
            CARRIER,
            Some(&offer(42000, 1, "sendrecv")),
        ),
    );
    h.advance(secs(70));
    h.deliver(
        addr(CARRIER),
        &in_dialog(&customer_invite, "BYE", "cust-tag", CARRIER, 2),
    );
    let bye = &h.requests(&bob_call, "BYE")[0];
    assert_eq!(bye.to, public);
    h.settle();
    assert_eq!(
        h.rows()[0].status,
        callbackd::callback::store::Status::Completed
    );
}

/// A queue and bob, who registers; `registrar` is more `[registrar]` TOML.
fn bob_config(registrar: &str) -> callbackd::config::Config {
    driver::config(&format!(
        "[registrar]\n{registrar}\n\
         [[queues]]\nid = \"support\"\n\
         [[agents]]\nid = \"bob\"\nuser = \"bob\"\npassword = \"s3cret\"\nqueues = [\"support\"]\n"
    ))
}

/// When (offset from `t0`) an OPTIONS went to `to` over UDP, in order.
fn pings_to(h: &Harness, to: &str) -> Vec<std::time::Duration> {
    let to = callbackd::sip::endpoint::Destination::Udp(addr(to));
    h.sent
        .iter()
        .filter(|s| s.to == to && s.request().is_some_and(|r| r.method.as_str() == "OPTIONS"))
        .map(|s| s.at)
        .collect()
}

fn bob_reachable(h: &Harness) -> bool {
    h.ctl
        .agents(h.now)
        .iter()
        .find(|a| a.id.0.as_ref() == "bob")
        .expect("bob is configured")
        .reachable
}

/// The `expires` the 200 to a REGISTER grants its (only) Contact.
fn granted_expires(ok: &callbackd::sip::message::Response) -> u32 {
    let contact = ok
        .headers
        .get(callbackd::sip::message::HeaderName::Contact)
        .expect("the 200 lists the binding");
    contact
        .rsplit_once("expires=")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no expires in {contact}"))
}

#[test]
fn a_registered_phone_is_pinged_through_its_flow_at_the_keepalive_interval_until_it_unregisters() {
    // Defaults: a keep-alive every 20 s on each registered UDP flow.
    let mut h = Harness::new(&bob_config(""));
    h.answers_options.insert(addr(BOB_PUBLIC));
    register_bob_behind_nat(&mut h);
    let registered = h.elapsed();
    // The phone's share (80-100 %) of the 20 s interval.
    let period = keepalive_period(secs(20), addr(BOB_PUBLIC));
    h.advance(period * 3 + secs(1));
    assert_eq!(
        pings_to(&h, BOB_PUBLIC),
        [1, 2, 3].map(|k| registered + period * k),
        "an OPTIONS every {period:?} to the NAT's public side"
    );
    for ping in h
        .sent
        .iter()
        .filter_map(Sent::request)
        .filter(|r| r.method.as_str() == "OPTIONS")
    {
        // Out of dialog, to the registered (private) Contact.
        assert_eq!(&*ping.uri, format!("sip:bob@{BOB_PRIVATE}"));
        assert!(ping.headers.to.tag.is_none());
    }
    assert!(
        bob_reachable(&h),
        "answered pings keep the phone registered"
    );
    // Unregistered: no more pings.
    let ok = register_bob(&mut h, BOB_PUBLIC, BOB_PRIVATE, BOB_PRIVATE, 0, 3);
    assert_eq!(ok.status, 200);
    assert!(!bob_reachable(&h));
    h.advance(secs(120));
    assert_eq!(
        pings_to(&h, BOB_PUBLIC).len(),
        3,
        "no ping after unregistering"
    );
}

#[test]
fn keepalives_follow_the_configured_interval_and_stop_when_the_binding_lapses() {
    let mut h = Harness::new(&bob_config("nat_keepalive_s = 25"));
    h.answers_options.insert(addr(BOB_PUBLIC));
    let ok = register_bob(&mut h, BOB_PUBLIC, BOB_PRIVATE, BOB_PRIVATE, 100, 1);
    assert_eq!(granted_expires(&ok), 100);
    let registered = h.elapsed();
    h.advance(secs(300));
    let period = keepalive_period(secs(25), addr(BOB_PUBLIC));
    assert!(period >= secs(20) && period <= secs(25), "{period:?}");
    let expected: Vec<_> = (1..)
        .map(|k| period * k)
        .take_while(|&at| at < secs(100))
        .map(|at| registered + at)
        .collect();
    assert_eq!(
        pings_to(&h, BOB_PUBLIC),
        expected,
        "pings every {period:?} (of 25 s) until the binding lapses at 100 s, none after"
    );
    assert!(!bob_reachable(&h));
}

#[test]
fn no_keepalive_when_switched_off() {
    let mut h = Harness::new(&bob_config(
        "nat_keepalive_s = 0\nnat_register_expires_s = 0",
    ));
    register_bob_behind_nat(&mut h);
    h.advance(secs(300));
    assert!(pings_to(&h, BOB_PUBLIC).is_empty());
    assert!(bob_reachable(&h), "nothing pinged, nothing dropped");
}

#[test]
fn a_phone_that_answers_no_keepalive_is_unregistered_after_three() {
    let mut h = Harness::new(&bob_config(""));
    register_bob_behind_nat(&mut h);
    let registered = h.elapsed();
    let period = keepalive_period(secs(20), addr(BOB_PUBLIC));
    h.run_until(h.t0 + registered + period * 4 - secs(1));
    assert!(bob_reachable(&h), "two unanswered pings are not enough");
    h.advance(secs(1));
    assert!(
        !bob_reachable(&h),
        "the third unanswered ping drops the binding when the fourth is due"
    );
    h.advance(secs(100));
    assert_eq!(
        pings_to(&h, BOB_PUBLIC),
        [1, 2, 3].map(|k| registered + period * k)
    );
}

#[test]
fn any_message_from_the_flow_counts_as_an_answer() {
    // Registered for an hour (no NAT limit), so only pings could drop it.
    let mut h = Harness::new(&bob_config("nat_register_expires_s = 0"));
    register_bob_behind_nat(&mut h);
    // The phone answers no OPTIONS of ours but sends its own every 15 s:
    // it is alive, and stays registered.
    for n in 0..14 {
        h.advance(secs(15));
        h.deliver(
            addr(BOB_PUBLIC),
            &format!(
                "OPTIONS sip:{ENGINE} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {BOB_PRIVATE};branch=z9hG4bK-ka-{n};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:bob@{ENGINE}>;tag=ka-{n}\r\nTo: <sip:{ENGINE}>\r\n\
                 Call-ID: ka-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ),
        );
    }
    assert!(pings_to(&h, BOB_PUBLIC).len() >= 9, "pinged all along");
    assert!(bob_reachable(&h), "heard from within every interval");
}

#[test]
fn a_phone_registering_from_behind_nat_gets_a_shorter_expires() {
    // The source differs from the Contact: NAT; default 120 s.
    let mut h = Harness::new(&bob_config(""));
    let ok = register_bob(&mut h, BOB_PUBLIC, BOB_PRIVATE, BOB_PRIVATE, 3600, 1);
    assert_eq!(granted_expires(&ok), 120);
    // Contact and Via name the source: no NAT, the interval asked for.
    let mut h = Harness::new(&bob_config(""));
    let ok = register_bob(&mut h, BOB_PUBLIC, BOB_PUBLIC, BOB_PUBLIC, 3600, 1);
    assert_eq!(granted_expires(&ok), 3600);
    // A Contact with the public address (STUN) but a private Via sent-by:
    // the Via shows the NAT (RFC 3581 received/rport differ from it).
    let mut h = Harness::new(&bob_config("nat_register_expires_s = 90"));
    let ok = register_bob(&mut h, BOB_PUBLIC, BOB_PRIVATE, BOB_PUBLIC, 3600, 1);
    assert_eq!(granted_expires(&ok), 90);
    // A shorter interval asked for is kept.
    let mut h = Harness::new(&bob_config(""));
    let ok = register_bob(&mut h, BOB_PUBLIC, BOB_PRIVATE, BOB_PRIVATE, 60, 1);
    assert_eq!(granted_expires(&ok), 60);
    // Switched off.
    let mut h = Harness::new(&bob_config("nat_register_expires_s = 0"));
    let ok = register_bob(&mut h, BOB_PUBLIC, BOB_PRIVATE, BOB_PRIVATE, 3600, 1);
    assert_eq!(granted_expires(&ok), 3600);
}

/// Issue 11 acceptance 2: a callback scheduled through the API ten minutes
/// ahead is not dialled at 9:59 and is at 10:00 (within one poll), agent
/// first.
#[test]
fn a_callback_scheduled_ten_minutes_ahead_is_dialled_at_its_time_not_before() {
    let config = driver::config(&callback_config(""));
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    h.answers_bye.extend([addr(AGENT), addr(CARRIER)]);
    schedule(&mut h, secs(600), secs(3600));
    h.advance(secs(599));
    assert!(
        !h.sent.iter().any(is_agent_invite),
        "nothing is dialled before its time"
    );
    assert_eq!(
        h.rows()[0].status,
        callbackd::callback::store::Status::Pending
    );
    let i = h.run_until_sent(secs(2), is_agent_invite);
    let at = h.sent[i].at;
    assert!(
        at >= secs(600) && at <= secs(600) + ms(500),
        "dialled at its time, within one poll: {at:?}"
    );
    assert!(invites_to(&h, CARRIER).is_empty(), "agent first");
    assert_eq!(
        h.rows()[0].status,
        callbackd::callback::store::Status::Dialing
    );
    // The scheduler lag metric: due at 600 s, launched at the poll.
    let lag = h.ctl.totals().calls.scheduler_lag;
    assert_eq!(lag.count(), 1);
    assert_eq!(lag.sum(), (at - secs(600)).as_secs_f64());
}

/// The organisation's callback numbers for issue 11 point 4: the queue
/// presents 312-555-0100; alice may present only 212-555-0100; bob any.
fn callback_numbers_config() -> callbackd::config::Config {
    driver::config(&callback_config(&format!(
        "callback_numbers = [\"2125550100\"]\n\
         [[agents]]\nid = \"bob\"\nuri = \"sip:bob@{BOB}\"\nqueues = [\"support\"]\n\
         [org]\ncallback_numbers = [\"3125550100\", \"8005550100\", \"2125550100\"]\n"
    )))
}

/// The customer INVITE's From, once the agent `who` answered.
fn customer_from(h: &mut Harness, who: &str, contact: &str) -> String {
    answer_agent(h, who, contact);
    let i = h.run_until_sent(secs(20), is_invite_to_customer);
    h.sent[i]
        .request()
        .expect("INVITE")
        .headers
        .from
        .uri
        .to_string()
}

/// Issue 11 point 4: a callback asking to present 800-555-0100 skips alice,
/// free longest but restricted to 212-555-0100, rings bob, and the
/// customer sees 800-555-0100.
#[test]
fn a_callback_asking_for_a_caller_id_goes_to_an_agent_allowed_to_present_it() {
    let mut h = Harness::with_trunk(&callback_numbers_config(), vec![udp_target(CARRIER)]);
    h.answers_bye
        .extend([addr(AGENT), addr(BOB), addr(CARRIER)]);
    schedule_presenting(&mut h, secs(0), secs(3600), Some("8005550100"));
    let from = customer_from(&mut h, "bob", BOB);
    assert!(from.contains("8005550100"), "{from}");
    assert!(
        !h.sent.iter().any(is_agent_invite),
        "alice may not present it and is never rung"
    );
}

/// Without a caller ID asked, the queue's number is presented by an agent
/// allowed to present it, and a restricted agent presents its own.
#[test]
fn a_restricted_agent_presents_its_own_number_and_others_the_queues() {
    let mut h = Harness::with_trunk(&callback_numbers_config(), vec![udp_target(CARRIER)]);
    h.answers_bye
        .extend([addr(AGENT), addr(BOB), addr(CARRIER)]);
    register(&mut h, "3125550188", "inbound-1");
    // Alice, idle longest, takes it: the queue's 312 is not hers to show.
    let from = customer_from(&mut h, "alice", AGENT);
    assert!(from.contains("2125550100"), "{from}");

    let mut h = Harness::with_trunk(&callback_numbers_config(), vec![udp_target(CARRIER)]);
    h.answers_bye
        .extend([addr(AGENT), addr(BOB), addr(CARRIER)]);
    let now = h.now;
    h.ctl
        .set_agent_paused(now, "alice", true)
        .expect("alice can be paused");
    register(&mut h, "3125550188", "inbound-1");
    let from = customer_from(&mut h, "bob", BOB);
    assert!(from.contains("3125550100"), "{from}");
}

/// A scheduled callback that cannot be launched before its window ends
/// (launching is off) is expired, never dialled.
#[test]
fn a_scheduled_callback_past_its_window_end_is_expired_not_dialled() {
    let config = driver::config(&callback_config("[org]\nlaunch_enabled = false\n"));
    let mut h = Harness::with_trunk(&config, vec![udp_target(CARRIER)]);
    schedule(&mut h, secs(60), secs(30));
    h.advance(secs(89));
    assert_eq!(
        h.rows()[0].status,
        callbackd::callback::store::Status::Pending
    );
    h.advance(secs(2));
    assert_eq!(
        h.rows()[0].status,
        callbackd::callback::store::Status::Expired
    );
    assert!(!h.sent.iter().any(is_agent_invite));
}

/// A carrier call to `user` (the dialled number), answered and ACKed.
fn call_to(h: &mut Harness, call_id: &str, user: &str) -> Peer {
    let mut caller = Peer::new("127.0.0.1:5070", call_id);
    let invite = caller
        .request("INVITE", Some(&offer(40000, 1, "sendrecv")))
        .replacen("sip:3125550100@", &format!("sip:{user}@"), 1);
    h.deliver(caller.addr, &invite);
    let ok = h.responses(call_id, 200, "INVITE")[0]
        .response()
        .expect("200")
        .clone();
    caller.learn(&ok);
    let ack = caller.request("ACK", None);
    h.deliver(caller.addr, &ack);
    caller
}

/// Whether the call `call_id` was told "we are unable to offer callbacks".
fn heard_unable(h: &Harness, call_id: &str) -> bool {
    h.plays(call_id)
        .iter()
        .any(|(_, names)| names.iter().any(|n| n == "unable"))
}

/// Applies `change` to the harness's organisation (checked like the API
/// does) and hands it to the controller now.
fn change_org(h: &mut Harness, change: impl FnOnce(&mut callbackd::config::Organisation)) {
    let mut org = h.settings.organisation();
    change(&mut org);
    let changed = h
        .settings
        .with_organisation(org)
        .expect("the changed organisation passes the rules");
    let now = h.now;
    h.ctl.apply_settings(now, &changed);
    h.settings = changed;
}

#[test]
fn queue_switches_and_new_queues_apply_to_the_next_call_without_a_restart() {
    let queues =
        "[[queues]]\nid = \"support\"\n[[queues]]\nid = \"sales\"\ndids = [\"8005550199\"]\n";
    let mut h = Harness::new(&driver::config(queues));
    call_to(&mut h, "before", "8005550199");
    h.advance(secs(1));
    assert!(
        !heard_unable(&h, "before"),
        "sales offers callbacks at start"
    );

    change_org(&mut h, |org| {
        org.queues[1].registration_enabled = false;
        // A queue added at run time, with its own DID, switched off too.
        let mut vip = org.queues[0].clone();
        vip.id = callbackd::callback::QueueId("vip".into());
        vip.dids = vec!["8005550177".into()];
        vip.registration_enabled = false;
        org.queues.push(vip);
    });
    call_to(&mut h, "to-sales", "8005550199");
    call_to(&mut h, "to-vip", "8005550177");
    call_to(&mut h, "to-support", "3125550100");
    h.advance(secs(1));
    assert!(heard_unable(&h, "to-sales"), "{:?}", h.plays("to-sales"));
    assert!(
        heard_unable(&h, "to-vip"),
        "the new queue's DID routes to it: {:?}",
        h.plays("to-vip")
    );
    assert!(
        !heard_unable(&h, "to-support"),
        "another queue is untouched: {:?}",
        h.plays("to-support")
    );

    // The organisation's switch off: every queue; back on: sales offers again.
    change_org(&mut h, |org| {
        org.org.registration_enabled = false;
        org.queues[1].registration_enabled = true;
    });
    call_to(&mut h, "org-off", "3125550100");
    h.advance(secs(1));
    assert!(heard_unable(&h, "org-off"));
    change_org(&mut h, |org| org.org.registration_enabled = true);
    call_to(&mut h, "sales-on", "8005550199");
    h.advance(secs(1));
    assert!(!heard_unable(&h, "sales-on"), "{:?}", h.plays("sales-on"));
}

#[test]
fn a_queues_launch_switch_holds_its_due_callbacks_until_switched_back_on() {
    let mut h = with_callback("");
    change_org(&mut h, |org| org.queues[0].launch_enabled = false);
    h.advance(secs(5));
    assert!(h.sent.is_empty(), "support's launching is off");
    h.advance(ms(100));
    change_org(&mut h, |org| org.queues[0].launch_enabled = true);
    let i = h.run_until_sent(secs(1), |s| {
        s.request().is_some_and(|r| r.method.as_str() == "INVITE")
    });
    assert_eq!(h.sent[i].at, ms(5_500), "the first poll after switching on");
}

#[test]
fn an_agent_replaced_at_run_time_takes_the_next_callback() {
    let mut h = with_callback("");
    change_org(&mut h, |org| {
        let mut bob = org.agents[0].clone();
        bob.id = callbackd::acd::agents::AgentId("bob".into());
        bob.uri = Some("sip:bob@127.0.0.1:5082".into());
        org.agents = vec![bob];
    });
    let i = h.run_until_sent(secs(2), |s| {
        s.request().is_some_and(|r| r.method.as_str() == "INVITE")
    });
    let invite = h.sent[i].request().expect("INVITE");
    assert!(
        invite.uri.to_string().contains("bob@127.0.0.1:5082"),
        "the agent added at run time is rung, not the deleted one: {}",
        invite.uri
    );
    let agents = h.ctl.agents(h.now);
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["bob"], "alice is gone");
}
