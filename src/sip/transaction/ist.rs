//! INVITE server transaction (IST): RFC 3261 §17.2.1 as updated by RFC 6026
//! §7.1 (the Accepted state and Timer L).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Events, Reliability, StatusClass, Timer, TimerConfig, TimerTable, TransactionError, Transmits,
    TuEvent, backoff,
};

/// State of an INVITE server transaction (RFC 6026 Figure 7, redrawn;
/// self-loops are written beside each box).
///
/// ```text
///                             INVITE received, passed to TU
///                                        |
///       1xx from TU: send                v
///       INVITE: resend last 1xx   +------------+  Transport Err.: inform TU
///                                 | Proceeding |-------------------------------------+
///                                 +------------+                                     |
///              300-699 from TU:      |      |  2xx from TU: send once,               |
///              send, G = T1 (UDP),   |      |  L = 64·T1 (RFC 6026)                  |
///              H = 64·T1             |      +-------------+                          |
///                                    v                    v                          |
///       INVITE: resend final  +-----------+        +------------+  INVITE: absorb    |
///       G fires: resend,      | Completed |        |  Accepted  |  ACK: to TU        |
///         G = min(2G, T2)     +-----------+        +------------+  2xx from TU: send |
///                               |       |                 |        Transport Err.:   |
///             ACK: absorb,      |       | H fires or      |          inform TU       |
///             I = T4 (UDP)      |       | Transport Err.: |                          |
///               or 0            v       | inform TU       |                          |
///       ACK, INVITE:    +-----------+   |                 |                          |
///         absorb        | Confirmed |   |                 |                          |
///                       +-----------+   |                 |                          |
///                     I fires |         |         L fires |                          |
///                             v         v                 v                          v
///                       +------------------------------------------------------------+
///                       |                         Terminated                         |
///                       +------------------------------------------------------------+
/// ```
///
/// The 2xx is sent once by the transaction; its retransmission until the
/// ACK is the UAS core's job (RFC 3261 §13.3.1.4, [`AckWait`](super::AckWait)).
/// Proceeding has no timer: the TU must answer (or send 487 after CANCEL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IstState {
    /// The INVITE is with the TU; provisional responses are relayed.
    Proceeding,
    /// A 300-699 final was sent; retransmitting it until the ACK (G, H).
    Completed,
    /// The ACK for the non-2xx final arrived; absorbing ACK retransmissions (I).
    Confirmed,
    /// RFC 6026: a 2xx was sent; absorbing INVITE retransmissions (L).
    Accepted,
    /// Done; the endpoint may drop the transaction.
    Terminated,
}

/// What a retransmitted INVITE led to, returned by
/// [`InviteServer::handle_request_retransmission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRetransmission {
    /// The last response was queued again (drain `poll_transmit`).
    Resent,
    /// Absorbed: nothing to send and nothing for the TU.
    Absorbed,
    /// Absorbed by the Accepted state and not passed to the TU as a new
    /// request (RFC 6026 §7.1). The UAS core need not react: its 2xx
    /// retransmission schedule (§13.3.1.4) continues until the ACK. It MAY
    /// resend its 2xx at once — a repeated INVITE shows the peer has not seen
    /// it — with [`AckWait::handle_request_retransmission`](super::AckWait::handle_request_retransmission).
    Accepted,
}

/// Where an ACK matched to this transaction goes, returned by
/// [`InviteServer::handle_ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckDisposition {
    /// The transaction consumed it (ACK for a non-2xx final, or a stray).
    Absorbed,
    /// It acknowledges the 2xx and belongs to the TU (RFC 6026 §7.1: "MUST
    /// be passed directly to the TU").
    ToTu,
}

/// An INVITE server transaction.
#[derive(Debug, Clone)]
pub struct InviteServer {
    state: IstState,
    reliability: Reliability,
    cfg: TimerConfig,
    timers: TimerTable,
    /// The response a retransmitted INVITE gets again: the latest 1xx in
    /// Proceeding, the final in Completed, nothing otherwise.
    last_response: Option<Bytes>,
    /// The current Timer G interval.
    g_interval: Duration,
    transmits: Transmits,
    events: Events,
}

