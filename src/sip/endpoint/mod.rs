//! The SIP endpoint, sans-IO: everything between the transport and the call
//! logic, for calls we answer (UAS) and calls we place (UAC).
//!
//! It matches messages to transactions (RFC 3261 §17.2.3) and dialogs (§12),
//! answers what needs no application decision statelessly or from the
//! transaction layer, and reports the rest as [`Event`]s:
//!
//! ```text
//!  datagram ─▶ ACL ─▶ parse ─▶ response? ─▶ client transaction (our BYE, refresh)
//!                        │
//!                        └─▶ request ─▶ server transaction retransmission? ─▶ resend / absorb
//!                                  ├─▶ §8.2 checks (not ACK/CANCEL): 501 unknown method,
//!                                  │   416 URI scheme, 482 merged, 420 Require, 415 body,
//!                                  │   406 Accept
//!                                  ├─▶ ACK ─▶ non-2xx: IST; 2xx: dialog (stop 2xx retransmission)
//!                                  ├─▶ CANCEL ─▶ 200, and 487 to the INVITE
//!                                  ├─▶ To-tag ─▶ dialog? BYE/re-INVITE/UPDATE/INFO/OPTIONS : 481
//!                                  └─▶ no tag ─▶ 483/405 checks ─▶ INVITE: Event::IncomingCall
//!                                                                        OPTIONS: 200
//!                                                                        REGISTER: Event::Register
//!                                                                          (with a registrar; else 405)
//! ```
//!
//! Outbound calls ([`Endpoint::invite`], state machine in [`crate::sip::uac`]):
//!
//! ```text
//!  invite() ─▶ INVITE (ICT, §17.1.1) ─▶ 1xx ─▶ Event::Progress (To-tag: early dialog, §12.1.2;
//!                 │                          reliable: PRACK, RFC 3262)
//!                 │                 ─▶ 2xx ─▶ dialog confirmed, ACK (new branch, §13.2.2.4),
//!                 │                          Event::Answered; each retransmitted 2xx is ACKed again
//!                 │                 ─▶ 401/407 ─▶ credentials? INVITE again, CSeq + 1 (§22.2)
//!                 │                 ─▶ 300–699 ─▶ ACK (same branch, §17.1.1.3), Event::Failed
//!                 │                 ─▶ Timer B / transport error ─▶ Event::Failed 408 / 503
//!  hangup()/cancel(): no 1xx yet ─▶ wait for one (§9.1); else CANCEL ─▶ 487 ─▶ Event::Ended
//!                     (a 2xx crossing the CANCEL gets ACK then BYE); confirmed ─▶ BYE
//! ```
//!
//! Once confirmed, an outbound call is a dialog like any other: the far end's
//! BYE, re-INVITE, UPDATE, INFO and OPTIONS take the same paths as on
//! incoming calls (dialogs are keyed by our tag, which is the From-tag of
//! our INVITE and the To-tag of our 2xx alike).
//!
//! Forking (§13.2.2.4, §19.3): the first dialog is kept. Provisionals from
//! other forks are reported without their SDP and not PRACKed; a 2xx from
//! another fork once the call has one — or for a call that is over — is
//! ACKed and at once ended with BYE, so the far end stops retransmitting it.
//! A 2xx from another fork while the call only has an early dialog wins
//! (first 2xx, not first 1xx).
//!
//! Inputs are `handle_*(now, …)`; outputs are drained with
//! [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`]; the caller sleeps
//! until [`Endpoint::poll_timeout`]. Timers live in one heap for the whole
//! endpoint (stale entries are skipped lazily), so the cost of a timeout does
//! not grow with the number of calls.
//!
//! Layout, by role: this file holds the public types, the dispatch of what
//! arrives and the stateless answers; `uas.rs` the calls we answer
//! (`UasState`); `leg.rs` the calls we place (`LegState`); `session.rs` what
//! both share once confirmed — offer/answer (`OfferAnswer`), the ACK of our
//! 2xx, the session timer, the BYE; `tx.rs` the transaction table and the
//! timer heap.

mod leg;
mod session;
mod tx;
mod uas;

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace, warn};

use crate::acl::{Acl, AclAction};
use crate::sip::dialog::{Dialog, DialogId, LocalIdentity};
use crate::sip::message::{
    self, BodyRefusal, CallId, HeaderName, Message, Method, ParseError, Request, Response, Rport,
    SipUri,
};
use crate::sip::session_timer::{Negotiated, SessionTimerConfig, SessionTimerError, negotiate_uas};
use crate::sip::transaction::{
    AckDisposition, NonInviteServer, Reliability, RequestRetransmission, TimerConfig,
};

use leg::LegState;
use session::{Ending, OfferAnswer, Reoffer, Session, session_of};
use tx::{Tx, TxKey, TxKind, TxMachine};
use uas::UasState;

/// Methods we implement, for `Allow` (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE";
/// [`ALLOW`] when agents may REGISTER here (the registrar is on).
pub const ALLOW_WITH_REGISTER: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REGISTER";
/// Body types we accept, for `Accept` (§20.1).
pub const ACCEPT: &str =
    "application/sdp, multipart/mixed, application/dtmf-relay, application/dtmf";
/// Extensions we support, for `Supported` (§20.37): session timers (RFC
/// 4028). `100rel` is accepted in `Require` because we never send a
/// provisional response other than 100, which RFC 3262 exempts.
pub const SUPPORTED: &str = "timer";
const KNOWN_EXTENSIONS: &[&str] = &["timer", "100rel"];

/// Static settings of the endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// RFC 3261 timer values.
    pub timers: TimerConfig,
    /// Session timer settings (RFC 4028).
    pub session: SessionTimerConfig,
    /// Advertised host for Via sent-by and Contact (may differ from the bind
    /// address, e.g. a public address in front of NAT).
    pub advertised_host: Box<str>,
    /// Advertised SIP port.
    pub advertised_port: u16,
    /// The `User-Agent`/`Server` value.
    pub user_agent: Box<str>,
    /// Signalling allow-list.
    pub acl: Acl,
    /// What to do with requests from outside the allow-list.
    pub acl_action: AclAction,
    /// Seed for tags and branches (tests pass a fixed one).
    pub seed: u64,
    /// Hand REGISTERs to the application ([`Event::Register`]) instead of
    /// answering 405: set when a registrar runs.
    pub registrar: bool,
    /// Max-Forwards of the requests we originate (RFC 3261 §8.1.1.6;
    /// `[sip] max_forwards`, 70 by default).
    pub max_forwards: u8,
}

/// How a message reached us, and how to reach the peer back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The peer's address (source of what we received).
    pub remote: SocketAddr,
    /// UDP, or the TCP connection it came on.
    pub transport: FlowTransport,
}

/// The transport of a [`Flow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowTransport {
    /// UDP, from our listening socket.
    Udp,
    /// A TCP connection, by the engine's connection id.
    Tcp(u64),
}

/// The connection id of a TCP flow we opened ourselves and have not heard
/// back on yet (an outbound INVITE before its first response): no such
/// connection exists, so the engine falls back to any connection to the
/// address, else a new one. The first response replaces it with the real id.
pub const NO_CONNECTION: u64 = u64::MAX;

