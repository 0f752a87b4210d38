//! Calls we answer (the UAS role): the INVITE in its server transaction
//! until the application answers or rejects it, a CANCEL before that, and
//! the 2xx retransmitted until its ACK. Once confirmed, the call's dialog
//! is the one both roles share ([`Session`]).

use std::time::Instant;

use tracing::debug;

use super::tx::{TxKey, TxKind, TxMachine};
use super::{
    Call, CallError, CallKey, EndReason, Ending, Endpoint, Event, Flow, OfferAnswer, Role,
    SUPPORTED, Session, allow_for, stateless_tag_of,
};
use crate::sip::dialog::{Dialog, DialogError};
use crate::sip::message::Request;
use crate::sip::session_timer::{Negotiated, SessionTimer};
use crate::sip::transaction::{AckWait, InviteServer};

/// An incoming call, as its UAS (RFC 3261 §12.1.1, §13.3, §14.2, §15;
/// RFC 6026 for the INVITE server transaction).
///
/// ```text
///      INVITE (Event::IncomingCall; 100 Trying at once, §17.2.1)
///         │
///         v            reject(), hangup(): 3xx-6xx in the IST ───▶ Ended(Rejected)
///   +-----------+      CANCEL: 200, then 487 to the INVITE (§9.2) ─▶ Ended(Cancelled)
///   |   Early   |      offer/answer: the INVITE holds the offer, or
///   +-----------+      none and our 2xx offers (RFC 3264 §4)
///         │ answer(): 2xx (the IST sends it once, RFC 6026 §8.5);
///         │ the dialog is confirmed (§12.1.1)
///         v
///   +-----------+      offer/answer (OfferAnswer, RFC 3264 / RFC 6337):
///   | Confirmed |        AwaitingAck ──ACK (Event::Confirmed)──▶ Stable
///   +-----------+        Stable ⇄ TheyOffered ⇄ AwaitingAck (re-INVITE, UPDATE)
///         │ hangup() (once the ACK is in, §15), no ACK within 64·T1
///         │ (§13.3.1.4), the session expired (RFC 4028 §10) or its
///         │ refresh failed (§12.2.1.2): BYE
///         v
///   +-------------+
///   | Terminating |    the BYE's final, or Timer F ─────────────▶ Ended(reason)
///   +-------------+
///
///   In every state a BYE from the peer gets 200 and ends the call
///   (Ended(RemoteBye)); a re-INVITE/UPDATE still pending gets 487 (§15.1.2).
/// ```
pub(super) enum UasState {
    /// The INVITE waits in its IST for [`Endpoint::answer`] or
    /// [`Endpoint::reject`]. An offer from the peer in this state gets 491:
    /// the INVITE's own exchange is not done (RFC 3261 §14.2).
    Early {
        /// The INVITE, to build the final response from.
        invite: Box<Request>,
        /// Its IST.
        tx: u64,
        /// RFC 4028 as negotiated from the INVITE, for our 2xx.
        session: Option<Negotiated>,
    },
    /// Our 2xx is out: the dialog is confirmed (§12.1.1), waiting for the
    /// ACK first.
    Confirmed(Session),
    /// Our BYE is out (§15.1.1).
    Terminating(Ending),
}

impl Endpoint {
    /// Answers an incoming call with 200 OK and `sdp` (our answer, or our
    /// offer when the INVITE had none).
    pub fn answer(&mut self, now: Instant, call: CallKey, sdp: &[u8]) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call.0).ok_or(CallError::NoSuchCall)?;
        let Role::Uas(state) = &mut c.role else {
            return Err(CallError::WrongState);
        };
        let (invite, tx_id, session) = match state {
            UasState::Early {
                invite,
                tx,
                session,
            } => (invite, *tx, *session),
            UasState::Confirmed(_) | UasState::Terminating(_) => {
                return Err(CallError::WrongState);
            }
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
        if let Some(n) = session {
            b = b.header("Session-Expires", &n.header_value());
            if n.requires_timer() {
                b = b.header("Require", "timer");
            }
        }
        let bytes = b.finish(Some("application/sdp"), sdp);
        let cseq = invite.headers.cseq.seq;
        // The SDP may be one part of a multipart body (SIP-I).
        let we_offered = invite.sdp().is_none();
        // Early → Confirmed: the 2xx is retransmitted until its ACK
        // (§13.3.1.4, over TCP too: it is end to end), which carries the
        // answer when we offered.
        *state = UasState::Confirmed(Session::new(
            OfferAnswer::AwaitingAck {
                wait: Box::new(AckWait::new(now, self.cfg.timers, bytes.clone())),
                cseq,
                we_offered,
                bye_after_ack: None,
            },
            session.map(|n| SessionTimer::start(now, n)),
            &invite.headers,
            bytes::Bytes::copy_from_slice(sdp),
        ));
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
        let c = self.calls.get(&call.0).ok_or(CallError::NoSuchCall)?;
        let Role::Uas(state) = &c.role else {
            return Err(CallError::WrongState);
        };
        let (invite, tx_id) = match state {
            UasState::Early { invite, tx, .. } => (invite, *tx),
            UasState::Confirmed(_) | UasState::Terminating(_) => {
                return Err(CallError::WrongState);
            }
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

    pub(super) fn handle_cancel(&mut self, now: Instant, req: &Request, source: Flow) {
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
        let Some(c) = self.calls.get(&call_id) else {
            return;
        };
        let bytes = match &c.role {
            Role::Uas(UasState::Early { invite, tx, .. }) if *tx == tx_id => invite
                .response(487, Some(&c.dialog.id().local_tag))
                .finish(None, b""),
            // Already answered (or the CANCEL is for a re-INVITE): it has
            // no effect (§9.2).
            Role::Uas(
                UasState::Early { .. } | UasState::Confirmed(_) | UasState::Terminating(_),
            )
            | Role::Uac(_) => return,
        };
        self.send_ist_final(now, tx_id, 487, bytes);
        self.end_call(now, call_id, EndReason::Cancelled);
    }

    pub(super) fn handle_new_invite(
        &mut self,
        now: Instant,
        req: Request,
        source: Flow,
        key: TxKey,
    ) {
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
                role: Role::Uas(UasState::Early {
                    invite: Box::new(req.clone()),
                    tx: tx_id,
                    session,
                }),
                scheduled: None,
                stay_on_flow: false,
            },
        );
        self.events.push_back(Event::IncomingCall {
            call: CallKey(call_id),
            request: Box::new(req),
            source,
        });
    }
}
