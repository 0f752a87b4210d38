//! Non-INVITE client transaction (NICT): RFC 3261 §17.1.2.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Events, Reliability, ResponseAction, StatusClass, Timer, TimerConfig, TimerTable,
    TransactionError, Transmits, TuEvent, backoff,
};

/// State of a non-INVITE client transaction (RFC 3261 Figure 6, redrawn;
/// self-loops are written beside each box).
///
/// ```text
///                        request from TU: send,
///                        E = T1 (UDP), F = 64·T1
///                                  |
///   E fires: resend,               v
///     E = min(2E, T2)        +-----------+   F fires or Transport Err.:
///                            |  Trying   |   inform TU
///                            +-----------+--------------------------------+
///                   1xx: to TU   |     |                                  |
///                                v     | 200-699: to TU, K                |
///   1xx: to TU          +------------+ |                                  |
///   E fires: resend,    | Proceeding |------------------------------------+
///     E = T2            +------------+ |  F fires or Transport Err.:      |
///                       200-699: |     |  inform TU                       |
///                       to TU, K v     v                                  |
///                            +-----------+  response: absorb              |
///                            | Completed |  K = T4 (UDP) or 0             |
///                            +-----------+                                |
///                                  | K fires                              |
///                                  v                                      v
///                            +----------------------------------------------+
///                            |                 Terminated                   |
///                            +----------------------------------------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NictState {
    /// Request sent, no response yet; retransmitting on Timer E.
    Trying,
    /// A provisional arrived; still retransmitting, every T2.
    Proceeding,
    /// A final arrived; absorbing its retransmissions (K).
    Completed,
    /// Done; the endpoint may drop the transaction.
    Terminated,
}

/// A non-INVITE client transaction.
#[derive(Debug, Clone)]
pub struct NonInviteClient {
    state: NictState,
    reliability: Reliability,
    cfg: TimerConfig,
    timers: TimerTable,
    /// The request, kept for Timer E while Trying or Proceeding over an
    /// unreliable transport.
    request: Option<Bytes>,
    /// The current Timer E interval.
    e_interval: Duration,
    transmits: Transmits,
    events: Events,
}

impl NonInviteClient {
    /// Starts a transaction for `request` (already encoded): queues it for
    /// transmission, arms Timer E (unreliable transport only) and Timer F.
    pub fn new(now: Instant, cfg: TimerConfig, reliability: Reliability, request: Bytes) -> Self {
        let mut nict = Self {
            state: NictState::Trying,
            reliability,
            cfg,
            timers: TimerTable::default(),
            request: None,
            e_interval: cfg.t1,
            transmits: Transmits::new(),
            events: Events::new(),
        };
        // RFC 3261 §17.1.2.2: send, start E (unreliable) and F.
        if let Some(e) = cfg.initial(Timer::E, reliability) {
            nict.timers.set(Timer::E, now, e);
            nict.request = Some(request.clone());
        }
        if let Some(f) = cfg.initial(Timer::F, reliability) {
            nict.timers.set(Timer::F, now, f);
        }
        nict.transmits.push(request);
        nict
    }

    /// A response matched this transaction (RFC 3261 §17.1.3). Tells the
    /// endpoint whether to pass it up to the TU.
    ///
    /// Errors: a status outside 100..=699 (peer fault); the transaction is
    /// unchanged.
    pub fn handle_response(
        &mut self,
        now: Instant,
        status: u16,
    ) -> Result<ResponseAction, TransactionError> {
        let class = StatusClass::of(status).ok_or(TransactionError::PeerInvalidStatus(status))?;
        let action = match (self.state, class) {
            // RFC 3261 §17.1.2.2: a provisional → Proceeding; Timer E keeps
            // running and is reset to T2 when it next fires.
            (NictState::Trying | NictState::Proceeding, StatusClass::Provisional) => {
                self.state = NictState::Proceeding;
                ResponseAction::PassToTu
            }
            // RFC 3261 §17.1.2.2: a final → Completed: E and F stop, K starts.
            (
                NictState::Trying | NictState::Proceeding,
                StatusClass::Success | StatusClass::Failure,
            ) => {
                self.state = NictState::Completed;
                self.timers.stop(Timer::E);
                self.timers.stop(Timer::F);
                self.request = None;
                if let Some(k) = self.cfg.initial(Timer::K, self.reliability) {
                    self.timers.set(Timer::K, now, k);
                }
                ResponseAction::PassToTu
            }
            // RFC 3261 §17.1.2.2: Completed buffers (absorbs) retransmitted
            // responses; after Terminated nothing is left to match.
            (NictState::Completed | NictState::Terminated, _) => ResponseAction::Absorb,
        };
        Ok(action)
    }

