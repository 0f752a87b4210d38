//! The RTP relay between two bridged legs, one direction at a time, sans-IO.
//!
//! A [`Relay`] turns a packet received on leg A into the packet to send on
//! leg B, written into a reused buffer. Each leg sees one clean stream from
//! us (the B2BUA terminates RTP per leg, as it terminates RTCP):
//!
//! - **SSRC**: leg B's own SSRC, the one its prompts were sent with.
//! - **Sequence numbers**: leg B's [`SendStream`] numbering, +1 per packet we
//!   send on B, across source changes on A and across our own prompt packets
//!   on B (the agent heard the whisper from us on the same stream). Loss on A
//!   shows on B as a timestamp gap, not a sequence gap: sequence numbers count
//!   what *we* send (RFC 3550 §5.1), and our RTCP on B reports B's own leg.
//! - **Timestamps**: `A's timestamp + offset`, so A's packet timing (gaps,
//!   silence suppression) is kept. The offset is recomputed — RFC 3550 §5.1:
//!   the timestamp must stay monotonic and continuous for B — when A's SSRC
//!   changes, when A's timestamp or sequence number jumps (a restarted
//!   source), and when B sent packets of its own since our last one. Then A's
//!   packet is placed at B's media clock ([`SendStream::next_timestamp`],
//!   which the pacing clock advances in real time while B sends nothing), and
//!   that first packet carries the marker bit (RFC 3551 §4.1). Every relayed
//!   packet moves B's clock to at least its end, so what B sends next —
//!   relayed or played — never goes back in time.
//! - **Payload types**: A's audio type becomes B's; telephone-event (RFC
//!   4733) is passed through with B's negotiated number and dropped when B
//!   has none (the caller may send SIP INFO instead); comfort noise (RFC
//!   3389, PT 13 or A's negotiated number) is passed only when B negotiated
//!   it and is never decoded as audio; every other type is dropped.
//! - **Transcoding**: PCMU⇄PCMA through G.711's 256-entry table, only when
//!   the legs' laws differ; the payload keeps its size (one octet a sample).
//!
//! Hold is the caller's: it does not call [`Relay::relay`] for a leg it may
//! not send to, and calls [`Relay::resync`] when the leg resumes.

// std
use std::fmt;

// crate
use crate::media::g711::Law;
use crate::media::rtp::{PayloadType, RTP_HEADER_LEN, RtpPacket, SendStream, Ssrc, write_rtp};

/// What one leg negotiated, as far as the relay is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegCodecs {
    /// The G.711 law of the leg's audio.
    pub law: Law,
    /// The payload type carrying it (0, 8 or the offerer's dynamic number).
    pub audio: PayloadType,
    /// The `telephone-event/8000` payload type, if negotiated.
    pub telephone_event: Option<PayloadType>,
    /// The comfort-noise (`CN/8000`) payload type, if negotiated.
    pub comfort_noise: Option<PayloadType>,
}

/// What kind of packet was relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// G.711 audio; `transcoded` when the laws differ.
    Audio {
        /// The payload was converted PCMU⇄PCMA.
        transcoded: bool,
    },
    /// An RFC 4733 telephone-event, payload type remapped.
    Event,
    /// Comfort noise (RFC 3389), payload type remapped.
    ComfortNoise,
}

/// Why a packet was not relayed. All are normal in a call; none is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A telephone-event, but the other leg negotiated none (the caller may
    /// convert the digit to SIP INFO).
    NoTelephoneEvent,
    /// Comfort noise, but the other leg negotiated none.
    NoComfortNoise,
    /// A payload type this leg did not negotiate (sipp's PT 97 filler, …).
    UnknownPayloadType(PayloadType),
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Audio packets relayed.
    pub audio: u64,
    /// Of which transcoded.
    pub transcoded: u64,
    /// Telephone-event packets relayed.
    pub events: u64,
    /// Comfort-noise packets relayed.
    pub comfort_noise: u64,
    /// Packets dropped ([`Dropped`]).
    pub dropped: u64,
    /// Timestamp mappings recomputed (source changes, jumps, our own packets).
    pub resyncs: u64,
}

