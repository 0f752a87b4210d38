//! Fake-clock tests of the endpoint (see the module doc of `endpoint`).
//!
//! A small fake UAC ([`Uac`]) writes the requests a carrier would send, a
//! [`Sim`] delivers them at exact offsets from one captured `t0`, and
//! [`Sim::run_until`] jumps the clock from one `poll_timeout()` to the next
//! (str0m/quinn style), recording every transmit and event with the instant
//! it appeared. Assertions are on exact instants (`t0 + Duration`).

use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::{Headers, Message, Response, Rport, Transport, parse};

// ---------------------------------------------------------------------------
// driver

const OFFER: &str = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const ANSWER: &[u8] = b"v=0\r\no=callbackd 9 9 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

/// T1 = 500 ms, T2 = 4 s, T4 = 5 s (RFC 3261 defaults).
const T1: Duration = Duration::from_millis(500);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn config() -> EndpointConfig {
    EndpointConfig {
        timers: TimerConfig::default(),
        session: SessionTimerConfig {
            session_expires: 1800,
            min_se: 90,
        },
        advertised_host: "127.0.0.1".into(),
        advertised_port: 5060,
        user_agent: "callbackd-test".into(),
        acl: Acl::parse(&["127.0.0.1/32"]).expect("valid CIDR"),
        acl_action: AclAction::Reject,
        seed: 7,
        registrar: false,
        max_forwards: 70,
    }
}

fn udp_from(port: u16) -> Flow {
    Flow {
        remote: SocketAddr::from(([127, 0, 0, 1], port)),
        transport: FlowTransport::Udp,
    }
}

fn tcp_from(port: u16, conn: u64) -> Flow {
    Flow {
        remote: SocketAddr::from(([127, 0, 0, 1], port)),
        transport: FlowTransport::Tcp(conn),
    }
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// One message the endpoint sent, with when and where.
#[derive(Debug)]
struct Out {
    /// Offset from `t0`.
    at: Duration,
    destination: Destination,
    data: Bytes,
    message: Message,
}

impl Out {
    fn resp(&self) -> &Response {
        match &self.message {
            Message::Response(r) => r,
            Message::Request(r) => panic!("expected a response, got {} request", r.method),
        }
    }

    fn req(&self) -> &Request {
        match &self.message {
            Message::Request(r) => r,
            Message::Response(r) => panic!("expected a request, got {} response", r.status),
        }
    }

    fn status(&self) -> Option<u16> {
        match &self.message {
            Message::Response(r) => Some(r.status),
            Message::Request(_) => None,
        }
    }

    fn method(&self) -> Option<&Method> {
        match &self.message {
            Message::Request(r) => Some(&r.method),
            Message::Response(_) => None,
        }
    }
}

/// The endpoint on a fake clock.
struct Sim {
    ep: Endpoint,
    t0: Instant,
    events: Vec<(Duration, Event)>,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(config())
    }

    fn with(cfg: EndpointConfig) -> Sim {
        Sim {
            ep: Endpoint::new(cfg),
            // The one clock reading of a test; everything else is t0 + offset.
            t0: Instant::now(),
            events: Vec::new(),
        }
    }

    fn at(&self, offset: Duration) -> Instant {
        self.t0 + offset
    }

    /// Delivers `msg` at `t0 + at` and returns what the endpoint sent.
    fn deliver(&mut self, at: Duration, msg: &[u8], flow: Flow) -> Vec<Out> {
        self.ep.handle_message(self.t0 + at, msg, flow);
        self.drain(at)
    }

    fn drain(&mut self, at: Duration) -> Vec<Out> {
        while let Some(ev) = self.ep.poll_event() {
            self.events.push((at, ev));
        }
        std::iter::from_fn(|| self.ep.poll_transmit())
            .map(|t| Out {
                at,
                message: parse(&t.data)
                    .unwrap_or_else(|e| panic!("endpoint sent unparsable bytes: {e:?}")),
                destination: t.destination,
                data: t.data,
            })
            .collect()
    }

    /// Jumps the clock to each `poll_timeout()` up to `t0 + until` and runs
    /// the timers there.
    fn run_until(&mut self, until: Duration) -> Vec<Out> {
        let mut out = Vec::new();
        let limit = self.t0 + until;
        let mut last = None;
        while let Some(deadline) = self.ep.poll_timeout() {
            if deadline > limit {
                break;
            }
            assert!(
                last.is_none_or(|l| deadline >= l),
                "timers went back in time"
            );
            last = Some(deadline);
            self.ep.handle_timeout(deadline);
            let at = deadline - self.t0;
            out.extend(self.drain(at));
            assert!(out.len() < 10_000, "runaway timer loop");
        }
        out
    }

    fn take_events(&mut self) -> Vec<(Duration, Event)> {
        std::mem::take(&mut self.events)
    }

    fn answer(&mut self, at: Duration, call: CallKey) -> Vec<Out> {
        self.ep
            .answer(self.t0 + at, call, ANSWER)
            .expect("the call is offered");
        self.drain(at)
    }
}

/// Takes the one IncomingCall among `events`.
fn incoming(events: &[(Duration, Event)]) -> CallKey {
    let calls: Vec<CallKey> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "events: {events:?}");
    calls[0]
}

fn statuses(out: &[Out]) -> Vec<u16> {
    out.iter().filter_map(Out::status).collect()
}

fn offsets(out: &[Out]) -> Vec<Duration> {
    out.iter().map(|o| o.at).collect()
}

fn values(h: &Headers, name: HeaderName) -> Vec<&str> {
    h.get_all(name).collect()
}

fn tag_of(resp: &Response) -> String {
    resp.headers
        .to
        .tag
        .as_deref()
        .expect("response has a To-tag")
        .to_owned()
}

/// A fake caller: writes the requests of one call with their Via branch,
/// CSeq and tags right, so tests can also resend the exact same bytes.
struct Uac {
    flow: Flow,
    call_id: String,
    from_tag: String,
    /// Our tag as learnt from the endpoint's response.
    to_tag: Option<String>,
    cseq: u32,
    invite_cseq: u32,
    invite_branch: String,
    branches: u32,
    /// Extra Via parameters (e.g. `;rport`).
    via_params: String,
    /// Via sent-by; defaults to the flow's address.
    sent_by: String,
}

impl Uac {
    fn new(call_id: &str, flow: Flow) -> Uac {
        Uac {
            flow,
            call_id: call_id.into(),
            from_tag: format!("{call_id}-ft"),
            to_tag: None,
            cseq: 100,
            invite_cseq: 0,
            invite_branch: String::new(),
            branches: 0,
            via_params: String::new(),
            sent_by: flow.remote.to_string(),
        }
    }

    fn transport(&self) -> &'static str {
        match self.flow.transport {
            FlowTransport::Udp => "UDP",
            FlowTransport::Tcp(_) => "TCP",
        }
    }

    fn new_branch(&mut self) -> String {
        self.branches += 1;
        format!("z9hG4bK-{}-{}", self.call_id, self.branches)
    }

    fn write(
        &self,
        method: &str,
        branch: &str,
        cseq: u32,
        with_to_tag: bool,
        extra: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut s = String::new();
        let port = self.flow.remote.port();
        let tr = self.transport();
        let contact_params = if tr == "TCP" { ";transport=tcp" } else { "" };
        write!(s, "{method} sip:callbackd@127.0.0.1:5060 SIP/2.0\r\n").ok();
        write!(
            s,
            "Via: SIP/2.0/{tr} {};branch={branch}{}\r\n",
            self.sent_by, self.via_params
        )
        .ok();
        if !extra
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("Max-Forwards"))
        {
            s.push_str("Max-Forwards: 70\r\n");
        }
        write!(
            s,
            "From: \"Caller\" <sip:+15550100@127.0.0.1:{port}>;tag={}\r\n",
            self.from_tag
        )
        .ok();
        match (&self.to_tag, with_to_tag) {
            (Some(tag), true) => write!(s, "To: <sip:callbackd@127.0.0.1:5060>;tag={tag}\r\n"),
            _ => write!(s, "To: <sip:callbackd@127.0.0.1:5060>\r\n"),
        }
        .ok();
        write!(s, "Call-ID: {}\r\nCSeq: {cseq} {method}\r\n", self.call_id).ok();
        if !matches!(method, "ACK" | "CANCEL" | "BYE") {
            write!(
                s,
                "Contact: <sip:+15550100@127.0.0.1:{port}{contact_params}>\r\n"
            )
            .ok();
        }
        for (name, value) in extra {
            write!(s, "{name}: {value}\r\n").ok();
        }
        match body {
            Some((ct, b)) => write!(
                s,
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
            .ok(),
            None => write!(s, "Content-Length: 0\r\n\r\n").ok(),
        };
        s.into_bytes()
    }

    /// A dialog-creating INVITE with an SDP offer (new branch, next CSeq).
    fn invite(&mut self, extra: &[(&str, &str)]) -> Vec<u8> {
        self.cseq += 1;
        self.invite_cseq = self.cseq;
        self.invite_branch = self.new_branch();
        self.write(
            "INVITE",
            &self.invite_branch,
            self.cseq,
            false,
            extra,
            Some(("application/sdp", OFFER)),
        )
    }

    /// A re-INVITE in the dialog, with or without an offer.
    fn reinvite(&mut self, extra: &[(&str, &str)], sdp: bool) -> Vec<u8> {
        self.cseq += 1;
        self.invite_cseq = self.cseq;
        self.invite_branch = self.new_branch();
        let body = sdp.then_some(("application/sdp", OFFER));
        self.write("INVITE", &self.invite_branch, self.cseq, true, extra, body)
    }

    /// The ACK for a 2xx: its own transaction (new branch), the INVITE's
    /// CSeq number, our To-tag.
    fn ack_2xx(&mut self) -> Vec<u8> {
        let branch = self.new_branch();
        self.write("ACK", &branch, self.invite_cseq, true, &[], None)
    }

    /// The ACK for a non-2xx final: part of the INVITE transaction (same
    /// branch), To-tag of that response.
    fn ack_non_2xx(&self, resp: &Response) -> Vec<u8> {
        let with_tag = Uac {
            to_tag: Some(tag_of(resp)),
            call_id: self.call_id.clone(),
            from_tag: self.from_tag.clone(),
            invite_branch: self.invite_branch.clone(),
            via_params: self.via_params.clone(),
            sent_by: self.sent_by.clone(),
            ..*self
        };
        with_tag.write(
            "ACK",
            &self.invite_branch,
            self.invite_cseq,
            true,
            &[],
            None,
        )
    }

    /// CANCEL for the last INVITE: same branch and CSeq number, no To-tag.
    fn cancel(&self) -> Vec<u8> {
        self.write(
            "CANCEL",
            &self.invite_branch,
            self.invite_cseq,
            false,
            &[],
            None,
        )
    }

    /// A request inside the dialog (new branch, next CSeq, To-tag).
    fn in_dialog(
        &mut self,
        method: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> Vec<u8> {
        self.cseq += 1;
        let branch = self.new_branch();
        self.write(method, &branch, self.cseq, true, extra, body)
    }

    /// A request outside any dialog (new branch, next CSeq, no To-tag).
    fn out_of_dialog(&mut self, method: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        self.cseq += 1;
        let branch = self.new_branch();
        self.write(method, &branch, self.cseq, false, extra, None)
    }

    /// Learns our To-tag from a response.
    fn learn(&mut self, resp: &Response) {
        self.to_tag = Some(tag_of(resp));
    }
}

