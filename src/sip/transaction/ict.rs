//! INVITE client transaction (ICT): RFC 3261 §17.1.1 as updated by RFC 6026
//! §7.2 (the Accepted state and Timer M).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Events, Reliability, ResponseAction, StatusClass, Timer, TimerConfig, TimerTable,
    TransactionError, Transmits, TuEvent, backoff,
};

/// State of an INVITE client transaction (RFC 6026 Figure 5, redrawn;
/// self-loops are written beside each box).
///
/// ```text
///                             INVITE from TU: send,
///                             A = T1 (UDP), B = 64·T1
///                                        |
///       A fires: resend INVITE,          v
///         A = 2A (no cap)          +-----------+  B fires or Transport Err.:
///                                  |  Calling  |  inform TU
///                                  +-----------+--------------------------------------+
///                          1xx: to TU |     |  2xx: to TU, M = 64·T1 (RFC 6026)       |
///                                     v     +-----------------------+                 |
///       1xx: to TU             +------------+                       |                 |
///                              | Proceeding |  2xx: to TU, M        |                 |
///                              +------------+-----------------------+                 |
///         300-699 (in Calling       |                               |                 |
///         too): send ACK, to TU,    |                               v                 |
///         D = 32 s (UDP) or 0       |                        +------------+           |
///                                   v                        |  Accepted  |           |
///       300-699: resend ACK   +-----------+                  +------------+           |
///         (not to TU)         | Completed |    2xx: to TU, the TU   |                 |
///                             +-----------+    ACKs each one        |                 |
///                               |       |      (§13.2.2.4)          |                 |
///                       D fires |       | Transport Err.:   M fires |                 |
///                               |       | inform TU                 |                 |
///                               v       v                           v                 v
///                             +-------------------------------------------------------+
///                             |                      Terminated                       |
///                             +-------------------------------------------------------+
/// ```
///
/// Timer B runs in Calling only: once a provisional arrived, the TU bounds
/// the wait for a final itself (and CANCELs). A transport error in
/// Proceeding also informs the TU and terminates (RFC 3261 §17.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IctState {
    /// INVITE sent, no response yet; retransmitting on Timer A.
    Calling,
    /// A provisional arrived; waiting for a final response.
    Proceeding,
    /// A 300-699 final arrived and was ACKed; absorbing its retransmissions (D).
    Completed,
    /// RFC 6026: a 2xx arrived; passing further 2xx to the TU (M).
    Accepted,
    /// Done; the endpoint may drop the transaction.
    Terminated,
}

/// An INVITE client transaction.
#[derive(Debug, Clone)]
pub struct InviteClient {
    state: IctState,
    reliability: Reliability,
    cfg: TimerConfig,
    timers: TimerTable,
    /// What this state resends: the INVITE in Calling (Timer A), the ACK in
    /// Completed (on each retransmitted final); nothing otherwise.
    retransmit: Option<Bytes>,
    /// The current Timer A interval.
    a_interval: Duration,
    transmits: Transmits,
    events: Events,
}

impl InviteClient {
    /// Starts a transaction for `invite` (already encoded): queues it for
    /// transmission, arms Timer A (unreliable transport only) and Timer B.
    pub fn new(now: Instant, cfg: TimerConfig, reliability: Reliability, invite: Bytes) -> Self {
        let mut ict = Self {
            state: IctState::Calling,
            reliability,
            cfg,
            timers: TimerTable::default(),
            retransmit: None,
            a_interval: cfg.t1,
            transmits: Transmits::new(),
            events: Events::new(),
        };
        // RFC 3261 §17.1.1.2: send, start A (unreliable) and B.
        if let Some(a) = cfg.initial(Timer::A, reliability) {
            ict.timers.set(Timer::A, now, a);
            ict.retransmit = Some(invite.clone());
        }
        ict.arm(now, Timer::B);
        ict.transmits.push(invite);
        ict
    }

