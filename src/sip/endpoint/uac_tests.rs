//! Fake-clock tests of outbound calls (the UAC side of the endpoint), with
//! the driver of `endpoint_tests`: the endpoint places a call towards a fake
//! trunk at 127.0.0.1:5070, the test answers its requests the way a carrier
//! would, and every instant is `t0 + offset`.

use std::sync::{Arc, Mutex};

use super::*;
use crate::sip::uac::{Authenticator, InviteError, OutboundInvite, Party};

const TRUNK_PORT: u16 = 5070;
const OFFER_OUT: &[u8] =
    b"v=0\r\no=callbackd 5 5 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const ANSWER_IN: &[u8] = b"v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 41000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const CUSTOMER_CONTACT: &str = "<sip:customer@127.0.0.1:5080>";
/// As the far end sends them: the proxy nearest the callee first (§16.6).
const RECORD_ROUTE: &str = "<sip:10.0.0.9;lr>, <sip:127.0.0.1:5070;lr;ftag=x>";

fn trunk() -> Flow {
    udp_from(TRUNK_PORT)
}

fn outbound() -> OutboundInvite {
    OutboundInvite {
        request_uri: "sip:+15551234567@127.0.0.1:5070;user=phone".into(),
        from: Party {
            display: Some("Acme Care".into()),
            uri: "sip:+15550100@127.0.0.1".into(),
        },
        to: Party {
            display: None,
            uri: "sip:+15551234567@127.0.0.1:5070;user=phone".into(),
        },
        p_asserted_identity: Some("<sip:+15550100@127.0.0.1>".into()),
        next_hop: Destination::Udp(addr([127, 0, 0, 1], TRUNK_PORT)),
        stay_on_flow: false,
        sdp_offer: Bytes::from_static(OFFER_OUT),
        extra_headers: vec![("X-Callback-Id".into(), "cb-42".into())],
        credentials: None,
    }
}

impl Sim {
    /// Places `invite` at `t0 + at`; returns the call and what was sent.
    fn place(&mut self, at: Duration, invite: OutboundInvite) -> (CallKey, Vec<Out>) {
        let call = self
            .ep
            .invite(self.t0 + at, invite)
            .expect("a valid outbound INVITE");
        (call, self.drain(at))
    }

    fn hangup(&mut self, at: Duration, call: CallKey) -> Vec<Out> {
        self.ep.hangup(self.t0 + at, call).expect("live call");
        self.drain(at)
    }
}

/// The far end's response to one of our requests.
fn respond(
    req: &Request,
    status: u16,
    tag: Option<&str>,
    extra: &[(&str, &str)],
    sdp: Option<&[u8]>,
) -> Vec<u8> {
    let mut b = req.response(status, tag);
    for (name, value) in extra {
        b = b.header(name, value);
    }
    match sdp {
        Some(sdp) => b.finish(Some("application/sdp"), sdp),
        None => b.finish(None, b""),
    }
    .to_vec()
}

/// A 2xx as the callee sends it: To-tag, Contact, Record-Route, SDP.
fn ok_2xx(invite: &Request, tag: &str) -> Vec<u8> {
    respond(
        invite,
        200,
        Some(tag),
        &[
            ("Contact", CUSTOMER_CONTACT),
            ("Record-Route", RECORD_ROUTE),
        ],
        Some(ANSWER_IN),
    )
}

fn only(out: &[Out], method: Method) -> &Request {
    let found: Vec<&Out> = out.iter().filter(|o| o.method() == Some(&method)).collect();
    assert_eq!(found.len(), 1, "one {method} expected in {out:#?}");
    found[0].req()
}

fn methods(out: &[Out]) -> Vec<String> {
    out.iter()
        .map(|o| match &o.message {
            Message::Request(r) => r.method.to_string(),
            Message::Response(r) => r.status.to_string(),
        })
        .collect()
}

fn branch(req: &Request) -> &str {
    req.headers.top_via().branch.as_deref().expect("branch")
}

fn events_of(sim: &mut Sim) -> Vec<Event> {
    sim.take_events().into_iter().map(|(_, e)| e).collect()
}

/// The call placed, its INVITE answered 180 with a To-tag: (call, INVITE).
fn ringing(sim: &mut Sim, tag: &str) -> (CallKey, Request) {
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();
    let out = sim.deliver(
        ms(100),
        &respond(&invite, 180, Some(tag), &[], None),
        trunk(),
    );
    assert!(out.is_empty(), "{out:#?}");
    sim.take_events();
    (call, invite)
}

// ---------------------------------------------------------------------------
// INVITE, ACK, re-ACK

#[test]
fn invite_carries_caller_id_offer_and_100rel() {
    let mut sim = Sim::new();
    let (_, out) = sim.place(Duration::ZERO, outbound());
    assert_eq!(methods(&out), ["INVITE"]);
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], TRUNK_PORT))
    );
    let inv = out[0].req();
    let h = &inv.headers;
    assert_eq!(&*inv.uri, "sip:+15551234567@127.0.0.1:5070;user=phone");
    assert!(
        h.from
            .raw
            .starts_with("\"Acme Care\" <sip:+15550100@127.0.0.1>;tag=")
    );
    assert!(h.from.tag.is_some());
    assert_eq!(h.to.tag, None);
    assert_eq!(&*h.to.raw, "<sip:+15551234567@127.0.0.1:5070;user=phone>");
    assert_eq!(
        h.get(HeaderName::PAssertedIdentity),
        Some("<sip:+15550100@127.0.0.1>")
    );
    assert_eq!(h.other("X-Callback-Id"), Some("cb-42"));
    assert!(h.has_token(HeaderName::Supported, "100rel"));
    assert_eq!(
        h.get(HeaderName::Contact),
        Some("<sip:callbackd@127.0.0.1:5060>")
    );
    assert_eq!((h.cseq.seq, &h.cseq.method), (1, &Method::Invite));
    assert_eq!(h.max_forwards, Some(70));
    assert!(h.top_via().is_rfc3261_branch());
    assert_eq!(h.top_via().rport, Rport::Requested);
    assert!(h.content_type_is("application/sdp"));
    assert_eq!(&inv.body[..], OFFER_OUT);
    assert_eq!(sim.ep.stats().calls, 1);
    assert_eq!(sim.ep.stats().transactions, 1);
}

