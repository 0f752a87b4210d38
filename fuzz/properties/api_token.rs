//! The bearer token format on arbitrary text: only `cbd_` followed by 43
//! base64url characters (32 bytes) has a hash; anything else is refused
//! before any store lookup, without panicking.

use callbackd::callback::store::accounts::{TOKEN_PREFIX, token_hash};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if token_hash(text).is_some() {
        let body = text
            .strip_prefix(TOKEN_PREFIX)
            .unwrap_or_else(|| panic!("accepted without the prefix: {text:?}"));
        assert_eq!(body.len(), 43, "{text:?}");
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text:?}"
        );
    }
}
