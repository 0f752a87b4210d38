//! RtpPacket::parse on arbitrary datagrams; whatever parses is written back
//! with write_rtp and parsed again, and the fields must survive.

use callbackd::media::rtp::{RtpPacket, write_rtp};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    let Ok(packet) = RtpPacket::parse(data) else {
        return;
    };
    // Bounds the parser promised: header + CSRCs + extension + payload +
    // padding never exceed the datagram.
    let ext = packet.extension().map_or(0, |(_, e)| 4 + e.len());
    let used =
        12 + 4 * packet.csrc_count() + ext + packet.payload().len() + usize::from(packet.padding());
    assert_eq!(used, data.len());

    let mut buf = Vec::with_capacity(data.len());
    write_rtp(&mut buf, &packet.header(), packet.payload());
    let again = RtpPacket::parse(&buf).expect("our own packet parses");
    assert_eq!(again.header(), packet.header());
    assert_eq!(again.payload(), packet.payload());
    assert_eq!(again.csrc_count(), 0);
    assert_eq!(again.extension(), None);
    assert_eq!(again.padding(), 0);
}
