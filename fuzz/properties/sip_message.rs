//! SIP message parsing on arbitrary bytes: whatever parses as a request is
//! answered (the response we build must parse again and keep the request's
//! Call-ID, CSeq and top Via branch); the same bytes are also fed to the TCP
//! stream framer in two pieces, which must never panic or over-buffer.

use callbackd::sip::framing::StreamFramer;
use callbackd::sip::message::{Message, parse};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    if let Ok(Message::Request(req)) = parse(data) {
        let bytes = req.response(200, Some("fuzz")).finish(None, b"");
        match parse(&bytes) {
            Ok(Message::Response(resp)) => {
                assert_eq!(resp.headers.call_id, req.headers.call_id);
                assert_eq!(resp.headers.cseq, req.headers.cseq);
                assert_eq!(resp.headers.top_via().branch, req.headers.top_via().branch);
            }
            other => panic!("our response to a parsed request must parse: {other:?}"),
        }
    }

    let mut framer = StreamFramer::new(4096);
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    framer.push(&data[..cut]);
    while let Some(Ok(_)) = framer.next() {}
    framer.push(&data[cut..]);
    while let Some(frame) = framer.next() {
        if frame.is_err() {
            break;
        }
    }
    assert!(
        framer.buffered() <= 4096 + 8192,
        "framer buffered {}",
        framer.buffered()
    );
}
