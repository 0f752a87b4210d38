//! Outbound calls (the UAC side of the endpoint): what the application hands
//! to [`Endpoint::invite`](crate::sip::endpoint::Endpoint::invite), the
//! [`Authenticator`] hook for 401/407 challenges, the per-call state machine
//! ([`UacState`]) and the requests that derive from our INVITE (the INVITE
//! itself, its CANCEL and the ACK for a non-2xx final).
//!
//! The endpoint owns the transactions and the dialog; this module decides
//! and builds bytes, and does no IO.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::sip::endpoint::{Destination, Reason};
use crate::sip::message::{CallId, Method, SipUri};
use crate::sip::transaction::{IctState, InviteClient};

/// Answers digest challenges for an outbound call (RFC 3261 §22.2). The lead
/// implements it on top of `sip::digest`; tests use a fake.
pub trait Authenticator: Send {
    /// Answers one challenge: `challenge` is the value of one
    /// `WWW-Authenticate` (`proxy` false, after a 401) or
    /// `Proxy-Authenticate` (`proxy` true, after a 407) header field;
    /// `method` and `uri` are those of the request about to be resent.
    /// Returns the value for `Authorization` / `Proxy-Authorization`, or
    /// `None` when it cannot answer (unknown realm, unsupported algorithm).
    fn authorize(
        &mut self,
        challenge: &str,
        method: &Method,
        uri: &str,
        proxy: bool,
    ) -> Option<String>;
}

/// A From or To party: an optional display name and a URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Display name, written as a quoted string.
    pub display: Option<String>,
    /// The URI (`sip:`, `sips:` or `tel:`), without angle brackets.
    pub uri: String,
}

/// An outbound INVITE, as the application describes it.
pub struct OutboundInvite {
    /// The Request-URI (`sip:` or `sips:`), e.g. `sip:+15551234567@trunk.example`.
    pub request_uri: String,
    /// From (our identity, the caller ID); the endpoint adds the tag.
    pub from: Party,
    /// To (normally the Request-URI's party).
    pub to: Party,
    /// `P-Asserted-Identity` value (RFC 3325), e.g. `<sip:+15550100@host>`.
    pub p_asserted_identity: Option<String>,
    /// Where the INVITE goes first (the trunk's resolved target, RFC 3263).
    /// It also selects the transport: TCP for `Tcp` and `Resolve { tcp:
    /// true }`, UDP otherwise.
    pub next_hop: Destination,
    /// `next_hop` is the flow the callee registered from (a phone that may
    /// sit behind NAT): unless the dialog gets a route set, every request
    /// of the dialog (ACK, BYE, re-INVITE, UPDATE, PRACK) goes back through
    /// that flow — the response's source and, on TCP, its connection — not
    /// to the Contact, which may be a private address.
    pub stay_on_flow: bool,
    /// Our SDP offer (required: no late offer).
    pub sdp_offer: Bytes,
    /// More header fields for the INVITE (name, value).
    pub extra_headers: Vec<(String, String)>,
    /// Answers 401/407 challenges; `None` fails the call on a challenge.
    pub credentials: Option<Box<dyn Authenticator>>,
}

impl std::fmt::Debug for OutboundInvite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundInvite")
            .field("request_uri", &self.request_uri)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("p_asserted_identity", &self.p_asserted_identity)
            .field("next_hop", &self.next_hop)
            .field("stay_on_flow", &self.stay_on_flow)
            .field("extra_headers", &self.extra_headers)
            .field("credentials", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

/// Why an [`OutboundInvite`] was refused (all local faults: nothing is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// The Request-URI is not a valid `sip:`/`sips:` URI.
    #[error("Request-URI is not a SIP URI")]
    BadRequestUri,
    /// A From or To URI or display name cannot be written into a header.
    #[error("malformed {0} party")]
    BadParty(&'static str),
    /// A header name is not a token, or a value holds CR, LF or NUL.
    #[error("malformed extra header field")]
    BadHeader,
    /// No SDP offer: a late offer would need our answer in the ACK, which
    /// is not implemented.
    #[error("an outbound INVITE needs an SDP offer")]
    NoOffer,
}

/// Parses a `Retry-After` value (RFC 3261 §20.33): `delta-seconds
/// [comment] *(;param)`. `None` when it does not start with digits.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim_start();
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if end == 0 {
        return None;
    }
    let secs: u64 = v[..end].parse().ok()?;
    let rest = v[end..].trim_start();
    if !(rest.is_empty() || rest.starts_with('(') || rest.starts_with(';')) {
        return None;
    }
    Some(Duration::from_secs(secs))
}

