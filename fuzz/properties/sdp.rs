//! Fuzz target for the SDP parser and the RFC 3264 answerer.
//!
//! Arbitrary bytes must never panic the parser. Whatever parses is answered
//! with a fixed local configuration; an answer we produce must itself parse
//! and keep one m= line per offered one (RFC 3264 §6). The same input is also
//! fed to `process_answer`, as if it were the reply to our offer.

use std::net::{IpAddr, Ipv4Addr};

use callbackd::media::g711::Law;
use callbackd::sip::sdp::{LocalMedia, SessionDescription, answer, process_answer};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    let Ok(offer) = SessionDescription::parse(data) else {
        return;
    };
    let local = LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 40000,
        codecs: vec![Law::Ulaw, Law::Alaw],
        ptime_default_ms: 20,
        session_id: 1,
        session_version: 1,
        user: "callbackd".into(),
        session_name: "callbackd".into(),
    };
    let _ = process_answer(&local, &offer);
    let Ok(answered) = answer(&offer, &local) else {
        return;
    };
    let reparsed =
        SessionDescription::parse(answered.sdp.as_bytes()).expect("our own answer must parse");
    assert_eq!(reparsed.media.len(), offer.media.len());
    assert!(answered.media.ptime_ms >= 10);
}