    /// The transport failed to deliver the request.
    pub fn handle_transport_error(&mut self) {
        match self.state {
            // RFC 3261 §17.1.4: inform the TU and terminate.
            NictState::Trying | NictState::Proceeding => {
                self.events.push(TuEvent::TransportError);
                self.terminate();
            }
            // Completed sends nothing: stale report.
            NictState::Completed | NictState::Terminated => {}
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

    /// The next event for the TU. [`TuEvent::Timeout`] with Timer F means
    /// the endpoint hands the TU a 408 (RFC 3261 §8.1.3.1).
    pub fn poll_event(&mut self) -> Option<TuEvent> {
        self.events.pop()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// The current state.
    pub fn state(&self) -> NictState {
        self.state
    }

    /// True once Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == NictState::Terminated
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (self.state, timer) {
            // RFC 3261 §17.1.2.2: in Trying, E doubles up to T2; in
            // Proceeding it is reset to T2.
            (NictState::Trying | NictState::Proceeding, Timer::E) => {
                if let Some(request) = &self.request {
                    self.transmits.push(request.clone());
                }
                self.e_interval = match self.state {
                    NictState::Proceeding => self.cfg.t2,
                    NictState::Trying | NictState::Completed | NictState::Terminated => {
                        backoff(self.e_interval, Some(self.cfg.t2))
                    }
                };
                self.timers.set(Timer::E, now, self.e_interval);
            }
            // RFC 3261 §17.1.2.2: Timer F — no final; the TU gets a timeout.
            (NictState::Trying | NictState::Proceeding, Timer::F) => {
                self.events.push(TuEvent::Timeout(Timer::F));
                self.terminate();
            }
            // RFC 3261 §17.1.2.2: Timer K ends Completed.
            (NictState::Completed, Timer::K) => self.terminate(),
            // Timers this state does not run (stopped on every transition)
            // and timers a NICT never sets.
            (NictState::Completed | NictState::Terminated, Timer::E | Timer::F)
            | (NictState::Trying | NictState::Proceeding | NictState::Terminated, Timer::K)
            | (
                _,
                Timer::A
                | Timer::B
                | Timer::D
                | Timer::G
                | Timer::H
                | Timer::I
                | Timer::J
                | Timer::L
                | Timer::M,
            ) => {}
        }
    }

    fn terminate(&mut self) {
        self.state = NictState::Terminated;
        self.timers.stop_all();
        self.request = None;
        self.events.push(TuEvent::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYE: &[u8] = b"BYE sip:a@example.com SIP/2.0\r\n\r\n";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transmits(m: &mut NonInviteClient) -> Vec<Bytes> {
        std::iter::from_fn(|| m.poll_transmit()).collect()
    }

    fn events(m: &mut NonInviteClient) -> Vec<TuEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    fn nict(t0: Instant, reliability: Reliability) -> NonInviteClient {
        let mut m = NonInviteClient::new(
            t0,
            TimerConfig::default(),
            reliability,
            Bytes::from_static(BYE),
        );
        assert_eq!(transmits(&mut m), [BYE]);
        m
    }

    /// Drives the machine timer by timer until it terminates or `until`,
    /// returning the offsets from `t0` at which the request was resent.
    fn run(m: &mut NonInviteClient, t0: Instant, until: Instant) -> Vec<Duration> {
        let mut fired = Vec::new();
        while let Some(at) = m.poll_timeout().filter(|&at| at <= until) {
            m.handle_timeout(at);
            let sent = transmits(m);
            if !sent.is_empty() {
                assert_eq!(sent, [BYE]);
                fired.push(at - t0);
            }
        }
        fired
    }

    #[test]
    fn timer_e_doubles_to_t2_until_timer_f() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Unreliable);
        let fired = run(&mut m, t0, t0 + ms(60_000));
        // Intervals 0.5, 1, 2, 4, 4, 4, …: at 0.5, 1.5, 3.5, 7.5, 11.5, …
        let expected: Vec<Duration> = [500, 1500, 3500, 7500, 11_500, 15_500]
            .into_iter()
            .chain([19_500, 23_500, 27_500, 31_500])
            .map(ms)
            .collect();
        assert_eq!(fired, expected);
        assert!(m.is_terminated());
        assert_eq!(
            events(&mut m),
            [TuEvent::Timeout(Timer::F), TuEvent::Terminated]
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn timer_f_fires_at_64_t1() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Unreliable);
        run(&mut m, t0, t0 + ms(31_999));
        assert_eq!(m.state(), NictState::Trying);
        m.handle_timeout(t0 + ms(32_000));
        assert!(m.is_terminated());
    }

    #[test]
    fn proceeding_resends_every_t2() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Unreliable);
        assert_eq!(run(&mut m, t0, t0 + ms(500)), [ms(500)]);
        assert_eq!(
            m.handle_response(t0 + ms(600), 100),
            Ok(ResponseAction::PassToTu)
        );
        assert_eq!(m.state(), NictState::Proceeding);
        // E keeps its schedule (due at 1.5 s), then runs every T2.
        let fired = run(&mut m, t0, t0 + ms(14_000));
        assert_eq!(fired, [ms(1500), ms(5500), ms(9500), ms(13_500)]);
        assert_eq!(
            m.handle_response(t0 + ms(14_000), 180),
            Ok(ResponseAction::PassToTu)
        );
        // F still ends Proceeding at 64·T1.
        run(&mut m, t0, t0 + ms(32_000));
        assert!(m.is_terminated());
        assert_eq!(
            events(&mut m),
            [TuEvent::Timeout(Timer::F), TuEvent::Terminated]
        );
    }

