//! parse_info_digit on an arbitrary Content-Type and body; nothing may
//! panic, and a key it reads reads back the same from a canonical body.

use callbackd::media::digits::parse_info_digit;

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    // Content-Type up to the first NUL, the body after it.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let content_type = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    if let Ok(key) = parse_info_digit(&content_type, body) {
        let canonical = format!("Signal={}\r\nDuration=160\r\n", key.as_char());
        let again = parse_info_digit("application/dtmf-relay", canonical.as_bytes());
        assert_eq!(again, Ok(key));
    }
}
