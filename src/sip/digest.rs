//! HTTP Digest authentication as SIP uses it (RFC 3261 §22.4, RFC 2617,
//! RFC 7616, RFC 8760), sans-IO.
//!
//! Both sides live here:
//!
//! - **Client** ([`Credentials`]): read the `WWW-Authenticate` /
//!   `Proxy-Authenticate` challenges of a 401/407, pick the strongest one we
//!   support (SHA-256 over MD5, RFC 8760 §2.4), and compute the
//!   `Authorization` / `Proxy-Authorization` value. The caller supplies the
//!   cnonce and the nonce count, so the computation is deterministic.
//! - **Server** ([`Challenger`]): issue challenges whose nonce carries its own
//!   issue time and an HMAC-SHA-256 tag, so it is verified without a table
//!   of issued nonces and expires by itself; verify credentials, with the
//!   highest nonce count seen per nonce remembered (bounded) against replay.
//!
//! ```text
//!   UAC                                    UAS (Challenger)
//!    │ REGISTER (no credentials)             │
//!    │──────────────────────────────────────▶│ verify → Missing
//!    │ 401  WWW-Authenticate: Digest …SHA-256│ challenges(now, stale=false)
//!    │      WWW-Authenticate: Digest …MD5    │
//!    │◀──────────────────────────────────────│
//!    │ REGISTER  Authorization: Digest …     │ Credentials::respond
//!    │──────────────────────────────────────▶│ verify → Ok(username)
//!    │                         (nonce expired)│ verify → StaleNonce
//!    │ 401 … stale=true  (retry, same password)
//! ```
//!
//! Supported: MD5 and SHA-256, their `-sess` variants on the client side
//! only, `qop=auth` and `qop=auth-int`, RFC 2069 compatibility (no qop) on
//! the client side only. Not supported: SHA-512-256, `userhash`, `username*`
//! (RFC 7616 §3.4.4), token68 schemes in the same header value as Digest.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::sip::message::{HeaderName, Response};

/// A digest algorithm (RFC 7616 §3.3; RFC 8760 §2.2 for SIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5 (RFC 2617; the default when a challenge names none).
    Md5,
    /// MD5-sess: HA1 bound to the nonce and cnonce.
    Md5Sess,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
    /// SHA-256-sess.
    Sha256Sess,
}

impl Algorithm {
    /// Parses an `algorithm` token (case-insensitive); `None` for algorithms
    /// we do not implement (e.g. SHA-512-256).
    pub fn parse(token: &str) -> Option<Algorithm> {
        const KNOWN: [(&str, Algorithm); 4] = [
            ("MD5", Algorithm::Md5),
            ("MD5-sess", Algorithm::Md5Sess),
            ("SHA-256", Algorithm::Sha256),
            ("SHA-256-sess", Algorithm::Sha256Sess),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| token.eq_ignore_ascii_case(name))
            .map(|(_, a)| a)
    }

    /// The token as RFC 7616 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Whether this is a `-sess` variant (RFC 7616 §3.4.2).
    pub fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// The plain algorithm of the same hash (what a stored HA1 is keyed by).
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
        }
    }

    /// Preference when a response offers several challenges: SHA-256 before
    /// MD5 (RFC 8760 §2.4), and the plain form before `-sess`.
    pub fn rank(self) -> u8 {
        match self {
            Algorithm::Sha256 => 4,
            Algorithm::Sha256Sess => 3,
            Algorithm::Md5 => 2,
            Algorithm::Md5Sess => 1,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quality-of-protection value (RFC 2617 §3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// Authentication of method and URI.
    Auth,
    /// Authentication with integrity protection of the body.
    AuthInt,
}

impl Qop {
    /// The token.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }

    fn parse(token: &str) -> Option<Qop> {
        if token.eq_ignore_ascii_case("auth") {
            Some(Qop::Auth)
        } else if token.eq_ignore_ascii_case("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }
}

/// What is known about a user's password: the password itself, or a
/// precomputed `HA1 = H(username ":" realm ":" password)` for one hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The clear-text password.
    Password(String),
    /// A precomputed HA1, lower-case hex, for `algorithm` (MD5 or SHA-256;
    /// a `-sess` algorithm here means its base). Valid for one realm only.
    Ha1 {
        /// The hash the HA1 was computed with.
        algorithm: Algorithm,
        /// The HA1 in hex.
        hex: String,
    },
}

impl Secret {
    /// The plain (non-sess) HA1 for `algorithm`, or `None` when this is a
    /// precomputed HA1 of another hash.
    fn ha1(&self, algorithm: Algorithm, username: &str, realm: &str) -> Option<String> {
        match self {
            Secret::Password(password) => Some(ha1(algorithm, username, realm, password)),
            Secret::Ha1 { algorithm: a, hex } if a.base() == algorithm.base() => {
                Some(hex.to_ascii_lowercase())
            }
            Secret::Ha1 { .. } => None,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a password or an HA1 (logs end up in tickets).
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(..)"),
            Secret::Ha1 { algorithm, .. } => write!(f, "Secret::Ha1({algorithm}, ..)"),
        }
    }
}

/// `HA1 = H(username ":" realm ":" password)` in lower-case hex for the
/// hash of `algorithm` (RFC 7616 §3.4.2), e.g. to store instead of a password.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    hash_hex(
        algorithm,
        &[username.as_bytes(), realm.as_bytes(), password.as_bytes()],
    )
}

/// A cnonce for [`Credentials::respond`] from caller-supplied random bits
/// (16 hex digits).
pub fn cnonce(random: u64) -> String {
    to_hex(&random.to_be_bytes())
}

/// The parts of the request that the digest covers.
#[derive(Debug, Clone, Copy)]
pub struct DigestRequest<'a> {
    /// The method, e.g. `REGISTER` (for ACK/CANCEL: INVITE's, RFC 3261 §22.1).
    pub method: &'a str,
    /// The digest-uri: the Request-URI as written on the request line.
    pub uri: &'a str,
    /// The body (only `qop=auth-int` covers it).
    pub body: &'a [u8],
}

/// One parsed `Digest` challenge (RFC 7616 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server nonce.
    pub nonce: String,
    /// The algorithm (MD5 when the challenge names none).
    pub algorithm: Algorithm,
    /// `qop` offered `auth`.
    pub qop_auth: bool,
    /// `qop` offered `auth-int`.
    pub qop_auth_int: bool,
    /// The opaque value, echoed back unchanged.
    pub opaque: Option<String>,
    /// `stale=true`: the previous nonce was old, the password was right.
    pub stale: bool,
}

impl Challenge {
    /// Parses every challenge in one `WWW-Authenticate` / `Proxy-Authenticate`
    /// value (RFC 7235 §4.1 allows several in one value). Non-Digest
    /// challenges are skipped; each Digest one is parsed on its own.
    pub fn parse_all(value: &str) -> Vec<Result<Challenge, DigestError>> {
        match parse_auth_items(value) {
            Ok(items) => items
                .iter()
                .filter(|item| item.scheme.eq_ignore_ascii_case("Digest"))
                .map(challenge_from)
                .collect(),
            Err(e) => vec![Err(e)],
        }
    }

