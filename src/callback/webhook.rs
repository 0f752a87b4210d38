//! Webhooks, the pure parts (issue 11 point 5): the events, their JSON
//! payload, the signature, the retry schedule and which delivery is due.
//! Nothing here reads a clock or touches a socket: the store writes events
//! in the transaction of the change that causes them
//! ([`crate::callback::store`]), and the delivery worker
//! (`crate::engine::webhooks`) posts them, passing the time in.
//!
//! # Delivery
//!
//! ```text
//!  event committed ──▶ one delivery per matching subscription: pending
//!  pending ──due, POST──▶ 2xx ──▶ delivered
//!                     └─▶ other status, error, timeout ──▶ pending (retry at
//!                          first + backoff) | failed (past max age)
//! ```
//!
//! Per subscription, deliveries go out in event order: only the oldest
//! pending delivery of a subscription (its *head*) is ever tried, so the
//! next waits until the previous is delivered or has failed.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use crate::callback::view::CallbackBody;

/// The header carrying the signature: `t=<unix seconds>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "Callbackd-Signature";
/// The header carrying the event id (the same on every retry).
pub const EVENT_ID_HEADER: &str = "Callbackd-Event-Id";
/// The header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "Callbackd-Event-Type";

/// What happened to a callback; the `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A callback was committed (by a caller in the IVR or through the API).
    Registered,
    /// A callback got a (new) time for its next attempt: created with
    /// `scheduled_for`, rescheduled by `PATCH`, a retry or a failover after
    /// an attempt, or an interrupted attempt taken back at start-up.
    Scheduled,
    /// The launcher claimed it: an attempt starts (the agent is rung).
    AttemptStarted,
    /// Agent and customer were bridged.
    Connected,
    /// The customer was reached: the callback is done.
    Completed,
    /// No more attempts: failed.
    Failed,
    /// Cancelled by an operator or the customer.
    Cancelled,
    /// Its window ended before it could be completed.
    Expired,
}

impl EventKind {
    /// Every event type, in lifecycle order.
    pub const ALL: [EventKind; 8] = [
        EventKind::Registered,
        EventKind::Scheduled,
        EventKind::AttemptStarted,
        EventKind::Connected,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Cancelled,
        EventKind::Expired,
    ];

    /// The `type` text (`callback.registered`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "callback.registered",
            EventKind::Scheduled => "callback.scheduled",
            EventKind::AttemptStarted => "callback.attempt_started",
            EventKind::Connected => "callback.connected",
            EventKind::Completed => "callback.completed",
            EventKind::Failed => "callback.failed",
            EventKind::Cancelled => "callback.cancelled",
            EventKind::Expired => "callback.expired",
        }
    }

    /// Parses a `type` text (exact).
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SIP context of the inbound call that registered a callback: the
/// redirection and user-to-user headers of the caller's INVITE, each value
/// as received, in order. Stored with the callback (a JSON object); none
/// for a callback created through the API.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SipContext {
    /// `Diversion` values (RFC 5806).
    #[serde(default)]
    pub diversion: Vec<String>,
    /// `History-Info` values (RFC 7044).
    #[serde(default)]
    pub history_info: Vec<String>,
    /// `User-to-User` values (RFC 7433).
    #[serde(default)]
    pub user_to_user: Vec<String>,
}

impl SipContext {
    /// The JSON text stored with the callback.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings serialises")
    }
}

/// The attempt an event is about, as its payload shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptInfo {
    /// 1 for the callback's first attempt, then 2, … (interrupted ones
    /// count).
    pub number: u32,
    /// When it began (the claim).
    pub started_at: String,
    /// When agent and customer were bridged (`callback.connected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    /// When it ended, once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// How it ended (`answered`, `busy`, `no_answer`, …), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The final SIP status of the deciding leg, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// The agent rung, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// The JSON body of event `id`: `{"id","type","occurred_at","data":
/// {"callback","attempt","sip"}}` (`attempt` and `sip` may be null).
pub fn payload(
    id: &str,
    kind: EventKind,
    occurred_at: Timestamp,
    callback: &CallbackBody,
    attempt: Option<&AttemptInfo>,
    sip: Option<&SipContext>,
) -> String {
    json!({
        "id": id,
        "type": kind.as_str(),
        "occurred_at": occurred_at.to_string(),
        "data": {
            "callback": callback,
            "attempt": attempt,
            "sip": sip,
        },
    })
    .to_string()
}

/// The signature header value of `body` sent at `t` (Unix seconds):
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex(&mac(secret, t, body)))
}

/// Why [`verify`] refused a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<digits>,v1=<hex>` (other schemes are skipped).
    #[error("signature header is malformed")]
    Malformed,
    /// No `v1` value matches the body and secret.
    #[error("no v1 signature matches")]
    Mismatch,
    /// `t` is further than the tolerance from now (a replay).
    #[error("signature timestamp is outside the tolerance")]
    Stale,
}