    /// A response matched this transaction (RFC 3261 §17.1.3). Tells the
    /// endpoint whether to pass it up to the TU.
    ///
    /// The ACK for a 300-699 final belongs to the transaction (RFC 3261
    /// §17.1.1.3) but is built by the endpoint, which knows the messages:
    /// `build_ack` is called exactly once, on the first 300-699 final, and
    /// the bytes it returns are sent at once and resent for every
    /// retransmission of that final (drain `poll_transmit`). It is not
    /// called for any other response. A 2xx is never ACKed here: the TU
    /// ACKs each 2xx itself (§13.2.2.4).
    ///
    /// Errors: a status outside 100..=699 (peer fault); the transaction is
    /// unchanged.
    pub fn handle_response<F>(
        &mut self,
        now: Instant,
        status: u16,
        build_ack: F,
    ) -> Result<ResponseAction, TransactionError>
    where
        F: FnOnce() -> Bytes,
    {
        let class = StatusClass::of(status).ok_or(TransactionError::PeerInvalidStatus(status))?;
        let action = match (self.state, class) {
            // RFC 3261 §17.1.1.2: a provisional in Calling → Proceeding;
            // retransmissions stop, and Timer B only runs in Calling.
            (IctState::Calling, StatusClass::Provisional) => {
                self.state = IctState::Proceeding;
                self.timers.stop(Timer::A);
                self.timers.stop(Timer::B);
                self.retransmit = None;
                ResponseAction::PassToTu
            }
            (IctState::Proceeding, StatusClass::Provisional) => ResponseAction::PassToTu,
            // RFC 6026 §7.2: a 2xx in Calling or Proceeding → Accepted,
            // Timer M; the response goes to the TU.
            (IctState::Calling | IctState::Proceeding, StatusClass::Success) => {
                self.timers.stop(Timer::A);
                self.timers.stop(Timer::B);
                self.retransmit = None;
                self.state = IctState::Accepted;
                self.arm(now, Timer::M);
                ResponseAction::PassToTu
            }
            // RFC 3261 §17.1.1.2: 300-699 → Completed: send the ACK, pass
            // the response up, start Timer D.
            (IctState::Calling | IctState::Proceeding, StatusClass::Failure) => {
                self.timers.stop(Timer::A);
                self.timers.stop(Timer::B);
                let ack = build_ack();
                self.transmits.push(ack.clone());
                self.retransmit = Some(ack);
                self.state = IctState::Completed;
                self.arm(now, Timer::D);
                ResponseAction::PassToTu
            }
            // RFC 3261 §17.1.1.2: a retransmitted final in Completed gets
            // the ACK again and is not passed to the TU.
            (IctState::Completed, StatusClass::Failure) => {
                if let Some(ack) = &self.retransmit {
                    self.transmits.push(ack.clone());
                }
                ResponseAction::Absorb
            }
            // RFC 3261 and 6026 leave a 2xx after a non-2xx final undefined
            // (another fork answering). The TU gets it so that it can ACK and
            // BYE the unwanted dialog (§13.2.2.4) instead of leaving the far
            // end retransmitting its 2xx.
            (IctState::Completed, StatusClass::Success) => ResponseAction::PassToTu,
            // RFC 6026 §7.2: every 2xx in Accepted goes to the TU, which
            // ACKs each one (RFC 3261 §13.2.2.4).
            (IctState::Accepted, StatusClass::Success) => ResponseAction::PassToTu,
            // Late provisionals, and anything after Terminated (the endpoint
            // should have dropped the transaction), are absorbed. A non-2xx
            // after a 2xx is a broken upstream; nothing to acknowledge.
            (IctState::Completed | IctState::Accepted, StatusClass::Provisional)
            | (IctState::Accepted, StatusClass::Failure)
            | (IctState::Terminated, _) => ResponseAction::Absorb,
        };
        Ok(action)
    }