#[test]
fn answered_call_is_acked_through_the_route_set_and_every_200_is_acked_again() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();

    // 100 stops the retransmissions; 180 with a tag makes an early dialog.
    let out = sim.deliver(ms(50), &respond(&invite, 100, None, &[], None), trunk());
    assert!(out.is_empty());
    let out = sim.deliver(
        ms(80),
        &respond(&invite, 180, Some("cust"), &[], None),
        trunk(),
    );
    assert!(out.is_empty());
    let ev = events_of(&mut sim);
    assert!(
        matches!(
            ev.as_slice(),
            [
                Event::Progress {
                    status: 100,
                    sdp: None,
                    reliable: false,
                    ..
                },
                Event::Progress {
                    status: 180,
                    sdp: None,
                    reliable: false,
                    ..
                }
            ]
        ),
        "{ev:?}"
    );
    // No INVITE retransmission once a provisional came (Timer A stopped).
    assert!(sim.run_until(secs(2)).is_empty());

    let ok = ok_2xx(&invite, "cust");
    let out = sim.deliver(secs(3), &ok, trunk());
    assert_eq!(methods(&out), ["ACK"]);
    let ack = out[0].req();
    // §13.2.2.4: a new transaction (new branch), CSeq of the INVITE, to the
    // remote target (Contact) through the reversed Record-Route (§12.1.2).
    let expected = format!(
        "ACK sip:customer@127.0.0.1:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch={};rport\r\n\
Route: <sip:127.0.0.1:5070;lr;ftag=x>\r\n\
Route: <sip:10.0.0.9;lr>\r\n\
Max-Forwards: 70\r\n\
From: {}\r\n\
To: <sip:+15551234567@127.0.0.1:5070;user=phone>;tag=cust\r\n\
Call-ID: {}\r\n\
CSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n",
        branch(ack),
        invite.headers.from.raw,
        invite.headers.call_id,
    );
    assert_eq!(std::str::from_utf8(&out[0].data).expect("utf-8"), expected);
    assert_ne!(branch(ack), branch(&invite));
    // Loose routing: the first route is the next hop.
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], 5070))
    );
    let first_ack = out[0].data.clone();
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Answered { call: c, sdp }] if *c == call && &sdp[..] == ANSWER_IN),
        "{ev:?}"
    );

    // The 200 again (our ACK was lost): the same ACK, no second event.
    let out = sim.deliver(secs(4), &ok, trunk());
    assert_eq!(methods(&out), ["ACK"]);
    assert_eq!(out[0].data, first_ack);
    let out = sim.deliver(secs(6), &ok, trunk());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, first_ack);
    assert!(sim.take_events().is_empty());

    // Timer M (64·T1 after the first 2xx) ends the INVITE transaction.
    assert!(sim.run_until(secs(40)).is_empty());
    assert_eq!(
        sim.ep.stats(),
        Stats {
            calls: 1,
            transactions: 0,
            timers: 0
        }
    );

    // Our hangup: BYE in the dialog, same route set, CSeq above the INVITE's.
    let out = sim.hangup(secs(50), call);
    let bye = only(&out, Method::Bye);
    assert_eq!(&*bye.uri, "sip:customer@127.0.0.1:5080");
    assert_eq!(
        values(&bye.headers, HeaderName::Route),
        ["<sip:127.0.0.1:5070;lr;ftag=x>", "<sip:10.0.0.9;lr>"]
    );
    assert_eq!(bye.headers.to.tag.as_deref(), Some("cust"));
    assert_eq!(bye.headers.from.tag, invite.headers.from.tag);
    assert_eq!(bye.headers.cseq.seq, 2);
    let out = sim.deliver(secs(50) + ms(40), &reply(bye, 200), trunk());
    assert!(out.is_empty());
    let ev = events_of(&mut sim);
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Ended {
                reason: EndReason::LocalHangup,
                ..
            }]
        ),
        "{ev:?}"
    );
    // Leak check: nothing left once Timer K is over.
    sim.run_until(secs(60));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn unanswered_invite_is_retransmitted_and_fails_408_at_timer_b() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let first = out[0].data.clone();
    let out = sim.run_until(secs(40));
    // Timer A: T1, doubling without cap, until Timer B at 64·T1 = 32 s.
    assert_eq!(
        offsets(&out),
        [
            ms(500),
            ms(1500),
            ms(3500),
            ms(7500),
            ms(15_500),
            ms(31_500)
        ]
    );
    assert!(out.iter().all(|o| o.data == first));
    let ev = sim.take_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, T1 * 64);
    assert!(
        matches!(&ev[0].1, Event::Failed { call: c, status: 408, retry_after: None, received: false, .. } if *c == call),
        "{ev:?}"
    );
    assert_eq!(sim.ep.stats(), Stats::default());
    assert_eq!(
        sim.ep.hangup(sim.at(secs(41)), call),
        Err(CallError::NoSuchCall)
    );
}

#[test]
fn busy_is_acked_on_the_invite_branch_and_fails_with_retry_after() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();
    let busy = respond(
        &invite,
        486,
        Some("cust"),
        &[("Retry-After", "120 (on the phone);duration=3600")],
        None,
    );
    let out = sim.deliver(ms(200), &busy, trunk());
    assert_eq!(methods(&out), ["ACK"]);
    let ack = out[0].req();
    // §17.1.1.3: same branch, Request-URI, From, Call-ID, CSeq number;
    // To from the response.
    assert_eq!(branch(ack), branch(&invite));
    assert_eq!(ack.uri, invite.uri);
    assert_eq!(ack.headers.from.raw, invite.headers.from.raw);
    assert_eq!(ack.headers.to.tag.as_deref(), Some("cust"));
    assert_eq!(
        (ack.headers.cseq.seq, &ack.headers.cseq.method),
        (1, &Method::Ack)
    );
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], 5070))
    );
    let ev = events_of(&mut sim);
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Failed { call: c, status: 486, reason, retry_after: Some(r), received: true }]
                if *c == call && &**reason == "Busy Here" && *r == secs(120)
        ),
        "{ev:?}"
    );
    assert_eq!(sim.ep.stats().calls, 0);
    // A retransmitted 486 is ACKed again by the transaction, silently.
    let again = sim.deliver(secs(1), &busy, trunk());
    assert_eq!(methods(&again), ["ACK"]);
    assert_eq!(again[0].data, out[0].data);
    assert!(sim.take_events().is_empty());
    // Timer D (32 s) ends the transaction.
    sim.run_until(secs(40));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn transport_error_fails_the_invite_with_503() {
    let mut sim = Sim::new();
    let (call, _) = sim.place(Duration::ZERO, outbound());
    sim.ep.handle_transport_error(
        sim.at(ms(10)),
        &Destination::Udp(addr([127, 0, 0, 1], TRUNK_PORT)),
    );
    assert!(sim.drain(ms(10)).is_empty());
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Failed { call: c, status: 503, .. }] if *c == call),
        "{ev:?}"
    );
    assert_eq!(sim.ep.stats(), Stats::default());
}