/// Checks a signature header as a receiver should: the HMAC of
/// `"<t>.<body>"` compared in constant time, and `t` within `tolerance`
/// of `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() => {
                t = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "t" => return Err(SignatureError::Malformed),
            "v1" => candidates.push(unhex(value).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let Some(t) = t else {
        return Err(SignatureError::Malformed);
    };
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let matches = candidates.iter().any(|sig| {
        let mut m =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        m.update(format!("{t}.").as_bytes());
        m.update(body);
        m.verify_slice(sig).is_ok()
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    if t.abs_diff(now) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure; doubled after each further one.
    pub initial: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
    /// A delivery still failing this long after its first try is given up
    /// (failed), and the subscription's next one goes.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    /// 1 s doubling up to 10 min, for 24 h.
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failures` failed tries (1 → `initial`, 2 → twice
    /// that, …, at most `max_delay`).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// What follows a try made at `now` — the `tries`-th of a delivery
    /// first tried at `first_try` — that succeeded (`ok`) or not.
    pub fn after_try(&self, ok: bool, tries: u32, first_try: Timestamp, now: Timestamp) -> Step {
        if ok {
            return Step::Delivered;
        }
        let wait = SignedDuration::try_from(self.backoff(tries)).unwrap_or(SignedDuration::MAX);
        let age_limit = SignedDuration::try_from(self.max_age).unwrap_or(SignedDuration::MAX);
        let at = now.checked_add(wait).unwrap_or(Timestamp::MAX);
        let deadline = first_try.checked_add(age_limit).unwrap_or(Timestamp::MAX);
        if at > deadline {
            Step::GiveUp
        } else {
            Step::Retry { at }
        }
    }
}

/// What becomes of a delivery after a try ([`RetryPolicy::after_try`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A 2xx: done.
    Delivered,
    /// Try again at this instant.
    Retry {
        /// When.
        at: Timestamp,
    },
    /// Past the retry window: failed for good.
    GiveUp,
}

/// The oldest pending delivery of one enabled subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The delivery row.
    pub delivery: i64,
    /// Its subscription.
    pub webhook: i64,
    /// When it may be tried (`None`: at once).
    pub next_try_at: Option<Timestamp>,
}

/// Of the subscriptions' heads, those due at `now` (in the order given),
/// and the earliest time a not-yet-due one will be.
pub fn due(heads: &[Head], now: Timestamp) -> (Vec<Head>, Option<Timestamp>) {
    let mut ready = Vec::new();
    let mut wake: Option<Timestamp> = None;
    for head in heads {
        match head.next_try_at {
            Some(at) if at > now => wake = Some(wake.map_or(at, |w| w.min(at))),
            Some(_) | None => ready.push(*head),
        }
    }
    (ready, wake)
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    m.update(format!("{t}.").as_bytes());
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// A callback body for payload tests (no store needed).
    fn sample_callback() -> CallbackBody {
        CallbackBody {
            id: 7,
            queue: "support".into(),
            number: "3125550188".into(),
            caller_ani: "3125550100".into(),
            called_number: "8005550199".into(),
            priority: 0,
            status: "pending",
            attempts: 0,
            queued_at: "2025-06-02T15:00:00Z".into(),
            registered_at: "2025-06-02T15:00:00Z".into(),
            ecbt_quoted_minutes: 3,
            next_attempt_at: None,
            expires_at: "2025-06-02T23:00:00Z".into(),
            inbound_call_id: "c1@pc33".into(),
            scheduled_for: None,
            created_by: None,
            data: None,
            customer_dialed_at: None,
            ecbt_error_s: None,
            caller_id: None,
            source: "ivr",
            rule: None,
            task: None,
            closed_reason: None,
        }
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    #[test]
    fn event_names_round_trip_and_unknown_ones_are_refused() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert!(k.as_str().starts_with("callback."));
        }
        assert_eq!(EventKind::parse("callback.Registered"), None);
        assert_eq!(EventKind::parse("registered"), None);
        assert_eq!(EventKind::parse(""), None);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Vectors computed independently with Python's hmac module:
        // hmac.new(key, b"<t>." + body, hashlib.sha256).hexdigest()
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, b"{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
        assert_eq!(
            sign(b"Jefe", 1_700_000_000, b"what do ya want for nothing?"),
            "t=1700000000,v1=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
    }

    #[test]
    fn verify_accepts_our_signature_and_refuses_tampering() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(b"s3cret", 1000, body);
        let tol = Duration::from_secs(300);
        assert_eq!(verify(b"s3cret", &header, body, 1000, tol), Ok(()));
        assert_eq!(verify(b"s3cret", &header, body, 1299, tol), Ok(()));
        assert_eq!(
            verify(b"s3cret", &header, body, 1301, tol),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"other", &header, body, 1000, tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &header, br#"{"id":"evt_2"}"#, 1000, tol),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replacen("t=1000", "t=1001", 1);
        assert_eq!(
            verify(b"s3cret", &moved, body, 1000, tol),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn verify_refuses_malformed_headers() {
        let tol = Duration::from_secs(300);
        for bad in [
            "",
            "t=1000",
            "v1=00",
            "t=abc,v1=00",
            "t=-5,v1=00",
            "t=1000,v1=zz",
            "t=1000,v1=0",
            "garbage",
        ] {
            assert_eq!(
                verify(b"k", bad, b"{}", 1000, tol),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_initial_up_to_the_cap() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=12).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn after_try_retries_until_the_window_closes_then_gives_up() {
        let p = RetryPolicy {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_age: Duration::from_secs(100),
        };
        let first = ts("2025-06-02T15:00:00Z");
        assert_eq!(p.after_try(true, 1, first, first), Step::Delivered);
        // Drive a receiver that always fails, on a fake clock.
        let mut now = first;
        let mut tries = 0;
        let mut schedule = Vec::new();
        loop {
            tries += 1;
            match p.after_try(false, tries, first, now) {
                Step::Retry { at } => {
                    schedule.push(at.duration_since(first).as_secs());
                    now = at;
                }
                Step::GiveUp => break,
                Step::Delivered => unreachable!("never ok"),
            }
        }
        // 1, 2, 4, 8, 16, 32 s waits; the next (60 s) would end past 100 s.
        assert_eq!(schedule, [1, 3, 7, 15, 31, 63]);
        assert_eq!(tries, 7);
        // A success late in the window is still delivered.
        assert_eq!(p.after_try(true, 7, first, now), Step::Delivered);
    }

    #[test]
    fn only_heads_whose_time_has_come_are_due() {
        let now = ts("2025-06-02T15:00:10Z");
        let heads = [
            Head {
                delivery: 5,
                webhook: 1,
                next_try_at: None,
            },
            Head {
                delivery: 9,
                webhook: 2,
                next_try_at: Some(ts("2025-06-02T15:00:30Z")),
            },
            Head {
                delivery: 11,
                webhook: 3,
                next_try_at: Some(ts("2025-06-02T15:00:10Z")),
            },
            Head {
                delivery: 12,
                webhook: 4,
                next_try_at: Some(ts("2025-06-02T15:00:20Z")),
            },
        ];
        let (ready, wake) = due(&heads, now);
        assert_eq!(
            ready.iter().map(|h| h.delivery).collect::<Vec<_>>(),
            [5, 11]
        );
        assert_eq!(wake, Some(ts("2025-06-02T15:00:20Z")));
        assert_eq!(due(&[], now), (Vec::new(), None));
    }

    #[test]
    fn payload_carries_id_type_time_callback_attempt_and_sip_context() {
        let sip = SipContext {
            diversion: vec!["<sip:3125550100@pbx.example>;reason=no-answer".into()],
            history_info: Vec::new(),
            user_to_user: vec!["56a390f3d2b7310023a2;encoding=hex".into()],
        };
        let attempt = AttemptInfo {
            number: 2,
            started_at: "2025-06-02T15:10:00Z".into(),
            connected_at: None,
            ended_at: Some("2025-06-02T15:11:00Z".into()),
            outcome: Some("busy".into()),
            sip_status: Some(486),
            agent: Some("alice".into()),
        };
        let text = payload(
            "evt_abc",
            EventKind::Failed,
            ts("2025-06-02T15:11:00Z"),
            &sample_callback(),
            Some(&attempt),
            Some(&sip),
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "evt_abc");
        assert_eq!(v["type"], "callback.failed");
        assert_eq!(v["occurred_at"], "2025-06-02T15:11:00Z");
        assert_eq!(v["data"]["callback"]["id"], 7);
        assert_eq!(v["data"]["callback"]["number"], "3125550188");
        assert_eq!(v["data"]["attempt"]["number"], 2);
        assert_eq!(v["data"]["attempt"]["sip_status"], 486);
        assert!(v["data"]["attempt"].get("connected_at").is_none());
        assert_eq!(
            v["data"]["sip"]["diversion"][0],
            "<sip:3125550100@pbx.example>;reason=no-answer"
        );
        assert_eq!(v["data"]["sip"]["history_info"], json!([]));
        let bare = payload(
            "evt_x",
            EventKind::Registered,
            ts("2025-06-02T15:00:00Z"),
            &sample_callback(),
            None,
            None,
        );
        let v: Value = serde_json::from_str(&bare).unwrap();
        assert_eq!(v["data"]["attempt"], Value::Null);
        assert_eq!(v["data"]["sip"], Value::Null);
    }

    #[test]
    fn sip_context_round_trips_through_its_stored_text() {
        let sip = SipContext {
            diversion: vec!["<sip:1@a>".into()],
            history_info: vec!["<sip:2@b>;index=1".into()],
            user_to_user: vec!["00ff;encoding=hex".into()],
        };
        let back: SipContext = serde_json::from_str(&sip.to_json()).unwrap();
        assert_eq!(back, sip);
        let empty: SipContext = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, SipContext::default());
    }
}
