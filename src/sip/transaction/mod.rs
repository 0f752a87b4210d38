//! SIP transactions: the four RFC 3261 §17 state machines as updated by
//! RFC 6026, plus the UAS core's 2xx retransmission (RFC 3261 §13.3.1.4).
//!
//! | machine | file | RFC |
//! |---|---|---|
//! | [`InviteServer`] (IST) | `ist.rs` | 3261 §17.2.1, 6026 §7.1 / §8.5–§8.7 |
//! | [`NonInviteServer`] (NIST) | `nist.rs` | 3261 §17.2.2 |
//! | [`InviteClient`] (ICT) | `ict.rs` | 3261 §17.1.1, 6026 §7.2 / §8.8–§8.9 |
//! | [`NonInviteClient`] (NICT) | `nict.rs` | 3261 §17.1.2 |
//! | [`AckWait`] (UAS 2xx until ACK) | `ack_wait.rs` | 3261 §13.3.1.4 |
//!
//! The machines are sans-IO and message-agnostic. They never parse SIP and
//! never read a clock: the endpoint matches messages to transactions (§17.1.3,
//! §17.2.3), builds every message, and hands a machine the encoded
//! [`Bytes`] to (re)transmit, the response status, and `now`. Each machine
//! then answers through:
//!
//! - `poll_transmit() -> Option<Bytes>`: bytes to pass to the transport, in
//!   order (drain until `None`);
//! - `poll_event() -> Option<TuEvent>`: what the TU must learn (drain);
//! - `poll_timeout() -> Option<Instant>`: when to call `handle_timeout(now)`.
//!
//! Drain both queues after every `handle_*`/`send_*` call (str0m's contract).
//! The queues are fixed-size and never allocate; should a caller skip a
//! drain, the oldest entry gives way (only ever a duplicate retransmission).
//!
//! Timers are data ([`TimerTable`]), computed from [`TimerConfig`] per RFC
//! 3261 Table 4. Over a reliable transport ([`Reliability::Reliable`]) the
//! retransmission timers A, E, G never run and the waits D, I, J, K are
//! zero: the timer is armed at `now`, so the next `handle_timeout(now)`
//! terminates the transaction.

mod ack_wait;
mod ict;
mod ist;
mod nict;
mod nist;
mod timers;

use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

pub use ack_wait::{AckWait, AckWaitState};
pub use ict::{IctState, InviteClient};
pub use ist::{AckDisposition, InviteServer, IstState, RequestRetransmission};
pub use nict::{NictState, NonInviteClient};
pub use nist::{NistState, NonInviteServer};
pub use timers::{Timer, TimerConfig, TimerConfigError, TimerTable};

/// Whether the transport under a transaction retransmits by itself
/// (RFC 3261 §17: TCP, TLS, SCTP are reliable; UDP is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// UDP: the transaction retransmits and lingers to absorb retransmissions.
    Unreliable,
    /// TCP/TLS: no retransmission timers, zero-length lingering.
    Reliable,
}

impl Reliability {
    /// True for [`Reliability::Reliable`].
    pub fn is_reliable(self) -> bool {
        matches!(self, Reliability::Reliable)
    }
}

/// Something the transaction user must learn, drained with `poll_event()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TuEvent {
    /// The transaction failed by timeout: Timer B (ICT) or F (NICT) — the
    /// endpoint hands the TU a synthesized 408, RFC 3261 §8.1.3.1 — or
    /// Timer H (IST), the ACK never came (§17.2.1).
    Timeout(Timer),
    /// The endpoint reported that the transport failed to deliver a message
    /// this transaction sent (RFC 3261 §17.1.4, §17.2.4).
    TransportError,
    /// No ACK arrived for the 2xx within 64·T1 (RFC 3261 §13.3.1.4): the
    /// dialog is confirmed anyway and the session should be ended with BYE.
    NoAck,
    /// The machine reached its terminal state; the endpoint may drop it.
    Terminated,
}

