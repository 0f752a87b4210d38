//! Session timers (RFC 4028), sans-IO.
//!
//! Carriers refresh long calls with re-INVITE or UPDATE every half interval
//! and tear down calls whose refresh stops coming; callers in a contact-center
//! queue wait far longer than a typical 90–1800 s interval, so both sides of
//! this must be right.
//!
//! As UAS (§9): a `Session-Expires` below our `Min-SE` is refused with 422 and
//! our `Min-SE`; otherwise the 2xx carries the interval and the refresher: the
//! one the request named, else `uac` when the caller supports `timer`, else
//! `uas` (us). When the refresher is `uac`, the 2xx requires `timer`.
//!
//! ```text
//!            2xx sent (or refresh answered)
//!   ─────────────────────────────────────────▶ Running
//!                                                │
//!   we refresh:   at interval/2 ─▶ Refresh due ─▶ (engine sends UPDATE or
//!                                                  re-INVITE; its 2xx restarts)
//!   peer refreshes: no refresh by interval − min(32, interval/3)
//!                                             ─▶ Expired (engine sends BYE, §10)
//! ```

use std::time::{Duration, Instant};

use crate::sip::message::{HeaderName, Headers, params_iter};

/// Our session-timer settings.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimerConfig {
    /// The interval we ask for or accept at most, in seconds.
    pub session_expires: u32,
    /// The smallest interval we accept, in seconds (RFC 4028: at least 90).
    pub min_se: u32,
}

/// Which side refreshes, as RFC 4028 names them from our side as UAS. An
/// outbound leg (we sent the INVITE) keeps its timer the same way: there
/// `Uas` means we refresh and `Uac` the peer does (see [`negotiate_uac`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller (the UAC of the session-creating INVITE).
    Uac,
    /// The callee (us, as UAS).
    Uas,
}

/// The outcome of negotiating a request that creates or refreshes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Interval in seconds.
    pub interval: u32,
    /// Who refreshes.
    pub refresher: Refresher,
}

impl Negotiated {
    /// The `Session-Expires` value for our 2xx.
    pub fn header_value(&self) -> String {
        let who = match self.refresher {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        };
        format!("{};refresher={who}", self.interval)
    }

    /// The `Session-Expires` value of a refresh we send as the refresher
    /// (§7.4): the sender of a refresh request is its UAC, and keeps the
    /// job.
    pub fn refresh_header_value(&self) -> String {
        format!("{};refresher=uac", self.interval)
    }

    /// Whether our 2xx must carry `Require: timer` (§9: when the UAC is to
    /// refresh, it must know it).
    pub fn requires_timer(&self) -> bool {
        self.refresher == Refresher::Uac
    }
}

/// Why a request's session interval is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionTimerError {
    /// The interval is below our Min-SE (→ 422 with `Min-SE: min_se`).
    #[error("session interval too small; Min-SE is {min_se}")]
    TooSmall {
        /// The Min-SE to put in the 422.
        min_se: u32,
    },
    /// Session-Expires is not a number (→ 400).
    #[error("malformed Session-Expires or Min-SE")]
    Malformed,
}

/// Negotiates the session timer for an INVITE/UPDATE we answer as UAS.
/// `Ok(None)` means no session timer runs (neither side asked and the UAC does
/// not support it).
pub fn negotiate_uas(
    headers: &Headers,
    cfg: &SessionTimerConfig,
) -> Result<Option<Negotiated>, SessionTimerError> {
    let uac_supports = headers.has_token(HeaderName::Supported, "timer")
        || headers.has_token(HeaderName::Require, "timer");
    let their_min_se = match headers.get(HeaderName::MinSe) {
        Some(v) => delta_seconds(v)?,
        None => 0,
    };
    let floor = cfg.min_se.max(their_min_se);
    let requested = match headers.get(HeaderName::SessionExpires) {
        Some(v) => {
            let interval = delta_seconds(v)?;
            let refresher = params_iter(v.split_once(';').map_or("", |(_, p)| p))
                .find(|(n, _)| n.eq_ignore_ascii_case("refresher"))
                .and_then(|(_, v)| v)
                .and_then(|v| match v.to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                });
            Some((interval, refresher))
        }
        None => None,
    };
    match requested {
        // §9: "If the Session-Expires … is lower than the Min-SE … the UAS
        // MUST reject it with a 422".
        Some((interval, _)) if interval < cfg.min_se => {
            Err(SessionTimerError::TooSmall { min_se: cfg.min_se })
        }
        Some((interval, refresher)) => {
            // We may shorten the interval to our own preference, never below
            // either Min-SE.
            let interval = interval.min(cfg.session_expires.max(floor)).max(floor);
            let refresher = match refresher {
                Some(r) => r,
                None if uac_supports => Refresher::Uac,
                None => Refresher::Uas,
            };
            // A UAC that does not support timers cannot refresh.
            let refresher = if uac_supports {
                refresher
            } else {
                Refresher::Uas
            };
            Ok(Some(Negotiated {
                interval,
                refresher,
            }))
        }
        // §9: the UAS may start a session timer on its own only when the
        // UAC supports the extension; it then asks the UAC to refresh.
        None if uac_supports => Ok(Some(Negotiated {
            interval: cfg.session_expires.max(floor),
            refresher: Refresher::Uac,
        })),
        None => Ok(None),
    }
}