impl FlowTransport {
    fn reliability(self) -> Reliability {
        match self {
            FlowTransport::Udp => Reliability::Unreliable,
            FlowTransport::Tcp(_) => Reliability::Reliable,
        }
    }

    fn via_token(self) -> &'static str {
        match self {
            FlowTransport::Udp => "UDP",
            FlowTransport::Tcp(_) => "TCP",
        }
    }
}

/// Where a message must go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A UDP datagram from the listening socket.
    Udp(SocketAddr),
    /// Over TCP: on `conn` if it is still open, else any connection to
    /// `remote`, else a new one.
    Tcp {
        /// The connection to prefer.
        conn: Option<u64>,
        /// The address to (re)connect to.
        remote: SocketAddr,
    },
    /// A host name to resolve first (RFC 3263); `tcp` selects the transport.
    Resolve {
        /// Host name.
        host: Box<str>,
        /// The URI's port; without one SRV is asked first, then the name's
        /// addresses on 5060 (RFC 3263 §4.2).
        port: Option<u16>,
        /// TCP rather than UDP.
        tcp: bool,
    },
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Where.
    pub destination: Destination,
    /// What.
    pub data: Bytes,
}

/// A server transaction the application answers with
/// [`Endpoint::respond`] (a REGISTER, see [`Event::Register`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerTx(u64);

/// A call as the application knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// The caller cancelled before we answered.
    Cancelled,
    /// We cancelled our outbound INVITE: it got its 487, or no final within
    /// 64·T1 of the CANCEL (§9.1), or a 2xx that crossed the CANCEL, which
    /// was ACKed and ended with BYE (§15).
    LocalCancel,
    /// Our 2xx was never acknowledged (RFC 3261 §13.3.1.4); we sent BYE.
    NoAck,
    /// The peer stopped refreshing the session (RFC 4028 §10); we sent BYE.
    SessionExpired,
    /// We hung up (our BYE completed or timed out).
    LocalHangup,
    /// We rejected the call with this status.
    Rejected(u16),
}

/// Why we end a call, told to the far end in the `Reason` header field of
/// our BYE or CANCEL (RFC 3326): a Q.850 cause as carriers and PBXs log
/// and map it, or a SIP status (a CANCEL because the call was answered
/// elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `Q.850;cause=N;text="…"`.
    Q850(u16, &'static str),
    /// `SIP;cause=N;text="…"`.
    Sip(u16, &'static str),
}

impl Reason {
    /// Q.850 16: an ordinary hang-up.
    pub const NORMAL_CLEARING: Reason = Reason::Q850(16, "Normal call clearing");
    /// Q.850 19: rang, nobody answered in time.
    pub const NO_ANSWER: Reason = Reason::Q850(19, "No answer from user (user alerted)");
    /// Q.850 41: the service is going away (a drain that ran out).
    pub const TEMPORARY_FAILURE: Reason = Reason::Q850(41, "Temporary failure");
    /// Q.850 102: a timer ran out — no ACK, no session refresh, no RTP.
    pub const TIMER_EXPIRY: Reason = Reason::Q850(102, "Recovery on timer expiry");
    /// SIP 200 on a CANCEL: another leg took the call (RFC 3326 §2; a phone
    /// then shows no missed call).
    pub const ANSWERED_ELSEWHERE: Reason = Reason::Sip(200, "Call completed elsewhere");

    /// The header field's value.
    pub fn header_value(self) -> String {
        let (protocol, cause, text) = match self {
            Reason::Q850(cause, text) => ("Q.850", cause, text),
            Reason::Sip(cause, text) => ("SIP", cause, text),
        };
        format!("{protocol};cause={cause};text=\"{text}\"")
    }
}

/// What the application must learn or decide.
#[derive(Debug)]
pub enum Event {
    /// A new INVITE passed every check. Answer with [`Endpoint::answer`] or
    /// [`Endpoint::reject`].
    IncomingCall {
        /// The call.
        call: CallKey,
        /// The INVITE.
        request: Box<Request>,
        /// Where it came from.
        source: Flow,
    },
    /// The ACK for our 2xx arrived; its body is the SDP answer when the
    /// INVITE had no offer (late offer).
    Confirmed {
        /// The call.
        call: CallKey,
        /// The ACK's body (empty when none).
        body: Bytes,
    },
    /// A re-INVITE or UPDATE arrived; answer it with
    /// [`Endpoint::answer_reoffer`] (or [`Endpoint::reject_reoffer`]).
    Reoffer {
        /// The call.
        call: CallKey,
        /// INVITE or UPDATE.
        method: Method,
        /// The offer; empty for a re-INVITE without SDP (we then offer).
        sdp: Bytes,
    },
    /// An INFO arrived in the dialog (already answered 200).
    Info {
        /// The call.
        call: CallKey,
        /// Its Content-Type value.
        content_type: Box<str>,
        /// Its body.
        body: Bytes,
    },
    /// A provisional response to our INVITE (outbound calls).
    Progress {
        /// The call.
        call: CallKey,
        /// 100–199.
        status: u16,
        /// Its SDP (early media): only from the dialog we keep, and only
        /// when the response has an `application/sdp` body.
        sdp: Option<Bytes>,
        /// Sent reliably (RFC 3262) and PRACKed by us.
        reliable: bool,
    },
    /// Our INVITE was answered (2xx), ACKed, and the dialog is confirmed.
    Answered {
        /// The call.
        call: CallKey,
        /// The 2xx's body: the SDP answer (empty when it came earlier, in a
        /// reliable provisional).
        sdp: Bytes,
    },
    /// Our INVITE failed before any answer: 300–699 (ACKed), 408 when no
    /// response came (Timer B, §8.1.3.1), 503 on a transport error (§8.1.3.1).
    /// No more events come for the call.
    Failed {
        /// The call.
        call: CallKey,
        /// The final status.
        status: u16,
        /// Its reason phrase (a synthesized one for 408/503).
        reason: Box<str>,
        /// The response's `Retry-After` (RFC 3261 §20.33), if any.
        retry_after: Option<Duration>,
        /// Whether the status came in a response from the network; false
        /// when it was synthesized here (Timer B: 408; a transport error:
        /// 503), i.e. the next hop never answered.
        received: bool,
    },
    /// The call is over; no more events come for it.
    Ended {
        /// The call.
        call: CallKey,
        /// Why.
        reason: EndReason,
    },
    /// A REGISTER outside any dialog passed the checks (Max-Forwards,
    /// Require) and waits in its server transaction (RFC 3261 §17.2.2):
    /// answer it with [`Endpoint::respond`]. Only with
    /// [`EndpointConfig::registrar`]; otherwise REGISTER gets 405.
    Register {
        /// The REGISTER.
        request: Box<Request>,
        /// Where it came from (kept by the registrar for NAT).
        source: Flow,
        /// Its server transaction.
        tx: ServerTx,
    },
}

/// Counters of live state (for metrics and leak tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls not yet ended.
    pub calls: usize,
    /// Live transactions (server and client).
    pub transactions: usize,
    /// Live objects with a pending timer.
    pub timers: usize,
}