    /// Parses a value holding exactly one Digest challenge.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let items = parse_auth_items(value)?;
        match items.as_slice() {
            [item] if item.scheme.eq_ignore_ascii_case("Digest") => challenge_from(item),
            [_] => Err(DigestError::NotDigest),
            _ => Err(DigestError::Syntax),
        }
    }

    /// The challenge as a header value (what [`Challenger`] sends).
    pub fn to_header_value(&self) -> String {
        let mut out = String::with_capacity(160);
        out.push_str("Digest realm=");
        push_quoted(&mut out, &self.realm);
        out.push_str(", nonce=");
        push_quoted(&mut out, &self.nonce);
        out.push_str(", algorithm=");
        out.push_str(self.algorithm.as_str());
        match (self.qop_auth, self.qop_auth_int) {
            (true, true) => out.push_str(", qop=\"auth,auth-int\""),
            (true, false) => out.push_str(", qop=\"auth\""),
            (false, true) => out.push_str(", qop=\"auth-int\""),
            (false, false) => {}
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(", opaque=");
            push_quoted(&mut out, opaque);
        }
        if self.stale {
            out.push_str(", stale=true");
        }
        out
    }
}

/// Picks the challenge to answer among all challenge header values of one
/// response: the strongest supported algorithm (RFC 8760 §2.4), only for
/// `realm` when given; on a tie the first.
pub fn choose_challenge<'a>(
    values: impl IntoIterator<Item = &'a str>,
    realm: Option<&str>,
) -> Result<Challenge, DigestError> {
    let mut best: Option<Challenge> = None;
    let mut first_error = None;
    let mut other_realm = false;
    for value in values {
        for parsed in Challenge::parse_all(value) {
            match parsed {
                Ok(c) if realm.is_some_and(|r| r != c.realm) => other_realm = true,
                Ok(c) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| c.algorithm.rank() > b.algorithm.rank())
                    {
                        best = Some(c);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    match (best, other_realm, first_error) {
        (Some(c), _, _) => Ok(c),
        (None, true, _) => Err(DigestError::RealmMismatch),
        (None, false, Some(e)) => Err(e),
        (None, false, None) => Err(DigestError::NoChallenge),
    }
}

/// A client's credentials for answering challenges.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The username.
    pub username: String,
    /// The password or a precomputed HA1.
    pub secret: Secret,
    /// Answer only challenges of this realm (`None`: any realm). A
    /// precomputed HA1 is valid for one realm, so set it with [`Secret::Ha1`].
    pub realm: Option<String>,
}

/// Which header carries the credentials and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// [`HeaderName::Authorization`] for a 401,
    /// [`HeaderName::ProxyAuthorization`] for a 407.
    pub header: HeaderName,
    /// The value.
    pub value: AuthorizationValue,
}

/// An `Authorization` / `Proxy-Authorization` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationValue(String);

impl AuthorizationValue {
    /// The value as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AuthorizationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Credentials {
    /// Credentials with a clear-text password, for any realm.
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.into(),
            secret: Secret::Password(password.into()),
            realm: None,
        }
    }

    /// Picks the challenge to answer among header values (see
    /// [`choose_challenge`]), honouring the realm filter.
    pub fn choose<'a>(
        &self,
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Challenge, DigestError> {
        choose_challenge(values, self.realm.as_deref())
    }

    /// Computes the credentials for `challenge` (RFC 7616 §3.4). `cnonce`
    /// and `nc` (1 for a fresh nonce, +1 per reuse) come from the caller;
    /// they are unused when the challenge offers no qop (RFC 2069 form).
    /// `qop=auth` is chosen when offered, else `auth-int`.
    pub fn respond(
        &self,
        challenge: &Challenge,
        request: &DigestRequest<'_>,
        cnonce: &str,
        nc: u32,
    ) -> Result<AuthorizationValue, DigestError> {
        if self.realm.as_ref().is_some_and(|r| *r != challenge.realm) {
            return Err(DigestError::RealmMismatch);
        }
        let algorithm = challenge.algorithm;
        let qop = match (challenge.qop_auth, challenge.qop_auth_int) {
            (true, _) => Some(Qop::Auth),
            (false, true) => Some(Qop::AuthInt),
            (false, false) => None,
        };
        // RFC 7616 §3.4.2: the -sess HA1 needs a cnonce, which only a qop
        // exchange carries.
        if algorithm.is_sess() && qop.is_none() {
            return Err(DigestError::MissingParam("qop"));
        }
        let ha1 = self
            .secret
            .ha1(algorithm, &self.username, &challenge.realm)
            .ok_or(DigestError::NoSecretForAlgorithm)?;
        let nc_text = format!("{nc:08x}");
        let response = compute_response(
            algorithm,
            &ha1,
            &challenge.nonce,
            qop.map(|q| (q, nc_text.as_str(), cnonce)),
            request,
        );

        let mut out = String::with_capacity(320);
        out.push_str("Digest username=");
        push_quoted(&mut out, &self.username);
        out.push_str(", realm=");
        push_quoted(&mut out, &challenge.realm);
        out.push_str(", nonce=");
        push_quoted(&mut out, &challenge.nonce);
        out.push_str(", uri=");
        push_quoted(&mut out, request.uri);
        out.push_str(", response=\"");
        out.push_str(&response);
        out.push_str("\", algorithm=");
        out.push_str(algorithm.as_str());
        if let Some(qop) = qop {
            out.push_str(", cnonce=");
            push_quoted(&mut out, cnonce);
            out.push_str(", qop=");
            out.push_str(qop.as_str());
            out.push_str(", nc=");
            out.push_str(&nc_text);
        }
        if let Some(opaque) = &challenge.opaque {
            out.push_str(", opaque=");
            push_quoted(&mut out, opaque);
        }
        Ok(AuthorizationValue(out))
    }

    /// Answers a 401 (from `WWW-Authenticate`, into `Authorization`) or a
    /// 407 (from `Proxy-Authenticate`, into `Proxy-Authorization`), RFC 3261
    /// §22.2–22.3.
    pub fn answer(
        &self,
        response: &Response,
        request: &DigestRequest<'_>,
        cnonce: &str,
        nc: u32,
    ) -> Result<Answer, DigestError> {
        let (challenge_header, header) = match response.status {
            401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
            407 => (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            ),
            _ => return Err(DigestError::NotAChallenge),
        };
        // Not `get_all`: a challenge contains commas of its own.
        let values = response
            .headers
            .fields()
            .iter()
            .filter(|f| f.name == challenge_header)
            .map(|f| &*f.value);
        let challenge = self.choose(values)?;
        let value = self.respond(&challenge, request, cnonce, nc)?;
        Ok(Answer { header, value })
    }
}

/// Parsed `Authorization` / `Proxy-Authorization` credentials (RFC 7616
/// §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The username.
    pub username: String,
    /// The realm.
    pub realm: String,
    /// The nonce being answered.
    pub nonce: String,
    /// The digest-uri.
    pub uri: String,
    /// The response hash, as sent.
    pub response: String,
    /// The algorithm (MD5 when absent).
    pub algorithm: Algorithm,
    /// The qop chosen, when any.
    pub qop: Option<Qop>,
    /// The client nonce (present when qop is).
    pub cnonce: Option<String>,
    /// The nonce count (present when qop is).
    pub nc: Option<u32>,
    /// The opaque value echoed back.
    pub opaque: Option<String>,
    /// The nc exactly as sent: the response hashes these characters.
    nc_text: Option<String>,
}

