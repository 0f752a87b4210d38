//! Dialogs (RFC 3261 §12): the state two user agents share for the length of
//! a call — Call-ID, tags, CSeq counters, the remote target and the route set.
//!
//! ```text
//!        INVITE received, 1xx-with-tag sent          2xx sent / received
//!   ────────────────────────────────▶ Early ─────────────────────▶ Confirmed
//!                                       │                             │
//!                                       │ non-2xx final       BYE in/out
//!                                       ▼                             ▼
//!                                   Terminated ◀──────────────────────┘
//! ```
//!
//! As UAC the object exists from the moment our INVITE leaves, in the
//! `Pending` state (no remote tag yet; not a dialog in §12's sense): the first
//! response with a To-tag establishes it (§12.1.2), early for a 1xx and
//! confirmed for a 2xx.
//!
//! The route set is what keeps a proxy such as Kamailio in the path: as UAS it
//! is the request's Record-Route in order (§12.1.1), copied into our 2xx; as
//! UAC it is the response's Record-Route in reverse order (§12.1.2),
//! recomputed from the 2xx (§13.2.2.4). Every in-dialog request we send goes
//! through it (§12.2.1.1), with loose routing (`;lr`) or, for an old strict
//! router, the route-URI dance.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::sip::message::{
    CallId, HeaderName, Method, NameAddr, Request, RequestBuilder, Response, SipUri, split_list,
};

/// Where a dialog is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// UAC only: our INVITE is out and no response with a To-tag has come;
    /// the object holds what the INVITE carried (From, To, Request-URI).
    Pending,
    /// Created by a provisional response with a To-tag.
    Early,
    /// A 2xx has been sent or received.
    Confirmed,
    /// Ended by BYE or a final non-2xx.
    Terminated,
}

/// What identifies a dialog at this user agent (§12): Call-ID, local tag and
/// remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: CallId,
    /// Our tag.
    pub local_tag: Box<str>,
    /// The peer's tag ("" when an RFC 2543 peer sent none).
    pub remote_tag: Box<str>,
}

/// How our requests leave: the Via sent-by and transport, and our Contact.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// Transport token for Via (`UDP`, `TCP`).
    pub transport: &'static str,
    /// Advertised `host:port` for Via sent-by.
    pub sent_by: Box<str>,
    /// Our Contact URI (without angle brackets).
    pub contact: Box<str>,
    /// Max-Forwards of our requests (RFC 3261 §8.1.1.6).
    pub max_forwards: u8,
}

/// A request built inside a dialog, ready to send.
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    /// The encoded request.
    pub bytes: Bytes,
    /// Where it goes first (§8.1.2: the first Route, else the Request-URI).
    pub next_hop: SipUri,
    /// The CSeq number used.
    pub cseq: u32,
    /// The Via branch used.
    pub branch: Box<str>,
}

/// Why a dialog could not be created from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// The INVITE has no Contact, or it is not a SIP URI (§12.1.1 → 400).
    #[error("missing or malformed Contact")]
    BadContact,
    /// A Record-Route value is malformed (→ 400).
    #[error("malformed Record-Route")]
    BadRecordRoute,
    /// A response meant to establish a UAC dialog has no To-tag (§12.1.2:
    /// only a response with a tag creates a dialog).
    #[error("response without To-tag")]
    NoToTag,
}

/// One dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    id: DialogId,
    /// Our side as a name-addr with our tag (From of our requests).
    local: Box<str>,
    /// The peer as a name-addr with its tag (To of our requests).
    remote: Box<str>,
    local_seq: u32,
    remote_seq: Option<u32>,
    remote_target: Box<str>,
    /// Route set, raw values in the order our requests carry them.
    route_set: Vec<Box<str>>,
    /// The request's Record-Route values as received (for our 2xx).
    record_route: Vec<Box<str>>,
    state: DialogState,
}