/// A TCP connection that fails (refused, reset, a write that does not
/// go) fails the INVITE sent over TCP to that peer, whichever connection
/// the INVITE named: the engine reports the connection, the INVITE only
/// knew the address (RFC 3261 §17.1.4, §8.1.3.1). A failure towards
/// another address leaves it alone.
#[test]
fn a_failed_tcp_connection_fails_the_invite_to_that_peer_with_503() {
    let mut sim = Sim::new();
    let remote = addr([127, 0, 0, 1], TRUNK_PORT);
    let mut inv = outbound();
    inv.next_hop = Destination::Tcp { conn: None, remote };
    let (call, _) = sim.place(Duration::ZERO, inv);
    sim.ep.handle_transport_error(
        sim.at(ms(5)),
        &Destination::Tcp {
            conn: Some(9),
            remote: addr([127, 0, 0, 2], TRUNK_PORT),
        },
    );
    assert!(sim.drain(ms(5)).is_empty());
    assert!(events_of(&mut sim).is_empty(), "another peer's failure");
    sim.ep.handle_transport_error(
        sim.at(ms(10)),
        &Destination::Tcp {
            conn: Some(7),
            remote,
        },
    );
    assert!(sim.drain(ms(10)).is_empty());
    let ev = events_of(&mut sim);
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Failed { call: c, status: 503, received: false, .. }] if *c == call
        ),
        "{ev:?}"
    );
    assert_eq!(sim.ep.stats(), Stats::default());
}

/// An INVITE whose next hop is a host name goes out to be resolved; once
/// the engine reports the address (RFC 3263 §4.2), Timer A's
/// retransmissions go to that address, not to the name again (a lookup
/// per retransmission, perhaps a different address each time).
#[test]
fn an_invite_to_a_host_name_is_retransmitted_to_the_address_it_resolved_to() {
    let mut sim = Sim::new();
    let name = Destination::Resolve {
        host: "sbc.example.net".into(),
        port: Some(TRUNK_PORT),
        tcp: false,
    };
    let mut inv = outbound();
    inv.next_hop = name.clone();
    let (_, out) = sim.place(Duration::ZERO, inv);
    assert_eq!(methods(&out), ["INVITE"]);
    assert_eq!(out[0].destination, name);
    let resolved = addr([127, 0, 0, 1], TRUNK_PORT);
    sim.ep.handle_resolved(&name, resolved);
    // Another name's answer changes nothing.
    sim.ep.handle_resolved(
        &Destination::Resolve {
            host: "other.example.net".into(),
            port: Some(TRUNK_PORT),
            tcp: false,
        },
        addr([127, 0, 0, 2], TRUNK_PORT),
    );
    let out = sim.run_until(secs(4));
    assert_eq!(methods(&out), ["INVITE", "INVITE", "INVITE"]);
    assert!(
        out.iter()
            .all(|o| o.destination == Destination::Udp(resolved)),
        "{out:#?}"
    );
}

/// A BYE to a callee whose Contact names a host (no route set) is resolved
/// once: after the engine's answer, Timer E's retransmissions go to that
/// address, and so does the ACK re-sent for a repeated 200.
#[test]
fn a_bye_to_a_host_name_contact_is_resolved_once() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();
    let ok = respond(
        &invite,
        200,
        Some("cust"),
        &[("Contact", "<sip:customer@phone.example.net:5080>")],
        Some(ANSWER_IN),
    );
    let out = sim.deliver(ms(100), &ok, trunk());
    let name = Destination::Resolve {
        host: "phone.example.net".into(),
        port: Some(5080),
        tcp: false,
    };
    let resolved = addr([127, 0, 0, 1], 5080);
    assert_eq!(methods(&out), ["ACK"]);
    assert_eq!(out[0].destination, name);
    sim.ep.handle_resolved(&name, resolved);
    let out = sim.deliver(ms(600), &ok, trunk());
    assert_eq!(methods(&out), ["ACK"]);
    assert_eq!(out[0].destination, Destination::Udp(resolved));
    sim.take_events();

    let out = sim.hangup(secs(5), call);
    assert_eq!(methods(&out), ["BYE"]);
    assert_eq!(out[0].destination, name);
    sim.ep.handle_resolved(&name, resolved);
    let out = sim.run_until(secs(8));
    let byes: Vec<&Out> = out
        .iter()
        .filter(|o| o.method() == Some(&Method::Bye))
        .collect();
    assert_eq!(byes.len(), 2, "{out:#?}");
    assert!(
        byes.iter()
            .all(|o| o.destination == Destination::Udp(resolved)),
        "{out:#?}"
    );
}

#[test]
fn rejects_header_injection_and_bad_uris() {
    let mut sim = Sim::new();
    let mut inv = outbound();
    inv.extra_headers = vec![("X-A".into(), "1\r\nVia: evil".into())];
    assert_eq!(
        sim.ep.invite(sim.t0, inv).err(),
        Some(InviteError::BadHeader)
    );
    let mut inv = outbound();
    inv.extra_headers = vec![("X A".into(), "1".into())];
    assert_eq!(
        sim.ep.invite(sim.t0, inv).err(),
        Some(InviteError::BadHeader)
    );
    let mut inv = outbound();
    inv.request_uri = "tel:+15551234567".into();
    assert_eq!(
        sim.ep.invite(sim.t0, inv).err(),
        Some(InviteError::BadRequestUri)
    );
    let mut inv = outbound();
    inv.from.display = Some("A\r\nB".into());
    assert_eq!(
        sim.ep.invite(sim.t0, inv).err(),
        Some(InviteError::BadParty("From"))
    );
    let mut inv = outbound();
    inv.sdp_offer = Bytes::new();
    assert_eq!(sim.ep.invite(sim.t0, inv).err(), Some(InviteError::NoOffer));
    assert!(sim.ep.poll_transmit().is_none());
    assert_eq!(sim.ep.stats(), Stats::default());
}

// ---------------------------------------------------------------------------
// digest challenges

/// What the fake was asked: (challenge, uri, proxy).
type Asked = Arc<Mutex<Vec<(String, String, bool)>>>;

/// Answers challenges of realm "trunk" with a fixed header; records what it
/// was asked.
struct FakeAuth {
    seen: Asked,
}

impl Authenticator for FakeAuth {
    fn authorize(
        &mut self,
        challenge: &str,
        method: &Method,
        uri: &str,
        proxy: bool,
    ) -> Option<String> {
        assert!(
            matches!(method, Method::Invite | Method::Bye | Method::Update),
            "{method}"
        );
        self.seen
            .lock()
            .expect("not poisoned")
            .push((challenge.to_owned(), uri.to_owned(), proxy));
        challenge.contains("realm=\"trunk\"").then(|| {
            let response = if *method == Method::Bye { "b7e" } else { "f00" };
            format!(
                "Digest username=\"acme\", realm=\"trunk\", uri=\"{uri}\", response=\"{response}\""
            )
        })
    }
}

fn with_auth() -> (OutboundInvite, Asked) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut inv = outbound();
    inv.credentials = Some(Box::new(FakeAuth { seen: seen.clone() }));
    (inv, seen)
}

const CHALLENGE: &str = "Digest realm=\"trunk\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"";