    /// The transport failed to deliver the INVITE or the ACK.
    pub fn handle_transport_error(&mut self) {
        match self.state {
            // RFC 3261 §17.1.4: inform the TU and terminate.
            IctState::Calling | IctState::Proceeding | IctState::Completed => {
                self.events.push(TuEvent::TransportError);
                self.terminate();
            }
            // Accepted sends nothing (the 2xx ACK is the TU's): stale report.
            IctState::Accepted | IctState::Terminated => {}
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

    /// The next event for the TU. [`TuEvent::Timeout`] with Timer B means
    /// the endpoint hands the TU a 408 (RFC 3261 §8.1.3.1).
    pub fn poll_event(&mut self) -> Option<TuEvent> {
        self.events.pop()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// The current state.
    pub fn state(&self) -> IctState {
        self.state
    }

    /// True once Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == IctState::Terminated
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (self.state, timer) {
            // RFC 3261 §17.1.1.2: Timer A resends the INVITE and doubles,
            // with no T2 cap for INVITE.
            (IctState::Calling, Timer::A) => {
                if let Some(invite) = &self.retransmit {
                    self.transmits.push(invite.clone());
                }
                self.a_interval = backoff(self.a_interval, None);
                self.timers.set(Timer::A, now, self.a_interval);
            }
            // RFC 3261 §17.1.1.2: Timer B — no response; the TU gets a timeout.
            (IctState::Calling, Timer::B) => {
                self.events.push(TuEvent::Timeout(Timer::B));
                self.terminate();
            }
            // RFC 3261 §17.1.1.2: Timer D ends Completed.
            (IctState::Completed, Timer::D) => self.terminate(),
            // RFC 6026 §7.2: Timer M ends Accepted.
            (IctState::Accepted, Timer::M) => self.terminate(),
            // Timers this state does not run (stopped on every transition)
            // and timers an ICT never sets.
            (
                IctState::Proceeding
                | IctState::Completed
                | IctState::Accepted
                | IctState::Terminated,
                Timer::A | Timer::B,
            )
            | (
                IctState::Calling
                | IctState::Proceeding
                | IctState::Accepted
                | IctState::Terminated,
                Timer::D,
            )
            | (
                IctState::Calling
                | IctState::Proceeding
                | IctState::Completed
                | IctState::Terminated,
                Timer::M,
            )
            | (
                _,
                Timer::E
                | Timer::F
                | Timer::G
                | Timer::H
                | Timer::I
                | Timer::J
                | Timer::K
                | Timer::L,
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
        self.state = IctState::Terminated;
        self.timers.stop_all();
        self.retransmit = None;
        self.events.push(TuEvent::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const INVITE: &[u8] = b"INVITE sip:a@example.com SIP/2.0\r\n\r\n";
    const ACK: &[u8] = b"ACK sip:a@example.com SIP/2.0\r\n\r\n";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transmits(m: &mut InviteClient) -> Vec<Bytes> {
        std::iter::from_fn(|| m.poll_transmit()).collect()
    }

    fn events(m: &mut InviteClient) -> Vec<TuEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    fn ict(t0: Instant, reliability: Reliability) -> InviteClient {
        let mut m = InviteClient::new(
            t0,
            TimerConfig::default(),
            reliability,
            Bytes::from_static(INVITE),
        );
        assert_eq!(transmits(&mut m), [INVITE]);
        m
    }

    /// A response without an ACK to build: fails the test if asked for one.
    fn respond(m: &mut InviteClient, now: Instant, status: u16) -> ResponseAction {
        let asked = Cell::new(false);
        let action = m
            .handle_response(now, status, || {
                asked.set(true);
                Bytes::new()
            })
            .unwrap();
        assert!(!asked.get(), "ACK built for {status}");
        action
    }

    #[test]
    fn timer_a_doubles_without_cap_until_timer_b() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        let mut fired = Vec::new();
        while let Some(at) = m.poll_timeout() {
            m.handle_timeout(at);
            let sent = transmits(&mut m);
            if !sent.is_empty() {
                assert_eq!(sent, [INVITE]);
                fired.push(at - t0);
            }
            if m.is_terminated() {
                assert_eq!(at, t0 + ms(32_000));
                break;
            }
        }
        // T1, 3T1, 7T1, 15T1, 31T1, 63T1: intervals 0.5, 1, 2, 4, 8, 16 s —
        // past T2, since INVITE requests are not capped.
        let expected: Vec<Duration> = [500, 1500, 3500, 7500, 15_500, 31_500]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(fired, expected);
        assert_eq!(
            events(&mut m),
            [TuEvent::Timeout(Timer::B), TuEvent::Terminated]
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn provisional_stops_timer_a_and_b() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        m.handle_timeout(t0 + ms(500));
        assert_eq!(transmits(&mut m), [INVITE]);
        assert_eq!(respond(&mut m, t0 + ms(600), 100), ResponseAction::PassToTu);
        assert_eq!(m.state(), IctState::Proceeding);
        assert_eq!(m.poll_timeout(), None);
        m.handle_timeout(t0 + ms(1500));
        m.handle_timeout(t0 + ms(32_000));
        assert!(transmits(&mut m).is_empty());
        assert!(events(&mut m).is_empty());
        assert_eq!(respond(&mut m, t0 + ms(700), 180), ResponseAction::PassToTu);
        assert_eq!(m.state(), IctState::Proceeding);
    }

    #[test]
    fn non_2xx_final_is_acked_and_reacked_until_timer_d() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        respond(&mut m, t0 + ms(100), 180);
        let built = Cell::new(0);
        let ack = || {
            built.set(built.get() + 1);
            Bytes::from_static(ACK)
        };
        let t_486 = t0 + ms(2000);
        assert_eq!(
            m.handle_response(t_486, 486, ack),
            Ok(ResponseAction::PassToTu)
        );
        assert_eq!(m.state(), IctState::Completed);
        assert_eq!(transmits(&mut m), [ACK]);
        assert_eq!(m.poll_timeout(), Some(t_486 + ms(32_000)));

        // Retransmitted final: the stored ACK again, not to the TU, and the
        // ACK is not rebuilt.
        let action = m.handle_response(t0 + ms(2500), 486, || {
            built.set(built.get() + 1);
            Bytes::new()
        });
        assert_eq!(action, Ok(ResponseAction::Absorb));
        assert_eq!(transmits(&mut m), [ACK]);
        assert_eq!(built.get(), 1);
        assert_eq!(respond(&mut m, t0 + ms(2600), 180), ResponseAction::Absorb);

        m.handle_timeout(t_486 + ms(31_999));
        assert_eq!(m.state(), IctState::Completed);
        m.handle_timeout(t_486 + ms(32_000));
        assert!(m.is_terminated());
        assert_eq!(events(&mut m), [TuEvent::Terminated]);
        assert!(transmits(&mut m).is_empty());
    }

    #[test]
    fn final_in_calling_stops_timer_a() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        m.handle_response(t0 + ms(200), 603, || Bytes::from_static(ACK))
            .unwrap();
        assert_eq!(transmits(&mut m), [ACK]);
        // Only Timer D is left.
        assert_eq!(m.poll_timeout(), Some(t0 + ms(32_200)));
        m.handle_timeout(t0 + ms(500));
        assert!(transmits(&mut m).is_empty());
    }

    #[test]
    fn two_xx_enters_accepted_and_every_2xx_goes_to_tu_until_timer_m() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        respond(&mut m, t0 + ms(100), 180);
        let t_ok = t0 + ms(5000);
        assert_eq!(respond(&mut m, t_ok, 200), ResponseAction::PassToTu);
        assert_eq!(m.state(), IctState::Accepted);
        assert_eq!(m.poll_timeout(), Some(t_ok + ms(32_000)));

        // 2xx retransmissions (or other forks' 2xx) all go to the TU; the
        // transaction sends nothing (the TU ACKs each one).
        for dt in [500, 1500, 3500] {
            assert_eq!(
                respond(&mut m, t_ok + ms(dt), 200),
                ResponseAction::PassToTu
            );
        }
        assert_eq!(
            respond(&mut m, t_ok + ms(4000), 183),
            ResponseAction::Absorb
        );
        assert_eq!(
            respond(&mut m, t_ok + ms(4000), 487),
            ResponseAction::Absorb
        );
        assert!(transmits(&mut m).is_empty());

        m.handle_timeout(t_ok + ms(31_999));
        assert_eq!(m.state(), IctState::Accepted);
        m.handle_timeout(t_ok + ms(32_000));
        assert!(m.is_terminated());
        assert_eq!(events(&mut m), [TuEvent::Terminated]);
        assert_eq!(
            respond(&mut m, t_ok + ms(33_000), 200),
            ResponseAction::Absorb
        );
    }

    #[test]
    fn two_xx_in_calling_stops_retransmission() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        assert_eq!(respond(&mut m, t0 + ms(300), 200), ResponseAction::PassToTu);
        assert_eq!(m.poll_timeout(), Some(t0 + ms(32_300)));
        m.handle_timeout(t0 + ms(500));
        assert!(transmits(&mut m).is_empty());
    }

    #[test]
    fn two_xx_after_non_2xx_goes_to_tu() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        m.handle_response(t0, 486, || Bytes::from_static(ACK))
            .unwrap();
        transmits(&mut m);
        assert_eq!(respond(&mut m, t0 + ms(10), 200), ResponseAction::PassToTu);
        assert_eq!(m.state(), IctState::Completed);
        assert!(transmits(&mut m).is_empty());
    }

    #[test]
    fn reliable_sends_once_and_timer_d_is_zero() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Reliable);
        // No Timer A: only B.
        assert_eq!(m.poll_timeout(), Some(t0 + ms(32_000)));
        m.handle_timeout(t0 + ms(500));
        assert!(transmits(&mut m).is_empty());