impl Dialog {
    /// The UAS side of a dialog created by `invite` (§12.1.1). `local_seq` is
    /// the first CSeq number we will use for our own requests.
    pub fn new_uas(
        invite: &Request,
        local_tag: &str,
        local_seq: u32,
    ) -> Result<Dialog, DialogError> {
        let h = &invite.headers;
        let contact = match h.get(HeaderName::Contact) {
            Some(c) => split_list(c)
                .next()
                .and_then(|c| NameAddr::parse(c).ok())
                .ok_or(DialogError::BadContact)?,
            // RFC 2543 did not require Contact; its requests went to the
            // From address (RFC 4475 §3.4.1 asks us to stay compatible).
            None => h.from.clone(),
        };
        SipUri::parse(&contact.uri).map_err(|_| DialogError::BadContact)?;
        let mut record_route = Vec::new();
        for value in h.get_all(HeaderName::RecordRoute) {
            let addr = NameAddr::parse(value).map_err(|_| DialogError::BadRecordRoute)?;
            SipUri::parse(&addr.uri).map_err(|_| DialogError::BadRecordRoute)?;
            record_route.push(Box::<str>::from(value));
        }
        let mut local = String::with_capacity(h.to.raw.len() + 6 + local_tag.len());
        local.push_str(&h.to.raw);
        write!(local, ";tag={local_tag}").ok();
        Ok(Dialog {
            id: DialogId {
                call_id: h.call_id.clone(),
                local_tag: local_tag.into(),
                remote_tag: h.from.tag.clone().unwrap_or_default(),
            },
            local: local.into(),
            remote: h.from.raw.clone(),
            local_seq,
            remote_seq: Some(h.cseq.seq),
            remote_target: contact.uri,
            // §12.1.1: the UAS route set is the Record-Route list in order.
            route_set: record_route.clone(),
            record_route,
            state: DialogState::Early,
        })
    }

    /// The UAC side while our INVITE waits for a response with a To-tag
    /// ([`DialogState::Pending`]): `local` is our From value with `local_tag`,
    /// `remote` the To value (no tag), `target` the Request-URI, `local_seq`
    /// the INVITE's CSeq number. [`Dialog::establish_uac`] makes it a dialog.
    pub fn new_uac(
        call_id: CallId,
        local: &str,
        local_tag: &str,
        remote: &str,
        target: &str,
        local_seq: u32,
    ) -> Dialog {
        Dialog {
            id: DialogId {
                call_id,
                local_tag: local_tag.into(),
                remote_tag: "".into(),
            },
            local: local.into(),
            remote: remote.into(),
            local_seq,
            remote_seq: None,
            remote_target: target.into(),
            route_set: Vec::new(),
            record_route: Vec::new(),
            state: DialogState::Pending,
        }
    }

    /// A UAC dialog straight from a response to our INVITE (a 2xx of a fork
    /// we do not keep, which still needs its ACK and BYE): everything comes
    /// from the response (§12.1.2).
    pub fn from_uac_response(response: &Response) -> Result<Dialog, DialogError> {
        let h = &response.headers;
        let local_tag = h.from.tag.as_deref().unwrap_or("");
        let mut d = Dialog::new_uac(
            h.call_id.clone(),
            &h.from.raw,
            local_tag,
            &h.to.raw,
            &h.to.uri,
            h.cseq.seq,
        );
        d.establish_uac(response)?;
        Ok(d)
    }

    /// Establishes (1xx or 2xx with a To-tag, §12.1.2) or confirms (2xx,
    /// §13.2.2.4) the UAC dialog from a response to our INVITE: the remote
    /// tag and To come from the response, the remote target from its Contact
    /// and the route set from its Record-Route in reverse order. A 2xx
    /// recomputes target and route set of an early dialog and confirms it.
    ///
    /// Lenient where the peer is sloppy, because a 2xx must be ACKed
    /// whatever it looks like: a missing or malformed Contact keeps the
    /// current target (the Request-URI), a malformed Record-Route value is
    /// skipped. Errors: no To-tag ([`DialogError::NoToTag`]); nothing changes.
    pub fn establish_uac(&mut self, response: &Response) -> Result<(), DialogError> {
        let h = &response.headers;
        let tag = h.to.tag.as_deref().ok_or(DialogError::NoToTag)?;
        self.id.remote_tag = tag.into();
        self.remote = h.to.raw.clone();
        if let Some(contact) = h
            .get(HeaderName::Contact)
            .and_then(|c| split_list(c).next())
            .and_then(|c| NameAddr::parse(c).ok())
            .filter(|c| SipUri::parse(&c.uri).is_ok())
        {
            self.remote_target = contact.uri;
        }
        // §12.1.2: the route set is the Record-Route list in reverse order.
        self.route_set = h
            .get_all(HeaderName::RecordRoute)
            .filter(|v| {
                NameAddr::parse(v)
                    .ok()
                    .is_some_and(|a| SipUri::parse(&a.uri).is_ok())
            })
            .map(Box::<str>::from)
            .collect();
        self.route_set.reverse();
        self.state = if (200..300).contains(&response.status) {
            DialogState::Confirmed
        } else {
            DialogState::Early
        };
        Ok(())
    }