/// Answers one of the endpoint's requests the way the peer would.
fn reply(req: &Request, status: u16) -> Vec<u8> {
    req.response(status, None).finish(None, b"").to_vec()
}

/// INVITE at `at`, answered at once, ACKed 100 ms later; returns the call.
fn establish(sim: &mut Sim, uac: &mut Uac, at: Duration, extra: &[(&str, &str)]) -> CallKey {
    let invite = uac.invite(extra);
    let out = sim.deliver(at, &invite, uac.flow);
    assert_eq!(statuses(&out), [100]);
    let call = incoming(&sim.take_events());
    let out = sim.answer(at, call);
    assert_eq!(statuses(&out), [200]);
    uac.learn(out[0].resp());
    let ack = uac.ack_2xx();
    assert!(sim.deliver(at + ms(100), &ack, uac.flow).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(events[..], [(_, Event::Confirmed { call: c, .. })] if c == call),
        "{events:?}"
    );
    call
}

// ---------------------------------------------------------------------------
// 1. the basic call

#[test]
fn invite_gets_trying_then_answer_carries_dialog_headers_and_ack_confirms() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("basic", udp_from(5061));
    let invite = uac.invite(&[
        (
            "Record-Route",
            "<sip:127.0.0.1:5070;lr>, <sip:edge.example.net;lr>",
        ),
        ("Record-Route", "<sip:10.0.0.3;lr;ftag=x>"),
    ]);
    let out = sim.deliver(Duration::ZERO, &invite, uac.flow);
    assert_eq!(statuses(&out), [100]);
    let trying = out[0].resp();
    assert_eq!(trying.headers.to.tag, None, "100 Trying carries no To-tag");
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], 5061))
    );
    let events = sim.take_events();
    let call = incoming(&events);
    match &events[0].1 {
        Event::IncomingCall {
            request, source, ..
        } => {
            assert_eq!(request.method, Method::Invite);
            assert_eq!(request.body, OFFER.as_bytes());
            assert_eq!(*source, uac.flow);
        }
        other => panic!("{other:?}"),
    }

    let out = sim.answer(ms(300), call);
    assert_eq!(statuses(&out), [200]);
    let ok = out[0].resp();
    assert_eq!(out[0].at, ms(300));
    assert!(ok.headers.to.tag.as_deref().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        ok.headers.get(HeaderName::Contact),
        Some("<sip:callbackd@127.0.0.1:5060>")
    );
    assert_eq!(
        values(&ok.headers, HeaderName::RecordRoute),
        [
            "<sip:127.0.0.1:5070;lr>",
            "<sip:edge.example.net;lr>",
            "<sip:10.0.0.3;lr;ftag=x>"
        ]
    );
    for method in [
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE",
    ] {
        assert!(ok.headers.has_token(HeaderName::Allow, method), "{method}");
    }
    assert!(ok.headers.has_token(HeaderName::Supported, "timer"));
    assert!(ok.headers.content_type_is("application/sdp"));
    assert_eq!(ok.body, ANSWER);
    assert_eq!(ok.headers.get(HeaderName::SessionExpires), None);
    assert_eq!(ok.headers.cseq.method, Method::Invite);
    assert_eq!(ok.headers.call_id.as_str(), "basic");
    uac.learn(ok);

    let ack = uac.ack_2xx();
    assert!(sim.deliver(ms(400), &ack, uac.flow).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(at, Event::Confirmed { call: c, body })]
            if *c == call && body.is_empty() && *at == ms(400)),
        "{events:?}"
    );
    // No retransmission of the 2xx after the ACK, ever.
    assert!(sim.run_until(secs(120)).is_empty());
    assert!(sim.take_events().is_empty());
    assert_eq!(
        sim.ep.stats(),
        Stats {
            calls: 1,
            transactions: 0,
            timers: 0
        }
    );
}

// ---------------------------------------------------------------------------
// 2. INVITE retransmissions

#[test]
fn retransmitted_invite_gets_the_last_provisional_then_the_2xx_and_no_second_call() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("retrans", udp_from(5061));
    let invite = uac.invite(&[]);
    let first = sim.deliver(Duration::ZERO, &invite, uac.flow);
    assert_eq!(statuses(&first), [100]);
    let call = incoming(&sim.take_events());

    // Before the answer: the 100 again (§17.2.1), same bytes, no new call.
    let again = sim.deliver(ms(500), &invite, uac.flow);
    assert_eq!(statuses(&again), [100]);
    assert_eq!(again[0].data, first[0].data);
    assert!(sim.take_events().is_empty());

    let ok = sim.answer(secs(1), call);
    assert_eq!(statuses(&ok), [200]);

    // After the 2xx: the IST (Accepted, RFC 6026) absorbs the INVITE and the
    // UAS core sends its 2xx once more; still no second call.
    let again = sim.deliver(ms(1200), &invite, uac.flow);
    assert_eq!(statuses(&again), [200]);
    assert_eq!(again[0].data, ok[0].data);
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats().calls, 1);

    // The 2xx retransmission schedule was not disturbed: next at 1 s + T1.
    let out = sim.run_until(ms(1500));
    assert_eq!(offsets(&out), [ms(1500)]);
    assert_eq!(out[0].data, ok[0].data);

    uac.learn(ok[0].resp());
    let ack = uac.ack_2xx();
    assert!(sim.deliver(ms(1600), &ack, uac.flow).is_empty());
    assert_eq!(sim.take_events().len(), 1);
    // After the ACK a late INVITE copy gets nothing.
    assert!(sim.deliver(secs(2), &invite, uac.flow).is_empty());
    assert!(sim.take_events().is_empty());
}

/// Metrics: responses by code and CSeq method both ways, and every
/// message sent or received again.
#[test]
fn totals_count_responses_by_code_and_method_and_every_retransmission() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("totals", udp_from(5061));
    let invite = uac.invite(&[]);
    sim.deliver(Duration::ZERO, &invite, uac.flow);
    let call = incoming(&sim.take_events());
    // The INVITE again: absorbed (received 1), the 100 resent (sent 1).
    sim.deliver(ms(500), &invite, uac.flow);
    let ok = sim.answer(secs(1), call);
    // The 2xx once more at 1 s + T1 (sent 2).
    assert_eq!(offsets(&sim.run_until(ms(1500))), [ms(1500)]);
    uac.learn(ok[0].resp());
    let ack = uac.ack_2xx();
    sim.deliver(ms(1600), &ack, uac.flow);
    sim.ep
        .hangup(sim.at(secs(2)), call)
        .expect("confirmed call");
    let out = sim.drain(secs(2));
    let bye = out[0].req().clone();
    sim.deliver(secs(2) + ms(100), &reply(&bye, 200), uac.flow);

    let totals = sim.ep.totals();
    assert_eq!(
        totals.responses_sent,
        BTreeMap::from([((100, "INVITE"), 2), ((200, "INVITE"), 2)])
    );
    assert_eq!(
        totals.responses_received,
        BTreeMap::from([((200, "BYE"), 1)])
    );
    assert_eq!(totals.retransmissions_sent, 2);
    assert_eq!(totals.retransmissions_received, 1);
}

// ---------------------------------------------------------------------------
// 3. 2xx until ACK

#[test]
fn unacked_2xx_is_retransmitted_at_t1_doubling_to_t2_then_bye_at_64_t1() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("noack", udp_from(5061));
    let invite = uac.invite(&[(
        "Record-Route",
        "<sip:127.0.0.1:5070;lr>, <sip:edge.example.net;lr>",
    )]);
    sim.deliver(Duration::ZERO, &invite, uac.flow);
    let call = incoming(&sim.take_events());
    let ok = sim.answer(Duration::ZERO, call);
    let our_tag = tag_of(ok[0].resp());

    let out = sim.run_until(secs(32) - ms(1));
    // §13.3.1.4: T1, 2T1, 4T1, 8T1 after each other, then every T2.
    let expected: Vec<Duration> = [
        500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(offsets(&out), expected);
    assert!(out.iter().all(|o| o.data == ok[0].data));
    assert!(sim.take_events().is_empty());

    // 64·T1 without ACK: BYE through the route set.
    let out = sim.run_until(secs(32));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].at, 64 * T1);
    let bye = out[0].req();
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(&*bye.uri, "sip:+15550100@127.0.0.1:5061");
    assert_eq!(
        values(&bye.headers, HeaderName::Route),
        ["<sip:127.0.0.1:5070;lr>", "<sip:edge.example.net;lr>"]
    );
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], 5070))
    );
    assert_eq!(bye.headers.from.tag.as_deref(), Some(our_tag.as_str()));
    assert!(bye.headers.from.uri.contains("callbackd@127.0.0.1"));
    assert_eq!(bye.headers.to.tag.as_deref(), Some("noack-ft"));
    assert!(bye.headers.to.uri.contains("+15550100"));
    assert_eq!(bye.headers.call_id.as_str(), "noack");
    assert_eq!(bye.headers.cseq.method, Method::Bye);
    assert!(bye.headers.top_via().is_rfc3261_branch());
    assert!(
        sim.take_events().is_empty(),
        "ended only when the BYE completes"
    );

    // The BYE's 200 (via the proxy) ends the call.
    let proxy = udp_from(5070);
    assert!(sim.deliver(ms(32_100), &reply(bye, 200), proxy).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(at, Event::Ended { call: c, reason: EndReason::NoAck })]
            if *c == call && *at == ms(32_100)),
        "{events:?}"
    );
    assert!(sim.run_until(secs(100)).is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

/// RFC 3261 §13.3.1.4: the 2xx is retransmitted until the ACK whatever
/// the transport (end to end: a proxy on the way may use UDP), on the
/// INVITE's connection; without an ACK the BYE goes at 64·T1.
#[test]
fn unacked_2xx_over_tcp_is_retransmitted_then_bye_at_64_t1() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("noack-tcp", tcp_from(40001, 9));
    let invite = uac.invite(&[]);
    let out = sim.deliver(Duration::ZERO, &invite, uac.flow);
    assert_eq!(statuses(&out), [100]);
    let call = incoming(&sim.take_events());
    let ok = sim.answer(ms(10), call);
    assert_eq!(statuses(&ok), [200]);
    assert_eq!(
        ok[0].resp().headers.get(HeaderName::Contact),
        Some("<sip:callbackd@127.0.0.1:5060;transport=tcp>")
    );

    let again = sim.run_until(ms(10) + 64 * T1 - ms(1));
    // T1, 3·T1, 7·T1, then every T2 (8·T1) until 64·T1.
    let expected: Vec<Duration> = [1, 3, 7, 15, 23, 31, 39, 47, 55, 63]
        .into_iter()
        .map(|n| ms(10) + n * T1)
        .collect();
    assert_eq!(offsets(&again), expected);
    assert!(again.iter().all(|o| o.status() == Some(200)
        && o.data == ok[0].data
        && o.destination == ok[0].destination));
    let out = sim.run_until(ms(10) + 64 * T1);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].at, ms(10) + 64 * T1);
    let bye = out[0].req();
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.headers.top_via().transport, Transport::Tcp);
    assert_eq!(
        out[0].destination,
        Destination::Tcp {
            conn: Some(9),
            remote: addr([127, 0, 0, 1], 40001)
        }
    );
    // No BYE retransmissions over TCP either.
    assert!(sim.run_until(ms(10) + 64 * T1 + secs(5)).is_empty());
    assert!(sim.deliver(secs(40), &reply(bye, 200), uac.flow).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(
            &events[..],
            [(
                _,
                Event::Ended {
                    reason: EndReason::NoAck,
                    ..
                }
            )]
        ),
        "{events:?}"
    );
    sim.run_until(secs(40));
    assert_eq!(sim.ep.stats(), Stats::default());
}