#[test]
fn challenge_401_is_answered_with_a_new_invite_same_call_id_cseq_2() {
    let mut sim = Sim::new();
    let (inv, seen) = with_auth();
    let (call, out) = sim.place(Duration::ZERO, inv);
    let first = only(&out, Method::Invite).clone();
    let challenge = respond(
        &first,
        401,
        Some("proxy"),
        &[("WWW-Authenticate", CHALLENGE)],
        None,
    );
    let out = sim.deliver(ms(100), &challenge, trunk());
    // The 401 is ACKed (same branch) before the new INVITE goes out.
    assert_eq!(methods(&out), ["ACK", "INVITE"]);
    assert_eq!(branch(out[0].req()), branch(&first));
    let second = out[1].req().clone();
    let h = &second.headers;
    assert_eq!(h.call_id, first.headers.call_id);
    assert_eq!(h.from.raw, first.headers.from.raw);
    assert_eq!(h.to.tag, None);
    assert_eq!((h.cseq.seq, &h.cseq.method), (2, &Method::Invite));
    assert_ne!(branch(&second), branch(&first));
    assert_eq!(
        h.get(HeaderName::Authorization),
        Some(
            "Digest username=\"acme\", realm=\"trunk\", uri=\"sip:+15551234567@127.0.0.1:5070;user=phone\", response=\"f00\""
        )
    );
    assert_eq!(h.get(HeaderName::ProxyAuthorization), None);
    assert_eq!(&second.body[..], OFFER_OUT);
    assert_eq!(
        *seen.lock().expect("not poisoned"),
        [(
            CHALLENGE.to_owned(),
            "sip:+15551234567@127.0.0.1:5070;user=phone".to_owned(),
            false
        )]
    );
    assert!(
        sim.take_events().is_empty(),
        "a challenge answered is no failure"
    );

    let out = sim.deliver(ms(300), &ok_2xx(&second, "cust"), trunk());
    let ack = only(&out, Method::Ack);
    assert_eq!(ack.headers.cseq.seq, 2);
    // §13.2.2.4: the ACK carries the INVITE's credentials.
    assert_eq!(
        ack.headers.get(HeaderName::Authorization),
        h.get(HeaderName::Authorization)
    );
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Answered { call: c, .. }] if *c == call),
        "{ev:?}"
    );
}

#[test]
fn the_strongest_challenge_is_answered_first() {
    let mut sim = Sim::new();
    let (inv, seen) = with_auth();
    let (_call, out) = sim.place(Duration::ZERO, inv);
    let first = only(&out, Method::Invite).clone();
    let sha256 = "Digest realm=\"trunk\", nonce=\"def\", algorithm=SHA-256, qop=\"auth\"";
    // MD5 listed first, as servers do for old clients (RFC 8760 §2.4).
    let challenge = respond(
        &first,
        401,
        Some("proxy"),
        &[
            ("WWW-Authenticate", CHALLENGE),
            ("WWW-Authenticate", sha256),
        ],
        None,
    );
    let out = sim.deliver(ms(100), &challenge, trunk());
    assert_eq!(methods(&out), ["ACK", "INVITE"]);
    let asked = seen.lock().expect("not poisoned");
    assert_eq!(asked.len(), 1, "answered by the first one asked");
    assert_eq!(asked[0].0, sha256);
}

#[test]
fn a_challenge_to_our_bye_is_answered_once_with_credentials() {
    let mut sim = Sim::new();
    let (inv, seen) = with_auth();
    let (call, out) = sim.place(Duration::ZERO, inv);
    let invite = only(&out, Method::Invite).clone();
    let out = sim.deliver(ms(100), &ok_2xx(&invite, "cust"), trunk());
    // No challenge on the INVITE: no credentials on its ACK.
    assert_eq!(
        only(&out, Method::Ack)
            .headers
            .get(HeaderName::Authorization),
        None
    );
    sim.take_events();
    let out = sim.hangup(secs(5), call);
    let bye = only(&out, Method::Bye).clone();
    assert_eq!(
        bye.headers.get(HeaderName::Reason),
        Some("Q.850;cause=16;text=\"Normal call clearing\"")
    );
    let challenge =
        |req: &Request| respond(req, 407, None, &[("Proxy-Authenticate", CHALLENGE)], None);
    let out = sim.deliver(secs(5) + ms(50), &challenge(&bye), trunk());
    let again = only(&out, Method::Bye).clone();
    let h = &again.headers;
    assert_eq!(h.call_id, bye.headers.call_id);
    assert_eq!(h.cseq.seq, bye.headers.cseq.seq + 1);
    assert_ne!(branch(&again), branch(&bye));
    assert_eq!(
        h.get(HeaderName::Reason),
        bye.headers.get(HeaderName::Reason)
    );
    // The digest names the BYE's Request-URI: the callee's Contact.
    assert_eq!(
        h.get(HeaderName::ProxyAuthorization),
        Some(
            format!(
                "Digest username=\"acme\", realm=\"trunk\", uri=\"{}\", response=\"b7e\"",
                again.uri
            )
            .as_str()
        )
    );
    assert!(seen.lock().expect("not poisoned")[0].2, "proxy flag");
    assert!(sim.take_events().is_empty(), "the call is not over yet");
    // Wrong credentials: the same challenge again ends the call, no loop.
    let out = sim.deliver(secs(5) + ms(100), &challenge(&again), trunk());
    assert!(out.is_empty(), "{out:#?}");
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Ended { call: c, reason: EndReason::LocalHangup }] if *c == call),
        "{ev:?}"
    );
    assert_eq!(seen.lock().expect("not poisoned").len(), 1);
    sim.run_until(secs(100));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn second_407_for_the_same_credentials_fails_without_a_loop() {
    let mut sim = Sim::new();
    let (inv, seen) = with_auth();
    let (call, out) = sim.place(Duration::ZERO, inv);
    let first = only(&out, Method::Invite).clone();
    let challenge = |req: &Request| {
        respond(
            req,
            407,
            Some("p"),
            &[("Proxy-Authenticate", CHALLENGE)],
            None,
        )
    };
    let out = sim.deliver(ms(100), &challenge(&first), trunk());
    assert_eq!(methods(&out), ["ACK", "INVITE"]);
    let second = out[1].req().clone();
    assert!(second.headers.get(HeaderName::ProxyAuthorization).is_some());
    assert!(seen.lock().expect("not poisoned")[0].2, "proxy flag");
    // Wrong credentials: the same challenge again → no third INVITE.
    let out = sim.deliver(ms(200), &challenge(&second), trunk());
    assert_eq!(methods(&out), ["ACK"]);
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Failed { call: c, status: 407, .. }] if *c == call),
        "{ev:?}"
    );
    assert_eq!(seen.lock().expect("not poisoned").len(), 1);
    sim.run_until(secs(40));
    assert_eq!(sim.ep.stats(), Stats::default());
}

