//! RTP (RFC 3550) on the packet path: a zero-copy parser, a writer into a
//! caller-owned buffer, and the send-side sequence/timestamp state.
//!
//! Parsing and building are delegated to `rtp-rs` 0.6 and wrapped here. What
//! this wrapper adds or works around:
//!
//! - **RTCP on a shared port.** `RtpReader` accepts an RTCP packet as RTP (an
//!   SR parses as a marked RTP packet with payload type 72). We look at the
//!   second octet first and return [`RtpError::Rtcp`] for 192..=223, the
//!   range RFC 5761 §4 reserves for RTCP, so the caller can route it.
//! - **Errors.** `RtpReaderError` implements neither `Display` nor
//!   `std::error::Error`; it is mapped onto [`RtpError`].
//! - **Sequence numbers.** `rtp_rs::Seq` has an `Ord` that is not transitive
//!   (its own documentation says so); we expose plain `u16` and leave
//!   wrap-aware comparison to callers that need it.
//! - **Re-validation.** `RtpReader` is neither `Clone` nor `Copy` and its
//!   accessors re-derive offsets on each call; [`RtpPacket`] extracts every
//!   field once at parse time and is a small `Copy` view.
//! - **Writing.** `RtpPacketBuilder::build()` allocates a fresh `Vec` per
//!   packet, and its `set_csrc()` panics on more than 15 CSRCs. We only use
//!   `build_into()` on a reused buffer and never set CSRCs: the send path
//!   writes the fixed header and the payload, nothing else.

// std
use std::fmt;
use std::time::Duration;

// external
use rtp_rs::{RtpPacketBuilder, RtpReader, RtpReaderError, Seq};
use thiserror::Error;

// crate
use crate::media::g711::Law;

/// The fixed RTP header length (RFC 3550 §5.1), without CSRCs or extension.
pub const RTP_HEADER_LEN: usize = 12;

/// A synchronization source identifier (RFC 3550 §5.1). Every value is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}", self.0)
    }
}

/// An RTP payload type, 0..=127 (RFC 3550 §5.1: a 7-bit field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// PCMU, G.711 µ-law (RFC 3551 §6).
    pub const PCMU: PayloadType = PayloadType(0);
    /// PCMA, G.711 A-law (RFC 3551 §6).
    pub const PCMA: PayloadType = PayloadType(8);
    /// Comfort noise (RFC 3389); never decoded as audio.
    pub const CN: PayloadType = PayloadType(13);

    /// Validates a payload type number.
    pub const fn new(value: u8) -> Result<Self, InvalidPayloadType> {
        if value <= 127 {
            Ok(PayloadType(value))
        } else {
            Err(InvalidPayloadType(value))
        }
    }

    /// The 7-bit value.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Whether this is in the dynamic range 96..=127 (RFC 3551 §3).
    #[cfg(test)]
    pub(crate) const fn is_dynamic(self) -> bool {
        self.0 >= 96
    }
}

impl TryFrom<u8> for PayloadType {
    type Error = InvalidPayloadType;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        PayloadType::new(value)
    }
}