// ---------------------------------------------------------------------------
// 4. CANCEL

#[test]
fn cancel_before_answer_gets_200_and_487_and_ack_is_absorbed() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("cancel", udp_from(5061));
    let invite = uac.invite(&[]);
    sim.deliver(Duration::ZERO, &invite, uac.flow);
    let call = incoming(&sim.take_events());

    let out = sim.deliver(secs(1), &uac.cancel(), uac.flow);
    assert_eq!(statuses(&out), [200, 487]);
    assert_eq!(out[0].resp().headers.cseq.method, Method::Cancel);
    let terminated = out[1].resp();
    assert_eq!(terminated.headers.cseq.method, Method::Invite);
    assert!(terminated.headers.to.tag.is_some());
    // §9.2: the 200 to the CANCEL carries the same To-tag as the 487.
    assert_eq!(out[0].resp().headers.to.tag, terminated.headers.to.tag);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(at, Event::Ended { call: c, reason: EndReason::Cancelled })]
            if *c == call && *at == secs(1)),
        "{events:?}"
    );
    assert_eq!(
        sim.ep.answer(sim.at(secs(1)), call, ANSWER),
        Err(CallError::NoSuchCall)
    );

    // The ACK for the 487 belongs to the INVITE transaction: absorbed.
    let ack = uac.ack_non_2xx(terminated);
    assert!(sim.deliver(ms(1100), &ack, uac.flow).is_empty());
    assert!(sim.take_events().is_empty());
    // A retransmitted CANCEL gets its 200 again from the CANCEL's NIST.
    let out = sim.deliver(ms(1200), &uac.cancel(), uac.flow);
    assert_eq!(statuses(&out), [200]);
    assert_eq!(sim.ep.stats().calls, 0);

    // Timer I (T4 after the ACK) ends the IST, Timer J (64·T1) the NIST;
    // nothing is resent meanwhile.
    assert!(sim.run_until(ms(1100) + secs(5)).is_empty());
    assert_eq!(sim.ep.stats().transactions, 1);
    assert!(sim.run_until(secs(1) + 64 * T1).is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
    assert!(sim.ep.poll_timeout().is_none());
}

#[test]
fn reject_refuses_a_status_that_is_not_a_failure() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("reject-2xx", udp_from(5061));
    sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    let call = incoming(&sim.take_events());
    for status in [100, 180, 200, 299, 700] {
        assert_eq!(
            sim.ep.reject(sim.at(ms(10)), call, status, &[]),
            Err(CallError::NotAFailure(status))
        );
    }
    // The call is still offered and can be rejected properly.
    assert_eq!(sim.ep.reject(sim.at(ms(20)), call, 486, &[]), Ok(()));
}

#[test]
fn cancel_for_unknown_transaction_gets_481_and_creates_nothing() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("cancel-unknown", udp_from(5061));
    let _ = uac.invite(&[]); // sets branch and CSeq, never delivered
    let out = sim.deliver(Duration::ZERO, &uac.cancel(), uac.flow);
    assert_eq!(statuses(&out), [481]);
    assert_eq!(out[0].resp().headers.cseq.method, Method::Cancel);
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn cancel_from_another_sent_by_does_not_match_the_invite() {
    // §17.2.3: branch *and* sent-by identify the transaction; a CANCEL whose
    // Via names another host is not for this INVITE.
    let mut sim = Sim::new();
    let mut uac = Uac::new("cancel-sentby", udp_from(5061));
    sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    let call = incoming(&sim.take_events());
    uac.sent_by = "127.0.0.1:5999".into();
    let out = sim.deliver(secs(1), &uac.cancel(), uac.flow);
    assert_eq!(statuses(&out), [481]);
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.answer(secs(2), call).len(), 1);
}

#[test]
fn rfc2543_invite_without_magic_cookie_is_matched_for_retransmission_and_cancel() {
    // §17.2.3's older rules: no z9hG4bK branch → Call-ID, CSeq, From-tag
    // and top Via identify the transaction.
    let old_style = |m: Vec<u8>| {
        String::from_utf8(m)
            .expect("UTF-8")
            .replace("branch=z9hG4bK-", "branch=old-")
            .into_bytes()
    };
    let mut sim = Sim::new();
    let mut uac = Uac::new("rfc2543", udp_from(5061));
    let invite = old_style(uac.invite(&[]));
    assert_eq!(
        statuses(&sim.deliver(Duration::ZERO, &invite, uac.flow)),
        [100]
    );
    let call = incoming(&sim.take_events());
    assert_eq!(statuses(&sim.deliver(ms(500), &invite, uac.flow)), [100]);
    assert!(sim.take_events().is_empty());
    let out = sim.deliver(secs(1), &old_style(uac.cancel()), uac.flow);
    assert_eq!(statuses(&out), [200, 487]);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::Cancelled })]
            if *c == call),
        "{events:?}"
    );
    let ack = old_style(uac.ack_non_2xx(out[1].resp()));
    assert!(sim.deliver(ms(1100), &ack, uac.flow).is_empty());
    assert!(sim.run_until(secs(60)).is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn cancel_after_answer_gets_200_and_leaves_the_call_alone() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("cancel-late", udp_from(5061));
    sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    let call = incoming(&sim.take_events());
    let ok = sim.answer(ms(100), call);
    uac.learn(ok[0].resp());

    let out = sim.deliver(ms(200), &uac.cancel(), uac.flow);
    assert_eq!(statuses(&out), [200]);
    assert_eq!(out[0].resp().headers.cseq.method, Method::Cancel);
    assert!(sim.take_events().is_empty());
    assert!(sim.deliver(ms(300), &uac.ack_2xx(), uac.flow).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Confirmed { call: c, .. })] if *c == call),
        "{events:?}"
    );
    assert_eq!(sim.ep.stats().calls, 1);
}

// ---------------------------------------------------------------------------
// 5. non-INVITE retransmissions

#[test]
fn retransmitted_bye_gets_the_same_200_from_the_nist_and_no_second_event() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("bye-rt", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    let bye = uac.in_dialog("BYE", &[], None);
    let first = sim.deliver(secs(5), &bye, uac.flow);
    assert_eq!(statuses(&first), [200]);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::RemoteBye })]
            if *c == call),
        "{events:?}"
    );
    let again = sim.deliver(ms(5500), &bye, uac.flow);
    assert_eq!(statuses(&again), [200], "not 481: the NIST answers");
    assert_eq!(again[0].data, first[0].data);
    assert!(sim.take_events().is_empty());
}

#[test]
fn retransmitted_options_gets_the_same_200_from_the_nist() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("opt-rt", udp_from(5061));
    let options = uac.out_of_dialog("OPTIONS", &[]);
    let first = sim.deliver(Duration::ZERO, &options, uac.flow);
    assert_eq!(statuses(&first), [200]);
    let again = sim.deliver(ms(500), &options, uac.flow);
    assert_eq!(statuses(&again), [200]);
    assert_eq!(again[0].data, first[0].data);
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats().transactions, 1);
}

// ---------------------------------------------------------------------------
// 6. our BYE unanswered (Timers E and F)

#[test]
fn unanswered_bye_is_retransmitted_by_timer_e_and_the_call_ends_at_timer_f() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("bye-f", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    let start = secs(10);
    sim.ep.hangup(sim.at(start), call).expect("confirmed call");
    let out = sim.drain(start);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method(), Some(&Method::Bye));
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], 5061))
    );
    let bye = out[0].data.clone();

    let out = sim.run_until(start + 64 * T1 - ms(1));
    // §17.1.2.2: T1, 2T1, 4T1 apart, then every T2.
    let expected: Vec<Duration> = [
        500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(|o| start + ms(o))
    .collect();
    assert_eq!(offsets(&out), expected);
    assert!(out.iter().all(|o| o.data == bye));
    assert!(sim.take_events().is_empty());

    assert!(sim.run_until(start + 64 * T1).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(at, Event::Ended { call: c, reason: EndReason::LocalHangup })]
            if *c == call && *at == start + 64 * T1),
        "{events:?}"
    );
    assert_eq!(sim.ep.stats(), Stats::default());
    assert_eq!(
        sim.ep.hangup(sim.at(secs(60)), call),
        Err(CallError::NoSuchCall)
    );
}

#[test]
fn answered_bye_ends_the_call_with_local_hangup() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("bye-ok", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    sim.ep
        .hangup(sim.at(secs(3)), call)
        .expect("confirmed call");
    let out = sim.drain(secs(3));
    assert_eq!(out.len(), 1);
    assert!(
        sim.deliver(ms(3050), &reply(out[0].req(), 200), uac.flow)
            .is_empty()
    );
    let events = sim.take_events();
    assert!(
        matches!(
            &events[..],
            [(
                _,
                Event::Ended {
                    reason: EndReason::LocalHangup,
                    ..
                }
            )]
        ),
        "{events:?}"
    );
    // The 200's retransmission is absorbed (Timer K), then all is gone.
    assert!(
        sim.deliver(ms(3100), &reply(out[0].req(), 200), uac.flow)
            .is_empty()
    );
    assert!(sim.run_until(secs(60)).is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn hangup_before_ack_waits_for_the_ack_then_sends_bye() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("bye-early", udp_from(5061));
    sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    let call = incoming(&sim.take_events());
    let ok = sim.answer(Duration::ZERO, call);
    uac.learn(ok[0].resp());
    sim.ep.hangup(sim.at(ms(100)), call).expect("answered call");
    assert!(sim.drain(ms(100)).is_empty(), "§15: no BYE before the ACK");
    let out = sim.deliver(ms(200), &uac.ack_2xx(), uac.flow);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method(), Some(&Method::Bye));
}

#[test]
fn ack_for_2xx_reusing_the_invite_branch_confirms_the_call() {
    // RFC 2543-style peers reuse the INVITE's branch for the 2xx ACK; the
    // IST in Accepted hands it to the TU (RFC 6026 §7.1).
    let mut sim = Sim::new();
    let mut uac = Uac::new("ack-oldstyle", udp_from(5061));
    sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    let call = incoming(&sim.take_events());
    let ok = sim.answer(Duration::ZERO, call);
    let ack = uac.ack_non_2xx(ok[0].resp());
    assert!(sim.deliver(ms(100), &ack, uac.flow).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Confirmed { call: c, .. })] if *c == call),
        "{events:?}"
    );
    assert!(
        sim.run_until(secs(40)).is_empty(),
        "2xx no longer retransmitted"
    );
    // Its retransmission changes nothing.
    assert!(sim.deliver(secs(1), &ack, uac.flow).is_empty());
    assert!(sim.take_events().is_empty());
}

// ---------------------------------------------------------------------------
// 7. unknown dialogs

#[test]
fn in_dialog_requests_with_unknown_to_tag_get_481() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("nodialog", udp_from(5061));
    uac.to_tag = Some("not-ours".into());
    for method in ["BYE", "INFO", "UPDATE", "INVITE", "OPTIONS"] {
        let req = uac.in_dialog(method, &[], None);
        let out = sim.deliver(Duration::ZERO, &req, uac.flow);
        assert_eq!(statuses(&out), [481], "{method}");
        assert_eq!(out[0].resp().headers.to.tag.as_deref(), Some("not-ours"));
    }
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats().calls, 0);
}