    /// The dialog's identifier.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// The current state.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// Marks the dialog confirmed (2xx sent or received).
    pub fn confirm(&mut self) {
        if matches!(self.state, DialogState::Early | DialogState::Pending) {
            self.state = DialogState::Confirmed;
        }
    }

    /// Marks the dialog terminated.
    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    /// The remote target (the peer's Contact URI).
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// The route set, in the order our requests carry it.
    pub fn route_set(&self) -> &[Box<str>] {
        &self.route_set
    }

    /// The Record-Route values to copy into our 2xx and 1xx (§12.1.1).
    pub fn record_route(&self) -> &[Box<str>] {
        &self.record_route
    }

    /// Checks and records the CSeq of a request received in this dialog
    /// (§12.2.2): a lower number than the last one is out of order (→ 500).
    /// ACK and CANCEL carry the INVITE's number and are not checked.
    pub fn accept_remote_cseq(&mut self, method: &Method, seq: u32) -> bool {
        if matches!(method, Method::Ack | Method::Cancel) {
            return true;
        }
        match self.remote_seq {
            Some(last) if seq <= last => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// A target refresh (re-INVITE, UPDATE) replaces the remote target with
    /// its Contact (§12.2.2). A malformed Contact is ignored.
    pub fn refresh_target(&mut self, request: &Request) {
        let Some(contact) = request
            .headers
            .get(HeaderName::Contact)
            .and_then(|c| split_list(c).next())
            .and_then(|c| NameAddr::parse(c).ok())
        else {
            return;
        };
        if SipUri::parse(&contact.uri).is_ok() {
            self.remote_target = contact.uri;
        }
    }

    /// Builds a request within the dialog (§12.2.1.1). ACK is built with
    /// [`Dialog::ack`]; every other method takes the next local CSeq.
    pub fn request(
        &mut self,
        method: Method,
        me: &LocalIdentity,
        branch: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> OutgoingRequest {
        self.local_seq = self.local_seq.wrapping_add(1);
        let seq = self.local_seq;
        self.build(method, seq, me, branch, extra, body)
    }

    /// Builds the ACK for a 2xx to our INVITE with CSeq `invite_seq`
    /// (§13.2.2.4), with `credentials`: the INVITE's `Authorization` /
    /// `Proxy-Authorization` fields, which the ACK must repeat.
    pub fn ack(
        &self,
        invite_seq: u32,
        me: &LocalIdentity,
        branch: &str,
        credentials: &[(&str, &str)],
    ) -> OutgoingRequest {
        self.build(Method::Ack, invite_seq, me, branch, credentials, None)
    }

    /// The Request-URI of the next request in this dialog (§12.2.1.1): the
    /// remote target, or a strict first route — what a digest answer to a
    /// challenge of that request names as its `uri`.
    pub fn request_uri(&self) -> String {
        let strict_first = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .filter(|a| SipUri::parse(&a.uri).is_ok_and(|u| !u.lr));
        match strict_first {
            Some(a) => a.uri.into(),
            None => self.remote_target.to_string(),
        }
    }

    fn build(
        &self,
        method: Method,
        seq: u32,
        me: &LocalIdentity,
        branch: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> OutgoingRequest {
        // §12.2.1.1: loose routing keeps the remote target as Request-URI;
        // a strict first route becomes the Request-URI and the remote target
        // goes last in Route.
        let first_route = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .and_then(|a| SipUri::parse(&a.uri).ok().map(|u| (a.uri, u)));
        let strict = first_route.as_ref().is_some_and(|(_, u)| !u.lr);
        let (request_uri, routes): (&str, Vec<&str>) = match &first_route {
            Some((uri, _)) if strict => {
                let mut routes: Vec<&str> = self.route_set[1..].iter().map(|r| &**r).collect();
                routes.push(&self.remote_target);
                (uri, routes)
            }
            _ => (
                &self.remote_target,
                self.route_set.iter().map(|r| &**r).collect(),
            ),
        };
        let next_hop = match &first_route {
            Some((_, uri)) => uri.clone(),
            None => SipUri::parse(&self.remote_target).unwrap_or_else(|_| fallback_uri(me)),
        };
        let mut b = RequestBuilder::new(&method, request_uri).header_fmt(
            "Via",
            format_args!(
                "SIP/2.0/{} {};branch={};rport",
                me.transport, me.sent_by, branch
            ),
        );
        for route in &routes {
            if route.starts_with('<') {
                b = b.header("Route", route);
            } else {
                b = b.header_fmt("Route", format_args!("<{route}>"));
            }
        }
        b = b
            .header_fmt("Max-Forwards", format_args!("{}", me.max_forwards))
            .header("From", &self.local)
            .header("To", &self.remote)
            .header("Call-ID", self.id.call_id.as_str())
            .header_fmt("CSeq", format_args!("{seq} {method}"));
        if !matches!(method, Method::Ack | Method::Bye | Method::Cancel) {
            b = b.header_fmt("Contact", format_args!("<{}>", me.contact));
        }
        for (name, value) in extra {
            b = b.header(name, value);
        }
        let bytes = match body {
            Some((ct, body)) => b.finish(Some(ct), body),
            None => b.finish(None, b""),
        };
        OutgoingRequest {
            bytes,
            next_hop,
            cseq: seq,
            branch: branch.into(),
        }
    }
}

/// The remote target was validated when the dialog was made; should it ever
/// fail to parse (a refresh only accepts valid URIs), fall back to our own
/// address so the request is at least well-formed and goes nowhere harmful.
fn fallback_uri(me: &LocalIdentity) -> SipUri {
    let (host, port) =
        crate::sip::message::split_host_port(&me.sent_by).unwrap_or(("127.0.0.1", None));
    SipUri {
        secure: false,
        user: None,
        host: host.into(),
        port,
        transport: None,
        lr: false,
        maddr: None,
        headers: None,
    }
}

impl DialogId {
    /// The key of the dialog an incoming in-dialog request belongs to: our tag
    /// is in To, theirs in From (§12.2.2).
    pub fn of_request(request: &Request) -> Option<DialogId> {
        let h = &request.headers;
        Some(DialogId {
            call_id: h.call_id.clone(),
            local_tag: h.to.tag.clone()?,
            remote_tag: h.from.tag.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, parse};

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKproxy\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n\
{extra}\
From: \"Caller\" <sip:caller@127.0.0.1:5061>;tag=abc\r\n\
To: <sip:service@127.0.0.1:5060>\r\n\
Call-ID: c1@127.0.0.1\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:caller@127.0.0.1:5061;transport=udp>\r\n\
Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn me() -> LocalIdentity {
        LocalIdentity {
            transport: "UDP",
            sent_by: "127.0.0.1:5060".into(),
            contact: "sip:callbackd@127.0.0.1:5060".into(),
            max_forwards: 70,
        }
    }

    fn parse_request(bytes: &[u8]) -> Request {
        match parse(bytes) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}: {}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn bye_without_route_set_goes_to_the_contact() {
        let inv = invite("");
        let mut d = Dialog::new_uas(&inv, "ours", 100).expect("dialog");
        let out = d.request(Method::Bye, &me(), "z9hG4bKb1", &[], None);
        let bye = parse_request(&out.bytes);
        assert_eq!(&*bye.uri, "sip:caller@127.0.0.1:5061;transport=udp");
        assert_eq!(bye.headers.get(HeaderName::Route), None);
        assert_eq!(bye.headers.from.tag.as_deref(), Some("ours"));
        assert_eq!(bye.headers.to.tag.as_deref(), Some("abc"));
        assert_eq!(
            bye.headers.cseq,
            crate::sip::message::CSeq {
                seq: 101,
                method: Method::Bye
            }
        );
        assert_eq!(bye.headers.call_id.as_str(), "c1@127.0.0.1");
        assert_eq!(
            (&*out.next_hop.host, out.next_hop.port),
            ("127.0.0.1", Some(5061))
        );
    }

    #[test]
    fn loose_route_set_is_kept_in_order_and_next_hop_is_the_first_route() {
        let inv = invite(
            "Record-Route: <sip:127.0.0.1:5070;lr;ftag=abc>\r\nRecord-Route: <sip:10.9.9.9;lr>\r\n",
        );
        let mut d = Dialog::new_uas(&inv, "ours", 1).expect("dialog");
        assert_eq!(d.record_route().len(), 2);
        let out = d.request(Method::Bye, &me(), "z9hG4bKb2", &[], None);
        let bye = parse_request(&out.bytes);
        assert_eq!(&*bye.uri, "sip:caller@127.0.0.1:5061;transport=udp");
        let routes: Vec<&str> = bye.headers.get_all(HeaderName::Route).collect();
        assert_eq!(
            routes,
            vec!["<sip:127.0.0.1:5070;lr;ftag=abc>", "<sip:10.9.9.9;lr>"]
        );
        assert_eq!(
            (&*out.next_hop.host, out.next_hop.port),
            ("127.0.0.1", Some(5070))
        );
    }

    #[test]
    fn strict_router_gets_the_request_uri_and_target_goes_last() {
        let inv = invite("Record-Route: <sip:127.0.0.1:5070>, <sip:10.9.9.9;lr>\r\n");
        let mut d = Dialog::new_uas(&inv, "ours", 1).expect("dialog");
        let out = d.request(Method::Bye, &me(), "z9hG4bKb3", &[], None);
        let bye = parse_request(&out.bytes);
        assert_eq!(&*bye.uri, "sip:127.0.0.1:5070");
        let routes: Vec<&str> = bye.headers.get_all(HeaderName::Route).collect();
        assert_eq!(
            routes,
            vec![
                "<sip:10.9.9.9;lr>",
                "<sip:caller@127.0.0.1:5061;transport=udp>"
            ]
        );
        assert_eq!(out.next_hop.port, Some(5070));
    }

    #[test]
    fn invite_without_contact_targets_the_from_uri_as_rfc_2543_did() {
        let text = "INVITE sip:s@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:c@127.0.0.1>;tag=1\r\nTo: <sip:s@127.0.0.1>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
        let Ok(Message::Request(r)) = parse(text.as_bytes()) else {
            panic!()
        };
        let d = Dialog::new_uas(&r, "t", 1).expect("RFC 2543 style");
        assert_eq!(&*d.remote_target, "sip:c@127.0.0.1");
        // Without Contact and without a SIP From there is nowhere to go.
        let text = text.replace("From: <sip:c@127.0.0.1>", "From: <tel:+13125550111>");
        let Ok(Message::Request(r)) = parse(text.as_bytes()) else {
            panic!()
        };
        assert_eq!(
            Dialog::new_uas(&r, "t", 1).err(),
            Some(DialogError::BadContact)
        );
    }

    #[test]
    fn rejects_malformed_record_route() {
        let inv = invite("Record-Route: <sip:[::1:5070;lr>\r\n");
        assert_eq!(
            Dialog::new_uas(&inv, "t", 1).err(),
            Some(DialogError::BadRecordRoute)
        );
    }

    #[test]
    fn out_of_order_cseq_is_refused_but_ack_is_not_checked() {
        let inv = invite("");
        let mut d = Dialog::new_uas(&inv, "ours", 1).expect("dialog");
        assert!(d.accept_remote_cseq(&Method::Ack, 10));
        assert!(!d.accept_remote_cseq(&Method::Bye, 10));
        assert!(d.accept_remote_cseq(&Method::Invite, 11));
        assert!(!d.accept_remote_cseq(&Method::Update, 9));
    }

    #[test]
    fn target_refresh_replaces_the_remote_target() {
        let inv = invite("");
        let mut d = Dialog::new_uas(&inv, "ours", 1).expect("dialog");
        let reinvite = parse_request(
            b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKr\r\n\
From: <sip:caller@127.0.0.1>;tag=abc\r\nTo: <sip:s@127.0.0.1>;tag=ours\r\n\
Call-ID: c1@127.0.0.1\r\nCSeq: 11 INVITE\r\nContact: <sip:moved@127.0.0.9:7000>\r\n\r\n",
        );
        d.refresh_target(&reinvite);
        assert_eq!(d.remote_target(), "sip:moved@127.0.0.9:7000");
        assert_eq!(DialogId::of_request(&reinvite).as_ref(), Some(d.id()));
    }

    fn response(status: u16, extra: &str) -> Response {
        let text = format!(
            "SIP/2.0 {status} X\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKinv\r\n\
From: \"Acme\" <sip:+15550100@127.0.0.1>;tag=ours\r\n\
To: <sip:+15551234567@trunk.example>{extra}\r\n\
Call-ID: out-1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn pending() -> Dialog {
        Dialog::new_uac(
            CallId("out-1".into()),
            "\"Acme\" <sip:+15550100@127.0.0.1>;tag=ours",
            "ours",
            "<sip:+15551234567@trunk.example>",
            "sip:+15551234567@trunk.example",
            1,
        )
    }

    #[test]
    fn uac_dialog_takes_contact_and_reversed_record_route() {
        let mut d = pending();
        assert_eq!(d.state(), DialogState::Pending);
        let r = response(
            180,
            ";tag=theirs\r\nContact: <sip:cust@10.1.1.1:5080>\r\n\
Record-Route: <sip:p2.example;lr>\r\nRecord-Route: <sip:p1.example;lr>",
        );
        d.establish_uac(&r).expect("tagged");
        assert_eq!(d.state(), DialogState::Early);
        assert_eq!(&*d.id().remote_tag, "theirs");
        assert_eq!(d.remote_target(), "sip:cust@10.1.1.1:5080");
        // §12.1.2: reverse order; the proxy nearest us first.
        assert_eq!(
            d.route_set(),
            ["<sip:p1.example;lr>".into(), "<sip:p2.example;lr>".into()]
        );
        let out = d.request(Method::Prack, &me(), "z9hG4bKp", &[], None);
        let prack = parse_request(&out.bytes);
        assert_eq!(prack.headers.cseq.seq, 2);
        assert_eq!(prack.headers.to.tag.as_deref(), Some("theirs"));
        assert_eq!(prack.headers.from.tag.as_deref(), Some("ours"));
        assert_eq!(&*out.next_hop.host, "p1.example");
        // An incoming request of this dialog has our tag in To.
        let bye = parse_request(
            b"BYE sip:callbackd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKb\r\n\
From: <sip:+15551234567@trunk.example>;tag=theirs\r\nTo: <sip:+15550100@127.0.0.1>;tag=ours\r\n\
Call-ID: out-1\r\nCSeq: 5 BYE\r\n\r\n",
        );
        assert_eq!(DialogId::of_request(&bye).as_ref(), Some(d.id()));
    }

    #[test]
    fn uac_2xx_recomputes_target_and_route_set_and_confirms() {
        let mut d = pending();
        let early = response(
            183,
            ";tag=theirs\r\nContact: <sip:early@10.1.1.1>\r\nRecord-Route: <sip:p1.example;lr>",
        );
        d.establish_uac(&early).expect("tagged");
        let ok = response(200, ";tag=theirs\r\nContact: <sip:final@10.1.1.2>");
        d.establish_uac(&ok).expect("tagged");
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(d.remote_target(), "sip:final@10.1.1.2");
        assert!(d.route_set().is_empty());
    }

    #[test]
    fn rejects_uac_response_without_to_tag() {
        let mut d = pending();
        let r = response(180, "");
        assert_eq!(d.establish_uac(&r), Err(DialogError::NoToTag));
        assert_eq!(d.state(), DialogState::Pending);
        assert_eq!(
            Dialog::from_uac_response(&r).err(),
            Some(DialogError::NoToTag)
        );
    }
}