        let t_486 = t0 + ms(900);
        m.handle_response(t_486, 486, || Bytes::from_static(ACK))
            .unwrap();
        assert_eq!(transmits(&mut m), [ACK]);
        assert_eq!(m.poll_timeout(), Some(t_486));
        m.handle_timeout(t_486);
        assert!(m.is_terminated());
        assert_eq!(events(&mut m), [TuEvent::Terminated]);
    }

    #[test]
    fn reliable_timer_b_still_applies() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Reliable);
        m.handle_timeout(t0 + ms(32_000));
        assert!(transmits(&mut m).is_empty());
        assert_eq!(
            events(&mut m),
            [TuEvent::Timeout(Timer::B), TuEvent::Terminated]
        );
    }

    #[test]
    fn rejects_status_outside_100_to_699() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        for status in [0, 99, 700, 999] {
            assert_eq!(
                m.handle_response(t0, status, Bytes::new),
                Err(TransactionError::PeerInvalidStatus(status))
            );
        }
        assert_eq!(m.state(), IctState::Calling);
        assert_eq!(m.poll_timeout(), Some(t0 + ms(500)));
    }

    #[test]
    fn transport_error_informs_tu_and_terminates() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        m.handle_transport_error();
        assert!(m.is_terminated());
        assert_eq!(
            events(&mut m),
            [TuEvent::TransportError, TuEvent::Terminated]
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn transport_error_in_accepted_is_ignored() {
        let t0 = Instant::now();
        let mut m = ict(t0, Reliability::Unreliable);
        respond(&mut m, t0, 200);
        m.handle_transport_error();
        assert_eq!(m.state(), IctState::Accepted);
        assert!(events(&mut m).is_empty());
    }
}
