//! RFC 4733 telephone-event: DTMF digits carried in RTP.
//!
//! [`TelephoneEvent`] is the 4-byte payload (§2.3), [`DtmfReceiver`] turns a
//! stream of such packets into digits, each counted exactly once, and
//! [`DtmfSender`] produces the packet sequence for one digit (§2.5.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

// std
use std::fmt;
use std::time::Instant;

// external
use thiserror::Error;

// crate
use crate::media::rtp::{RtpPacket, Ssrc};

/// A DTMF key: RFC 4733 §3.2 event codes 0..=15 (`0`-`9`, `*` = 10,
/// `#` = 11, `A`-`D` = 12..=15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfDigit(u8);

impl DtmfDigit {
    /// The digit for an event code, or `None` for codes above 15 (flash,
    /// fax and modem tones, … — RFC 4733 §3.2, RFC 4734).
    pub const fn from_event(code: u8) -> Option<Self> {
        if code <= 15 {
            Some(DtmfDigit(code))
        } else {
            None
        }
    }

    /// The event code, 0..=15.
    pub const fn event_code(self) -> u8 {
        self.0
    }

    /// The key as a character: `0`-`9`, `*`, `#`, `A`-`D`.
    pub const fn as_char(self) -> char {
        match self.0 {
            0..=9 => (b'0' + self.0) as char,
            10 => '*',
            11 => '#',
            12 => 'A',
            13 => 'B',
            14 => 'C',
            _ => 'D',
        }
    }
}

impl TryFrom<char> for DtmfDigit {
    type Error = InvalidDtmfChar;

    /// Accepts `0`-`9`, `*`, `#` and `A`-`D` in either case.
    fn try_from(c: char) -> Result<Self, Self::Error> {
        let code = match c {
            '0'..='9' => c as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => c as u8 - b'A' + 12,
            'a'..='d' => c as u8 - b'a' + 12,
            _ => return Err(InvalidDtmfChar(c)),
        };
        Ok(DtmfDigit(code))
    }
}

impl fmt::Display for DtmfDigit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// A character that is not a DTMF key (a local fault: configuration or a
/// caller passed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{0:?} is not a DTMF key (0-9, *, #, A-D)")]
pub struct InvalidDtmfChar(pub char);

/// A telephone-event payload that cannot be read (a fault of the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TelephoneEventError {
    /// Shorter than the 4-byte event block of RFC 4733 §2.3.
    #[error("telephone-event payload of {len} bytes is shorter than 4")]
    TooShort {
        /// Payload length.
        len: usize,
    },
}

/// One RFC 4733 §2.3 event block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (§3.2; 0..=15 are DTMF keys).
    pub event: u8,
    /// E bit: this packet reports the end of the event (or segment).
    pub end: bool,
    /// Power level in -dBm0, 0..=63 (6 bits; higher bits are dropped on write).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, from the packet's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Length of one event block.
    pub const LEN: usize = 4;

    /// Reads the first event block. The R bit is ignored (§2.3: "MUST be
    /// ignored by the receiver"; sipp sends garbage there). Bytes after the
    /// first block — further events packed into one packet (§2.5.1.5) — are
    /// tolerated and not read.
    pub fn parse(payload: &[u8]) -> Result<Self, TelephoneEventError> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(TelephoneEventError::TooShort { len: payload.len() });
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte block, with R = 0 and the volume masked to 6 bits.
    pub fn write(&self) -> [u8; 4] {
        let flags = if self.end { 0x80 } else { 0 } | (self.volume & 0x3f);
        let [d0, d1] = self.duration.to_be_bytes();
        [self.event, flags, d0, d1]
    }

    /// The DTMF key, if the event code is one.
    pub fn digit(&self) -> Option<DtmfDigit> {
        DtmfDigit::from_event(self.event)
    }
}

/// Counters of what a [`DtmfReceiver`] has seen, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtmfStats {
    /// Digits reported.
    pub digits: u64,
    /// Packets of an event already known (updates, retransmissions, the end copies).
    pub repeats: u64,
    /// New segments of a long-duration event (RFC 4733 §2.5.1.3), not counted again.
    pub continuations: u64,
    /// Digits whose first packet seen had no marker bit (sender never sets it,
    /// or the first packet was lost).
    pub unmarked_starts: u64,
    /// Packets with an event code that is not a DTMF key, ignored.
    pub non_digit_events: u64,
}