/// One direction of a bridge: packets received on leg A (`from`) rewritten
/// for leg B (`to`). See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct Relay {
    from: LegCodecs,
    to: LegCodecs,
    /// The source of A being relayed and its last packet's numbers.
    source: Option<Source>,
    /// B's next sequence number after our last packet: another value means
    /// B sent packets of its own since (a prompt), and the mapping restarts.
    next_sequence: Option<u16>,
    stats: RelayStats,
}

/// RFC 3550 A.1's MAX_DROPOUT: a larger forward sequence jump is a restart.
const MAX_SEQ_JUMP: u16 = 3000;
/// RFC 3550 A.1's MAX_MISORDER: a packet this far behind is a late one.
const MAX_SEQ_LATE: u16 = 100;
/// A forward timestamp jump beyond this (10 s at 8 kHz) is a restart, not a
/// pause: B's clock, which kept real time, places the packet instead.
const MAX_TS_JUMP: u32 = 80_000;
/// A late packet may be this far behind (1 s at 8 kHz); further is a restart.
const MAX_TS_LATE: u32 = 8_000;

impl Relay {
    /// A relay for packets from a leg that negotiated `from` to a leg that
    /// negotiated `to`.
    pub fn new(from: LegCodecs, to: LegCodecs) -> Relay {
        Relay {
            from,
            to,
            source: None,
            next_sequence: None,
            stats: RelayStats::default(),
        }
    }

    /// New negotiated codecs after a re-INVITE on either leg. The mapping
    /// restarts (the peer may have restarted its stream as well).
    pub fn set_legs(&mut self, from: LegCodecs, to: LegCodecs) {
        self.from = from;
        self.to = to;
        self.resync();
    }

    /// Restarts the timestamp mapping at the next packet (bridge start,
    /// resume after hold): it goes out at B's clock with the marker bit.
    pub fn resync(&mut self) {
        self.source = None;
    }

    /// Rewrites `packet` (received on A) for B into `buf` (its contents are
    /// replaced), taking sequence number and SSRC from `out` — B's send
    /// state, whose media clock it also moves on. `Ok` means: send `buf` on
    /// B. Allocation-free when `buf` has room for the packet.
    pub fn relay(
        &mut self,
        packet: &RtpPacket<'_>,
        out: &mut SendStream,
        buf: &mut Vec<u8>,
    ) -> Result<Relayed, Dropped> {
        let pt = packet.payload_type();
        let (kind, out_pt) = self.classify(pt)?;
        let (timestamp, restarted) = self.map_timestamp(packet, out);
        // RFC 3551 §4.1: audio after a restart starts a talk spurt; an
        // event's marker keeps its RFC 4733 §2.5.1.1 meaning and is passed.
        let marker = packet.marker() || (restarted && matches!(kind, Relayed::Audio { .. }));
        let header = out.next_header_with(out_pt, timestamp, marker, 0);
        write_rtp(buf, &header, packet.payload());
        if let Relayed::Audio { transcoded: true } = kind
            && let Some(payload) = buf.get_mut(RTP_HEADER_LEN..)
        {
            transcode(self.from.law, self.to.law, payload);
        }
        // B's clock moves to the end of this packet at least (one octet is
        // one sample in G.711; events and comfort noise take no time here).
        if let Relayed::Audio { .. } = kind {
            let end = timestamp.wrapping_add(packet.payload().len() as u32);
            let ahead = end.wrapping_sub(out.next_timestamp()) as i32;
            if ahead > 0 {
                out.skip(ahead as u32);
            }
        }
        self.next_sequence = Some(out.next_sequence());
        match kind {
            Relayed::Audio { transcoded } => {
                self.stats.audio += 1;
                self.stats.transcoded += u64::from(transcoded);
            }
            Relayed::Event => self.stats.events += 1,
            Relayed::ComfortNoise => self.stats.comfort_noise += 1,
        }
        Ok(kind)
    }