/// Parses an `RSeq` value (RFC 3262 §7.1: 1 to 2³¹−1).
pub(crate) fn parse_rseq(value: &str) -> Option<u32> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=0x7fff_ffff).contains(n))
}

// ---------------------------------------------------------------------------
// the per-call state machine

/// Where an outbound call's INVITE is until its final response: the
/// sub-state of the endpoint's `LegState::Inviting`.
///
/// ```text
///                         invite()
///                            │
///                            v          hangup: remember it (§9.1: no
///                      +-----------+    CANCEL before a provisional)   +---------------+
///                      |  Calling  |---------------------------------->| CancelPending |
///                      +-----------+                                   +---------------+
///                   1xx: Progress |  \ 2xx: ACK, Answered                 | 1xx: send CANCEL
///                                 v   \                                  v
///      1xx: Progress       +------------+  hangup: send CANCEL     +------------+  1xx: quiet
///                          | Proceeding |------------------------->| Cancelling |
///                          +------------+                          +------------+
///                                 | 2xx: ACK, Answered                   | 2xx (crossed our CANCEL):
///                                 v                                      | ACK then BYE (§15)
///                          +------------+<-------------------------------+
///                          |  Answered  |  (the leg goes on: LegState::Confirmed)
///                          +------------+
///
///   401/407 in Calling/Proceeding with an Authenticator that answers:
///     new INVITE (same Call-ID and From-tag, CSeq + 1, new branch) → Calling
///   300-699 otherwise: the transaction ACKs it → Failed; 487 in Cancelling → Ended(LocalCancel)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UacState {
    /// INVITE sent; no provisional yet.
    Calling,
    /// The application hung up before any provisional; CANCEL waits for one.
    CancelPending,
    /// A provisional arrived.
    Proceeding,
    /// Our CANCEL is out; waiting for the INVITE's final (487, or a 2xx).
    Cancelling,
    /// A 2xx arrived and was ACKed.
    Answered,
}

/// What happened to the INVITE, as the machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UacInput {
    /// A 1xx of the current INVITE.
    Provisional,
    /// The first 2xx of the current INVITE.
    Success,
    /// A 300-699 of the current INVITE.
    Failure(u16),
    /// The application hung up.
    Hangup,
}

/// What the endpoint does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UacStep {
    /// Tell the application (Progress).
    Report,
    /// Nothing to tell.
    Quiet,
    /// Send the CANCEL now.
    SendCancel,
    /// ACK the 2xx and report Answered.
    Answer,
    /// ACK the 2xx and BYE it at once: we had cancelled.
    AckAndBye,
    /// Try to answer the 401/407 with credentials.
    Challenge,
    /// Try again with the 422's Min-SE as our session interval (RFC 4028
    /// §7.4).
    RaiseInterval,
    /// Report Failed.
    Fail,
    /// Report Ended(LocalCancel): the 487 to our CANCEL.
    Cancelled,
}