impl From<Law> for PayloadType {
    fn from(law: Law) -> Self {
        PayloadType(law.payload_type())
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A payload type number above 127 (a local fault: configuration or SDP
/// handling produced a value that does not fit the 7-bit field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("RTP payload type {0} is out of range 0..=127")]
pub struct InvalidPayloadType(pub u8);

/// Why a datagram is not an RTP packet we can use. Every variant is a fault
/// of the peer (or of whoever sent the datagram), except [`RtpError::Rtcp`],
/// which is a routing hint rather than an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("datagram of {len} bytes is shorter than the 12-byte RTP header")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0} is not supported (only version 2)")]
    UnsupportedVersion(u8),
    /// An RTCP packet (RFC 5761 §4: second octet 192..=223); route it to RTCP.
    #[error("RTCP packet type {packet_type} on the RTP path")]
    Rtcp {
        /// The RTCP packet type (200 = SR, 201 = RR, 202 = SDES, 203 = BYE, 204 = APP, …).
        packet_type: u8,
    },
    /// The CSRC list or the header extension runs past the end of the datagram.
    #[error("RTP header needs {header_len} bytes, datagram has {len}")]
    HeaderTruncated {
        /// Bytes the header claims.
        header_len: usize,
        /// Datagram length.
        len: usize,
    },
    /// The padding count (last octet) is 0 or larger than what follows the header.
    #[error("RTP padding length {0} is invalid")]
    InvalidPadding(u8),
}

impl RtpError {
    /// Whether the datagram is RTCP and should go to the RTCP handler.
    #[cfg(test)]
    pub(crate) const fn is_rtcp(&self) -> bool {
        matches!(self, RtpError::Rtcp { .. })
    }
}

/// The fields of the fixed RTP header that the send path sets (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpHeader {
    /// Payload type.
    pub payload_type: PayloadType,
    /// Marker bit (RFC 3551 §4.1: first packet of a talkspurt; RFC 4733 §2.5.1.1: first packet of an event).
    pub marker: bool,
    /// Sequence number, wrapping.
    pub sequence: u16,
    /// Media timestamp in clock-rate units, wrapping.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: Ssrc,
}

/// A parsed RTP packet borrowing the datagram: header fields extracted once,
/// payload with padding removed. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    header: RtpHeader,
    csrc: &'a [u8],
    extension: Option<(u16, &'a [u8])>,
    padding: u8,
    payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses one datagram (RFC 3550 §5.1): version 2, CSRC list, header
    /// extension (§5.3.1) skipped, padding (§5.1, P bit) removed, all bounds
    /// checked. RTCP (RFC 5761 §4) is rejected with [`RtpError::Rtcp`].
    pub fn parse(datagram: &'a [u8]) -> Result<Self, RtpError> {
        // RFC 5761 §4: RTP and RTCP on one port are told apart by the second
        // octet; 192..=223 is RTCP (the RTP payload types 64..=95 it would
        // alias are never used for that reason). rtp-rs does not check this.
        if let [first, second, ..] = *datagram
            && first >> 6 == 2
            && (192..=223).contains(&second)
        {
            return Err(RtpError::Rtcp {
                packet_type: second,
            });
        }
        let reader = RtpReader::new(datagram).map_err(|e| map_reader_error(e, datagram.len()))?;
        let csrc_end = RTP_HEADER_LEN + 4 * usize::from(reader.csrc_count());
        // RtpReader::new checked that the payload offset (past CSRCs and
        // extension) is within the datagram; `get` keeps that local.
        let csrc = datagram
            .get(RTP_HEADER_LEN..csrc_end)
            .ok_or(RtpError::HeaderTruncated {
                header_len: csrc_end,
                len: datagram.len(),
            })?;
        let payload_type = PayloadType::new(reader.payload_type())
            .expect("rtp-rs masks the payload type to 7 bits");
        Ok(RtpPacket {
            header: RtpHeader {
                payload_type,
                marker: reader.mark(),
                sequence: u16::from(reader.sequence_number()),
                timestamp: reader.timestamp(),
                ssrc: Ssrc(reader.ssrc()),
            },
            csrc,
            extension: reader.extension(),
            padding: reader.padding().unwrap_or(0),
            payload: reader.payload(),
        })
    }

    /// The fixed header fields.
    pub fn header(&self) -> RtpHeader {
        self.header
    }

    /// Payload type.
    pub fn payload_type(&self) -> PayloadType {
        self.header.payload_type
    }

    /// Marker bit.
    pub fn marker(&self) -> bool {
        self.header.marker
    }

    /// Sequence number.
    pub fn sequence(&self) -> u16 {
        self.header.sequence
    }

    /// Media timestamp.
    pub fn timestamp(&self) -> u32 {
        self.header.timestamp
    }

    /// Synchronization source.
    pub fn ssrc(&self) -> Ssrc {
        self.header.ssrc
    }

    /// Contributing sources (RFC 3550 §5.1, CC field), in header order.
    #[cfg(test)]
    pub(crate) fn csrcs(&self) -> impl Iterator<Item = Ssrc> + 'a {
        self.csrc
            .chunks_exact(4)
            .map(|c| Ssrc(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
    }

    /// Number of contributing sources.
    pub fn csrc_count(&self) -> usize {
        self.csrc.len() / 4
    }

    /// The header extension (RFC 3550 §5.3.1): profile-defined 16 bits and data.
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        self.extension
    }

    /// Number of padding octets removed from the end (0 when the P bit is clear).
    pub fn padding(&self) -> u8 {
        self.padding
    }

    /// The payload, without header, extension and padding.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Writes a packet with `header` and `payload` into `buf`, replacing its
/// contents. No CSRCs, no extension, no padding. Does not allocate when `buf`
/// already has capacity for `12 + payload.len()` bytes.
pub fn write_rtp(buf: &mut Vec<u8>, header: &RtpHeader, payload: &[u8]) {
    let builder = RtpPacketBuilder::new()
        .payload_type(header.payload_type.get())
        .marked(header.marker)
        .sequence(Seq::from(header.sequence))
        .timestamp(header.timestamp)
        .ssrc(header.ssrc.0)
        .payload(payload);
    buf.clear();
    // `resize` within capacity does not allocate; build_into needs an
    // initialized slice of the exact length.
    buf.resize(builder.target_length(), 0);
    let written = builder
        .build_into(buf.as_mut_slice())
        .expect("buffer sized by target_length; PayloadType is 7-bit; no extension");
    buf.truncate(written);
}

/// Send-side state of one RTP stream (RFC 3550 §5.1): our SSRC, the next
/// sequence number and the next media timestamp. Both wrap.
///
/// RFC 3550 §5.1 asks for random initial values; the caller chooses them
/// ([`SendStream::new`]) or passes a seed ([`SendStream::from_seed`]), so this
/// type stays deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendStream {
    ssrc: Ssrc,
    payload_type: PayloadType,
    clock_rate: u32,
    next_sequence: u16,
    next_timestamp: u32,
}

impl SendStream {
    /// A stream with explicit initial values. `clock_rate` is in Hz (8000 for G.711).
    pub fn new(
        ssrc: Ssrc,
        payload_type: PayloadType,
        clock_rate: u32,
        initial_sequence: u16,
        initial_timestamp: u32,
    ) -> Self {
        SendStream {
            ssrc,
            payload_type,
            clock_rate,
            next_sequence: initial_sequence,
            next_timestamp: initial_timestamp,
        }
    }