/// Totals since start-up, for metrics. Label values are bounded: methods
/// outside RFC 3261's and the common extensions' count as `other`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Responses handed to the transport, by (status code, CSeq method);
    /// a retransmitted response counts again.
    pub responses_sent: BTreeMap<(u16, &'static str), u64>,
    /// Responses parsed from the network, by (status code, CSeq method),
    /// whether or not they matched a transaction.
    pub responses_received: BTreeMap<(u16, &'static str), u64>,
    /// Messages we sent again: a transaction's timer retransmissions
    /// (Timers A, E, G), the last response resent for a retransmitted
    /// request, a 2xx resent until its ACK (§13.3.1.4), an ACK resent for
    /// a retransmitted 2xx (§13.2.2.4).
    pub retransmissions_sent: u64,
    /// Requests received again that a live server transaction absorbed.
    pub retransmissions_received: u64,
}

impl Totals {
    /// Counts a response we send, read from our own serialised bytes: the
    /// status is at a fixed place in the status line and our builder
    /// writes the header as `CSeq: N METHOD`. Requests are not counted.
    fn sent(&mut self, data: &[u8]) {
        let Some(code) = data
            .strip_prefix(b"SIP/2.0 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
        else {
            return;
        };
        let method = data
            .windows(8)
            .position(|w| w.eq_ignore_ascii_case(b"\r\nCSeq: "))
            .and_then(|at| data.get(at + 8..))
            .and_then(|rest| {
                let line = rest.split(|&b| b == b'\r').next()?;
                let token = line.split(|&b| b == b' ').nth(1)?;
                Method::from_token(std::str::from_utf8(token).ok()?)
            });
        let method = method.as_ref().map_or("other", method_label);
        *self.responses_sent.entry((code, method)).or_default() += 1;
    }
}

/// A bounded metric label for a method: its name, or `other` for an
/// extension token.
pub fn method_label(method: &Method) -> &'static str {
    match method {
        Method::Invite => "INVITE",
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Options => "OPTIONS",
        Method::Register => "REGISTER",
        Method::Info => "INFO",
        Method::Update => "UPDATE",
        Method::Prack => "PRACK",
        Method::Subscribe => "SUBSCRIBE",
        Method::Notify => "NOTIFY",
        Method::Refer => "REFER",
        Method::Message => "MESSAGE",
        Method::Publish => "PUBLISH",
        Method::Extension(_) => "other",
    }
}

/// Misuse of the application-facing API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call does not exist (ended or never existed).
    #[error("no such call")]
    NoSuchCall,
    /// The call is not in a state where this makes sense.
    #[error("call is not in a state for this")]
    WrongState,
    /// `cancel` on a call that is not an outbound call still ringing.
    #[error("not an outbound call awaiting its answer")]
    NotOutbound,
    /// `reject` was given a status that is not a failure (300–699).
    #[error("{0} is not a failure status")]
    NotAFailure(u16),
    /// `respond` for a transaction that was answered already or does not
    /// exist.
    #[error("no such server transaction awaiting a response")]
    NoSuchTransaction,
    /// `respond` was given a status outside 100–699.
    #[error("{0} is not a response status")]
    NotAStatus(u16),
}

/// The endpoint.
pub struct Endpoint {
    cfg: EndpointConfig,
    rng: fastrand::Rng,
    next_id: u64,
    txs: HashMap<u64, Tx>,
    server_index: HashMap<TxKey, u64>,
    client_index: HashMap<TxKey, u64>,
    calls: HashMap<u64, Call>,
    dialogs: HashMap<DialogId, u64>,
    heap: BinaryHeap<Reverse<(Instant, Owner)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    draining: bool,
    /// Messages refused as malformed so far (the warning is rate-limited
    /// on it).
    malformed: u64,
    /// Requests the application answers ([`Endpoint::respond`]), by their
    /// server transaction, until the final response.
    awaiting: HashMap<u64, Box<Request>>,
    /// Requests outside a dialog by From-tag, Call-ID and CSeq, with the
    /// server transaction they opened: a second one with another branch
    /// while that transaction lives is a merged request (§8.2.2.2).
    /// Entries whose transaction is gone are pruned as the map grows.
    merge_index: HashMap<MergeKey, TxKey>,
    /// Responses and retransmissions since start-up.
    totals: Totals,
}

/// What makes two requests "the same" for merged-request detection
/// (RFC 3261 §8.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MergeKey {
    from_tag: Option<Box<str>>,
    call_id: CallId,
    seq: u32,
    method: Method,
}

impl Endpoint {
    /// Checks signalling sources against `acl` from now on, and answers
    /// refused ones per `action` (the engine's settings were reloaded).
    pub fn set_acl(&mut self, acl: Acl, action: AclAction) {
        self.cfg.acl = acl;
        self.cfg.acl_action = action;
    }

    /// Handles REGISTERs from now on (the first registering agent was added
    /// at run time) or answers them 405.
    pub fn set_registrar_enabled(&mut self, enabled: bool) {
        self.cfg.registrar = enabled;
    }

    /// Creates an endpoint.
    pub fn new(cfg: EndpointConfig) -> Endpoint {
        Endpoint {
            rng: fastrand::Rng::with_seed(cfg.seed),
            cfg,
            next_id: 1,
            txs: HashMap::new(),
            server_index: HashMap::new(),
            client_index: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            heap: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            draining: false,
            malformed: 0,
            awaiting: HashMap::new(),
            merge_index: HashMap::new(),
            totals: Totals::default(),
        }
    }

    /// While draining, new INVITEs and OPTIONS get 503 (a dispatcher in front
    /// takes us out of rotation); existing calls go on.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Answers a request the application was handed with its server
    /// transaction ([`Event::Register`]): `status` with `extra_headers` in
    /// order, no body. A provisional (1xx) leaves the transaction waiting
    /// for a final response; a final one completes it, and the transaction
    /// then absorbs retransmissions of the request (RFC 3261 §17.2.2).
    pub fn respond(
        &mut self,
        now: Instant,
        tx: ServerTx,
        status: u16,
        extra_headers: &[(&str, &str)],
    ) -> Result<(), CallError> {
        if !(100..=699).contains(&status) {
            return Err(CallError::NotAStatus(status));
        }
        if !self.txs.contains_key(&tx.0) {
            self.awaiting.remove(&tx.0);
            return Err(CallError::NoSuchTransaction);
        }
        let req = self
            .awaiting
            .get(&tx.0)
            .ok_or(CallError::NoSuchTransaction)?;
        let tag = stateless_tag_of(req);
        let mut b = req
            .response(status, Some(&tag))
            .header("Server", &self.cfg.user_agent);
        for (name, value) in extra_headers {
            b = b.header(name, value);
        }
        let bytes = b.finish(None, b"");
        if status >= 200 {
            self.awaiting.remove(&tx.0);
        }
        self.send_server_response(now, tx.0, status, bytes);
        Ok(())
    }

    /// Handles one received message (a datagram or a frame from a stream).
    pub fn handle_message(&mut self, now: Instant, data: &[u8], source: Flow) {
        // ACL before anything else: no state for outsiders.
        if !self.cfg.acl.allows(source.remote.ip()) {
            self.refuse_outsider(data, source);
            return;
        }
        self.handle_screened(now, data, source, true);
    }