impl UacState {
    /// The transition table (RFC 3261 §9.1, §13.2.2, §22.2).
    pub(crate) fn step(&mut self, input: UacInput) -> UacStep {
        use UacInput as I;
        use UacState as S;
        let (next, step) = match (*self, input) {
            (S::Calling | S::Proceeding, I::Provisional) => (S::Proceeding, UacStep::Report),
            // §9.1: the CANCEL waited for this provisional.
            (S::CancelPending, I::Provisional) => (S::Cancelling, UacStep::SendCancel),
            (S::Cancelling, I::Provisional) => (S::Cancelling, UacStep::Quiet),
            (S::Answered, I::Provisional) => (S::Answered, UacStep::Quiet),
            (S::Calling | S::Proceeding, I::Success) => (S::Answered, UacStep::Answer),
            // §15: a 2xx that crossed our CANCEL is ACKed, then BYE.
            (S::CancelPending | S::Cancelling, I::Success) => (S::Answered, UacStep::AckAndBye),
            (S::Answered, I::Success) => (S::Answered, UacStep::Quiet),
            // §22.2: a challenge may be answered with a new INVITE.
            (S::Calling | S::Proceeding, I::Failure(401 | 407)) => (S::Calling, UacStep::Challenge),
            // RFC 4028 §7.4: "Session Interval Too Small" may be retried.
            (S::Calling | S::Proceeding, I::Failure(422)) => (S::Calling, UacStep::RaiseInterval),
            (S::Cancelling, I::Failure(487)) => (S::Cancelling, UacStep::Cancelled),
            (S::Calling | S::Proceeding | S::CancelPending | S::Cancelling, I::Failure(_)) => {
                (*self, UacStep::Fail)
            }
            (S::Answered, I::Failure(_)) => (S::Answered, UacStep::Quiet),
            (S::Calling, I::Hangup) => (S::CancelPending, UacStep::Quiet),
            (S::Proceeding, I::Hangup) => (S::Cancelling, UacStep::SendCancel),
            (S::CancelPending | S::Cancelling | S::Answered, I::Hangup) => (*self, UacStep::Quiet),
        };
        *self = next;
        step
    }
}

/// The UAC part of a call.
pub(crate) struct Outbound {
    pub(crate) state: UacState,
    pub(crate) template: InviteTemplate,
    /// Where the INVITE (and its CANCEL) go.
    pub(crate) next_hop: Destination,
    /// The current INVITE's CSeq number.
    pub(crate) cseq: u32,
    pub(crate) auth: Option<Box<dyn Authenticator>>,
    /// Credentials the current INVITE carries (header name, value).
    pub(crate) auth_headers: Vec<(&'static str, String)>,
    /// Challenges answered so far, by kind: [401, 407].
    pub(crate) answered: [bool; 2],
    /// INVITEs resent with credentials (bounded: no loop).
    pub(crate) auth_rounds: u8,
    /// The INVITE was resent once after a 422 (a second 422 fails it).
    pub(crate) interval_raised: bool,
    /// RFC 3262 §4: the RSeq of the last in-order reliable provisional.
    pub(crate) rseq: Option<u32>,
    /// The PRACK for that provisional, for its retransmissions.
    pub(crate) prack: Option<SentPrack>,
    /// Why we cancel, once the application hung up (the CANCEL may wait
    /// for a provisional, §9.1).
    pub(crate) cancel_reason: Reason,
}

/// At most this many INVITEs with credentials per call.
pub(crate) const MAX_AUTH_ROUNDS: u8 = 3;

/// A PRACK we sent, kept while its transaction runs.
pub(crate) struct SentPrack {
    /// Its NICT.
    pub(crate) tx: u64,
    pub(crate) bytes: Bytes,
    pub(crate) destination: Destination,
}

impl Outbound {
    /// Whether a challenge of this kind may be answered: each kind once,
    /// again only when the server says the nonce was stale (RFC 7616
    /// §3.3), and never more than [`MAX_AUTH_ROUNDS`] times in all.
    pub(crate) fn may_answer(&self, proxy: bool, stale: bool) -> bool {
        self.auth.is_some()
            && self.auth_rounds < MAX_AUTH_ROUNDS
            && (!self.answered[usize::from(proxy)] || stale)
    }

    /// Records an answered challenge and the header the next INVITE carries.
    pub(crate) fn set_credentials(&mut self, proxy: bool, value: String) {
        let name = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        self.auth_headers.retain(|(n, _)| *n != name);
        self.auth_headers.push((name, value));
        self.answered[usize::from(proxy)] = true;
        self.auth_rounds += 1;
    }
}

/// Whether a challenge says `stale=true` (the credentials were right, the
/// nonce old).
pub(crate) fn is_stale(challenge: &str) -> bool {
    let squeezed: String = challenge
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '"')
        .collect::<String>()
        .to_ascii_lowercase();
    squeezed.contains("stale=true")
}

