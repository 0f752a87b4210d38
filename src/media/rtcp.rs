//! RTCP (RFC 3550 §6), minimal, terminated per leg: what the bridge needs to
//! be a well-behaved RTP end point on each leg without forwarding one leg's
//! reports to the other.
//!
//! - [`parse_compound`] walks a compound packet (§6.1) and yields SR, RR,
//!   SDES, BYE (and any other type as [`RtcpPacket::Other`]), bounds-checked,
//!   stopping at the first malformed packet. It never panics.
//! - [`ReceiveStats`] keeps what a receiver reports about one source: the
//!   extended highest sequence number and loss (Appendix A.1, A.3), the
//!   interarrival jitter (§6.4.1, Appendix A.8), and LSR/DLSR from the last
//!   SR heard (§6.4.1).
//! - [`write_report`] writes our compound report — an SR when we sent since
//!   the last report, an RR otherwise, with at most one report block, then
//!   SDES CNAME (§6.1: every compound packet carries a CNAME) — into a reused
//!   buffer.
//! - [`report_interval`] is the fixed 5 s interval of §6.2's minimum,
//!   randomized over [0.5, 1.5] × 5 s (§6.3.1) so streams started together do
//!   not report together.
//!
//! ```text
//!  SR (PT 200), RFC 3550 §6.4.1          RR (PT 201): header + SSRC + blocks
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |V=2|P|    RC   |   PT=SR=200   |             length            |
//!  |                         SSRC of sender                        |
//!  |              NTP timestamp, most significant word             |
//!  |             NTP timestamp, least significant word             |
//!  |                         RTP timestamp                         |
//!  |                     sender's packet count                     |
//!  |                      sender's octet count                     |
//!  +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//!  |                 SSRC_1 (SSRC of first source)                 |
//!  | fraction lost |       cumulative number of packets lost       |
//!  |           extended highest sequence number received           |
//!  |                      interarrival jitter                      |
//!  |                         last SR (LSR)                         |
//!  |                   delay since last SR (DLSR)                  |
//!  +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! ```

// std
use std::time::{Duration, Instant};

// external
use thiserror::Error;

// crate
use crate::media::rtp::{RtpHeader, Ssrc};

/// Sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Source description (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// Goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;

/// The report interval before randomization: RFC 3550 §6.2's recommended
/// minimum, which is what a two-party call's bandwidth share comes to.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Length of one report block (RFC 3550 §6.4.1).
pub const REPORT_BLOCK_LEN: usize = 24;

/// Why a datagram on the RTCP port is not (all) usable RTCP. All are faults
/// of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    /// Fewer than the 4 octets of a common header (or the 8 of SR/RR) remain.
    #[error("RTCP packet truncated: {len} octets left, {needed} needed")]
    Truncated {
        /// Octets left in the datagram.
        len: usize,
        /// Octets the header or its length field asks for.
        needed: usize,
    },
    /// The version field is not 2 (RFC 3550 §6.4.1).
    #[error("RTCP version {0} is not supported (only version 2)")]
    UnsupportedVersion(u8),
    /// The report count claims more blocks than the packet length holds.
    #[error("RTCP report count {count} does not fit in {len} octets")]
    BadReportCount {
        /// The RC field.
        count: u8,
        /// The packet's length in octets.
        len: usize,
    },
}

/// The sender-information part of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wall-clock time of the report, 64-bit NTP format (§4).
    pub ntp: u64,
    /// The same instant in the sender's RTP timestamp units.
    pub rtp_timestamp: u32,
    /// Packets sent since the stream started (wraps).
    pub packets: u32,
    /// Payload octets sent since the stream started (wraps).
    pub octets: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: Ssrc,
    /// Packets lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Packets lost since reception started: 24-bit signed (duplicates can
    /// make it negative), clamped to −0x800000..=0x7fffff.
    pub cumulative_lost: i32,
    /// Cycles in the upper 16 bits, highest sequence number in the lower.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units (§6.4.1, A.8).
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received, 0 if none.
    pub lsr: u32,
    /// Delay since that SR, in units of 1/65536 s, 0 if none.
    pub dlsr: u32,
}