    /// Handles a message whose source was checked against the allow-lists
    /// before (the engine does it at the socket, by role): `cfg.acl` is not
    /// consulted. Unless `may_call`, a new INVITE (no To-tag) gets a
    /// stateless 403 — an agent's phone may register and take the calls
    /// made to it, not start one.
    pub fn handle_screened(&mut self, now: Instant, data: &[u8], source: Flow, may_call: bool) {
        match message::parse(data) {
            Ok(Message::Request(req))
                if !may_call && req.method == Method::Invite && req.headers.to.tag.is_none() =>
            {
                debug!(remote = %source.remote, "INVITE from an agent-only source: 403");
                let tag = stateless_tag_of(&req);
                let bytes = req
                    .response(403, Some(&tag))
                    .header("Server", &self.cfg.user_agent)
                    .finish(None, b"");
                self.push_response(reply_flow(&req, source), bytes);
            }
            Ok(Message::Request(req)) => self.handle_request(now, req, source),
            Ok(Message::Response(resp)) => {
                let method = method_label(&resp.headers.cseq.method);
                *self
                    .totals
                    .responses_received
                    .entry((resp.status, method))
                    .or_default() += 1;
                self.handle_response(now, resp, source)
            }
            Err(failure) => {
                // A peer that sends something we refuse should be seen
                // (warn), but a flood of junk must not flood the log: the
                // 1st, 2nd, 4th, 8th … are warned, the rest go to debug.
                self.malformed += 1;
                if self.malformed.is_power_of_two() {
                    warn!(
                        remote = %source.remote,
                        reason = %failure.error,
                        refused_so_far = self.malformed,
                        "malformed SIP message refused"
                    );
                } else {
                    debug!(remote = %source.remote, reason = %failure.error, "malformed SIP message refused");
                }
                let Some(seed) = failure.seed else { return };
                if is_ack(data) {
                    // §17: an ACK is never answered, not even a broken one.
                    return;
                }
                let status = match failure.error {
                    ParseError::VersionNotSupported => 505,
                    // RFC 4475 §3.1.2.18: an unknown method says more than
                    // its CSeq's mismatch.
                    ParseError::UnknownMethod => 501,
                    _ => 400,
                };
                let tag = stateless_tag(data);
                let warning = format!("399 callbackd \"{}\"", failure.error);
                let mut extra = vec![("Warning", warning.as_str())];
                if status == 501 {
                    extra.push(("Allow", self.allow()));
                }
                let bytes = seed.response(status, message::reason_phrase(status), &tag, &extra);
                self.push_response(source, bytes);
            }
        }
    }

    /// Answers a pending re-INVITE/UPDATE with 200 and `sdp`.
    pub fn answer_reoffer(
        &mut self,
        now: Instant,
        call: CallKey,
        sdp: &[u8],
    ) -> Result<(), CallError> {
        self.finish_reoffer(now, call, 200, Some(sdp))
    }

    /// Rejects a pending re-INVITE/UPDATE (e.g. 488); the session is unchanged.
    pub fn reject_reoffer(
        &mut self,
        now: Instant,
        call: CallKey,
        status: u16,
    ) -> Result<(), CallError> {
        self.finish_reoffer(now, call, status, None)
    }

    /// Ends a call from our side: BYE once confirmed (after the ACK, §15),
    /// 480 before we answered; an outbound call not yet answered is
    /// cancelled ([`Endpoint::cancel`]).
    pub fn hangup(&mut self, now: Instant, call: CallKey) -> Result<(), CallError> {
        self.hangup_because(now, call, Reason::NORMAL_CLEARING)
    }

