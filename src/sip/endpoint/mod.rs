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
//!                                  ├─▶ ACK ─▶ non-2xx: IST; 2xx: dialog (stop 2xx retransmission)
//!                                  ├─▶ CANCEL ─▶ 200, and 487 to the INVITE
//!                                  ├─▶ To-tag ─▶ dialog? BYE/re-INVITE/UPDATE/INFO/OPTIONS : 481
//!                                  └─▶ no tag ─▶ 483/420/405/501 checks ─▶ INVITE: Event::IncomingCall
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

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use crate::acl::{Acl, AclAction};
use crate::sip::dialog::{Dialog, DialogError, DialogId, DialogState, LocalIdentity};
use crate::sip::message::{
    self, CallId, HeaderName, Message, Method, ParseError, Request, Response, Rport, SipUri,
};
use crate::sip::session_timer::{
    Negotiated, SessionTimer, SessionTimerConfig, SessionTimerError, TimerAction, negotiate_uas,
};
use crate::sip::transaction::{
    AckDisposition, AckWait, IctState, InviteClient, InviteServer, NictState, NonInviteClient,
    NonInviteServer, Reliability, RequestRetransmission, ResponseAction, TimerConfig, TuEvent,
};
use crate::sip::uac::{
    IctTx, InviteError, InviteTemplate, OutboundInvite, SentPrack, TemplateContext, UacInput,
    UacState, UacStep, finish_ack, is_stale, parse_retry_after, parse_rseq,
};

/// Methods we implement, for `Allow` (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE";
/// [`ALLOW`] when agents may REGISTER here (the registrar is on).
pub const ALLOW_WITH_REGISTER: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REGISTER";
/// Body types we accept, for `Accept` (§20.1).
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay, application/dtmf";
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
        /// Port (default 5060).
        port: u16,
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
    /// Requests the application answers ([`Endpoint::respond`]), by their
    /// server transaction, until the final response.
    awaiting: HashMap<u64, Box<Request>>,
}