impl Authorization {
    /// Parses a credentials value. A non-Digest scheme gives
    /// [`DigestError::NotDigest`].
    pub fn parse(value: &str) -> Result<Authorization, DigestError> {
        // The scheme first: other schemes may carry a token68 (RFC 7235
        // §2.1) that the auth-param parser does not read.
        let scheme = value.trim_start().split([' ', '\t']).next().unwrap_or("");
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let items = parse_auth_items(value)?;
        let [item] = items.as_slice() else {
            return Err(DigestError::Syntax);
        };
        let required = |name: &'static str| {
            item.get(name)
                .map(str::to_owned)
                .ok_or(DigestError::MissingParam(name))
        };
        let algorithm = match item.get("algorithm") {
            None => Algorithm::Md5,
            Some(token) => Algorithm::parse(token).ok_or(DigestError::UnsupportedAlgorithm)?,
        };
        let qop = item
            .get("qop")
            .map(|q| Qop::parse(q).ok_or(DigestError::UnsupportedQop))
            .transpose()?;
        let (cnonce, nc, nc_text) = match qop {
            None => (None, None, None),
            Some(_) => {
                // RFC 7616 §3.4: cnonce and nc MUST be sent with a qop.
                let cnonce = required("cnonce")?;
                let nc_text = required("nc")?;
                if nc_text.len() != 8 || !nc_text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(DigestError::BadNonceCount);
                }
                let nc =
                    u32::from_str_radix(&nc_text, 16).map_err(|_| DigestError::BadNonceCount)?;
                (Some(cnonce), Some(nc), Some(nc_text))
            }
        };
        Ok(Authorization {
            username: required("username")?,
            realm: required("realm")?,
            nonce: required("nonce")?,
            uri: required("uri")?,
            response: required("response")?,
            algorithm,
            qop,
            cnonce,
            nc,
            opaque: item.get("opaque").map(str::to_owned),
            nc_text,
        })
    }
}

/// Why a challenge or credentials value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Peer: the scheme is not Digest (e.g. Basic).
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// Peer: the value does not follow the auth-param grammar (RFC 7235 §2.1).
    #[error("malformed auth-param list")]
    Syntax,
    /// Peer: a quoted-string has no closing quote.
    #[error("unterminated quoted-string")]
    UnterminatedQuote,
    /// Peer: a parameter appears twice (RFC 7235 §2.1 forbids it).
    #[error("duplicate auth-param")]
    DuplicateParam,
    /// Peer: a mandatory parameter is absent.
    #[error("missing auth-param {0}")]
    MissingParam(&'static str),
    /// Peer: the algorithm is one we do not implement.
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    /// Peer: the qop names neither auth nor auth-int.
    #[error("unsupported qop")]
    UnsupportedQop,
    /// Peer: nc is not eight hex digits (RFC 7616 §3.4).
    #[error("malformed nonce count")]
    BadNonceCount,
    /// Peer: the 401/407 carries no Digest challenge.
    #[error("no Digest challenge in the response")]
    NoChallenge,
    /// Local: challenges exist, but none for the realm our credentials are for.
    #[error("no challenge for the configured realm")]
    RealmMismatch,
    /// Local: the stored HA1 was computed with another hash than the
    /// challenge asks for.
    #[error("stored HA1 does not fit the challenge's algorithm")]
    NoSecretForAlgorithm,
    /// Local: [`Credentials::answer`] was given a response other than 401/407.
    #[error("response is not a 401 or 407")]
    NotAChallenge,
}

/// The server side: issues nonces and verifies credentials for one realm.
///
/// A nonce is hex of `issued (u32 s) ‖ counter (u64) ‖ HMAC-SHA-256(key,
/// realm ‖ issued ‖ counter)[..16]`: no table of issued nonces, expiry
/// checked from the nonce itself, a forged or foreign nonce recognised. Only
/// nonces that were used are remembered, with the highest nc seen (RFC 7616
/// §3.4: the server should refuse a repeated nc), at most
/// [`MAX_TRACKED_NONCES`] of them.
#[derive(Debug)]
pub struct Challenger {
    realm: String,
    lifetime: Duration,
    algorithms: Vec<Algorithm>,
    key: [u8; 32],
    epoch: Instant,
    counter: u64,
    /// counter → (issued second, highest nc), for nonces that were used.
    seen: BTreeMap<u64, (u32, u32)>,
    /// Counters at or below this were evicted from `seen`: their nc history
    /// is lost, so they are refused as stale rather than accepted afresh.
    evicted_through: Option<u64>,
}

/// How many used nonces the replay table of a [`Challenger`] remembers.
pub const MAX_TRACKED_NONCES: usize = 4096;

impl Challenger {
    /// A challenger for `realm`; nonces live `nonce_lifetime`. `key` must be
    /// random (the engine draws it at start-up; nonces of a previous run are
    /// then stale). `now` is the time origin of the nonce timestamps.
    /// Offers SHA-256, then MD5 (RFC 8760 §2.4).
    pub fn new(realm: &str, nonce_lifetime: Duration, key: [u8; 32], now: Instant) -> Challenger {
        Challenger {
            realm: realm.into(),
            lifetime: nonce_lifetime,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            key,
            epoch: now,
            counter: 0,
            seen: BTreeMap::new(),
            evicted_through: None,
        }
    }