    /// Counters so far.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }

    /// What `pt` is and which payload type it gets on B.
    fn classify(&mut self, pt: PayloadType) -> Result<(Relayed, PayloadType), Dropped> {
        let result = if pt == self.from.audio {
            Ok((
                Relayed::Audio {
                    transcoded: self.from.law != self.to.law,
                },
                self.to.audio,
            ))
        } else if Some(pt) == self.from.telephone_event {
            self.to
                .telephone_event
                .map(|te| (Relayed::Event, te))
                .ok_or(Dropped::NoTelephoneEvent)
        } else if pt == PayloadType::CN || Some(pt) == self.from.comfort_noise {
            // PT 13 is static (RFC 3551 §6), so it is comfort noise even when
            // A did not list it; either way it is never audio.
            self.to
                .comfort_noise
                .map(|cn| (Relayed::ComfortNoise, cn))
                .ok_or(Dropped::NoComfortNoise)
        } else {
            Err(Dropped::UnknownPayloadType(pt))
        };
        if result.is_err() {
            self.stats.dropped += 1;
        }
        result
    }

    /// B's timestamp for `packet`; true when the mapping was (re)started.
    fn map_timestamp(&mut self, packet: &RtpPacket<'_>, out: &SendStream) -> (u32, bool) {
        let (ssrc, seq, ts) = (packet.ssrc(), packet.sequence(), packet.timestamp());
        let continues = self.next_sequence == Some(out.next_sequence())
            && self.source.is_some_and(|s| {
                let seq_ahead = seq.wrapping_sub(s.sequence);
                let ts_ahead = ts.wrapping_sub(s.timestamp);
                s.ssrc == ssrc
                    && (seq_ahead <= MAX_SEQ_JUMP || seq_ahead >= u16::MAX - MAX_SEQ_LATE)
                    && (ts_ahead <= MAX_TS_JUMP || ts_ahead >= u32::MAX - MAX_TS_LATE)
            });
        let offset = match self.source {
            Some(s) if continues => s.offset,
            _ => {
                self.stats.resyncs += 1;
                out.next_timestamp().wrapping_sub(ts)
            }
        };
        // A late packet keeps the mapping but does not move the reference.
        let newer = match self.source {
            Some(s) if continues => {
                let ahead = seq.wrapping_sub(s.sequence);
                ahead != 0 && ahead <= MAX_SEQ_JUMP
            }
            _ => true,
        };
        if newer {
            self.source = Some(Source {
                ssrc,
                sequence: seq,
                timestamp: ts,
                offset,
            });
        }
        (ts.wrapping_add(offset), !continues)
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::NoTelephoneEvent => {
                f.write_str("telephone-event not negotiated on the other leg")
            }
            Dropped::NoComfortNoise => f.write_str("comfort noise not negotiated on the other leg"),
            Dropped::UnknownPayloadType(pt) => write!(f, "payload type {pt} not negotiated"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Source {
    ssrc: Ssrc,
    sequence: u16,
    timestamp: u32,
    offset: u32,
}

/// Converts G.711 codes in place. The law pair is matched once, outside the
/// loop, so the loop is a plain table lookup per octet.
fn transcode(from: Law, to: Law, payload: &mut [u8]) {
    match (from, to) {
        (Law::Ulaw, Law::Alaw) => payload
            .iter_mut()
            .for_each(|c| *c = Law::Ulaw.transcode(Law::Alaw, *c)),
        (Law::Alaw, Law::Ulaw) => payload
            .iter_mut()
            .for_each(|c| *c = Law::Alaw.transcode(Law::Ulaw, *c)),
        (Law::Ulaw, Law::Ulaw) | (Law::Alaw, Law::Alaw) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpHeader;

    const TE_A: u8 = 101;
    const TE_B: u8 = 96;

    fn pt(n: u8) -> PayloadType {
        PayloadType::new(n).unwrap()
    }

    fn pcmu_leg() -> LegCodecs {
        LegCodecs {
            law: Law::Ulaw,
            audio: PayloadType::PCMU,
            telephone_event: Some(pt(TE_A)),
            comfort_noise: None,
        }
    }

    fn pcma_leg() -> LegCodecs {
        LegCodecs {
            law: Law::Alaw,
            audio: PayloadType::PCMA,
            telephone_event: Some(pt(TE_B)),
            comfort_noise: Some(PayloadType::CN),
        }
    }

    fn packet(pt: PayloadType, ssrc: u32, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let header = RtpHeader {
            payload_type: pt,
            marker: false,
            sequence: seq,
            timestamp: ts,
            ssrc: Ssrc(ssrc),
        };
        write_rtp(&mut buf, &header, payload);
        buf
    }

    /// Relays one packet and returns the result and the header sent.
    fn relay(
        r: &mut Relay,
        out: &mut SendStream,
        bytes: &[u8],
    ) -> (Result<Relayed, Dropped>, Option<RtpHeader>, Vec<u8>) {
        let p = RtpPacket::parse(bytes).unwrap();
        let mut buf = Vec::with_capacity(200);
        let result = r.relay(&p, out, &mut buf);
        let header = result
            .is_ok()
            .then(|| RtpPacket::parse(&buf).unwrap().header());
        let payload = buf.get(12..).unwrap_or_default().to_vec();
        (result, header, payload)
    }

    /// Relays one packet that must be sent; returns the header sent.
    fn sent(r: &mut Relay, out: &mut SendStream, bytes: &[u8]) -> RtpHeader {
        let (res, h, _) = relay(r, out, bytes);
        assert!(res.is_ok(), "dropped: {res:?}");
        h.expect("sent")
    }

    fn b_stream() -> SendStream {
        SendStream::new(Ssrc(0xb0b), PayloadType::PCMA, 8000, 500, 90_000)
    }

    #[test]
    fn rewrites_ssrc_sequence_and_timestamp_and_transcodes() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let audio: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let mut seen = Vec::new();
        for i in 0..3u16 {
            let bytes = packet(
                PayloadType::PCMU,
                0xa,
                7000 + i,
                1000 + 160 * u32::from(i),
                &audio,
            );
            let (res, h, payload) = relay(&mut r, &mut out, &bytes);
            assert_eq!(res, Ok(Relayed::Audio { transcoded: true }));
            let h = h.unwrap();
            assert_eq!(h.ssrc, Ssrc(0xb0b));
            assert_eq!(h.payload_type, PayloadType::PCMA);
            let expected: Vec<u8> = audio
                .iter()
                .map(|&c| Law::Ulaw.transcode(Law::Alaw, c))
                .collect();
            assert_eq!(payload, expected);
            seen.push((h.sequence, h.timestamp, h.marker));
        }
        // First packet at B's clock, marked; then +1 / +160.
        assert_eq!(
            seen,
            [
                (500, 90_000, true),
                (501, 90_160, false),
                (502, 90_320, false)
            ]
        );
        assert_eq!(out.next_sequence(), 503);
        assert_eq!(out.next_timestamp(), 90_480);
    }

    #[test]
    fn same_law_is_copied_untouched() {
        let mut r = Relay::new(pcma_leg(), pcma_leg());
        let mut out = b_stream();
        let audio = [0x12u8; 80];
        let bytes = packet(PayloadType::PCMA, 1, 1, 1, &audio);
        let (res, _, payload) = relay(&mut r, &mut out, &bytes);
        assert_eq!(res, Ok(Relayed::Audio { transcoded: false }));
        assert_eq!(payload, audio);
        assert_eq!(r.stats().transcoded, 0);
    }

    #[test]
    fn ssrc_change_continues_sequence_and_timestamp() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let audio = [0xffu8; 160];
        for i in 0..2u16 {
            let b = packet(
                PayloadType::PCMU,
                1,
                10 + i,
                5000 + 160 * u32::from(i),
                &audio,
            );
            sent(&mut r, &mut out, &b);
        }
        // A new source, with unrelated numbers (sipp switches mid-call).
        let b = packet(PayloadType::PCMU, 2, 40_000, 3_000_000, &audio);
        let (_, h, _) = relay(&mut r, &mut out, &b);
        let h = h.unwrap();
        assert_eq!((h.sequence, h.timestamp, h.marker), (502, 90_320, true));
        let b = packet(PayloadType::PCMU, 2, 40_001, 3_000_160, &audio);
        let h = relay(&mut r, &mut out, &b).1.unwrap();
        assert_eq!((h.sequence, h.timestamp, h.marker), (503, 90_480, false));
        assert_eq!(r.stats().resyncs, 2);
    }

    #[test]
    fn keeps_the_sources_gaps_in_time() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let audio = [0xffu8; 160];
        sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 1, 0, &audio),
        );
        // Two packets lost, then silence suppression of 2 s.
        let h = sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 4, 480, &audio),
        );
        assert_eq!((h.sequence, h.timestamp), (501, 90_480));
        let h = sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 5, 16_640, &audio),
        );
        assert_eq!((h.sequence, h.timestamp), (502, 106_640));
        assert_eq!(r.stats().resyncs, 1);
    }

    #[test]
    fn timestamp_jump_restarts_at_our_clock() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let audio = [0xffu8; 160];
        sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 1, 0, &audio),
        );
        // Same SSRC, timestamp restarted far back (a re-INVITEd sender).
        out.skip(800); // 100 ms of our clock passed
        let h = sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 2, 4_000_000_000, &audio),
        );
        assert_eq!((h.sequence, h.timestamp, h.marker), (501, 90_960, true));
    }

    #[test]
    fn continues_after_our_own_prompt_packets() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let audio = [0xffu8; 160];
        sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 1, 0, &audio),
        );
        // B plays three frames of a prompt of its own.
        for _ in 0..3 {
            out.next_header(160, false);
        }
        let h = sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 2, 160, &audio),
        );
        assert_eq!((h.sequence, h.timestamp, h.marker), (504, 90_640, true));
    }

    #[test]
    fn late_packet_keeps_the_mapping_and_reference() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let audio = [0xffu8; 160];
        sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 10, 1600, &audio),
        );
        sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 12, 1920, &audio),
        );
        let late = sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 11, 1760, &audio),
        );
        assert_eq!(
            (late.sequence, late.timestamp, late.marker),
            (502, 90_160, false)
        );
        let next = sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 13, 2080, &audio),
        );
        assert_eq!((next.sequence, next.timestamp), (503, 90_480));
        // B's clock never goes back for the late packet.
        assert_eq!(out.next_timestamp(), 90_640);
    }

    #[test]
    fn remaps_telephone_event_payload_type() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 1, 0, &[0xff; 160]),
        );
        let event = [5u8, 0x0a, 0x00, 0xa0];
        let (res, h, payload) = relay(&mut r, &mut out, &packet(pt(TE_A), 1, 2, 160, &event));
        assert_eq!(res, Ok(Relayed::Event));
        let h = h.unwrap();
        assert_eq!(h.payload_type, pt(TE_B));
        assert_eq!((h.sequence, h.timestamp), (501, 90_160));
        // The event payload is not transcoded.
        assert_eq!(payload, event);
        // Events take no media time: B's clock stays at the audio's end.
        assert_eq!(out.next_timestamp(), 90_160);
    }

    #[test]
    fn drops_telephone_event_when_other_leg_has_none() {
        let mut b = pcma_leg();
        b.telephone_event = None;
        let mut r = Relay::new(pcmu_leg(), b);
        let mut out = b_stream();
        let (res, h, _) = relay(
            &mut r,
            &mut out,
            &packet(pt(TE_A), 1, 2, 160, &[1, 0, 0, 0]),
        );
        assert_eq!(res, Err(Dropped::NoTelephoneEvent));
        assert_eq!(h, None);
        assert_eq!(out.next_sequence(), 500, "a dropped packet used a number");
    }

    #[test]
    fn comfort_noise_passes_only_when_other_leg_has_it() {
        let cn = [0x40u8];
        // A (PCMU, no CN negotiated) → B (has CN): static PT 13 passes as is.
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let (res, h, payload) = relay(&mut r, &mut out, &packet(PayloadType::CN, 1, 1, 0, &cn));
        assert_eq!(res, Ok(Relayed::ComfortNoise));
        assert_eq!(h.unwrap().payload_type, PayloadType::CN);
        assert_eq!(payload, cn, "comfort noise was transcoded as audio");
        // B → A: A did not negotiate CN, so it is dropped.
        let mut r = Relay::new(pcma_leg(), pcmu_leg());
        let mut out = b_stream();
        let (res, h, _) = relay(&mut r, &mut out, &packet(PayloadType::CN, 1, 1, 0, &cn));
        assert_eq!((res, h), (Err(Dropped::NoComfortNoise), None));
    }

    #[test]
    fn drops_unknown_payload_types() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        for n in [97u8, 8, 18] {
            let (res, _, _) = relay(&mut r, &mut out, &packet(pt(n), 1, 1, 0, &[0; 20]));
            assert_eq!(res, Err(Dropped::UnknownPayloadType(pt(n))));
        }
        assert_eq!(r.stats().dropped, 3);
        assert_eq!(out.next_sequence(), 500);
    }

    #[test]
    fn dynamic_audio_payload_type_is_mapped() {
        let mut a = pcmu_leg();
        a.audio = pt(110);
        let mut r = Relay::new(a, pcma_leg());
        let mut out = b_stream();
        let (res, h, _) = relay(&mut r, &mut out, &packet(pt(110), 1, 1, 0, &[0xff; 160]));
        assert_eq!(res, Ok(Relayed::Audio { transcoded: true }));
        assert_eq!(h.unwrap().payload_type, PayloadType::PCMA);
        // PCMU's static number is not audio on this leg.
        let (res, _, _) = relay(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 2, 160, &[0; 160]),
        );
        assert_eq!(res, Err(Dropped::UnknownPayloadType(PayloadType::PCMU)));
    }

    #[test]
    fn resync_marks_the_packet_after_hold() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let audio = [0xffu8; 160];
        sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 1, 0, &audio),
        );
        // On hold: the pacing clock runs on 1 s, nothing is relayed.
        out.skip(8000);
        r.resync();
        let h = sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 51, 8000, &audio),
        );
        assert_eq!((h.sequence, h.timestamp, h.marker), (501, 98_160, true));
    }

    #[test]
    fn source_marker_is_passed_and_wrapping_is_handled() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = SendStream::new(Ssrc(3), PayloadType::PCMA, 8000, 0xffff, 0xffff_ff60);
        let audio = [0xffu8; 160];
        sent(
            &mut r,
            &mut out,
            &packet(PayloadType::PCMU, 1, 0xffff, 0xffff_ffff, &audio),
        );
        let mut bytes = packet(PayloadType::PCMU, 1, 0, 159, &audio);
        bytes[1] |= 0x80;
        let h = sent(&mut r, &mut out, &bytes);
        assert_eq!((h.sequence, h.timestamp, h.marker), (0, 0, true));
        assert_eq!(r.stats().resyncs, 1);
    }

    #[test]
    fn relaying_does_not_reallocate_the_buffer() {
        let mut r = Relay::new(pcmu_leg(), pcma_leg());
        let mut out = b_stream();
        let mut buf = Vec::with_capacity(1500);
        let ptr = buf.as_ptr();
        let bytes = packet(PayloadType::PCMU, 1, 1, 0, &[0xff; 160]);
        let p = RtpPacket::parse(&bytes).unwrap();
        for _ in 0..10 {
            r.relay(&p, &mut out, &mut buf).unwrap();
            assert_eq!(buf.as_ptr(), ptr);
        }
    }
}