#[test]
fn ack_for_unknown_dialog_gets_no_response() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("ack-nodialog", udp_from(5061));
    let _ = uac.invite(&[]);
    uac.to_tag = Some("not-ours".into());
    assert!(
        sim.deliver(Duration::ZERO, &uac.ack_2xx(), uac.flow)
            .is_empty()
    );
    // Nor without any To-tag.
    uac.to_tag = None;
    assert!(
        sim.deliver(Duration::ZERO, &uac.ack_2xx(), uac.flow)
            .is_empty()
    );
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

// ---------------------------------------------------------------------------
// 8–10. checks on new requests

#[test]
fn register_subscribe_and_friends_get_405_with_allow() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("m405", udp_from(5061));
    for method in [
        "REGISTER",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    ] {
        let req = uac.out_of_dialog(method, &[]);
        let out = sim.deliver(Duration::ZERO, &req, uac.flow);
        assert_eq!(statuses(&out), [405], "{method}");
        let resp = out[0].resp();
        assert!(resp.headers.has_token(HeaderName::Allow, "INVITE"));
        assert!(!resp.headers.has_token(HeaderName::Allow, method));
    }
}

#[test]
fn unknown_method_gets_501() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("m501", udp_from(5061));
    let out = sim.deliver(Duration::ZERO, &uac.out_of_dialog("FOO", &[]), uac.flow);
    assert_eq!(statuses(&out), [501]);
    assert_eq!(
        out[0].resp().headers.cseq.method,
        Method::Extension("FOO".into())
    );
    assert!(sim.take_events().is_empty());
}

#[test]
fn unknown_required_extension_gets_420_with_unsupported() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("r420", udp_from(5061));
    let invite = uac.invite(&[("Require", "timer, foo"), ("Require", "bar")]);
    let out = sim.deliver(Duration::ZERO, &invite, uac.flow);
    assert_eq!(statuses(&out), [420]);
    assert_eq!(
        values(&out[0].resp().headers, HeaderName::Unsupported),
        ["foo", "bar"]
    );
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats().calls, 0);
    // The INVITE transaction absorbs the ACK.
    let ack = uac.ack_non_2xx(out[0].resp());
    assert!(sim.deliver(ms(10), &ack, uac.flow).is_empty());
}

#[test]
fn required_timer_and_100rel_are_accepted() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("r-ok", udp_from(5061));
    let invite = uac.invite(&[("Require", "timer, 100rel"), ("Supported", "timer")]);
    let out = sim.deliver(Duration::ZERO, &invite, uac.flow);
    assert_eq!(statuses(&out), [100]);
    incoming(&sim.take_events());
}

#[test]
fn invite_with_max_forwards_zero_gets_483() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("mf0", udp_from(5061));
    let invite = uac.invite(&[("Max-Forwards", "0")]);
    let out = sim.deliver(Duration::ZERO, &invite, uac.flow);
    assert_eq!(statuses(&out), [483]);
    assert!(sim.take_events().is_empty());
    // Max-Forwards 1 is still fine.
    let invite = uac.invite(&[("Max-Forwards", "1")]);
    assert_eq!(
        statuses(&sim.deliver(Duration::ZERO, &invite, uac.flow)),
        [100]
    );
}

#[test]
fn options_with_max_forwards_zero_gets_200() {
    // RFC 3261 §11: the OPTIONS is for us; Max-Forwards 0 is no reason to
    // refuse it.
    let mut sim = Sim::new();
    let mut uac = Uac::new("mf0-opt", udp_from(5061));
    let req = uac.out_of_dialog("OPTIONS", &[("Max-Forwards", "0")]);
    let out = sim.deliver(Duration::ZERO, &req, uac.flow);
    assert_eq!(statuses(&out), [200]);
}

// ---------------------------------------------------------------------------
// 11. OPTIONS, draining

#[test]
fn allow_lists_register_only_when_the_registrar_is_on() {
    let options = "OPTIONS sip:callbackd@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKallow\r\n\
From: <sip:ping@127.0.0.1>;tag=p1\r\nTo: <sip:callbackd@127.0.0.1>\r\n\
Call-ID: allow-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    for registrar in [false, true] {
        let mut ep = Endpoint::new(EndpointConfig {
            registrar,
            ..config()
        });
        ep.handle_message(Instant::now(), options.as_bytes(), udp_from(5061));
        let out: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        let Ok(Message::Response(resp)) = parse(&out[0].data) else {
            panic!("a response");
        };
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.headers.has_token(HeaderName::Allow, "REGISTER"),
            registrar
        );
        assert!(resp.headers.has_token(HeaderName::Allow, "INVITE"));
    }
}

#[test]
fn options_out_of_dialog_gets_200_with_capabilities() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(config());
    let options = "OPTIONS sip:callbackd@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKopt1\r\n\
From: <sip:ping@127.0.0.1>;tag=p1\r\nTo: <sip:callbackd@127.0.0.1>\r\n\
Call-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n";
    ep.handle_message(t0, options.as_bytes(), udp_from(5061));
    let out: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].destination,
        Destination::Udp(SocketAddr::from(([127, 0, 0, 1], 5061)))
    );
    let Ok(Message::Response(resp)) = parse(&out[0].data) else {
        panic!("not a response")
    };
    assert_eq!(resp.status, 200);
    assert!(resp.headers.has_token(HeaderName::Allow, "INVITE"));
    assert!(resp.headers.has_token(HeaderName::Supported, "timer"));
    assert!(
        resp.headers
            .get(HeaderName::Accept)
            .is_some_and(|a| a.contains("application/sdp"))
    );
    // The NIST lingers for Timer J (64·T1 over UDP), then everything is gone.
    assert_eq!(ep.stats().transactions, 1);
    let j = ep.poll_timeout().expect("Timer J pending");
    assert_eq!(j, t0 + Duration::from_secs(32));
    ep.handle_timeout(j);
    assert_eq!(ep.stats(), Stats::default());
}

#[test]
fn options_in_dialog_gets_200_with_allow_accept_supported() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("opt-dlg", udp_from(5061));
    establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    let out = sim.deliver(secs(1), &uac.in_dialog("OPTIONS", &[], None), uac.flow);
    assert_eq!(statuses(&out), [200]);
    let h = &out[0].resp().headers;
    assert!(h.has_token(HeaderName::Allow, "UPDATE"));
    assert!(h.has_token(HeaderName::Accept, "application/sdp"));
    assert!(h.has_token(HeaderName::Supported, "timer"));
    assert!(sim.take_events().is_empty());
}

#[test]
fn draining_refuses_new_invites_and_options_with_503_but_serves_calls() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("drain-call", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    sim.ep.set_draining(true);

    let mut other = Uac::new("drain-new", udp_from(5062));
    let out = sim.deliver(secs(1), &other.invite(&[]), other.flow);
    assert_eq!(statuses(&out), [503]);
    assert!(out[0].resp().headers.get(HeaderName::RetryAfter).is_some());
    assert!(sim.take_events().is_empty());
    let out = sim.deliver(secs(1), &other.out_of_dialog("OPTIONS", &[]), other.flow);
    assert_eq!(statuses(&out), [503]);

    // The existing call goes on.
    let out = sim.deliver(secs(2), &uac.in_dialog("OPTIONS", &[], None), uac.flow);
    assert_eq!(statuses(&out), [200]);
    let out = sim.deliver(secs(3), &uac.in_dialog("BYE", &[], None), uac.flow);
    assert_eq!(statuses(&out), [200]);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::RemoteBye })]
            if *c == call),
        "{events:?}"
    );

    sim.ep.set_draining(false);
    let out = sim.deliver(secs(4), &other.invite(&[]), other.flow);
    assert_eq!(statuses(&out), [100]);
}

// ---------------------------------------------------------------------------
// 12. ACL

fn outsider(port: u16) -> Flow {
    Flow {
        remote: addr([127, 0, 0, 2], port),
        transport: FlowTransport::Udp,
    }
}

#[test]
fn acl_outsider_gets_stateless_403_with_a_stable_to_tag_and_no_state() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("outsider", outsider(5061));
    let invite = uac.invite(&[]);
    let first = sim.deliver(Duration::ZERO, &invite, uac.flow);
    assert_eq!(statuses(&first), [403]);
    assert_eq!(
        first[0].destination,
        Destination::Udp(addr([127, 0, 0, 2], 5061))
    );
    let again = sim.deliver(ms(500), &invite, uac.flow);
    assert_eq!(statuses(&again), [403]);
    assert_eq!(tag_of(again[0].resp()), tag_of(first[0].resp()));
    let ack = uac.ack_non_2xx(first[0].resp());
    assert!(sim.deliver(ms(600), &ack, uac.flow).is_empty());
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
    assert!(sim.ep.poll_timeout().is_none());
}

#[test]
fn acl_drop_sends_nothing_to_outsiders() {
    let mut cfg = config();
    cfg.acl_action = AclAction::Drop;
    let mut sim = Sim::with(cfg);
    let mut uac = Uac::new("dropped", outsider(5061));
    assert!(
        sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow)
            .is_empty()
    );
    assert!(
        sim.deliver(Duration::ZERO, &uac.out_of_dialog("OPTIONS", &[]), uac.flow)
            .is_empty()
    );
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

// ---------------------------------------------------------------------------
// 13. malformed input

