//! What both roles share once a call's INVITE has its 2xx: the confirmed
//! dialog's offer/answer state (RFC 3264, RFC 6337) with the ACK of our 2xx
//! (RFC 3261 §13.3.1.4), re-INVITE and UPDATE from the peer (§14.2, RFC
//! 3311), the session timer (RFC 4028) and the BYE that ends the dialog
//! (§15).

use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, trace};

use super::leg::LegState;
use super::tx::{TxKey, TxMachine};
use super::uas::UasState;
use super::{
    CallError, CallKey, EndReason, Endpoint, Event, Flow, Owner, Reason, Role, SUPPORTED, Transmit,
    allow_for, local_identity, reliability_of, response_destination,
};
use crate::sip::dialog::DialogId;
use crate::sip::message::{HeaderName, Method, Request, Response};
use crate::sip::session_timer::{Negotiated, SessionTimer, TimerAction};
use crate::sip::transaction::{AckWait, InviteClient, InviteServer, NonInviteServer, TuEvent};
use crate::sip::uac::{Authenticator, IctTx};

/// A confirmed dialog (RFC 3261 §12), in either role: where its
/// offer/answer exchange stands and its session timer.
pub(super) struct Session {
    pub(super) offer_answer: OfferAnswer,
    /// RFC 4028: set when the last session-creating or refreshing
    /// transaction negotiated a timer (restarted by every refresh, §10).
    pub(super) timer: Option<SessionTimer>,
    /// The peer lists UPDATE in its Allow (RFC 3311 §5.1; RFC 4028 §7.4):
    /// our refreshes are UPDATEs; otherwise — or after a 405/501 to one —
    /// re-INVITEs offering our current session.
    pub(super) peer_allows_update: bool,
    /// Our current SDP in this dialog (the last we sent), offered again by
    /// a re-INVITE refresh; empty when none is known.
    pub(super) local_sdp: Bytes,
    /// The client transaction of our re-INVITE refresh, while it runs.
    pub(super) refresh_tx: Option<u64>,
    /// On an outbound leg, the INVITE's [`Authenticator`]: a challenge to
    /// our BYE is answered with it (RFC 3261 §22.2).
    pub(super) auth: Option<Box<dyn Authenticator>>,
    /// The INVITE's credentials, which its ACK repeats (§13.2.2.4).
    pub(super) invite_credentials: Vec<(&'static str, String)>,
    /// Challenges to the current refresh answered so far, by kind: [401,
    /// 407] (each once per refresh: the same one again means the
    /// credentials are wrong).
    pub(super) refresh_challenged: [bool; 2],
}

/// The offer/answer state of a confirmed dialog (RFC 3264 §4; RFC 6337
/// §2–§3 for which transaction carries what; RFC 3261 §14.2 for glare).
///
/// ```text
///            re-INVITE or UPDATE from the peer: Event::Reoffer
///   +--------+ ───────────────────────────────────────────▶ +-------------+
///   | Stable |                                              | TheyOffered |
///   +--------+ ◀───── the answer to an UPDATE, or any ───── +-------------+
///     ▲   ▲           failure (answer_reoffer /                  │
///     │   │           reject_reoffer)                            │ answer_reoffer() to a
///     │   │                                                      │ re-INVITE: 2xx with our
///     │   │ ACK (Event::Confirmed)                               │ answer (or our offer,
///     │   │                                                      v when it had none)
///     │   │                                              +-------------+
///     │   +───────────────────────────────────────────── | AwaitingAck | ◀── the UAS's answer()
///     │          no ACK within 64·T1: BYE (§13.3.1.4)    +-------------+    to the first INVITE
///     +──────────────────────────────────────────────────────────┘
///
///   A new offer while TheyOffered or AwaitingAck: 491 with Retry-After
///   (RFC 3261 §14.2; RFC 3311 §5.2). Our own refresh is an UPDATE without
///   SDP (RFC 4028 §9): it leaves the state as it is.
/// ```
pub(super) enum OfferAnswer {
    /// No offer outstanding.
    Stable,
    /// The peer's re-INVITE or UPDATE waits for the application: its offer
    /// is owed an answer — or, for a re-INVITE without SDP, our offer is
    /// owed (the answer then comes in the ACK).
    TheyOffered(Reoffer),
    /// Our 2xx to an INVITE is out and retransmitted until its ACK
    /// (§13.3.1.4). When the 2xx carried our offer the ACK carries the
    /// answer (RFC 3264 §4, RFC 6337 §3.1).
    AwaitingAck {
        /// The 2xx's retransmission (boxed: the largest state by far).
        wait: Box<AckWait>,
        /// The CSeq number of that INVITE: an ACK for an earlier 2xx does
        /// not count (§13.2.2.4).
        cseq: u32,
        /// Our 2xx held the offer; the answer is due in the ACK.
        we_offered: bool,
        /// `hangup()` came first: BYE as soon as the ACK is in (§15).
        bye_after_ack: Option<Reason>,
    },
}

/// A re-INVITE or UPDATE from the peer that the application answers.
pub(super) struct Reoffer {
    /// Its server transaction.
    pub(super) tx: u64,
    pub(super) request: Box<Request>,
    /// RFC 4028 as negotiated from it, for our 2xx.
    pub(super) session: Option<Negotiated>,
}

/// A dialog our BYE is ending (§15.1.1).
pub(super) struct Ending {
    /// The BYE's client transaction: its final (or Timer F) ends the call.
    pub(super) bye_tx: u64,
    pub(super) reason: EndReason,
    /// A re-INVITE/UPDATE of the peer still owed an answer; the
    /// application may give it, else it gets 487 when the call ends
    /// (§15.1.2).
    pub(super) reoffer: Option<Reoffer>,
    /// The BYE's `Reason` (RFC 3326), repeated when it is sent again.
    pub(super) cause: Reason,
    /// Answers a 401/407 to the BYE, once per kind ([401, 407]).
    pub(super) auth: Option<Box<dyn Authenticator>>,
    pub(super) challenged: [bool; 2],
}

impl Session {
    /// A confirmed dialog with a peer whose message had the header fields
    /// `peer` (its Allow counts), where our SDP is `local_sdp`.
    pub(super) fn new(
        offer_answer: OfferAnswer,
        timer: Option<SessionTimer>,
        peer: &crate::sip::message::Headers,
        local_sdp: Bytes,
    ) -> Session {
        Session {
            offer_answer,
            timer,
            peer_allows_update: peer_allows_update(peer),
            local_sdp,
            refresh_tx: None,
            auth: None,
            refresh_challenged: [false; 2],
            invite_credentials: Vec::new(),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let a = match &self.offer_answer {
            OfferAnswer::AwaitingAck { wait, .. } => wait.poll_timeout(),
            OfferAnswer::Stable | OfferAnswer::TheyOffered(_) => None,
        };
        let s = self.timer.as_ref().and_then(SessionTimer::poll_timeout);
        match (a, s) {
            (Some(a), Some(s)) => Some(a.min(s)),
            (a, s) => a.or(s),
        }
    }
}

/// Whether a peer's message lists UPDATE in its Allow.
pub(super) fn peer_allows_update(headers: &crate::sip::message::Headers) -> bool {
    headers.has_token(crate::sip::message::HeaderName::Allow, "UPDATE")
}

/// The ACK for a non-2xx final to an in-dialog INVITE, without its To (the
/// transaction adds the response's, §17.1.1.3): the 2xx ACK the dialog
/// builds with the INVITE's branch, less To and Content-Length.
fn non_2xx_ack_head(ack: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(ack);
    let mut head = String::with_capacity(text.len());
    for line in text.split("\r\n") {
        let name = line.split(':').next().unwrap_or("").trim();
        if line.is_empty()
            || name.eq_ignore_ascii_case("To")
            || name.eq_ignore_ascii_case("t")
            || name.eq_ignore_ascii_case("Content-Length")
            || name.eq_ignore_ascii_case("l")
        {
            continue;
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    Bytes::from(head)
}

/// The confirmed dialog of a call in either role, if it has one.
pub(super) fn session_of(role: &mut Role) -> Option<&mut Session> {
    match role {
        Role::Uas(UasState::Confirmed(s)) | Role::Uac(LegState::Confirmed(s)) => Some(s),
        Role::Uas(UasState::Early { .. } | UasState::Terminating(_))
        | Role::Uac(LegState::Inviting { .. } | LegState::Terminating(_)) => None,
    }
}

impl Role {
    /// Why a new offer from the peer (a re-INVITE or UPDATE) cannot be
    /// taken now: the status to refuse it with, and its extra header.
    fn refuses_offer(&self, method: &Method) -> Option<u16> {
        match self {
            Role::Uas(UasState::Confirmed(s)) | Role::Uac(LegState::Confirmed(s)) => {
                match s.offer_answer {
                    OfferAnswer::Stable => None,
                    // RFC 3261 §14.2: an offer while one is pending → 491.
                    OfferAnswer::TheyOffered(_) | OfferAnswer::AwaitingAck { .. } => Some(491),
                }
            }
            // The INVITE's own exchange is not done (§14.2).
            Role::Uas(UasState::Early { .. }) => Some(491),
            // Our INVITE, with its offer, is in progress: a re-INVITE is
            // glare (§14.2); an UPDATE in the early dialog is taken (RFC
            // 3311 §5.1), one at a time.
            Role::Uac(LegState::Inviting { update, .. }) => {
                (*method != Method::Update || update.is_some()).then_some(491)
            }
            Role::Uas(UasState::Terminating(e)) | Role::Uac(LegState::Terminating(e)) => {
                e.reoffer.is_some().then_some(491)
            }
        }
    }

    /// Keeps the peer's offer for the application; `refuses_offer` said
    /// there is room.
    fn hold_reoffer(&mut self, reoffer: Reoffer) {
        match self {
            Role::Uas(UasState::Confirmed(s)) | Role::Uac(LegState::Confirmed(s)) => {
                s.offer_answer = OfferAnswer::TheyOffered(reoffer);
            }
            Role::Uac(LegState::Inviting { update: slot, .. })
            | Role::Uas(UasState::Terminating(Ending { reoffer: slot, .. }))
            | Role::Uac(LegState::Terminating(Ending { reoffer: slot, .. })) => {
                *slot = Some(reoffer);
            }
            // Not reached: `refuses_offer` refuses every offer here.
            Role::Uas(UasState::Early { .. }) => {
                debug!("offer in an early UAS dialog dropped");
            }
        }
    }

    /// Takes the peer's offer waiting for the application, if any.
    pub(super) fn take_reoffer(&mut self) -> Option<Reoffer> {
        match self {
            Role::Uas(UasState::Confirmed(s)) | Role::Uac(LegState::Confirmed(s)) => {
                match std::mem::replace(&mut s.offer_answer, OfferAnswer::Stable) {
                    OfferAnswer::TheyOffered(r) => Some(r),
                    other @ (OfferAnswer::Stable | OfferAnswer::AwaitingAck { .. }) => {
                        s.offer_answer = other;
                        None
                    }
                }
            }
            Role::Uac(LegState::Inviting { update: slot, .. })
            | Role::Uas(UasState::Terminating(Ending { reoffer: slot, .. }))
            | Role::Uac(LegState::Terminating(Ending { reoffer: slot, .. })) => slot.take(),
            Role::Uas(UasState::Early { .. }) => None,
        }
    }

    /// The dialog is being ended by our BYE (either role).
    fn terminate(&mut self, ending: Ending) {
        match self {
            Role::Uas(state) => *state = UasState::Terminating(ending),
            Role::Uac(state) => *state = LegState::Terminating(ending),
        }
    }
}

impl Endpoint {
    pub(super) fn handle_ack(&mut self, now: Instant, req: &Request) {
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
        let mut bye = None;
        if let Some(s) = session_of(&mut c.role) {
            match &mut s.offer_answer {
                OfferAnswer::AwaitingAck {
                    wait,
                    cseq,
                    we_offered,
                    bye_after_ack,
                } => {
                    // §13.2.2.4: the ACK carries the CSeq number of the
                    // INVITE it acknowledges; a late ACK for an earlier 2xx
                    // must not stop the retransmission of the current one.
                    if req.headers.cseq.seq == *cseq && wait.handle_ack() {
                        let answer = req.sdp().unwrap_or_default();
                        if *we_offered && answer.is_empty() {
                            debug!(call_id = %req.headers.call_id, "ACK without the answer to our offer");
                        }
                        bye = *bye_after_ack;
                        s.offer_answer = OfferAnswer::Stable;
                        self.events.push_back(Event::Confirmed {
                            call: CallKey(call_id),
                            body: answer,
                        });
                    }
                }
                OfferAnswer::Stable | OfferAnswer::TheyOffered(_) => {}
            }
        }
        if let Some(reason) = bye {
            self.send_bye(now, call_id, EndReason::LocalHangup, reason);
        }
        self.drain_call(now, call_id);
    }

    /// A re-INVITE or UPDATE from the peer (`c` passed the CSeq check).
    pub(super) fn handle_reoffer(
        &mut self,
        now: Instant,
        call_id: u64,
        req: Request,
        source: Flow,
        key: TxKey,
    ) {
        let Some(c) = self.calls.get(&call_id) else {
            return;
        };
        if let Some(status) = c.role.refuses_offer(&req.method) {
            self.respond_final(now, &req, source, key, status, &[("Retry-After", "1")]);
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
        let sdp = req.sdp().unwrap_or_default();
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
            c.role.hold_reoffer(Reoffer {
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

    /// Answers the peer's pending re-INVITE/UPDATE with `status` (and
    /// `sdp` for a 2xx).
    pub(super) fn finish_reoffer(
        &mut self,
        now: Instant,
        call: CallKey,
        status: u16,
        sdp: Option<&[u8]>,
    ) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        let reoffer = c.role.take_reoffer().ok_or(CallError::WrongState)?;
        let tag = c.dialog.id().local_tag.clone();
        let mut b = reoffer
            .request
            .response(status, Some(&tag))
            .header("Server", &self.cfg.user_agent);
        let success = (200..300).contains(&status);
        if success {
            b = b
                .header_fmt("Contact", format_args!("<{}>", c.contact))
                .header("Allow", allow_for(self.cfg.registrar))
                .header("Supported", SUPPORTED);
            if let Some(n) = reoffer.session {
                b = b.header("Session-Expires", &n.header_value());
                if n.requires_timer() {
                    b = b.header("Require", "timer");
                }
            }
            // A refresh restarts the session timer (RFC 4028 §10); a 2xx
            // without Session-Expires turns it off (§9), so the old one
            // must not fire. (An UPDATE answered in an early dialog sets
            // no timer: none runs before the 2xx.)
            if let Some(s) = session_of(&mut c.role) {
                s.timer = reoffer.session.map(|n| SessionTimer::start(now, n));
                if reoffer
                    .request
                    .headers
                    .get(crate::sip::message::HeaderName::Allow)
                    .is_some()
                {
                    s.peer_allows_update = peer_allows_update(&reoffer.request.headers);
                }
                if let Some(sdp) = sdp.filter(|b| !b.is_empty()) {
                    s.local_sdp = Bytes::copy_from_slice(sdp);
                }
            }
        }
        let bytes = match sdp {
            Some(sdp) if !sdp.is_empty() => b.finish(Some("application/sdp"), sdp),
            _ => b.finish(None, b""),
        };
        let is_invite = reoffer.request.method == Method::Invite;
        if is_invite
            && success
            && let Some(s) = session_of(&mut c.role)
        {
            // A 2xx to a re-INVITE is retransmitted until its ACK (§13.3.1.4).
            s.offer_answer = OfferAnswer::AwaitingAck {
                wait: Box::new(AckWait::new(now, self.cfg.timers, bytes.clone())),
                cseq: reoffer.request.headers.cseq.seq,
                we_offered: !has_offer(&reoffer.request),
                bye_after_ack: None,
            };
        }
        if is_invite && status >= 300 {
            self.send_ist_final(now, reoffer.tx, status, bytes);
        } else {
            self.send_server_response(now, reoffer.tx, status, bytes);
        }
        self.drain_call(now, call.0);
        Ok(())
    }

    pub(super) fn call_timeout(&mut self, now: Instant, call_id: u64) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let action = session_of(&mut c.role).and_then(|s| {
            match &mut s.offer_answer {
                OfferAnswer::AwaitingAck { wait, .. } => wait.handle_timeout(now),
                OfferAnswer::Stable | OfferAnswer::TheyOffered(_) => {}
            }
            s.timer.as_mut().and_then(|t| t.handle_timeout(now))
        });
        match action {
            Some(TimerAction::Expired) => {
                debug!(call_id = %c.dialog.id().call_id, "session expired without refresh");
                self.send_bye(
                    now,
                    call_id,
                    EndReason::SessionExpired,
                    Reason::TIMER_EXPIRY,
                );
            }
            Some(TimerAction::Refresh) => self.send_refresh(now, call_id),
            None => {}
        }
        self.drain_call(now, call_id);
    }

    fn send_refresh(&mut self, now: Instant, call_id: u64) {
        // RFC 4028 §7.4 / §9: as refresher we send UPDATE without a body
        // (RFC 3311 allows it and the session is unchanged).
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(s) = session_of(&mut c.role) else {
            return;
        };
        let Some(n) = s.timer.as_ref().map(SessionTimer::negotiated) else {
            return;
        };
        s.timer = Some(SessionTimer::start(now, n));
        s.refresh_challenged = [false; 2];
        let se = n.refresh_header_value();
        // RFC 4028 §7.4 / RFC 3311 §5.1: UPDATE only to a peer that allows
        // it; otherwise a re-INVITE with our current session (not while
        // another offer is pending, §14.1: then UPDATE is all we have).
        let reinvite = !s.peer_allows_update
            && !s.local_sdp.is_empty()
            && s.refresh_tx.is_none()
            && matches!(s.offer_answer, OfferAnswer::Stable);
        if reinvite {
            self.send_reinvite_refresh(now, call_id, &se, None);
            return;
        }
        self.send_update_refresh(now, call_id, &se, None);
    }

    /// Our session refresh as an UPDATE without a body, with `credentials`
    /// (header name, value) when it answers a challenge.
    fn send_update_refresh(
        &mut self,
        now: Instant,
        call_id: u64,
        se: &str,
        credentials: Option<(&str, &str)>,
    ) {
        let branch = self.new_branch();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        let mut headers = vec![("Session-Expires", se), ("Supported", SUPPORTED)];
        headers.extend(credentials);
        let out = c
            .dialog
            .request(Method::Update, &me, &branch, &headers, None);
        let destination = c.destination(&out.next_hop);
        self.start_nict(
            now,
            Some(call_id),
            Method::Update,
            out.bytes,
            destination,
            &branch,
        );
    }

    /// Our session refresh as a re-INVITE offering the current session
    /// again (RFC 4028 §7.4), in its own INVITE client transaction, with
    /// `credentials` (header name, value) when it answers a challenge.
    fn send_reinvite_refresh(
        &mut self,
        now: Instant,
        call_id: u64,
        se: &str,
        credentials: Option<(&str, &str)>,
    ) {
        let branch = self.new_branch();
        let tx_id = self.alloc_id();
        let allow = allow_for(self.cfg.registrar);
        let timers = self.cfg.timers;
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(s) = session_of(&mut c.role) else {
            return;
        };
        let sdp = s.local_sdp.clone();
        s.refresh_tx = Some(tx_id);
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        let mut headers = vec![
            ("Session-Expires", se),
            ("Supported", SUPPORTED),
            ("Allow", allow),
        ];
        headers.extend(credentials);
        let out = c.dialog.request(
            Method::Invite,
            &me,
            &branch,
            &headers,
            Some(("application/sdp", &sdp)),
        );
        let destination = c.destination(&out.next_hop);
        let ack_head = non_2xx_ack_head(&c.dialog.ack(out.cseq, &me, &branch, &[]).bytes);
        let ict = IctTx {
            machine: InviteClient::new(now, timers, reliability_of(&destination), out.bytes),
            ack_head,
            // Never cancelled: a refresh is answered at once or fails.
            cancel_head: Bytes::new(),
            cancel_sent: true,
            acks: Vec::new(),
            abandon_at: None,
            abandoned: false,
        };
        debug!(call_id = %c.dialog.id().call_id, "session refresh by re-INVITE");
        self.insert_ict(now, call_id, tx_id, branch, ict, destination);
    }

    /// A 2xx to our re-INVITE refresh: ACKed (and the ACK kept for its
    /// retransmissions). False when `tx_id` is not the call's refresh.
    pub(super) fn refresh_answered(
        &mut self,
        tx_id: u64,
        call_id: u64,
        resp: &crate::sip::message::Response,
    ) -> bool {
        let ack_branch = self.new_branch();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return false;
        };
        let Some(s) = session_of(&mut c.role).filter(|s| s.refresh_tx == Some(tx_id)) else {
            return false;
        };
        s.refresh_tx = None;
        s.peer_allows_update |= peer_allows_update(&resp.headers);
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        let ack = c.dialog.ack(resp.headers.cseq.seq, &me, &ack_branch, &[]);
        let destination = c.destination(&ack.next_hop);
        let tag: Box<str> = resp.headers.to.tag.clone().unwrap_or_default();
        self.send_2xx_ack(tx_id, tag, ack.bytes, destination);
        true
    }

    /// Our re-INVITE refresh ended without a 2xx (`None`: no answer, or
    /// the transport failed). 408 and 481 mean the peer is gone (RFC 3261
    /// §12.2.1.2; RFC 4028 §10): BYE. False when `tx_id` is not the call's
    /// refresh.
    /// Whether `tx_id` is the call's re-INVITE refresh.
    pub(super) fn is_refresh(&self, call_id: u64, tx_id: u64) -> bool {
        self.calls.get(&call_id).is_some_and(|c| match &c.role {
            Role::Uas(UasState::Confirmed(s)) | Role::Uac(LegState::Confirmed(s)) => {
                s.refresh_tx == Some(tx_id)
            }
            Role::Uas(_) | Role::Uac(_) => false,
        })
    }

    pub(super) fn refresh_failed(
        &mut self,
        now: Instant,
        call_id: u64,
        tx_id: u64,
        status: Option<u16>,
    ) -> bool {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return false;
        };
        let Some(s) = session_of(&mut c.role).filter(|s| s.refresh_tx == Some(tx_id)) else {
            return false;
        };
        s.refresh_tx = None;
        if matches!(status, None | Some(408 | 481)) {
            debug!(call_id = %c.dialog.id().call_id, ?status, "session refresh failed");
            self.send_bye(
                now,
                call_id,
                EndReason::SessionExpired,
                Reason::TIMER_EXPIRY,
            );
            self.drain_call(now, call_id);
        } else {
            debug!(call_id = %c.dialog.id().call_id, ?status, "session refresh refused; the call goes on");
        }
        true
    }

    /// A 405 or 501 to our UPDATE refresh: the peer does not do UPDATE
    /// after all; refresh at once with a re-INVITE.
    pub(super) fn update_refused(&mut self, now: Instant, call_id: u64) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(s) = session_of(&mut c.role) else {
            return;
        };
        s.peer_allows_update = false;
        let Some(n) = s.timer.as_ref().map(SessionTimer::negotiated) else {
            return;
        };
        if s.local_sdp.is_empty() || s.refresh_tx.is_some() {
            return;
        }
        debug!(call_id = %c.dialog.id().call_id, "UPDATE refused; refreshing with re-INVITE");
        self.send_reinvite_refresh(now, call_id, &n.header_value(), None);
        self.drain_call(now, call_id);
    }

    /// Ends a confirmed dialog with BYE (§15.1.1): Confirmed → Terminating.
    pub(super) fn send_bye(
        &mut self,
        now: Instant,
        call_id: u64,
        reason: EndReason,
        cause: Reason,
    ) {
        let branch = self.new_branch();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        // The session's timers stop here; a pending offer of the peer
        // stays owed an answer.
        let (reoffer, auth) = match session_of(&mut c.role) {
            Some(s) => (
                match std::mem::replace(&mut s.offer_answer, OfferAnswer::Stable) {
                    OfferAnswer::TheyOffered(r) => Some(r),
                    OfferAnswer::Stable | OfferAnswer::AwaitingAck { .. } => None,
                },
                s.auth.take(),
            ),
            // Early: not confirmed, no BYE (§15); Terminating: sent already.
            None => return,
        };
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        let value = cause.header_value();
        let out = c
            .dialog
            .request(Method::Bye, &me, &branch, &[("Reason", &value)], None);
        let destination = c.destination(&out.next_hop);
        let bye_tx = self.start_nict(
            now,
            Some(call_id),
            Method::Bye,
            out.bytes,
            destination,
            &branch,
        );
        if let Some(c) = self.calls.get_mut(&call_id) {
            c.role.terminate(Ending {
                bye_tx,
                reason,
                reoffer,
                cause,
                auth,
                challenged: [false; 2],
            });
        }
    }

    /// RFC 3261 §22.2: a 401/407 to our session refresh (`method`: UPDATE
    /// or re-INVITE) is answered once per kind with the INVITE's
    /// [`Authenticator`], by the same refresh again with credentials. False
    /// when it cannot be (no credentials, answered already, no challenge we
    /// can meet): the caller treats it as a refused refresh.
    pub(super) fn answer_refresh_challenge(
        &mut self,
        now: Instant,
        call_id: u64,
        resp: &Response,
        method: Method,
    ) -> bool {
        let proxy = match resp.status {
            401 => false,
            407 => true,
            _ => return false,
        };
        let Some(c) = self.calls.get_mut(&call_id) else {
            return false;
        };
        let uri = c.dialog.request_uri();
        let Some(s) = session_of(&mut c.role) else {
            return false;
        };
        let kind = usize::from(proxy);
        let (Some(auth), false) = (s.auth.as_mut(), s.refresh_challenged[kind]) else {
            return false;
        };
        let Some(n) = s.timer.as_ref().map(SessionTimer::negotiated) else {
            return false;
        };
        let (name, field) = if proxy {
            (HeaderName::ProxyAuthenticate, "Proxy-Authorization")
        } else {
            (HeaderName::WwwAuthenticate, "Authorization")
        };
        let Some(value) = strongest_first(resp, name)
            .iter()
            .find_map(|ch| auth.authorize(ch, &method, &uri, proxy))
        else {
            return false;
        };
        s.refresh_challenged[kind] = true;
        let se = n.refresh_header_value();
        debug!(call_id = %c.dialog.id().call_id, status = resp.status, %method, "refresh again with credentials");
        if method == Method::Invite {
            self.send_reinvite_refresh(now, call_id, &se, Some((field, &value)));
        } else {
            self.send_update_refresh(now, call_id, &se, Some((field, &value)));
        }
        true
    }

    /// A 401/407 to our BYE (RFC 3261 §22.2; carriers that challenge
    /// every request): the BYE again with credentials, CSeq + 1, once per
    /// kind. False when it cannot be answered — the call then ends as the
    /// BYE's final says.
    pub(super) fn answer_bye_challenge(
        &mut self,
        now: Instant,
        call_id: u64,
        resp: &Response,
    ) -> bool {
        let proxy = match resp.status {
            401 => false,
            407 => true,
            _ => return false,
        };
        let branch = self.new_branch();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return false;
        };
        let ending = match &mut c.role {
            Role::Uas(UasState::Terminating(e)) | Role::Uac(LegState::Terminating(e)) => e,
            Role::Uas(_) | Role::Uac(_) => return false,
        };
        let kind = usize::from(proxy);
        let (Some(auth), false) = (ending.auth.as_mut(), ending.challenged[kind]) else {
            return false;
        };
        let uri = c.dialog.request_uri();
        let (name, field) = if proxy {
            (HeaderName::ProxyAuthenticate, "Proxy-Authorization")
        } else {
            (HeaderName::WwwAuthenticate, "Authorization")
        };
        let challenges = strongest_first(resp, name);
        let Some(value) = challenges
            .iter()
            .find_map(|ch| auth.authorize(ch, &Method::Bye, &uri, proxy))
        else {
            return false;
        };
        ending.challenged[kind] = true;
        let cause = ending.cause.header_value();
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        let out = c.dialog.request(
            Method::Bye,
            &me,
            &branch,
            &[("Reason", &cause), (field, &value)],
            None,
        );
        let destination = c.destination(&out.next_hop);
        debug!(call_id = %c.dialog.id().call_id, status = resp.status, "BYE again with credentials");
        let bye_tx = self.start_nict(
            now,
            Some(call_id),
            Method::Bye,
            out.bytes,
            destination,
            &branch,
        );
        if let Some(c) = self.calls.get_mut(&call_id)
            && let Role::Uas(UasState::Terminating(e)) | Role::Uac(LegState::Terminating(e)) =
                &mut c.role
        {
            e.bye_tx = bye_tx;
        }
        true
    }

    /// Sends what the call's 2xx retransmission has due, acts on its
    /// give-up, and re-arms the call's timer.
    pub(super) fn drain_call(&mut self, now: Instant, call_id: u64) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let destination = response_destination(c.flow, &c.dialog);
        let mut no_ack = false;
        if let Some(s) = session_of(&mut c.role) {
            match &mut s.offer_answer {
                OfferAnswer::AwaitingAck { wait, .. } => {
                    // The first 2xx went out through the transaction: all
                    // the wait sends are retransmissions.
                    while let Some(data) = wait.poll_transmit() {
                        self.totals.retransmissions_sent += 1;
                        self.transmits.push_back(Transmit {
                            destination: destination.clone(),
                            data,
                        });
                    }
                    while let Some(ev) = wait.poll_event() {
                        if ev == TuEvent::NoAck {
                            no_ack = true;
                        }
                    }
                    if wait.is_terminated() {
                        s.offer_answer = OfferAnswer::Stable;
                    }
                }
                OfferAnswer::Stable | OfferAnswer::TheyOffered(_) => {}
            }
        }
        if no_ack {
            // §13.3.1.4: no ACK within 64·T1 → confirm and end with BYE.
            debug!(call_id = %c.dialog.id().call_id, "no ACK for our 2xx");
            self.send_bye(now, call_id, EndReason::NoAck, Reason::TIMER_EXPIRY);
        }
        self.schedule(Owner::Call(call_id));
    }
}

/// The values of a response's challenge fields `name`, the strongest
/// algorithm first (RFC 8760 §2.4: SHA-256 before MD5, see
/// [`Algorithm::rank`](crate::sip::digest::Algorithm::rank)); a value we
/// cannot read goes last.
pub(super) fn strongest_first(resp: &Response, name: HeaderName) -> Vec<&str> {
    let strength = |value: &str| {
        crate::sip::digest::Challenge::parse_all(value)
            .into_iter()
            .filter_map(Result::ok)
            .map(|c| c.algorithm.rank())
            .max()
    };
    let mut values: Vec<&str> = resp
        .headers
        .fields()
        .iter()
        .filter(|f| f.name == name)
        .map(|f| &*f.value)
        .collect();
    // Stable: among equals the server's order stands.
    values.sort_by_key(|v| std::cmp::Reverse(strength(v)));
    values
}

/// Whether a request carries an SDP offer (RFC 3264 §5).
fn has_offer(req: &Request) -> bool {
    req.sdp().is_some()
}