/// The session timer of an outbound leg from the callee's 2xx (RFC 4028
/// §7.2): none without `Session-Expires`; `refresher=uac` (or none named)
/// makes us the refresher, `refresher=uas` the callee. Returned the way
/// [`SessionTimer`] keeps it: `Uas` is us.
pub fn negotiate_uac(headers: &Headers) -> Option<Negotiated> {
    let value = headers.get(HeaderName::SessionExpires)?;
    let interval = delta_seconds(value).ok().filter(|&i| i > 0)?;
    let callee_refreshes = params_iter(value.split_once(';').map_or("", |(_, p)| p))
        .find(|(n, _)| n.eq_ignore_ascii_case("refresher"))
        .and_then(|(_, v)| v)
        .is_some_and(|v| v.eq_ignore_ascii_case("uas"));
    Some(Negotiated {
        interval,
        refresher: if callee_refreshes {
            Refresher::Uac
        } else {
            Refresher::Uas
        },
    })
}

/// What a running session timer asks of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// We are the refresher and half the interval has passed: send a refresh
    /// (UPDATE if the peer allows it, else re-INVITE).
    Refresh,
    /// The peer is the refresher and its refresh did not come in time: send
    /// BYE (§10).
    Expired,
}

/// The timer of one session, as UAS.
#[derive(Debug, Clone)]
pub struct SessionTimer {
    negotiated: Negotiated,
    deadline: Instant,
    fired: bool,
}

impl SessionTimer {
    /// Starts (or restarts, after a refresh) the timer at `now`.
    pub fn start(now: Instant, negotiated: Negotiated) -> SessionTimer {
        SessionTimer {
            deadline: now + Self::wait(negotiated),
            negotiated,
            fired: false,
        }
    }

    /// The negotiated interval and refresher.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// When [`SessionTimer::handle_timeout`] wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.fired).then_some(self.deadline)
    }

    /// Reports the action due at `now`, once.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if self.fired || now < self.deadline {
            return None;
        }
        self.fired = true;
        Some(match self.negotiated.refresher {
            Refresher::Uas => TimerAction::Refresh,
            Refresher::Uac => TimerAction::Expired,
        })
    }

    fn wait(n: Negotiated) -> Duration {
        let interval = u64::from(n.interval);
        match n.refresher {
            // §7.4 / §10: the refresher sends at half the interval.
            Refresher::Uas => Duration::from_secs(interval) / 2,
            // §10: the other side gives up at interval − min(32, interval/3).
            Refresher::Uac => Duration::from_secs(interval - (interval / 3).min(32)),
        }
    }
}

/// The `Min-SE` of a message (a 422's: the least interval the peer takes,
/// RFC 4028 §5), if present and a number.
pub fn min_se_of(headers: &Headers) -> Option<u32> {
    headers
        .get(HeaderName::MinSe)
        .and_then(|v| delta_seconds(v).ok())
}

