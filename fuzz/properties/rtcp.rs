//! Compound RTCP parsing on arbitrary datagrams (RFC 3550 §6): every
//! packet and every report block or BYE source is walked; the iterator
//! must end, never panic, and never claim more blocks than bytes.

use callbackd::media::rtcp::{RtcpPacket, parse_compound};

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    let mut packets = 0usize;
    for packet in parse_compound(data) {
        packets += 1;
        assert!(packets <= data.len() / 4 + 1, "more packets than words");
        let Ok(packet) = packet else { break };
        match packet {
            RtcpPacket::SenderReport { blocks, .. } | RtcpPacket::ReceiverReport { blocks, .. } => {
                assert!(blocks.len() * 24 <= data.len());
                assert_eq!(blocks.iter().count(), blocks.len());
            }
            RtcpPacket::Bye { sources } => {
                assert!(sources.iter().count() * 4 <= data.len());
            }
            RtcpPacket::SourceDescription { .. } | RtcpPacket::Other { .. } => {}
        }
    }
}