/// One packet of a compound RTCP datagram, borrowing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Sender report.
    SenderReport {
        /// The sender's SSRC.
        ssrc: Ssrc,
        /// Its sender information.
        info: SenderInfo,
        /// Its reception report blocks.
        blocks: ReportBlocks<'a>,
    },
    /// Receiver report.
    ReceiverReport {
        /// The reporter's SSRC.
        ssrc: Ssrc,
        /// Its reception report blocks.
        blocks: ReportBlocks<'a>,
    },
    /// Source description; the chunks are not interpreted.
    SourceDescription {
        /// Number of chunks (SC field).
        count: u8,
    },
    /// Goodbye from these sources.
    Bye {
        /// The SSRC/CSRC list (4 octets each).
        sources: ReportSources<'a>,
    },
    /// Any other packet type (APP, RTPFB, PSFB, XR, …): skipped.
    Other {
        /// The packet type.
        packet_type: u8,
    },
}

/// The report blocks of an SR or RR, decoded on iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> ReportBlocks<'a> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.0.len() / REPORT_BLOCK_LEN
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.len() < REPORT_BLOCK_LEN
    }

    /// The blocks in order.
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.0.chunks_exact(REPORT_BLOCK_LEN).map(|b| {
            let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
            // Sign-extend the 24-bit field.
            let cumulative_lost = ((lost << 8) as i32) >> 8;
            ReportBlock {
                ssrc: Ssrc(be32(&b[0..4])),
                fraction_lost: b[4],
                cumulative_lost,
                highest_seq: be32(&b[8..12]),
                jitter: be32(&b[12..16]),
                lsr: be32(&b[16..20]),
                dlsr: be32(&b[20..24]),
            }
        })
    }
}

/// The SSRC list of a BYE, decoded on iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportSources<'a>(&'a [u8]);

impl<'a> ReportSources<'a> {
    /// The sources in order.
    pub fn iter(&self) -> impl Iterator<Item = Ssrc> + 'a {
        self.0.chunks_exact(4).map(|c| Ssrc(be32(c)))
    }
}

/// Walks a compound RTCP datagram (RFC 3550 §6.1). Each item is one packet;
/// after an error the iterator ends. The §6.1 rule that a compound packet
/// starts with SR or RR is not enforced: a lone BYE or APP is read too.
pub fn parse_compound(datagram: &[u8]) -> Compound<'_> {
    Compound { rest: datagram }
}