fn delta_seconds(value: &str) -> Result<u32, SessionTimerError> {
    value
        .split(';')
        .next()
        .map(str::trim)
        .and_then(|v| v.parse().ok())
        .ok_or(SessionTimerError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, parse};

    const CFG: SessionTimerConfig = SessionTimerConfig {
        session_expires: 1800,
        min_se: 90,
    };

    fn headers(extra: &str) -> Headers {
        let text = format!(
            "INVITE sip:s@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:c@127.0.0.1>;tag=1\r\nTo: <sip:s@127.0.0.1>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n{extra}\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r.headers,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_interval_below_min_se_with_422() {
        let h = headers("Supported: timer\r\nSession-Expires: 60\r\n");
        assert_eq!(
            negotiate_uas(&h, &CFG),
            Err(SessionTimerError::TooSmall { min_se: 90 })
        );
    }

    #[test]
    fn refresher_named_in_the_request_is_kept() {
        let h = headers("Supported: timer\r\nSession-Expires: 600;refresher=uas\r\n");
        let n = negotiate_uas(&h, &CFG).expect("ok").expect("timer");
        assert_eq!(
            n,
            Negotiated {
                interval: 600,
                refresher: Refresher::Uas
            }
        );
        assert_eq!(n.header_value(), "600;refresher=uas");
        assert!(!n.requires_timer());
    }

    #[test]
    fn uac_that_supports_timer_refreshes_when_it_did_not_say() {
        let h = headers("Supported: timer\r\nSession-Expires: 600\r\n");
        let n = negotiate_uas(&h, &CFG).expect("ok").expect("timer");
        assert_eq!(n.refresher, Refresher::Uac);
        assert!(n.requires_timer());
    }

    #[test]
    fn proxy_inserted_interval_without_uac_support_makes_us_refresh() {
        let h = headers("Session-Expires: 600;refresher=uac\r\n");
        let n = negotiate_uas(&h, &CFG).expect("ok").expect("timer");
        assert_eq!(n.refresher, Refresher::Uas);
    }

    #[test]
    fn no_timer_when_nobody_asks() {
        assert_eq!(negotiate_uas(&headers(""), &CFG), Ok(None));
    }

    #[test]
    fn uac_support_alone_starts_our_interval() {
        let n = negotiate_uas(&headers("Supported: timer\r\n"), &CFG)
            .expect("ok")
            .expect("timer");
        assert_eq!(
            n,
            Negotiated {
                interval: 1800,
                refresher: Refresher::Uac
            }
        );
    }

    #[test]
    fn interval_is_capped_at_ours_but_not_below_their_min_se() {
        let h = headers("Supported: timer\r\nSession-Expires: 7200\r\n");
        assert_eq!(
            negotiate_uas(&h, &CFG).expect("ok").expect("t").interval,
            1800
        );
        let h = headers("Supported: timer\r\nSession-Expires: 7200\r\nMin-SE: 3600\r\n");
        assert_eq!(
            negotiate_uas(&h, &CFG).expect("ok").expect("t").interval,
            3600
        );
    }

    #[test]
    fn rejects_malformed_session_expires() {
        let h = headers("Session-Expires: soon\r\n");
        assert_eq!(negotiate_uas(&h, &CFG), Err(SessionTimerError::Malformed));
    }

    #[test]
    fn we_refresh_at_half_the_interval() {
        let t0 = Instant::now();
        let mut t = SessionTimer::start(
            t0,
            Negotiated {
                interval: 600,
                refresher: Refresher::Uas,
            },
        );
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(300)));
        assert_eq!(t.handle_timeout(t0 + Duration::from_secs(299)), None);
        assert_eq!(
            t.handle_timeout(t0 + Duration::from_secs(300)),
            Some(TimerAction::Refresh)
        );
        assert_eq!(
            t.handle_timeout(t0 + Duration::from_secs(301)),
            None,
            "fires once"
        );
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn missing_refresh_from_the_peer_expires_before_the_interval() {
        let t0 = Instant::now();
        // 90 s: 90 − min(32, 30) = 60 s.
        let mut t = SessionTimer::start(
            t0,
            Negotiated {
                interval: 90,
                refresher: Refresher::Uac,
            },
        );
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        // 1800 s: 1800 − 32 = 1768 s.
        let t2 = SessionTimer::start(
            t0,
            Negotiated {
                interval: 1800,
                refresher: Refresher::Uac,
            },
        );
        assert_eq!(t2.poll_timeout(), Some(t0 + Duration::from_secs(1768)));
        assert_eq!(
            t.handle_timeout(t0 + Duration::from_secs(60)),
            Some(TimerAction::Expired)
        );
    }

    #[test]
    fn a_refresh_restarts_the_timer() {
        let t0 = Instant::now();
        let n = Negotiated {
            interval: 90,
            refresher: Refresher::Uac,
        };
        let t = SessionTimer::start(t0, n);
        let t = SessionTimer::start(t0 + Duration::from_secs(45), t.negotiated());
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(105)));
    }
}
