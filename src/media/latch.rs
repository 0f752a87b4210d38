//! Which source a stream listens to: symmetric RTP latching that neither
//! lets a third party in (RTP-Bleed) nor lets one call hear another.
//!
//! A port can receive more than the call it was given to: the packets of a
//! call that used it before (late, or still streaming after the process
//! that owned it was killed and a new one handed the port out again), or a
//! second stream from the same carrier IP. Accepting every packet of the
//! expected IP made those count as the caller's digits. The rule here:
//!
//! 1. A packet from an IP that is neither the SDP address's nor the
//!    signalling peer's is refused ([`Verdict::Refused`]).
//! 2. A packet from the **exact SDP address and port** latches at once, and
//!    for good (until [`Latch::reset`] on a re-INVITE): from then on only
//!    that address is heard. Its SSRC may change (sipp's `uac_pcap`, and
//!    phones after hold, switch SSRC and sequence on the same socket).
//! 3. Otherwise (NAT: the SDP names a private address; or a sender that
//!    sends from another port than it receives on) a source latches only
//!    after [`CONSECUTIVE`] packets in a row of one SSRC from that source,
//!    with nothing from another source in between. When that source's IP is
//!    the SDP address's own IP — the SDP address is reachable, so its owner
//!    is expected to send from it — the stream must also have been silent
//!    from the SDP address for [`SAME_HOST_GRACE`] since it learned the
//!    address: a leftover stream from another port of the same host then
//!    cannot win the race against the call's own first packet.
//! 4. A later packet from the exact SDP address takes over from a source
//!    latched by rule 3.
//! 5. Everything else from an expected IP is [`Verdict::Foreign`]: ignored
//!    (not audio, not digits, not life for the RTP timeout), and counted.
//!
//! Sans-IO: time comes in as `now`.

// std
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

// crate
use crate::media::rtp::Ssrc;

/// Packets in a row of one SSRC from one source before a source other than
/// the SDP address is latched (rule 3).
pub const CONSECUTIVE: u32 = 3;

/// How long the SDP address must have been silent before another port of
/// the same IP may latch (rule 3).
pub const SAME_HOST_GRACE: Duration = Duration::from_secs(1);

/// What to do with one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the latched stream: use it. `latched` when this packet latched
    /// the stream (or moved it to the SDP address): send there from now on.
    Accept {
        /// This packet (re)latched the stream.
        latched: bool,
    },
    /// From an IP the stream does not expect at all: refused (RTP-Bleed).
    Refused,
    /// From an expected IP, but not the latched stream: ignored.
    Foreign,
}

/// Counters of one stream's latching, for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatchStats {
    /// Packets from IPs not expected (rule 1).
    pub refused: u64,
    /// Packets from an expected IP that were not the latched stream.
    pub foreign: u64,
    /// Times the stream latched or re-latched.
    pub latches: u64,
}

/// The latching state of one stream (see the module documentation).
#[derive(Debug, Clone)]
pub struct Latch {
    sdp: Option<SocketAddr>,
    peer_ip: IpAddr,
    /// When the SDP address was learned (the grace of rule 3 runs from it).
    since: Instant,
    state: State,
    stats: LatchStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not latched; the source seen last, and how many packets in a row.
    Open { candidate: Option<Candidate> },
    /// Latched to `source`; `exact` when it is the SDP address (rule 2).
    Latched {
        source: SocketAddr,
        exact: bool,
        ssrc: Ssrc,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    source: SocketAddr,
    ssrc: Ssrc,
    count: u32,
}

impl Latch {
    /// A stream that expects RTP from the SDP address `sdp` (`None`: not
    /// known yet, or a hold address) or from the signalling peer's IP.
    pub fn new(now: Instant, sdp: Option<SocketAddr>, peer_ip: IpAddr) -> Latch {
        Latch {
            sdp,
            peer_ip,
            since: now,
            state: State::Open { candidate: None },
            stats: LatchStats::default(),
        }
    }

    /// New addresses after a re-INVITE or UPDATE: latching starts over.
    pub fn reset(&mut self, now: Instant, sdp: Option<SocketAddr>, peer_ip: IpAddr) {
        self.sdp = sdp;
        self.peer_ip = peer_ip;
        self.since = now;
        self.state = State::Open { candidate: None };
    }

    /// Judges one RTP packet from `source` with `ssrc`, received at `now`.
    pub fn on_packet(&mut self, now: Instant, source: SocketAddr, ssrc: Ssrc) -> Verdict {
        if !self.expects_ip(source.ip()) {
            self.stats.refused += 1;
            return Verdict::Refused;
        }
        let exact = self.sdp == Some(source);
        match self.state {
            State::Latched { source: s, .. } if s == source => {
                // The latched socket: its SSRC may change (rule 2; and a
                // NAT'd phone's new SSRC comes from the same mapping).
                self.state = State::Latched {
                    source,
                    exact,
                    ssrc,
                };
                Verdict::Accept { latched: false }
            }
            State::Latched { exact: false, .. } | State::Open { .. } if exact => {
                self.latch(source, true, ssrc)
            }
            State::Latched { .. } => self.foreign(),
            State::Open { candidate } => {
                let count = match candidate {
                    Some(c) if c.source == source && c.ssrc == ssrc => c.count + 1,
                    _ => 1,
                };
                self.state = State::Open {
                    candidate: Some(Candidate {
                        source,
                        ssrc,
                        count,
                    }),
                };
                let same_host = self.sdp.is_some_and(|sdp| sdp.ip() == source.ip());
                let waited = now.saturating_duration_since(self.since) >= SAME_HOST_GRACE;
                if count >= CONSECUTIVE && (!same_host || waited) {
                    self.latch(source, false, ssrc)
                } else {
                    self.foreign()
                }
            }
        }
    }