    /// Sets the algorithms to offer, in order of preference (some old phones
    /// only read the first challenge, so MD5 first may be needed for them).
    /// `-sess` variants and repeats are dropped; an empty result keeps the
    /// previous offer.
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Challenger {
        let mut offer: Vec<Algorithm> = Vec::with_capacity(2);
        for &a in algorithms {
            if !a.is_sess() && !offer.contains(&a) {
                offer.push(a);
            }
        }
        if !offer.is_empty() {
            self.algorithms = offer;
        }
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Fresh challenges (one `WWW-Authenticate` value per offered algorithm,
    /// preferred first, one shared nonce), with `stale=true` after a
    /// [`AuthError::StaleNonce`].
    pub fn challenges(&mut self, now: Instant, stale: bool) -> Vec<String> {
        self.counter += 1;
        let nonce = self.make_nonce(self.secs(now), self.counter);
        self.algorithms
            .iter()
            .map(|&algorithm| {
                Challenge {
                    realm: self.realm.clone(),
                    nonce: nonce.clone(),
                    algorithm,
                    qop_auth: true,
                    qop_auth_int: false,
                    opaque: None,
                    stale,
                }
                .to_header_value()
            })
            .collect()
    }

    /// Verifies the credentials among `authorizations` (every
    /// `Authorization` value of the request; the one for our realm is used)
    /// and returns the authenticated username. `lookup` gives a user's secret.
    ///
    /// Order (RFC 2617 §3.2.1 on `stale`): the response is checked before the
    /// nonce, so [`AuthError::StaleNonce`] means "right password, old nonce".
    pub fn verify<'a>(
        &mut self,
        authorizations: impl IntoIterator<Item = &'a str>,
        request: &DigestRequest<'_>,
        lookup: &dyn Fn(&str) -> Option<Secret>,
        now: Instant,
    ) -> Result<String, AuthError> {
        // Why the values we could not use were refused, when it matters.
        let mut refused = None;
        let mut other_realm = false;
        let mut ours = None;
        for value in authorizations {
            match Authorization::parse(value) {
                Ok(a) if a.realm == self.realm => {
                    ours = Some(a);
                    break;
                }
                Ok(_) => other_realm = true,
                // Another scheme (Basic …) is not an answer to our challenge.
                Err(DigestError::NotDigest) => {}
                Err(DigestError::UnsupportedAlgorithm) => {
                    refused = Some(AuthError::UnsupportedAlgorithm);
                }
                Err(e) => refused = Some(AuthError::Malformed(e)),
            }
        }
        let auth = match (ours, refused, other_realm) {
            (Some(a), _, _) => a,
            (None, Some(e), _) => return Err(e),
            (None, None, true) => return Err(AuthError::WrongRealm),
            (None, None, false) => return Err(AuthError::Missing),
        };
        if !self.algorithms.contains(&auth.algorithm) {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        // We always offer qop="auth"; RFC 7616 §3.4 makes the client use it.
        let (Some(qop), Some(cnonce), Some(nc), Some(nc_text)) =
            (auth.qop, &auth.cnonce, auth.nc, &auth.nc_text)
        else {
            return Err(AuthError::Malformed(DigestError::MissingParam("qop")));
        };
        // RFC 2617 §3.2.2.5: the digest-uri must be the Request-URI.
        if !auth.uri.eq_ignore_ascii_case(request.uri) {
            return Err(AuthError::UriMismatch);
        }
        let secret = lookup(&auth.username).ok_or(AuthError::UnknownUser)?;
        let ha1 = secret
            .ha1(auth.algorithm, &auth.username, &self.realm)
            .ok_or(AuthError::UnsupportedAlgorithm)?;
        let expected = compute_response(
            auth.algorithm,
            &ha1,
            &auth.nonce,
            Some((qop, nc_text, cnonce)),
            request,
        );
        if !hex_eq_ct(&expected, &auth.response) {
            return Err(AuthError::BadResponse);
        }

        // The password is right; now whether the nonce is ours and fresh.
        let now_secs = self.secs(now);
        let (issued, counter) = self.open_nonce(&auth.nonce).ok_or(AuthError::StaleNonce)?;
        if issued > now_secs || u64::from(now_secs - issued) > self.lifetime.as_secs() {
            return Err(AuthError::StaleNonce);
        }
        self.forget_expired(now_secs);
        match self.seen.get_mut(&counter) {
            Some((_, last)) if nc <= *last => return Err(AuthError::Replayed),
            Some((_, last)) => *last = nc,
            None if self.evicted_through.is_some_and(|e| counter <= e) => {
                return Err(AuthError::StaleNonce);
            }
            None => {
                self.seen.insert(counter, (issued, nc));
                if self.seen.len() > MAX_TRACKED_NONCES
                    && let Some((oldest, _)) = self.seen.pop_first()
                {
                    self.evicted_through = Some(oldest);
                }
            }
        }
        Ok(auth.username)
    }

    /// Used nonces remembered against replay (at most
    /// [`MAX_TRACKED_NONCES`]); challenges and wrong answers add none.
    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }

    fn secs(&self, now: Instant) -> u32 {
        let secs = now.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    fn mac(&self, issued: u32, counter: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(self.realm.as_bytes());
        mac.update(&[0]);
        mac.update(&issued.to_be_bytes());
        mac.update(&counter.to_be_bytes());
        mac
    }

    fn make_nonce(&self, issued: u32, counter: u64) -> String {
        let mut raw = [0u8; NONCE_LEN];
        raw[..4].copy_from_slice(&issued.to_be_bytes());
        raw[4..12].copy_from_slice(&counter.to_be_bytes());
        let tag = self.mac(issued, counter).finalize().into_bytes();
        raw[12..].copy_from_slice(&tag[..NONCE_LEN - 12]);
        to_hex(&raw)
    }

    /// The issue second and counter of a nonce we made, `None` otherwise.
    fn open_nonce(&self, nonce: &str) -> Option<(u32, u64)> {
        let raw: [u8; NONCE_LEN] = from_hex(nonce)?;
        let issued = u32::from_be_bytes(raw[..4].try_into().ok()?);
        let counter = u64::from_be_bytes(raw[4..12].try_into().ok()?);
        self.mac(issued, counter)
            .verify_truncated_left(&raw[12..])
            .ok()?;
        Some((issued, counter))
    }

    /// Drops replay entries of expired nonces: counters grow with time, so
    /// they are at the front.
    fn forget_expired(&mut self, now_secs: u32) {
        while let Some((_, &(issued, _))) = self.seen.first_key_value() {
            if u64::from(now_secs.saturating_sub(issued)) <= self.lifetime.as_secs() {
                break;
            }
            self.seen.pop_first();
        }
    }
}

/// Why credentials were refused (server side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Peer: no Digest credentials (→ 401 with a challenge).
    #[error("no credentials")]
    Missing,
    /// Peer: the credentials for our realm do not parse (→ 400).
    #[error("malformed credentials: {0}")]
    Malformed(DigestError),
    /// Peer: the username is not configured (→ 401).
    #[error("unknown user")]
    UnknownUser,
    /// Peer: credentials exist, but for another realm (→ 401).
    #[error("credentials for another realm")]
    WrongRealm,
    /// Peer: right password, but the nonce expired or is not ours (e.g.
    /// from before a restart) (→ 401 with `stale=true`).
    #[error("stale nonce")]
    StaleNonce,
    /// Peer: the response hash is wrong: wrong password (→ 401).
    #[error("wrong digest response")]
    BadResponse,
    /// Peer: an algorithm we did not offer (→ 401).
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// Peer: a nonce count not above the last one seen for the nonce:
    /// a replay (→ 401).
    #[error("replayed nonce count")]
    Replayed,
    /// Peer: the digest-uri is not the Request-URI (→ 401).
    #[error("digest uri differs from the Request-URI")]
    UriMismatch,
}

// ---------------------------------------------------------------------------
// helpers

const NONCE_LEN: usize = 4 + 8 + 16;

/// One scheme with its auth-params (values unquoted, escapes resolved).
struct AuthItem<'a> {
    scheme: &'a str,
    params: Vec<(&'a str, Cow<'a, str>)>,
}

impl AuthItem<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

/// Parses `scheme param=value, param="value", …[, scheme …]` (RFC 7235
/// §2.1/§4.1: challenge and credentials lists).
fn parse_auth_items(value: &str) -> Result<Vec<AuthItem<'_>>, DigestError> {
    let bytes = value.as_bytes();
    let mut pos = 0;
    let mut items: Vec<AuthItem<'_>> = Vec::with_capacity(1);
    loop {
        while bytes.get(pos).is_some_and(|&b| is_ws(b) || b == b',') {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        let start = pos;
        while bytes.get(pos).is_some_and(|&b| is_tchar(b)) {
            pos += 1;
        }
        if pos == start {
            return Err(DigestError::Syntax);
        }
        // Token characters are ASCII: `start..pos` is on char boundaries.
        let token = &value[start..pos];
        skip_ws(bytes, &mut pos);
        if bytes.get(pos) != Some(&b'=') {
            // A token not followed by `=` starts a new challenge.
            items.push(AuthItem {
                scheme: token,
                params: Vec::with_capacity(8),
            });
            continue;
        }
        pos += 1;
        skip_ws(bytes, &mut pos);
        let param_value = read_param_value(value, &mut pos)?;
        let Some(item) = items.last_mut() else {
            return Err(DigestError::Syntax);
        };
        if item.get(token).is_some() {
            return Err(DigestError::DuplicateParam);
        }
        item.params.push((token, param_value));
        skip_ws(bytes, &mut pos);
        match bytes.get(pos) {
            None | Some(b',') => {}
            Some(_) => return Err(DigestError::Syntax),
        }
    }
    Ok(items)
}

