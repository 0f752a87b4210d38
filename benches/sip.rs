//! SIP hot path: what one answer-only call costs the sans-IO core.
//!
//! Measures, in one process run, against a reference measured beside it:
//! - `parse`: our parser (tokenizer + typed essentials) on sipp's INVITE,
//!   against the floor any parser pays on the same bytes (the reference:
//!   checking they are UTF-8 and finding every line end);
//! - `call`: a whole answer-only call through `Endpoint` — INVITE, 100,
//!   200, ACK, BYE, 200 — without sockets, so calls/s per core is the
//!   ceiling the SIP core puts on the engine (sipp's own UAS answers about
//!   3,000 calls/s on this kind of machine).
//!
//! Run: `cargo bench --bench sip`. Reports medians of several rounds.
//! Under `cargo test` (no `--bench` argument) it runs nothing. With
//! `--smoke` (scripts/bench-load's CI smoke) it runs one round of a few
//! calls, checking the path works; its figures mean nothing.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use callbackd::acl::{Acl, AclAction};
use callbackd::sip::endpoint::{Endpoint, EndpointConfig, Event, Flow, FlowTransport};
use callbackd::sip::message::{self, Message};
use callbackd::sip::session_timer::SessionTimerConfig;
use callbackd::sip::transaction::TimerConfig;

const INVITE: &str = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-BRANCH\r\n\
From: sipp <sip:sipp@127.0.0.1:5061>;tag=TAG\r\n\
To: service <sip:service@127.0.0.1:5060>\r\n\
Call-ID: CALLID@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@127.0.0.1:5061\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 129\r\n\
\r\n\
v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

const SDP_ANSWER: &[u8] = b"v=0\r\no=callbackd 1 1 IN IP4 127.0.0.1\r\ns=callbackd\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n";

fn main() {
    // `cargo bench` passes --bench; `cargo test` does not: under
    // `cargo test --all-targets` the bench runs nothing. `--smoke` (from
    // scripts/bench-load --smoke) is one short round checking the path works.
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    if !smoke && !args.iter().any(|a| a == "--bench") {
        println!("sip bench: not run under cargo test; run `cargo bench --bench sip`");
        return;
    }
    let (rounds, n, calls) = if smoke {
        (1, 100, 50)
    } else {
        (7, 20_000, 5_000)
    };
    if smoke {
        println!("sip bench smoke run: figures not meaningful; use cargo bench");
    }

    let parse_ours = median(rounds, || {
        time_per(n, |i| {
            let _ = black_box(message::parse(black_box(INVITE.as_bytes())));
            i
        })
    });
    let parse_floor = median(rounds, || {
        time_per(n, |i| {
            let text = std::str::from_utf8(black_box(INVITE.as_bytes())).unwrap_or("");
            let _ = black_box(text.split("\r\n").count());
            i
        })
    });
    println!(
        "parse INVITE: ours {:>7.2} µs, UTF-8 check + line split (reference floor) {:>7.2} µs, ratio {:.2}",
        micros(parse_ours),
        micros(parse_floor),
        parse_ours.as_secs_f64() / parse_floor.as_secs_f64()
    );

    let per_call = median(rounds, || {
        let mut ep = endpoint();
        let t0 = Instant::now();
        for i in 0..calls {
            one_call(&mut ep, i);
        }
        t0.elapsed() / calls
    });
    println!(
        "answer-only call through Endpoint (6 messages, no sockets): {:>7.2} µs = {:.0} calls/s per core \
         (reference: sipp's UAS ≈ 3,000 calls/s on this kind of machine)",
        micros(per_call),
        1.0 / per_call.as_secs_f64()
    );
}

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig {
        timers: TimerConfig::default(),
        session: SessionTimerConfig {
            session_expires: 1800,
            min_se: 90,
        },
        advertised_host: "127.0.0.1".into(),
        advertised_port: 5060,
        user_agent: "callbackd-bench".into(),
        acl: Acl::parse(&["127.0.0.1/32"]).expect("valid CIDR"),
        acl_action: AclAction::Reject,
        seed: 1,
        registrar: false,
        max_forwards: 70,
    })
}

/// One call: INVITE → (100, 200) → ACK → BYE → 200, all outputs drained.
fn one_call(ep: &mut Endpoint, i: u32) {
    let now = Instant::now();
    let peer = Flow {
        remote: SocketAddr::from(([127, 0, 0, 1], 5061)),
        transport: FlowTransport::Udp,
    };
    let branch = format!("z9hG4bK-{i}");
    let call_id = format!("{i}@127.0.0.1");
    let invite = INVITE
        .replace("BRANCH", &branch)
        .replace("CALLID", &call_id)
        .replace("TAG", "t1");
    ep.handle_message(now, invite.as_bytes(), peer);
    let mut call = None;
    while let Some(ev) = ep.poll_event() {
        if let Event::IncomingCall { call: c, .. } = ev {
            call = Some(c);
        }
    }
    let call = call.expect("the INVITE makes a call");
    ep.answer(now, call, SDP_ANSWER).expect("answer");
    let mut to_tag = String::new();
    while let Some(t) = ep.poll_transmit() {
        if let Ok(Message::Response(r)) = message::parse(&t.data)
            && r.status == 200
            && let Some(tag) = r.headers.to.tag
        {
            to_tag = tag.to_string();
        }
    }
    let dialog = format!(
        "From: sipp <sip:sipp@127.0.0.1:5061>;tag=t1\r\nTo: service <sip:service@127.0.0.1:5060>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n"
    );
    let ack = format!(
        "ACK sip:callbackd@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}-ack\r\n\
{dialog}CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    ep.handle_message(now, ack.as_bytes(), peer);
    let bye = format!(
        "BYE sip:callbackd@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}-bye\r\n\
{dialog}CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    ep.handle_message(now, bye.as_bytes(), peer);
    while ep.poll_transmit().is_some() {}
    while ep.poll_event().is_some() {}
}

fn time_per(n: u32, mut f: impl FnMut(u32) -> u32) -> Duration {
    let t0 = Instant::now();
    let mut acc = 0u32;
    for i in 0..n {
        acc = acc.wrapping_add(f(i));
    }
    black_box(acc);
    t0.elapsed() / n
}

fn median(rounds: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..rounds).map(|_| f()).collect();
    v.sort();
    v[rounds / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