    /// [`Endpoint::hangup`], telling the far end why in the BYE's or the
    /// CANCEL's `Reason` (RFC 3326).
    pub fn hangup_because(
        &mut self,
        now: Instant,
        call: CallKey,
        reason: Reason,
    ) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        match &mut c.role {
            Role::Uas(UasState::Early { .. }) => return self.reject(now, call, 480, &[]),
            Role::Uac(LegState::Inviting { .. }) => return self.cancel_because(now, call, reason),
            Role::Uas(UasState::Confirmed(s)) | Role::Uac(LegState::Confirmed(s)) => {
                match &mut s.offer_answer {
                    // §15: the callee must not send BYE before the ACK (or
                    // Timer H / 64·T1); remember and send it when the ACK
                    // comes.
                    OfferAnswer::AwaitingAck { bye_after_ack, .. } => {
                        *bye_after_ack = Some(reason);
                    }
                    OfferAnswer::Stable | OfferAnswer::TheyOffered(_) => {
                        self.send_bye(now, call.0, EndReason::LocalHangup, reason);
                    }
                }
            }
            Role::Uas(UasState::Terminating(_)) | Role::Uac(LegState::Terminating(_)) => {}
        }
        Ok(())
    }

    /// The transport could not deliver a message to `destination` (no
    /// route, connection refused or broken, name did not resolve, an
    /// address family we have no socket for): every client transaction
    /// sending there fails (RFC 3261 §17.1.4) — an outbound INVITE with
    /// [`Event::Failed`] 503 (§8.1.3.1), so the dialer tries the next
    /// target at once (RFC 3263 §4.3), a BYE by ending its call.
    ///
    /// A TCP failure is the connection's: it fails every client
    /// transaction sending over TCP to that `remote`, whichever connection
    /// it named (messages for a peer share its newest connection).
    /// Server transactions are left to their timers.
    pub fn handle_transport_error(&mut self, now: Instant, destination: &Destination) {
        let ids: Vec<u64> = self
            .txs
            .iter()
            .filter(|(_, t)| !t.server && failure_reaches(destination, &t.destination))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(tx) = self.txs.get_mut(&id) {
                match &mut tx.machine {
                    TxMachine::Ict(m) => m.machine.handle_transport_error(),
                    TxMachine::Nict(m) => m.handle_transport_error(),
                    TxMachine::Ist(_) | TxMachine::Nist(_) => {}
                }
            }
            self.drain_tx(now, id);
        }
    }

    /// The engine resolved `name` (a [`Destination::Resolve`]) to `addr`
    /// (RFC 3263 §4.2): every client transaction still sending to that
    /// name, and the 2xx ACKs kept for re-sending, go to `addr` from now
    /// on, so a retransmission neither waits for another lookup nor lands
    /// on another address (§4: once per transaction). A name that did not
    /// resolve is a transport error instead
    /// ([`Endpoint::handle_transport_error`]).
    pub fn handle_resolved(&mut self, name: &Destination, addr: SocketAddr) {
        let Destination::Resolve { tcp, .. } = name else {
            return;
        };
        let resolved = if *tcp {
            Destination::Tcp {
                conn: None,
                remote: addr,
            }
        } else {
            Destination::Udp(addr)
        };
        for tx in self.txs.values_mut().filter(|t| !t.server) {
            if tx.destination == *name {
                tx.destination = resolved.clone();
            }
            if let TxMachine::Ict(ict) = &mut tx.machine {
                for (_, _, destination) in &mut ict.acks {
                    if *destination == *name {
                        *destination = resolved.clone();
                    }
                }
            }
        }
    }

    /// The SIP Call-ID of a call (incoming or outbound) while it exists.
    pub fn call_id(&self, call: CallKey) -> Option<&str> {
        self.calls
            .get(&call.0)
            .map(|c| c.dialog.id().call_id.as_str())
    }

    /// Sends a keep-alive to a registered phone: an OPTIONS out of dialog
    /// to its `contact`, through the `flow` its REGISTER came on (see
    /// [`crate::sip::registrar`]). Stateless, like Kamailio's nathelper
    /// pings: no transaction and no retransmission — the registrar counts
    /// anything heard from the flow as the answer, and the answer itself is
    /// dropped here as a stray response. A Contact that is no SIP URI gets
    /// nothing.
    pub fn send_keepalive(&mut self, contact: &str, flow: Flow) {
        if SipUri::parse(contact).is_err() {
            debug!(contact, "no keep-alive to a Contact that is no SIP URI");
            return;
        }
        let me = local_identity(&self.cfg, flow.transport, &self.contact_uri(flow.transport));
        let branch = self.new_branch();
        let tag = self.new_token();
        let call_id = format!(
            "{}-ka@{}",
            self.new_token(),
            bracket_v6(&self.cfg.advertised_host)
        );
        let data = message::RequestBuilder::new(&Method::Options, contact)
            .header_fmt(
                "Via",
                format_args!(
                    "SIP/2.0/{} {};branch={branch};rport",
                    me.transport, me.sent_by
                ),
            )
            .header_fmt("Max-Forwards", format_args!("{}", self.cfg.max_forwards))
            .header_fmt("From", format_args!("<{}>;tag={tag}", me.contact))
            .header_fmt("To", format_args!("<{contact}>"))
            .header("Call-ID", &call_id)
            .header("CSeq", "1 OPTIONS")
            .header("User-Agent", &self.cfg.user_agent)
            .finish(None, b"");
        self.transmits.push_back(Transmit {
            destination: flow_destination(flow),
            data,
        });
    }

    /// Counters of live state.
    pub fn stats(&self) -> Stats {
        let tx_timers = self
            .txs
            .values()
            .filter(|t| t.poll_timeout().is_some())
            .count();
        let call_timers = self
            .calls
            .values()
            .filter(|c| c.poll_timeout().is_some())
            .count();
        Stats {
            calls: self.calls.len(),
            transactions: self.txs.len(),
            timers: tx_timers + call_timers,
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.totals.sent(&t.data);
        Some(t)
    }

    /// Responses and retransmissions since start-up.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, owner))) = self.heap.peek().copied() {
            if self.owner_deadline(owner) == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, owner))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.owner_deadline(owner) != Some(at) {
                continue;
            }
            match owner {
                Owner::Tx(id) => {
                    if let Some(tx) = self.txs.get_mut(&id) {
                        tx.scheduled = None;
                        tx.handle_timeout(now);
                    }
                    self.drain_tx(now, id);
                }
                Owner::Call(id) => {
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.scheduled = None;
                    }
                    self.call_timeout(now, id);
                }
            }
        }
    }

    // -----------------------------------------------------------------------
    // requests

    fn handle_request(&mut self, now: Instant, mut req: Request, from: Flow) {
        // RFC 3261 §18.2.1 / RFC 3581 §4: note where the request really came
        // from in the top Via of our responses.
        stamp_received(&mut req, from.remote);
        let key = TxKey::of_request(&req);
        // §18.2.2: where its responses go. `from` stays what it was for
        // the registrar, which reaches an agent through the flow its
        // REGISTER came from.
        let source = reply_flow(&req, from);

        // A retransmission, an ACK for a non-2xx, or a CANCEL's INVITE?
        if let Some(&id) = self.server_index.get(&key) {
            self.handle_server_retransmission(now, id, &req);
            return;
        }
        if !matches!(req.method, Method::Ack | Method::Cancel) {
            if let Some((status, extra)) = self.refusal(&req, &key) {
                debug!(remote = %source.remote, method = %req.method, status, "request refused");
                let extra: Vec<(&str, &str)> =
                    extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
                self.respond_final(now, &req, source, key, status, &extra);
                return;
            }
            if req.headers.to.tag.is_none() {
                self.remember_for_merging(&req, &key);
            }
        }
        match req.method {
            Method::Ack => self.handle_ack(now, &req),
            Method::Cancel => self.handle_cancel(now, &req, source),
            _ if req.headers.to.tag.is_some() => self.handle_in_dialog(now, req, source, key),
            _ => self.handle_out_of_dialog(now, req, source, from, key),
        }
    }

    fn handle_server_retransmission(&mut self, now: Instant, id: u64, req: &Request) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        // An ACK here is the one for a non-2xx final, not a repeat (an ACK
        // repeated in Completed is absorbed all the same, uncounted).
        if req.method != Method::Ack {
            self.totals.retransmissions_received += 1;
        }
        match &mut tx.machine {
            TxMachine::Ist(ist) if req.method == Method::Ack => {
                if ist.handle_ack(now) == AckDisposition::ToTu {
                    // An ACK for the 2xx with the INVITE's branch (RFC 2543
                    // style peers): treat as the dialog's ACK.
                    self.handle_ack(now, req);
                    return;
                }
            }
            TxMachine::Ist(ist) => {
                if ist.handle_request_retransmission() == RequestRetransmission::Accepted {
                    // RFC 6026 §8.6: absorbed by the transaction; our 2xx
                    // retransmission (AckWait) also answers it at once.
                    if let Some(call_id) = tx.call
                        && let Some(c) = self.calls.get_mut(&call_id)
                        && let Some(s) = session_of(&mut c.role)
                        && let OfferAnswer::AwaitingAck { wait, .. } = &mut s.offer_answer
                    {
                        wait.handle_request_retransmission();
                        self.drain_call(now, call_id);
                    }
                }
            }
            TxMachine::Nist(nist) => {
                nist.handle_request_retransmission();
            }
            TxMachine::Nict(_) | TxMachine::Ict(_) => {}
        }
        self.drain_tx(now, id);
    }

    fn handle_in_dialog(&mut self, now: Instant, req: Request, source: Flow, key: TxKey) {
        let Some(did) = DialogId::of_request(&req) else {
            return;
        };
        let Some(&call_id) = self.dialogs.get(&did) else {
            // §12.2.2: a request for a dialog we do not know gets 481.
            self.respond_stateless(now, &req, source, 481, &[]);
            return;
        };
        let Some(c) = self.calls.get_mut(&call_id) else {
            self.respond_stateless(now, &req, source, 481, &[]);
            return;
        };
        if !c
            .dialog
            .accept_remote_cseq(&req.method, req.headers.cseq.seq)
        {
            // §12.2.2: lower CSeq than the last one → 500. A re-INVITE's
            // 500 needs its IST, so the ACK is absorbed (§17.2.1).
            self.respond_final(now, &req, source, key, 500, &[]);
            return;
        }
        match req.method {
            Method::Bye => {
                self.respond_in_new_nist(now, &req, source, 200, &[]);
                self.end_call(now, call_id, EndReason::RemoteBye);
            }
            Method::Options => {
                self.respond_in_new_nist(now, &req, source, 200, &self.capabilities());
            }
            Method::Info => {
                let content_type = req
                    .headers
                    .get(HeaderName::ContentType)
                    .unwrap_or("")
                    .into();
                let body = req.body.clone();
                self.respond_in_new_nist(now, &req, source, 200, &[]);
                self.events.push_back(Event::Info {
                    call: CallKey(call_id),
                    content_type,
                    body,
                });
            }
            Method::Invite | Method::Update => self.handle_reoffer(now, call_id, req, source, key),
            Method::Ack | Method::Cancel => {}
            Method::Prack => self.respond_in_new_nist(now, &req, source, 481, &[]),
            Method::Register
            | Method::Subscribe
            | Method::Notify
            | Method::Refer
            | Method::Message
            | Method::Publish => {
                self.respond_in_new_nist(now, &req, source, 405, &[("Allow", self.allow())]);
            }
            Method::Extension(_) => {
                self.respond_in_new_nist(now, &req, source, 501, &[("Allow", self.allow())])
            }
        }
    }

    /// A request outside any dialog; its responses go to `source`, `from`
    /// is where it came from.
    fn handle_out_of_dialog(
        &mut self,
        now: Instant,
        req: Request,
        source: Flow,
        from: Flow,
        key: TxKey,
    ) {
        // §8.2.2.1 would check the Request-URI domain; as the trunk's target
        // we accept any user part at any host.
        if req.method == Method::Options {
            // §11: an OPTIONS ending here is answered even with
            // Max-Forwards 0. A draining node says 503 so dispatchers notice.
            if self.draining {
                self.respond_in_new_nist(now, &req, source, 503, &[("Retry-After", "30")]);
            } else {
                self.respond_in_new_nist(now, &req, source, 200, &self.capabilities());
            }
            return;
        }
        if req.headers.max_forwards == Some(0) {
            // §16.3 item 2 / §8.2: out of hops.
            self.respond_final(now, &req, source, key, 483, &[]);
            return;
        }
        match req.method {
            Method::Invite => self.handle_new_invite(now, req, source, key),
            // In-dialog methods without a To-tag: no such dialog.
            Method::Bye | Method::Info | Method::Update | Method::Prack => {
                self.respond_in_new_nist(now, &req, source, 481, &[]);
            }
            // RFC 3261 §10.3: the registrar decides; the NIST holds the
            // request (absorbing retransmissions) until it does.
            Method::Register if self.cfg.registrar => {
                let id = self.alloc_id();
                let machine = TxMachine::Nist(NonInviteServer::new(
                    self.cfg.timers,
                    source.transport.reliability(),
                ));
                self.insert_server_tx(id, key, machine, source, None);
                let request = Box::new(req);
                self.awaiting.insert(id, request.clone());
                self.events.push_back(Event::Register {
                    request,
                    source: from,
                    tx: ServerTx(id),
                });
            }
            Method::Register
            | Method::Subscribe
            | Method::Notify
            | Method::Refer
            | Method::Message
            | Method::Publish => {
                self.respond_in_new_nist(now, &req, source, 405, &[("Allow", self.allow())]);
            }
            Method::Extension(_) => {
                self.respond_in_new_nist(now, &req, source, 501, &[("Allow", self.allow())])
            }
            Method::Ack | Method::Cancel | Method::Options => {}
        }
    }

    /// The UAS checks of RFC 3261 §8.2 that come before any method's own
    /// processing, for every request but ACK and CANCEL, in and outside a
    /// dialog: the status and header fields to refuse `req` with, if any.
    fn refusal(&self, req: &Request, key: &TxKey) -> Option<(u16, Vec<(&'static str, String)>)> {
        // §8.2.1: a method we do not know.
        if let Method::Extension(_) = req.method {
            return Some((501, vec![("Allow", self.allow().into())]));
        }
        // §8.2.2.1: a Request-URI scheme we do not serve.
        let scheme = message::uri_scheme(&req.uri).unwrap_or("");
        if !["sip", "sips", "tel"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
        {
            return Some((416, Vec::new()));
        }
        // §8.2.2.2: a merged request (it reached us twice, by two paths).
        if req.headers.to.tag.is_none()
            && let Some(first) = self.merge_index.get(&MergeKey::of(req))
            && first != key
            && self.server_index.contains_key(first)
        {
            return Some((482, Vec::new()));
        }
        // §8.2.2.3: unknown extensions in Require (Proxy-Require is for
        // proxies; RFC 4475 §3.3.5).
        let unsupported: Vec<&str> = req
            .headers
            .get_all(HeaderName::Require)
            .filter(|ext| !KNOWN_EXTENSIONS.iter().any(|k| k.eq_ignore_ascii_case(ext)))
            .collect();
        if !unsupported.is_empty() {
            return Some((420, vec![("Unsupported", unsupported.join(", "))]));
        }
        // §8.2.3: a body we must read but cannot. The SDP of INVITE and
        // UPDATE (alone, or a part of multipart/mixed); any other body only
        // needs an encoding we can undo.
        let reads_sdp = matches!(req.method, Method::Invite | Method::Update);
        let checked = if reads_sdp {
            message::check_body(&req.headers, &req.body, "application/sdp")
        } else {
            message::check_encoding(&req.headers, &req.body)
        };
        match checked {
            Ok(()) => {}
            Err(BodyRefusal::Encoding) => {
                return Some((415, vec![("Accept-Encoding", "identity".into())]));
            }
            Err(BodyRefusal::Type | BodyRefusal::RequiredPart) => {
                return Some((415, vec![("Accept", ACCEPT.into())]));
            }
        }
        // §21.4.7: our answer to an INVITE carries SDP; an Accept without
        // it leaves nothing we could send (RFC 4475 §3.3.15).
        if req.method == Method::Invite && req.headers.get(HeaderName::Accept).is_some() {
            let takes_sdp = req.headers.get_all(HeaderName::Accept).any(|a| {
                let mime = a.split(';').next().unwrap_or("").trim();
                ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|m| mime.eq_ignore_ascii_case(m))
            });
            if !takes_sdp {
                return Some((406, vec![("Accept", ACCEPT.into())]));
            }
        }
        None
    }

    /// Notes a request outside a dialog for merged-request detection.
    fn remember_for_merging(&mut self, req: &Request, key: &TxKey) {
        if self.merge_index.len() > 2 * self.server_index.len() + 1024 {
            let live = &self.server_index;
            self.merge_index.retain(|_, k| live.contains_key(k));
        }
        self.merge_index.insert(MergeKey::of(req), key.clone());
    }

    /// RFC 4028 negotiation for a session-creating or refreshing request;
    /// answers 422 (with our Min-SE) or 400 itself and gives `None` then.
    fn negotiate_session(
        &mut self,
        now: Instant,
        req: &Request,
        source: Flow,
        key: &TxKey,
    ) -> Option<Option<Negotiated>> {
        match negotiate_uas(&req.headers, &self.cfg.session) {
            Ok(session) => Some(session),
            Err(SessionTimerError::TooSmall { min_se }) => {
                let min = min_se.to_string();
                self.respond_final(now, req, source, key.clone(), 422, &[("Min-SE", &min)]);
                None
            }
            Err(SessionTimerError::Malformed) => {
                self.respond_final(now, req, source, key.clone(), 400, &[]);
                None
            }
        }
    }

    /// A final response in a new server transaction: an IST for INVITE (so
    /// its ACK is absorbed and the response retransmitted, §17.2.1), a NIST
    /// otherwise.
    fn respond_final(
        &mut self,
        now: Instant,
        req: &Request,
        source: Flow,
        key: TxKey,
        status: u16,
        extra: &[(&str, &str)],
    ) {
        if req.method == Method::Invite {
            self.respond_in_new_ist(now, req, source, key, status, extra);
        } else {
            self.respond_in_new_nist(now, req, source, status, extra);
        }
    }

    // -----------------------------------------------------------------------
    // responses (to our INVITE, BYE, CANCEL, PRACK and refreshes): matched
    // to their client transaction in `tx`

    /// A client transaction of the call ended: with a final `status`, or
    /// `None` when it timed out (Timer F) or the transport failed.
    fn client_final(
        &mut self,
        now: Instant,
        call_id: u64,
        tx_id: u64,
        kind: &TxKind,
        resp: Option<&Response>,
    ) {
        let status = resp.map(|r| r.status);
        let Some(c) = self.calls.get(&call_id) else {
            return;
        };
        let bye_done = match &c.role {
            Role::Uas(UasState::Terminating(e)) | Role::Uac(LegState::Terminating(e)) => {
                (e.bye_tx == tx_id).then_some(e.reason)
            }
            Role::Uas(UasState::Early { .. } | UasState::Confirmed(_))
            | Role::Uac(LegState::Inviting { .. } | LegState::Confirmed(_)) => None,
        };
        let name = c.dialog.id().call_id.clone();
        if let Some(reason) = bye_done {
            let answered = resp.is_some_and(|r| self.answer_bye_challenge(now, call_id, r));
            if !answered {
                self.end_call(now, call_id, reason);
            }
        } else if *kind != TxKind::Other(Method::Update) {
            // PRACK and CANCEL: nothing follows from their outcome; the
            // INVITE's own final decides (RFC 3262 §4, RFC 3261 §9.1).
            trace!(call_id = %name, ?kind, ?status, "client transaction done");
        } else if matches!(status, Some(405 | 501)) {
            // RFC 3311 §5.1: the peer does not take UPDATE after all.
            self.update_refused(now, call_id);
        } else if let Some(r) = resp.filter(|r| matches!(r.status, 401 | 407))
            && self.answer_refresh_challenge(now, call_id, r, Method::Update)
        {
            // The same UPDATE again, with credentials.
        } else if matches!(status, None | Some(408 | 481)) {
            // RFC 3261 §12.2.1.2 (a timeout counts as 408, §8.1.3.1): our
            // session refresh failed, the peer is gone; end the dialog with
            // BYE rather than refreshing a dead call forever.
            debug!(call_id = %name, ?status, "session refresh failed");
            self.send_bye(
                now,
                call_id,
                EndReason::SessionExpired,
                Reason::TIMER_EXPIRY,
            );
            self.drain_call(now, call_id);
        }
    }

    // -----------------------------------------------------------------------
    // calls

    fn end_call(&mut self, now: Instant, call_id: u64, reason: EndReason) {
        self.finish_call(
            now,
            call_id,
            Event::Ended {
                call: CallKey(call_id),
                reason,
            },
        );
    }

    /// Removes a call and reports its last `event` (Ended or Failed).
    fn finish_call(&mut self, now: Instant, call_id: u64, event: Event) {
        let Some(mut c) = self.calls.remove(&call_id) else {
            return;
        };
        if self.dialogs.get(c.dialog.id()) == Some(&call_id) {
            self.dialogs.remove(c.dialog.id());
        }
        match &c.role {
            // An outbound call ended before its final (the far end's BYE
            // in an early dialog): the INVITE is cancelled, so its
            // transaction ends too (§15: the early dialog is over).
            Role::Uac(LegState::Inviting { tx, .. }) => {
                self.cancel_invite_tx(now, *tx, Reason::NORMAL_CLEARING);
            }
            Role::Uac(LegState::Confirmed(_) | LegState::Terminating(_)) | Role::Uas(_) => {}
        }
        if let Some(reoffer) = c.role.take_reoffer() {
            // §15.1.2: pending requests of the dialog still get a final
            // response, 487 RECOMMENDED; else their transaction never ends.
            let bytes = reoffer
                .request
                .response(487, Some(&c.dialog.id().local_tag))
                .header("Server", &self.cfg.user_agent)
                .finish(None, b"");
            self.send_server_response(now, reoffer.tx, 487, bytes);
        }
        self.events.push_back(event);
    }

    // -----------------------------------------------------------------------
    // helpers

    fn refuse_outsider(&mut self, data: &[u8], source: Flow) {
        if self.cfg.acl_action == AclAction::Drop {
            trace!(remote = %source.remote, "ACL: dropped");
            return;
        }
        // Stateless 403 (§8.2.6) with a To-tag derived from the request, so
        // its retransmissions get the same answer; ACKs and responses are
        // dropped. Nothing is stored.
        match message::parse(data) {
            Ok(Message::Request(req)) if req.method != Method::Ack => {
                debug!(remote = %source.remote, method = %req.method, "ACL: 403");
                let tag = stateless_tag_of(&req);
                let bytes = req
                    .response(403, Some(&tag))
                    .header("Server", &self.cfg.user_agent)
                    .finish(None, b"");
                self.push_response(reply_flow(&req, source), bytes);
            }
            _ => trace!(remote = %source.remote, "ACL: dropped non-request"),
        }
    }

    fn push_response(&mut self, source: Flow, data: Bytes) {
        self.transmits.push_back(Transmit {
            destination: flow_destination(source),
            data,
        });
    }

    /// What `Allow` lists (RFC 3261 §20.5): REGISTER only when agents may
    /// register here.
    fn allow(&self) -> &'static str {
        allow_for(self.cfg.registrar)
    }

    /// The OPTIONS answer's header fields (§11.2).
    fn capabilities(&self) -> [(&'static str, &'static str); 3] {
        let mut caps = CAPABILITIES;
        caps[0].1 = self.allow();
        caps
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn new_token(&mut self) -> String {
        format!("{:016x}", self.rng.u64(..))
    }

    fn new_branch(&mut self) -> String {
        format!("z9hG4bK{:016x}", self.rng.u64(..))
    }

    fn contact_uri(&self, transport: FlowTransport) -> Box<str> {
        let host = bracket_v6(&self.cfg.advertised_host);
        match transport {
            FlowTransport::Udp => {
                format!("sip:callbackd@{host}:{}", self.cfg.advertised_port).into()
            }
            FlowTransport::Tcp(_) => format!(
                "sip:callbackd@{host}:{};transport=tcp",
                self.cfg.advertised_port
            )
            .into(),
        }
    }
}

