//! Digest header parsing on arbitrary text (RFC 7616 / RFC 8760): every
//! challenge that parses prints and parses back to itself; credentials are
//! parsed and verified against a challenger, which must refuse or accept
//! without panicking.

use std::time::{Duration, Instant};

use callbackd::sip::digest::{Authorization, Challenge, Challenger, DigestRequest, Secret};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for challenge in Challenge::parse_all(text).into_iter().flatten() {
        let printed = challenge.to_header_value();
        let again = Challenge::parse(&printed)
            .unwrap_or_else(|e| panic!("our own challenge {printed:?} must parse: {e}"));
        assert_eq!(again.to_header_value(), printed);
    }
    let _ = Challenge::parse(text);
    let parsed = Authorization::parse(text);
    let now = Instant::now();
    let mut challenger = Challenger::new("callbackd.test", Duration::from_secs(300), [7; 32], now);
    let request = DigestRequest {
        method: "REGISTER",
        uri: "sip:callbackd.test",
        body: b"",
    };
    let lookup = |_: &str| Some(Secret::Password("s3cret".into()));
    let verdict = challenger.verify([text], &request, &lookup, now);
    // Credentials that do not even parse are never accepted.
    if parsed.is_err() {
        assert!(
            verdict.is_err(),
            "unparsable credentials accepted: {text:?}"
        );
    }
}