impl InviteServer {
    /// A transaction for a newly received INVITE, in Proceeding.
    ///
    /// RFC 3261 §17.2.1 wants a 100 Trying unless the TU answers within
    /// 200 ms; the machine cannot build one, so the endpoint passes its
    /// 100 through [`send_response`](Self::send_response) right away.
    pub fn new(cfg: TimerConfig, reliability: Reliability) -> Self {
        Self {
            state: IstState::Proceeding,
            reliability,
            cfg,
            timers: TimerTable::default(),
            last_response: None,
            g_interval: cfg.t1,
            transmits: Transmits::new(),
            events: Events::new(),
        }
    }

    /// The TU sends a response with `status`, encoded as `bytes`.
    ///
    /// Errors: a status outside 100..=699, anything but a 2xx after a final
    /// response (a 2xx in Accepted is the TU's retransmission and is sent,
    /// RFC 6026 §7.1), or a terminated transaction.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        bytes: Bytes,
    ) -> Result<(), TransactionError> {
        let class = StatusClass::of(status).ok_or(TransactionError::InvalidStatus(status))?;
        match (self.state, class) {
            // RFC 3261 §17.2.1: provisional responses are sent, not
            // retransmitted, and remembered for INVITE retransmissions.
            (IstState::Proceeding, StatusClass::Provisional) => {
                self.last_response = Some(bytes.clone());
                self.transmits.push(bytes);
            }
            // RFC 6026 §7.1: a 2xx moves to Accepted and starts Timer L; the
            // transaction sends it once and never retransmits it itself.
            (IstState::Proceeding, StatusClass::Success) => {
                self.last_response = None;
                self.transmits.push(bytes);
                self.state = IstState::Accepted;
                self.arm(now, Timer::L);
            }
            // RFC 3261 §17.2.1: 300-699 → Completed; Timer G (unreliable
            // only) retransmits, Timer H bounds the wait for the ACK.
            (IstState::Proceeding, StatusClass::Failure) => {
                self.last_response = Some(bytes.clone());
                self.transmits.push(bytes);
                self.state = IstState::Completed;
                self.g_interval = self.cfg.t1;
                self.arm(now, Timer::G);
                self.arm(now, Timer::H);
            }
            // RFC 6026 §7.1: 2xx retransmissions from the TU in Accepted
            // MUST be passed to the transport.
            (IstState::Accepted, StatusClass::Success) => self.transmits.push(bytes),
            (IstState::Accepted, StatusClass::Provisional | StatusClass::Failure)
            | (IstState::Completed | IstState::Confirmed, _) => {
                return Err(TransactionError::FinalAlreadySent);
            }
            (IstState::Terminated, _) => return Err(TransactionError::Terminated),
        }
        Ok(())
    }

    /// A retransmission of the INVITE arrived (matched by the endpoint).
    pub fn handle_request_retransmission(&mut self) -> RequestRetransmission {
        match self.state {
            // RFC 3261 §17.2.1: resend the most recent provisional (if the
            // TU has sent none yet there is nothing to resend).
            IstState::Proceeding => match &self.last_response {
                Some(bytes) => {
                    self.transmits.push(bytes.clone());
                    RequestRetransmission::Resent
                }
                None => RequestRetransmission::Absorbed,
            },
            // RFC 3261 §17.2.1: in Completed, resend the final response.
            IstState::Completed => match &self.last_response {
                Some(bytes) => {
                    self.transmits.push(bytes.clone());
                    RequestRetransmission::Resent
                }
                None => RequestRetransmission::Absorbed,
            },
            // RFC 3261 §17.2.1: Confirmed absorbs; RFC 6026 §7.1: so does
            // Accepted, and the INVITE MUST NOT reach the TU.
            IstState::Accepted => RequestRetransmission::Accepted,
            IstState::Confirmed | IstState::Terminated => RequestRetransmission::Absorbed,
        }
    }

    /// An ACK matched this transaction.
    pub fn handle_ack(&mut self, now: Instant) -> AckDisposition {
        match self.state {
            // RFC 3261 §17.2.1: ACK in Completed → Confirmed; G and H stop,
            // Timer I absorbs ACK retransmissions (T4, zero if reliable).
            IstState::Completed => {
                self.state = IstState::Confirmed;
                self.last_response = None;
                self.timers.stop(Timer::G);
                self.timers.stop(Timer::H);
                self.arm(now, Timer::I);
                AckDisposition::Absorbed
            }
            // RFC 6026 §7.1: ACKs in Accepted go to the TU.
            IstState::Accepted => AckDisposition::ToTu,
            // An ACK before any final response acknowledges nothing; in
            // Confirmed it is a retransmission (§17.2.1: absorbed).
            IstState::Proceeding | IstState::Confirmed | IstState::Terminated => {
                AckDisposition::Absorbed
            }
        }
    }

    /// The transport failed to deliver a response of this transaction.
    pub fn handle_transport_error(&mut self) {
        match self.state {
            // RFC 3261 §17.2.4: inform the TU, go to Terminated.
            IstState::Proceeding | IstState::Completed => {
                self.events.push(TuEvent::TransportError);
                self.terminate();
            }
            // RFC 6026 Figure 7: Accepted informs the TU and stays.
            IstState::Accepted => self.events.push(TuEvent::TransportError),
            // Confirmed sends nothing: the report is stale.
            IstState::Confirmed | IstState::Terminated => {}
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: even a zero retransmission interval cannot spin here.
        for _ in 0..Timer::COUNT {
            let Some(timer) = self.timers.expired(now) else {
                return;
            };
            self.timers.stop(timer);
            self.on_timer(now, timer);
        }
    }

    /// The next bytes to pass to the transport.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TuEvent> {
        self.events.pop()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// The current state.
    pub fn state(&self) -> IstState {
        self.state
    }

    /// True once Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == IstState::Terminated
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (self.state, timer) {
            // RFC 3261 §17.2.1: Timer G resends the final response and
            // doubles, capped at T2.
            (IstState::Completed, Timer::G) => {
                if let Some(bytes) = &self.last_response {
                    self.transmits.push(bytes.clone());
                }
                self.g_interval = backoff(self.g_interval, Some(self.cfg.t2));
                self.timers.set(Timer::G, now, self.g_interval);
            }
            // RFC 3261 §17.2.1: Timer H — the ACK never came.
            (IstState::Completed, Timer::H) => {
                self.events.push(TuEvent::Timeout(Timer::H));
                self.terminate();
            }
            // RFC 3261 §17.2.1: Timer I ends Confirmed.
            (IstState::Confirmed, Timer::I) => self.terminate(),
            // RFC 6026 §7.1: Timer L ends Accepted.
            (IstState::Accepted, Timer::L) => self.terminate(),
            // Timers this state does not run (stopped on every transition)
            // and timers an IST never sets.
            (
                IstState::Proceeding
                | IstState::Confirmed
                | IstState::Accepted
                | IstState::Terminated,
                Timer::G | Timer::H,
            )
            | (
                IstState::Proceeding
                | IstState::Completed
                | IstState::Accepted
                | IstState::Terminated,
                Timer::I,
            )
            | (
                IstState::Proceeding
                | IstState::Completed
                | IstState::Confirmed
                | IstState::Terminated,
                Timer::L,
            )
            | (
                _,
                Timer::A
                | Timer::B
                | Timer::D
                | Timer::E
                | Timer::F
                | Timer::J
                | Timer::K
                | Timer::M,
            ) => {}
        }
    }

    /// Arms `timer` with its initial value, unless it does not run on this
    /// transport.
    fn arm(&mut self, now: Instant, timer: Timer) {
        if let Some(after) = self.cfg.initial(timer, self.reliability) {
            self.timers.set(timer, now, after);
        }
    }

    fn terminate(&mut self) {
        self.state = IstState::Terminated;
        self.timers.stop_all();
        self.last_response = None;
        self.events.push(TuEvent::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S180: &[u8] = b"SIP/2.0 180 Ringing\r\n\r\n";
    const S183: &[u8] = b"SIP/2.0 183 Session Progress\r\n\r\n";
    const S200: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";
    const S486: &[u8] = b"SIP/2.0 486 Busy Here\r\n\r\n";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transmits(m: &mut InviteServer) -> Vec<Bytes> {
        std::iter::from_fn(|| m.poll_transmit()).collect()
    }

    fn events(m: &mut InviteServer) -> Vec<TuEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    fn udp() -> InviteServer {
        InviteServer::new(TimerConfig::default(), Reliability::Unreliable)
    }

    fn tcp() -> InviteServer {
        InviteServer::new(TimerConfig::default(), Reliability::Reliable)
    }

    #[test]
    fn retransmitted_invite_in_proceeding_gets_latest_provisional() {
        let t0 = Instant::now();
        let mut ist = udp();
        // Before any provisional there is nothing to resend.
        assert_eq!(
            ist.handle_request_retransmission(),
            RequestRetransmission::Absorbed
        );
        assert!(transmits(&mut ist).is_empty());

        ist.send_response(t0, 180, Bytes::from_static(S180))
            .unwrap();
        assert_eq!(transmits(&mut ist), [S180]);
        // Provisionals are not retransmitted by the transaction.
        assert_eq!(ist.poll_timeout(), None);

        assert_eq!(
            ist.handle_request_retransmission(),
            RequestRetransmission::Resent
        );
        assert_eq!(transmits(&mut ist), [S180]);

        ist.send_response(t0 + ms(10), 183, Bytes::from_static(S183))
            .unwrap();
        assert_eq!(transmits(&mut ist), [S183]);
        assert_eq!(
            ist.handle_request_retransmission(),
            RequestRetransmission::Resent
        );
        assert_eq!(transmits(&mut ist), [S183]);
        assert_eq!(ist.state(), IstState::Proceeding);
        assert!(events(&mut ist).is_empty());
    }

    #[test]
    fn non_2xx_final_retransmitted_on_timer_g_until_timer_h() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.send_response(t0, 486, Bytes::from_static(S486))
            .unwrap();
        assert_eq!(ist.state(), IstState::Completed);
        assert_eq!(transmits(&mut ist), [S486]);

        // G: intervals T1, 2T1, 4T1, then T2 capped; H at 64·T1 = 32 s.
        let mut fired = Vec::new();
        while let Some(at) = ist.poll_timeout() {
            ist.handle_timeout(at);
            let sent = transmits(&mut ist);
            if !sent.is_empty() {
                assert_eq!(sent, [S486]);
                fired.push(at - t0);
            }
            if ist.is_terminated() {
                assert_eq!(at, t0 + ms(32_000));
                break;
            }
        }
        let expected: Vec<Duration> = [500, 1500, 3500, 7500, 11_500, 15_500]
            .into_iter()
            .chain([19_500, 23_500, 27_500, 31_500])
            .map(ms)
            .collect();
        assert_eq!(fired, expected);
        assert_eq!(
            events(&mut ist),
            [TuEvent::Timeout(Timer::H), TuEvent::Terminated]
        );
        assert_eq!(ist.poll_timeout(), None);
    }

    #[test]
    fn timer_g_does_not_fire_early() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.send_response(t0, 486, Bytes::from_static(S486))
            .unwrap();
        transmits(&mut ist);
        ist.handle_timeout(t0 + ms(499));
        assert!(transmits(&mut ist).is_empty());
        ist.handle_timeout(t0 + ms(500));
        assert_eq!(transmits(&mut ist), [S486]);
        assert_eq!(ist.poll_timeout(), Some(t0 + ms(1500)));
    }

    #[test]
    fn retransmitted_invite_in_completed_gets_final() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.send_response(t0, 180, Bytes::from_static(S180))
            .unwrap();
        ist.send_response(t0, 486, Bytes::from_static(S486))
            .unwrap();
        assert_eq!(transmits(&mut ist), [S180, S486]);
        assert_eq!(
            ist.handle_request_retransmission(),
            RequestRetransmission::Resent
        );
        assert_eq!(transmits(&mut ist), [S486]);
        // The retransmission does not disturb Timer G.
        assert_eq!(ist.poll_timeout(), Some(t0 + ms(500)));
    }

    #[test]
    fn ack_in_completed_stops_retransmission_then_timer_i() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.send_response(t0, 486, Bytes::from_static(S486))
            .unwrap();
        ist.handle_timeout(t0 + ms(500));
        assert_eq!(transmits(&mut ist), [S486, S486]);

        let t_ack = t0 + ms(700);
        assert_eq!(ist.handle_ack(t_ack), AckDisposition::Absorbed);
        assert_eq!(ist.state(), IstState::Confirmed);
        // Only Timer I = T4 remains.
        assert_eq!(ist.poll_timeout(), Some(t_ack + ms(5000)));

        // ACK and INVITE retransmissions are absorbed in Confirmed.
        assert_eq!(ist.handle_ack(t0 + ms(900)), AckDisposition::Absorbed);
        assert_eq!(
            ist.handle_request_retransmission(),
            RequestRetransmission::Absorbed
        );
        ist.handle_timeout(t0 + ms(1500)); // when G would have fired
        assert!(transmits(&mut ist).is_empty());
        assert!(events(&mut ist).is_empty());

        ist.handle_timeout(t_ack + ms(4999));
        assert_eq!(ist.state(), IstState::Confirmed);
        ist.handle_timeout(t_ack + ms(5000));
        assert_eq!(ist.state(), IstState::Terminated);
        assert_eq!(events(&mut ist), [TuEvent::Terminated]);
        assert_eq!(ist.poll_timeout(), None);
    }

    #[test]
    fn two_xx_enters_accepted_absorbs_invite_then_timer_l() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.send_response(t0, 180, Bytes::from_static(S180))
            .unwrap();
        let t_ok = t0 + ms(3000);
        ist.send_response(t_ok, 200, Bytes::from_static(S200))
            .unwrap();
        assert_eq!(ist.state(), IstState::Accepted);
        assert_eq!(transmits(&mut ist), [S180, S200]);
        assert_eq!(ist.poll_timeout(), Some(t_ok + ms(32_000)));

        // The transaction never retransmits the 2xx itself.
        ist.handle_timeout(t_ok + ms(500));
        ist.handle_timeout(t_ok + ms(1500));
        assert!(transmits(&mut ist).is_empty());

        assert_eq!(
            ist.handle_request_retransmission(),
            RequestRetransmission::Accepted
        );
        assert!(transmits(&mut ist).is_empty());

        // The TU's own 2xx retransmission passes through.
        ist.send_response(t_ok + ms(500), 200, Bytes::from_static(S200))
            .unwrap();
        assert_eq!(transmits(&mut ist), [S200]);

        // The ACK for the 2xx belongs to the TU.
        assert_eq!(ist.handle_ack(t_ok + ms(600)), AckDisposition::ToTu);
        assert_eq!(ist.state(), IstState::Accepted);

        ist.handle_timeout(t_ok + ms(31_999));
        assert_eq!(ist.state(), IstState::Accepted);
        ist.handle_timeout(t_ok + ms(32_000));
        assert_eq!(ist.state(), IstState::Terminated);
        assert_eq!(events(&mut ist), [TuEvent::Terminated]);
    }

    #[test]
    fn rejects_non_2xx_after_2xx() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.send_response(t0, 200, Bytes::from_static(S200))
            .unwrap();
        assert_eq!(
            ist.send_response(t0, 180, Bytes::from_static(S180)),
            Err(TransactionError::FinalAlreadySent)
        );
        assert_eq!(
            ist.send_response(t0, 486, Bytes::from_static(S486)),
            Err(TransactionError::FinalAlreadySent)
        );
        assert_eq!(transmits(&mut ist), [S200]);
    }

    #[test]
    fn rejects_second_final_in_completed() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.send_response(t0, 486, Bytes::from_static(S486))
            .unwrap();
        for status in [180, 200, 603] {
            assert_eq!(
                ist.send_response(t0, status, Bytes::from_static(S200)),
                Err(TransactionError::FinalAlreadySent)
            );
        }
        assert_eq!(transmits(&mut ist), [S486]);
    }

    #[test]
    fn rejects_status_outside_100_to_699() {
        let t0 = Instant::now();
        let mut ist = udp();
        for status in [0, 99, 700, u16::MAX] {
            assert_eq!(
                ist.send_response(t0, status, Bytes::from_static(S200)),
                Err(TransactionError::InvalidStatus(status))
            );
        }
        assert_eq!(ist.state(), IstState::Proceeding);
        assert!(transmits(&mut ist).is_empty());
    }

    #[test]
    fn rejects_response_after_termination() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.handle_transport_error();
        assert_eq!(
            ist.send_response(t0, 180, Bytes::from_static(S180)),
            Err(TransactionError::Terminated)
        );
    }

    #[test]
    fn ack_in_proceeding_is_absorbed() {
        let t0 = Instant::now();
        let mut ist = udp();
        assert_eq!(ist.handle_ack(t0), AckDisposition::Absorbed);
        assert_eq!(ist.state(), IstState::Proceeding);
    }

    #[test]
    fn transport_error_terminates_proceeding_and_completed() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.handle_transport_error();
        assert_eq!(
            events(&mut ist),
            [TuEvent::TransportError, TuEvent::Terminated]
        );

        let mut ist = udp();
        ist.send_response(t0, 486, Bytes::from_static(S486))
            .unwrap();
        ist.handle_transport_error();
        assert!(ist.is_terminated());
        assert_eq!(
            events(&mut ist),
            [TuEvent::TransportError, TuEvent::Terminated]
        );
        assert_eq!(ist.poll_timeout(), None);
    }

    #[test]
    fn transport_error_in_accepted_informs_tu_and_stays() {
        let t0 = Instant::now();
        let mut ist = udp();
        ist.send_response(t0, 200, Bytes::from_static(S200))
            .unwrap();
        ist.handle_transport_error();
        assert_eq!(ist.state(), IstState::Accepted);
        assert_eq!(events(&mut ist), [TuEvent::TransportError]);
        assert_eq!(ist.poll_timeout(), Some(t0 + ms(32_000)));
    }

    #[test]
    fn reliable_non_2xx_is_not_retransmitted_and_timer_i_is_zero() {
        let t0 = Instant::now();
        let mut ist = tcp();
        ist.send_response(t0, 486, Bytes::from_static(S486))
            .unwrap();
        assert_eq!(transmits(&mut ist), [S486]);
        // No Timer G: the only deadline is H.
        assert_eq!(ist.poll_timeout(), Some(t0 + ms(32_000)));

        let t_ack = t0 + ms(80);
        ist.handle_ack(t_ack);
        assert_eq!(ist.state(), IstState::Confirmed);
        assert_eq!(ist.poll_timeout(), Some(t_ack));
        ist.handle_timeout(t_ack);
        assert!(ist.is_terminated());
        assert!(transmits(&mut ist).is_empty());
        assert_eq!(events(&mut ist), [TuEvent::Terminated]);
    }

    #[test]
    fn reliable_timer_h_still_applies() {
        let t0 = Instant::now();
        let mut ist = tcp();
        ist.send_response(t0, 486, Bytes::from_static(S486))
            .unwrap();
        transmits(&mut ist);
        ist.handle_timeout(t0 + ms(32_000));
        assert!(transmits(&mut ist).is_empty());
        assert_eq!(
            events(&mut ist),
            [TuEvent::Timeout(Timer::H), TuEvent::Terminated]
        );
    }

    #[test]
    fn reliable_2xx_keeps_timer_l() {
        let t0 = Instant::now();
        let mut ist = tcp();
        ist.send_response(t0, 200, Bytes::from_static(S200))
            .unwrap();
        assert_eq!(ist.poll_timeout(), Some(t0 + ms(32_000)));
        ist.handle_timeout(t0 + ms(32_000));
        assert!(ist.is_terminated());
    }
}