impl Endpoint {
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
            awaiting: HashMap::new(),
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
        match message::parse(data) {
            Ok(Message::Request(req)) => self.handle_request(now, req, source),
            Ok(Message::Response(resp)) => self.handle_response(now, resp, source),
            Err(failure) => {
                debug!(remote = %source.remote, error = %failure.error, "malformed SIP message");
                let Some(seed) = failure.seed else { return };
                if is_ack(data) {
                    // §17: an ACK is never answered, not even a broken one.
                    return;
                }
                let status = match failure.error {
                    ParseError::VersionNotSupported => 505,
                    _ => 400,
                };
                let tag = stateless_tag(data);
                let warning = format!("399 callbackd \"{}\"", failure.error);
                let bytes = seed.response(
                    status,
                    message::reason_phrase(status),
                    &tag,
                    &[("Warning", &warning)],
                );
                self.push_response(source, bytes);
            }
        }
    }

    /// Answers an incoming call with 200 OK and `sdp` (our answer, or our
    /// offer when the INVITE had none).
    pub fn answer(&mut self, now: Instant, call: CallKey, sdp: &[u8]) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        let (CallState::Offered, Some(invite), Some(tx_id)) =
            (c.state, c.invite.take(), c.invite_tx)
        else {
            return Err(CallError::WrongState);
        };
        let tag = c.dialog.id().local_tag.clone();
        let mut b = invite.response(200, Some(&tag));
        for rr in c.dialog.record_route() {
            b = b.header("Record-Route", rr);
        }
        b = b
            .header_fmt("Contact", format_args!("<{}>", c.contact))
            .header("Allow", allow_for(self.cfg.registrar))
            .header("Supported", SUPPORTED)
            .header("Server", &self.cfg.user_agent);
        if let Some(n) = c.session {
            b = b.header("Session-Expires", &n.header_value());
            if n.requires_timer() {
                b = b.header("Require", "timer");
            }
        }
        let bytes = b.finish(Some("application/sdp"), sdp);
        let reliability = c.flow.transport.reliability();
        c.state = CallState::Answered;
        c.ack_cseq = invite.headers.cseq.seq;
        c.ack_wait = Some(AckWait::new(
            now,
            self.cfg.timers,
            reliability,
            bytes.clone(),
        ));
        c.session_timer = c.session.map(|n| SessionTimer::start(now, n));
        c.dialog.confirm();
        if let Some(tx) = self.txs.get_mut(&tx_id)
            && let TxMachine::Ist(ist) = &mut tx.machine
        {
            // The transaction sends the 2xx once and moves to Accepted
            // (RFC 6026 §8.5); AckWait retransmits it.
            if let Err(e) = ist.send_response(now, 200, bytes) {
                debug!(error = %e, "IST refused the 2xx");
            }
        }
        self.drain_tx(now, tx_id);
        self.drain_call(now, call.0);
        Ok(())
    }

    /// Rejects an incoming call with a final status (4xx–6xx) and optional
    /// extra header fields (e.g. `Retry-After`).
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallKey,
        status: u16,
        extra: &[(&str, &str)],
    ) -> Result<(), CallError> {
        if !(300..=699).contains(&status) {
            return Err(CallError::NotAFailure(status));
        }
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        let (CallState::Offered, Some(invite), Some(tx_id)) =
            (c.state, c.invite.take(), c.invite_tx)
        else {
            return Err(CallError::WrongState);
        };
        let tag = c.dialog.id().local_tag.clone();
        let mut b = invite
            .response(status, Some(&tag))
            .header("Server", &self.cfg.user_agent);
        for (name, value) in extra {
            b = b.header(name, value);
        }
        self.send_ist_final(now, tx_id, status, b.finish(None, b""));
        self.end_call(now, call.0, EndReason::Rejected(status));
        Ok(())
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
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        match c.state {
            CallState::Offered => return self.reject(now, call, 480, &[]),
            CallState::Inviting => return self.cancel(now, call),
            // §15: the callee must not send BYE before the ACK (or Timer H
            // / 64·T1); remember and send it when the ACK comes.
            CallState::Answered => c.bye_after_ack = Some(EndReason::LocalHangup),
            CallState::Confirmed => self.send_bye(now, call.0, EndReason::LocalHangup),
            CallState::Ending => {}
        }
        Ok(())
    }

    /// Places an outbound call: sends the INVITE (its own client
    /// transaction, RFC 3261 §17.1.1) towards `invite.next_hop`. Events
    /// follow: [`Event::Progress`]*, then [`Event::Answered`] (and later
    /// [`Event::Ended`]) or [`Event::Failed`] — or [`Event::Ended`] with
    /// [`EndReason::LocalCancel`] after a [`Endpoint::cancel`].
    ///
    /// The application bounds the ring time itself (Timer B only runs until
    /// the first provisional) and cancels when it is up.
    pub fn invite(
        &mut self,
        now: Instant,
        mut invite: OutboundInvite,
    ) -> Result<CallKey, InviteError> {
        let tcp = matches!(
            invite.next_hop,
            Destination::Tcp { .. } | Destination::Resolve { tcp: true, .. }
        );
        let transport = if tcp {
            FlowTransport::Tcp(NO_CONNECTION)
        } else {
            FlowTransport::Udp
        };
        let contact = self.contact_uri(transport);
        let from_tag = self.new_token();
        let call_id = CallId(format!("{}{}", self.new_token(), self.new_token()).into());
        let me = local_identity(&self.cfg, transport, &contact);
        let template = InviteTemplate::new(
            &mut invite,
            TemplateContext {
                from_tag: &from_tag,
                call_id: call_id.clone(),
                contact: contact.clone(),
                transport: me.transport,
                sent_by: me.sent_by,
                user_agent: &self.cfg.user_agent,
            },
        )?;
        // §8.1.1.5: any initial CSeq below 2³¹ will do; 1 reads best.
        let cseq = 1;
        let dialog = Dialog::new_uac(
            call_id,
            &template.from,
            &from_tag,
            &template.to,
            &template.request_uri,
            cseq,
        );
        // Until the first response tells us the flow, the next hop stands in
        // for it (an unresolved name has no address yet).
        let remote = match &invite.next_hop {
            Destination::Udp(a) => *a,
            Destination::Tcp { remote, .. } => *remote,
            Destination::Resolve { port, .. } => {
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port)
            }
        };
        let transport = match &invite.next_hop {
            Destination::Tcp { conn: Some(c), .. } => FlowTransport::Tcp(*c),
            _ => transport,
        };
        let call_id = self.alloc_id();
        self.calls.insert(
            call_id,
            Call {
                dialog,
                flow: Flow { remote, transport },
                contact,
                state: CallState::Inviting,
                invite: None,
                invite_tx: None,
                ack_wait: None,
                ack_cseq: 0,
                session: None,
                session_timer: None,
                bye_after_ack: None,
                bye_tx: None,
                end_reason: None,
                reoffer: None,
                uac: Some(Box::new(crate::sip::uac::Outbound {
                    state: UacState::Calling,
                    template,
                    next_hop: invite.next_hop,
                    cseq,
                    auth: invite.credentials,
                    auth_headers: Vec::new(),
                    answered: [false; 2],
                    auth_rounds: 0,
                    rseq: None,
                    prack: None,
                })),
                scheduled: None,
            },
        );
        self.send_invite(now, call_id);
        Ok(CallKey(call_id))
    }

    /// Cancels an outbound call that has no final response yet (RFC 3261
    /// §9.1): at once when a provisional has arrived, else as soon as one
    /// does. Ends with [`EndReason::LocalCancel`] — or with whatever final
    /// the far end had already sent.
    pub fn cancel(&mut self, now: Instant, call: CallKey) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        if c.state != CallState::Inviting {
            return Err(CallError::NotOutbound);
        }
        let u = c.uac.as_mut().ok_or(CallError::NotOutbound)?;
        match u.state.step(UacInput::Hangup) {
            UacStep::SendCancel => self.send_cancel(now, call.0),
            UacStep::Quiet
            | UacStep::Report
            | UacStep::Answer
            | UacStep::AckAndBye
            | UacStep::Challenge
            | UacStep::Fail
            | UacStep::Cancelled => {}
        }
        Ok(())
    }

    /// The transport could not deliver a message to `destination` (no
    /// route, connection refused, name did not resolve): every client
    /// transaction sending there fails (RFC 3261 §17.1.4) — an outbound
    /// INVITE with [`Event::Failed`] 503 (§8.1.3.1), a BYE by ending its
    /// call.
    pub fn handle_transport_error(&mut self, now: Instant, destination: &Destination) {
        let ids: Vec<u64> = self
            .txs
            .iter()
            .filter(|(_, t)| !t.server && t.destination == *destination)
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

    /// The SIP Call-ID of a call (incoming or outbound) while it exists.
    pub fn call_id(&self, call: CallKey) -> Option<&str> {
        self.calls
            .get(&call.0)
            .map(|c| c.dialog.id().call_id.as_str())
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
        self.transmits.pop_front()
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

    fn handle_request(&mut self, now: Instant, mut req: Request, source: Flow) {
        // RFC 3261 §18.2.1 / RFC 3581 §4: note where the request really came
        // from in the top Via of our responses.
        stamp_received(&mut req, source.remote);
        let key = TxKey::of_request(&req);

        // A retransmission, an ACK for a non-2xx, or a CANCEL's INVITE?
        if let Some(&id) = self.server_index.get(&key) {
            self.handle_server_retransmission(now, id, &req);
            return;
        }
        match req.method {
            Method::Ack => self.handle_ack(now, &req),
            Method::Cancel => self.handle_cancel(now, &req, source),
            _ if req.headers.to.tag.is_some() => self.handle_in_dialog(now, req, source, key),
            _ => self.handle_out_of_dialog(now, req, source, key),
        }
    }

    fn handle_server_retransmission(&mut self, now: Instant, id: u64, req: &Request) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
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
                        && let Some(aw) = &mut c.ack_wait
                    {
                        aw.handle_request_retransmission();
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

    fn handle_ack(&mut self, now: Instant, req: &Request) {
        // ACK for a 2xx is its own transaction (§17.1.1.3): match the dialog.
        let Some(did) = DialogId::of_request(req) else {
            trace!("ACK without To-tag dropped");
            return;
        };
        let Some(&call_id) = self.dialogs.get(&did) else {
            // §17: an ACK is never answered, not even with 481.
            trace!(call_id = %req.headers.call_id, "ACK for unknown dialog dropped");
            return;
        };
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        // §13.2.2.4: the ACK carries the CSeq number of the INVITE it
        // acknowledges; a late ACK for an earlier 2xx must not stop the
        // retransmission of the current one.
        if let Some(aw) = &mut c.ack_wait
            && req.headers.cseq.seq == c.ack_cseq
            && aw.handle_ack()
            && c.state == CallState::Answered
        {
            c.state = CallState::Confirmed;
            self.events.push_back(Event::Confirmed {
                call: CallKey(call_id),
                body: req.body.clone(),
            });
            if let Some(reason) = c.bye_after_ack.take() {
                self.send_bye(now, call_id, reason);
            }
        }
        self.drain_call(now, call_id);
    }

    fn handle_cancel(&mut self, now: Instant, req: &Request, source: Flow) {
        // §9.2: the CANCEL matches the INVITE's server transaction.
        let invite_key = TxKey::of_request_as(req, TxKind::Invite);
        let Some(&tx_id) = self.server_index.get(&invite_key) else {
            self.respond_stateless(now, req, source, 481, &[]);
            return;
        };
        // The CANCEL gets its own (non-INVITE) transaction and a 200, with
        // the same To-tag as the 487 that follows (§9.2).
        let call_id = self.txs.get(&tx_id).and_then(|t| t.call);
        let tag = call_id
            .and_then(|id| self.calls.get(&id))
            .map(|c| c.dialog.id().local_tag.to_string())
            .unwrap_or_else(|| stateless_tag_of(req));
        self.respond_in_new_nist_tagged(now, req, source, 200, &[], &tag);
        let Some(call_id) = call_id else { return };
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        if c.state != CallState::Offered {
            // Already answered: the CANCEL has no effect (§9.2).
            return;
        }
        let Some(invite) = c.invite.take() else {
            return;
        };
        let tag = c.dialog.id().local_tag.clone();
        let bytes = invite.response(487, Some(&tag)).finish(None, b"");
        self.send_ist_final(now, tx_id, 487, bytes);
        self.end_call(now, call_id, EndReason::Cancelled);
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

    fn handle_reoffer(
        &mut self,
        now: Instant,
        call_id: u64,
        req: Request,
        source: Flow,
        key: TxKey,
    ) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        if c.reoffer.is_some() || c.state == CallState::Answered {
            // RFC 3261 §14.2: an offer while one is pending → 491.
            self.respond_final(now, &req, source, key, 491, &[("Retry-After", "1")]);
            return;
        }
        let Some(session) = self.negotiate_session(now, &req, source, &key) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        c.dialog.refresh_target(&req);
        let method = req.method.clone();
        let sdp = if req.headers.content_type_is("application/sdp") {
            req.body.clone()
        } else {
            Bytes::new()
        };
        let tx_id = self.alloc_id();
        let machine = if method == Method::Invite {
            TxMachine::Ist(InviteServer::new(
                self.cfg.timers,
                source.transport.reliability(),
            ))
        } else {
            TxMachine::Nist(NonInviteServer::new(
                self.cfg.timers,
                source.transport.reliability(),
            ))
        };
        self.insert_server_tx(tx_id, key, machine, source, Some(call_id));
        if method == Method::Invite {
            let trying = req.response(100, None).finish(None, b"");
            self.send_server_response(now, tx_id, 100, trying);
        }
        if let Some(c) = self.calls.get_mut(&call_id) {
            c.reoffer = Some(Reoffer {
                tx: tx_id,
                request: Box::new(req),
                session,
            });
        }
        self.events.push_back(Event::Reoffer {
            call: CallKey(call_id),
            method,
            sdp,
        });
    }

    fn finish_reoffer(
        &mut self,
        now: Instant,
        call: CallKey,
        status: u16,
        sdp: Option<&[u8]>,
    ) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        let reoffer = c.reoffer.take().ok_or(CallError::WrongState)?;
        let tag = c.dialog.id().local_tag.clone();
        let mut b = reoffer
            .request
            .response(status, Some(&tag))
            .header("Server", &self.cfg.user_agent);
        if (200..300).contains(&status) {
            b = b
                .header_fmt("Contact", format_args!("<{}>", c.contact))
                .header("Allow", allow_for(self.cfg.registrar))
                .header("Supported", SUPPORTED);
            if let Some(n) = reoffer.session {
                b = b.header("Session-Expires", &n.header_value());
                if n.requires_timer() {
                    b = b.header("Require", "timer");
                }
                // A refresh restarts the session timer (RFC 4028 §10).
                c.session = Some(n);
                c.session_timer = Some(SessionTimer::start(now, n));
            } else {
                // RFC 4028 §9: our 2xx carries no Session-Expires, so from
                // now on the session has no timer; the old one must not
                // fire.
                c.session = None;
                c.session_timer = None;
            }
        }
        let bytes = match sdp {
            Some(sdp) if !sdp.is_empty() => b.finish(Some("application/sdp"), sdp),
            _ => b.finish(None, b""),
        };
        let is_invite = reoffer.request.method == Method::Invite;
        if is_invite && (200..300).contains(&status) {
            // A 2xx to a re-INVITE is retransmitted until its ACK (§13.3.1.4).
            let reliability = c.flow.transport.reliability();
            c.ack_cseq = reoffer.request.headers.cseq.seq;
            c.ack_wait = Some(AckWait::new(
                now,
                self.cfg.timers,
                reliability,
                bytes.clone(),
            ));
            c.state = CallState::Answered;
        }
        if is_invite && status >= 300 {
            self.send_ist_final(now, reoffer.tx, status, bytes);
        } else {
            self.send_server_response(now, reoffer.tx, status, bytes);
        }
        self.drain_call(now, call.0);
        Ok(())
    }

    fn handle_out_of_dialog(&mut self, now: Instant, req: Request, source: Flow, key: TxKey) {
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
        // §8.2.2.3: unknown extensions in Require → 420 with Unsupported.
        let unsupported: Vec<&str> = req
            .headers
            .get_all(HeaderName::Require)
            .filter(|ext| !KNOWN_EXTENSIONS.iter().any(|k| k.eq_ignore_ascii_case(ext)))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            self.respond_final(now, &req, source, key, 420, &[("Unsupported", &list)]);
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
                    source,
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

    fn handle_new_invite(&mut self, now: Instant, req: Request, source: Flow, key: TxKey) {
        if self.draining {
            self.respond_in_new_ist(now, &req, source, key, 503, &[("Retry-After", "30")]);
            return;
        }
        let Some(session) = self.negotiate_session(now, &req, source, &key) else {
            return;
        };
        let local_tag = self.new_token();
        let local_seq = self.rng.u32(1..1 << 20);
        let dialog = match Dialog::new_uas(&req, &local_tag, local_seq) {
            Ok(d) => d,
            Err(
                e @ (DialogError::BadContact | DialogError::BadRecordRoute | DialogError::NoToTag),
            ) => {
                let warning = format!("399 callbackd \"{e}\"");
                self.respond_in_new_ist(now, &req, source, key, 400, &[("Warning", &warning)]);
                return;
            }
        };
        let call_id = self.alloc_id();
        let tx_id = self.alloc_id();
        self.insert_server_tx(
            tx_id,
            key,
            TxMachine::Ist(InviteServer::new(
                self.cfg.timers,
                source.transport.reliability(),
            )),
            source,
            Some(call_id),
        );
        // §17.2.1: 100 Trying at once, so the UAC stops retransmitting.
        let trying = req.response(100, None).finish(None, b"");
        self.send_server_response(now, tx_id, 100, trying);

        let contact = self.contact_uri(source.transport);
        self.dialogs.insert(dialog.id().clone(), call_id);
        self.calls.insert(
            call_id,
            Call {
                dialog,
                flow: source,
                contact,
                state: CallState::Offered,
                invite: Some(Box::new(req.clone())),
                invite_tx: Some(tx_id),
                ack_wait: None,
                ack_cseq: 0,
                session,
                session_timer: None,
                bye_after_ack: None,
                bye_tx: None,
                end_reason: None,
                reoffer: None,
                uac: None,
                scheduled: None,
            },
        );
        self.events.push_back(Event::IncomingCall {
            call: CallKey(call_id),
            request: Box::new(req),
            source,
        });
    }

    // -----------------------------------------------------------------------
    // responses (to our INVITE, BYE, CANCEL, PRACK and refreshes)

    fn handle_response(&mut self, now: Instant, resp: Response, source: Flow) {
        let key = TxKey::of_response(&resp);
        let Some(&id) = self.client_index.get(&key) else {
            trace!(status = resp.status, "stray response dropped");
            return;
        };
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let call = tx.call;
        match &mut tx.machine {
            TxMachine::Ict(ict) => {
                let head = &ict.ack_head;
                let to = &resp.headers.to.raw;
                let build_ack = || finish_ack(head, to);
                let action = match ict.machine.handle_response(now, resp.status, build_ack) {
                    Ok(action) => action,
                    Err(e) => {
                        debug!(error = %e, "response refused by the INVITE transaction");
                        ResponseAction::Absorb
                    }
                };
                // The transaction's own output (the ACK for a non-2xx) goes
                // before anything the TU sends in answer.
                self.drain_tx(now, id);
                if action == ResponseAction::PassToTu {
                    self.invite_response(now, id, call, &resp, source);
                }
            }
            TxMachine::Nict(nict) => {
                let kind = tx.key.kind.clone();
                if let Ok(ResponseAction::PassToTu) = nict.handle_response(now, resp.status)
                    && resp.status >= 200
                    && let Some(call_id) = call
                {
                    self.client_final(now, call_id, id, &kind, Some(resp.status));
                }
                self.drain_tx(now, id);
            }
            TxMachine::Ist(_) | TxMachine::Nist(_) => {}
        }
    }

    /// A client transaction of the call ended: with a final `status`, or
    /// `None` when it timed out (Timer F) or the transport failed.
    fn client_final(
        &mut self,
        now: Instant,
        call_id: u64,
        tx_id: u64,
        kind: &TxKind,
        status: Option<u16>,
    ) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        if c.bye_tx == Some(tx_id) {
            let reason = c.end_reason.unwrap_or(EndReason::LocalHangup);
            self.end_call(now, call_id, reason);
        } else if *kind != TxKind::Other(Method::Update) {
            // PRACK and CANCEL: nothing follows from their outcome; the
            // INVITE's own final decides (RFC 3262 §4, RFC 3261 §9.1).
            trace!(call_id = %c.dialog.id().call_id, ?kind, ?status, "client transaction done");
        } else if matches!(status, None | Some(408 | 481)) {
            // RFC 3261 §12.2.1.2 (a timeout counts as 408, §8.1.3.1): our
            // session refresh failed, the peer is gone; end the dialog with
            // BYE rather than refreshing a dead call forever.
            debug!(call_id = %c.dialog.id().call_id, ?status, "session refresh failed");
            self.send_bye(now, call_id, EndReason::SessionExpired);
            self.drain_call(now, call_id);
        }
    }

    // -----------------------------------------------------------------------
    // outbound calls (UAC)

    /// Sends the call's INVITE with its current CSeq and credentials in a new
    /// client transaction (new branch).
    fn send_invite(&mut self, now: Instant, call_id: u64) {
        let branch = self.new_branch();
        let id = self.alloc_id();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(u) = c.uac.as_deref() else { return };
        let t = &u.template;
        let invite = t.invite(&branch, u.cseq, &u.auth_headers);
        let ict = IctTx {
            machine: InviteClient::new(now, self.cfg.timers, reliability_of(&u.next_hop), invite),
            ack_head: t.ack_head(&branch, u.cseq),
            cancel: t.cancel(&branch, u.cseq),
            cancel_sent: false,
            acks: Vec::new(),
            abandon_at: None,
            abandoned: false,
        };
        let destination = u.next_hop.clone();
        c.invite_tx = Some(id);
        let key = TxKey {
            branch: branch.into(),
            kind: TxKind::Invite,
        };
        self.client_index.insert(key.clone(), id);
        self.txs.insert(
            id,
            Tx {
                machine: TxMachine::Ict(Box::new(ict)),
                destination,
                key,
                server: false,
                call: Some(call_id),
                scheduled: None,
            },
        );
        self.drain_tx(now, id);
    }

    /// Sends the CANCEL of the call's current INVITE (§9.1).
    fn send_cancel(&mut self, now: Instant, call_id: u64) {
        let Some(tx_id) = self.calls.get(&call_id).and_then(|c| c.invite_tx) else {
            return;
        };
        self.cancel_invite_tx(now, tx_id);
    }

    /// CANCELs the INVITE of client transaction `tx_id` once, if it is still
    /// waiting for its final after a provisional (§9.1), and gives it 64·T1
    /// to end.
    fn cancel_invite_tx(&mut self, now: Instant, tx_id: u64) {
        let give_up = now + self.cfg.timers.t1 * 64;
        let Some(tx) = self.txs.get_mut(&tx_id) else {
            return;
        };
        let TxMachine::Ict(ict) = &mut tx.machine else {
            return;
        };
        if ict.cancel_sent || ict.machine.state() != IctState::Proceeding {
            return;
        }
        ict.cancel_sent = true;
        ict.abandon_at = Some(give_up);
        // §9.1: the CANCEL has its own transaction, with the INVITE's
        // branch, to the INVITE's destination.
        let bytes = ict.cancel.clone();
        let destination = tx.destination.clone();
        let branch = tx.key.branch.clone();
        let call = tx.call;
        self.schedule(Owner::Tx(tx_id));
        self.start_nict(now, call, Method::Cancel, bytes, destination, &branch);
    }

    /// A response the INVITE transaction `tx_id` passed up.
    fn invite_response(
        &mut self,
        now: Instant,
        tx_id: u64,
        call: Option<u64>,
        resp: &Response,
        source: Flow,
    ) {
        match resp.status {
            100..=199 => {
                if let Some(call_id) = call {
                    self.uac_provisional(now, tx_id, call_id, resp, source);
                }
            }
            200..=299 => self.uac_success(now, tx_id, call, resp, source),
            _ => {
                if let Some(call_id) = call {
                    self.uac_failure(now, tx_id, call_id, resp);
                }
            }
        }
    }

    fn uac_provisional(
        &mut self,
        now: Instant,
        tx_id: u64,
        call_id: u64,
        resp: &Response,
        source: Flow,
    ) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        if c.invite_tx != Some(tx_id) || c.state != CallState::Inviting {
            return;
        }
        let Some(u) = c.uac.as_deref_mut() else {
            return;
        };
        c.flow = source;
        let step = u.state.step(UacInput::Provisional);
        // §12.1.2: a provisional with a To-tag creates the early dialog; we
        // keep the first one (forks: see the module doc).
        let ours = match resp.headers.to.tag.as_deref() {
            None => false,
            Some(_) if c.dialog.state() == DialogState::Pending => {
                // Cannot fail: the response has a To-tag.
                let created = c.dialog.establish_uac(resp).is_ok();
                if created {
                    self.dialogs.insert(c.dialog.id().clone(), call_id);
                }
                created
            }
            Some(tag) => *c.dialog.id().remote_tag == *tag,
        };
        // RFC 3262 §4: a reliable provisional (Require: 100rel, RSeq) gets a
        // PRACK; in order only (RSeq one higher than the last), and a
        // retransmission (same RSeq) is not a new response.
        let rseq = resp.headers.get(HeaderName::RSeq).and_then(parse_rseq);
        let reliable = ours && resp.headers.has_token(HeaderName::Require, "100rel");
        let mut report = step == UacStep::Report;
        let mut prack = None;
        if let (true, Some(rseq)) = (reliable, rseq) {
            match u.rseq {
                None => prack = Some(rseq),
                Some(last) if rseq == last.wrapping_add(1) => prack = Some(rseq),
                Some(last) if rseq == last => {
                    report = false;
                    // Our PRACK may be lost: resend the same request while its
                    // transaction waits (the far end's NIST absorbs doubles).
                    if let Some(p) = &u.prack
                        && let Some(tx) = self.txs.get(&p.tx)
                        && let TxMachine::Nict(m) = &tx.machine
                        && matches!(m.state(), NictState::Trying | NictState::Proceeding)
                    {
                        self.transmits.push_back(Transmit {
                            destination: p.destination.clone(),
                            data: p.bytes.clone(),
                        });
                    }
                }
                Some(last) => {
                    // §4: not PRACKed and not processed further.
                    debug!(rseq, last, "out-of-order reliable provisional ignored");
                    report = false;
                }
            }
        }
        if let Some(rseq) = prack {
            u.rseq = Some(rseq);
            self.send_prack(now, call_id, rseq, resp.headers.cseq.seq);
        }
        match step {
            UacStep::SendCancel => self.send_cancel(now, call_id),
            UacStep::Report
            | UacStep::Quiet
            | UacStep::Answer
            | UacStep::AckAndBye
            | UacStep::Challenge
            | UacStep::Fail
            | UacStep::Cancelled => {}
        }
        if report {
            let sdp = (ours && resp.headers.content_type_is("application/sdp"))
                .then(|| resp.body.clone())
                .filter(|b| !b.is_empty());
            self.events.push_back(Event::Progress {
                call: CallKey(call_id),
                status: resp.status,
                sdp,
                reliable: prack.is_some(),
            });
        }
    }

    fn send_prack(&mut self, now: Instant, call_id: u64, rseq: u32, invite_seq: u32) {
        let branch = self.new_branch();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        // RFC 3262 §7.2: RAck = response-num CSeq-num Method.
        let rack = format!("{rseq} {invite_seq} INVITE");
        let out = c
            .dialog
            .request(Method::Prack, &me, &branch, &[("RAck", &rack)], None);
        let destination = destination_for(&out.next_hop, c.flow);
        let tx = self.start_nict(
            now,
            Some(call_id),
            Method::Prack,
            out.bytes.clone(),
            destination.clone(),
            &branch,
        );
        if let Some(u) = self
            .calls
            .get_mut(&call_id)
            .and_then(|c| c.uac.as_deref_mut())
        {
            u.prack = Some(SentPrack {
                tx,
                bytes: out.bytes,
                destination,
            });
        }
    }

    fn uac_success(
        &mut self,
        now: Instant,
        tx_id: u64,
        call: Option<u64>,
        resp: &Response,
        source: Flow,
    ) {
        let tag: Box<str> = resp.headers.to.tag.clone().unwrap_or_default();
        // §13.2.2.4: every retransmission of a 2xx gets the same ACK.
        if let Some(tx) = self.txs.get(&tx_id)
            && let TxMachine::Ict(ict) = &tx.machine
            && let Some((_, data, destination)) = ict.acks.iter().find(|(t, _, _)| *t == tag)
        {
            self.transmits.push_back(Transmit {
                destination: destination.clone(),
                data: data.clone(),
            });
            return;
        }
        let ack_branch = self.new_branch();
        let wanted = call.and_then(|id| self.calls.get_mut(&id)).filter(|c| {
            c.invite_tx == Some(tx_id) && c.state == CallState::Inviting && c.uac.is_some()
        });
        let Some(c) = wanted else {
            self.ack_and_bye_unwanted(now, tx_id, resp, source, ack_branch);
            return;
        };
        let call_id = call.expect("a wanted 2xx has its call");
        let u = c.uac.as_deref_mut().expect("checked above");
        let step = u.state.step(UacInput::Success);
        let invite_seq = u.cseq;
        c.flow = source;
        // §13.2.2.4: the early dialog of the same tag is confirmed and its
        // route set recomputed from the 2xx; another fork's 2xx wins over an
        // early dialog (the first 2xx makes the call).
        if self.dialogs.get(c.dialog.id()) == Some(&call_id) {
            self.dialogs.remove(c.dialog.id());
        }
        if let Err(e) = c.dialog.establish_uac(resp) {
            debug!(error = %e, "2xx without To-tag; ACKing it as is");
            c.dialog.confirm();
        }
        self.dialogs.insert(c.dialog.id().clone(), call_id);
        c.state = CallState::Confirmed;
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        let ack = c.dialog.ack(invite_seq, &me, &ack_branch);
        let destination = destination_for(&ack.next_hop, c.flow);
        self.send_2xx_ack(tx_id, tag, ack.bytes, destination);
        match step {
            UacStep::Answer => self.events.push_back(Event::Answered {
                call: CallKey(call_id),
                sdp: resp.body.clone(),
            }),
            // §15: the 2xx crossed our CANCEL; the session is not wanted.
            UacStep::AckAndBye => self.send_bye(now, call_id, EndReason::LocalCancel),
            UacStep::Report
            | UacStep::Quiet
            | UacStep::SendCancel
            | UacStep::Challenge
            | UacStep::Fail
            | UacStep::Cancelled => {}
        }
        self.drain_call(now, call_id);
    }

    /// Sends the ACK for a 2xx and keeps it for the 2xx's retransmissions.
    fn send_2xx_ack(&mut self, tx_id: u64, tag: Box<str>, data: Bytes, destination: Destination) {
        self.transmits.push_back(Transmit {
            destination: destination.clone(),
            data: data.clone(),
        });
        if let Some(tx) = self.txs.get_mut(&tx_id)
            && let TxMachine::Ict(ict) = &mut tx.machine
        {
            ict.acks.push((tag, data, destination));
        }
    }

    /// A 2xx nobody wants (another fork once the call has its dialog, or a
    /// call that is over): ACK it so the far end stops retransmitting, then
    /// end that dialog with BYE (§13.2.2.4).
    fn ack_and_bye_unwanted(
        &mut self,
        now: Instant,
        tx_id: u64,
        resp: &Response,
        source: Flow,
        ack_branch: String,
    ) {
        let Ok(mut dialog) = Dialog::from_uac_response(resp) else {
            debug!(status = resp.status, "untagged 2xx from a fork dropped");
            return;
        };
        let tag: Box<str> = dialog.id().remote_tag.clone();
        debug!(call_id = %dialog.id().call_id, %tag, "unwanted 2xx: ACK and BYE");
        let contact = self.contact_uri(source.transport);
        let me = local_identity(&self.cfg, source.transport, &contact);
        let ack = dialog.ack(resp.headers.cseq.seq, &me, &ack_branch);
        let destination = destination_for(&ack.next_hop, source);
        self.send_2xx_ack(tx_id, tag, ack.bytes, destination);
        let bye_branch = self.new_branch();
        let bye = dialog.request(Method::Bye, &me, &bye_branch, &[], None);
        let destination = destination_for(&bye.next_hop, source);
        self.start_nict(now, None, Method::Bye, bye.bytes, destination, &bye_branch);
    }

    fn uac_failure(&mut self, now: Instant, tx_id: u64, call_id: u64, resp: &Response) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        if c.invite_tx != Some(tx_id) || c.state != CallState::Inviting {
            return;
        }
        let Some(u) = c.uac.as_deref_mut() else {
            return;
        };
        let step = u.state.step(UacInput::Failure(resp.status));
        match step {
            UacStep::Challenge if self.answer_challenge(now, call_id, resp) => {}
            UacStep::Challenge | UacStep::Fail => {
                let retry_after = resp
                    .headers
                    .get(HeaderName::RetryAfter)
                    .and_then(parse_retry_after);
                self.finish_call(
                    now,
                    call_id,
                    Event::Failed {
                        call: CallKey(call_id),
                        status: resp.status,
                        reason: resp.reason.clone(),
                        retry_after,
                    },
                );
            }
            UacStep::Cancelled => self.end_call(now, call_id, EndReason::LocalCancel),
            UacStep::Report
            | UacStep::Quiet
            | UacStep::SendCancel
            | UacStep::Answer
            | UacStep::AckAndBye => {}
        }
    }

    /// RFC 3261 §22.2: answers a 401/407 with a new INVITE carrying
    /// credentials — same Call-ID, From-tag and To, CSeq + 1, new branch.
    /// False when there is no answer (no credentials, the Authenticator
    /// declines, or the same challenge again: wrong credentials).
    fn answer_challenge(&mut self, now: Instant, call_id: u64, resp: &Response) -> bool {
        let proxy = resp.status == 407;
        let name = if proxy {
            HeaderName::ProxyAuthenticate
        } else {
            HeaderName::WwwAuthenticate
        };
        let Some(c) = self.calls.get_mut(&call_id) else {
            return false;
        };
        let Some(u) = c.uac.as_deref_mut() else {
            return false;
        };
        // Whole field values: a challenge holds commas.
        let challenges: Vec<&str> = resp
            .headers
            .fields()
            .iter()
            .filter(|f| f.name == name)
            .map(|f| &*f.value)
            .collect();
        let stale = challenges.iter().any(|ch| is_stale(ch));
        if !u.may_answer(proxy, stale) {
            debug!(status = resp.status, "challenge not answered");
            return false;
        }
        let Some(auth) = u.auth.as_mut() else {
            return false;
        };
        let uri = &u.template.request_uri;
        let Some(value) = challenges
            .iter()
            .find_map(|ch| auth.authorize(ch, &Method::Invite, uri, proxy))
        else {
            debug!(status = resp.status, "no credentials for this challenge");
            return false;
        };
        u.set_credentials(proxy, value);
        u.cseq = u.cseq.wrapping_add(1);
        u.rseq = None;
        u.prack = None;
        // The new INVITE starts afresh: no early dialog from the last one.
        if self.dialogs.get(c.dialog.id()) == Some(&call_id) {
            self.dialogs.remove(c.dialog.id());
        }
        let t = &u.template;
        c.dialog = Dialog::new_uac(
            t.call_id.clone(),
            &t.from,
            &t.from_tag,
            &t.to,
            &t.request_uri,
            u.cseq,
        );
        self.send_invite(now, call_id);
        true
    }

    // -----------------------------------------------------------------------
    // calls

    fn call_timeout(&mut self, now: Instant, call_id: u64) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        if let Some(aw) = &mut c.ack_wait {
            aw.handle_timeout(now);
        }
        let action = c.session_timer.as_mut().and_then(|t| t.handle_timeout(now));
        match action {
            Some(TimerAction::Expired) => {
                debug!(call_id = %c.dialog.id().call_id, "session expired without refresh");
                self.send_bye(now, call_id, EndReason::SessionExpired);
            }
            Some(TimerAction::Refresh) => self.send_refresh(now, call_id),
            None => {}
        }
        self.drain_call(now, call_id);
    }

    fn send_refresh(&mut self, now: Instant, call_id: u64) {
        // RFC 4028 §7.4 / §9: as refresher we send UPDATE without a body
        // (RFC 3311 allows it and the session is unchanged).
        let branch = self.new_branch();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(n) = c.session else { return };
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        let se = n.header_value();
        let out = c.dialog.request(
            Method::Update,
            &me,
            &branch,
            &[("Session-Expires", &se), ("Supported", SUPPORTED)],
            None,
        );
        c.session_timer = Some(SessionTimer::start(now, n));
        let flow = c.flow;
        self.start_client_tx(
            now,
            call_id,
            Method::Update,
            out.bytes,
            &out.next_hop,
            &branch,
            flow,
        );
    }

    fn send_bye(&mut self, now: Instant, call_id: u64, reason: EndReason) {
        let branch = self.new_branch();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        if c.state == CallState::Ending {
            return;
        }
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        let out = c.dialog.request(Method::Bye, &me, &branch, &[], None);
        c.state = CallState::Ending;
        c.end_reason = Some(reason);
        c.ack_wait = None;
        c.session_timer = None;
        let flow = c.flow;
        let tx_id = self.start_client_tx(
            now,
            call_id,
            Method::Bye,
            out.bytes,
            &out.next_hop,
            &branch,
            flow,
        );
        if let Some(c) = self.calls.get_mut(&call_id) {
            c.bye_tx = Some(tx_id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_client_tx(
        &mut self,
        now: Instant,
        call_id: u64,
        method: Method,
        bytes: Bytes,
        next_hop: &SipUri,
        branch: &str,
        flow: Flow,
    ) -> u64 {
        let destination = destination_for(next_hop, flow);
        self.start_nict(now, Some(call_id), method, bytes, destination, branch)
    }

    /// Starts a non-INVITE client transaction sending `bytes` to `destination`.
    fn start_nict(
        &mut self,
        now: Instant,
        call: Option<u64>,
        method: Method,
        bytes: Bytes,
        destination: Destination,
        branch: &str,
    ) -> u64 {
        let reliability = reliability_of(&destination);
        let id = self.alloc_id();
        let key = TxKey {
            branch: branch.into(),
            kind: TxKind::of(&method),
        };
        self.client_index.insert(key.clone(), id);
        self.txs.insert(
            id,
            Tx {
                machine: TxMachine::Nict(NonInviteClient::new(
                    now,
                    self.cfg.timers,
                    reliability,
                    bytes,
                )),
                destination,
                key,
                server: false,
                call,
                scheduled: None,
            },
        );
        self.drain_tx(now, id);
        id
    }

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
        let Some(c) = self.calls.remove(&call_id) else {
            return;
        };
        if self.dialogs.get(c.dialog.id()) == Some(&call_id) {
            self.dialogs.remove(c.dialog.id());
        }
        if c.state == CallState::Inviting
            && let Some(tx_id) = c.invite_tx
        {
            // An outbound call ended before its final (the far end's BYE
            // in an early dialog): the INVITE is cancelled, so its
            // transaction ends too (§15: the early dialog is over).
            self.cancel_invite_tx(now, tx_id);
        }
        if let Some(reoffer) = c.reoffer {
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

    fn drain_call(&mut self, now: Instant, call_id: u64) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let destination = response_destination(c.flow, &c.dialog);
        let mut no_ack = false;
        if let Some(aw) = &mut c.ack_wait {
            while let Some(data) = aw.poll_transmit() {
                self.transmits.push_back(Transmit {
                    destination: destination.clone(),
                    data,
                });
            }
            while let Some(ev) = aw.poll_event() {
                if ev == TuEvent::NoAck {
                    no_ack = true;
                }
            }
            if aw.is_terminated() {
                c.ack_wait = None;
            }
        }
        if no_ack && c.state == CallState::Answered {
            // §13.3.1.4: no ACK within 64·T1 → confirm and end with BYE.
            debug!(call_id = %c.dialog.id().call_id, "no ACK for our 2xx");
            c.state = CallState::Confirmed;
            self.send_bye(now, call_id, EndReason::NoAck);
        }
        self.schedule(Owner::Call(call_id));
    }

    // -----------------------------------------------------------------------
    // transactions

    fn insert_server_tx(
        &mut self,
        id: u64,
        key: TxKey,
        machine: TxMachine,
        source: Flow,
        call: Option<u64>,
    ) {
        self.server_index.insert(key.clone(), id);
        self.txs.insert(
            id,
            Tx {
                machine,
                destination: flow_destination(source),
                key,
                server: true,
                call,
                scheduled: None,
            },
        );
    }

    fn send_server_response(&mut self, now: Instant, tx_id: u64, status: u16, bytes: Bytes) {
        let Some(tx) = self.txs.get_mut(&tx_id) else {
            return;
        };
        let result = match &mut tx.machine {
            TxMachine::Ist(ist) => ist.send_response(now, status, bytes),
            TxMachine::Nist(nist) => nist.send_response(now, status, bytes),
            TxMachine::Nict(_) | TxMachine::Ict(_) => Ok(()),
        };
        if let Err(e) = result {
            debug!(error = %e, status, "transaction refused a response");
        }
        self.drain_tx(now, tx_id);
    }

    fn send_ist_final(&mut self, now: Instant, tx_id: u64, status: u16, bytes: Bytes) {
        self.send_server_response(now, tx_id, status, bytes);
    }

    fn respond_in_new_nist(
        &mut self,
        now: Instant,
        req: &Request,
        source: Flow,
        status: u16,
        extra: &[(&str, &str)],
    ) {
        let tag = stateless_tag_of(req);
        self.respond_in_new_nist_tagged(now, req, source, status, extra, &tag);
    }

    fn respond_in_new_nist_tagged(
        &mut self,
        now: Instant,
        req: &Request,
        source: Flow,
        status: u16,
        extra: &[(&str, &str)],
        tag: &str,
    ) {
        let key = TxKey::of_request(req);
        let id = self.alloc_id();
        let machine = TxMachine::Nist(NonInviteServer::new(
            self.cfg.timers,
            source.transport.reliability(),
        ));
        self.insert_server_tx(id, key, machine, source, None);
        let mut b = req
            .response(status, Some(tag))
            .header("Server", &self.cfg.user_agent);
        for (name, value) in extra {
            b = b.header(name, value);
        }
        self.send_server_response(now, id, status, b.finish(None, b""));
    }

    fn respond_in_new_ist(
        &mut self,
        now: Instant,
        req: &Request,
        source: Flow,
        key: TxKey,
        status: u16,
        extra: &[(&str, &str)],
    ) {
        // A final response to an INVITE needs its IST so the ACK is absorbed
        // and the response retransmitted (§17.2.1).
        let id = self.alloc_id();
        let machine = TxMachine::Ist(InviteServer::new(
            self.cfg.timers,
            source.transport.reliability(),
        ));
        self.insert_server_tx(id, key, machine, source, None);
        let tag = stateless_tag_of(req);
        let mut b = req
            .response(status, Some(&tag))
            .header("Server", &self.cfg.user_agent);
        for (name, value) in extra {
            b = b.header(name, value);
        }
        self.send_server_response(now, id, status, b.finish(None, b""));
    }

    /// A response without any transaction: for requests that cannot create
    /// one (CANCEL or in-dialog request matching nothing).
    fn respond_stateless(
        &mut self,
        _now: Instant,
        req: &Request,
        source: Flow,
        status: u16,
        extra: &[(&str, &str)],
    ) {
        let tag = stateless_tag_of(req);
        let mut b = req
            .response(status, Some(&tag))
            .header("Server", &self.cfg.user_agent);
        for (name, value) in extra {
            b = b.header(name, value);
        }
        self.push_response(source, b.finish(None, b""));
    }

    fn drain_tx(&mut self, now: Instant, id: u64) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        // 408 for a timeout, 503 for a transport error (§8.1.3.1).
        let mut failure = None;
        loop {
            let data = match &mut tx.machine {
                TxMachine::Ist(m) => m.poll_transmit(),
                TxMachine::Nist(m) => m.poll_transmit(),
                TxMachine::Nict(m) => m.poll_transmit(),
                TxMachine::Ict(m) => m.machine.poll_transmit(),
            };
            let Some(data) = data else { break };
            self.transmits.push_back(Transmit {
                destination: tx.destination.clone(),
                data,
            });
        }
        loop {
            let ev = match &mut tx.machine {
                TxMachine::Ist(m) => m.poll_event(),
                TxMachine::Nist(m) => m.poll_event(),
                TxMachine::Nict(m) => m.poll_event(),
                TxMachine::Ict(m) => m.machine.poll_event(),
            };
            let Some(ev) = ev else { break };
            match ev {
                TuEvent::Timeout(_) => failure = Some(408),
                TuEvent::TransportError => failure = Some(503),
                TuEvent::NoAck | TuEvent::Terminated => {}
            }
        }
        let abandoned = matches!(&tx.machine, TxMachine::Ict(m) if m.abandoned);
        let terminated = abandoned
            || match &tx.machine {
                TxMachine::Ist(m) => m.is_terminated(),
                TxMachine::Nist(m) => m.is_terminated(),
                TxMachine::Nict(m) => m.is_terminated(),
                TxMachine::Ict(m) => m.machine.is_terminated(),
            };
        let call = tx.call;
        let is_client = !tx.server;
        let is_invite_client = matches!(tx.machine, TxMachine::Ict(_));
        let kind = tx.key.kind.clone();
        // Whether this is the INVITE the call still waits on (checked before
        // the removal below forgets it).
        let current_invite = call
            .and_then(|c| self.calls.get(&c))
            .is_some_and(|c| c.invite_tx == Some(id) && c.state == CallState::Inviting);
        if terminated {
            let tx = self.txs.remove(&id).expect("present: looked up above");
            let index = if tx.server {
                &mut self.server_index
            } else {
                &mut self.client_index
            };
            if index.get(&tx.key) == Some(&id) {
                index.remove(&tx.key);
            }
            if let Some(call_id) = call
                && let Some(c) = self.calls.get_mut(&call_id)
                && c.invite_tx == Some(id)
            {
                c.invite_tx = None;
            }
        } else {
            self.schedule(Owner::Tx(id));
        }
        let Some(call_id) = call else { return };
        if is_invite_client {
            if !current_invite {
                return;
            }
            if let Some(status) = failure {
                // Timer B or a transport error: the INVITE failed.
                self.finish_call(
                    now,
                    call_id,
                    Event::Failed {
                        call: CallKey(call_id),
                        status,
                        reason: message::reason_phrase(status).into(),
                        retry_after: None,
                    },
                );
            } else if abandoned {
                // §9.1: no final within 64·T1 of our CANCEL.
                self.end_call(now, call_id, EndReason::LocalCancel);
            }
        } else if is_client && failure.is_some() {
            // Our BYE timed out (Timer F) or failed: the call is over anyway.
            self.client_final(now, call_id, id, &kind, None);
        }
    }

    fn schedule(&mut self, owner: Owner) {
        let (deadline, scheduled) = match owner {
            Owner::Tx(id) => match self.txs.get_mut(&id) {
                Some(tx) => (tx.poll_timeout(), &mut tx.scheduled),
                None => return,
            },
            Owner::Call(id) => match self.calls.get_mut(&id) {
                Some(c) => (c.poll_timeout(), &mut c.scheduled),
                None => return,
            },
        };
        if deadline != *scheduled {
            *scheduled = deadline;
            if let Some(at) = deadline {
                self.heap.push(Reverse((at, owner)));
            }
        }
    }

    fn owner_deadline(&self, owner: Owner) -> Option<Instant> {
        match owner {
            Owner::Tx(id) => self.txs.get(&id).and_then(|t| t.scheduled),
            Owner::Call(id) => self.calls.get(&id).and_then(|c| c.scheduled),
        }
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
                self.push_response(source, bytes);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Tx(u64),
    Call(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// INVITE received, waiting for the application's answer.
    Offered,
    /// Outbound: our INVITE has no final response yet (see
    /// [`UacState`] for the details).
    Inviting,
    /// 2xx sent, waiting for the ACK.
    Answered,
    /// ACK received.
    Confirmed,
    /// Our BYE is out.
    Ending,
}

struct Call {
    dialog: Dialog,
    flow: Flow,
    contact: Box<str>,
    state: CallState,
    invite: Option<Box<Request>>,
    invite_tx: Option<u64>,
    ack_wait: Option<AckWait>,
    /// The CSeq number of the INVITE whose 2xx `ack_wait` waits for.
    ack_cseq: u32,
    session: Option<Negotiated>,
    session_timer: Option<SessionTimer>,
    bye_after_ack: Option<EndReason>,
    bye_tx: Option<u64>,
    end_reason: Option<EndReason>,
    reoffer: Option<Reoffer>,
    /// The UAC part of an outbound call; `None` for incoming calls.
    uac: Option<Box<crate::sip::uac::Outbound>>,
    scheduled: Option<Instant>,
}

impl Call {
    fn poll_timeout(&self) -> Option<Instant> {
        let a = self.ack_wait.as_ref().and_then(AckWait::poll_timeout);
        let s = self
            .session_timer
            .as_ref()
            .and_then(SessionTimer::poll_timeout);
        match (a, s) {
            (Some(a), Some(s)) => Some(a.min(s)),
            (a, s) => a.or(s),
        }
    }
}

struct Reoffer {
    tx: u64,
    request: Box<Request>,
    session: Option<Negotiated>,
}

enum TxMachine {
    Ist(InviteServer),
    Nist(NonInviteServer),
    Nict(NonInviteClient),
    Ict(Box<IctTx>),
}

struct Tx {
    machine: TxMachine,
    destination: Destination,
    key: TxKey,
    server: bool,
    call: Option<u64>,
    scheduled: Option<Instant>,
}

impl Tx {
    fn poll_timeout(&self) -> Option<Instant> {
        match &self.machine {
            TxMachine::Ist(m) => m.poll_timeout(),
            TxMachine::Nist(m) => m.poll_timeout(),
            TxMachine::Nict(m) => m.poll_timeout(),
            TxMachine::Ict(m) if m.abandoned => None,
            TxMachine::Ict(m) => match (m.machine.poll_timeout(), m.waiting_until()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match &mut self.machine {
            TxMachine::Ist(m) => m.handle_timeout(now),
            TxMachine::Nist(m) => m.handle_timeout(now),
            TxMachine::Nict(m) => m.handle_timeout(now),
            TxMachine::Ict(m) => {
                m.machine.handle_timeout(now);
                if m.waiting_until().is_some_and(|at| at <= now) {
                    m.abandoned = true;
                }
            }
        }
    }
}

/// Transaction matching key (RFC 3261 §17.2.3): the branch and the method,
/// with ACK matching its INVITE. For pre-3261 branches the key falls back to
/// Call-ID, CSeq number, From-tag and top Via (§17.2.3's older rules, close
/// enough for the peers that still send them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxKey {
    branch: Box<str>,
    kind: TxKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TxKind {
    Invite,
    Cancel,
    Other(Method),
}

impl TxKind {
    fn of(method: &Method) -> TxKind {
        match method {
            Method::Invite | Method::Ack => TxKind::Invite,
            Method::Cancel => TxKind::Cancel,
            other => TxKind::Other(other.clone()),
        }
    }
}

impl TxKey {
    fn of_request(req: &Request) -> TxKey {
        TxKey::of_request_as(req, TxKind::of(&req.method))
    }

    fn of_request_as(req: &Request, kind: TxKind) -> TxKey {
        let via = req.headers.top_via();
        let branch: Box<str> = if via.is_rfc3261_branch() {
            // §17.2.3: branch plus sent-by.
            let b = via.branch.as_deref().unwrap_or("");
            format!("{b}|{}:{}", via.host, via.port.unwrap_or(0)).into()
        } else {
            let h = &req.headers;
            format!(
                "2543|{}|{}|{}|{}",
                h.call_id,
                h.cseq.seq,
                h.from.tag.as_deref().unwrap_or(""),
                via.raw
            )
            .into()
        };
        TxKey { branch, kind }
    }

    fn of_response(resp: &Response) -> TxKey {
        TxKey {
            branch: resp.headers.top_via().branch.clone().unwrap_or_default(),
            kind: TxKind::of(&resp.headers.cseq.method),
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

/// Where responses go (§18.2.2 with RFC 3581): back to the source for UDP
/// (the address the request came from, which is what `received`/`rport`
/// describe), and on the same connection for TCP.
fn flow_destination(flow: Flow) -> Destination {
    match flow.transport {
        FlowTransport::Udp => Destination::Udp(flow.remote),
        FlowTransport::Tcp(conn) => Destination::Tcp {
            conn: Some(conn),
            remote: flow.remote,
        },
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
/// literal (reusing the call's TCP connection when the next hop is the peer
/// it came from), else a name to resolve.
fn destination_for(next_hop: &SipUri, flow: Flow) -> Destination {
    let tcp = match next_hop.transport.as_deref() {
        Some("tcp") => true,
        Some(_) => false,
        None => matches!(flow.transport, FlowTransport::Tcp(_)),
    };
    let host = next_hop.maddr.as_deref().unwrap_or(&next_hop.host);
    let port = next_hop.port.unwrap_or(5060);
    match host.parse::<IpAddr>() {
        Ok(ip) => {
            let remote = SocketAddr::new(ip, port);
            if tcp {
                let conn = match flow.transport {
                    FlowTransport::Tcp(c) if flow.remote == remote => Some(c),
                    _ => None,
                };
                Destination::Tcp { conn, remote }
            } else {
                Destination::Udp(remote)
            }
        }
        Err(_) => Destination::Resolve {
            host: host.into(),
            port,
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