    /// Whether RTCP from `source`, reporting as `sender` (the SSRC of its
    /// SR/RR), belongs to this stream: from the RTCP address we expect
    /// (`a=rtcp`, or the SDP port + 1), or from the latched stream's SSRC.
    /// Anything else is another call's report (and not life).
    pub fn accepts_rtcp(
        &self,
        source: SocketAddr,
        expected: Option<SocketAddr>,
        sender: Option<Ssrc>,
    ) -> bool {
        if !self.expects_ip(source.ip()) {
            return false;
        }
        if expected == Some(source) {
            return true;
        }
        matches!(
            (self.state, sender),
            (State::Latched { ssrc, .. }, Some(s)) if s == ssrc
        )
    }

    /// The latched source, if any.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.state {
            State::Latched { source, .. } => Some(source),
            State::Open { .. } => None,
        }
    }

    /// The counters.
    pub fn stats(&self) -> LatchStats {
        self.stats
    }

    /// Whether `ip` may send to this stream at all: the SDP address's or
    /// the signalling peer's.
    pub fn expects_ip(&self, ip: IpAddr) -> bool {
        self.sdp.map(|a| a.ip()) == Some(ip) || self.peer_ip == ip
    }

    fn latch(&mut self, source: SocketAddr, exact: bool, ssrc: Ssrc) -> Verdict {
        self.state = State::Latched {
            source,
            exact,
            ssrc,
        };
        self.stats.latches += 1;
        Verdict::Accept { latched: true }
    }

    fn foreign(&mut self) -> Verdict {
        self.stats.foreign += 1;
        Verdict::Foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn latch(now: Instant) -> Latch {
        Latch::new(now, Some(addr("198.51.100.7:4000")), PEER)
    }

    #[test]
    fn exact_sdp_address_latches_on_its_first_packet() {
        let t = Instant::now();
        let mut l = latch(t);
        assert_eq!(
            l.on_packet(t, addr("198.51.100.7:4000"), Ssrc(1)),
            Verdict::Accept { latched: true }
        );
        assert_eq!(l.source(), Some(addr("198.51.100.7:4000")));
        assert_eq!(
            l.on_packet(t, addr("198.51.100.7:4000"), Ssrc(1)),
            Verdict::Accept { latched: false }
        );
    }

    #[test]
    fn exact_latch_accepts_a_new_ssrc_from_the_same_address() {
        // sipp's uac_pcap: audio, then DTMF with another SSRC and sequence.
        let t = Instant::now();
        let mut l = latch(t);
        l.on_packet(t, addr("198.51.100.7:4000"), Ssrc(1));
        assert_eq!(
            l.on_packet(t, addr("198.51.100.7:4000"), Ssrc(0x0e05_384e)),
            Verdict::Accept { latched: false }
        );
    }

    #[test]
    fn another_port_of_the_sdp_ip_is_foreign_once_latched() {
        // The defect: a leftover stream of another call from the same IP
        // was heard, digits included.
        let t = Instant::now();
        let mut l = latch(t);
        l.on_packet(t, addr("198.51.100.7:4000"), Ssrc(1));
        for i in 0..100 {
            let at = t + Duration::from_millis(20 * i);
            assert_eq!(
                l.on_packet(at, addr("198.51.100.7:4004"), Ssrc(2)),
                Verdict::Foreign
            );
        }
        assert_eq!(l.source(), Some(addr("198.51.100.7:4000")));
        assert_eq!(l.stats().foreign, 100);
    }

    #[test]
    fn another_port_of_the_sdp_ip_does_not_win_the_race_before_the_call_sends() {
        let t = Instant::now();
        let mut l = latch(t);
        // A leftover stream arrives before the call's own first packet.
        for i in 0..10 {
            let at = t + Duration::from_millis(20 * i);
            assert_eq!(
                l.on_packet(at, addr("198.51.100.7:4004"), Ssrc(2)),
                Verdict::Foreign,
                "packet {i}"
            );
        }
        assert_eq!(
            l.on_packet(
                t + Duration::from_millis(300),
                addr("198.51.100.7:4000"),
                Ssrc(1)
            ),
            Verdict::Accept { latched: true }
        );
    }

    #[test]
    fn an_asymmetric_sender_on_the_sdp_ip_latches_after_the_grace() {
        let t = Instant::now();
        let mut l = latch(t);
        let mut at = t;
        while at < t + SAME_HOST_GRACE {
            assert_eq!(
                l.on_packet(at, addr("198.51.100.7:5000"), Ssrc(3)),
                Verdict::Foreign
            );
            at += Duration::from_millis(20);
        }
        assert_eq!(
            l.on_packet(at, addr("198.51.100.7:5000"), Ssrc(3)),
            Verdict::Accept { latched: true }
        );
    }

    #[test]
    fn nat_source_latches_after_consecutive_packets_of_one_ssrc() {
        // SDP names a private address; packets come from the signalling
        // peer's public IP.
        let t = Instant::now();
        let mut l = Latch::new(t, Some(addr("10.0.0.5:4000")), PEER);
        let nat = addr("192.0.2.1:61234");
        assert_eq!(l.on_packet(t, nat, Ssrc(9)), Verdict::Foreign);
        assert_eq!(l.on_packet(t, nat, Ssrc(9)), Verdict::Foreign);
        assert_eq!(
            l.on_packet(t, nat, Ssrc(9)),
            Verdict::Accept { latched: true }
        );
        assert_eq!(l.source(), Some(nat));
    }

    #[test]
    fn interleaved_sources_never_count_as_consecutive() {
        let t = Instant::now();
        let mut l = Latch::new(t, Some(addr("10.0.0.5:4000")), PEER);
        for _ in 0..20 {
            assert_eq!(
                l.on_packet(t, addr("192.0.2.1:61234"), Ssrc(9)),
                Verdict::Foreign
            );
            assert_eq!(
                l.on_packet(t, addr("192.0.2.1:61240"), Ssrc(8)),
                Verdict::Foreign
            );
        }
        // A change of SSRC from one source restarts the count, too.
        let src = addr("192.0.2.1:61234");
        l.on_packet(t, src, Ssrc(1));
        l.on_packet(t, src, Ssrc(1));
        assert_eq!(l.on_packet(t, src, Ssrc(2)), Verdict::Foreign);
        assert_eq!(l.source(), None);
    }

    #[test]
    fn the_sdp_address_takes_over_from_a_fallback_latch() {
        let t = Instant::now();
        let mut l = Latch::new(t, Some(addr("10.0.0.5:4000")), PEER);
        let nat = addr("192.0.2.1:61234");
        for _ in 0..3 {
            l.on_packet(t, nat, Ssrc(9));
        }
        assert_eq!(l.source(), Some(nat));
        assert_eq!(
            l.on_packet(t, addr("10.0.0.5:4000"), Ssrc(5)),
            Verdict::Accept { latched: true }
        );
        assert_eq!(l.on_packet(t, nat, Ssrc(9)), Verdict::Foreign);
    }

    #[test]
    fn other_ips_are_refused_even_before_latching() {
        let t = Instant::now();
        let mut l = latch(t);
        for _ in 0..10 {
            assert_eq!(
                l.on_packet(t, addr("203.0.113.9:4000"), Ssrc(1)),
                Verdict::Refused
            );
        }
        assert_eq!(l.source(), None);
        assert_eq!(l.stats().refused, 10);
    }

    #[test]
    fn reset_starts_latching_over_at_the_new_address() {
        let t = Instant::now();
        let mut l = latch(t);
        l.on_packet(t, addr("198.51.100.7:4000"), Ssrc(1));
        l.reset(t, Some(addr("198.51.100.8:6000")), PEER);
        assert_eq!(l.source(), None);
        assert_eq!(
            l.on_packet(t, addr("198.51.100.7:4000"), Ssrc(1)),
            Verdict::Refused
        );
        assert_eq!(
            l.on_packet(t, addr("198.51.100.8:6000"), Ssrc(1)),
            Verdict::Accept { latched: true }
        );
    }

    #[test]
    fn without_an_sdp_address_the_signalling_peer_latches_after_consecutive_packets() {
        let t = Instant::now();
        let mut l = Latch::new(t, None, PEER);
        let src = addr("192.0.2.1:7000");
        l.on_packet(t, src, Ssrc(4));
        l.on_packet(t, src, Ssrc(4));
        assert_eq!(
            l.on_packet(t, src, Ssrc(4)),
            Verdict::Accept { latched: true }
        );
    }

    #[test]
    fn rtcp_is_ours_from_the_expected_address_or_the_latched_ssrc() {
        let t = Instant::now();
        let mut l = latch(t);
        let rtcp = Some(addr("198.51.100.7:4001"));
        assert!(l.accepts_rtcp(addr("198.51.100.7:4001"), rtcp, None));
        assert!(!l.accepts_rtcp(addr("198.51.100.7:4005"), rtcp, Some(Ssrc(1))));
        l.on_packet(t, addr("198.51.100.7:4000"), Ssrc(1));
        assert!(l.accepts_rtcp(addr("198.51.100.7:4005"), rtcp, Some(Ssrc(1))));
        assert!(!l.accepts_rtcp(addr("198.51.100.7:4005"), rtcp, Some(Ssrc(2))));
        assert!(!l.accepts_rtcp(addr("203.0.113.9:4001"), rtcp, Some(Ssrc(1))));
    }
}