/// Turns RFC 4733 packets into digits, each counted once (sans-IO).
///
/// An event is identified by (SSRC, RTP timestamp) — RFC 4733 §2.5.1.1: all
/// packets of one event carry the timestamp of its start. The rules:
///
/// - a digit counts on the **first packet seen** of a new event, not on the
///   marker bit (some senders never set it) and not on the end packet (all
///   three copies may be lost);
/// - further packets of a known event (updates, retransmissions, the three
///   end copies, §2.5.1.4) count nothing;
/// - the same key pressed twice is two events with two timestamps, and counts
///   twice;
/// - a new segment of a long-duration event (§2.5.1.3: same event code,
///   timestamp advanced by the 0xFFFF maximum duration, previous segment
///   without E bit) continues the event and counts nothing;
/// - a late packet of an older, already counted event counts nothing: its
///   key is still remembered, however many events came after it, up to
///   [`DtmfReceiver::MEMORY`];
/// - the SSRC is part of the key and never locked: senders change it mid-call
///   (sipp switches SSRC between audio and DTMF, and per `play_dtmf`).
///
/// There is deliberately no "older than the newest timestamp" rule: sipp's
/// `dtmf_2833_*.pcap` files all share one SSRC with a fixed timestamp each,
/// and not in digit order (`0` is at 17632, `1` at 13280), so replaying `0`
/// then `1` is a new event with an *older* timestamp, and it must count.
/// A late packet is recognised by its remembered key instead.
///
/// Memory is a fixed table of the last [`DtmfReceiver::MEMORY`] events; the
/// least recently seen one is replaced. Nothing grows per packet.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    recent: [Option<SeenEvent>; DtmfReceiver::MEMORY],
    stats: DtmfStats,
}

impl Default for DtmfReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl DtmfReceiver {
    /// Number of events remembered: more than the digits of one IVR entry,
    /// and a packet delayed past 16 whole events (seconds) is not reordering
    /// any jitter buffer would keep. 16 × 32 bytes per stream.
    pub const MEMORY: usize = 16;

    /// An empty receiver.
    pub fn new() -> Self {
        DtmfReceiver {
            recent: [None; DtmfReceiver::MEMORY],
            stats: DtmfStats::default(),
        }
    }

    /// Handles one telephone-event packet; returns the digit if this packet
    /// starts a new event. `marker` is only counted in the stats: it decides
    /// nothing (see the type's rules). `now` orders the remembered events for
    /// replacement (least recently seen goes first).
    pub fn handle(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        rtp_timestamp: u32,
        marker: bool,
        ev: &TelephoneEvent,
    ) -> Option<DtmfDigit> {
        let Some(digit) = ev.digit() else {
            self.stats.non_digit_events += 1;
            return None;
        };
        match self.classify(ssrc, rtp_timestamp, ev) {
            Seen::Known(slot) => {
                self.stats.repeats += 1;
                // Checked by `classify`: the slot holds this event.
                if let Some(seen) = &mut self.recent[slot] {
                    seen.ended |= ev.end;
                    seen.last_seen = now;
                }
                None
            }
            Seen::Continuation => {
                self.stats.continuations += 1;
                self.remember(now, ssrc, rtp_timestamp, ev);
                None
            }
            Seen::New => {
                self.stats.digits += 1;
                if !marker {
                    self.stats.unmarked_starts += 1;
                }
                self.remember(now, ssrc, rtp_timestamp, ev);
                Some(digit)
            }
        }
    }

