//! Fake-clock tests of the endpoint (see the module doc of `endpoint`).

use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::{Message, parse};

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
    }
}

fn udp_from(port: u16) -> Flow {
    Flow {
        remote: SocketAddr::from(([127, 0, 0, 1], port)),
        transport: FlowTransport::Udp,
    }
}

fn responses(ep: &mut Endpoint) -> Vec<(Destination, Response)> {
    std::iter::from_fn(|| ep.poll_transmit())
        .filter_map(|t| match parse(&t.data) {
            Ok(Message::Response(r)) => Some((t.destination, r)),
            _ => None,
        })
        .collect()
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
    let out = responses(&mut ep);
    assert_eq!(out.len(), 1);
    let (dest, resp) = &out[0];
    assert_eq!(
        *dest,
        Destination::Udp(SocketAddr::from(([127, 0, 0, 1], 5061)))
    );
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
