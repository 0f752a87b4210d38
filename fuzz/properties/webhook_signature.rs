//! The webhook signature header (`t=<unix seconds>,v1=<hex>`) on arbitrary
//! text: `verify` never panics, accepts only a header whose HMAC matches,
//! and always accepts what `sign` wrote for the same secret and body.

use std::time::Duration;

use callbackd::callback::webhook::{sign, verify};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (secret, body) = data.split_at(split);
    let tolerance = Duration::from_secs(300);
    if let Ok(text) = std::str::from_utf8(data) {
        // Arbitrary text as the header, over an arbitrary body.
        let _ = verify(secret, text, body, 1_700_000_000, tolerance);
    }
    let t = 1_700_000_000 + i64::from(data.len() as u16);
    let header = sign(secret, t, body);
    assert_eq!(
        verify(secret, &header, body, t, tolerance),
        Ok(()),
        "{header}"
    );
    let mut other = body.to_vec();
    other.push(b'x');
    assert!(verify(secret, &header, &other, t, tolerance).is_err());
}