#[test]
fn garbage_gets_nothing_and_truncated_requests_at_most_a_400() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("malformed", udp_from(5061));
    let invite = uac.invite(&[]);
    let head_end = invite
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header block");
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        b"hello world".to_vec(),
        vec![0u8; 1500],
        vec![0xff; 64],
        b"INVITE\0sip:x SIP/2.0\r\n\r\n".to_vec(),
        b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
    ];
    for (i, input) in inputs.iter().enumerate() {
        let out = sim.deliver(Duration::ZERO, input, uac.flow);
        assert!(out.is_empty(), "input {i} got {:?}", statuses(&out));
    }
    // Prefixes that cut the header block inside a line (a cut right after
    // a line's CRLF leaves a complete request without body, which the
    // parser accepts on purpose): nothing, or a stateless 400 once the
    // complete lines hold Via and CSeq; never a call or a transaction.
    for cut in (1..head_end).filter(|&c| invite[c - 1] != b'\n') {
        let out = sim.deliver(Duration::ZERO, &invite[..cut], uac.flow);
        let got = statuses(&out);
        assert!(got.is_empty() || got == [400], "cut at {cut} got {got:?}");
    }
    // A start line of NULs before intact header fields: a malformed
    // request, answered 400 from its Via and CSeq (§8.2: "400 Bad Request").
    let mut nul = invite.clone();
    nul[..10].fill(0);
    let out = sim.deliver(Duration::ZERO, &nul, uac.flow);
    assert_eq!(statuses(&out), [400]);
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn mutated_messages_never_panic_and_get_at_most_one_response() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("mutant", udp_from(5061));
    let mut seeds = vec![uac.invite(&[("Record-Route", "<sip:127.0.0.1:5070;lr>")])];
    uac.to_tag = Some("x".into());
    seeds.push(uac.ack_2xx());
    seeds.push(uac.cancel());
    seeds.push(uac.in_dialog("BYE", &[], None));
    seeds.push(uac.in_dialog("UPDATE", &[("Session-Expires", "90")], None));
    let mut rng = fastrand::Rng::with_seed(4475);
    for round in 0..3000u64 {
        let mut m = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..6) {
            let i = rng.usize(..m.len());
            match rng.u8(..4) {
                0 => m[i] = rng.u8(..),
                1 => m.truncate(i),
                2 => m.insert(i, *b"\r\n;:,<> \0".get(rng.usize(..10)).unwrap_or(&b'x')),
                _ => {
                    m.remove(i);
                }
            }
            if m.is_empty() {
                break;
            }
        }
        let now = sim.at(ms(round));
        sim.ep.handle_message(now, &m, uac.flow);
        let sent = std::iter::from_fn(|| sim.ep.poll_transmit()).count();
        assert!(sent <= 2, "round {round}: {sent} messages");
        sim.ep.handle_timeout(now);
        while sim.ep.poll_transmit().is_some() {}
    }
    sim.run_until(secs(3600));
    // Whatever got through as a new call waits for the application (its
    // IST in Proceeding has no timer); nothing else may linger.
    let mut live = std::collections::BTreeSet::new();
    for (_, ev) in sim.take_events() {
        match ev {
            Event::IncomingCall { call, .. } => {
                live.insert(call);
            }
            Event::Ended { call, .. } => {
                live.remove(&call);
            }
            Event::Confirmed { .. }
            | Event::Reoffer { .. }
            | Event::Info { .. }
            | Event::Progress { .. }
            | Event::Answered { .. }
            | Event::Failed { .. }
            | Event::Register { .. } => {}
        }
    }
    let offered = live.len();
    for call in live {
        sim.ep
            .reject(sim.at(secs(3600)), call, 486, &[])
            .expect("offered");
    }
    let stats = sim.ep.stats();
    assert_eq!((stats.calls, stats.transactions), (0, offered), "{stats:?}");
    assert!(offered > 0, "some mutants are still valid INVITEs");
    sim.run_until(secs(7200));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn request_with_bad_cseq_gets_400() {
    let mut sim = Sim::new();
    let msg = "INVITE sip:callbackd@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKbadcseq\r\n\
From: <sip:c@127.0.0.1>;tag=a\r\nTo: <sip:callbackd@127.0.0.1>\r\n\
Call-ID: badcseq\r\nCSeq: one INVITE\r\nContent-Length: 0\r\n\r\n";
    // The 400 copies the broken CSeq (§8.2.6.2), so it does not parse
    // either: look at the bytes.
    sim.ep
        .handle_message(sim.t0, msg.as_bytes(), udp_from(5061));
    let sent = sim.ep.poll_transmit().expect("a 400");
    assert!(sim.ep.poll_transmit().is_none());
    assert_eq!(
        sent.destination,
        Destination::Udp(addr([127, 0, 0, 1], 5061))
    );
    let text = std::str::from_utf8(&sent.data).expect("UTF-8");
    assert!(text.starts_with("SIP/2.0 400 "), "{text}");
    assert!(text.contains("\r\nCall-ID: badcseq\r\n"), "{text}");
    assert!(text.contains("\r\nCSeq: one INVITE\r\n"), "{text}");
    assert!(
        text.contains("To: <sip:callbackd@127.0.0.1>;tag="),
        "{text}"
    );
    assert!(text.contains("\r\nWarning: 399 "), "{text}");
    // CSeq method not matching the request line is as bad.
    let msg = msg.replace("CSeq: one INVITE", "CSeq: 1 BYE");
    let out = sim.deliver(Duration::ZERO, msg.as_bytes(), udp_from(5061));
    assert_eq!(statuses(&out), [400]);
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn request_with_body_shorter_than_content_length_gets_400() {
    // RFC 3261 §18.3: a request cut short over UDP → 400.
    let mut sim = Sim::new();
    let mut uac = Uac::new("shortbody", udp_from(5061));
    let invite = uac.invite(&[]);
    let cut = &invite[..invite.len() - 10];
    let out = sim.deliver(Duration::ZERO, cut, uac.flow);
    assert_eq!(statuses(&out), [400]);
    assert!(sim.take_events().is_empty());
}

#[test]
fn sip_1_0_request_gets_505() {
    let mut sim = Sim::new();
    let msg = "OPTIONS sip:callbackd@127.0.0.1 SIP/1.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKv10\r\n\
From: <sip:c@127.0.0.1>;tag=a\r\nTo: <sip:callbackd@127.0.0.1>\r\n\
Call-ID: v10\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let out = sim.deliver(Duration::ZERO, msg.as_bytes(), udp_from(5061));
    assert_eq!(statuses(&out), [505]);
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn malformed_ack_gets_no_response() {
    // §17.1.1.3: an ACK is never answered, not even a broken one.
    let mut sim = Sim::new();
    let msg = "ACK sip:callbackd@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKbadack\r\n\
From: <sip:c@127.0.0.1>;tag=a\r\nTo: <sip:callbackd@127.0.0.1>;tag=b\r\n\
Call-ID: badack\r\nCSeq: x ACK\r\nContent-Length: 0\r\n\r\n";
    let out = sim.deliver(Duration::ZERO, msg.as_bytes(), udp_from(5061));
    assert!(out.is_empty(), "{:?}", statuses(&out));
}

// ---------------------------------------------------------------------------
// 14. re-INVITE and UPDATE

fn reoffer(events: &[(Duration, Event)]) -> (CallKey, Method, Bytes) {
    match events {
        [(_, Event::Reoffer { call, method, sdp })] => (*call, method.clone(), sdp.clone()),
        other => panic!("expected one Reoffer, got {other:?}"),
    }
}

#[test]
fn reinvite_with_sdp_is_a_reoffer_answered_with_200_and_acked() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("reinvite", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    let reinvite = uac.reinvite(&[], true);
    let out = sim.deliver(secs(10), &reinvite, uac.flow);
    assert_eq!(statuses(&out), [100]);
    let (c, method, sdp) = reoffer(&sim.take_events());
    assert_eq!((c, method), (call, Method::Invite));
    assert_eq!(sdp, OFFER.as_bytes());
    // A retransmission gets the 100 again, no second Reoffer.
    assert_eq!(
        statuses(&sim.deliver(ms(10_500), &reinvite, uac.flow)),
        [100]
    );
    assert!(sim.take_events().is_empty());

    sim.ep
        .answer_reoffer(sim.at(secs(11)), call, ANSWER)
        .expect("pending reoffer");
    let out = sim.drain(secs(11));
    assert_eq!(statuses(&out), [200]);
    let ok = out[0].resp();
    assert_eq!(ok.body, ANSWER);
    assert_eq!(ok.headers.cseq.seq, uac.invite_cseq);
    assert_eq!(tag_of(ok), *uac.to_tag.as_ref().expect("tag"));
    assert!(ok.headers.get(HeaderName::Contact).is_some());
    // Retransmitted until the ACK.
    let out = sim.run_until(ms(11_500));
    assert_eq!(offsets(&out), [ms(11_500)]);
    assert!(sim.deliver(ms(11_600), &uac.ack_2xx(), uac.flow).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Confirmed { call: c, .. })] if *c == call),
        "{events:?}"
    );
    assert!(
        sim.run_until(secs(60)).is_empty(),
        "no retransmission after the ACK"
    );
    assert_eq!(sim.ep.stats().calls, 1);
    assert_eq!(
        sim.ep.answer_reoffer(sim.at(secs(60)), call, ANSWER),
        Err(CallError::WrongState)
    );
}

#[test]
fn late_ack_for_the_first_2xx_does_not_confirm_a_reinvite() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("late-ack", udp_from(5061));
    let invite = uac.invite(&[]);
    sim.deliver(Duration::ZERO, &invite, uac.flow);
    let call = incoming(&sim.take_events());
    let ok = sim.answer(Duration::ZERO, call);
    uac.learn(ok[0].resp());
    let first_ack = uac.ack_2xx();
    assert!(sim.deliver(ms(100), &first_ack, uac.flow).is_empty());
    sim.take_events();

    sim.deliver(secs(2), &uac.reinvite(&[], true), uac.flow);
    reoffer(&sim.take_events());
    sim.ep
        .answer_reoffer(sim.at(secs(2)), call, ANSWER)
        .expect("pending reoffer");
    let ok2 = sim.drain(secs(2));
    // A delayed copy of the first ACK (CSeq of the first INVITE) arrives.
    assert!(sim.deliver(ms(2100), &first_ack, uac.flow).is_empty());
    assert!(sim.take_events().is_empty(), "not the ACK for this 2xx");
    let out = sim.run_until(ms(2500));
    assert_eq!(offsets(&out), [ms(2500)], "2xx still retransmitted");
    assert_eq!(out[0].data, ok2[0].data);
    assert!(sim.deliver(ms(2600), &uac.ack_2xx(), uac.flow).is_empty());
    assert_eq!(sim.take_events().len(), 1);
    assert!(sim.run_until(secs(60)).is_empty());
}

#[test]
fn rejected_reinvite_keeps_the_call_and_absorbs_the_ack() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("reject-reoffer", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    sim.deliver(secs(1), &uac.reinvite(&[], true), uac.flow);
    reoffer(&sim.take_events());
    sim.ep
        .reject_reoffer(sim.at(secs(1)), call, 488)
        .expect("pending reoffer");
    let out = sim.drain(secs(1));
    assert_eq!(statuses(&out), [488]);
    let ack = uac.ack_non_2xx(out[0].resp());
    assert!(sim.deliver(ms(1100), &ack, uac.flow).is_empty());
    assert!(sim.take_events().is_empty());
    assert!(sim.run_until(secs(60)).is_empty());
    assert_eq!(
        sim.ep.stats(),
        Stats {
            calls: 1,
            transactions: 0,
            timers: 0
        }
    );
    // The call is still there.
    let out = sim.deliver(secs(61), &uac.in_dialog("BYE", &[], None), uac.flow);
    assert_eq!(statuses(&out), [200]);
}

#[test]
fn reinvite_without_sdp_is_a_reoffer_with_empty_sdp() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("reinvite-nosdp", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    let out = sim.deliver(secs(5), &uac.reinvite(&[], false), uac.flow);
    assert_eq!(statuses(&out), [100]);
    let (c, method, sdp) = reoffer(&sim.take_events());
    assert_eq!((c, method), (call, Method::Invite));
    assert!(sdp.is_empty());
    // We offer in the 200; the answer comes in the ACK.
    sim.ep
        .answer_reoffer(sim.at(secs(5)), call, ANSWER)
        .expect("pending reoffer");
    let out = sim.drain(secs(5));
    assert_eq!(out[0].resp().body, ANSWER);
    let ack = {
        let branch = uac.new_branch();
        uac.write(
            "ACK",
            &branch,
            uac.invite_cseq,
            true,
            &[],
            Some(("application/sdp", OFFER)),
        )
    };
    assert!(sim.deliver(ms(5100), &ack, uac.flow).is_empty());
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Confirmed { body, .. })] if body == OFFER.as_bytes()),
        "{events:?}"
    );
}