    /// A stream whose SSRC, initial sequence number and initial timestamp are
    /// drawn from a PRNG seeded with `seed` (RFC 3550 §5.1 wants them random).
    pub fn from_seed(seed: u64, payload_type: PayloadType, clock_rate: u32) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let ssrc = Ssrc(rng.u32(..));
        let sequence = rng.u16(..);
        let timestamp = rng.u32(..);
        SendStream::new(ssrc, payload_type, clock_rate, sequence, timestamp)
    }

    /// The header for the next media packet, which carries `samples` samples
    /// (per channel); then sequence += 1 and timestamp += `samples`, wrapping.
    pub fn next_header(&mut self, samples: u32, marker: bool) -> RtpHeader {
        let timestamp = self.next_timestamp;
        self.next_header_with(self.payload_type, timestamp, marker, samples)
    }

    /// The header for a packet of another payload type on the same SSRC and
    /// sequence space, with a timestamp the caller fixes — RFC 4733 §2.3: all
    /// packets of a DTMF event carry the event's start timestamp. The media
    /// clock still advances by `samples` (the packet interval), so audio
    /// resumes at the right time after the event.
    pub fn next_header_with(
        &mut self,
        payload_type: PayloadType,
        timestamp: u32,
        marker: bool,
        samples: u32,
    ) -> RtpHeader {
        let header = RtpHeader {
            payload_type,
            marker,
            sequence: self.next_sequence,
            timestamp,
            ssrc: self.ssrc,
        };
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(samples);
        header
    }

    /// Lets `samples` of media time pass without sending (hold, silence
    /// suppression, a stalled sender): the next timestamp moves on, the
    /// sequence number does not (RFC 3550 §5.1: it counts packets sent).
    pub fn skip(&mut self, samples: u32) {
        self.next_timestamp = self.next_timestamp.wrapping_add(samples);
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The media payload type of this stream.
    pub fn payload_type(&self) -> PayloadType {
        self.payload_type
    }

    /// Clock rate in Hz.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    /// The timestamp the next media packet will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.next_timestamp
    }

    /// Samples in `ptime` at this clock rate (20 ms at 8 kHz = 160),
    /// saturating at `u32::MAX`.
    pub fn samples_in(&self, ptime: Duration) -> u32 {
        let samples = ptime.as_micros() * u128::from(self.clock_rate) / 1_000_000;
        u32::try_from(samples).unwrap_or(u32::MAX)
    }
}