    /// Parses the payload of a telephone-event RTP packet and handles it.
    /// The caller has already matched the payload type to the negotiated
    /// telephone-event type.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &RtpPacket<'_>,
    ) -> Result<Option<DtmfDigit>, TelephoneEventError> {
        let ev = TelephoneEvent::parse(packet.payload())?;
        Ok(self.handle(now, packet.ssrc(), packet.timestamp(), packet.marker(), &ev))
    }

    /// What has been seen so far.
    pub fn stats(&self) -> DtmfStats {
        self.stats
    }

    fn classify(&self, ssrc: Ssrc, timestamp: u32, ev: &TelephoneEvent) -> Seen {
        let mut newest: Option<&SeenEvent> = None;
        for (slot, seen) in self.recent.iter().enumerate() {
            let Some(seen) = seen else { continue };
            if seen.ssrc != ssrc {
                continue;
            }
            if seen.timestamp == timestamp {
                return Seen::Known(slot);
            }
            if newest.is_none_or(|n| is_newer(seen.timestamp, n.timestamp)) {
                newest = Some(seen);
            }
        }
        let Some(newest) = newest else {
            return Seen::New;
        };
        // RFC 4733 §2.5.1.3: the next segment starts where the previous one
        // reached the 0xFFFF maximum duration; we also take 0x10000 for
        // senders that count the boundary sample twice.
        let ahead = timestamp.wrapping_sub(newest.timestamp);
        if newest.event == ev.event && !newest.ended && (0xFFFF..=0x1_0000).contains(&ahead) {
            return Seen::Continuation;
        }
        Seen::New
    }

    fn remember(&mut self, now: Instant, ssrc: Ssrc, timestamp: u32, ev: &TelephoneEvent) {
        let entry = SeenEvent {
            ssrc,
            timestamp,
            event: ev.event,
            ended: ev.end,
            last_seen: now,
        };
        let slot = self
            .recent
            .iter()
            .position(Option::is_none)
            .or_else(|| {
                self.recent
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.last_seen)))
                    .min_by_key(|&(_, t)| t)
                    .map(|(i, _)| i)
            })
            .expect("MEMORY > 0, so a slot is empty or one is least recently seen");
        self.recent[slot] = Some(entry);
    }
}

/// One packet of the telephone-event sequence a [`DtmfSender`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// RTP marker bit: set on the first packet of the event only (§2.5.1.1).
    pub marker: bool,
    /// RTP timestamp: the event's start, the same on every packet (§2.5.1.1).
    pub timestamp: u32,
    /// The payload.
    pub event: TelephoneEvent,
}

/// Produces the RFC 4733 §2.5.1 packet sequence for one digit: a first
/// packet with the marker bit, an update every packet interval with the
/// duration so far, and the final packet with the E bit sent three times
/// (§2.5.1.4). All carry the start timestamp; the caller gives each packet
/// the next sequence number (see [`crate::media::rtp::SendStream::next_header_with`])
/// and sends one per packet interval.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    digit: DtmfDigit,
    timestamp: u32,
    duration: u16,
    ptime: u32,
    volume: u8,
    progress: u32,
    first: bool,
    ends_left: u8,
}

impl DtmfSender {
    /// Number of times the final packet is sent (RFC 4733 §2.5.1.4).
    pub const END_COPIES: u8 = 3;

    /// A sender for `digit` starting at RTP `timestamp`, lasting `duration`
    /// timestamp units (800 = 100 ms at 8 kHz), one packet per `ptime` units
    /// (160 = 20 ms). A `ptime` of 0 is taken as the whole duration (one
    /// packet before the end copies). Events longer than 0xFFFF units would
    /// need segments (§2.5.1.3); the `u16` duration rules them out.
    pub fn new(digit: DtmfDigit, timestamp: u32, duration: u16, ptime: u16, volume: u8) -> Self {
        let ptime = if ptime == 0 { duration.max(1) } else { ptime };
        DtmfSender {
            digit,
            timestamp,
            duration,
            ptime: u32::from(ptime),
            volume: volume & 0x3f,
            progress: 0,
            first: true,
            ends_left: Self::END_COPIES,
        }
    }

    /// The next packet to send, or `None` when the last end copy is out.
    pub fn next_packet(&mut self) -> Option<DtmfPacket> {
        if self.ends_left == 0 {
            return None;
        }
        let marker = std::mem::take(&mut self.first);
        let elapsed = self.progress + self.ptime;
        let (duration, end) = if elapsed < u32::from(self.duration) {
            self.progress = elapsed;
            (elapsed as u16, false)
        } else {
            self.ends_left -= 1;
            (self.duration, true)
        };
        Some(DtmfPacket {
            marker,
            timestamp: self.timestamp,
            event: TelephoneEvent {
                event: self.digit.event_code(),
                end,
                volume: self.volume,
                duration,
            },
        })
    }