/// Reads a quoted-string (RFC 7230 §3.2.6, `\` escapes) or an unquoted
/// value. Unquoted values are taken up to white space or a comma, wider
/// than `token`: servers send nonces with `/`, `+`, `=` unquoted.
fn read_param_value<'a>(value: &'a str, pos: &mut usize) -> Result<Cow<'a, str>, DigestError> {
    let bytes = value.as_bytes();
    if bytes.get(*pos) == Some(&b'"') {
        let body_start = *pos + 1;
        let rest = value.get(body_start..).ok_or(DigestError::Syntax)?;
        let mut owned: Option<String> = None;
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    *pos = body_start + i + 1;
                    return Ok(match owned {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&rest[..i]),
                    });
                }
                '\\' => {
                    let (_, escaped) = chars.next().ok_or(DigestError::UnterminatedQuote)?;
                    owned
                        .get_or_insert_with(|| rest[..i].to_owned())
                        .push(escaped);
                }
                c => {
                    if let Some(s) = owned.as_mut() {
                        s.push(c);
                    }
                }
            }
        }
        return Err(DigestError::UnterminatedQuote);
    }
    let start = *pos;
    while bytes
        .get(*pos)
        .is_some_and(|&b| !is_ws(b) && b != b',' && b != b'"')
    {
        *pos += 1;
    }
    if *pos == start {
        return Err(DigestError::Syntax);
    }
    // Stops only at ASCII bytes, so the slice is on char boundaries.
    Ok(Cow::Borrowed(&value[start..*pos]))
}

fn challenge_from(item: &AuthItem<'_>) -> Result<Challenge, DigestError> {
    let realm = item
        .get("realm")
        .ok_or(DigestError::MissingParam("realm"))?;
    let nonce = item
        .get("nonce")
        .ok_or(DigestError::MissingParam("nonce"))?;
    let algorithm = match item.get("algorithm") {
        // RFC 2617 §3.2.1: absent means MD5.
        None => Algorithm::Md5,
        Some(token) => Algorithm::parse(token).ok_or(DigestError::UnsupportedAlgorithm)?,
    };
    let (mut qop_auth, mut qop_auth_int) = (false, false);
    if let Some(list) = item.get("qop") {
        for token in list.split(',').map(str::trim) {
            match Qop::parse(token) {
                Some(Qop::Auth) => qop_auth = true,
                Some(Qop::AuthInt) => qop_auth_int = true,
                // RFC 2617 §3.2.1: unrecognised options are ignored.
                None => {}
            }
        }
        if !qop_auth && !qop_auth_int {
            return Err(DigestError::UnsupportedQop);
        }
    }
    Ok(Challenge {
        realm: realm.into(),
        nonce: nonce.into(),
        algorithm,
        qop_auth,
        qop_auth_int,
        opaque: item.get("opaque").map(Into::into),
        stale: item
            .get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// `KD(HA1, nonce:nc:cnonce:qop:HA2)` or, without qop, `KD(HA1, nonce:HA2)`
/// (RFC 7616 §3.4.1; RFC 2617 §3.2.2.1). `ha1` is the plain HA1; the -sess
/// one is derived here.
fn compute_response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<(Qop, &str, &str)>,
    request: &DigestRequest<'_>,
) -> String {
    let cnonce = qop.map_or("", |(_, _, c)| c);
    let sess_ha1;
    let ha1 = if algorithm.is_sess() {
        // RFC 7616 §3.4.2: HA1 = H(H(user:realm:pass):nonce:cnonce).
        sess_ha1 = hash_hex(
            algorithm,
            &[ha1.as_bytes(), nonce.as_bytes(), cnonce.as_bytes()],
        );
        &sess_ha1
    } else {
        ha1
    };
    // RFC 7616 §3.4.3: HA2 = H(method:uri[:H(body)]).
    let ha2 = match qop {
        Some((Qop::AuthInt, _, _)) => {
            let body_hash = hash_hex(algorithm, &[request.body]);
            hash_hex(
                algorithm,
                &[
                    request.method.as_bytes(),
                    request.uri.as_bytes(),
                    body_hash.as_bytes(),
                ],
            )
        }
        Some((Qop::Auth, _, _)) | None => hash_hex(
            algorithm,
            &[request.method.as_bytes(), request.uri.as_bytes()],
        ),
    };
    match qop {
        Some((qop, nc, cnonce)) => hash_hex(
            algorithm,
            &[
                ha1.as_bytes(),
                nonce.as_bytes(),
                nc.as_bytes(),
                cnonce.as_bytes(),
                qop.as_str().as_bytes(),
                ha2.as_bytes(),
            ],
        ),
        None => hash_hex(
            algorithm,
            &[ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()],
        ),
    }
}

/// `H(p1 ":" p2 ":" …)` in lower-case hex.
fn hash_hex(algorithm: Algorithm, parts: &[&[u8]]) -> String {
    fn joined<D: Digest>(parts: &[&[u8]]) -> String {
        let mut hasher = D::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                hasher.update(b":");
            }
            hasher.update(part);
        }
        to_hex(&hasher.finalize())
    }
    match algorithm.base() {
        Algorithm::Sha256 => joined::<Sha256>(parts),
        _ => joined::<Md5>(parts),
    }
}

