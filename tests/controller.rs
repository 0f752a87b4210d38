//! The call controller driven on a fake clock (see `controller/driver.rs`):
//! orchestration and timing asserted at exact instants, with no socket and
//! no sleep. Each test names the behaviour it pins down.

#[path = "controller/driver.rs"]
mod driver;

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
