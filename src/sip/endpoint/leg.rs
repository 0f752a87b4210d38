//! Calls we place (the UAC role): the INVITE in its client transaction,
//! provisionals and early dialogs (forks), PRACK for reliable ones (RFC
//! 3262), CANCEL (also when a 2xx crosses it), digest retries (§22.2), and
//! the ACK for every 2xx. The INVITE's own progress is
//! [`UacState`](crate::sip::uac::UacState); the requests it derives are
//! built in [`crate::sip::uac`]. Once confirmed, the leg's dialog is the one
//! both roles share ([`Session`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use super::Owner;
use super::session::strongest_first;
use super::tx::{Tx, TxKey, TxKind, TxMachine};
use super::{
    Call, CallError, CallKey, Destination, EndReason, Ending, Endpoint, Event, Flow, FlowTransport,
    NO_CONNECTION, OfferAnswer, Reason, Reoffer, Role, Session, Transmit, destination_for,
    local_identity, reliability_of,
};
use crate::sip::dialog::{Dialog, DialogState};
use crate::sip::message::{CallId, HeaderName, Method, Response};
use crate::sip::session_timer::{SessionTimer, min_se_of, negotiate_uac};
use crate::sip::transaction::{IctState, InviteClient, NictState, TimerConfig};
use crate::sip::uac::{
    IctTx, InviteError, InviteTemplate, Outbound, OutboundInvite, SentPrack, TemplateContext,
    UacInput, UacState, UacStep, finish_cancel, is_stale, parse_retry_after, parse_rseq,
};

/// An outbound leg, as its UAC (RFC 3261 §12.1.2, §13.2, §14, §15, §17.1.1;
/// RFC 3262 for reliable provisionals).
///
/// ```text
///      invite(): INVITE with our offer (ICT, §17.1.1)
///         │
///         v            300-699 (the ICT ACKs it), Timer B (408),
///   +-----------+      transport error (503) ───────────────────▶ Failed
///   | Inviting  |      1xx: Event::Progress; with a To-tag the early dialog
///   +-----------+      (§12.1.2, the first fork's); reliable: PRACK (RFC 3262)
///         │            401/407: the INVITE again with credentials (§22.2)
///         │            cancel(), hangup(): CANCEL (§9.1) … 487 ─▶ Ended(LocalCancel)
///         │            (the INVITE's own progress: UacState)
///         │ 2xx: ACK (§13.2.2.4), the dialog is confirmed; Event::Answered
///         │ (a 2xx that crossed our CANCEL: ACK, then BYE, §15)
///         v
///   +-----------+      offer/answer (OfferAnswer, RFC 3264 / RFC 6337):
///   | Confirmed |        Stable ⇄ TheyOffered ⇄ AwaitingAck (re-INVITE, UPDATE)
///   +-----------+
///         │ hangup(), the session expired, its refresh failed: BYE
///         v
///   +-------------+
///   | Terminating |    the BYE's final, or Timer F ─────────────▶ Ended(reason)
///   +-------------+
///
///   In every state a BYE from the peer gets 200 and ends the leg
///   (Ended(RemoteBye)); in Inviting its INVITE is then cancelled.
/// ```
///
/// Offer/answer while Inviting: our offer is in the INVITE and its answer
/// comes in a reliable provisional (RFC 3262 §5) or in the 2xx. A
/// re-INVITE from the far end meanwhile gets 491 (§14.2: our INVITE, with
/// its offer, is in progress); an UPDATE in the early dialog (RFC 3311 §5.1)
/// is reported and waits in `update` for the application.
pub(super) enum LegState {
    /// Our INVITE has no final response yet.
    Inviting {
        /// The INVITE's template, credentials, PRACK state and [`UacState`].
        out: Box<Outbound>,
        /// The current INVITE's client transaction.
        tx: u64,
        /// The far end's UPDATE in the early dialog, until answered.
        update: Option<Reoffer>,
    },
    /// The 2xx is ACKed: the dialog is confirmed (§13.2.2.4).
    Confirmed(Session),
    /// Our BYE is out (§15.1.1).
    Terminating(Ending),
}

