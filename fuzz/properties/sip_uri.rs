//! SIP URIs and name-addrs on arbitrary text (RFC 3261 §19.1, §20.10,
//! §25.1): From/To/Contact values, comma lists and Request-URIs. What
//! parses must parse again the same way once written back.

use callbackd::sip::message::{NameAddr, SipUri, is_absolute_uri, split_list, uri_scheme};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for item in split_list(text).chain(std::iter::once(text)) {
        if let Ok(addr) = NameAddr::parse(item) {
            assert!(is_absolute_uri(&addr.uri), "{item:?} gave {:?}", addr.uri);
            // The URI we took, written back in brackets, is the same URI
            // with the same tag (quoted: a quoted tag may hold anything).
            let tag = addr
                .tag
                .as_deref()
                .map(|t| format!(";tag=\"{t}\""))
                .unwrap_or_default();
            let again = NameAddr::parse(&format!("<{}>{tag}", addr.uri))
                .unwrap_or_else(|e| panic!("{item:?}: <{}> does not parse again: {e}", addr.uri));
            assert_eq!((again.uri, again.tag), (addr.uri.clone(), addr.tag.clone()));
            if let Ok(uri) = SipUri::parse(&addr.uri) {
                assert!(!uri.host.is_empty());
            }
        }
    }
    if let Ok(uri) = SipUri::parse(text) {
        // SipUri::parse takes a header value's URI, white space around it
        // and all.
        assert!(uri_scheme(text.trim()).is_some(), "{text:?}");
        assert_eq!(SipUri::parse(text.trim()), Ok(uri));
    }
}