// ---------------------------------------------------------------------------
// internal types

/// Who a timer in the heap belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Tx(u64),
    Call(u64),
}

/// A call, incoming or outbound: its dialog, where its peer is, and its
/// state in its role.
struct Call {
    /// Pending until the first tagged response of an outbound call; early
    /// or confirmed as the role's state says (§12).
    dialog: Dialog,
    /// Where the peer is: the INVITE's source, or for an outbound call the
    /// source of the last response to our INVITE.
    flow: Flow,
    /// Our Contact in this dialog.
    contact: Box<str>,
    role: Role,
    /// The deadline queued in the heap.
    scheduled: Option<Instant>,
    /// In-dialog requests go back through `flow`, not to the remote
    /// target, unless there is a route set (a phone that registered from
    /// behind NAT: [`OutboundInvite::stay_on_flow`](crate::sip::uac::OutboundInvite::stay_on_flow)).
    stay_on_flow: bool,
}

/// A call's state: one machine per role. Both reach a confirmed dialog
/// ([`Session`]) and end it alike ([`Ending`]).
enum Role {
    /// We answer it ([`UasState`]).
    Uas(UasState),
    /// We placed it ([`LegState`]).
    Uac(LegState),
}

impl Call {
    /// Where a request of this dialog whose next hop is `next_hop` goes:
    /// the flow itself for a call that stays on it and has no route set,
    /// otherwise `next_hop` (§12.2.1.1), over the flow's connection when it
    /// leads there.
    fn destination(&self, next_hop: &SipUri) -> Destination {
        if self.stay_on_flow && self.dialog.route_set().is_empty() {
            return match self.flow.transport {
                FlowTransport::Udp => Destination::Udp(self.flow.remote),
                FlowTransport::Tcp(conn) => Destination::Tcp {
                    conn: (conn != NO_CONNECTION).then_some(conn),
                    remote: self.flow.remote,
                },
            };
        }
        destination_for(next_hop, self.flow)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.role {
            Role::Uas(UasState::Confirmed(s)) | Role::Uac(LegState::Confirmed(s)) => {
                s.poll_timeout()
            }
            Role::Uas(UasState::Early { .. } | UasState::Terminating(_))
            | Role::Uac(LegState::Inviting { .. } | LegState::Terminating(_)) => None,
        }
    }