fn map_reader_error(e: RtpReaderError, len: usize) -> RtpError {
    match e {
        RtpReaderError::BufferTooShort(len) => RtpError::TooShort { len },
        RtpReaderError::UnsupportedVersion(v) => RtpError::UnsupportedVersion(v),
        // rtp-rs reports `len - 1` as the buffer length when the P bit is set
        // and nothing follows the header; report the real length.
        RtpReaderError::HeadersTruncated { header_len, .. } => {
            RtpError::HeaderTruncated { header_len, len }
        }
        RtpReaderError::PaddingLengthInvalid(p) => RtpError::InvalidPadding(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCMA packet as sipp's g711a.pcap sends it: V=2, PT 8, seq 0x1234,
    /// ts 0x00000140, SSRC 0x0e05384e, 160 bytes of A-law silence.
    fn pcma_packet() -> Vec<u8> {
        let mut p = vec![
            0x80, 0x08, 0x12, 0x34, 0x00, 0x00, 0x01, 0x40, 0x0e, 0x05, 0x38, 0x4e,
        ];
        p.extend(std::iter::repeat_n(0xD5, 160));
        p
    }

    #[test]
    fn skip_moves_the_timestamp_but_not_the_sequence() {
        let mut s = SendStream::new(Ssrc(1), PayloadType::new(0).expect("valid"), 8000, 10, 1000);
        s.skip(480);
        let h = s.next_header(160, false);
        assert_eq!((h.sequence, h.timestamp), (10, 1480));
        assert_eq!((s.next_sequence(), s.next_timestamp()), (11, 1640));
    }

    #[test]
    fn parses_pcma_packet() {
        let bytes = pcma_packet();
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(p.payload_type(), PayloadType::PCMA);
        assert!(!p.marker());
        assert_eq!(p.sequence(), 0x1234);
        assert_eq!(p.timestamp(), 0x140);
        assert_eq!(p.ssrc(), Ssrc(0x0e05_384e));
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.extension(), None);
        assert_eq!(p.padding(), 0);
        assert_eq!(p.payload().len(), 160);
        assert!(p.payload().iter().all(|&b| b == 0xD5));
    }

    #[test]
    fn round_trips_through_writer() {
        let header = RtpHeader {
            payload_type: PayloadType::new(101).unwrap(),
            marker: true,
            sequence: 0xfffe,
            timestamp: 0xdead_beef,
            ssrc: Ssrc(0x0102_0304),
        };
        let payload = [1u8, 2, 3, 4, 5];
        let mut buf = Vec::new();
        write_rtp(&mut buf, &header, &payload);
        assert_eq!(buf.len(), RTP_HEADER_LEN + payload.len());
        assert_eq!(&buf[..2], &[0x80, 0x80 | 101]);
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.header(), header);
        assert_eq!(p.payload(), &payload);
    }

    #[test]
    fn writer_reuses_buffer_without_allocating() {
        let mut buf = Vec::with_capacity(RTP_HEADER_LEN + 160);
        let ptr = buf.as_ptr();
        let header = RtpHeader {
            payload_type: PayloadType::PCMU,
            marker: false,
            sequence: 1,
            timestamp: 2,
            ssrc: Ssrc(3),
        };
        for len in [160, 80, 0, 160] {
            write_rtp(&mut buf, &header, &vec![0x7f; len]);
            assert_eq!(buf.len(), RTP_HEADER_LEN + len);
            assert_eq!(buf.as_ptr(), ptr, "buffer was reallocated");
            assert_eq!(buf.capacity(), RTP_HEADER_LEN + 160);
            assert_eq!(RtpPacket::parse(&buf).unwrap().payload().len(), len);
        }
    }

    #[test]
    fn removes_padding() {
        // P bit set; payload 3 bytes, then 5 padding bytes, the last holding 5.
        let mut bytes = vec![0xA0, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([9, 8, 7, 0, 0, 0, 0, 5]);
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(p.padding(), 5);
        assert_eq!(p.payload(), &[9, 8, 7]);
    }

    #[test]
    fn accepts_padding_filling_whole_body() {
        let mut bytes = vec![0xA0, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([0, 0, 0, 4]);
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(p.payload(), &[] as &[u8]);
    }

    #[test]
    fn rejects_zero_padding_length() {
        let mut bytes = vec![0xA0, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([1, 2, 0]);
        assert_eq!(RtpPacket::parse(&bytes), Err(RtpError::InvalidPadding(0)));
    }

    #[test]
    fn rejects_padding_longer_than_body() {
        let mut bytes = vec![0xA0, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([1, 2, 4]);
        assert_eq!(RtpPacket::parse(&bytes), Err(RtpError::InvalidPadding(4)));
    }

    #[test]
    fn rejects_padding_bit_without_body() {
        let bytes = [0xA0, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        assert!(matches!(
            RtpPacket::parse(&bytes),
            Err(RtpError::HeaderTruncated { len: 12, .. })
        ));
    }

    #[test]
    fn reads_csrc_list() {
        // CC = 2.
        let mut bytes = vec![0x82, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([0xaa, 0xbb, 0xcc, 0xdd, 0x11, 0x22, 0x33, 0x44]);
        bytes.extend([0x55; 4]);
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(p.csrc_count(), 2);
        let csrcs: Vec<_> = p.csrcs().collect();
        assert_eq!(csrcs, [Ssrc(0xaabb_ccdd), Ssrc(0x1122_3344)]);
        assert_eq!(p.payload(), &[0x55; 4]);
    }

    #[test]
    fn skips_header_extension() {
        // X bit, CC = 1, extension profile 0xbede with 2 words.
        let mut bytes = vec![0x91, 0x08, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([0, 0, 0, 9]);
        bytes.extend([0xbe, 0xde, 0x00, 0x02]);
        bytes.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend([0xD5; 10]);
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [Ssrc(9)]);
        assert_eq!(
            p.extension(),
            Some((0xbede, &[1u8, 2, 3, 4, 5, 6, 7, 8][..]))
        );
        assert_eq!(p.payload(), &[0xD5; 10]);
    }

    #[test]
    fn rejects_extension_longer_than_datagram() {
        let mut bytes = vec![0x90, 0x08, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([0xbe, 0xde, 0x00, 0x03]);
        bytes.extend([0; 8]);
        assert_eq!(
            RtpPacket::parse(&bytes),
            Err(RtpError::HeaderTruncated {
                header_len: 28,
                len: 24
            })
        );
    }

    #[test]
    fn rejects_csrc_list_longer_than_datagram() {
        let mut bytes = vec![0x8f, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([0; 20]);
        assert_eq!(
            RtpPacket::parse(&bytes),
            Err(RtpError::HeaderTruncated {
                header_len: 12 + 60,
                len: 32
            })
        );
    }

    #[test]
    fn rejects_every_truncation_of_valid_packet() {
        // A packet using every optional part: CSRC, extension, padding.
        let mut bytes = vec![0xB1, 0x08, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([0, 0, 0, 9]);
        bytes.extend([0xbe, 0xde, 0x00, 0x01, 1, 2, 3, 4]);
        bytes.extend([0xD5; 6]);
        bytes.extend([0, 2]);
        assert_eq!(RtpPacket::parse(&bytes).unwrap().payload(), &[0xD5; 6]);
        // Cuts past the header end on payload bytes (0xD5, too large a
        // padding count) or on the 0 before the count; all must fail.
        for len in 0..bytes.len() {
            let r = RtpPacket::parse(&bytes[..len]);
            assert!(r.is_err(), "truncation to {len} bytes parsed: {r:?}");
        }
        // The same without padding: every cut inside the header is rejected.
        let plain = pcma_packet();
        for len in 0..RTP_HEADER_LEN {
            assert_eq!(
                RtpPacket::parse(&plain[..len]),
                Err(RtpError::TooShort { len })
            );
        }
    }

    #[test]
    fn rejects_version_1() {
        let mut bytes = pcma_packet();
        bytes[0] = 0x40;
        assert_eq!(
            RtpPacket::parse(&bytes),
            Err(RtpError::UnsupportedVersion(1))
        );
    }

    #[test]
    fn rejects_version_0_stun_like_datagram() {
        // A STUN binding request starts with 0b00.
        let bytes = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0];
        assert_eq!(
            RtpPacket::parse(&bytes),
            Err(RtpError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn rejects_rtcp_sender_and_receiver_reports() {
        // RR with no report blocks (8 bytes) and an SR header.
        let rr = [0x80, 201, 0x00, 0x01, 0x0e, 0x05, 0x38, 0x4e];
        let err = RtpPacket::parse(&rr).unwrap_err();
        assert_eq!(err, RtpError::Rtcp { packet_type: 201 });
        assert!(err.is_rtcp());
        let mut sr = vec![0x81, 200, 0x00, 0x0c];
        sr.extend([0; 48]);
        assert_eq!(
            RtpPacket::parse(&sr),
            Err(RtpError::Rtcp { packet_type: 200 })
        );
        for pt in 200..=204u8 {
            let p = [0x80, pt, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
            assert!(RtpPacket::parse(&p).unwrap_err().is_rtcp(), "type {pt}");
        }
    }

    #[test]
    fn marked_dynamic_payload_type_is_not_rtcp() {
        // Marker + PT 101 is byte 0xe5 = 229, outside 192..=223.
        let mut bytes = pcma_packet();
        bytes[1] = 0x80 | 101;
        let p = RtpPacket::parse(&bytes).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type().get(), 101);
    }

    #[test]
    fn payload_type_rejects_values_above_127() {
        assert_eq!(PayloadType::new(128), Err(InvalidPayloadType(128)));
        assert_eq!(PayloadType::try_from(255), Err(InvalidPayloadType(255)));
        assert_eq!(PayloadType::new(127).unwrap().get(), 127);
        assert!(PayloadType::new(96).unwrap().is_dynamic());
        assert!(!PayloadType::PCMA.is_dynamic());
        assert_eq!(PayloadType::from(Law::Ulaw), PayloadType::PCMU);
        assert_eq!(PayloadType::from(Law::Alaw), PayloadType::PCMA);
    }

    #[test]
    fn send_stream_advances_and_wraps() {
        let mut s = SendStream::new(Ssrc(7), PayloadType::PCMA, 8000, 0xfffe, 0xffff_ff00);
        let h1 = s.next_header(160, true);
        assert_eq!(
            (h1.sequence, h1.timestamp, h1.marker),
            (0xfffe, 0xffff_ff00, true)
        );
        assert_eq!(h1.ssrc, Ssrc(7));
        assert_eq!(h1.payload_type, PayloadType::PCMA);
        let h2 = s.next_header(160, false);
        assert_eq!((h2.sequence, h2.timestamp), (0xffff, 0xffff_ffa0));
        let h3 = s.next_header(160, false);
        assert_eq!((h3.sequence, h3.timestamp), (0x0000, 0x0000_0040));
        assert_eq!(s.next_sequence(), 1);
        assert_eq!(s.next_timestamp(), 0xe0);
    }

    #[test]
    fn send_stream_event_headers_share_sequence_space() {
        let te = PayloadType::new(101).unwrap();
        let mut s = SendStream::new(Ssrc(7), PayloadType::PCMU, 8000, 10, 1000);
        s.next_header(160, false);
        let start = s.next_timestamp();
        let e1 = s.next_header_with(te, start, true, 160);
        let e2 = s.next_header_with(te, start, false, 160);
        assert_eq!((e1.sequence, e2.sequence), (11, 12));
        assert_eq!((e1.timestamp, e2.timestamp), (start, start));
        assert_eq!(e1.payload_type, te);
        // Audio resumes at the media clock, which kept running.
        let a = s.next_header(160, true);
        assert_eq!((a.sequence, a.timestamp), (13, start + 320));
        assert_eq!(a.payload_type, PayloadType::PCMU);
    }

    #[test]
    fn send_stream_from_seed_is_deterministic_and_seed_dependent() {
        let a = SendStream::from_seed(42, PayloadType::PCMA, 8000);
        let b = SendStream::from_seed(42, PayloadType::PCMA, 8000);
        let c = SendStream::from_seed(43, PayloadType::PCMA, 8000);
        assert_eq!(a, b);
        assert_ne!(
            (a.ssrc(), a.next_sequence(), a.next_timestamp()),
            (c.ssrc(), c.next_sequence(), c.next_timestamp())
        );
    }

    #[test]
    fn samples_in_ptime() {
        let s = SendStream::new(Ssrc(1), PayloadType::PCMU, 8000, 0, 0);
        assert_eq!(s.samples_in(Duration::from_millis(20)), 160);
        assert_eq!(s.samples_in(Duration::from_millis(30)), 240);
    }
}