impl Endpoint {
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
                session: self.cfg.session,
                max_forwards: me.max_forwards,
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
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port.unwrap_or(5060))
            }
        };
        let transport = match &invite.next_hop {
            Destination::Tcp { conn: Some(c), .. } => FlowTransport::Tcp(*c),
            _ => transport,
        };
        let call_id = self.alloc_id();
        let stay_on_flow = invite.stay_on_flow;
        let out = Box::new(Outbound {
            state: UacState::Calling,
            template,
            next_hop: invite.next_hop,
            cseq,
            auth: invite.credentials,
            auth_headers: Vec::new(),
            answered: [false; 2],
            auth_rounds: 0,
            interval_raised: false,
            rseq: None,
            prack: None,
            cancel_reason: Reason::NORMAL_CLEARING,
        });
        let branch = self.new_branch();
        let tx = self.alloc_id();
        let ict = ict_for(&out, &branch, now, self.cfg.timers);
        let destination = out.next_hop.clone();
        self.calls.insert(
            call_id,
            Call {
                dialog,
                flow: Flow { remote, transport },
                contact,
                role: Role::Uac(LegState::Inviting {
                    out,
                    tx,
                    update: None,
                }),
                scheduled: None,
                stay_on_flow,
            },
        );
        self.insert_ict(now, call_id, tx, branch, ict, destination);
        Ok(CallKey(call_id))
    }

    /// Cancels an outbound call that has no final response yet (RFC 3261
    /// §9.1): at once when a provisional has arrived, else as soon as one
    /// does. Ends with [`EndReason::LocalCancel`] — or with whatever final
    /// the far end had already sent.
    pub fn cancel(&mut self, now: Instant, call: CallKey) -> Result<(), CallError> {
        self.cancel_because(now, call, Reason::NORMAL_CLEARING)
    }

    /// [`Endpoint::cancel`], the CANCEL's `Reason` (RFC 3326) saying why:
    /// [`Reason::NO_ANSWER`] at a ring timeout, [`Reason::ANSWERED_ELSEWHERE`]
    /// when another leg took the call.
    pub fn cancel_because(
        &mut self,
        now: Instant,
        call: CallKey,
        reason: Reason,
    ) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        let out = match &mut c.role {
            Role::Uac(LegState::Inviting { out, .. }) => out,
            Role::Uac(LegState::Confirmed(_) | LegState::Terminating(_)) | Role::Uas(_) => {
                return Err(CallError::NotOutbound);
            }
        };
        out.cancel_reason = reason;
        match out.state.step(UacInput::Hangup) {
            UacStep::SendCancel => self.send_cancel(now, call.0),
            UacStep::Quiet
            | UacStep::Report
            | UacStep::Answer
            | UacStep::AckAndBye
            | UacStep::Challenge
            | UacStep::RaiseInterval
            | UacStep::Fail
            | UacStep::Cancelled => {}
        }
        Ok(())
    }

    /// Sends the call's INVITE again with its current CSeq and credentials
    /// in a new client transaction (new branch), which becomes the current
    /// one.
    fn send_invite(&mut self, now: Instant, call_id: u64) {
        let branch = self.new_branch();
        let id = self.alloc_id();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let (out, tx) = match &mut c.role {
            Role::Uac(LegState::Inviting { out, tx, .. }) => (out, tx),
            Role::Uac(LegState::Confirmed(_) | LegState::Terminating(_)) | Role::Uas(_) => return,
        };
        *tx = id;
        let ict = ict_for(out, &branch, now, self.cfg.timers);
        let destination = out.next_hop.clone();
        self.insert_ict(now, call_id, id, branch, ict, destination);
    }

    /// Starts the INVITE client transaction `id` of the call.
    pub(super) fn insert_ict(
        &mut self,
        now: Instant,
        call_id: u64,
        id: u64,
        branch: String,
        ict: IctTx,
        destination: Destination,
    ) {
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
                last_sent: None,
            },
        );
        self.drain_tx(now, id);
    }

    /// Sends the CANCEL of the call's current INVITE (§9.1).
    fn send_cancel(&mut self, now: Instant, call_id: u64) {
        let (tx_id, reason) = match self.calls.get(&call_id).map(|c| &c.role) {
            Some(Role::Uac(LegState::Inviting { tx, out, .. })) => (*tx, out.cancel_reason),
            Some(Role::Uac(LegState::Confirmed(_) | LegState::Terminating(_)) | Role::Uas(_))
            | None => return,
        };
        self.cancel_invite_tx(now, tx_id, reason);
    }

    /// CANCELs the INVITE of client transaction `tx_id` once, if it is still
    /// waiting for its final after a provisional (§9.1), and gives it 64·T1
    /// to end.
    pub(super) fn cancel_invite_tx(&mut self, now: Instant, tx_id: u64, reason: Reason) {
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
        let bytes = finish_cancel(&ict.cancel_head, reason);
        let destination = tx.destination.clone();
        let branch = tx.key.branch.clone();
        let call = tx.call;
        self.schedule(Owner::Tx(tx_id));
        self.start_nict(now, call, Method::Cancel, bytes, destination, &branch);
    }

    /// A response the INVITE transaction `tx_id` passed up.
    pub(super) fn invite_response(
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
        let u = match &mut c.role {
            Role::Uac(LegState::Inviting { out, tx, .. }) if *tx == tx_id => out,
            Role::Uac(
                LegState::Inviting { .. } | LegState::Confirmed(_) | LegState::Terminating(_),
            )
            | Role::Uas(_) => return,
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
                        self.totals.retransmissions_sent += 1;
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
            | UacStep::RaiseInterval
            | UacStep::Fail
            | UacStep::Cancelled => {}
        }
        if report {
            let sdp = if ours { resp.sdp() } else { None };
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
        let destination = c.destination(&out.next_hop);
        let tx = self.start_nict(
            now,
            Some(call_id),
            Method::Prack,
            out.bytes.clone(),
            destination.clone(),
            &branch,
        );
        if let Some(Role::Uac(LegState::Inviting { out: u, .. })) =
            self.calls.get_mut(&call_id).map(|c| &mut c.role)
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
            self.totals.retransmissions_sent += 1;
            self.transmits.push_back(Transmit {
                destination: destination.clone(),
                data: data.clone(),
            });
            return;
        }
        if let Some(call_id) = call
            && self.refresh_answered(tx_id, call_id, resp)
        {
            return;
        }
        let ack_branch = self.new_branch();
        let wanted = call
            .and_then(|id| self.calls.get_mut(&id))
            .filter(|c| c.inviting_with(tx_id));
        let Some(c) = wanted else {
            self.ack_and_bye_unwanted(now, tx_id, resp, source, ack_branch);
            return;
        };
        let call_id = call.expect("a wanted 2xx has its call");
        let Role::Uac(state) = &mut c.role else {
            return;
        };
        let (step, invite_seq, update, offer, cancel_reason, auth, credentials) = match state {
            LegState::Inviting { out, update, .. } => (
                out.state.step(UacInput::Success),
                out.cseq,
                update.take(),
                out.template.sdp.clone(),
                out.cancel_reason,
                out.auth.take(),
                std::mem::take(&mut out.auth_headers),
            ),
            // Not reached: `inviting_with` held just above.
            LegState::Confirmed(_) | LegState::Terminating(_) => return,
        };
        // Inviting → Confirmed (§13.2.2.4); an UPDATE of the early dialog
        // still waiting for the application carries over.
        // RFC 4028 §7.2: the 2xx says whether a session timer runs and
        // who refreshes.
        let mut session = Session::new(
            update.map_or(OfferAnswer::Stable, OfferAnswer::TheyOffered),
            negotiate_uac(&resp.headers).map(|n| SessionTimer::start(now, n)),
            &resp.headers,
            offer,
        );
        session.auth = auth;
        session.invite_credentials = credentials;
        *state = LegState::Confirmed(session);
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
        let me = local_identity(&self.cfg, c.flow.transport, &c.contact);
        // §13.2.2.4: the ACK carries the INVITE's credentials.
        let credentials: Vec<(&str, &str)> = match &c.role {
            Role::Uac(LegState::Confirmed(s)) => s
                .invite_credentials
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect(),
            Role::Uac(_) | Role::Uas(_) => Vec::new(),
        };
        let ack = c.dialog.ack(invite_seq, &me, &ack_branch, &credentials);
        let destination = c.destination(&ack.next_hop);
        self.send_2xx_ack(tx_id, tag, ack.bytes, destination);
        match step {
            UacStep::Answer => self.events.push_back(Event::Answered {
                call: CallKey(call_id),
                sdp: resp.sdp().unwrap_or_default(),
            }),
            // §15: the 2xx crossed our CANCEL; the session is not wanted.
            UacStep::AckAndBye => {
                self.send_bye(now, call_id, EndReason::LocalCancel, cancel_reason);
            }
            UacStep::Report
            | UacStep::Quiet
            | UacStep::SendCancel
            | UacStep::Challenge
            | UacStep::RaiseInterval
            | UacStep::Fail
            | UacStep::Cancelled => {}
        }
        self.drain_call(now, call_id);
    }

    /// Sends the ACK for a 2xx and keeps it for the 2xx's retransmissions.
    pub(super) fn send_2xx_ack(
        &mut self,
        tx_id: u64,
        tag: Box<str>,
        data: Bytes,
        destination: Destination,
    ) {
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
        let ack = dialog.ack(resp.headers.cseq.seq, &me, &ack_branch, &[]);
        let destination = destination_for(&ack.next_hop, source);
        self.send_2xx_ack(tx_id, tag, ack.bytes, destination);
        let bye_branch = self.new_branch();
        let bye = dialog.request(Method::Bye, &me, &bye_branch, &[], None);
        let destination = destination_for(&bye.next_hop, source);
        self.start_nict(now, None, Method::Bye, bye.bytes, destination, &bye_branch);
    }

    fn uac_failure(&mut self, now: Instant, tx_id: u64, call_id: u64, resp: &Response) {
        if self.is_refresh(call_id, tx_id)
            && self.answer_refresh_challenge(now, call_id, resp, Method::Invite)
        {
            return;
        }
        if self.refresh_failed(now, call_id, tx_id, Some(resp.status)) {
            return;
        }
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let step = match &mut c.role {
            Role::Uac(LegState::Inviting { out, tx, .. }) if *tx == tx_id => {
                out.state.step(UacInput::Failure(resp.status))
            }
            Role::Uac(
                LegState::Inviting { .. } | LegState::Confirmed(_) | LegState::Terminating(_),
            )
            | Role::Uas(_) => return,
        };
        match step {
            UacStep::Challenge if self.answer_challenge(now, call_id, resp) => {}
            UacStep::RaiseInterval if self.raise_interval(now, call_id, resp) => {}
            UacStep::Challenge | UacStep::RaiseInterval | UacStep::Fail => {
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
                        received: true,
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
        let u = match &mut c.role {
            Role::Uac(LegState::Inviting { out, .. }) => out,
            Role::Uac(LegState::Confirmed(_) | LegState::Terminating(_)) | Role::Uas(_) => {
                return false;
            }
        };
        // Whole field values (a challenge holds commas), the strongest
        // algorithm first (RFC 8760 §2.4).
        let challenges = strongest_first(resp, name);
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
        self.invite_again(now, call_id);
        true
    }

    /// RFC 4028 §7.4: answers a 422 with a new INVITE whose Session-Expires
    /// and Min-SE are the 422's Min-SE — once. False when the 422 has no
    /// usable Min-SE, asks for more than a day, or came to the retry.
    fn raise_interval(&mut self, now: Instant, call_id: u64, resp: &Response) -> bool {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return false;
        };
        let Role::Uac(LegState::Inviting { out: u, .. }) = &mut c.role else {
            return false;
        };
        let Some(min_se) = min_se_of(&resp.headers) else {
            debug!("422 without a Min-SE: not retried");
            return false;
        };
        if u.interval_raised || min_se > MAX_SESSION_INTERVAL_S {
            debug!(min_se, "422 not retried");
            return false;
        }
        let session = &mut u.template.session;
        session.min_se = session.min_se.max(min_se);
        session.session_expires = session.session_expires.max(min_se);
        u.interval_raised = true;
        self.invite_again(now, call_id);
        true
    }

    /// Sends the call's INVITE again, as a new transaction: CSeq + 1, a new
    /// branch, no early dialog or reliable provisional of the last one.
    fn invite_again(&mut self, now: Instant, call_id: u64) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Role::Uac(LegState::Inviting { out: u, .. }) = &mut c.role else {
            return;
        };
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
    }
}

/// The longest session interval a 422 may ask us for (a day): more is a
/// peer's mistake, and the call fails rather than runs untimed.
const MAX_SESSION_INTERVAL_S: u32 = 86_400;

/// The client transaction of the INVITE `out` describes, on `branch`.
fn ict_for(out: &Outbound, branch: &str, now: Instant, timers: TimerConfig) -> IctTx {
    let t = &out.template;
    let invite = t.invite(branch, out.cseq, &out.auth_headers);
    IctTx {
        machine: InviteClient::new(now, timers, reliability_of(&out.next_hop), invite),
        ack_head: t.ack_head(branch, out.cseq),
        cancel_head: t.cancel_head(branch, out.cseq),
        cancel_sent: false,
        acks: Vec::new(),
        abandon_at: None,
        abandoned: false,
    }
}