/// An INVITE client transaction with what the endpoint needs besides the
/// machine: the requests derived from the INVITE and the ACKs sent for its
/// 2xx responses.
pub(crate) struct IctTx {
    pub(crate) machine: InviteClient,
    /// The ACK for a 300-699 without its To (§17.1.1.3: same Request-URI,
    /// Call-ID, From, CSeq number, top Via and Route as the INVITE).
    pub(crate) ack_head: Bytes,
    /// The CANCEL (§9.1).
    pub(crate) cancel_head: Bytes,
    /// Whether the CANCEL went out.
    pub(crate) cancel_sent: bool,
    /// ACKs sent for 2xx responses, by To-tag, resent for every
    /// retransmitted 2xx while the transaction is Accepted (RFC 6026 §7.2,
    /// RFC 3261 §13.2.2.4).
    pub(crate) acks: Vec<(Box<str>, Bytes, Destination)>,
    /// §9.1: when no final arrives within 64·T1 of our CANCEL, the INVITE
    /// transaction is given up.
    pub(crate) abandon_at: Option<Instant>,
    pub(crate) abandoned: bool,
}

impl IctTx {
    /// The 64·T1 deadline after our CANCEL, while the INVITE still has no
    /// final (after one, the transaction's own timers end it).
    pub(crate) fn waiting_until(&self) -> Option<Instant> {
        match self.machine.state() {
            IctState::Calling | IctState::Proceeding => self.abandon_at,
            IctState::Completed | IctState::Accepted | IctState::Terminated => None,
        }
    }
}

/// Completes [`IctTx::ack_head`] into the ACK for a non-2xx final whose To
/// value is `to` (§17.1.1.3: To from the response).
pub(crate) fn finish_ack(ack_head: &[u8], to: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(ack_head.len() + to.len() + 32);
    out.put_slice(ack_head);
    put_header(&mut out, "To", to);
    out.put_slice(b"Content-Length: 0\r\n\r\n");
    out.freeze()
}

// ---------------------------------------------------------------------------
// requests derived from the INVITE

/// What every INVITE of one call (the first and those with credentials), its
/// CANCEL and its non-2xx ACK share.
pub(crate) struct InviteTemplate {
    pub(crate) request_uri: Box<str>,
    /// From with our tag.
    pub(crate) from: Box<str>,
    pub(crate) from_tag: Box<str>,
    /// To without tag.
    pub(crate) to: Box<str>,
    pub(crate) call_id: CallId,
    pub(crate) contact: Box<str>,
    /// `UDP` or `TCP`.
    pub(crate) transport: &'static str,
    pub(crate) sent_by: Box<str>,
    pub(crate) user_agent: Box<str>,
    /// Max-Forwards (RFC 3261 §8.1.1.6).
    pub(crate) max_forwards: u8,
    /// P-Asserted-Identity and the application's extra fields.
    pub(crate) headers: Vec<(Box<str>, Box<str>)>,
    pub(crate) sdp: Bytes,
    /// RFC 4028 settings the INVITE announces.
    pub(crate) session: crate::sip::session_timer::SessionTimerConfig,
}

/// Everything [`InviteTemplate::new`] needs from the endpoint.
pub(crate) struct TemplateContext<'a> {
    pub(crate) from_tag: &'a str,
    pub(crate) call_id: CallId,
    pub(crate) contact: Box<str>,
    pub(crate) transport: &'static str,
    pub(crate) sent_by: Box<str>,
    pub(crate) user_agent: &'a str,
    /// The session interval we ask for and our Min-SE (RFC 4028 §7.1).
    pub(crate) session: crate::sip::session_timer::SessionTimerConfig,
    pub(crate) max_forwards: u8,
}