    /// The digit being sent.
    pub fn digit(&self) -> DtmfDigit {
        self.digit
    }

    /// Whether every packet has been produced.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.ends_left == 0
    }
}

impl Iterator for DtmfSender {
    type Item = DtmfPacket;

    fn next(&mut self) -> Option<DtmfPacket> {
        self.next_packet()
    }
}

/// How a packet relates to the events already seen.
enum Seen {
    /// Same (SSRC, timestamp) as a remembered event, in this slot.
    Known(usize),
    /// Next segment of a long-duration event (RFC 4733 §2.5.1.3).
    Continuation,
    /// A new event.
    New,
}

#[derive(Debug, Clone, Copy)]
struct SeenEvent {
    ssrc: Ssrc,
    timestamp: u32,
    event: u8,
    ended: bool,
    last_seen: Instant,
}

/// RFC 3550 §A.1-style serial comparison: `a` is after `b` within half the
/// 32-bit space.
fn is_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::media::rtp::{PayloadType, SendStream, write_rtp};

    const A: Ssrc = Ssrc(0x0e05_384e);
    const B: Ssrc = Ssrc(0x1234_5678);

    fn digit(c: char) -> DtmfDigit {
        DtmfDigit::try_from(c).unwrap()
    }

    fn ev(c: char, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event: digit(c).event_code(),
            end,
            volume: 10,
            duration,
        }
    }

    /// Packets of one 100 ms event at 20 ms ptime, as (marker, event).
    fn event_packets(c: char) -> Vec<(bool, TelephoneEvent)> {
        DtmfSender::new(digit(c), 0, 800, 160, 10)
            .map(|p| (p.marker, p.event))
            .collect()
    }

    /// Feeds packets 20 ms apart; returns the digits counted.
    fn feed(
        rx: &mut DtmfReceiver,
        t0: Instant,
        ssrc: Ssrc,
        ts: u32,
        packets: &[(bool, TelephoneEvent)],
    ) -> String {
        let mut out = String::new();
        for (i, (marker, e)) in packets.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * i as u64);
            if let Some(d) = rx.handle(now, ssrc, ts, *marker, e) {
                out.push(d.as_char());
            }
        }
        out
    }

    #[test]
    fn digit_chars_round_trip() {
        let keys = "0123456789*#ABCD";
        for (code, c) in keys.chars().enumerate() {
            let d = DtmfDigit::try_from(c).unwrap();
            assert_eq!(d.event_code() as usize, code);
            assert_eq!(d.as_char(), c);
            assert_eq!(DtmfDigit::from_event(code as u8), Some(d));
        }
        assert_eq!(DtmfDigit::try_from('c').unwrap().as_char(), 'C');
        assert_eq!(digit('#').to_string(), "#");
    }

    #[test]
    fn digit_rejects_non_keys() {
        for c in ['E', 'e', 'x', ' ', '+', 'é'] {
            assert_eq!(DtmfDigit::try_from(c), Err(InvalidDtmfChar(c)));
        }
        assert_eq!(DtmfDigit::from_event(16), None);
        assert_eq!(DtmfDigit::from_event(255), None);
    }

    #[test]
    fn parses_event_block() {
        // sipp's dtmf_2833_1.pcap end packet: event 1, E, volume 10, duration 1280.
        let e = TelephoneEvent::parse(&[0x01, 0x8a, 0x05, 0x00]).unwrap();
        assert_eq!(e, ev('1', true, 1280));
        assert_eq!(e.write(), [0x01, 0x8a, 0x05, 0x00]);
    }

    #[test]
    fn parse_rejects_payload_shorter_than_4_bytes() {
        for len in 0..4 {
            assert_eq!(
                TelephoneEvent::parse(&[1, 0x8a, 0x05, 0x00][..len]),
                Err(TelephoneEventError::TooShort { len })
            );
        }
    }

    #[test]
    fn parse_ignores_r_bit() {
        let with_r = TelephoneEvent::parse(&[5, 0x40 | 10, 0, 160]).unwrap();
        let without = TelephoneEvent::parse(&[5, 10, 0, 160]).unwrap();
        assert_eq!(with_r, without);
        assert_eq!(with_r.write(), [5, 10, 0, 160]);
    }

    #[test]
    fn parse_takes_first_of_several_event_blocks() {
        let e = TelephoneEvent::parse(&[3, 0x8a, 0x03, 0x20, 4, 0x0a, 0x00, 0xa0, 0xff]).unwrap();
        assert_eq!(e, ev('3', true, 800));
    }

    #[test]
    fn write_masks_volume_to_six_bits() {
        let e = TelephoneEvent {
            event: 11,
            end: false,
            volume: 0xff,
            duration: 0x1234,
        };
        assert_eq!(e.write(), [11, 0x3f, 0x12, 0x34]);
    }

    #[test]
    fn counts_on_first_packet_of_event() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let pk = event_packets('7');
        assert_eq!(rx.handle(t0, A, 500, pk[0].0, &pk[0].1), Some(digit('7')));
        for (marker, e) in &pk[1..] {
            assert_eq!(rx.handle(t0, A, 500, *marker, e), None);
        }
        assert_eq!(rx.stats().digits, 1);
        assert_eq!(rx.stats().repeats, pk.len() as u64 - 1);
    }

    #[test]
    fn counts_without_marker_bit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let pk: Vec<_> = event_packets('4')
            .into_iter()
            .map(|(_, e)| (false, e))
            .collect();
        assert_eq!(feed(&mut rx, t0, A, 800, &pk), "4");
        assert_eq!(rx.stats().unmarked_starts, 1);
    }

    #[test]
    fn counts_when_all_end_packets_lost() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let pk: Vec<_> = event_packets('9')
            .into_iter()
            .filter(|(_, e)| !e.end)
            .collect();
        assert_eq!(pk.len(), 4);
        assert_eq!(feed(&mut rx, t0, A, 800, &pk), "9");
    }

    #[test]
    fn counts_when_only_end_packets_arrive() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let pk: Vec<_> = event_packets('0')
            .into_iter()
            .filter(|(_, e)| e.end)
            .collect();
        assert_eq!(pk.len(), 3);
        assert_eq!(feed(&mut rx, t0, A, 800, &pk), "0");
    }

    #[test]
    fn repeated_packets_and_three_end_packets_count_once() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        // Every packet duplicated by the network, too.
        let pk: Vec<_> = event_packets('#')
            .into_iter()
            .flat_map(|p| [p, p])
            .collect();
        assert_eq!(feed(&mut rx, t0, A, 800, &pk), "#");
        assert_eq!(rx.stats().digits, 1);
    }

    #[test]
    fn counts_once_under_any_loss_pattern() {
        let t0 = Instant::now();
        let pk = event_packets('5');
        let n = pk.len();
        for mask in 1u32..(1 << n) {
            let kept: Vec<_> = (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| pk[i])
                .collect();
            let mut rx = DtmfReceiver::new();
            assert_eq!(feed(&mut rx, t0, A, 800, &kept), "5", "kept mask {mask:b}");
        }
    }

    #[test]
    fn counts_once_when_reordered() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let mut pk = event_packets('2');
        pk.reverse();
        assert_eq!(feed(&mut rx, t0, A, 800, &pk), "2");
    }

    #[test]
    fn repeated_digit_with_new_timestamp_counts_twice() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let pk = event_packets('5');
        let mut got = feed(&mut rx, t0, A, 8000, &pk);
        got += &feed(
            &mut rx,
            t0 + Duration::from_millis(300),
            A,
            8000 + 2400,
            &pk,
        );
        assert_eq!(got, "55");
    }

    #[test]
    fn repeated_digit_counts_twice_when_end_packets_lost() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let no_end: Vec<_> = event_packets('5')
            .into_iter()
            .filter(|(_, e)| !e.end)
            .collect();
        let mut got = feed(&mut rx, t0, A, 8000, &no_end);
        got += &feed(
            &mut rx,
            t0 + Duration::from_millis(300),
            A,
            8000 + 2400,
            &no_end,
        );
        assert_eq!(got, "55");
    }

    #[test]
    fn long_duration_event_segments_count_once() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let ts = 0xffff_0000u32; // segments cross the timestamp wrap
        // Segment 1 ends at the maximum duration without the E bit (§2.5.1.3).
        assert_eq!(
            rx.handle(t0, A, ts, true, &ev('8', false, 160)),
            Some(digit('8'))
        );
        for _ in 0..3 {
            assert_eq!(rx.handle(t0, A, ts, false, &ev('8', false, 0xffff)), None);
        }
        // Segment 2 starts at ts + 0xFFFF; segment 3 (final) at + 2·0xFFFF.
        let ts2 = ts.wrapping_add(0xffff);
        assert_eq!(rx.handle(t0, A, ts2, false, &ev('8', false, 160)), None);
        assert_eq!(rx.handle(t0, A, ts2, false, &ev('8', false, 0xffff)), None);
        let ts3 = ts2.wrapping_add(0xffff);
        assert_eq!(rx.handle(t0, A, ts3, false, &ev('8', false, 160)), None);
        for _ in 0..3 {
            assert_eq!(rx.handle(t0, A, ts3, false, &ev('8', true, 800)), None);
        }
        assert_eq!(rx.stats().digits, 1);
        assert_eq!(rx.stats().continuations, 2);
        // A new press after the long event ended is a new digit.
        let ts4 = ts3.wrapping_add(2000);
        assert_eq!(
            rx.handle(t0, A, ts4, true, &ev('8', false, 160)),
            Some(digit('8'))
        );
    }

    #[test]
    fn segment_boundary_after_ended_event_is_new_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        assert!(rx.handle(t0, A, 0, true, &ev('1', true, 800)).is_some());
        assert_eq!(
            rx.handle(t0, A, 0xffff, true, &ev('1', false, 160)),
            Some(digit('1'))
        );
    }

    #[test]
    fn other_event_code_at_segment_boundary_is_new_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        assert!(rx.handle(t0, A, 0, true, &ev('1', false, 0xffff)).is_some());
        assert_eq!(
            rx.handle(t0, A, 0xffff, true, &ev('2', false, 160)),
            Some(digit('2'))
        );
    }

    #[test]
    fn r_bit_is_ignored() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        // sipp's play_dtmf sends garbage in R: alternate it within one event.
        let mut got = String::new();
        for (i, raw) in [
            [6u8, 0x4a, 0, 160],
            [6, 0x0a, 1, 64],
            [6, 0xca, 3, 32],
            [6, 0x8a, 3, 32],
        ]
        .iter()
        .enumerate()
        {
            let e = TelephoneEvent::parse(raw).unwrap();
            if let Some(d) = rx.handle(t0, A, 1600, i == 0, &e) {
                got.push(d.as_char());
            }
        }
        assert_eq!(got, "6");
    }

    #[test]
    fn ssrc_change_mid_call_keeps_counting() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let mut got = feed(&mut rx, t0, A, 90_000, &event_packets('1'));
        // sipp: a new SSRC whose timestamps restart far below A's.
        got += &feed(
            &mut rx,
            t0 + Duration::from_secs(1),
            B,
            160,
            &event_packets('2'),
        );
        got += &feed(
            &mut rx,
            t0 + Duration::from_secs(2),
            B,
            2560,
            &event_packets('3'),
        );
        // Back on A, later in A's timeline.
        got += &feed(
            &mut rx,
            t0 + Duration::from_secs(3),
            A,
            99_000,
            &event_packets('4'),
        );
        assert_eq!(got, "1234");
    }

    #[test]
    fn same_timestamp_on_two_ssrcs_counts_twice() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let mut got = feed(&mut rx, t0, A, 4000, &event_packets('1'));
        got += &feed(&mut rx, t0, B, 4000, &event_packets('1'));
        assert_eq!(got, "11");
    }

    #[test]
    fn late_packet_of_counted_event_does_not_count_again() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        assert_eq!(
            rx.handle(t0, A, 1000, true, &ev('1', false, 160)),
            Some(digit('1'))
        );
        assert_eq!(
            rx.handle(t0, A, 3000, true, &ev('2', false, 160)),
            Some(digit('2'))
        );
        // A straggler (end copy) of '1' after '2' started.
        assert_eq!(rx.handle(t0, A, 1000, false, &ev('1', true, 800)), None);
        assert_eq!(rx.stats().digits, 2);
    }

    #[test]
    fn late_packet_counts_nothing_while_remembered() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let n = DtmfReceiver::MEMORY as u32;
        for i in 0..n {
            let now = t0 + Duration::from_millis(300 * u64::from(i));
            assert!(
                rx.handle(now, A, 1000 + 2400 * i, true, &ev('3', false, 160))
                    .is_some()
            );
        }
        // The oldest of MEMORY events sends its end packet last of all.
        let late = t0 + Duration::from_secs(10);
        assert_eq!(rx.handle(late, A, 1000, false, &ev('3', true, 800)), None);
        assert_eq!(rx.stats().digits, u64::from(n));
    }

    #[test]
    fn memory_is_bounded_and_replaces_least_recently_seen() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let n = DtmfReceiver::MEMORY as u32;
        for i in 0..n {
            let now = t0 + Duration::from_millis(300 * u64::from(i));
            assert!(
                rx.handle(now, A, 1000 + 2400 * i, true, &ev('7', false, 160))
                    .is_some()
            );
        }
        // Event 0 keeps sending updates, so event 1 is now the least recently seen.
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(rx.handle(t1, A, 1000, false, &ev('7', false, 320)), None);
        let t2 = t1 + Duration::from_millis(20);
        assert!(
            rx.handle(t2, A, 1000 + 2400 * n, true, &ev('7', false, 160))
                .is_some()
        );
        let t3 = t2 + Duration::from_millis(20);
        assert_eq!(
            rx.handle(t3, A, 1000, false, &ev('7', true, 800)),
            None,
            "event 0 kept"
        );
        // Event 1 was forgotten: the bound is real (no growth per packet).
        assert!(
            rx.handle(t3, A, 1000 + 2400, false, &ev('7', true, 800))
                .is_some()
        );
    }

    #[test]
    fn new_event_with_older_timestamp_counts() {
        // sipp's pcaps: '0' at ts 17632, then '1' at 13280, same SSRC.
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let mut got = feed(&mut rx, t0, A, 17_632, &event_packets('0'));
        got += &feed(
            &mut rx,
            t0 + Duration::from_secs(1),
            A,
            13_280,
            &event_packets('1'),
        );
        assert_eq!(got, "01");
    }

    #[test]
    fn sipp_pcap_replay_counts_each_event_once() {
        // Packets as in /usr/share/sip-tester/dtmf_2833_{0,1}.pcap: marker on
        // the first, duration 0 first, +320 per 20 ms, three identical end
        // packets (same sequence number). Replaying '1' twice is one event.
        fn pcap_event(code: u8, seq0: u16, ts: u32) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            for i in 0..10u16 {
                let end = i >= 7;
                let seq = seq0 + i.min(7);
                let duration = 320 * i.min(7);
                let mut p = vec![0x80, if i == 0 { 0x80 | 101 } else { 101 }];
                p.extend(seq.to_be_bytes());
                p.extend(ts.to_be_bytes());
                p.extend(0x0e05_384eu32.to_be_bytes());
                p.extend([code, if end { 0x8a } else { 0x0a }]);
                p.extend(duration.to_be_bytes());
                out.push(p);
            }
            out
        }
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let mut got = String::new();
        let mut now = t0;
        let plays = [
            pcap_event(0, 12080, 17_632),
            pcap_event(1, 7984, 13_280),
            pcap_event(1, 7984, 13_280),
        ];
        for bytes in plays.iter().flatten() {
            let pkt = RtpPacket::parse(bytes).unwrap();
            if let Some(d) = rx.handle_packet(now, &pkt).unwrap() {
                got.push(d.as_char());
            }
            now += Duration::from_millis(20);
        }
        assert_eq!(got, "01");
    }

    #[test]
    fn remembers_events_across_timestamp_wrap() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        assert!(
            rx.handle(t0, A, 0xffff_ff00, true, &ev('1', false, 160))
                .is_some()
        );
        assert!(
            rx.handle(t0, A, 0x0000_0900, true, &ev('2', false, 160))
                .is_some()
        );
        assert_eq!(
            rx.handle(t0, A, 0xffff_ff00, false, &ev('1', true, 800)),
            None
        );
        assert_eq!(rx.stats().repeats, 1);
    }

    #[test]
    fn event_above_15_is_not_a_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        for code in [16u8, 32, 255] {
            let e = TelephoneEvent {
                event: code,
                end: false,
                volume: 10,
                duration: 160,
            };
            assert_eq!(e.digit(), None);
            assert_eq!(rx.handle(t0, A, 100, true, &e), None);
        }
        assert_eq!(rx.stats().non_digit_events, 3);
        // A real digit at the same key afterwards still counts.
        assert_eq!(
            rx.handle(t0, A, 100, true, &ev('1', false, 160)),
            Some(digit('1'))
        );
    }

    #[test]
    fn sender_produces_rfc4733_sequence() {
        let pk: Vec<_> = DtmfSender::new(digit('*'), 4242, 800, 160, 10).collect();
        let durations: Vec<_> = pk.iter().map(|p| (p.event.duration, p.event.end)).collect();
        assert_eq!(
            durations,
            [
                (160, false),
                (320, false),
                (480, false),
                (640, false),
                (800, true),
                (800, true),
                (800, true)
            ]
        );
        assert!(pk[0].marker);
        assert!(pk[1..].iter().all(|p| !p.marker));
        assert!(
            pk.iter()
                .all(|p| p.timestamp == 4242 && p.event.event == 10)
        );
        assert!(pk.iter().all(|p| p.event.volume == 10));
    }

    #[test]
    fn sender_event_shorter_than_ptime_starts_with_marked_end_packet() {
        let mut tx = DtmfSender::new(digit('1'), 0, 100, 160, 10);
        let first = tx.next_packet().unwrap();
        assert!(first.marker && first.event.end && first.event.duration == 100);
        assert_eq!(tx.by_ref().count(), 2);
        assert!(tx.is_done());
        assert_eq!(tx.next_packet(), None);
    }

    #[test]
    fn sender_with_zero_ptime_terminates() {
        let pk: Vec<_> = DtmfSender::new(digit('1'), 0, 800, 0, 10).collect();
        assert_eq!(pk.len(), 3);
        assert!(pk.iter().all(|p| p.event.end && p.event.duration == 800));
    }

    #[test]
    fn sender_to_receiver_over_rtp() {
        let t0 = Instant::now();
        let te = PayloadType::new(101).unwrap();
        let mut stream = SendStream::new(Ssrc(99), PayloadType::PCMA, 8000, 65_530, 0xffff_fe00);
        let mut rx = DtmfReceiver::new();
        let mut buf = Vec::with_capacity(64);
        let mut got = String::new();
        let mut now = t0;
        for c in "3125550188".chars() {
            // Some audio between the digits.
            for _ in 0..5 {
                stream.next_header(160, false);
            }
            let start = stream.next_timestamp();
            for p in DtmfSender::new(digit(c), start, 800, 160, 10) {
                let h = stream.next_header_with(te, p.timestamp, p.marker, 160);
                write_rtp(&mut buf, &h, &p.event.write());
                let pkt = RtpPacket::parse(&buf).unwrap();
                if let Some(d) = rx.handle_packet(now, &pkt).unwrap() {
                    got.push(d.as_char());
                }
                now += Duration::from_millis(20);
            }
        }
        assert_eq!(got, "3125550188");
        assert_eq!(rx.stats().unmarked_starts, 0);
    }

    #[test]
    fn handle_packet_rejects_short_payload() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let bytes = [0x80, 101, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 0x8a];
        let pkt = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(
            rx.handle_packet(t0, &pkt),
            Err(TelephoneEventError::TooShort { len: 2 })
        );
    }
}