/// Iterator returned by [`parse_compound`].
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = parse_one(self.rest);
        match result {
            Ok((packet, len)) => {
                self.rest = self.rest.get(len..).unwrap_or(&[]);
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Returns the NTP timestamp (RFC 3550 §4: seconds since 1900 in the upper
/// 32 bits, fraction in the lower) for a time given as the duration since
/// the Unix epoch.
pub fn ntp_timestamp(since_unix_epoch: Duration) -> u64 {
    // 70 years, 17 of them leap: 1900-01-01 to 1970-01-01.
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let secs = since_unix_epoch.as_secs().wrapping_add(UNIX_TO_NTP);
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The next report interval: [`REPORT_INTERVAL`] × (0.5 + `random`), with
/// `random` in [0, 1) (RFC 3550 §6.3.1's randomization; values outside are
/// clamped).
pub fn report_interval(random: f64) -> Duration {
    REPORT_INTERVAL.mul_f64(0.5 + random.clamp(0.0, 1.0))
}

/// Writes our compound report into `buf` (replacing its contents): an SR
/// when `sender` is given, else an RR, with `block` as its only report block,
/// then an SDES with our CNAME (RFC 3550 §6.1, §6.5.1; truncated to 255
/// octets). Does not allocate when `buf` has room for 28 + 24 + 12 +
/// `cname.len()` octets.
pub fn write_report(
    buf: &mut Vec<u8>,
    ssrc: Ssrc,
    sender: Option<&SenderInfo>,
    block: Option<&ReportBlock>,
    cname: &[u8],
) {
    buf.clear();
    let rc = u8::from(block.is_some());
    let words = match sender {
        Some(_) => 6,
        None => 1,
    } + 6 * usize::from(rc);
    let pt = if sender.is_some() { PT_SR } else { PT_RR };
    buf.extend_from_slice(&[0x80 | rc, pt]);
    buf.extend_from_slice(&(words as u16).to_be_bytes());
    buf.extend_from_slice(&ssrc.0.to_be_bytes());
    if let Some(info) = sender {
        buf.extend_from_slice(&info.ntp.to_be_bytes());
        buf.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
        buf.extend_from_slice(&info.packets.to_be_bytes());
        buf.extend_from_slice(&info.octets.to_be_bytes());
    }
    if let Some(b) = block {
        buf.extend_from_slice(&b.ssrc.0.to_be_bytes());
        let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32;
        buf.push(b.fraction_lost);
        buf.extend_from_slice(&lost.to_be_bytes()[1..]);
        buf.extend_from_slice(&b.highest_seq.to_be_bytes());
        buf.extend_from_slice(&b.jitter.to_be_bytes());
        buf.extend_from_slice(&b.lsr.to_be_bytes());
        buf.extend_from_slice(&b.dlsr.to_be_bytes());
    }
    // RFC 3550 §6.5: one chunk: SSRC, CNAME item, END, padded to 32 bits.
    let cname = &cname[..cname.len().min(255)];
    let start = buf.len();
    buf.extend_from_slice(&[0x81, PT_SDES, 0, 0]);
    buf.extend_from_slice(&ssrc.0.to_be_bytes());
    buf.extend_from_slice(&[1, cname.len() as u8]);
    buf.extend_from_slice(cname);
    // At least one null octet ends the item list, then pad to a word.
    buf.push(0);
    while !(buf.len() - start).is_multiple_of(4) {
        buf.push(0);
    }
    let sdes_words = ((buf.len() - start) / 4 - 1) as u16;
    buf[start + 2..start + 4].copy_from_slice(&sdes_words.to_be_bytes());
}

/// Appends a BYE for `ssrc` (RFC 3550 §6.6, no reason) to the compound
/// packet in `buf`, which [`write_report`] started: a BYE is sent in a
/// compound packet after the report and the CNAME (§6.1).
pub fn append_bye(buf: &mut Vec<u8>, ssrc: Ssrc) {
    buf.extend_from_slice(&[0x81, PT_BYE, 0, 1]);
    buf.extend_from_slice(&ssrc.0.to_be_bytes());
}

/// What a receiver keeps about the source it hears on one leg (RFC 3550
/// Appendix A.1, A.3, A.8). A new SSRC starts the statistics afresh: the
/// report block is about the current source only.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    source: Option<Source>,
    /// Origin of the arrival clock used for jitter.
    epoch: Option<Instant>,
    /// Last SR from the peer: middle 32 bits of its NTP time, when heard.
    last_sr: Option<(u32, Instant)>,
}

impl ReceiveStats {
    /// Accounts one received RTP packet. `timing` says whether the packet
    /// takes part in the jitter estimate: audio does; RFC 4733 events do
    /// not (all packets of an event carry its start timestamp, §2.3).
    /// `clock_rate` is the payload's RTP clock in Hz.
    pub fn on_rtp(&mut self, now: Instant, header: &RtpHeader, timing: bool, clock_rate: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let source = match &mut self.source {
            Some(s) if s.ssrc == header.ssrc => s,
            _ => self
                .source
                .insert(Source::new(header.ssrc, header.sequence)),
        };
        if !source.update_seq(header.sequence) {
            return;
        }
        if !timing {
            return;
        }
        // RFC 3550 A.8: transit = arrival − timestamp, both in RTP units;
        // J += (|D| − J) / 16, kept as J·16 to stay in integers.
        let arrival = now.saturating_duration_since(epoch).as_micros() as u64
            * u64::from(clock_rate)
            / 1_000_000;
        let transit = (arrival as u32).wrapping_sub(header.timestamp) as i32;
        if let Some(last) = source.transit {
            let d = transit.wrapping_sub(last).unsigned_abs();
            source.jitter_q4 = source
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((source.jitter_q4 + 8) >> 4);
        }
        source.transit = Some(transit);
    }

    /// Remembers an SR from the peer for LSR/DLSR (RFC 3550 §6.4.1).
    pub fn on_sender_report(&mut self, now: Instant, info: &SenderInfo) {
        self.last_sr = Some(((info.ntp >> 16) as u32, now));
    }

    /// The report block about the current source, if any was heard, and
    /// starts the next reporting interval (fraction lost is per interval).
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let source = self.source.as_mut()?;
        // RFC 3550 A.3.
        let extended_max = source.cycles.wrapping_add(u32::from(source.max_seq));
        let expected = extended_max.wrapping_sub(source.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(source.received);
        let expected_interval = expected.wrapping_sub(source.expected_prior);
        source.expected_prior = expected;
        let received_interval = source.received.wrapping_sub(source.received_prior);
        source.received_prior = source.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let delay = now.saturating_duration_since(at);
                let units = delay.as_secs_f64() * 65536.0;
                (lsr, units.min(f64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: source.ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: extended_max,
            jitter: source.jitter_q4 >> 4,
            lsr,
            dlsr,
        })
    }

    /// The source currently heard.
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.source.as_ref().map(|s| s.ssrc)
    }

    /// Packets counted from the current source (duplicates included, as in
    /// A.1; packets rejected as a sequence jump not).
    pub fn received(&self) -> u32 {
        self.source.as_ref().map_or(0, |s| s.received)
    }
}

/// RFC 3550 A.1: a jump larger than this is not reordering or loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a packet this far behind is a late duplicate, not a restart.
const MAX_MISORDER: u16 = 100;

#[derive(Debug, Clone)]
struct Source {
    ssrc: Ssrc,
    max_seq: u16,
    /// Shifted count of sequence number cycles (multiples of 65536).
    cycles: u32,
    base_seq: u32,
    /// The sequence number after a large jump; a second packet continuing
    /// it means the source restarted (A.1).
    bad_seq: Option<u16>,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    transit: Option<i32>,
    jitter_q4: u32,
}

impl Source {
    fn new(ssrc: Ssrc, seq: u16) -> Source {
        let mut s = Source {
            ssrc,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
        };
        // The first packet is then counted by `update_seq` (udelta 0).
        s.init_seq(seq);
        s
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = None;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// RFC 3550 A.1 `update_seq` without probation (signalling told us the
    /// stream exists). Returns false for a packet not counted.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                // Sequence number wrapped: one more cycle.
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A very large jump: a restarted source if the next packet
            // continues it, else a stray packet.
            if Some(seq) == self.bad_seq {
                self.init_seq(seq);
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return false;
            }
        }
        // else: a duplicate or reordered packet.
        self.received = self.received.wrapping_add(1);
        true
    }
}

/// Parses the packet at the start of `buf`; returns it and its length.
fn parse_one(buf: &[u8]) -> Result<(RtcpPacket<'_>, usize), RtcpError> {
    let [first, packet_type, l0, l1, ..] = *buf else {
        return Err(RtcpError::Truncated {
            len: buf.len(),
            needed: 4,
        });
    };
    let version = first >> 6;
    if version != 2 {
        return Err(RtcpError::UnsupportedVersion(version));
    }
    // RFC 3550 §6.4.1: length in 32-bit words minus one, header included.
    let len = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
    let packet = buf.get(..len).ok_or(RtcpError::Truncated {
        len: buf.len(),
        needed: len,
    })?;
    let count = first & 0x1f;
    // Padding (P bit) only matters for the last packet; report blocks are
    // bounded by the RC field, so it needs no handling here.
    let rtcp = match packet_type {
        PT_SR | PT_RR => {
            let fixed = if packet_type == PT_SR { 28 } else { 8 };
            let blocks_end = fixed + usize::from(count) * REPORT_BLOCK_LEN;
            if packet.len() < fixed {
                return Err(RtcpError::Truncated {
                    len: packet.len(),
                    needed: fixed,
                });
            }
            let blocks = packet
                .get(fixed..blocks_end)
                .ok_or(RtcpError::BadReportCount {
                    count,
                    len: packet.len(),
                })?;
            let ssrc = Ssrc(be32(&packet[4..8]));
            if packet_type == PT_SR {
                RtcpPacket::SenderReport {
                    ssrc,
                    info: SenderInfo {
                        ntp: (u64::from(be32(&packet[8..12])) << 32)
                            | u64::from(be32(&packet[12..16])),
                        rtp_timestamp: be32(&packet[16..20]),
                        packets: be32(&packet[20..24]),
                        octets: be32(&packet[24..28]),
                    },
                    blocks: ReportBlocks(blocks),
                }
            } else {
                RtcpPacket::ReceiverReport {
                    ssrc,
                    blocks: ReportBlocks(blocks),
                }
            }
        }
        PT_SDES => RtcpPacket::SourceDescription { count },
        PT_BYE => {
            let end = 4 + 4 * usize::from(count);
            let sources = packet.get(4..end).ok_or(RtcpError::BadReportCount {
                count,
                len: packet.len(),
            })?;
            RtcpPacket::Bye {
                sources: ReportSources(sources),
            }
        }
        other => RtcpPacket::Other { packet_type: other },
    };
    Ok((rtcp, len))
}

/// A big-endian u32 from exactly 4 octets (callers slice 4).
fn be32(b: &[u8]) -> u32 {
    match *b {
        [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::PayloadType;

    fn header(ssrc: u32, sequence: u16, timestamp: u32) -> RtpHeader {
        RtpHeader {
            payload_type: PayloadType::PCMU,
            marker: false,
            sequence,
            timestamp,
            ssrc: Ssrc(ssrc),
        }
    }

    #[test]
    fn sender_report_round_trips() {
        let info = SenderInfo {
            ntp: 0x0123_4567_89ab_cdef,
            rtp_timestamp: 160_000,
            packets: 1000,
            octets: 160_000,
        };
        let block = ReportBlock {
            ssrc: Ssrc(0xdead_beef),
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 0x0001_0010,
            jitter: 42,
            lsr: 0x89ab_cdef,
            dlsr: 65536,
        };
        let mut buf = Vec::new();
        write_report(&mut buf, Ssrc(7), Some(&info), Some(&block), b"callbackd");
        assert_eq!(buf.len() % 4, 0);
        let packets: Vec<_> = parse_compound(&buf).collect();
        assert_eq!(packets.len(), 2);
        let Ok(RtcpPacket::SenderReport {
            ssrc,
            info: got,
            blocks,
        }) = packets[0]
        else {
            panic!("not an SR: {:?}", packets[0]);
        };
        assert_eq!(ssrc, Ssrc(7));
        assert_eq!(got, info);
        assert_eq!(blocks.iter().collect::<Vec<_>>(), [block]);
        assert_eq!(packets[1], Ok(RtcpPacket::SourceDescription { count: 1 }));
        // SDES: header, SSRC, type 1, length 9, "callbackd", END, padding.
        let sdes = &buf[28 + 24..];
        assert_eq!(&sdes[8..10], &[1, 9]);
        assert_eq!(&sdes[10..19], b"callbackd");
        assert_eq!(sdes[19], 0);
    }

    #[test]
    fn receiver_report_without_block() {
        let mut buf = Vec::with_capacity(128);
        write_report(&mut buf, Ssrc(9), None, None, b"x");
        assert_eq!(&buf[..8], &[0x80, PT_RR, 0, 1, 0, 0, 0, 9]);
        let first = parse_compound(&buf).next().unwrap().unwrap();
        let RtcpPacket::ReceiverReport { ssrc, blocks } = first else {
            panic!("not an RR: {first:?}");
        };
        assert_eq!(ssrc, Ssrc(9));
        assert!(blocks.is_empty());
    }

    #[test]
    fn reads_bye_and_skips_unknown_types() {
        // APP (204), 3 words, then BYE with two sources.
        let mut buf = vec![0x80, 204, 0, 2, 0, 0, 0, 1, b'n', b'a', b'm', b'e'];
        buf.extend([0x82, PT_BYE, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        let packets: Vec<_> = parse_compound(&buf).map(Result::unwrap).collect();
        assert_eq!(packets[0], RtcpPacket::Other { packet_type: 204 });
        let RtcpPacket::Bye { sources } = packets[1] else {
            panic!("not a BYE");
        };
        assert_eq!(sources.iter().collect::<Vec<_>>(), [Ssrc(1), Ssrc(2)]);
    }

    #[test]
    fn our_bye_follows_report_and_cname_and_parses() {
        let mut buf = Vec::new();
        write_report(&mut buf, Ssrc(0x1234_5678), None, None, b"0123456789abcdef");
        append_bye(&mut buf, Ssrc(0x1234_5678));
        let packets: Vec<_> = parse_compound(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(packets.len(), 3);
        assert!(matches!(
            packets[0],
            RtcpPacket::ReceiverReport {
                ssrc: Ssrc(0x1234_5678),
                ..
            }
        ));
        assert!(matches!(
            packets[1],
            RtcpPacket::SourceDescription { count: 1 }
        ));
        let RtcpPacket::Bye { sources } = packets[2] else {
            panic!("third packet is {:?}", packets[2]);
        };
        assert_eq!(sources.iter().collect::<Vec<_>>(), [Ssrc(0x1234_5678)]);
    }

    #[test]
    fn rejects_length_past_datagram() {
        let buf = [0x80, PT_RR, 0, 7, 0, 0, 0, 1];
        assert_eq!(
            parse_compound(&buf).next(),
            Some(Err(RtcpError::Truncated { len: 8, needed: 32 }))
        );
    }

    #[test]
    fn rejects_report_count_past_length() {
        // RR claiming 2 blocks in 2 words.
        let buf = [0x82, PT_RR, 0, 1, 0, 0, 0, 1];
        assert_eq!(
            parse_compound(&buf).next(),
            Some(Err(RtcpError::BadReportCount { count: 2, len: 8 }))
        );
    }

    #[test]
    fn rejects_version_1_and_stops() {
        let mut buf = vec![0x40, PT_RR, 0, 1, 0, 0, 0, 1];
        buf.extend([0x80, PT_RR, 0, 1, 0, 0, 0, 1]);
        let items: Vec<_> = parse_compound(&buf).collect();
        assert_eq!(items, [Err(RtcpError::UnsupportedVersion(1))]);
    }

    #[test]
    fn never_panics_on_any_truncation_or_byte_flip() {
        let mut buf = Vec::new();
        let block = ReportBlock {
            ssrc: Ssrc(1),
            fraction_lost: 0,
            cumulative_lost: 0,
            highest_seq: 0,
            jitter: 0,
            lsr: 0,
            dlsr: 0,
        };
        let info = SenderInfo {
            ntp: 1,
            rtp_timestamp: 2,
            packets: 3,
            octets: 4,
        };
        write_report(&mut buf, Ssrc(2), Some(&info), Some(&block), b"cname");
        for len in 0..buf.len() {
            let n = parse_compound(&buf[..len]).count();
            assert!(n <= 2);
        }
        for i in 0..buf.len() {
            for v in [0x00, 0xff, 0x9f, 0x81] {
                let mut b = buf.clone();
                b[i] = v;
                let _ = parse_compound(&b).count();
            }
        }
        // A zero-length word count still advances (4 octets per packet).
        let zeros = [0x80, 0, 0, 0, 0x80, 0, 0, 0];
        assert_eq!(parse_compound(&zeros).count(), 2);
    }

    #[test]
    fn ntp_timestamp_of_unix_epoch_and_half_second() {
        assert_eq!(ntp_timestamp(Duration::ZERO), 2_208_988_800u64 << 32);
        let t = ntp_timestamp(Duration::from_millis(1500));
        assert_eq!(t >> 32, 2_208_988_801);
        assert_eq!(t & 0xffff_ffff, 0x8000_0000);
    }

    #[test]
    fn report_interval_is_randomized_around_five_seconds() {
        assert_eq!(report_interval(0.0), Duration::from_millis(2500));
        assert_eq!(report_interval(0.5), Duration::from_secs(5));
        assert_eq!(report_interval(2.0), Duration::from_millis(7500));
    }

    #[test]
    fn counts_loss_and_fraction_per_interval() {
        let t0 = Instant::now();
        let mut rx = ReceiveStats::default();
        // 10 packets, 3 missing (seq 3, 4, 7), across a sequence wrap.
        let base = 0xfffc_u16;
        for i in [0u16, 1, 2, 5, 6, 8, 9] {
            let seq = base.wrapping_add(i);
            let h = header(5, seq, u32::from(i) * 160);
            rx.on_rtp(
                t0 + Duration::from_millis(20 * u64::from(i)),
                &h,
                true,
                8000,
            );
        }
        let b = rx.report_block(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(b.ssrc, Ssrc(5));
        assert_eq!(b.cumulative_lost, 3);
        assert_eq!(b.fraction_lost, (3 * 256 / 10) as u8);
        assert_eq!(b.highest_seq, 0x0001_0005);
        // Perfectly paced packets: no jitter.
        assert_eq!(b.jitter, 0);
        // Next interval: 2 more, none lost.
        for i in [10u16, 11] {
            let h = header(5, base.wrapping_add(i), u32::from(i) * 160);
            rx.on_rtp(
                t0 + Duration::from_millis(20 * u64::from(i)),
                &h,
                true,
                8000,
            );
        }
        let b = rx.report_block(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 3));
        assert_eq!(b.lsr, 0);
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        let t0 = Instant::now();
        let mut rx = ReceiveStats::default();
        // Packet 1 arrives 10 ms late: |D| = 80 units twice (late, then on
        // time again): J = 80/16 = 5, then 5 + (80 − 5)/16 ≈ 9.7.
        let arrivals = [0u64, 30, 40];
        for (i, ms) in arrivals.iter().enumerate() {
            let h = header(1, i as u16, i as u32 * 160);
            rx.on_rtp(t0 + Duration::from_millis(*ms), &h, true, 8000);
        }
        let j = rx.report_block(t0).unwrap().jitter;
        assert!((9..=10).contains(&j), "jitter {j}");
    }

    #[test]
    fn events_do_not_count_for_jitter() {
        let t0 = Instant::now();
        let mut rx = ReceiveStats::default();
        for i in 0..5u16 {
            // All packets of an event carry the start timestamp.
            let h = header(1, i, 8000);
            rx.on_rtp(
                t0 + Duration::from_millis(50 * u64::from(i)),
                &h,
                false,
                8000,
            );
        }
        let b = rx.report_block(t0).unwrap();
        assert_eq!((b.jitter, b.cumulative_lost, rx.received()), (0, 0, 5));
    }

    #[test]
    fn new_ssrc_restarts_statistics() {
        let t0 = Instant::now();
        let mut rx = ReceiveStats::default();
        rx.on_rtp(t0, &header(1, 100, 0), true, 8000);
        rx.on_rtp(t0, &header(1, 110, 160), true, 8000);
        rx.on_rtp(t0, &header(2, 7, 0), true, 8000);
        let b = rx.report_block(t0).unwrap();
        assert_eq!((b.ssrc, b.cumulative_lost, b.highest_seq), (Ssrc(2), 0, 7));
    }

    #[test]
    fn a_stray_sequence_jump_is_not_counted_but_a_restart_is() {
        let t0 = Instant::now();
        let mut rx = ReceiveStats::default();
        for s in 0..5u16 {
            rx.on_rtp(t0, &header(1, s, 0), false, 8000);
        }
        rx.on_rtp(t0, &header(1, 30_000, 0), false, 8000);
        assert_eq!(rx.received(), 5);
        rx.on_rtp(t0, &header(1, 30_001, 0), false, 8000);
        let b = rx.report_block(t0).unwrap();
        assert_eq!((b.highest_seq, b.cumulative_lost), (30_001, 0));
    }

    #[test]
    fn lsr_and_dlsr_from_last_sender_report() {
        let t0 = Instant::now();
        let mut rx = ReceiveStats::default();
        rx.on_rtp(t0, &header(1, 1, 0), true, 8000);
        let info = SenderInfo {
            ntp: 0x1111_2222_3333_4444,
            rtp_timestamp: 0,
            packets: 0,
            octets: 0,
        };
        rx.on_sender_report(t0, &info);
        let b = rx.report_block(t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(b.lsr, 0x2222_3333);
        assert_eq!(b.dlsr, 32768);
    }
}