/// RFC 4028 §7.4: a 422 "Session Interval Too Small" is retried once with
/// its Min-SE as our Session-Expires and Min-SE (a new transaction of the
/// same call); a second 422 fails the call, as does one without Min-SE.
#[test]
fn a_422_is_retried_once_with_its_min_se() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let first = only(&out, Method::Invite).clone();
    let asked = first
        .headers
        .get(HeaderName::SessionExpires)
        .map(str::to_owned);
    let too_small = respond(&first, 422, Some("sbc"), &[("Min-SE", "3600;x=1")], None);
    let out = sim.deliver(ms(100), &too_small, trunk());
    assert_eq!(methods(&out), ["ACK", "INVITE"], "asked {asked:?}");
    assert_eq!(branch(out[0].req()), branch(&first));
    let second = out[1].req().clone();
    let h = &second.headers;
    assert_eq!(h.call_id, first.headers.call_id);
    assert_eq!(h.to.tag, None);
    assert_eq!((h.cseq.seq, &h.cseq.method), (2, &Method::Invite));
    assert_ne!(branch(&second), branch(&first));
    assert_eq!(h.get(HeaderName::SessionExpires), Some("3600"));
    assert_eq!(h.get(HeaderName::MinSe), Some("3600"));
    assert_eq!(&second.body[..], OFFER_OUT);
    assert!(sim.take_events().is_empty(), "a 422 retried is no failure");

    // The retry gets a 422 too: the call fails with it.
    let again = respond(&second, 422, Some("sbc"), &[("Min-SE", "7200")], None);
    let out = sim.deliver(ms(200), &again, trunk());
    assert_eq!(methods(&out), ["ACK"]);
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Failed { call: c, status: 422, .. }] if *c == call),
        "{ev:?}"
    );

    // A 422 that says no Min-SE cannot be answered.
    let (call, out) = sim.place(secs(1), outbound());
    let invite = only(&out, Method::Invite).clone();
    let out = sim.deliver(
        secs(1) + ms(100),
        &respond(&invite, 422, Some("s"), &[], None),
        trunk(),
    );
    assert_eq!(methods(&out), ["ACK"]);
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Failed { call: c, status: 422, .. }] if *c == call),
        "{ev:?}"
    );
}

#[test]
fn challenge_without_credentials_fails_the_call() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();
    let out = sim.deliver(
        ms(100),
        &respond(
            &invite,
            401,
            Some("p"),
            &[("WWW-Authenticate", CHALLENGE)],
            None,
        ),
        trunk(),
    );
    assert_eq!(methods(&out), ["ACK"]);
    let ev = events_of(&mut sim);
    assert!(matches!(ev.as_slice(), [Event::Failed { call: c, status: 401, .. }] if *c == call));
}

// ---------------------------------------------------------------------------
// CANCEL

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();
    // §9.1: no CANCEL before a provisional; the INVITE keeps being
    // retransmitted meanwhile.
    assert!(sim.hangup(ms(100), call).is_empty());
    assert_eq!(methods(&sim.run_until(ms(600))), ["INVITE"]);
    let out = sim.deliver(
        secs(1),
        &respond(&invite, 180, Some("cust"), &[], None),
        trunk(),
    );
    assert_eq!(methods(&out), ["CANCEL"]);
    let cancel = out[0].req();
    // Same Request-URI, Call-ID, From, To (no tag), CSeq number and branch.
    assert_eq!(cancel.uri, invite.uri);
    assert_eq!(branch(cancel), branch(&invite));
    assert_eq!(cancel.headers.call_id, invite.headers.call_id);
    assert_eq!(cancel.headers.from.raw, invite.headers.from.raw);
    assert_eq!(cancel.headers.to.raw, invite.headers.to.raw);
    assert_eq!(
        (cancel.headers.cseq.seq, &cancel.headers.cseq.method),
        (1, &Method::Cancel)
    );
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], 5070))
    );
    // The application hung up: no Progress for the 180.
    assert!(sim.take_events().is_empty());
    let out = sim.deliver(secs(1) + ms(20), &reply(cancel, 200), trunk());
    assert!(out.is_empty());
    let out = sim.deliver(
        secs(1) + ms(30),
        &respond(&invite, 487, Some("cust"), &[], None),
        trunk(),
    );
    assert_eq!(methods(&out), ["ACK"]);
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Ended { call: c, reason: EndReason::LocalCancel }] if *c == call),
        "{ev:?}"
    );
    sim.run_until(secs(60));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn cancel_after_ringing_gets_200_then_487_is_acked_and_the_call_ends() {
    let mut sim = Sim::new();
    let (call, invite) = ringing(&mut sim, "cust");
    let out = sim.hangup(secs(20), call);
    assert_eq!(methods(&out), ["CANCEL"]);
    let cancel = out[0].req().clone();
    assert_eq!(branch(&cancel), branch(&invite));
    assert_eq!(cancel.headers.to.tag, None, "§9.1: To as in the INVITE");
    // A second hangup sends nothing more.
    assert!(sim.hangup(secs(20) + ms(1), call).is_empty());
    assert!(
        sim.deliver(secs(20) + ms(10), &reply(&cancel, 200), trunk())
            .is_empty()
    );
    let out = sim.deliver(
        secs(20) + ms(20),
        &respond(&invite, 487, Some("cust"), &[], None),
        trunk(),
    );
    let ack = only(&out, Method::Ack);
    assert_eq!(branch(ack), branch(&invite));
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Ended { call: c, reason: EndReason::LocalCancel }] if *c == call),
        "{ev:?}"
    );
    sim.run_until(secs(80));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn answer_crossing_our_cancel_is_acked_then_byed() {
    let mut sim = Sim::new();
    let (call, invite) = ringing(&mut sim, "cust");
    let out = sim.hangup(secs(5), call);
    let cancel = only(&out, Method::Cancel).clone();
    // The 200 to the INVITE was already on its way.
    let out = sim.deliver(secs(5) + ms(10), &ok_2xx(&invite, "cust"), trunk());
    assert_eq!(methods(&out), ["ACK", "BYE"]);
    let bye = out[1].req().clone();
    assert_eq!(&*bye.uri, "sip:customer@127.0.0.1:5080");
    assert_eq!(bye.headers.to.tag.as_deref(), Some("cust"));
    // The CANCEL finds the INVITE answered: 200 all the same (§9.2).
    assert!(
        sim.deliver(secs(5) + ms(15), &reply(&cancel, 200), trunk())
            .is_empty()
    );
    assert!(
        sim.deliver(secs(5) + ms(30), &reply(&bye, 200), trunk())
            .is_empty()
    );
    let ev = events_of(&mut sim);
    // Never Answered: the application had given up.
    assert!(
        matches!(ev.as_slice(), [Event::Ended { call: c, reason: EndReason::LocalCancel }] if *c == call),
        "{ev:?}"
    );
    sim.run_until(secs(80));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn cancelled_invite_without_final_is_given_up_after_64_t1() {
    let mut sim = Sim::new();
    let (call, _) = ringing(&mut sim, "cust");
    let out = sim.hangup(secs(1), call);
    let cancel = only(&out, Method::Cancel).clone();
    assert!(
        sim.deliver(secs(1) + ms(10), &reply(&cancel, 200), trunk())
            .is_empty()
    );
    // No 487 ever comes.
    sim.run_until(secs(1) + T1 * 64 - ms(1));
    assert!(sim.take_events().is_empty());
    sim.run_until(secs(1) + T1 * 64);
    let ev = sim.take_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, secs(1) + T1 * 64);
    assert!(matches!(
        ev[0].1,
        Event::Ended {
            reason: EndReason::LocalCancel,
            ..
        }
    ));
    sim.run_until(secs(100));
    assert_eq!(sim.ep.stats(), Stats::default());
}

