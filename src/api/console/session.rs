//! The console's sign-in sessions, the per-session CSRF token, the
//! same-origin check of a POST and the brake on password guessing.
//!
//! A session id is 256 bits from the operating system, sent once in the
//! `Set-Cookie` header and kept here only as its SHA-256 (as API tokens
//! are stored): a dump of this map gives no usable cookie. Sessions live in
//! memory — a restart signs everyone out — and end after [`IDLE`] without a
//! request, after [`MAX_AGE`] in any case, or at sign-out.
//!
//! Time is an argument (`now: Instant`) so the expiry and the brake are
//! tested without waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN, REFERER};
use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};

/// A session unused for this long is over.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// A session is over this long after sign-in, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 60 * 60);

/// Most live sessions; past it the one idle the longest is dropped.
pub const MAX_SESSIONS: usize = 10_000;

/// Failed sign-ins for one name within [`FAILURE_WINDOW`] after which
/// that name is refused until the window ends.
pub const MAX_FAILURES: u32 = 5;

/// See [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Random bytes in a session id and in a CSRF token.
const SECRET_BYTES: usize = 32;

/// A signed-in user's session as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user's name (their role and units are read at each request, so
    /// a change or a disabled user takes effect at once).
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// A new session: the cookie value (shown once) and the session.
#[derive(Debug)]
pub struct Opened {
    /// The session id, base64url: the cookie's value.
    pub cookie: String,
    /// The session.
    pub session: Session,
}

/// Whether a name may try a password now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Yes.
    Allowed,
    /// No: too many failures; allowed again after this long.
    Refused(Duration),
}

/// Every live session and the recent sign-in failures, shared by the
/// console's handlers.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// SHA-256 of the session id → the session.
    live: HashMap<[u8; 32], Live>,
    /// Lower-cased user name → failures in the current window.
    failures: HashMap<String, Failures>,
}

#[derive(Debug)]
struct Live {
    session: Session,
    opened: Instant,
    last_seen: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

impl Sessions {
    /// Opens a session for `user` (ids from the OS's random source; fails
    /// only when that source does).
    pub fn open(&self, user: &str, now: Instant) -> Result<Opened, getrandom::Error> {
        let cookie = random_text()?;
        let session = Session {
            user: user.to_owned(),
            csrf: random_text()?,
        };
        let mut inner = self.lock();
        inner.expire(now);
        if inner.live.len() >= MAX_SESSIONS
            && let Some(oldest) = inner
                .live
                .iter()
                .min_by_key(|(_, l)| l.last_seen)
                .map(|(k, _)| *k)
        {
            inner.live.remove(&oldest);
        }
        inner.live.insert(
            digest(&cookie),
            Live {
                session: session.clone(),
                opened: now,
                last_seen: now,
            },
        );
        Ok(Opened { cookie, session })
    }

    /// The session of a cookie value, if it is live (and marks it used).
    pub fn get(&self, cookie: &str, now: Instant) -> Option<Session> {
        let mut inner = self.lock();
        let key = digest(cookie);
        let live = inner.live.get_mut(&key)?;
        if is_over(live, now) {
            inner.live.remove(&key);
            return None;
        }
        live.last_seen = now;
        Some(live.session.clone())
    }

    /// Ends the session of a cookie value (sign-out); nothing if unknown.
    pub fn close(&self, cookie: &str) {
        self.lock().live.remove(&digest(cookie));
    }

    /// Whether `name` may try a password now.
    pub fn attempt(&self, name: &str, now: Instant) -> Attempt {
        let mut inner = self.lock();
        let key = name.to_ascii_lowercase();
        let Some(f) = inner.failures.get(&key).copied() else {
            return Attempt::Allowed;
        };
        let end = f.since + FAILURE_WINDOW;
        if now >= end {
            inner.failures.remove(&key);
            return Attempt::Allowed;
        }
        if f.count >= MAX_FAILURES {
            Attempt::Refused(end - now)
        } else {
            Attempt::Allowed
        }
    }