/// Compares our lower-case hex with a received one (any case) in time
/// independent of where they differ.
fn hex_eq_ct(expected: &str, received: &str) -> bool {
    expected.len() == received.len()
        && expected
            .bytes()
            .zip(received.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
            == 0
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_ws(bytes: &[u8], pos: &mut usize) {
    while bytes.get(*pos).is_some_and(|&b| is_ws(b)) {
        *pos += 1;
    }
}

/// RFC 7230 §3.2.6 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Answers a trunk's 401/407 for outbound calls ([`uac::Authenticator`]):
/// digest [`Credentials`] plus a fresh client nonce per answer.
///
/// [`uac::Authenticator`]: crate::sip::uac::Authenticator
pub struct DigestAuthenticator {
    credentials: Credentials,
    rng: fastrand::Rng,
}

impl DigestAuthenticator {
    /// Credentials for `username`/`password`; `seed` drives the cnonces.
    pub fn new(username: &str, password: &str, seed: u64) -> DigestAuthenticator {
        DigestAuthenticator {
            credentials: Credentials::new(username, password),
            rng: fastrand::Rng::with_seed(seed),
        }
    }
}

impl crate::sip::uac::Authenticator for DigestAuthenticator {
    fn authorize(
        &mut self,
        challenge: &str,
        method: &crate::sip::message::Method,
        uri: &str,
        _proxy: bool,
    ) -> Option<String> {
        let challenge = self.credentials.choose(std::iter::once(challenge)).ok()?;
        let request = DigestRequest {
            method: method.as_str(),
            uri,
            body: b"",
        };
        let value = self
            .credentials
            .respond(&challenge, &request, &cnonce(self.rng.u64(..)), 1)
            .ok()?;
        Some(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticator_answers_a_challenge_the_challenger_accepts() {
        use crate::sip::uac::Authenticator;
        let t0 = Instant::now();
        let mut server = Challenger::new("carrier", Duration::from_secs(300), [7; 32], t0);
        let challenge = server.challenges(t0, false).remove(0);
        let mut client = DigestAuthenticator::new("trunkuser", "s3cret", 1);
        let method = crate::sip::message::Method::Invite;
        let value = client
            .authorize(&challenge, &method, "sip:+13125550188@127.0.0.1", false)
            .expect("an answer");
        let lookup = |user: &str| (user == "trunkuser").then(|| Secret::Password("s3cret".into()));
        let request = DigestRequest {
            method: "INVITE",
            uri: "sip:+13125550188@127.0.0.1",
            body: b"",
        };
        assert_eq!(
            server
                .verify([value.as_str()], &request, &lookup, t0)
                .as_deref(),
            Ok("trunkuser")
        );
        assert_eq!(
            client.authorize("Basic realm=\"x\"", &method, "sip:a@b", false),
            None
        );
    }

    const GET: DigestRequest<'static> = DigestRequest {
        method: "GET",
        uri: "/dir/index.html",
        body: b"",
    };

    fn register(uri: &'static str) -> DigestRequest<'static> {
        DigestRequest {
            method: "REGISTER",
            uri,
            body: b"",
        }
    }

    fn param(value: &str, name: &str) -> Option<String> {
        let items = parse_auth_items(value).ok()?;
        items.first()?.get(name).map(str::to_owned)
    }

    #[test]
    fn rfc2617_example_md5_qop_auth() {
        // RFC 2617 §3.5.
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("RFC example parses");
        assert_eq!(challenge.algorithm, Algorithm::Md5);
        assert!(challenge.qop_auth && challenge.qop_auth_int);
        let creds = Credentials::new("Mufasa", "Circle Of Life");
        let value = creds
            .respond(&challenge, &GET, "0a4f113b", 1)
            .expect("responds");
        assert_eq!(
            param(value.as_str(), "response").as_deref(),
            Some("6629fae49393a05397450978507c4ef1")
        );
        assert_eq!(
            value.as_str(),
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, \
             cnonce=\"0a4f113b\", qop=auth, nc=00000001, \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""
        );
    }

    /// RFC 7616 §3.9.1 (password "Circle of Life", lower-case o: erratum 4495).
    fn rfc7616_challenge(algorithm: &str) -> Challenge {
        Challenge::parse(&format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
             algorithm={algorithm}, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        ))
        .expect("RFC example parses")
    }

    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    #[test]
    fn rfc7616_example_sha256() {
        let challenge = rfc7616_challenge("SHA-256");
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        let creds = Credentials::new("Mufasa", "Circle of Life");
        let value = creds
            .respond(&challenge, &GET, RFC7616_CNONCE, 1)
            .expect("responds");
        assert_eq!(
            param(value.as_str(), "response").as_deref(),
            Some("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        );
        assert_eq!(
            param(value.as_str(), "algorithm").as_deref(),
            Some("SHA-256")
        );
        assert_eq!(
            param(value.as_str(), "opaque").as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
    }

    #[test]
    fn rfc7616_example_md5() {
        let creds = Credentials::new("Mufasa", "Circle of Life");
        let value = creds
            .respond(&rfc7616_challenge("MD5"), &GET, RFC7616_CNONCE, 1)
            .expect("responds");
        assert_eq!(
            param(value.as_str(), "response").as_deref(),
            Some("8ca523f5e9506fed4657c9700eebdbec")
        );
    }

    #[test]
    fn precomputed_ha1_gives_the_same_response() {
        let challenge = rfc7616_challenge("SHA-256");
        let creds = Credentials {
            username: "Mufasa".into(),
            secret: Secret::Ha1 {
                algorithm: Algorithm::Sha256,
                hex: ha1(
                    Algorithm::Sha256,
                    "Mufasa",
                    "http-auth@example.org",
                    "Circle of Life",
                ),
            },
            realm: Some("http-auth@example.org".into()),
        };
        let value = creds
            .respond(&challenge, &GET, RFC7616_CNONCE, 1)
            .expect("responds");
        assert_eq!(
            param(value.as_str(), "response").as_deref(),
            Some("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        );
    }

    #[test]
    fn rejects_ha1_of_another_hash() {
        let creds = Credentials {
            username: "Mufasa".into(),
            secret: Secret::Ha1 {
                algorithm: Algorithm::Md5,
                hex: "00".repeat(16),
            },
            realm: None,
        };
        assert_eq!(
            creds.respond(&rfc7616_challenge("SHA-256"), &GET, "c", 1),
            Err(DigestError::NoSecretForAlgorithm)
        );
    }

    #[test]
    fn rfc2069_form_without_qop() {
        // RFC 2069 §2.4's example: response = MD5(HA1:nonce:HA2).
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("parses");
        let value = Credentials::new("Mufasa", "CircleOfLife")
            .respond(&challenge, &GET, "unused", 1)
            .expect("responds");
        assert_eq!(
            param(value.as_str(), "response").as_deref(),
            Some("1949323746fe6a43ef61f9606e7febea")
        );
        assert_eq!(param(value.as_str(), "qop"), None);
        assert_eq!(param(value.as_str(), "nc"), None);
        assert_eq!(param(value.as_str(), "cnonce"), None);
    }

    #[test]
    fn sess_and_auth_int_hash_as_rfc7616_says() {
        let challenge = Challenge::parse(
            "Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess, qop=\"auth-int\"",
        )
        .expect("parses");
        let request = DigestRequest {
            method: "INVITE",
            uri: "sip:bob@b.example",
            body: b"v=0\r\n",
        };
        let value = Credentials::new("u", "p")
            .respond(&challenge, &request, "c", 2)
            .expect("responds");
        let md5 = |s: &str| hash_hex(Algorithm::Md5, &[s.as_bytes()]);
        let ha1 = md5(&format!("{}:n:c", md5("u:r:p")));
        let ha2 = md5(&format!("INVITE:sip:bob@b.example:{}", md5("v=0\r\n")));
        let expected = md5(&format!("{ha1}:n:00000002:c:auth-int:{ha2}"));
        assert_eq!(param(value.as_str(), "response"), Some(expected));
        assert_eq!(param(value.as_str(), "qop").as_deref(), Some("auth-int"));
        assert_eq!(param(value.as_str(), "nc").as_deref(), Some("00000002"));
    }

    #[test]
    fn chooses_sha256_over_md5_across_headers_and_within_one() {
        let md5 = "Digest realm=\"a\", nonce=\"1\", algorithm=MD5, qop=\"auth\"";
        let sha = "Digest realm=\"a\", nonce=\"2\", algorithm=SHA-256, qop=\"auth\"";
        let chosen = choose_challenge([md5, sha], None).expect("one is supported");
        assert_eq!(chosen.algorithm, Algorithm::Sha256);
        assert_eq!(chosen.nonce, "2");
        let both = format!("{md5}, {sha}");
        let chosen = choose_challenge([both.as_str()], None).expect("one is supported");
        assert_eq!(chosen.algorithm, Algorithm::Sha256);
        assert_eq!(chosen.nonce, "2");
    }

    #[test]
    fn skips_unsupported_and_other_schemes_when_choosing() {
        let values = [
            "Basic realm=\"a\"",
            "Digest realm=\"a\", nonce=\"x\", algorithm=SHA-512-256",
            "Digest realm=\"a\", nonce=\"y\"",
        ];
        let chosen = choose_challenge(values, None).expect("MD5 one is usable");
        assert_eq!(chosen.nonce, "y");
        assert_eq!(chosen.algorithm, Algorithm::Md5);
        assert_eq!(
            choose_challenge(values[..2].iter().copied(), None),
            Err(DigestError::UnsupportedAlgorithm)
        );
        assert_eq!(
            choose_challenge(["Basic realm=\"a\""], None),
            Err(DigestError::NoChallenge)
        );
    }

    #[test]
    fn realm_filter_refuses_other_realms() {
        let creds = Credentials {
            realm: Some("mine".into()),
            ..Credentials::new("u", "p")
        };
        assert_eq!(
            creds.choose(["Digest realm=\"theirs\", nonce=\"n\""]),
            Err(DigestError::RealmMismatch)
        );
        let chosen = creds
            .choose([
                "Digest realm=\"theirs\", nonce=\"n\", algorithm=SHA-256",
                "Digest realm=\"mine\", nonce=\"m\"",
            ])
            .expect("mine is there");
        assert_eq!(chosen.nonce, "m");
    }

    #[test]
    fn parses_escapes_case_and_loose_whitespace() {
        let c = Challenge::parse(
            "digest   REALM = \"a \\\"quoted\\\" \\\\ realm\" ,NONCE=abc/+=,\
             Algorithm=\"sha-256\",  qop=auth ,stale=TRUE,opaque=\"\"",
        )
        .expect("parses");
        assert_eq!(c.realm, "a \"quoted\" \\ realm");
        assert_eq!(c.nonce, "abc/+=");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!(c.qop_auth && !c.qop_auth_int);
        assert!(c.stale);
        assert_eq!(c.opaque.as_deref(), Some(""));
        // And back: escapes are written again.
        let again = Challenge::parse(&c.to_header_value()).expect("round trip");
        assert_eq!(again, c);
    }

    #[test]
    fn rejects_unterminated_quote() {
        assert_eq!(
            Challenge::parse("Digest realm=\"abc, nonce=\"x\""),
            Err(DigestError::Syntax)
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"abc"),
            Err(DigestError::UnterminatedQuote)
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"abc\\"),
            Err(DigestError::UnterminatedQuote)
        );
    }

    #[test]
    fn rejects_challenge_without_nonce_or_realm() {
        assert_eq!(
            Challenge::parse("Digest realm=\"a\""),
            Err(DigestError::MissingParam("nonce"))
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"a\""),
            Err(DigestError::MissingParam("realm"))
        );
    }

    #[test]
    fn rejects_duplicate_param() {
        assert_eq!(
            Challenge::parse("Digest realm=\"a\", nonce=\"1\", Nonce=\"2\""),
            Err(DigestError::DuplicateParam)
        );
    }

    #[test]
    fn rejects_param_before_scheme_and_missing_comma() {
        assert_eq!(
            Challenge::parse("realm=\"a\", nonce=\"1\""),
            Err(DigestError::Syntax)
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"a\" nonce=\"1\""),
            Err(DigestError::Syntax)
        );
        assert_eq!(
            Challenge::parse("Digest realm=, nonce=\"1\""),
            Err(DigestError::Syntax)
        );
        assert_eq!(Challenge::parse(""), Err(DigestError::Syntax));
        assert_eq!(
            Challenge::parse("Digest realm=\"a\"x"),
            Err(DigestError::Syntax)
        );
    }

    #[test]
    fn rejects_unknown_algorithm_and_qop() {
        assert_eq!(
            Challenge::parse("Digest realm=\"a\", nonce=\"1\", algorithm=SHA-512-256"),
            Err(DigestError::UnsupportedAlgorithm)
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"a\", nonce=\"1\", qop=\"auth-conf\""),
            Err(DigestError::UnsupportedQop)
        );
    }

    #[test]
    fn rejects_sess_without_qop() {
        let c = Challenge::parse("Digest realm=\"a\", nonce=\"1\", algorithm=MD5-sess")
            .expect("parses");
        assert_eq!(
            Credentials::new("u", "p").respond(&c, &GET, "c", 1),
            Err(DigestError::MissingParam("qop"))
        );
    }

    #[test]
    fn rejects_authorization_with_bad_nonce_count() {
        let base = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", \
                    response=\"00\", qop=auth, cnonce=\"c\"";
        for nc in ["1", "0000000g", "000000001", "-0000001"] {
            assert_eq!(
                Authorization::parse(&format!("{base}, nc={nc}")),
                Err(DigestError::BadNonceCount),
                "nc={nc}"
            );
        }
        assert_eq!(
            Authorization::parse(base),
            Err(DigestError::MissingParam("nc"))
        );
        assert_eq!(
            Authorization::parse("Basic dXNlcjpwYXNz"),
            Err(DigestError::NotDigest)
        );
    }

    #[test]
    fn parsing_never_panics_on_cut_values() {
        let full = "Digest username=\"Mufasa\", realm=\"r\\\"é\", nonce=\"n\", \
                    uri=\"sip:x\", response=\"ab\", qop=auth, nc=00000001, cnonce=\"c\"";
        for (i, _) in full.char_indices() {
            let _ = Authorization::parse(&full[..i]);
            let _ = Challenge::parse_all(&full[..i]);
        }
        assert!(Authorization::parse(full).is_ok());
    }

    // --- server side -------------------------------------------------------

    const REALM: &str = "callbackd";
    const URI: &str = "sip:callbackd.example";

    fn lookup(user: &str) -> Option<Secret> {
        (user == "agent7").then(|| Secret::Password("s3cret".into()))
    }

    fn challenger(t0: Instant) -> Challenger {
        Challenger::new(REALM, Duration::from_secs(300), [7; 32], t0)
    }

    /// The client side answering the first challenge we issue.
    fn answer(ch: &mut Challenger, now: Instant, password: &str, nc: u32) -> String {
        let challenges = ch.challenges(now, false);
        let creds = Credentials::new("agent7", password);
        let c = creds
            .choose(challenges.iter().map(String::as_str))
            .expect("our own challenge parses");
        creds
            .respond(&c, &register(URI), "cafe", nc)
            .expect("responds")
            .to_string()
    }

    #[test]
    fn verifies_its_own_challenge_with_sha256() {
        let t0 = Instant::now();
        let mut ch = challenger(t0);
        let challenges = ch.challenges(t0, false);
        assert_eq!(challenges.len(), 2);
        assert!(
            challenges[0].contains("algorithm=SHA-256"),
            "{challenges:?}"
        );
        assert!(challenges[1].contains("algorithm=MD5"), "{challenges:?}");
        assert!(!challenges[0].contains("stale"));
        let value = answer(&mut ch, t0, "s3cret", 1);
        assert!(value.contains("algorithm=SHA-256"));
        assert_eq!(
            ch.verify([value.as_str()], &register(URI), &lookup, t0),
            Ok("agent7".into())
        );
    }

    #[test]
    fn verifies_md5_when_only_md5_is_offered() {
        let t0 = Instant::now();
        let mut ch = challenger(t0).with_algorithms(&[Algorithm::Md5, Algorithm::Md5Sess]);
        let challenges = ch.challenges(t0, true);
        assert_eq!(challenges.len(), 1);
        assert!(challenges[0].contains("stale=true"));
        let value = answer(&mut ch, t0, "s3cret", 1);
        assert!(value.contains("algorithm=MD5"));
        assert_eq!(
            ch.verify([value.as_str()], &register(URI), &lookup, t0),
            Ok("agent7".into())
        );
    }

    #[test]
    fn rejects_algorithm_not_offered() {
        let t0 = Instant::now();
        let mut sha_only = challenger(t0).with_algorithms(&[Algorithm::Sha256]);
        let mut md5_side = challenger(t0).with_algorithms(&[Algorithm::Md5]);
        let value = answer(&mut md5_side, t0, "s3cret", 1);
        assert_eq!(
            sha_only.verify([value.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::UnsupportedAlgorithm)
        );
        let unknown = "Digest username=\"agent7\", realm=\"callbackd\", nonce=\"n\", \
                       uri=\"sip:callbackd.example\", response=\"00\", algorithm=SHA-512-256";
        assert_eq!(
            sha_only.verify([unknown], &register(URI), &lookup, t0),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn rejects_wrong_password() {
        let t0 = Instant::now();
        let mut ch = challenger(t0);
        let value = answer(&mut ch, t0, "guess", 1);
        assert_eq!(
            ch.verify([value.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::BadResponse)
        );
    }

    #[test]
    fn rejects_unknown_user_and_missing_credentials() {
        let t0 = Instant::now();
        let mut ch = challenger(t0);
        let value = answer(&mut ch, t0, "s3cret", 1);
        let nobody = |_: &str| None;
        assert_eq!(
            ch.verify([value.as_str()], &register(URI), &nobody, t0),
            Err(AuthError::UnknownUser)
        );
        assert_eq!(
            ch.verify([], &register(URI), &lookup, t0),
            Err(AuthError::Missing)
        );
        assert_eq!(
            ch.verify(["Basic dXNlcjpwYXNz"], &register(URI), &lookup, t0),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn rejects_credentials_for_another_realm() {
        let t0 = Instant::now();
        let mut ours = challenger(t0);
        let mut theirs = Challenger::new("elsewhere", Duration::from_secs(300), [7; 32], t0);
        let value = answer(&mut theirs, t0, "s3cret", 1);
        assert_eq!(
            ours.verify([value.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::WrongRealm)
        );
    }

    #[test]
    fn rejects_digest_uri_other_than_request_uri() {
        let t0 = Instant::now();
        let mut ch = challenger(t0);
        let value = answer(&mut ch, t0, "s3cret", 1);
        assert_eq!(
            ch.verify(
                [value.as_str()],
                &register("sip:other.example"),
                &lookup,
                t0
            ),
            Err(AuthError::UriMismatch)
        );
    }

    #[test]
    fn rejects_replayed_nonce_count() {
        let t0 = Instant::now();
        let mut ch = challenger(t0);
        let challenges = ch.challenges(t0, false);
        let creds = Credentials::new("agent7", "s3cret");
        let c = creds
            .choose(challenges.iter().map(String::as_str))
            .expect("parses");
        let with_nc = |nc| {
            creds
                .respond(&c, &register(URI), "cafe", nc)
                .expect("responds")
                .to_string()
        };
        let first = with_nc(1);
        assert_eq!(
            ch.verify([first.as_str()], &register(URI), &lookup, t0),
            Ok("agent7".into())
        );
        assert_eq!(
            ch.verify([first.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::Replayed)
        );
        // Reusing the nonce with a higher count is allowed (RFC 7616 §3.4).
        let second = with_nc(2);
        assert_eq!(
            ch.verify([second.as_str()], &register(URI), &lookup, t0),
            Ok("agent7".into())
        );
        assert_eq!(
            ch.verify([first.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn expired_nonce_with_right_password_is_stale() {
        let t0 = Instant::now();
        let mut ch = challenger(t0);
        let value = answer(&mut ch, t0, "s3cret", 1);
        let later = t0 + Duration::from_secs(301);
        assert_eq!(
            ch.verify([value.as_str()], &register(URI), &lookup, later),
            Err(AuthError::StaleNonce)
        );
        // Still within the lifetime: fine.
        let value = answer(&mut ch, t0, "s3cret", 1);
        assert_eq!(
            ch.verify(
                [value.as_str()],
                &register(URI),
                &lookup,
                t0 + Duration::from_secs(300)
            ),
            Ok("agent7".into())
        );
    }

    #[test]
    fn expired_nonce_with_wrong_password_is_not_stale() {
        let t0 = Instant::now();
        let mut ch = challenger(t0);
        let value = answer(&mut ch, t0, "guess", 1);
        assert_eq!(
            ch.verify(
                [value.as_str()],
                &register(URI),
                &lookup,
                t0 + Duration::from_secs(600)
            ),
            Err(AuthError::BadResponse)
        );
    }

    #[test]
    fn foreign_nonce_is_stale_not_accepted() {
        // A nonce from a previous run (other key): right password → stale.
        let t0 = Instant::now();
        let mut old_run = Challenger::new(REALM, Duration::from_secs(300), [1; 32], t0);
        let mut ch = challenger(t0);
        let value = answer(&mut old_run, t0, "s3cret", 1);
        assert_eq!(
            ch.verify([value.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::StaleNonce)
        );
        // A hand-made nonce the client chose itself: also never accepted.
        let c =
            Challenge::parse("Digest realm=\"callbackd\", nonce=\"00\", qop=auth").expect("parses");
        let value = Credentials::new("agent7", "s3cret")
            .respond(&c, &register(URI), "c", 1)
            .expect("responds");
        assert_eq!(
            ch.verify([value.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::StaleNonce)
        );
    }

    #[test]
    fn rejects_credentials_without_qop() {
        let t0 = Instant::now();
        let mut ch = challenger(t0).with_algorithms(&[Algorithm::Md5]);
        let challenges = ch.challenges(t0, false);
        let mut c = Challenge::parse(&challenges[0]).expect("parses");
        c.qop_auth = false;
        let value = Credentials::new("agent7", "s3cret")
            .respond(&c, &register(URI), "c", 1)
            .expect("responds");
        assert_eq!(
            ch.verify([value.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::Malformed(DigestError::MissingParam("qop")))
        );
    }

    #[test]
    fn replay_table_is_bounded_and_evicted_nonces_go_stale() {
        let t0 = Instant::now();
        let mut ch = challenger(t0);
        let first = answer(&mut ch, t0, "s3cret", 1);
        let second = answer(&mut ch, t0, "s3cret", 1);
        assert!(
            ch.verify([first.as_str()], &register(URI), &lookup, t0)
                .is_ok()
        );
        // One more than the table holds: the two oldest used nonces (`first`
        // and the loop's first) are evicted.
        for _ in 0..=MAX_TRACKED_NONCES {
            let value = answer(&mut ch, t0, "s3cret", 1);
            assert!(
                ch.verify([value.as_str()], &register(URI), &lookup, t0)
                    .is_ok()
            );
        }
        assert_eq!(ch.seen.len(), MAX_TRACKED_NONCES);
        // `first` was evicted: its replay is refused, not accepted afresh.
        assert_eq!(
            ch.verify([first.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::StaleNonce)
        );
        // `second` was never used, but is older than an evicted nonce: it
        // cannot be told apart from an evicted one, so it is stale too.
        assert_eq!(
            ch.verify([second.as_str()], &register(URI), &lookup, t0),
            Err(AuthError::StaleNonce)
        );
    }

    #[test]
    fn answers_a_407_into_proxy_authorization() {
        use crate::sip::message::{Message, parse};
        let text = "SIP/2.0 407 Proxy Authentication Required\r\n\
            Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
            From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
            Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"abc\", qop=\"auth\", algorithm=MD5\r\n\
            Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"def\", qop=\"auth\", algorithm=SHA-256\r\n\
            Content-Length: 0\r\n\r\n";
        let Ok(Message::Response(resp)) = parse(text.as_bytes()) else {
            panic!("fixture parses");
        };
        let request = DigestRequest {
            method: "INVITE",
            uri: "sip:+15550100@carrier.example",
            body: b"",
        };
        let answer = Credentials::new("trunk", "pw")
            .answer(&resp, &request, &cnonce(42), 1)
            .expect("answers");
        assert_eq!(answer.header, HeaderName::ProxyAuthorization);
        let auth = Authorization::parse(answer.value.as_str()).expect("parses back");
        assert_eq!(auth.nonce, "def");
        assert_eq!(auth.algorithm, Algorithm::Sha256);
        assert_eq!(auth.cnonce.as_deref(), Some("000000000000002a"));
        assert_eq!(auth.uri, "sip:+15550100@carrier.example");
    }
}