// ---------------------------------------------------------------------------
// 100rel / PRACK

fn reliable_183(invite: &Request, rseq: &str) -> Vec<u8> {
    respond(
        invite,
        183,
        Some("cust"),
        &[
            ("Contact", CUSTOMER_CONTACT),
            ("Record-Route", RECORD_ROUTE),
            ("Require", "100rel"),
            ("RSeq", rseq),
        ],
        Some(ANSWER_IN),
    )
}

#[test]
fn reliable_183_with_sdp_is_reported_once_and_pracked_in_the_early_dialog() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();
    let p183 = reliable_183(&invite, "7");
    let out = sim.deliver(ms(100), &p183, trunk());
    assert_eq!(methods(&out), ["PRACK"]);
    let prack = out[0].req().clone();
    let first_prack = out[0].data.clone();
    assert_eq!(&*prack.uri, "sip:customer@127.0.0.1:5080");
    assert_eq!(
        values(&prack.headers, HeaderName::Route),
        ["<sip:127.0.0.1:5070;lr;ftag=x>", "<sip:10.0.0.9;lr>"]
    );
    assert_eq!(prack.headers.get(HeaderName::RAck), Some("7 1 INVITE"));
    assert_eq!(prack.headers.to.tag.as_deref(), Some("cust"));
    assert_eq!(prack.headers.call_id, invite.headers.call_id);
    assert_eq!(
        (prack.headers.cseq.seq, &prack.headers.cseq.method),
        (2, &Method::Prack)
    );
    let ev = events_of(&mut sim);
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Progress { call: c, status: 183, sdp: Some(sdp), reliable: true }]
                if *c == call && &sdp[..] == ANSWER_IN
        ),
        "{ev:?}"
    );

    // The 183 again (our PRACK not yet through): the same PRACK, no event.
    let out = sim.deliver(ms(600), &p183, trunk());
    assert_eq!(methods(&out), ["PRACK"]);
    assert_eq!(
        out[0].data, first_prack,
        "a retransmission, not a new PRACK"
    );
    assert!(sim.take_events().is_empty());
    // Once the PRACK is answered, a late copy of the 183 gets nothing.
    let out = sim.deliver(ms(700), &reply(&prack, 200), trunk());
    assert!(out.is_empty());
    assert!(sim.deliver(ms(800), &p183, trunk()).is_empty());
    // Out of order (RSeq 9 after 7): neither PRACKed nor reported.
    assert!(
        sim.deliver(ms(900), &reliable_183(&invite, "9"), trunk())
            .is_empty()
    );
    assert!(sim.take_events().is_empty());
    // In order (8): PRACKed with its RAck, reported.
    let out = sim.deliver(secs(1), &reliable_183(&invite, "8"), trunk());
    let prack2 = only(&out, Method::Prack);
    assert_eq!(prack2.headers.get(HeaderName::RAck), Some("8 1 INVITE"));
    assert_eq!(prack2.headers.cseq.seq, 3);
    assert_eq!(events_of(&mut sim).len(), 1);

    // The 200 confirms the same dialog; its ACK carries the INVITE's CSeq.
    let out = sim.deliver(secs(2), &ok_2xx(&invite, "cust"), trunk());
    let ack = only(&out, Method::Ack);
    assert_eq!(ack.headers.cseq.seq, 1);
    let ev = events_of(&mut sim);
    assert!(matches!(ev.as_slice(), [Event::Answered { .. }]), "{ev:?}");
}

#[test]
fn unreliable_183_is_reported_with_its_sdp_and_not_pracked() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();
    let out = sim.deliver(
        ms(100),
        &respond(
            &invite,
            183,
            Some("cust"),
            &[("Contact", CUSTOMER_CONTACT)],
            Some(ANSWER_IN),
        ),
        trunk(),
    );
    assert!(out.is_empty());
    let ev = events_of(&mut sim);
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Progress { call: c, status: 183, sdp: Some(_), reliable: false }] if *c == call
        ),
        "{ev:?}"
    );
}

// ---------------------------------------------------------------------------
// the dialog afterwards

/// The call answered and ACKed; returns (call, INVITE).
fn answered(sim: &mut Sim) -> (CallKey, Request) {
    let (call, invite) = ringing(sim, "cust");
    let out = sim.deliver(secs(1), &ok_2xx(&invite, "cust"), trunk());
    assert_eq!(methods(&out), ["ACK"]);
    sim.take_events();
    (call, invite)
}

/// A request from the far end in the dialog of our `invite`: their tag in
/// From, ours in To.
fn from_callee(invite: &Request, method: &str, cseq: u32, body: Option<&[u8]>) -> Vec<u8> {
    from_callee_typed(invite, method, cseq, body.map(|b| ("application/sdp", b)))
}

/// A SIP-I carrier's body: the SDP beside an ISUP message (RFC 3204), as
/// `(Content-Type, body)`.
fn sip_i(sdp: &[u8]) -> (&'static str, Vec<u8>) {
    let mut body = b"--isup-1\r\nContent-Type: application/sdp\r\n\r\n".to_vec();
    body.extend_from_slice(sdp);
    body.extend_from_slice(
        b"\r\n--isup-1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n\
Content-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\x00\r\n--isup-1--\r\n",
    );
    ("multipart/mixed;boundary=isup-1", body)
}

/// [`from_callee`] with any body type.
fn from_callee_typed(
    invite: &Request,
    method: &str,
    cseq: u32,
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let h = &invite.headers;
    let mut s = format!(
        "{method} sip:callbackd@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-callee-{method}-{cseq}\r\n\
Max-Forwards: 70\r\n\
From: {};tag=cust\r\n\
To: {}\r\n\
Call-ID: {}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: {CUSTOMER_CONTACT}\r\n",
        h.to.raw, h.from.raw, h.call_id
    );
    match body {
        Some((content_type, b)) => {
            s.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                b.len()
            ));
            let mut v = s.into_bytes();
            v.extend_from_slice(b);
            v
        }
        None => {
            s.push_str("Content-Length: 0\r\n\r\n");
            s.into_bytes()
        }
    }
}