    #[test]
    fn final_stops_retransmission_then_timer_k() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Unreliable);
        let t_ok = t0 + ms(700);
        assert_eq!(m.handle_response(t_ok, 200), Ok(ResponseAction::PassToTu));
        assert_eq!(m.state(), NictState::Completed);
        assert_eq!(m.poll_timeout(), Some(t_ok + ms(5000)));
        assert_eq!(
            m.handle_response(t0 + ms(900), 200),
            Ok(ResponseAction::Absorb)
        );
        assert_eq!(
            m.handle_response(t0 + ms(900), 100),
            Ok(ResponseAction::Absorb)
        );
        m.handle_timeout(t0 + ms(1500)); // when E would have fired
        assert!(transmits(&mut m).is_empty());
        m.handle_timeout(t_ok + ms(4999));
        assert_eq!(m.state(), NictState::Completed);
        m.handle_timeout(t_ok + ms(5000));
        assert!(m.is_terminated());
        assert_eq!(events(&mut m), [TuEvent::Terminated]);
    }

    #[test]
    fn final_in_proceeding_enters_completed() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Unreliable);
        m.handle_response(t0, 100).unwrap();
        assert_eq!(
            m.handle_response(t0 + ms(100), 481),
            Ok(ResponseAction::PassToTu)
        );
        assert_eq!(m.state(), NictState::Completed);
        assert_eq!(m.poll_timeout(), Some(t0 + ms(5100)));
    }

    #[test]
    fn reliable_sends_once_and_timer_k_is_zero() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Reliable);
        assert_eq!(m.poll_timeout(), Some(t0 + ms(32_000)));
        assert!(run(&mut m, t0, t0 + ms(31_999)).is_empty());
        let t_ok = t0 + ms(40);
        m.handle_response(t_ok, 200).unwrap();
        assert_eq!(m.poll_timeout(), Some(t_ok));
        m.handle_timeout(t_ok);
        assert!(m.is_terminated());
        assert_eq!(events(&mut m), [TuEvent::Terminated]);
    }

    #[test]
    fn reliable_timer_f_still_applies() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Reliable);
        m.handle_timeout(t0 + ms(32_000));
        assert!(transmits(&mut m).is_empty());
        assert_eq!(
            events(&mut m),
            [TuEvent::Timeout(Timer::F), TuEvent::Terminated]
        );
    }

    #[test]
    fn rejects_status_outside_100_to_699() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Unreliable);
        assert_eq!(
            m.handle_response(t0, 42),
            Err(TransactionError::PeerInvalidStatus(42))
        );
        assert_eq!(m.state(), NictState::Trying);
    }

    #[test]
    fn transport_error_informs_tu_and_terminates() {
        let t0 = Instant::now();
        let mut m = nict(t0, Reliability::Unreliable);
        m.handle_transport_error();
        assert!(m.is_terminated());
        assert_eq!(
            events(&mut m),
            [TuEvent::TransportError, TuEvent::Terminated]
        );
        assert_eq!(m.poll_timeout(), None);
    }
}