    /// Counts a failed sign-in for `name` (known or not: the same).
    pub fn failed(&self, name: &str, now: Instant) {
        let mut inner = self.lock();
        // Bounded: stale windows go first, then the map stops growing (a
        // flood of invented names only slows itself down, by the handler's
        // delay).
        if inner.failures.len() >= MAX_SESSIONS {
            inner.failures.retain(|_, f| now < f.since + FAILURE_WINDOW);
            if inner.failures.len() >= MAX_SESSIONS {
                return;
            }
        }
        let f = inner
            .failures
            .entry(name.to_ascii_lowercase())
            .or_insert(Failures {
                since: now,
                count: 0,
            });
        if now >= f.since + FAILURE_WINDOW {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }

    /// Forgets the failures of `name` (a successful sign-in).
    pub fn succeeded(&self, name: &str) {
        self.lock().failures.remove(&name.to_ascii_lowercase());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-changed
        // in a way that matters: take them over.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        self.live.retain(|_, l| !is_over(l, now));
    }
}

fn is_over(live: &Live, now: Instant) -> bool {
    now.saturating_duration_since(live.last_seen) >= IDLE
        || now.saturating_duration_since(live.opened) >= MAX_AGE
}

fn random_text() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(Base64UrlUnpadded::encode_string(&bytes))
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Whether a form's CSRF token is the session's, compared in time that does
/// not depend on where they differ.
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    let (a, b) = (session.csrf.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a state-changing request comes from a page of this console:
/// `Origin` when sent (browsers send it on every POST), else `Referer` when
/// sent, must name the host the request was sent to (`Host`). A request
/// with neither passes (the CSRF token still has to match); `Origin: null`
/// (a sandboxed or privacy-redirected page) does not.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let from = match (headers.get(ORIGIN), headers.get(REFERER)) {
        (Some(origin), _) => origin,
        (None, Some(referer)) => referer,
        (None, None) => return true,
    };
    let Ok(from) = from.to_str() else {
        return false;
    };
    let Some((scheme, rest)) = from.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let opened = sessions.open("ann", t0).expect("random");
        assert_eq!(opened.cookie.len(), 43, "256 bits in base64url");
        let found = sessions.get(&opened.cookie, t0).expect("live");
        assert_eq!(found, opened.session);
        assert_eq!(sessions.get("not-a-session", t0), None);
        let other = sessions.open("ann", t0).expect("random");
        assert_ne!(other.cookie, opened.cookie);
        assert_ne!(other.session.csrf, opened.session.csrf);
    }

    #[test]
    fn an_idle_session_expires_and_use_keeps_it() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let opened = sessions.open("ann", t0).expect("random");
        let almost = t0 + IDLE - Duration::from_secs(1);
        assert!(sessions.get(&opened.cookie, almost).is_some());
        // Used just now: idle again from `almost`.
        assert!(sessions.get(&opened.cookie, almost + IDLE / 2).is_some());
        assert_eq!(sessions.get(&opened.cookie, almost + IDLE / 2 + IDLE), None);
    }

    #[test]
    fn a_used_session_still_ends_at_its_maximum_age() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let opened = sessions.open("ann", t0).expect("random");
        let mut t = t0;
        while t < t0 + MAX_AGE - IDLE {
            t += IDLE / 2;
            assert!(sessions.get(&opened.cookie, t).is_some());
        }
        assert_eq!(sessions.get(&opened.cookie, t0 + MAX_AGE), None);
    }

    #[test]
    fn sign_out_closes_the_session() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let opened = sessions.open("ann", t0).expect("random");
        sessions.close(&opened.cookie);
        assert_eq!(sessions.get(&opened.cookie, t0), None);
    }

    #[test]
    fn repeated_failures_refuse_a_name_until_the_window_ends() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(sessions.attempt("Ann", t0), Attempt::Allowed);
            sessions.failed("Ann", t0);
        }
        // Names are counted without regard to case.
        assert_eq!(
            sessions.attempt("ann", t0 + Duration::from_secs(60)),
            Attempt::Refused(FAILURE_WINDOW - Duration::from_secs(60))
        );
        assert_eq!(sessions.attempt("bob", t0), Attempt::Allowed);
        assert_eq!(
            sessions.attempt("ann", t0 + FAILURE_WINDOW),
            Attempt::Allowed
        );
    }

    #[test]
    fn a_success_forgets_the_failures() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            sessions.failed("ann", t0);
        }
        sessions.succeeded("ann");
        sessions.failed("ann", t0);
        assert_eq!(sessions.attempt("ann", t0), Attempt::Allowed);
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let session = Session {
            user: "ann".into(),
            csrf: "abcdef".into(),
        };
        assert!(csrf_matches(&session, "abcdef"));
        assert!(!csrf_matches(&session, "abcdeg"));
        assert!(!csrf_matches(&session, "abcde"));
        assert!(!csrf_matches(&session, ""));
    }

    #[test]
    fn same_origin_compares_origin_then_referer_with_host() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8080/callbacks?x=1")
        ])));
        assert!(same_origin(&headers(&[host])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8081")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        // Origin wins over a matching Referer.
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example"),
            ("referer", "http://127.0.0.1:8080/")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8080.evil.example/")
        ])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:8080"
        )])));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = headers(&[("cookie", "a=1; cbd_console=xyz"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, "cbd_console"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