/// The call placed and answered by a 2xx with `Session-Expires: se`
/// (and `Allow` listing UPDATE); (call, INVITE, what the 2xx made us send).
fn answered_with_timer(sim: &mut Sim, se: &str) -> (CallKey, Request, Vec<Out>) {
    answered_with_timer_as(sim, outbound(), se, "INVITE, ACK, BYE, CANCEL, UPDATE")
}

/// [`answered_with_timer`] for `inv`, the 2xx saying `allow`.
fn answered_with_timer_as(
    sim: &mut Sim,
    inv: OutboundInvite,
    se: &str,
    allow: &str,
) -> (CallKey, Request, Vec<Out>) {
    let (call, out) = sim.place(Duration::ZERO, inv);
    let invite = only(&out, Method::Invite).clone();
    // RFC 4028 §7.1: the INVITE announces the extension and our interval.
    assert!(invite.headers.has_token(HeaderName::Supported, "timer"));
    assert!(invite.headers.get(HeaderName::SessionExpires).is_some());
    let ok = respond(
        &invite,
        200,
        Some("cust"),
        &[
            ("Contact", CUSTOMER_CONTACT),
            ("Require", "timer"),
            ("Session-Expires", se),
            ("Allow", allow),
        ],
        Some(ANSWER_IN),
    );
    let out = sim.deliver(secs(1), &ok, trunk());
    sim.take_events();
    (call, invite, out)
}

#[test]
fn an_outbound_leg_named_refresher_sends_update_at_half_the_interval() {
    let mut sim = Sim::new();
    let (_call, invite, out) = answered_with_timer(&mut sim, "120;refresher=uac");
    assert_eq!(methods(&out), ["ACK"]);
    assert!(sim.run_until(secs(61) - ms(1)).is_empty());
    let out = sim.run_until(secs(61));
    let update = only(&out, Method::Update);
    assert_eq!(update.headers.call_id, invite.headers.call_id);
    assert_eq!(
        update.headers.get(HeaderName::SessionExpires),
        Some("120;refresher=uac")
    );
}

/// RFC 3261 §22.2: a 401 to our UPDATE refresh is answered by the same
/// UPDATE with credentials (CSeq + 1); the same challenge to that one is
/// not answered again, and the call goes on (a refused refresh is no
/// reason to hang up).
#[test]
fn a_challenge_to_our_update_refresh_is_answered_once() {
    let mut sim = Sim::new();
    let (inv, seen) = with_auth();
    let allow = "INVITE, ACK, BYE, CANCEL, UPDATE";
    answered_with_timer_as(&mut sim, inv, "120;refresher=uac", allow);
    let out = sim.run_until(secs(61));
    let update = only(&out, Method::Update).clone();
    assert_eq!(update.headers.get(HeaderName::Authorization), None);
    let challenge = respond(&update, 401, None, &[("WWW-Authenticate", CHALLENGE)], None);
    let out = sim.deliver(secs(61) + ms(50), &challenge, trunk());
    let again = only(&out, Method::Update).clone();
    assert_eq!(again.headers.cseq.seq, update.headers.cseq.seq + 1);
    assert_ne!(branch(&again), branch(&update));
    assert!(
        again.headers.get(HeaderName::Authorization).is_some(),
        "{again:?}"
    );
    assert_eq!(
        again.headers.get(HeaderName::SessionExpires),
        Some("120;refresher=uac")
    );
    assert_eq!(seen.lock().expect("not poisoned").len(), 1);
    // Wrong credentials: the same challenge again is not answered.
    let challenge = respond(&again, 401, None, &[("WWW-Authenticate", CHALLENGE)], None);
    let out = sim.deliver(secs(61) + ms(100), &challenge, trunk());
    assert!(methods(&out).is_empty(), "{:?}", methods(&out));
    assert_eq!(seen.lock().expect("not poisoned").len(), 1);
    assert!(sim.take_events().is_empty(), "the call goes on");
}

/// The same for a re-INVITE refresh (the callee does not allow UPDATE): a
/// 407 is ACKed and the re-INVITE sent again with Proxy-Authorization.
#[test]
fn a_challenge_to_our_reinvite_refresh_is_answered() {
    let mut sim = Sim::new();
    let (inv, _seen) = with_auth();
    answered_with_timer_as(
        &mut sim,
        inv,
        "120;refresher=uac",
        "INVITE, ACK, BYE, CANCEL",
    );
    let out = sim.run_until(secs(61));
    let reinvite = only(&out, Method::Invite).clone();
    let challenge = respond(
        &reinvite,
        407,
        None,
        &[("Proxy-Authenticate", CHALLENGE)],
        None,
    );
    let out = sim.deliver(secs(61) + ms(50), &challenge, trunk());
    assert_eq!(methods(&out), ["ACK", "INVITE"]);
    let again = out[1].req();
    assert_eq!(again.headers.cseq.seq, reinvite.headers.cseq.seq + 1);
    assert!(
        again.headers.get(HeaderName::ProxyAuthorization).is_some(),
        "{again:?}"
    );
    assert_eq!(again.body, reinvite.body, "the same session offered again");
    assert!(sim.take_events().is_empty(), "the call goes on");
}

#[test]
fn an_outbound_leg_whose_callee_stops_refreshing_ends_with_bye() {
    let mut sim = Sim::new();
    let (_call, _invite, _) = answered_with_timer(&mut sim, "120;refresher=uas");
    // §10: the callee refreshes; without its refresh we give up at
    // interval − min(32, interval/3) = 88 s after the 2xx.
    assert!(sim.run_until(secs(89) - ms(1)).is_empty());
    let out = sim.run_until(secs(89));
    let bye = only(&out, Method::Bye);
    assert_eq!(
        bye.headers.get(HeaderName::Reason),
        Some("Q.850;cause=102;text=\"Recovery on timer expiry\"")
    );
}

#[test]
fn an_outbound_leg_without_session_expires_in_the_2xx_runs_no_timer() {
    let mut sim = Sim::new();
    let (_call, _invite) = answered(&mut sim);
    assert!(sim.run_until(secs(4000)).is_empty());
}

