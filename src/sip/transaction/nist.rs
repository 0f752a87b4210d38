//! Non-INVITE server transaction (NIST): RFC 3261 §17.2.2.

use std::time::Instant;

use bytes::Bytes;

use super::{
    Events, Reliability, StatusClass, Timer, TimerConfig, TimerTable, TransactionError, Transmits,
    TuEvent,
};

/// State of a non-INVITE server transaction (RFC 3261 Figure 8, redrawn;
/// self-loops are written beside each box).
///
/// ```text
///                      request received, passed to TU
///                                 |
///   request: absorb               v
///                           +-----------+
///                           |  Trying   |------------------------+
///                           +-----------+                        |
///                  1xx from TU: |                                | 200-699 from TU:
///                  send         |                                | send, J
///                               v                                |
///   1xx from TU: send     +------------+  200-699 from TU:       |
///   request: resend 1xx   | Proceeding |---------------------+   |
///                         +------------+  send, J            |   |
///                               |                            v   v
///           Transport Err.:     |                        +-----------+
///           inform TU           |                        | Completed |
///                               |                        +-----------+
///                               |     request: resend final    |
///                               |     J = 64·T1 (UDP) or 0     | J fires
///                               v                              v
///                         +-----------------------------------------+
///                         |                Terminated               |
///                         +-----------------------------------------+
/// ```
///
/// RFC 3261 §17.2.4 applies a transport error in any state that has sent
/// something (Proceeding, Completed): inform the TU, terminate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NistState {
    /// The request is with the TU; nothing sent yet.
    Trying,
    /// A provisional response was sent.
    Proceeding,
    /// The final response was sent; absorbing request retransmissions (J).
    Completed,
    /// Done; the endpoint may drop the transaction.
    Terminated,
}

/// A non-INVITE server transaction.
#[derive(Debug, Clone)]
pub struct NonInviteServer {
    state: NistState,
    reliability: Reliability,
    cfg: TimerConfig,
    timers: TimerTable,
    /// The last response sent, resent on request retransmissions.
    last_response: Option<Bytes>,
    transmits: Transmits,
    events: Events,
}

impl NonInviteServer {
    /// A transaction for a newly received non-INVITE request, in Trying.
    pub fn new(cfg: TimerConfig, reliability: Reliability) -> Self {
        Self {
            state: NistState::Trying,
            reliability,
            cfg,
            timers: TimerTable::default(),
            last_response: None,
            transmits: Transmits::new(),
            events: Events::new(),
        }
    }

