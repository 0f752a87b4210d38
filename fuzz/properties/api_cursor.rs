//! The `/v1/callbacks` page cursor on arbitrary text: whatever is accepted
//! names a row id whose own cursor is accepted with the same id, and the
//! cursor of any id parses back to it; nothing panics.

use callbackd::api::callbacks::{cursor_after, cursor_of};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = cursor_after(text) {
        assert_eq!(cursor_after(&cursor_of(id)), Some(id), "{text:?}");
    }
    // Any 8 bytes as an id round-trip.
    if let Some(bytes) = data.get(..8) {
        let id = i64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        assert_eq!(cursor_after(&cursor_of(id)), Some(id));
    }
}
