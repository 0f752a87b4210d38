//! The endpoint's transactions (RFC 3261 §17): the table of the four
//! machines, how messages are matched to them (§17.1.3, §17.2.3), how their
//! output reaches the transport and the calls, and the one timer heap.

use std::cmp::Reverse;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, trace};

use super::{CallKey, Destination, EndReason, Endpoint, Event, Flow, Owner, Transmit};
use super::{flow_destination, reliability_of, stateless_tag_of};
use crate::sip::message::{self, Method, Request, Response};
use crate::sip::transaction::{
    InviteServer, NonInviteClient, NonInviteServer, ResponseAction, TuEvent,
};
use crate::sip::uac::{IctTx, finish_ack};

impl Endpoint {
    /// A response: to the client transaction it matches (§17.1.3), and what
    /// that passes up to the call.
    pub(super) fn handle_response(&mut self, now: Instant, resp: Response, source: Flow) {
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
                    self.client_final(now, call_id, id, &kind, Some(&resp));
                }
                self.drain_tx(now, id);
            }
            TxMachine::Ist(_) | TxMachine::Nist(_) => {}
        }
    }

    /// Starts a non-INVITE client transaction sending `bytes` to `destination`.
    pub(super) fn start_nict(
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
                last_sent: None,
            },
        );
        self.drain_tx(now, id);
        id
    }

    pub(super) fn insert_server_tx(
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
                last_sent: None,
            },
        );
    }

    pub(super) fn send_server_response(
        &mut self,
        now: Instant,
        tx_id: u64,
        status: u16,
        bytes: Bytes,
    ) {
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

    pub(super) fn send_ist_final(&mut self, now: Instant, tx_id: u64, status: u16, bytes: Bytes) {
        self.send_server_response(now, tx_id, status, bytes);
    }

    pub(super) fn respond_in_new_nist(
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

    pub(super) fn respond_in_new_nist_tagged(
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

    pub(super) fn respond_in_new_ist(
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
    pub(super) fn respond_stateless(
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

    pub(super) fn drain_tx(&mut self, now: Instant, id: u64) {
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
            // A transaction sends the same bytes again only to retransmit.
            if tx.last_sent.as_ref() == Some(&data) {
                self.totals.retransmissions_sent += 1;
            } else {
                tx.last_sent = Some(data.clone());
            }
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
        // Whether this is the INVITE the call still waits on.
        let current_invite = call
            .and_then(|c| self.calls.get(&c))
            .is_some_and(|c| c.inviting_with(id));
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
        } else {
            self.schedule(Owner::Tx(id));
        }
        let Some(call_id) = call else { return };
        if is_invite_client {
            if failure.is_some() && self.refresh_failed(now, call_id, id, None) {
                return;
            }
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
                        received: false,
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

    pub(super) fn schedule(&mut self, owner: Owner) {
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

    pub(super) fn owner_deadline(&self, owner: Owner) -> Option<Instant> {
        match owner {
            Owner::Tx(id) => self.txs.get(&id).and_then(|t| t.scheduled),
            Owner::Call(id) => self.calls.get(&id).and_then(|c| c.scheduled),
        }
    }
}

// ---------------------------------------------------------------------------
// types

/// The four transaction machines (RFC 3261 §17, RFC 6026).
pub(super) enum TxMachine {
    Ist(InviteServer),
    Nist(NonInviteServer),
    Nict(NonInviteClient),
    Ict(Box<IctTx>),
}

/// A live transaction and what the endpoint keeps with it.
pub(super) struct Tx {
    pub(super) machine: TxMachine,
    /// Where its messages go.
    pub(super) destination: Destination,
    pub(super) key: TxKey,
    /// A server transaction (else a client one).
    pub(super) server: bool,
    /// The call it belongs to, if any.
    pub(super) call: Option<u64>,
    /// The deadline queued in the heap.
    pub(super) scheduled: Option<Instant>,
    /// The last message it sent: the same bytes again are a
    /// retransmission (counted in [`Totals`](super::Totals)).
    pub(super) last_sent: Option<Bytes>,
}

impl Tx {
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
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

    pub(super) fn handle_timeout(&mut self, now: Instant) {
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
pub(super) struct TxKey {
    pub(super) branch: Box<str>,
    pub(super) kind: TxKind,
}

/// What a [`TxKey`] matches besides the branch: ACK goes with its INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum TxKind {
    Invite,
    Cancel,
    Other(Method),
}

impl TxKind {
    pub(super) fn of(method: &Method) -> TxKind {
        match method {
            Method::Invite | Method::Ack => TxKind::Invite,
            Method::Cancel => TxKind::Cancel,
            other => TxKind::Other(other.clone()),
        }
    }
}

impl TxKey {
    pub(super) fn of_request(req: &Request) -> TxKey {
        TxKey::of_request_as(req, TxKind::of(&req.method))
    }

    pub(super) fn of_request_as(req: &Request, kind: TxKind) -> TxKey {
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

    pub(super) fn of_response(resp: &Response) -> TxKey {
        TxKey {
            branch: resp.headers.top_via().branch.clone().unwrap_or_default(),
            kind: TxKind::of(&resp.headers.cseq.method),
        }
    }
}