#[test]
fn update_is_a_reoffer_answered_with_200_without_ack() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("update", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    let update = uac.in_dialog("UPDATE", &[], Some(("application/sdp", OFFER)));
    assert!(
        sim.deliver(secs(5), &update, uac.flow).is_empty(),
        "no 100 for UPDATE"
    );
    let (c, method, sdp) = reoffer(&sim.take_events());
    assert_eq!((c, method), (call, Method::Update));
    assert_eq!(sdp, OFFER.as_bytes());
    sim.ep
        .answer_reoffer(sim.at(secs(6)), call, ANSWER)
        .expect("pending reoffer");
    let out = sim.drain(secs(6));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(out[0].resp().headers.cseq.method, Method::Update);
    assert_eq!(out[0].resp().body, ANSWER);
    // The NIST answers a retransmission; no 2xx retransmission, no ACK wait.
    let again = sim.deliver(ms(6500), &update, uac.flow);
    assert_eq!(statuses(&again), [200]);
    assert!(sim.run_until(secs(60)).is_empty());
    assert!(sim.take_events().is_empty());
    assert_eq!(
        sim.ep.stats(),
        Stats {
            calls: 1,
            transactions: 0,
            timers: 0
        }
    );
}

#[test]
fn second_reinvite_while_one_is_pending_gets_491() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("glare", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    sim.deliver(secs(5), &uac.reinvite(&[], true), uac.flow);
    reoffer(&sim.take_events());
    let second = uac.reinvite(&[], true);
    let out = sim.deliver(secs(6), &second, uac.flow);
    assert_eq!(statuses(&out), [491]);
    assert!(sim.take_events().is_empty());
    // The 491 has its INVITE transaction: retransmitted by Timer G, its ACK
    // absorbed.
    let out = sim.run_until(secs(6) + T1);
    assert_eq!(statuses(&out), [491]);
    let ack = uac.ack_non_2xx(out[0].resp());
    assert!(sim.deliver(ms(6600), &ack, uac.flow).is_empty());
    assert!(sim.take_events().is_empty());
    // An UPDATE meanwhile also gets 491.
    let out = sim.deliver(
        secs(7),
        &uac.in_dialog("UPDATE", &[], Some(("application/sdp", OFFER))),
        uac.flow,
    );
    assert_eq!(statuses(&out), [491]);
    // The first one can still be answered.
    sim.ep
        .answer_reoffer(sim.at(secs(8)), call, ANSWER)
        .expect("first reoffer still pending");
    assert_eq!(statuses(&sim.drain(secs(8))), [200]);
}

#[test]
fn in_dialog_request_with_lower_cseq_gets_500() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("lowcseq", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    // CSeq equal to the INVITE's (not higher).
    uac.cseq -= 1;
    let info = uac.in_dialog("INFO", &[], Some(("application/dtmf", "5")));
    let out = sim.deliver(secs(1), &info, uac.flow);
    assert_eq!(statuses(&out), [500]);
    assert!(sim.take_events().is_empty());
    // Same for a re-INVITE with a lower CSeq; its ACK is absorbed by the
    // INVITE transaction, not answered with the 500 again.
    uac.cseq -= 5;
    let reinvite = uac.reinvite(&[], true);
    let out = sim.deliver(secs(2), &reinvite, uac.flow);
    assert_eq!(statuses(&out), [500]);
    assert!(sim.take_events().is_empty());
    let ack = uac.ack_non_2xx(out[0].resp());
    assert!(sim.deliver(ms(2100), &ack, uac.flow).is_empty());
    // The call is unaffected: a proper INFO reaches the application.
    uac.cseq += 10;
    let info = uac.in_dialog("INFO", &[], Some(("application/dtmf", "Signal=5")));
    let out = sim.deliver(secs(3), &info, uac.flow);
    assert_eq!(statuses(&out), [200]);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Info { call: c, content_type, body })]
            if *c == call && &**content_type == "application/dtmf" && &body[..] == b"Signal=5"),
        "{events:?}"
    );
}

#[test]
fn bye_during_pending_reoffer_answers_it_and_leaves_no_transaction() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("bye-reoffer", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    sim.deliver(secs(5), &uac.reinvite(&[], true), uac.flow);
    reoffer(&sim.take_events());
    let out = sim.deliver(secs(6), &uac.in_dialog("BYE", &[], None), uac.flow);
    // §15.1.2: the pending re-INVITE gets a final response (487).
    let mut got = statuses(&out);
    got.sort_unstable();
    assert_eq!(got, [200, 487]);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::RemoteBye })]
            if *c == call),
        "{events:?}"
    );
    sim.run_until(secs(200));
    assert_eq!(sim.ep.stats(), Stats::default());
}

// ---------------------------------------------------------------------------
// 15. session timers (RFC 4028)

#[test]
fn session_expires_below_min_se_gets_422_with_min_se() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st422", udp_from(5061));
    let invite = uac.invite(&[("Supported", "timer"), ("Session-Expires", "60")]);
    let out = sim.deliver(Duration::ZERO, &invite, uac.flow);
    assert_eq!(statuses(&out), [422]);
    assert_eq!(out[0].resp().headers.get(HeaderName::MinSe), Some("90"));
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats().calls, 0);
}

/// An established call with `Session-Expires: 120;refresher=uac`, answered at
/// 0; checks the 2xx's session-timer headers.
fn uac_refreshed_call(sim: &mut Sim, uac: &mut Uac) -> CallKey {
    let invite = uac.invite(&[
        ("Supported", "timer"),
        ("Session-Expires", "120;refresher=uac"),
    ]);
    sim.deliver(Duration::ZERO, &invite, uac.flow);
    let call = incoming(&sim.take_events());
    let out = sim.answer(Duration::ZERO, call);
    let ok = out[0].resp();
    assert_eq!(
        ok.headers.get(HeaderName::SessionExpires),
        Some("120;refresher=uac")
    );
    assert!(ok.headers.has_token(HeaderName::Require, "timer"));
    uac.learn(ok);
    assert!(sim.deliver(ms(100), &uac.ack_2xx(), uac.flow).is_empty());
    sim.take_events();
    call
}

#[test]
fn uac_refresher_that_never_refreshes_gets_bye_at_88_s() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-expire", udp_from(5061));
    let call = uac_refreshed_call(&mut sim, &mut uac);
    // RFC 4028 §10: 120 − min(32, 120/3) = 88 s.
    assert!(sim.run_until(secs(88) - ms(1)).is_empty());
    let out = sim.run_until(secs(88));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].at, secs(88));
    let bye = out[0].req();
    assert_eq!(bye.method, Method::Bye);
    assert!(sim.take_events().is_empty());
    assert!(
        sim.deliver(ms(88_050), &reply(bye, 200), uac.flow)
            .is_empty()
    );
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::SessionExpired })]
            if *c == call),
        "{events:?}"
    );
    sim.run_until(secs(200));
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn refresh_reinvite_restarts_the_session_timer() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-reinvite", udp_from(5061));
    let call = uac_refreshed_call(&mut sim, &mut uac);
    let refresh = uac.reinvite(
        &[
            ("Supported", "timer"),
            ("Session-Expires", "120;refresher=uac"),
        ],
        true,
    );
    assert!(sim.run_until(secs(60)).is_empty());
    assert_eq!(statuses(&sim.deliver(secs(60), &refresh, uac.flow)), [100]);
    reoffer(&sim.take_events());
    sim.ep
        .answer_reoffer(sim.at(secs(60)), call, ANSWER)
        .expect("pending reoffer");
    let out = sim.drain(secs(60));
    assert_eq!(
        out[0].resp().headers.get(HeaderName::SessionExpires),
        Some("120;refresher=uac")
    );
    assert!(sim.deliver(ms(60_100), &uac.ack_2xx(), uac.flow).is_empty());
    sim.take_events();
    // No BYE at 88 s; BYE at 60 + 88 s.
    assert!(sim.run_until(secs(60 + 88) - ms(1)).is_empty());
    let out = sim.run_until(secs(60 + 88));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].at, secs(148));
    assert_eq!(out[0].method(), Some(&Method::Bye));
}

#[test]
fn refresh_update_restarts_the_session_timer() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-update", udp_from(5061));
    let call = uac_refreshed_call(&mut sim, &mut uac);
    let refresh = uac.in_dialog(
        "UPDATE",
        &[
            ("Supported", "timer"),
            ("Session-Expires", "120;refresher=uac"),
        ],
        None,
    );
    assert!(sim.run_until(secs(60)).is_empty());
    assert!(sim.deliver(secs(60), &refresh, uac.flow).is_empty());
    let (_, method, sdp) = reoffer(&sim.take_events());
    assert_eq!(method, Method::Update);
    assert!(sdp.is_empty());
    sim.ep
        .answer_reoffer(sim.at(secs(60)), call, b"")
        .expect("pending reoffer");
    let out = sim.drain(secs(60));
    assert_eq!(statuses(&out), [200]);
    assert!(out[0].resp().body.is_empty());
    assert!(sim.run_until(secs(60 + 88) - ms(1)).is_empty());
    let out = sim.run_until(secs(60 + 88));
    assert_eq!(offsets(&out), [secs(148)]);
    assert_eq!(out[0].method(), Some(&Method::Bye));
}

#[test]
fn uas_refresher_sends_update_at_half_the_interval() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-uas", udp_from(5061));
    let invite = uac.invite(&[
        ("Supported", "timer"),
        ("Session-Expires", "120;refresher=uas"),
        ("Allow", ALLOWS_UPDATE),
    ]);
    sim.deliver(Duration::ZERO, &invite, uac.flow);
    let call = incoming(&sim.take_events());
    let out = sim.answer(Duration::ZERO, call);
    let ok = out[0].resp();
    assert_eq!(
        ok.headers.get(HeaderName::SessionExpires),
        Some("120;refresher=uas")
    );
    assert!(!ok.headers.has_token(HeaderName::Require, "timer"));
    uac.learn(ok);
    assert!(sim.deliver(ms(100), &uac.ack_2xx(), uac.flow).is_empty());
    sim.take_events();

    assert!(sim.run_until(secs(60) - ms(1)).is_empty());
    let out = sim.run_until(secs(60));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].at, secs(60));
    let update = out[0].req();
    assert_eq!(update.method, Method::Update);
    // RFC 4028 §7.4: in a refresh, "uac" names its sender — us, staying
    // the refresher ("uas" would hand the job to the peer).
    assert_eq!(
        update.headers.get(HeaderName::SessionExpires),
        Some("120;refresher=uac")
    );
    assert_eq!(update.headers.to.tag.as_deref(), Some("st-uas-ft"));
    assert_eq!(update.headers.from.tag.as_deref(), uac.to_tag.as_deref());
    assert!(update.headers.get(HeaderName::Contact).is_some());
    assert!(
        sim.deliver(ms(60_050), &reply(update, 200), uac.flow)
            .is_empty()
    );
    assert!(sim.take_events().is_empty());
    // The next refresh follows 60 s later; the call lives on.
    let out = sim.run_until(secs(120));
    let updates: Vec<Duration> = out
        .iter()
        .filter(|o| o.method() == Some(&Method::Update))
        .map(|o| o.at)
        .collect();
    assert_eq!(updates.first(), Some(&secs(120)));
    assert_eq!(sim.ep.stats().calls, 1);
}