#[test]
fn far_end_bye_on_an_outbound_call_gets_200_and_ends_it() {
    let mut sim = Sim::new();
    let (call, invite) = answered(&mut sim);
    let out = sim.deliver(secs(10), &from_callee(&invite, "BYE", 1, None), trunk());
    assert_eq!(statuses(&out), [200]);
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call),
        "{ev:?}"
    );
    sim.run_until(secs(100));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn far_end_reinvite_on_an_outbound_call_is_a_reoffer() {
    let mut sim = Sim::new();
    let (call, invite) = answered(&mut sim);
    let out = sim.deliver(
        secs(10),
        &from_callee(&invite, "INVITE", 2, Some(ANSWER_IN)),
        trunk(),
    );
    assert_eq!(statuses(&out), [100]);
    let (c, method, sdp) = reoffer(&sim.take_events());
    assert_eq!((c, method, &sdp[..]), (call, Method::Invite, ANSWER_IN));
    sim.ep
        .answer_reoffer(sim.at(secs(10)), call, OFFER_OUT)
        .expect("pending reoffer");
    let out = sim.drain(secs(10));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(out[0].resp().headers.to.tag, invite.headers.from.tag);
}

#[test]
fn a_sip_i_2xx_and_reinvite_are_read_for_their_sdp_part() {
    let mut sim = Sim::new();
    let (call, out) = sim.place(Duration::ZERO, outbound());
    let invite = only(&out, Method::Invite).clone();
    // The carrier's 200 holds the ISUP ANM beside the SDP.
    let (content_type, body) = sip_i(ANSWER_IN);
    let mut ok = invite.response(200, Some("cust"));
    ok = ok.header("Contact", CUSTOMER_CONTACT);
    let ok = ok.finish(Some(content_type), &body).to_vec();
    let out = sim.deliver(secs(1), &ok, trunk());
    assert_eq!(methods(&out), ["ACK"]);
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Answered { call: c, sdp }] if *c == call && &sdp[..] == ANSWER_IN),
        "{ev:?}"
    );
    // So does its re-INVITE.
    let (content_type, body) = sip_i(ANSWER_IN);
    let out = sim.deliver(
        secs(10),
        &from_callee_typed(&invite, "INVITE", 2, Some((content_type, &body))),
        trunk(),
    );
    assert_eq!(statuses(&out), [100]);
    let (c, method, sdp) = reoffer(&sim.take_events());
    assert_eq!((c, method, &sdp[..]), (call, Method::Invite, ANSWER_IN));
}

#[test]
fn far_end_reinvite_in_the_early_dialog_gets_491_and_the_call_goes_on() {
    let mut sim = Sim::new();
    let (call, invite) = ringing(&mut sim, "cust");
    // RFC 3261 §14.2: our INVITE, with its offer, is still in progress.
    let out = sim.deliver(
        ms(500),
        &from_callee(&invite, "INVITE", 1, Some(ANSWER_IN)),
        trunk(),
    );
    assert_eq!(statuses(&out), [491]);
    assert!(sim.take_events().is_empty());
    let out = sim.deliver(secs(1), &ok_2xx(&invite, "cust"), trunk());
    assert_eq!(methods(&out), ["ACK"]);
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Answered { call: c, .. }] if *c == call),
        "{ev:?}"
    );
}

#[test]
fn far_end_update_in_the_early_dialog_is_a_reoffer_answerable_after_the_2xx() {
    let mut sim = Sim::new();
    let (call, invite) = ringing(&mut sim, "cust");
    let out = sim.deliver(
        ms(500),
        &from_callee(&invite, "UPDATE", 1, Some(ANSWER_IN)),
        trunk(),
    );
    assert!(out.is_empty(), "{out:#?}");
    let (c, method, _) = reoffer(&sim.take_events());
    assert_eq!((c, method), (call, Method::Update));
    // A second offer while the first is owed its answer: 491.
    let out = sim.deliver(
        ms(600),
        &from_callee(&invite, "UPDATE", 2, Some(ANSWER_IN)),
        trunk(),
    );
    assert_eq!(statuses(&out), [491]);
    // The 2xx confirms the dialog; the UPDATE still waits for its answer.
    let out = sim.deliver(secs(1), &ok_2xx(&invite, "cust"), trunk());
    assert_eq!(methods(&out), ["ACK"]);
    sim.take_events();
    sim.ep
        .answer_reoffer(sim.at(secs(1)), call, OFFER_OUT)
        .expect("pending UPDATE");
    let out = sim.drain(secs(1));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(out[0].resp().headers.cseq.method, Method::Update);
}

#[test]
fn second_fork_answering_is_acked_and_byed_and_the_first_dialog_kept() {
    let mut sim = Sim::new();
    let (call, invite) = answered(&mut sim);
    let out = sim.deliver(secs(2), &ok_2xx(&invite, "fork2"), trunk());
    assert_eq!(methods(&out), ["ACK", "BYE"]);
    assert_eq!(out[0].req().headers.to.tag.as_deref(), Some("fork2"));
    let bye = out[1].req().clone();
    assert_eq!(bye.headers.to.tag.as_deref(), Some("fork2"));
    // Its 2xx again: the same ACK, no second BYE.
    let again = sim.deliver(secs(2) + ms(500), &ok_2xx(&invite, "fork2"), trunk());
    assert_eq!(methods(&again), ["ACK"]);
    assert_eq!(again[0].data, out[0].data);
    assert!(sim.deliver(secs(3), &reply(&bye, 200), trunk()).is_empty());
    assert!(sim.take_events().is_empty(), "the call is not touched");
    // The call lives on in the first dialog.
    let out = sim.hangup(secs(4), call);
    assert_eq!(
        only(&out, Method::Bye).headers.to.tag.as_deref(),
        Some("cust")
    );
}

#[test]
fn first_2xx_wins_over_an_early_dialog_of_another_fork() {
    let mut sim = Sim::new();
    let (call, invite) = ringing(&mut sim, "fork1");
    let out = sim.deliver(secs(1), &ok_2xx(&invite, "fork2"), trunk());
    // Only an ACK: the answering fork's dialog becomes the call.
    assert_eq!(methods(&out), ["ACK"]);
    assert_eq!(out[0].req().headers.to.tag.as_deref(), Some("fork2"));
    let ev = events_of(&mut sim);
    assert!(
        matches!(ev.as_slice(), [Event::Answered { call: c, .. }] if *c == call),
        "{ev:?}"
    );
    // The far end of fork2 reaches the call; fork1's early dialog is gone.
    let bye1 = from_callee(&invite, "BYE", 1, None);
    let bye1 = String::from_utf8(bye1)
        .expect("utf-8")
        .replace("tag=cust", "tag=fork1");
    assert_eq!(
        statuses(&sim.deliver(secs(2), bye1.as_bytes(), trunk())),
        [481]
    );
    assert!(sim.take_events().is_empty());
    let bye2 = String::from_utf8(from_callee(&invite, "BYE", 2, None))
        .expect("utf-8")
        .replace("tag=cust", "tag=fork2");
    assert_eq!(
        statuses(&sim.deliver(secs(3), bye2.as_bytes(), trunk())),
        [200]
    );
    let ev = events_of(&mut sim);
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Ended {
                reason: EndReason::RemoteBye,
                ..
            }]
        ),
        "{ev:?}"
    );
}
