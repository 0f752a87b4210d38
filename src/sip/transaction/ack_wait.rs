//! The UAS core's 2xx retransmission until the ACK (RFC 3261 §13.3.1.4).
//!
//! A 2xx to an INVITE ends the INVITE server transaction's reliability
//! work (RFC 6026 §7.1: the transaction sends it once). The UAS core then
//! retransmits it itself, at T1, 2·T1, 4·T1 … capped at T2, until the ACK
//! arrives, and gives up after 64·T1: the dialog is then confirmed anyway
//! and the session SHOULD be ended with BYE.
//!
//! The retransmissions are best sent straight to the transport: the IST
//! would accept them in Accepted (RFC 6026 §7.1), but its Timer L ends at
//! the same 64·T1 as this wait.
//!
//! Unlike a transaction's, these retransmissions do not stop on a reliable
//! transport: the 2xx and its ACK are end to end (§13.3.1.4), and a proxy
//! between us and the UAC may forward them over UDP, where a lost 2xx is
//! only ever recovered by our retransmitting it.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Events, TimerConfig, Transmits, TuEvent, backoff};

/// State of a 2xx awaiting its ACK (RFC 3261 §13.3.1.4).
///
/// ```text
///                 2xx sent once by the IST
///                            |
///   retransmit timer fires   v
///   (any transport): resend +-----------+  retransmitted INVITE:
///   interval = min(2i, T2)  |  Waiting  |  resend 2xx (on request)
///                           +-----------+
///                   ACK:      |       |   64·T1 without ACK:
///                   stop      v       v   NoAck (confirm dialog, BYE)
///                     +-------+       +----------+
///                     | Acked |       | TimedOut |
///                     +-------+       +----------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWaitState {
    /// Retransmitting the 2xx, waiting for the ACK.
    Waiting,
    /// The ACK arrived.
    Acked,
    /// 64·T1 passed without an ACK; [`TuEvent::NoAck`] was emitted.
    TimedOut,
}

/// A 2xx response retransmitted until its ACK arrives.
#[derive(Debug, Clone)]
pub struct AckWait {
    state: AckWaitState,
    t2: Duration,
    /// The 2xx, held while Waiting.
    response: Option<Bytes>,
    /// The current retransmission interval.
    interval: Duration,
    /// Next retransmission.
    next_retransmit: Option<Instant>,
    /// 64·T1 after the first transmission.
    give_up_at: Option<Instant>,
    transmits: Transmits,
    events: Events,
}

impl AckWait {
    /// Starts waiting for the ACK to `response`, a 2xx the IST sent at
    /// `now`: the first retransmission is due at `now + T1`, whatever the
    /// transport (RFC 3261 §13.3.1.4 is end to end; see the module
    /// documentation), the give-up at 64·T1.
    pub fn new(now: Instant, cfg: TimerConfig, response: Bytes) -> Self {
        let next_retransmit = now.checked_add(cfg.t1);
        Self {
            state: AckWaitState::Waiting,
            t2: cfg.t2,
            response: Some(response),
            interval: cfg.t1,
            next_retransmit,
            give_up_at: now.checked_add(cfg.t1.saturating_mul(64)),
            transmits: Transmits::new(),
            events: Events::new(),
        }
    }

    /// The ACK for the 2xx arrived. Returns true if it was the first one
    /// within the wait (the dialog is confirmed by it); later or repeated
    /// ACKs change nothing.
    pub fn handle_ack(&mut self) -> bool {
        match self.state {
            // RFC 3261 §13.3.1.4: the ACK stops the retransmissions.
            AckWaitState::Waiting => {
                self.finish(AckWaitState::Acked);
                true
            }
            AckWaitState::Acked | AckWaitState::TimedOut => false,
        }
    }

    /// A retransmitted INVITE was absorbed by the IST in Accepted
    /// ([`RequestRetransmission::Accepted`](super::RequestRetransmission::Accepted)).
    /// Queues the 2xx once more without disturbing the schedule; returns
    /// true if it did. Optional: RFC 6026 §7.1 allows it, §13.3.1.4 does
    /// not require it, and it helps when the first 2xx was lost.
    pub fn handle_request_retransmission(&mut self) -> bool {
        match (self.state, &self.response) {
            (AckWaitState::Waiting, Some(response)) => {
                self.transmits.push(response.clone());
                true
            }
            (AckWaitState::Waiting, None) | (AckWaitState::Acked | AckWaitState::TimedOut, _) => {
                false
            }
        }
    }