#[test]
fn reinvite_without_session_timer_turns_the_timer_off() {
    // RFC 4028 §9: a refresh that neither asks for nor supports timers gets
    // a 2xx without Session-Expires; no timer runs afterwards.
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-off", udp_from(5061));
    let call = uac_refreshed_call(&mut sim, &mut uac);
    sim.deliver(secs(30), &uac.reinvite(&[], true), uac.flow);
    reoffer(&sim.take_events());
    sim.ep
        .answer_reoffer(sim.at(secs(30)), call, ANSWER)
        .expect("pending reoffer");
    let out = sim.drain(secs(30));
    assert_eq!(out[0].resp().headers.get(HeaderName::SessionExpires), None);
    assert!(sim.deliver(ms(30_100), &uac.ack_2xx(), uac.flow).is_empty());
    sim.take_events();
    assert!(sim.run_until(secs(3600)).is_empty(), "no BYE at 88 s");
    assert_eq!(
        sim.ep.stats(),
        Stats {
            calls: 1,
            transactions: 0,
            timers: 0
        }
    );
}

/// An Allow that lists UPDATE.
const ALLOWS_UPDATE: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE";

/// A call where we refresh (`refresher=uas`, 120 s) a peer whose INVITE
/// had `allow`; returns it with the refresh we send at 60 s.
fn refreshed_call(sim: &mut Sim, uac: &mut Uac, allow: &str) -> (CallKey, Out) {
    let invite = uac.invite(&[
        ("Supported", "timer"),
        ("Session-Expires", "120;refresher=uas"),
        ("Allow", allow),
    ]);
    sim.deliver(Duration::ZERO, &invite, uac.flow);
    let call = incoming(&sim.take_events());
    let out = sim.answer(Duration::ZERO, call);
    uac.learn(out[0].resp());
    assert!(sim.deliver(ms(100), &uac.ack_2xx(), uac.flow).is_empty());
    sim.take_events();
    let mut out = sim.run_until(secs(60));
    assert_eq!(out.len(), 1, "{out:?}");
    (call, out.remove(0))
}

/// [`refreshed_call`] with a peer that allows UPDATE: the refresh is one.
fn uas_refreshed_call(sim: &mut Sim, uac: &mut Uac) -> (CallKey, Out) {
    let (call, update) = refreshed_call(sim, uac, ALLOWS_UPDATE);
    assert_eq!(update.method(), Some(&Method::Update));
    (call, update)
}

#[test]
fn a_peer_that_does_not_allow_update_is_refreshed_by_reinvite_with_our_session() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-reinv", udp_from(5061));
    let (_call, refresh) = refreshed_call(&mut sim, &mut uac, "INVITE, ACK, BYE, CANCEL, OPTIONS");
    let req = refresh.req();
    assert_eq!(req.method, Method::Invite);
    assert_eq!(&req.body[..], ANSWER, "our current session, unchanged");
    assert_eq!(
        req.headers.get(HeaderName::SessionExpires),
        Some("120;refresher=uac")
    );
    assert_eq!(req.headers.to.tag.as_deref(), Some("st-reinv-ft"));
    // 200: ACKed at once, the call goes on, no event for the application.
    let out = sim.deliver(ms(60_050), &reply(req, 200), uac.flow);
    assert_eq!(out.len(), 1, "{out:?}");
    let ack = out[0].req();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.cseq.seq, req.headers.cseq.seq);
    let first_ack = out[0].data.clone();
    assert!(sim.take_events().is_empty());
    // A retransmitted 200 gets the same ACK again.
    let out = sim.deliver(ms(60_550), &reply(req, 200), uac.flow);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, first_ack);
    // The next refresh comes 60 s later, by re-INVITE again.
    let out = sim.run_until(secs(120));
    assert!(
        out.iter()
            .any(|o| o.at == secs(120) && o.method() == Some(&Method::Invite)),
        "{out:?}"
    );
    assert_eq!(sim.ep.stats().calls, 1);
}

#[test]
fn a_501_to_our_update_refresh_falls_back_to_reinvite_at_once() {
    for status in [405, 501] {
        let mut sim = Sim::new();
        let mut uac = Uac::new("st-501", udp_from(5061));
        let (_call, update) = uas_refreshed_call(&mut sim, &mut uac);
        let out = sim.deliver(ms(60_050), &reply(update.req(), status), uac.flow);
        assert_eq!(out.len(), 1, "{status}: {out:?}");
        assert_eq!(out[0].at, ms(60_050));
        assert_eq!(out[0].method(), Some(&Method::Invite), "{status}");
        assert_eq!(&out[0].req().body[..], ANSWER);
        let out = sim.deliver(ms(60_100), &reply(out[0].req(), 200), uac.flow);
        assert_eq!(out[0].method(), Some(&Method::Ack));
        // From now on: re-INVITE.
        let out = sim.run_until(secs(120));
        assert!(
            out.iter().all(|o| o.method() != Some(&Method::Update)),
            "{status}: {out:?}"
        );
        assert_eq!(sim.ep.stats().calls, 1);
    }
}

#[test]
fn a_reinvite_refresh_answered_481_ends_the_call_with_bye() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-r481", udp_from(5061));
    let (call, refresh) = refreshed_call(&mut sim, &mut uac, "INVITE, ACK, BYE");
    assert_eq!(refresh.method(), Some(&Method::Invite));
    let out = sim.deliver(ms(60_050), &reply(refresh.req(), 481), uac.flow);
    // The transaction ACKs the 481; then our BYE.
    let methods: Vec<_> = out.iter().filter_map(|o| o.method().cloned()).collect();
    assert_eq!(methods, [Method::Ack, Method::Bye], "{out:?}");
    let bye = out
        .iter()
        .find(|o| o.method() == Some(&Method::Bye))
        .expect("BYE");
    sim.deliver(ms(60_100), &reply(bye.req(), 200), uac.flow);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::SessionExpired })]
            if *c == call),
        "{events:?}"
    );
}

#[test]
fn refresh_update_that_times_out_ends_the_call_with_bye() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-dead", udp_from(5061));
    let (call, update) = uas_refreshed_call(&mut sim, &mut uac);
    // Timer E resends the UPDATE; Timer F (64·T1) fails it → BYE (RFC 3261
    // §12.2.1.2), no further refresh.
    let out = sim.run_until(secs(60) + 64 * T1);
    assert!(out[..out.len() - 1].iter().all(|o| o.data == update.data));
    let bye = out.last().expect("BYE");
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.at, secs(60) + 64 * T1);
    assert!(sim.take_events().is_empty());
    // The dead peer does not answer the BYE either: Timer F ends the call.
    let out = sim.run_until(secs(60) + 128 * T1);
    assert!(out.iter().all(|o| o.method() == Some(&Method::Bye)));
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(at, Event::Ended { call: c, reason: EndReason::SessionExpired })]
            if *c == call && *at == secs(60) + 128 * T1),
        "{events:?}"
    );
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn refresh_update_answered_481_ends_the_call_with_bye() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("st-481", udp_from(5061));
    let (call, update) = uas_refreshed_call(&mut sim, &mut uac);
    let out = sim.deliver(ms(60_050), &reply(update.req(), 481), uac.flow);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].method(), Some(&Method::Bye));
    assert!(
        sim.deliver(ms(60_100), &reply(out[0].req(), 481), uac.flow)
            .is_empty()
    );
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::SessionExpired })]
            if *c == call),
        "{events:?}"
    );
    sim.run_until(secs(200));
    assert_eq!(sim.ep.stats(), Stats::default());
}

// ---------------------------------------------------------------------------
// 16. leaks

#[test]
fn full_call_leaves_no_state_behind() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("full", udp_from(5061));
    let call = establish(&mut sim, &mut uac, Duration::ZERO, &[]);
    let out = sim.deliver(secs(30), &uac.in_dialog("BYE", &[], None), uac.flow);
    assert_eq!(statuses(&out), [200]);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::RemoteBye })]
            if *c == call),
        "{events:?}"
    );
    assert_eq!(sim.ep.stats().calls, 0);
    assert!(sim.run_until(secs(30) + 64 * T1).is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
    assert!(sim.ep.poll_timeout().is_none());
}

#[test]
fn rejected_call_ack_is_absorbed_and_no_state_remains() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("busy", udp_from(5061));
    sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    let call = incoming(&sim.take_events());
    sim.ep
        .reject(sim.at(secs(1)), call, 486, &[("Retry-After", "60")])
        .expect("offered call");
    let out = sim.drain(secs(1));
    assert_eq!(statuses(&out), [486]);
    let busy = out[0].resp();
    assert!(busy.headers.to.tag.is_some());
    assert_eq!(busy.headers.get(HeaderName::RetryAfter), Some("60"));
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::Ended { call: c, reason: EndReason::Rejected(486) })]
            if *c == call),
        "{events:?}"
    );
    let ack = uac.ack_non_2xx(busy);
    assert!(sim.deliver(ms(1100), &ack, uac.flow).is_empty());
    // Timer I (T4) ends the transaction; no 486 retransmission after the ACK.
    assert!(sim.run_until(ms(1100) + secs(5) - ms(1)).is_empty());
    assert_eq!(sim.ep.stats().transactions, 1);
    assert!(sim.run_until(ms(1100) + secs(5)).is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn rejected_call_without_ack_retransmits_486_until_timer_h() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("busy-noack", udp_from(5061));
    sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    let call = incoming(&sim.take_events());
    sim.ep
        .reject(sim.at(Duration::ZERO), call, 486, &[])
        .expect("offered call");
    let first = sim.drain(Duration::ZERO);
    assert_eq!(statuses(&first), [486]);
    sim.take_events();
    let out = sim.run_until(64 * T1);
    // Timer G: T1, 2T1, 4T1 … capped at T2; Timer H at 64·T1 stops it.
    let expected: Vec<Duration> = [
        500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(offsets(&out), expected);
    assert!(out.iter().all(|o| o.data == first[0].data));
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
    assert!(sim.ep.poll_timeout().is_none());
}

#[test]
fn many_calls_leave_nothing_after_the_timers() {
    let mut sim = Sim::new();
    for i in 0..20u64 {
        let mut uac = Uac::new(&format!("many{i}"), udp_from(6000 + i as u16));
        let at = ms(i * 250);
        let call = establish(&mut sim, &mut uac, at, &[]);
        if i % 2 == 0 {
            sim.deliver(at + secs(1), &uac.in_dialog("BYE", &[], None), uac.flow);
        } else {
            sim.ep
                .hangup(sim.at(at + secs(1)), call)
                .expect("confirmed");
            let out = sim.drain(at + secs(1));
            sim.deliver(at + secs(1) + ms(20), &reply(out[0].req(), 200), uac.flow);
        }
    }
    assert_eq!(sim.ep.stats().calls, 0);
    sim.run_until(secs(120));
    assert_eq!(sim.ep.stats(), Stats::default());
    assert!(sim.ep.poll_timeout().is_none());
}

// ---------------------------------------------------------------------------
// 17. transports

/// In-dialog requests go on the connection the peer opened while it is
/// open, even when its Contact names another port (the one it listens on,
/// or none at all behind NAT): the engine falls back to the Contact's
/// address only once that connection is gone.
#[test]
fn our_bye_goes_on_the_connection_the_peer_opened() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("tcp-reuse", tcp_from(40012, 5));
    let invite = String::from_utf8(uac.invite(&[])).expect("text").replace(
        "@127.0.0.1:40012;transport=tcp>",
        "@127.0.0.1:5062;transport=tcp>",
    );
    sim.deliver(Duration::ZERO, invite.as_bytes(), uac.flow);
    let call = incoming(&sim.take_events());
    let out = sim.answer(ms(10), call);
    uac.learn(out[0].resp());
    sim.deliver(ms(20), &uac.ack_2xx(), uac.flow);
    sim.ep.hangup(sim.at(ms(30)), call).expect("confirmed call");
    let out = sim.drain(ms(30));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].method(), Some(&Method::Bye));
    assert_eq!(
        out[0].destination,
        Destination::Tcp {
            conn: Some(5),
            remote: addr([127, 0, 0, 1], 5062)
        }
    );
}