    /// Whether the call is an outbound one whose current INVITE is client
    /// transaction `tx_id`, still without a final response.
    fn inviting_with(&self, tx_id: u64) -> bool {
        match &self.role {
            Role::Uac(LegState::Inviting { tx, .. }) => *tx == tx_id,
            Role::Uac(LegState::Confirmed(_) | LegState::Terminating(_)) | Role::Uas(_) => false,
        }
    }
}

impl MergeKey {
    fn of(req: &Request) -> MergeKey {
        MergeKey {
            from_tag: req.headers.from.tag.clone(),
            call_id: req.headers.call_id.clone(),
            seq: req.headers.cseq.seq,
            method: req.method.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// free helpers

/// [`ALLOW`], with REGISTER when the registrar is on.
fn allow_for(registrar: bool) -> &'static str {
    if registrar {
        ALLOW_WITH_REGISTER
    } else {
        ALLOW
    }
}

/// What OPTIONS answers with (RFC 3261 §11.2); `Server` is added by the
/// responder.
const CAPABILITIES: [(&str, &str); 3] = [
    ("Allow", ALLOW),
    ("Accept", ACCEPT),
    ("Supported", SUPPORTED),
];

fn local_identity(cfg: &EndpointConfig, transport: FlowTransport, contact: &str) -> LocalIdentity {
    LocalIdentity {
        transport: transport.via_token(),
        sent_by: format!(
            "{}:{}",
            bracket_v6(&cfg.advertised_host),
            cfg.advertised_port
        )
        .into(),
        contact: contact.into(),
        max_forwards: cfg.max_forwards,
    }
}

fn bracket_v6(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// Adds `received` (and fills `rport`) in the top Via (RFC 3261 §18.2.1,
/// RFC 3581 §4), so responses copy what the server saw.
fn stamp_received(req: &mut Request, remote: SocketAddr) {
    let via = req.headers.top_via();
    let host_is_source = via.host.parse::<IpAddr>().ok() == Some(remote.ip());
    let wants_rport = via.rport == Rport::Requested;
    if host_is_source && !wants_rport {
        return;
    }
    req.headers.stamp_top_via(remote, wants_rport);
}

/// Where the responses to `req`, received from `from`, go (RFC 3261
/// §18.2.2, RFC 3581 §4): on its connection for TCP. For UDP, to the
/// source address and port when the top Via asked for `rport`; otherwise
/// to the `received` address (the source's, which [`stamp_received`] put
/// there) at the sent-by port, 5060 when it names none.
fn reply_flow(req: &Request, from: Flow) -> Flow {
    match from.transport {
        FlowTransport::Tcp(_) => from,
        FlowTransport::Udp => match req.headers.top_via().rport {
            Rport::Requested | Rport::Value(_) => from,
            Rport::Absent => Flow {
                remote: SocketAddr::new(
                    from.remote.ip(),
                    req.headers.top_via().port.unwrap_or(5060),
                ),
                transport: FlowTransport::Udp,
            },
        },
    }
}

/// Where responses on `flow` go: to its address for UDP, on its
/// connection for TCP (for a request's flow, see [`reply_flow`]).
fn flow_destination(flow: Flow) -> Destination {
    match flow.transport {
        FlowTransport::Udp => Destination::Udp(flow.remote),
        FlowTransport::Tcp(conn) => Destination::Tcp {
            conn: Some(conn),
            remote: flow.remote,
        },
    }
}

/// Whether a transport failure reported for `failed` concerns a
/// transaction sending to `used` (see [`Endpoint::handle_transport_error`]).
fn failure_reaches(failed: &Destination, used: &Destination) -> bool {
    match (failed, used) {
        (Destination::Tcp { remote: a, .. }, Destination::Tcp { remote: b, .. }) => a == b,
        (failed, used) => failed == used,
    }
}

/// Whether the transport to `destination` retransmits by itself (§17).
fn reliability_of(destination: &Destination) -> Reliability {
    match destination {
        Destination::Tcp { .. } | Destination::Resolve { tcp: true, .. } => Reliability::Reliable,
        Destination::Udp(_) | Destination::Resolve { tcp: false, .. } => Reliability::Unreliable,
    }
}

fn response_destination(flow: Flow, _dialog: &Dialog) -> Destination {
    flow_destination(flow)
}

/// Where an in-dialog request goes: the next hop's address when it is an IP
/// literal, else a name to resolve. Over TCP, the call's connection is
/// reused while it is open when the next hop is the host at its other end:
/// a peer that opened the connection (from an ephemeral port, perhaps
/// behind NAT) gets our BYE on it, not on a new connection to its Contact
/// port it may not even listen on.
fn destination_for(next_hop: &SipUri, flow: Flow) -> Destination {
    let tcp = match next_hop.transport.as_deref() {
        Some("tcp") => true,
        Some(_) => false,
        None => matches!(flow.transport, FlowTransport::Tcp(_)),
    };
    let host = next_hop.maddr.as_deref().unwrap_or(&next_hop.host);
    match host.parse::<IpAddr>() {
        Ok(ip) => {
            let remote = SocketAddr::new(ip, next_hop.port.unwrap_or(5060));
            if tcp {
                let conn = match flow.transport {
                    FlowTransport::Tcp(c) if flow.remote.ip() == ip && c != NO_CONNECTION => {
                        Some(c)
                    }
                    _ => None,
                };
                Destination::Tcp { conn, remote }
            } else {
                Destination::Udp(remote)
            }
        }
        Err(_) => Destination::Resolve {
            host: host.into(),
            port: next_hop.port,
            tcp,
        },
    }
}

/// A To-tag that is a function of the request (§8.2.6.2 allows any; making it
/// deterministic gives retransmissions of a stateless answer the same tag).
fn stateless_tag_of(req: &Request) -> String {
    let mut h = DefaultHasher::new();
    req.headers.call_id.hash(&mut h);
    req.headers.from.tag.hash(&mut h);
    req.headers.top_via().branch.hash(&mut h);
    req.headers.cseq.seq.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Whether a message that failed to parse is an ACK request (its start line
/// begins with the method, after any leading CRLFs, §7.5).
fn is_ack(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    data[start..].starts_with(b"ACK ")
}

fn stateless_tag(data: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests;