impl InviteTemplate {
    /// Validates the application's description and fixes what every INVITE
    /// of the call will carry. `invite.sdp_offer` and the header list are
    /// taken; credentials stay with the caller.
    pub(crate) fn new(
        invite: &mut OutboundInvite,
        ctx: TemplateContext<'_>,
    ) -> Result<InviteTemplate, InviteError> {
        if SipUri::parse(&invite.request_uri).is_err() || !is_header_safe(&invite.request_uri) {
            return Err(InviteError::BadRequestUri);
        }
        if invite.request_uri.contains(char::is_whitespace) {
            return Err(InviteError::BadRequestUri);
        }
        if invite.sdp_offer.is_empty() {
            return Err(InviteError::NoOffer);
        }
        let mut from = name_addr(&invite.from).ok_or(InviteError::BadParty("From"))?;
        write!(from, ";tag={}", ctx.from_tag).ok();
        let to = name_addr(&invite.to).ok_or(InviteError::BadParty("To"))?;
        let mut headers = Vec::with_capacity(invite.extra_headers.len() + 1);
        if let Some(pai) = &invite.p_asserted_identity {
            if !is_header_safe(pai) {
                return Err(InviteError::BadHeader);
            }
            headers.push(("P-Asserted-Identity".into(), pai.as_str().into()));
        }
        for (name, value) in invite.extra_headers.drain(..) {
            if !is_token(&name) || !is_header_safe(&value) {
                return Err(InviteError::BadHeader);
            }
            headers.push((name.into(), value.into()));
        }
        Ok(InviteTemplate {
            request_uri: invite.request_uri.as_str().into(),
            from: from.into(),
            from_tag: ctx.from_tag.into(),
            to: to.into(),
            call_id: ctx.call_id,
            contact: ctx.contact,
            transport: ctx.transport,
            sent_by: ctx.sent_by,
            user_agent: ctx.user_agent.into(),
            session: ctx.session,
            max_forwards: ctx.max_forwards,
            headers,
            sdp: std::mem::take(&mut invite.sdp_offer),
        })
    }