#[test]
fn tcp_responses_go_back_on_the_same_connection() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("tcp", tcp_from(40002, 3));
    let out = sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    let tcp = Destination::Tcp {
        conn: Some(3),
        remote: addr([127, 0, 0, 1], 40002),
    };
    assert_eq!(out[0].destination, tcp);
    let call = incoming(&sim.take_events());
    let out = sim.answer(Duration::ZERO, call);
    assert_eq!(out[0].destination, tcp);
    uac.learn(out[0].resp());
    sim.deliver(ms(50), &uac.ack_2xx(), uac.flow);
    let out = sim.deliver(secs(1), &uac.in_dialog("BYE", &[], None), uac.flow);
    assert_eq!(statuses(&out), [200]);
    assert_eq!(out[0].destination, tcp);
    // Over TCP Timer J is zero: the next timeout run clears the NIST; the
    // IST's Timer L is 64·T1 regardless.
    sim.run_until(secs(1));
    assert_eq!(sim.ep.stats().transactions, 1);
    sim.run_until(64 * T1);
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn rport_via_gets_received_and_source_port_and_udp_response_goes_to_source() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("nat", udp_from(40003));
    uac.sent_by = "192.168.1.20:5060".into();
    uac.via_params = ";rport".into();
    let out = sim.deliver(Duration::ZERO, &uac.out_of_dialog("OPTIONS", &[]), uac.flow);
    assert_eq!(statuses(&out), [200]);
    let via = out[0].resp().headers.top_via();
    assert_eq!(&*via.host, "192.168.1.20");
    assert_eq!(via.received, Some("127.0.0.1".parse().expect("ip")));
    assert_eq!(via.rport, Rport::Value(40003));
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], 40003))
    );

    // Without rport but from another address: received only, and the
    // response goes to the received address at the sent-by port (§18.2.2),
    // not to the source port.
    let mut plain = Uac::new("nat2", udp_from(40004));
    plain.sent_by = "192.168.1.21:5062".into();
    let out = sim.deliver(
        Duration::ZERO,
        &plain.out_of_dialog("OPTIONS", &[]),
        plain.flow,
    );
    let via = out[0].resp().headers.top_via();
    assert_eq!(via.received, Some("127.0.0.1".parse().expect("ip")));
    assert_ne!(via.rport, Rport::Value(40004));
    assert_eq!(
        out[0].destination,
        Destination::Udp(addr([127, 0, 0, 1], 5062))
    );
}

/// RFC 3261 §18.2.2: without `rport`, a UDP request's responses go to the
/// sent-by port (5060 when Via names none) at the source address — the
/// 100, the 200 and its retransmissions until the ACK alike; over TCP they
/// stay on the connection whatever Via says.
#[test]
fn udp_responses_without_rport_go_to_the_via_sent_by_port() {
    let mut sim = Sim::new();
    let mut uac = Uac::new("sent-by", udp_from(40005));
    uac.sent_by = "127.0.0.1".into();
    let out = sim.deliver(Duration::ZERO, &uac.invite(&[]), uac.flow);
    assert_eq!(statuses(&out), [100]);
    let sent_by = Destination::Udp(addr([127, 0, 0, 1], 5060));
    assert_eq!(out[0].destination, sent_by);
    let call = incoming(&sim.take_events());
    let out = sim.answer(ms(10), call);
    assert_eq!(statuses(&out), [200]);
    assert_eq!(out[0].destination, sent_by);
    let again = sim.run_until(ms(10) + T1);
    assert_eq!(statuses(&again), [200], "retransmitted at T1");
    assert_eq!(again[0].destination, sent_by);

    let mut tcp = Uac::new("sent-by-tcp", tcp_from(40006, 3));
    tcp.sent_by = "127.0.0.1:5070".into();
    let out = sim.deliver(ms(20), &tcp.out_of_dialog("OPTIONS", &[]), tcp.flow);
    assert_eq!(
        out[0].destination,
        Destination::Tcp {
            conn: Some(3),
            remote: addr([127, 0, 0, 1], 40006)
        }
    );
}

// ---------------------------------------------------------------------------
// REGISTER with a registrar: handed to the application, answered by respond()

fn with_registrar() -> Sim {
    Sim::with(EndpointConfig {
        registrar: true,
        ..config()
    })
}

/// Takes the one Register among `events`.
fn register_event(events: &[(Duration, Event)]) -> (ServerTx, Flow, &Request) {
    let found: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Register {
                request,
                source,
                tx,
            } => Some((*tx, *source, &**request)),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "events: {events:?}");
    found[0]
}

#[test]
fn register_waits_in_its_nist_for_the_application() {
    let mut sim = with_registrar();
    let mut uac = Uac::new("reg", udp_from(5061));
    let register = uac.out_of_dialog("REGISTER", &[("Expires", "3600")]);
    // RFC 3261 §17.2.2: nothing is sent until the TU answers.
    assert!(sim.deliver(Duration::ZERO, &register, uac.flow).is_empty());
    let events = sim.take_events();
    let (tx, source, request) = register_event(&events);
    assert_eq!(request.method, Method::Register);
    assert_eq!(request.headers.get(HeaderName::Expires), Some("3600"));
    assert_eq!(source, uac.flow);
    assert_eq!(sim.ep.stats().transactions, 1);
    // A retransmission before the answer is absorbed: no second event.
    assert!(sim.deliver(ms(500), &register, uac.flow).is_empty());
    assert!(sim.take_events().is_empty());

    sim.ep
        .respond(
            sim.at(ms(600)),
            tx,
            401,
            &[(
                "WWW-Authenticate",
                "Digest realm=\"callbackd\", nonce=\"n1\"",
            )],
        )
        .expect("awaiting its answer");
    let out = sim.drain(ms(600));
    assert_eq!(statuses(&out), [401]);
    let resp = out[0].resp();
    assert_eq!(out[0].destination, Destination::Udp(uac.flow.remote));
    assert_eq!(resp.headers.call_id.as_str(), "reg");
    assert_eq!(resp.headers.cseq.method, Method::Register);
    let challenges: Vec<&str> = resp
        .headers
        .fields()
        .iter()
        .filter(|f| f.name == HeaderName::WwwAuthenticate)
        .map(|f| &*f.value)
        .collect();
    assert_eq!(challenges, ["Digest realm=\"callbackd\", nonce=\"n1\""]);
    assert_eq!(resp.headers.get(HeaderName::Server), Some("callbackd-test"));
    let tag = tag_of(resp);

    // The completed NIST answers a retransmission with the same 401.
    let again = sim.deliver(secs(1), &register, uac.flow);
    assert_eq!(statuses(&again), [401]);
    assert_eq!(tag_of(again[0].resp()), tag);
    assert!(sim.take_events().is_empty());
    // Answered once only.
    assert_eq!(
        sim.ep.respond(sim.at(secs(1)), tx, 200, &[]),
        Err(CallError::NoSuchTransaction)
    );
    // Timer J (64·T1 over UDP) ends the transaction; nothing is left.
    assert!(sim.run_until(ms(600) + 64 * T1).is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
    assert_eq!(
        sim.ep.respond(sim.at(secs(60)), tx, 200, &[]),
        Err(CallError::NoSuchTransaction)
    );
}

#[test]
fn register_over_tcp_is_done_once_answered() {
    let mut sim = with_registrar();
    let mut uac = Uac::new("reg-tcp", tcp_from(40010, 4));
    let out = sim.deliver(
        Duration::ZERO,
        &uac.out_of_dialog("REGISTER", &[]),
        uac.flow,
    );
    assert!(out.is_empty());
    let events = sim.take_events();
    let (tx, source, _) = register_event(&events);
    assert_eq!(source.transport, FlowTransport::Tcp(4));
    sim.ep
        .respond(
            sim.at(ms(1)),
            tx,
            200,
            &[("Contact", "<sip:bob@10.0.0.5>;expires=60"), ("Date", "x")],
        )
        .expect("answers");
    let out = sim.drain(ms(1));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(
        out[0].destination,
        Destination::Tcp {
            conn: Some(4),
            remote: uac.flow.remote
        }
    );
    assert_eq!(
        values(&out[0].resp().headers, HeaderName::Contact),
        ["<sip:bob@10.0.0.5>;expires=60"]
    );
    // §17.2.2: Timer J is zero over a reliable transport.
    assert!(sim.run_until(ms(1)).is_empty());
    assert_eq!(sim.ep.stats(), Stats::default());
}

#[test]
fn register_provisional_keeps_the_transaction_waiting() {
    let mut sim = with_registrar();
    let mut uac = Uac::new("reg-100", udp_from(5061));
    sim.deliver(
        Duration::ZERO,
        &uac.out_of_dialog("REGISTER", &[]),
        uac.flow,
    );
    let events = sim.take_events();
    let (tx, _, _) = register_event(&events);
    sim.ep.respond(sim.at(ms(1)), tx, 100, &[]).expect("1xx");
    assert_eq!(statuses(&sim.drain(ms(1))), [100]);
    sim.ep
        .respond(sim.at(ms(2)), tx, 423, &[("Min-Expires", "60")])
        .expect("final");
    let out = sim.drain(ms(2));
    assert_eq!(statuses(&out), [423]);
    assert_eq!(
        out[0].resp().headers.get(HeaderName::MinExpires),
        Some("60")
    );
}

#[test]
fn rejects_respond_with_a_status_out_of_range() {
    let mut sim = with_registrar();
    let mut uac = Uac::new("reg-bad", udp_from(5061));
    sim.deliver(
        Duration::ZERO,
        &uac.out_of_dialog("REGISTER", &[]),
        uac.flow,
    );
    let events = sim.take_events();
    let (tx, _, _) = register_event(&events);
    for status in [0, 99, 700] {
        assert_eq!(
            sim.ep.respond(sim.at(ms(1)), tx, status, &[]),
            Err(CallError::NotAStatus(status))
        );
    }
    assert!(sim.drain(ms(1)).is_empty(), "nothing sent");
    sim.ep
        .respond(sim.at(ms(2)), tx, 200, &[])
        .expect("still waiting");
    assert_eq!(statuses(&sim.drain(ms(2))), [200]);
}

#[test]
fn register_checks_come_before_the_registrar() {
    let mut sim = with_registrar();
    let mut uac = Uac::new("reg-chk", udp_from(5061));
    let out = sim.deliver(
        Duration::ZERO,
        &uac.out_of_dialog("REGISTER", &[("Max-Forwards", "0")]),
        uac.flow,
    );
    assert_eq!(statuses(&out), [483]);
    let out = sim.deliver(
        Duration::ZERO,
        &uac.out_of_dialog("REGISTER", &[("Require", "gruu")]),
        uac.flow,
    );
    assert_eq!(statuses(&out), [420]);
    assert_eq!(
        out[0].resp().headers.get(HeaderName::Unsupported),
        Some("gruu")
    );
    assert!(sim.take_events().is_empty());
    // Other methods keep their 405 with a registrar.
    let out = sim.deliver(
        Duration::ZERO,
        &uac.out_of_dialog("SUBSCRIBE", &[]),
        uac.flow,
    );
    assert_eq!(statuses(&out), [405]);
}

#[path = "uac_tests.rs"]
mod uac;