/// Misuse of a transaction, by the TU or by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TransactionError {
    /// The TU passed a status code outside 100..=699 (local fault).
    #[error("status code {0} outside 100..=699 passed by the TU")]
    InvalidStatus(u16),
    /// A received response carried a status code outside 100..=699 (peer fault).
    #[error("peer sent status code {0} outside 100..=699")]
    PeerInvalidStatus(u16),
    /// The TU passed a response the transaction cannot send after its final
    /// response (RFC 3261 §17.2.1, §17.2.2: discarded) (local fault).
    #[error("a final response was already sent")]
    FinalAlreadySent,
    /// The transaction is terminated and sends nothing more (local fault).
    #[error("the transaction is terminated")]
    Terminated,
}

/// What the endpoint does with a response a client transaction received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// Pass the response up to the TU.
    PassToTu,
    /// Drop it: a retransmission the transaction absorbed.
    Absorb,
}

/// The three kinds of status codes the machines tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    /// 100-199.
    Provisional,
    /// 200-299.
    Success,
    /// 300-699.
    Failure,
}

impl StatusClass {
    /// Classifies `status`, `None` outside 100..=699.
    pub(crate) fn of(status: u16) -> Option<Self> {
        match status {
            100..=199 => Some(StatusClass::Provisional),
            200..=299 => Some(StatusClass::Success),
            300..=699 => Some(StatusClass::Failure),
            _ => None,
        }
    }
}

/// The next retransmission interval: doubled, capped at `cap` when given
/// (RFC 3261 §17.1.2.2, §17.2.1; INVITE requests have no cap, §17.1.1.2).
pub(crate) fn backoff(interval: Duration, cap: Option<Duration>) -> Duration {
    let doubled = interval.saturating_mul(2);
    match cap {
        Some(cap) => doubled.min(cap),
        None => doubled,
    }
}

/// A bounded FIFO of outputs awaiting a `poll_*` drain. Fixed-size, no
/// allocation; when full, the oldest entry is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Outbox<T, const N: usize> {
    slots: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T, const N: usize> Outbox<T, N> {
    pub(crate) fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| None),
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        if N == 0 {
            return;
        }
        if self.len == N {
            // Full: drop the oldest to keep the newest.
            self.slots[self.head] = None;
            self.head = (self.head + 1) % N;
            self.len -= 1;
        }
        self.slots[(self.head + self.len) % N] = Some(item);
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.slots[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        item
    }
}

/// Outgoing messages of one machine: at most one per input in correct use.
pub(crate) type Transmits = Outbox<Bytes, 2>;
/// TU events of one machine: at most two per input in correct use.
pub(crate) type Events = Outbox<TuEvent, 4>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(99), None);
        assert_eq!(StatusClass::of(100), Some(StatusClass::Provisional));
        assert_eq!(StatusClass::of(199), Some(StatusClass::Provisional));
        assert_eq!(StatusClass::of(200), Some(StatusClass::Success));
        assert_eq!(StatusClass::of(299), Some(StatusClass::Success));
        assert_eq!(StatusClass::of(300), Some(StatusClass::Failure));
        assert_eq!(StatusClass::of(699), Some(StatusClass::Failure));
        assert_eq!(StatusClass::of(700), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(500), None), ms(1000));
        assert_eq!(backoff(ms(16_000), None), ms(32_000));
        assert_eq!(backoff(ms(2000), Some(ms(4000))), ms(4000));
        assert_eq!(backoff(ms(4000), Some(ms(4000))), ms(4000));
        assert_eq!(backoff(Duration::MAX, None), Duration::MAX);
    }

    #[test]
    fn machines_stay_small() {
        // A state, a timer table (192 bytes), one or two Bytes, the config
        // and the fixed output queues: about 400 bytes per transaction.
        assert!(size_of::<InviteServer>() <= 448);
        assert!(size_of::<NonInviteServer>() <= 448);
        assert!(size_of::<InviteClient>() <= 448);
        assert!(size_of::<NonInviteClient>() <= 448);
        assert!(size_of::<AckWait>() <= 256);
    }

    #[test]
    fn outbox_is_fifo() {
        let mut q: Outbox<u8, 3> = Outbox::new();
        assert_eq!(q.pop(), None);
        q.push(1);
        q.push(2);
        assert_eq!(q.pop(), Some(1));
        q.push(3);
        q.push(4);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), Some(4));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn full_outbox_drops_the_oldest() {
        let mut q: Outbox<u8, 2> = Outbox::new();
        q.push(1);
        q.push(2);
        q.push(3);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), None);
    }
}