    /// The INVITE with CSeq `cseq`, top Via branch `branch` and `auth`
    /// credentials (RFC 3261 §8.1.1; `Supported: 100rel`, RFC 3262 §4;
    /// `timer`, RFC 4028 §7.1).
    pub(crate) fn invite(&self, branch: &str, cseq: u32, auth: &[(&'static str, String)]) -> Bytes {
        let mut out = self.head(&Method::Invite, branch, cseq);
        put_header(&mut out, "To", &self.to);
        put_header_fmt(&mut out, "Contact", format_args!("<{}>", self.contact));
        put_header(&mut out, "Allow", crate::sip::endpoint::ALLOW);
        put_header(&mut out, "Supported", "100rel, timer");
        // RFC 4028 §7.1: the interval we want; the callee picks the
        // refresher in its 2xx.
        put_header_fmt(
            &mut out,
            "Session-Expires",
            format_args!("{}", self.session.session_expires),
        );
        put_header_fmt(&mut out, "Min-SE", format_args!("{}", self.session.min_se));
        put_header(&mut out, "User-Agent", &self.user_agent);
        for (name, value) in &self.headers {
            put_header(&mut out, name, value);
        }
        for (name, value) in auth {
            put_header(&mut out, name, value);
        }
        put_header(&mut out, "Content-Type", "application/sdp");
        put_header_fmt(
            &mut out,
            "Content-Length",
            format_args!("{}", self.sdp.len()),
        );
        out.put_slice(b"\r\n");
        out.put_slice(&self.sdp);
        out.freeze()
    }

    /// The CANCEL for the INVITE with `branch` and `cseq` (RFC 3261 §9.1:
    /// same Request-URI, Call-ID, To, From, CSeq number and single Via),
    /// up to its last header field: [`finish_cancel`] adds the `Reason`.
    pub(crate) fn cancel_head(&self, branch: &str, cseq: u32) -> Bytes {
        let mut out = self.head(&Method::Cancel, branch, cseq);
        put_header(&mut out, "To", &self.to);
        put_header(&mut out, "User-Agent", &self.user_agent);
        out.freeze()
    }

    /// The ACK for a non-2xx final to that INVITE, without To (added from
    /// the response by [`finish_ack`]).
    pub(crate) fn ack_head(&self, branch: &str, cseq: u32) -> Bytes {
        self.head(&Method::Ack, branch, cseq).freeze()
    }

    fn head(&self, method: &Method, branch: &str, cseq: u32) -> BytesMut {
        let mut out = BytesMut::with_capacity(512 + self.sdp.len());
        out.put_slice(method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.request_uri.as_bytes());
        out.put_slice(b" SIP/2.0\r\n");
        put_header_fmt(
            &mut out,
            "Via",
            format_args!(
                "SIP/2.0/{} {};branch={branch};rport",
                self.transport, self.sent_by
            ),
        );
        put_header_fmt(
            &mut out,
            "Max-Forwards",
            format_args!("{}", self.max_forwards),
        );
        put_header(&mut out, "From", &self.from);
        put_header(&mut out, "Call-ID", self.call_id.as_str());
        put_header_fmt(&mut out, "CSeq", format_args!("{cseq} {method}"));
        out
    }
}

/// A CANCEL from its [`InviteTemplate::cancel_head`], telling why (RFC 3326).
pub(crate) fn finish_cancel(head: &[u8], reason: Reason) -> Bytes {
    let mut out = BytesMut::with_capacity(head.len() + 96);
    out.put_slice(head);
    put_header(&mut out, "Reason", &reason.header_value());
    out.put_slice(b"Content-Length: 0\r\n\r\n");
    out.freeze()
}

fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_header_fmt(out: &mut BytesMut, name: &str, value: std::fmt::Arguments<'_>) {
    let mut s = String::with_capacity(64);
    s.write_fmt(value).ok();
    put_header(out, name, &s);
}

/// `"Display" <uri>` with the display name escaped (RFC 3261 §25.1
/// quoted-string); `None` when the URI or the name cannot go in a header.
fn name_addr(party: &Party) -> Option<String> {
    let uri = party.uri.trim();
    if uri.is_empty()
        || !uri.contains(':')
        || uri.contains(|c: char| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return None;
    }
    let mut s = String::with_capacity(uri.len() + 32);
    if let Some(display) = party.display.as_deref().filter(|d| !d.is_empty()) {
        if display.contains(|c: char| c.is_control()) {
            return None;
        }
        s.push('"');
        for c in display.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push_str("\" ");
    }
    write!(s, "<{uri}>").ok();
    Some(s)
}

fn is_header_safe(value: &str) -> bool {
    !value.contains(['\r', '\n', '\0'])
}

/// RFC 3261 §25.1 token characters.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after(" 120;duration=3600"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("18000 (I'm in a meeting);duration=3600"),
            Some(Duration::from_secs(18000))
        );
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
    }

    #[test]
    fn rejects_retry_after_without_delta_seconds() {
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-5"), None);
        assert_eq!(parse_retry_after("12x"), None);
        assert_eq!(parse_retry_after("99999999999999999999999"), None);
    }

    #[test]
    fn rejects_rseq_out_of_range() {
        assert_eq!(parse_rseq("1"), Some(1));
        assert_eq!(parse_rseq(" 2147483647 "), Some(0x7fff_ffff));
        assert_eq!(parse_rseq("0"), None);
        assert_eq!(parse_rseq("2147483648"), None);
        assert_eq!(parse_rseq("+1"), None);
        assert_eq!(parse_rseq(""), None);
    }

    #[test]
    fn stale_is_found_quoted_or_not() {
        assert!(is_stale(r#"Digest realm="a", nonce="n", stale=TRUE"#));
        assert!(is_stale(r#"Digest realm="a", stale = "true""#));
        assert!(!is_stale(r#"Digest realm="a", stale=false"#));
    }

    #[test]
    fn display_names_are_escaped_and_control_characters_refused() {
        let p = |d: &str| Party {
            display: Some(d.into()),
            uri: "sip:a@b".into(),
        };
        assert_eq!(
            name_addr(&p(r#"Acme "Care" \ Co"#)).as_deref(),
            Some(r#""Acme \"Care\" \\ Co" <sip:a@b>"#)
        );
        assert_eq!(name_addr(&p("x\r\nVia: evil")), None);
        let bad_uri = Party {
            display: None,
            uri: "sip:a@b>\r\nX: y".into(),
        };
        assert_eq!(name_addr(&bad_uri), None);
    }

    #[test]
    fn hangup_before_any_provisional_waits_for_one() {
        let mut s = UacState::Calling;
        assert_eq!(s.step(UacInput::Hangup), UacStep::Quiet);
        assert_eq!(s, UacState::CancelPending);
        assert_eq!(s.step(UacInput::Provisional), UacStep::SendCancel);
        assert_eq!(s.step(UacInput::Failure(487)), UacStep::Cancelled);
    }

    #[test]
    fn success_after_cancel_is_acked_and_byed() {
        let mut s = UacState::Proceeding;
        assert_eq!(s.step(UacInput::Hangup), UacStep::SendCancel);
        assert_eq!(s.step(UacInput::Success), UacStep::AckAndBye);
        assert_eq!(s, UacState::Answered);
    }
}