    /// Fires whatever is due at `now`: the give-up first, else a
    /// retransmission.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            AckWaitState::Waiting => {
                // RFC 3261 §13.3.1.4: no ACK for 64·T1 → confirm the dialog
                // and end the session (the TU sends BYE).
                if self.give_up_at.is_some_and(|at| at <= now) {
                    self.finish(AckWaitState::TimedOut);
                    self.events.push(TuEvent::NoAck);
                    return;
                }
                // RFC 3261 §13.3.1.4: resend, doubling the interval up to T2.
                if self.next_retransmit.is_some_and(|at| at <= now) {
                    if let Some(response) = &self.response {
                        self.transmits.push(response.clone());
                    }
                    self.interval = backoff(self.interval, Some(self.t2));
                    self.next_retransmit = now.checked_add(self.interval);
                }
            }
            AckWaitState::Acked | AckWaitState::TimedOut => {}
        }
    }

    /// The next bytes to pass to the transport (the 2xx again).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop()
    }

    /// The next event for the TU: only ever [`TuEvent::NoAck`].
    pub fn poll_event(&mut self) -> Option<TuEvent> {
        self.events.pop()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_retransmit, self.give_up_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The current state.
    pub fn state(&self) -> AckWaitState {
        self.state
    }

    /// True once Acked or TimedOut: the waiter may be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state != AckWaitState::Waiting
    }

    fn finish(&mut self, state: AckWaitState) {
        self.state = state;
        self.response = None;
        self.next_retransmit = None;
        self.give_up_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S200: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transmits(m: &mut AckWait) -> Vec<Bytes> {
        std::iter::from_fn(|| m.poll_transmit()).collect()
    }

    fn events(m: &mut AckWait) -> Vec<TuEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    fn wait(t0: Instant) -> AckWait {
        AckWait::new(t0, TimerConfig::default(), Bytes::from_static(S200))
    }

    /// Drives every deadline up to `until`; returns the offsets from `t0`
    /// at which the 2xx was resent.
    fn run(m: &mut AckWait, t0: Instant, until: Instant) -> Vec<Duration> {
        let mut fired = Vec::new();
        while let Some(at) = m.poll_timeout().filter(|&at| at <= until) {
            m.handle_timeout(at);
            let sent = transmits(m);
            if !sent.is_empty() {
                assert_eq!(sent, [S200]);
                fired.push(at - t0);
            }
        }
        fired
    }

    #[test]
    fn retransmits_at_t1_doubling_to_t2_then_gives_up_at_64_t1() {
        let t0 = Instant::now();
        let mut m = wait(t0);
        // The initial 2xx is the IST's: nothing is queued at creation.
        assert!(transmits(&mut m).is_empty());
        assert_eq!(m.poll_timeout(), Some(t0 + ms(500)));

        let fired = run(&mut m, t0, t0 + ms(31_999));
        // t0 + T1, +3T1, +7T1, then every T2.
        let expected: Vec<Duration> = [500, 1500, 3500, 7500, 11_500, 15_500]
            .into_iter()
            .chain([19_500, 23_500, 27_500, 31_500])
            .map(ms)
            .collect();
        assert_eq!(fired, expected);
        assert_eq!(m.state(), AckWaitState::Waiting);
        assert!(events(&mut m).is_empty());

        assert_eq!(m.poll_timeout(), Some(t0 + ms(32_000)));
        m.handle_timeout(t0 + ms(32_000));
        assert_eq!(m.state(), AckWaitState::TimedOut);
        assert_eq!(events(&mut m), [TuEvent::NoAck]);
        assert!(transmits(&mut m).is_empty());
        assert_eq!(m.poll_timeout(), None);
        assert!(m.is_terminated());
    }

    #[test]
    fn ack_stops_retransmissions() {
        let t0 = Instant::now();
        let mut m = wait(t0);
        assert_eq!(run(&mut m, t0, t0 + ms(1500)), [ms(500), ms(1500)]);
        assert!(m.handle_ack());
        assert_eq!(m.state(), AckWaitState::Acked);
        assert_eq!(m.poll_timeout(), None);
        m.handle_timeout(t0 + ms(3500));
        m.handle_timeout(t0 + ms(32_000));
        assert!(transmits(&mut m).is_empty());
        assert!(events(&mut m).is_empty());
        // A second ACK (the UAC re-ACKs retransmitted 2xx) changes nothing.
        assert!(!m.handle_ack());
        assert!(!m.handle_request_retransmission());
    }

    #[test]
    fn late_ack_after_give_up_is_not_confirming() {
        let t0 = Instant::now();
        let mut m = wait(t0);
        run(&mut m, t0, t0 + ms(32_000));
        assert_eq!(events(&mut m), [TuEvent::NoAck]);
        assert!(!m.handle_ack());
        assert_eq!(m.state(), AckWaitState::TimedOut);
    }

    #[test]
    fn an_ack_before_any_retransmission_ends_the_wait() {
        let t0 = Instant::now();
        let mut m = wait(t0);
        assert!(m.handle_ack());
        m.handle_timeout(t0 + ms(32_000));
        assert!(events(&mut m).is_empty());
        assert!(transmits(&mut m).is_empty());
    }

    #[test]
    fn retransmitted_invite_resends_without_moving_the_schedule() {
        let t0 = Instant::now();
        let mut m = wait(t0);
        m.handle_timeout(t0 + ms(500));
        assert_eq!(transmits(&mut m), [S200]);
        assert!(m.handle_request_retransmission());
        assert_eq!(transmits(&mut m), [S200]);
        assert_eq!(m.poll_timeout(), Some(t0 + ms(1500)));
    }
}