    /// The TU sends a response with `status`, encoded as `bytes`.
    ///
    /// Errors: a status outside 100..=699, any response after the final
    /// (RFC 3261 §17.2.2: discarded), or a terminated transaction.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        bytes: Bytes,
    ) -> Result<(), TransactionError> {
        let class = StatusClass::of(status).ok_or(TransactionError::InvalidStatus(status))?;
        match (self.state, class) {
            // RFC 3261 §17.2.2: a provisional moves Trying to Proceeding;
            // further provisionals are sent as they come.
            (NistState::Trying | NistState::Proceeding, StatusClass::Provisional) => {
                self.state = NistState::Proceeding;
            }
            // RFC 3261 §17.2.2: a final moves to Completed and starts Timer J.
            (
                NistState::Trying | NistState::Proceeding,
                StatusClass::Success | StatusClass::Failure,
            ) => {
                self.state = NistState::Completed;
                if let Some(after) = self.cfg.initial(Timer::J, self.reliability) {
                    self.timers.set(Timer::J, now, after);
                }
            }
            (NistState::Completed, _) => return Err(TransactionError::FinalAlreadySent),
            (NistState::Terminated, _) => return Err(TransactionError::Terminated),
        }
        self.last_response = Some(bytes.clone());
        self.transmits.push(bytes);
        Ok(())
    }

    /// A retransmission of the request arrived. Returns true when the last
    /// response was queued again.
    pub fn handle_request_retransmission(&mut self) -> bool {
        match self.state {
            // RFC 3261 §17.2.2: Trying discards request retransmissions.
            NistState::Trying | NistState::Terminated => false,
            // RFC 3261 §17.2.2: Proceeding resends the last provisional,
            // Completed the final.
            NistState::Proceeding | NistState::Completed => match &self.last_response {
                Some(bytes) => {
                    self.transmits.push(bytes.clone());
                    true
                }
                None => false,
            },
        }
    }

    /// The transport failed to deliver a response of this transaction.
    pub fn handle_transport_error(&mut self) {
        match self.state {
            // RFC 3261 §17.2.4: inform the TU and terminate.
            NistState::Trying | NistState::Proceeding | NistState::Completed => {
                self.events.push(TuEvent::TransportError);
                self.terminate();
            }
            NistState::Terminated => {}
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..Timer::COUNT {
            let Some(timer) = self.timers.expired(now) else {
                return;
            };
            self.timers.stop(timer);
            match (self.state, timer) {
                // RFC 3261 §17.2.2: Timer J ends Completed.
                (NistState::Completed, Timer::J) => self.terminate(),
                // Stale (stopped on every transition) or never set by a NIST.
                (NistState::Trying | NistState::Proceeding | NistState::Terminated, Timer::J)
                | (
                    _,
                    Timer::A
                    | Timer::B
                    | Timer::D
                    | Timer::E
                    | Timer::F
                    | Timer::G
                    | Timer::H
                    | Timer::I
                    | Timer::K
                    | Timer::L
                    | Timer::M,
                ) => {}
            }
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
    pub fn state(&self) -> NistState {
        self.state
    }

    /// True once Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == NistState::Terminated
    }

    fn terminate(&mut self) {
        self.state = NistState::Terminated;
        self.timers.stop_all();
        self.last_response = None;
        self.events.push(TuEvent::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S100: &[u8] = b"SIP/2.0 100 Trying\r\n\r\n";
    const S200: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";
    const S481: &[u8] = b"SIP/2.0 481 Call/Transaction Does Not Exist\r\n\r\n";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transmits(m: &mut NonInviteServer) -> Vec<Bytes> {
        std::iter::from_fn(|| m.poll_transmit()).collect()
    }

    fn events(m: &mut NonInviteServer) -> Vec<TuEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    fn nist(reliability: Reliability) -> NonInviteServer {
        NonInviteServer::new(TimerConfig::default(), reliability)
    }

    #[test]
    fn retransmitted_request_in_trying_is_absorbed() {
        let mut m = nist(Reliability::Unreliable);
        assert!(!m.handle_request_retransmission());
        assert!(transmits(&mut m).is_empty());
        assert_eq!(m.state(), NistState::Trying);
    }

    #[test]
    fn retransmitted_request_gets_last_response() {
        let t0 = Instant::now();
        let mut m = nist(Reliability::Unreliable);
        m.send_response(t0, 100, Bytes::from_static(S100)).unwrap();
        assert_eq!(m.state(), NistState::Proceeding);
        assert_eq!(transmits(&mut m), [S100]);
        assert!(m.handle_request_retransmission());
        assert_eq!(transmits(&mut m), [S100]);

        m.send_response(t0 + ms(20), 200, Bytes::from_static(S200))
            .unwrap();
        assert_eq!(m.state(), NistState::Completed);
        assert_eq!(transmits(&mut m), [S200]);
        assert!(m.handle_request_retransmission());
        assert_eq!(transmits(&mut m), [S200]);
    }

    #[test]
    fn timer_j_ends_completed_at_64_t1() {
        let t0 = Instant::now();
        let mut m = nist(Reliability::Unreliable);
        m.send_response(t0, 481, Bytes::from_static(S481)).unwrap();
        assert_eq!(m.poll_timeout(), Some(t0 + ms(32_000)));
        m.handle_timeout(t0 + ms(31_999));
        assert_eq!(m.state(), NistState::Completed);
        // No retransmission of the final in a non-INVITE server transaction.
        assert_eq!(transmits(&mut m), [S481]);
        m.handle_timeout(t0 + ms(32_000));
        assert!(m.is_terminated());
        assert_eq!(events(&mut m), [TuEvent::Terminated]);
        assert_eq!(m.poll_timeout(), None);
        assert!(!m.handle_request_retransmission());
    }

    #[test]
    fn reliable_timer_j_is_zero() {
        let t0 = Instant::now();
        let mut m = nist(Reliability::Reliable);
        m.send_response(t0, 200, Bytes::from_static(S200)).unwrap();
        assert_eq!(m.poll_timeout(), Some(t0));
        m.handle_timeout(t0);
        assert!(m.is_terminated());
        assert_eq!(transmits(&mut m), [S200]);
        assert_eq!(events(&mut m), [TuEvent::Terminated]);
    }

    #[test]
    fn rejects_second_final() {
        let t0 = Instant::now();
        let mut m = nist(Reliability::Unreliable);
        m.send_response(t0, 200, Bytes::from_static(S200)).unwrap();
        assert_eq!(
            m.send_response(t0, 481, Bytes::from_static(S481)),
            Err(TransactionError::FinalAlreadySent)
        );
        assert_eq!(
            m.send_response(t0, 100, Bytes::from_static(S100)),
            Err(TransactionError::FinalAlreadySent)
        );
        assert_eq!(transmits(&mut m), [S200]);
        // The retransmission answer is still the first final.
        assert!(m.handle_request_retransmission());
        assert_eq!(transmits(&mut m), [S200]);
    }

    #[test]
    fn rejects_status_outside_100_to_699() {
        let t0 = Instant::now();
        let mut m = nist(Reliability::Unreliable);
        assert_eq!(
            m.send_response(t0, 42, Bytes::from_static(S200)),
            Err(TransactionError::InvalidStatus(42))
        );
        assert_eq!(m.state(), NistState::Trying);
    }

    #[test]
    fn rejects_response_after_termination() {
        let t0 = Instant::now();
        let mut m = nist(Reliability::Reliable);
        m.send_response(t0, 200, Bytes::from_static(S200)).unwrap();
        m.handle_timeout(t0);
        assert_eq!(
            m.send_response(t0, 200, Bytes::from_static(S200)),
            Err(TransactionError::Terminated)
        );
    }

    #[test]
    fn transport_error_informs_tu_and_terminates() {
        let t0 = Instant::now();
        let mut m = nist(Reliability::Unreliable);
        m.send_response(t0, 200, Bytes::from_static(S200)).unwrap();
        m.handle_transport_error();
        assert!(m.is_terminated());
        assert_eq!(
            events(&mut m),
            [TuEvent::TransportError, TuEvent::Terminated]
        );
        assert_eq!(m.poll_timeout(), None);
        m.handle_transport_error();
        assert!(events(&mut m).is_empty());
    }
}
