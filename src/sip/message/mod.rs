//! SIP messages: parsing ([`parse`], our own tokenizer in `parse.rs`;
//! addresses and URIs in `uri.rs`; bodies in `body.rs`) and building of
//! requests and responses.
//!
//! Parsing gives a [`Message`] whose essential headers (Via list, From, To,
//! Call-ID, CSeq, Max-Forwards) are already typed, so the transaction and
//! dialog layers never re-parse them. Compact header forms (`v:`, `i:`,
//! `l:` …) are expanded and folded lines unfolded. Responses are built by
//! copying the raw header values of the request, as RFC 3261 §8.2.6.2 asks.
//!
//! RFC 4475's 49 torture messages are fixtures in `tests/rfc4475.rs`, each
//! with the outcome its section asks for; what rsip 0.4 (the tokenizer used
//! before) got wrong is pinned by the `was_rsip_defect_*` tests below.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

mod body;
mod parse;
mod uri;

pub use body::{BodyRefusal, check_body, check_encoding, sdp_of};
pub use parse::parse;
use uri::is_token_byte;
pub use uri::{NameAddr, SipUri, is_absolute_uri, params_iter, split_host_port, uri_scheme};

/// A parsed SIP message.
#[derive(Debug, Clone)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// The header fields.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// The message as it would go on the wire again: the start line, every
    /// field in order by its canonical name (compact forms expanded, folded
    /// lines joined, as parsed), the blank line and the body. Parsing what
    /// this prints gives the same message.
    pub fn print(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(512);
        match self {
            Message::Request(r) => {
                write!(Fmt(&mut out), "{} {} SIP/2.0\r\n", r.method, r.uri).ok();
            }
            Message::Response(r) => write_status_line(&mut out, r.status, &r.reason),
        }
        for field in &self.headers().fields {
            let name = field.other_name.as_deref().unwrap_or(field.name.as_str());
            put_header(&mut out, name, &field.value);
        }
        out.put_slice(b"\r\n");
        out.put_slice(self.body());
        out.freeze()
    }
}

/// A parsed SIP request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI as it appeared on the start line.
    pub uri: Box<str>,
    /// The header fields, in order, with typed essentials.
    pub headers: Headers,
    /// The body (exactly `Content-Length` bytes).
    pub body: Bytes,
}

/// A parsed SIP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, 100..=699.
    pub status: u16,
    /// The reason phrase.
    pub reason: Box<str>,
    /// The header fields, in order, with typed essentials.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The SDP this response carries: its body when `application/sdp`, the
    /// SDP part of a multipart body (a SIP-I carrier's 200 holds the ISUP
    /// ANM beside it), else `None`.
    pub fn sdp(&self) -> Option<Bytes> {
        sdp_of(&self.headers, &self.body)
    }
}

/// The header fields of a message: every field in order, plus the typed
/// values every layer needs.
#[derive(Debug, Clone)]
pub struct Headers {
    fields: Vec<Field>,
    /// The Via header field values, top first (RFC 3261 §8.1.1.7).
    pub vias: Vec<Via>,
    /// From.
    pub from: NameAddr,
    /// To.
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: CallId,
    /// CSeq.
    pub cseq: CSeq,
    /// Max-Forwards, when present.
    pub max_forwards: Option<u32>,
}

/// One header field as received: its name and raw value.
#[derive(Debug, Clone)]
pub struct Field {
    /// The canonical name (compact forms expanded).
    pub name: HeaderName,
    /// The name as received, for [`HeaderName::Other`] fields only.
    pub other_name: Option<Box<str>>,
    /// The value, trimmed of surrounding white space, folded lines joined.
    pub value: Box<str>,
}

/// SIP request methods. Unknown methods are kept, so the endpoint can answer
/// them with 405/501.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// OPTIONS (RFC 3261).
    Options,
    /// REGISTER (RFC 3261).
    Register,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// PRACK (RFC 3262).
    Prack,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other token.
    Extension(Box<str>),
}

impl Method {
    /// Parses a method token (case-sensitive, RFC 3261 §7.1).
    pub fn from_token(token: &str) -> Option<Method> {
        Some(match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other if !other.is_empty() && other.bytes().all(is_token_byte) => {
                Method::Extension(other.into())
            }
            _ => return None,
        })
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
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
            Method::Extension(token) => token,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal $(, $compact:literal)? ; )*) => {
        /// Header field names this engine reads or writes, by canonical form.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $(
                #[doc = $canonical]
                $variant,
            )*
            /// Any other header field; its name is in [`Field::other_name`].
            Other,
        }

        impl HeaderName {
            /// Maps a received field name (any case, compact forms too) to
            /// its canonical name; unknown names give `Other`.
            pub fn parse(name: &str) -> HeaderName {
                $(
                    if name.eq_ignore_ascii_case($canonical) $(|| name.eq_ignore_ascii_case($compact))? {
                        return HeaderName::$variant;
                    }
                )*
                HeaderName::Other
            }

            /// The canonical spelling (`Other` has none and gives "").
            pub fn as_str(self) -> &'static str {
                match self {
                    $( HeaderName::$variant => $canonical, )*
                    HeaderName::Other => "",
                }
            }
        }
    };
}

header_names! {
    Via => "Via", "v";
    From => "From", "f";
    To => "To", "t";
    CallId => "Call-ID", "i";
    CSeq => "CSeq";
    Contact => "Contact", "m";
    MaxForwards => "Max-Forwards";
    RecordRoute => "Record-Route";
    Route => "Route";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    ContentEncoding => "Content-Encoding", "e";
    ContentDisposition => "Content-Disposition";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", "k";
    Unsupported => "Unsupported";
    Allow => "Allow";
    Accept => "Accept";
    SessionExpires => "Session-Expires", "x";
    MinSe => "Min-SE";
    Expires => "Expires";
    MinExpires => "Min-Expires";
    Event => "Event", "o";
    Reason => "Reason";
    RetryAfter => "Retry-After";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    UserAgent => "User-Agent";
    Server => "Server";
    RSeq => "RSeq";
    RAck => "RAck";
    PAssertedIdentity => "P-Asserted-Identity";
    Warning => "Warning";
}

/// A Call-ID value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallId(pub Box<str>);

impl CallId {
    /// The value as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CSeq value: sequence number and method (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number (< 2^31 per §8.1.1.5, but we accept any u32).
    pub seq: u32,
    /// The method.
    pub method: Method,
}

/// The transport named in a Via header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
    /// SCTP.
    Sctp,
    /// WebSocket.
    Ws,
    /// Secure WebSocket.
    Wss,
    /// Any other token (kept as received).
    Other(Box<str>),
}

impl Transport {
    fn parse(token: &str) -> Transport {
        const KNOWN: [(&str, Transport); 6] = [
            ("UDP", Transport::Udp),
            ("TCP", Transport::Tcp),
            ("TLS", Transport::Tls),
            ("SCTP", Transport::Sctp),
            ("WS", Transport::Ws),
            ("WSS", Transport::Wss),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| token.eq_ignore_ascii_case(name))
            .map_or_else(|| Transport::Other(token.into()), |(_, t)| t)
    }
}

/// The `rport` parameter of a Via (RFC 3581).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    /// Not present: respond to the sent-by port.
    Absent,
    /// Present without a value: the client asks for the source port.
    Requested,
    /// Present with a value (filled in by a server).
    Value(u16),
}

/// One Via header field value (RFC 3261 §20.42).
#[derive(Debug, Clone)]
pub struct Via {
    /// The transport, e.g. UDP.
    pub transport: Transport,
    /// The sent-by host (a name or an IP literal, IPv6 without brackets).
    pub host: Box<str>,
    /// The sent-by port, when given.
    pub port: Option<u16>,
    /// The branch parameter.
    pub branch: Option<Box<str>>,
    /// The received parameter.
    pub received: Option<IpAddr>,
    /// The rport parameter.
    pub rport: Rport,
    /// The value exactly as received.
    pub raw: Box<str>,
}

impl Via {
    /// Whether the branch has the RFC 3261 magic cookie (§8.1.1.7).
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch
            .as_deref()
            .is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but white space was received.
    #[error("empty message")]
    Empty,
    /// The start line or a header line does not follow the grammar.
    #[error("malformed start line or header block")]
    Syntax,
    /// The SIP version is not 2.0 (→ 505).
    #[error("SIP version not supported")]
    VersionNotSupported,
    /// The status code is not a three-digit number in 100..=699.
    #[error("bad status code")]
    BadStatus,
    /// A CR or LF appears inside a value or the reason phrase.
    #[error("bare CR or LF inside a header value or reason phrase")]
    BareLineBreak,
    /// A header value is not UTF-8.
    #[error("header value is not UTF-8")]
    NotUtf8,
    /// A mandatory header field is missing (RFC 3261 §8.1.1).
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    /// A Via value could not be parsed.
    #[error("malformed Via")]
    BadVia,
    /// A From/To/Contact value could not be parsed.
    #[error("malformed address")]
    BadAddress,
    /// CSeq is not `number method`, or its method differs from the request's.
    #[error("malformed CSeq")]
    BadCSeq,
    /// Max-Forwards is not a number.
    #[error("malformed Max-Forwards")]
    BadMaxForwards,
    /// Content-Length is not a number.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// Content-Length says more bytes than the datagram holds (§18.3 → 400).
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    /// The Request-URI is not a URI.
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// A SIP URI (Contact, Route, Record-Route) is malformed.
    #[error("malformed SIP URI")]
    BadUri,
    /// A field that must appear once appears twice (RFC 4475 §3.3.8, §3.3.9).
    #[error("{0} appears more than once")]
    Duplicate(&'static str),
    /// The method is one we do not know and the CSeq names another
    /// (→ 501, RFC 4475 §3.1.2.18).
    #[error("unknown method, CSeq names another")]
    UnknownMethod,
}

/// A parse failure, with what is needed to answer it when the message was a
/// request that got far enough (RFC 3261 §8.2: "400 Bad Request").
#[derive(Debug)]
pub struct ParseFailure {
    /// What was wrong.
    pub error: ParseError,
    /// The raw header values to build a stateless response from, when the
    /// message was a request carrying Via, From, To, Call-ID and CSeq.
    pub seed: Option<ResponseSeed>,
}

/// The raw header values a response copies from its request (§8.2.6.2).
#[derive(Debug, Clone)]
pub struct ResponseSeed {
    vias: Vec<Box<str>>,
    from: Option<Box<str>>,
    to: Option<Box<str>>,
    to_has_tag: bool,
    call_id: Option<Box<str>>,
    cseq: Box<str>,
}

impl ResponseSeed {
    /// Builds a complete stateless response with the given To-tag (added only
    /// when the request's To has none). From, To and Call-ID are copied
    /// when the request had them (RFC 4475 §3.3.1 asks for a 400 even to a
    /// request without them).
    pub fn response(
        &self,
        status: u16,
        reason: &str,
        to_tag: &str,
        extra: &[(&str, &str)],
    ) -> Bytes {
        let mut out = BytesMut::with_capacity(512);
        write_status_line(&mut out, status, reason);
        for via in &self.vias {
            put_header(&mut out, "Via", via);
        }
        if let Some(from) = &self.from {
            put_header(&mut out, "From", from);
        }
        match &self.to {
            Some(to) if self.to_has_tag || status == 100 => put_header(&mut out, "To", to),
            Some(to) => put_to_with_tag(&mut out, to, to_tag),
            None => {}
        }
        if let Some(call_id) = &self.call_id {
            put_header(&mut out, "Call-ID", call_id);
        }
        put_header(&mut out, "CSeq", &self.cseq);
        for (name, value) in extra {
            put_header(&mut out, name, value);
        }
        put_header(&mut out, "Content-Length", "0");
        out.put_slice(b"\r\n");
        out.freeze()
    }
}

impl Headers {
    /// Records in the top Via where a request really came from (RFC 3261
    /// §18.2.1: `received`; RFC 3581 §4: `rport` filled with the source port
    /// when `requested_rport`). Responses built afterwards copy it.
    pub fn stamp_top_via(&mut self, source: std::net::SocketAddr, requested_rport: bool) {
        let Some(field) = self.fields.iter_mut().find(|f| f.name == HeaderName::Via) else {
            return;
        };
        let value = &*field.value;
        let first_len = split_list(value).next().map_or(value.len(), |first| {
            // `first` is a trimmed sub-slice of `value`; find where it ends.
            first.as_ptr() as usize - value.as_ptr() as usize + first.len()
        });
        let (first, rest) = value.split_at(first_len);
        let mut out = String::with_capacity(value.len() + 40);
        for (i, part) in first.split(';').enumerate() {
            let name = part.split('=').next().unwrap_or("").trim();
            if i > 0
                && (name.eq_ignore_ascii_case("received")
                    || (requested_rport && name.eq_ignore_ascii_case("rport")))
            {
                continue;
            }
            if i > 0 {
                out.push(';');
            }
            out.push_str(part);
        }
        write!(out, ";received={}", source.ip()).ok();
        if requested_rport {
            write!(out, ";rport={}", source.port()).ok();
        }
        out.push_str(rest);
        field.value = out.into();
        if let Some(top) = self.vias.first_mut() {
            top.received = Some(source.ip());
            if requested_rport {
                top.rport = Rport::Value(source.port());
            }
            top.raw = split_list(&field.value).next().unwrap_or("").into();
        }
    }

    /// The first value of a known header field.
    pub fn get(&self, name: HeaderName) -> Option<&str> {
        debug_assert!(name != HeaderName::Other, "use Headers::other");
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &*f.value)
    }

    /// Every value of a known header field, comma-separated lists split
    /// (for list-valued fields: Route, Record-Route, Require, Supported …).
    pub fn get_all(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |f| f.name == name)
            .flat_map(|f| split_list(&f.value))
    }

    /// The value of an unknown header field, by name (case-insensitive).
    pub fn other(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| {
                f.other_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .map(|f| &*f.value)
    }

    /// Whether a comma-list header (Supported, Require …) contains `token`.
    pub fn has_token(&self, name: HeaderName, token: &str) -> bool {
        self.get_all(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Every field in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The top Via (always present in a parsed message).
    pub fn top_via(&self) -> &Via {
        // Parsing rejects messages without Via, so the list is never empty.
        &self.vias[0]
    }

    /// The Content-Type, without parameters, lower-cased comparison helper.
    pub fn content_type_is(&self, mime: &str) -> bool {
        self.get(HeaderName::ContentType)
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(mime))
    }
}

impl Request {
    /// Starts a response to this request (RFC 3261 §8.2.6): Via, From, To,
    /// Call-ID and CSeq are copied; `to_tag` is added to To when the request's
    /// To has no tag and the status is not 100.
    pub fn response(&self, status: u16, to_tag: Option<&str>) -> ResponseBuilder {
        let mut out = BytesMut::with_capacity(768);
        write_status_line(&mut out, status, reason_phrase(status));
        let h = &self.headers;
        for field in h.fields.iter().filter(|f| f.name == HeaderName::Via) {
            put_header(&mut out, "Via", &field.value);
        }
        put_header(&mut out, "From", &h.from.raw);
        match (&h.to.tag, to_tag) {
            (None, Some(tag)) if status != 100 => put_to_with_tag(&mut out, &h.to.raw, tag),
            _ => put_header(&mut out, "To", &h.to.raw),
        }
        put_header(&mut out, "Call-ID", h.call_id.as_str());
        out.put_slice(b"CSeq: ");
        write!(Fmt(&mut out), "{} {}", h.cseq.seq, h.cseq.method).ok();
        out.put_slice(b"\r\n");
        ResponseBuilder { out }
    }

    /// The SDP this request carries: its body when `application/sdp`, the
    /// SDP part of a multipart body (SIP-I/SIP-T), else `None`.
    pub fn sdp(&self) -> Option<Bytes> {
        sdp_of(&self.headers, &self.body)
    }

    /// The seed for stateless responses (RFC 3261 §8.2.6).
    pub fn seed(&self) -> ResponseSeed {
        let h = &self.headers;
        ResponseSeed {
            vias: h
                .fields
                .iter()
                .filter(|f| f.name == HeaderName::Via)
                .map(|f| f.value.clone())
                .collect(),
            from: Some(h.from.raw.clone()),
            to: Some(h.to.raw.clone()),
            to_has_tag: h.to.tag.is_some(),
            call_id: Some(h.call_id.0.clone()),
            cseq: format!("{} {}", h.cseq.seq, h.cseq.method).into(),
        }
    }
}

/// Writes a response: header fields, then [`ResponseBuilder::finish`] adds
/// Content-Length and the body.
pub struct ResponseBuilder {
    out: BytesMut,
}

impl ResponseBuilder {
    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        put_header(&mut self.out, name, value);
        self
    }

    /// Adds a header field formatted in place.
    pub fn header_fmt(mut self, name: &str, value: fmt::Arguments<'_>) -> Self {
        self.out.put_slice(name.as_bytes());
        self.out.put_slice(b": ");
        Fmt(&mut self.out).write_fmt(value).ok();
        self.out.put_slice(b"\r\n");
        self
    }

    /// Adds Content-Length (and Content-Type when there is a body), the blank
    /// line and the body.
    pub fn finish(mut self, content_type: Option<&str>, body: &[u8]) -> Bytes {
        if let (Some(ct), false) = (content_type, body.is_empty()) {
            put_header(&mut self.out, "Content-Type", ct);
        }
        self.out.put_slice(b"Content-Length: ");
        write!(Fmt(&mut self.out), "{}", body.len()).ok();
        self.out.put_slice(b"\r\n\r\n");
        self.out.put_slice(body);
        self.out.freeze()
    }
}

/// Writes a request from scratch (for requests the engine originates: BYE,
/// OPTIONS, ACK for a 2xx, re-INVITE, INVITE).
pub struct RequestBuilder {
    out: BytesMut,
}

impl RequestBuilder {
    /// Starts `METHOD uri SIP/2.0`.
    pub fn new(method: &Method, uri: &str) -> RequestBuilder {
        let mut out = BytesMut::with_capacity(768);
        out.put_slice(method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(uri.as_bytes());
        out.put_slice(b" SIP/2.0\r\n");
        RequestBuilder { out }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        put_header(&mut self.out, name, value);
        self
    }

    /// Adds a header field formatted in place.
    pub fn header_fmt(mut self, name: &str, value: fmt::Arguments<'_>) -> Self {
        self.out.put_slice(name.as_bytes());
        self.out.put_slice(b": ");
        Fmt(&mut self.out).write_fmt(value).ok();
        self.out.put_slice(b"\r\n");
        self
    }

    /// Adds Content-Length (and Content-Type with a body), blank line, body.
    pub fn finish(self, content_type: Option<&str>, body: &[u8]) -> Bytes {
        ResponseBuilder { out: self.out }.finish(content_type, body)
    }
}

/// The standard reason phrase of a status code (RFC 3261 §21 and later RFCs).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// Splits a comma-separated header value, respecting quotes and `<…>`;
/// empty items are skipped.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    split_list_items(value).flatten()
}

/// Splits a comma-separated header value, respecting quotes (with
/// quoted-pairs) and `<…>`: `None` for an empty item (`a,,b`), which a
/// strict reader refuses (RFC 4475 §3.1.2.1).
pub(crate) fn split_list_items(value: &str) -> impl Iterator<Item = Option<&str>> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut in_quotes = false;
        let mut in_angle = false;
        let mut escaped = false;
        let mut cut = None;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '<' if !in_quotes => in_angle = true,
                '>' if !in_quotes => in_angle = false,
                ',' if !in_quotes && !in_angle => {
                    cut = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let item = match cut {
            Some(i) => {
                rest = Some(&s[i + 1..]);
                &s[..i]
            }
            None => {
                rest = None;
                s
            }
        };
        let item = item.trim();
        Some((!item.is_empty()).then_some(item))
    })
    // A trailing empty item after the last comma, and an empty value, are
    // reported as `None` too; `split_list` drops them.
}

// ---------------------------------------------------------------------------
// helpers

fn write_status_line(out: &mut BytesMut, status: u16, reason: &str) {
    out.put_slice(b"SIP/2.0 ");
    write!(Fmt(out), "{status} ").ok();
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_to_with_tag(out: &mut BytesMut, to: &str, tag: &str) {
    out.put_slice(b"To: ");
    out.put_slice(to.as_bytes());
    out.put_slice(b";tag=");
    out.put_slice(tag.as_bytes());
    out.put_slice(b"\r\n");
}

/// `fmt::Write` into a `BytesMut`.
struct Fmt<'a>(&'a mut BytesMut);

impl fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n\
From: sipp <sip:sipp@127.0.0.1:5061>;tag=1\r\n\
To: service <sip:service@127.0.0.1:5060>\r\n\
Call-ID: 1-123@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@127.0.0.1:5061\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn request(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn error(text: &[u8]) -> ParseError {
        match parse(text) {
            Err(f) => f.error,
            Ok(m) => panic!("expected an error, got {m:?}"),
        }
    }

    #[test]
    fn parses_an_invite_with_typed_essentials() {
        let r = request(INVITE);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(&*r.uri, "sip:service@127.0.0.1:5060");
        let via = r.headers.top_via();
        assert_eq!(via.transport, Transport::Udp);
        assert_eq!(&*via.host, "127.0.0.1");
        assert_eq!(via.port, Some(5061));
        assert_eq!(via.branch.as_deref(), Some("z9hG4bK-1-0"));
        assert!(via.is_rfc3261_branch());
        assert_eq!(r.headers.from.tag.as_deref(), Some("1"));
        assert_eq!(&*r.headers.from.uri, "sip:sipp@127.0.0.1:5061");
        assert_eq!(r.headers.to.tag, None);
        assert_eq!(r.headers.call_id.as_str(), "1-123@127.0.0.1");
        assert_eq!(
            r.headers.cseq,
            CSeq {
                seq: 1,
                method: Method::Invite
            }
        );
        assert_eq!(r.headers.max_forwards, Some(70));
        assert_eq!(&r.body[..], b"v=0\n");
        assert!(r.headers.content_type_is("application/sdp"));
    }

    #[test]
    fn response_copies_the_request_headers_and_adds_the_to_tag() {
        let r = request(INVITE);
        let bytes = r
            .response(200, Some("abc"))
            .header("Contact", "<sip:x@127.0.0.1>")
            .finish(None, b"");
        let Ok(Message::Response(resp)) = parse(&bytes) else {
            panic!(
                "our own response must parse: {}",
                String::from_utf8_lossy(&bytes)
            );
        };
        assert_eq!(resp.status, 200);
        assert_eq!(&*resp.reason, "OK");
        assert_eq!(resp.headers.to.tag.as_deref(), Some("abc"));
        assert_eq!(
            resp.headers.top_via().branch.as_deref(),
            Some("z9hG4bK-1-0")
        );
        assert_eq!(resp.headers.cseq, r.headers.cseq);
        assert_eq!(resp.headers.call_id, r.headers.call_id);
        assert!(resp.body.is_empty());
    }

    #[test]
    fn trying_never_gets_a_to_tag() {
        let r = request(INVITE);
        let bytes = r.response(100, Some("abc")).finish(None, b"");
        let Ok(Message::Response(resp)) = parse(&bytes) else {
            panic!()
        };
        assert_eq!(resp.headers.to.tag, None);
    }

    #[test]
    fn compact_forms_are_expanded() {
        let text = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n\
v: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
f: <sip:b@127.0.0.1>;tag=9\r\n\
t: <sip:a@127.0.0.1>\r\n\
i: abc\r\n\
CSeq: 7 OPTIONS\r\n\
k: timer, 100rel\r\n\
l: 0\r\n\r\n";
        let r = request(text);
        assert_eq!(r.headers.call_id.as_str(), "abc");
        assert_eq!(r.headers.from.tag.as_deref(), Some("9"));
        assert!(r.headers.has_token(HeaderName::Supported, "100rel"));
        assert!(r.headers.has_token(HeaderName::Supported, "timer"));
    }

    #[test]
    fn folded_header_lines_are_unfolded() {
        let text = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>\r\n  ;tag=9\r\n\
To: <sip:a@127.0.0.1>\r\n\
Call-ID: abc\r\n\
CSeq: 7 OPTIONS\r\n\r\n";
        let r = request(text);
        assert_eq!(r.headers.from.tag.as_deref(), Some("9"));
    }

    #[test]
    fn multiple_vias_in_one_field_and_across_fields() {
        let text = "BYE sip:a@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKb;rport=5071\r\n\
Via: SIP/2.0/UDP host.example;branch=z9hG4bKc;received=192.0.2.1\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>;tag=8\r\nCall-ID: abc\r\nCSeq: 2 BYE\r\n\r\n";
        let r = request(text);
        let vias = &r.headers.vias;
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[1].transport, Transport::Tcp);
        assert_eq!(&*vias[1].host, "2001:db8::1");
        assert_eq!(vias[1].port, Some(5070));
        assert_eq!(vias[1].rport, Rport::Value(5071));
        assert_eq!(
            vias[2].received,
            Some("192.0.2.1".parse().expect("literal"))
        );
        assert_eq!(vias[2].port, None);
    }

    #[test]
    fn stamping_the_top_via_fills_received_and_rport() {
        let text = INVITE.replace(
            "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n",
            "Via: SIP/2.0/UDP 10.0.0.5:5061;rport;branch=z9hG4bK-1-0, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp\r\n",
        );
        let mut r = request(&text);
        r.headers
            .stamp_top_via("192.0.2.7:40000".parse().expect("addr"), true);
        let bytes = r.response(200, Some("t")).finish(None, b"");
        let text = String::from_utf8(bytes.to_vec()).expect("ascii");
        assert!(
            text.contains("Via: SIP/2.0/UDP 10.0.0.5:5061;branch=z9hG4bK-1-0;received=192.0.2.7;rport=40000, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp\r\n"),
            "{text}"
        );
        assert_eq!(r.headers.top_via().rport, Rport::Value(40000));
    }

    #[test]
    fn rport_without_value_is_requested() {
        let text = INVITE.replace("branch=z9hG4bK-1-0", "rport;branch=z9hG4bK-1-0");
        assert_eq!(request(&text).headers.top_via().rport, Rport::Requested);
    }

    // --- rsip 0.4 defects, pinned ---------------------------------------------

    #[test]
    fn was_rsip_defect_unknown_via_transport_is_kept() {
        let text = INVITE.replace("SIP/2.0/UDP", "SIP/2.0/XYZ");
        let r = request(&text);
        assert_eq!(
            r.headers.top_via().transport,
            Transport::Other("XYZ".into())
        );
        let text = INVITE.replace("SIP/2.0/UDP", "SIP/2.0/SCTP");
        assert_eq!(request(&text).headers.top_via().transport, Transport::Sctp);
    }

    #[test]
    fn was_rsip_defect_leading_crlf_in_body_is_preserved() {
        let text = INVITE
            .replace("Content-Length: 4", "Content-Length: 6")
            .replace("\r\nv=0\n", "\r\n\r\nv=0\n");
        let r = request(&text);
        assert_eq!(&r.body[..], b"\r\nv=0\n");
    }

    #[test]
    fn was_rsip_defect_bare_lf_in_reason_phrase_is_rejected() {
        let text = b"SIP/2.0 200 O\nK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 7 OPTIONS\r\n\r\n";
        assert_eq!(error(text), ParseError::BareLineBreak);
    }

    #[test]
    fn was_rsip_defect_sip_1_0_is_rejected_as_unsupported_version() {
        let text = INVITE.replace("SIP/2.0\r\n", "SIP/1.0\r\n");
        assert_eq!(error(text.as_bytes()), ParseError::VersionNotSupported);
        let text = b"SIP/1.1 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 7 OPTIONS\r\n\r\n";
        assert_eq!(error(text), ParseError::VersionNotSupported);
    }

    // --- rejections ---------------------------------------------------------

    #[test]
    fn rejects_empty_and_crlf_only_input() {
        assert_eq!(error(b""), ParseError::Empty);
        assert_eq!(error(b"\r\n\r\n"), ParseError::Empty);
    }

    #[test]
    fn rejects_request_without_call_id_but_can_answer_400() {
        let text = INVITE.replace("Call-ID: 1-123@127.0.0.1\r\n", "");
        let Err(failure) = parse(text.as_bytes()) else {
            panic!()
        };
        assert_eq!(failure.error, ParseError::MissingHeader("Call-ID"));
        // RFC 4475 §3.3.1: still answered, matched by Via branch and CSeq.
        let seed = failure.seed.expect("Via and CSeq are present");
        let text =
            String::from_utf8(seed.response(400, "Bad Request", "t", &[]).to_vec()).expect("ascii");
        assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("\r\nCSeq: 1 INVITE\r\n"), "{text}");
        assert!(!text.contains("Call-ID"), "{text}");
    }

    #[test]
    fn rejects_bad_cseq_with_a_seed_for_400() {
        let text = INVITE.replace("CSeq: 1 INVITE", "CSeq: one INVITE");
        let Err(failure) = parse(text.as_bytes()) else {
            panic!()
        };
        assert_eq!(failure.error, ParseError::BadCSeq);
        let seed = failure.seed.expect("Via/From/To/Call-ID/CSeq are present");
        let bytes = seed.response(400, "Bad Request", "t1", &[]);
        // The 400 echoes the bad CSeq verbatim (§8.2.6.2), so it is checked
        // as text rather than re-parsed.
        let text = String::from_utf8(bytes.to_vec()).expect("ascii");
        assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"), "{text}");
        assert!(
            text.contains("\r\nTo: service <sip:service@127.0.0.1:5060>;tag=t1\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n"));
        assert!(text.contains("\r\nCSeq: one INVITE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn rejects_header_block_without_the_empty_line() {
        let text = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 7 OPTIONS\r\n";
        let f = parse(text.as_bytes()).expect_err("no empty line");
        assert_eq!(f.error, ParseError::Syntax);
        // Answerable (400) from the complete lines, even cut mid-line.
        assert!(f.seed.is_some());
        let cut = format!("{text}Max-Forw");
        assert!(parse(cut.as_bytes()).expect_err("cut").seed.is_some());
        // A response is never answered.
        let resp = text.replace("OPTIONS sip:a@127.0.0.1 SIP/2.0", "SIP/2.0 200 OK");
        assert!(
            parse(resp.as_bytes())
                .expect_err("no empty line")
                .seed
                .is_none()
        );
    }

    #[test]
    fn rejects_cseq_method_mismatch() {
        let text = INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
        assert_eq!(error(text.as_bytes()), ParseError::BadCSeq);
    }

    #[test]
    fn rejects_body_shorter_than_content_length() {
        let text = INVITE.replace("Content-Length: 4", "Content-Length: 400");
        assert_eq!(error(text.as_bytes()), ParseError::BodyTruncated);
    }

    #[test]
    fn truncates_body_longer_than_content_length() {
        let text = INVITE.replace("Content-Length: 4", "Content-Length: 2");
        assert_eq!(&request(&text).body[..], b"v=");
    }

    #[test]
    fn rejects_missing_via() {
        let text = INVITE.replace("Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n", "");
        assert_eq!(error(text.as_bytes()), ParseError::MissingHeader("Via"));
    }

    #[test]
    fn rejects_malformed_via() {
        for bad in [
            "SIP/2.0 127.0.0.1",
            "SIP/3.0/UDP 127.0.0.1",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP 1.2.3.4:99999",
        ] {
            let text = INVITE.replace("SIP/2.0/UDP 127.0.0.1:5061", bad);
            assert_eq!(error(text.as_bytes()), ParseError::BadVia, "{bad}");
        }
    }

    #[test]
    fn rejects_bad_max_forwards() {
        let text = INVITE.replace("Max-Forwards: 70", "Max-Forwards: -1");
        assert_eq!(error(text.as_bytes()), ParseError::BadMaxForwards);
    }

    #[test]
    fn rejects_status_codes_out_of_range() {
        for code in ["099", "700", "2x0"] {
            let text = format!(
                "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 7 OPTIONS\r\n\r\n"
            );
            assert_eq!(error(text.as_bytes()), ParseError::BadStatus, "{code}");
        }
    }

    #[test]
    fn rejects_garbage_and_every_truncation_without_panicking() {
        assert!(parse(b"\x00\x00\x00\x00").is_err());
        assert!(parse(b"hello world\r\n\r\n").is_err());
        assert!(parse(&[0xFF; 300]).is_err());
        let bytes = INVITE.as_bytes();
        for cut in 0..bytes.len() {
            // Must never panic; most prefixes are errors.
            let _ = parse(&bytes[..cut]);
        }
    }

    #[test]
    fn unknown_method_is_kept_for_501() {
        let text = INVITE
            .replace("INVITE sip", "FOO sip")
            .replace("1 INVITE", "1 FOO");
        assert_eq!(request(&text).method, Method::Extension("FOO".into()));
    }

    #[test]
    fn unknown_headers_are_kept_by_name() {
        let text = INVITE.replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nX-Custom: a:b\r\n",
        );
        let r = request(&text);
        assert_eq!(r.headers.other("x-custom"), Some("a:b"));
        assert_eq!(r.headers.other("X-Missing"), None);
    }

    #[test]
    fn split_list_respects_quotes_and_angle_brackets() {
        let items: Vec<_> =
            split_list(r#""Doe, John" <sip:a@b;x=1,2>;tag=1 , <sip:c@d>,,"#).collect();
        assert_eq!(
            items,
            vec![r#""Doe, John" <sip:a@b;x=1,2>;tag=1"#, "<sip:c@d>"]
        );
    }

    fn options(extra_first_line: &str, headers: &str) -> Vec<u8> {
        format!(
            "{extra_first_line}\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: abc\r\n\
CSeq: 7 OPTIONS\r\n{headers}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn rejects_request_lines_with_extra_spaces() {
        for line in [
            "OPTIONS  sip:a@127.0.0.1 SIP/2.0",
            "OPTIONS sip:a@127.0.0.1  SIP/2.0",
            "OPTIONS sip:a@127.0.0.1 SIP/2.0 ",
            "OPTIONS sip:a@127.0.0.1; lr SIP/2.0",
            " OPTIONS sip:a@127.0.0.1 SIP/2.0",
            "OPTIONS\tsip:a@127.0.0.1 SIP/2.0",
        ] {
            let f = parse(&options(line, "")).expect_err(line);
            assert!(f.seed.is_some(), "{line}: answerable");
            assert!(
                matches!(f.error, ParseError::Syntax | ParseError::BadRequestUri),
                "{line}: {:?}",
                f.error
            );
        }
    }

    #[test]
    fn rejects_request_uris_that_are_not_uris() {
        for uri in [
            "<sip:a@127.0.0.1>",
            "a@127.0.0.1",
            "sip:a@127.0.0.1?Route=%3Csip:x%3E",
            "sip:a@b@c",
            "1sip:x",
        ] {
            let line = format!("OPTIONS {uri} SIP/2.0");
            assert_eq!(
                error(&options(&line, "")),
                ParseError::BadRequestUri,
                "{uri}"
            );
        }
        // Unknown schemes parse: the endpoint answers 416.
        let r = parse(&options("OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0", ""));
        assert!(matches!(r, Ok(Message::Request(_))));
    }

    #[test]
    fn rejects_unknown_version_as_505_even_with_matching_via() {
        let text = options("OPTIONS sip:a@b SIP/7.0", "").to_vec();
        let text = String::from_utf8(text)
            .expect("ascii")
            .replace("SIP/2.0/UDP", "SIP/7.0/UDP");
        assert_eq!(error(text.as_bytes()), ParseError::VersionNotSupported);
        assert_eq!(
            error(&options("OPTIONS sip:a@b HTTP/1.1", "")),
            ParseError::Syntax
        );
    }

    #[test]
    fn rejects_fields_that_must_appear_once() {
        for (extra, name) in [
            ("Call-ID: def\r\n", "Call-ID"),
            ("CSeq: 8 OPTIONS\r\n", "CSeq"),
            ("From: <sip:c@127.0.0.1>;tag=1\r\n", "From"),
            ("To: <sip:c@127.0.0.1>\r\n", "To"),
            ("Max-Forwards: 70\r\nMax-Forwards: 69\r\n", "Max-Forwards"),
            ("Content-Length: 0\r\nl: 0\r\n", "Content-Length"),
        ] {
            assert_eq!(
                error(&options("OPTIONS sip:a@b SIP/2.0", extra)),
                ParseError::Duplicate(name)
            );
        }
    }

    #[test]
    fn rejects_bad_content_length_and_overlarge_scalars() {
        for (extra, want) in [
            ("Content-Length: -999\r\n", ParseError::BadContentLength),
            ("Content-Length: +1\r\n", ParseError::BadContentLength),
            (
                "Content-Length: 99999999999999999999999\r\n",
                ParseError::BadContentLength,
            ),
            ("Max-Forwards: 300\r\n", ParseError::BadMaxForwards),
            ("Max-Forwards: 4294967296\r\n", ParseError::BadMaxForwards),
        ] {
            assert_eq!(
                error(&options("OPTIONS sip:a@b SIP/2.0", extra)),
                want,
                "{extra}"
            );
        }
        let text = INVITE.replace("CSeq: 1 INVITE", "CSeq: 36893488147419103232 INVITE");
        assert_eq!(error(text.as_bytes()), ParseError::BadCSeq);
    }

    #[test]
    fn rejects_malformed_field_lines() {
        for extra in [
            "No colon here\r\n",
            ": no name\r\n",
            "Bad Name: x\r\n",
            "Bad<Name>: x\r\n",
        ] {
            assert_eq!(
                error(&options("OPTIONS sip:a@b SIP/2.0", extra)),
                ParseError::Syntax,
                "{extra}"
            );
        }
        // A continuation line right after the start line has nothing to fold into.
        let text = b"OPTIONS sip:a@b SIP/2.0\r\n x\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n";
        assert_eq!(error(text), ParseError::Syntax);
        let mut text = options("OPTIONS sip:a@b SIP/2.0", "X-Bin: \u{7f}");
        let at = text.len() - 2;
        text.splice(at..at, [0xFF, b'\r', b'\n']);
        assert_eq!(error(&text), ParseError::NotUtf8);
    }

    #[test]
    fn rejects_empty_via_items_and_params() {
        for via in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP 192.0.2.15,",
            "SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKx;",
            "SIP/2.0/UDP host name;branch=z9hG4bKx",
        ] {
            let text = INVITE.replace("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0", via);
            assert_eq!(error(text.as_bytes()), ParseError::BadVia, "{via}");
        }
    }

    #[test]
    fn rejects_malformed_contact_in_requests_only() {
        let text = INVITE.replace(
            "Contact: sip:sipp@127.0.0.1:5061",
            "Contact: \"Joe\" <sip:joe@example.org>;;;;",
        );
        assert_eq!(error(text.as_bytes()), ParseError::BadAddress);
        let text = INVITE.replace(
            "Contact: sip:sipp@127.0.0.1:5061",
            "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        );
        assert_eq!(error(text.as_bytes()), ParseError::BadAddress);
        let text = INVITE.replace("Contact: sip:sipp@127.0.0.1:5061", "Contact: *");
        assert!(parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn whitespace_torture_is_read_right() {
        // RFC 4475 §3.1.1.1 in small: spaces before colons, folded values,
        // a Via spread over lines, leading zeros.
        let text = "INVITE sip:a@127.0.0.1 SIP/2.0\r\n\
TO :\r\n sip:a@127.0.0.1 ;   tag    = 1918181833n\r\n\
from   : \"J R \\\\\\\"\"       <sip:j@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n\
MaX-fOrWaRdS: 0068\r\nCall-ID: w@192.0.2.1\r\n\
cseq: 0009\r\n  INVITE\r\n\
Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n\
Content-Length   : 0\r\n\r\n";
        let r = request(text);
        assert_eq!(r.headers.to.tag.as_deref(), Some("1918181833n"));
        assert_eq!(r.headers.from.tag.as_deref(), Some("98asjd8"));
        assert_eq!(&*r.headers.from.uri, "sip:j@example.com");
        assert_eq!(r.headers.max_forwards, Some(68));
        assert_eq!(r.headers.cseq.seq, 9);
        assert_eq!(&*r.headers.top_via().host, "192.0.2.2");
        assert_eq!(r.headers.top_via().transport, Transport::Udp);
    }

    #[test]
    fn status_lines() {
        let resp = |line: &str| {
            format!(
                "{line}\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 7 OPTIONS\r\n\r\n"
            )
        };
        for (line, reason) in [
            ("SIP/2.0 100 ", ""),
            ("SIP/2.0 100", ""),
            ("SIP/2.0 200 = 2**3 ü", "= 2**3 ü"),
        ] {
            let Ok(Message::Response(r)) = parse(resp(line).as_bytes()) else {
                panic!("{line}")
            };
            assert_eq!(&*r.reason, reason);
        }
        for line in [
            "SIP/2.0 4294967301 big",
            "SIP/2.0 20 short",
            "SIP/2.0  200 OK",
        ] {
            assert_eq!(
                error(resp(line).as_bytes()),
                ParseError::BadStatus,
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_method_with_other_cseq_method_is_501_material() {
        let text = INVITE.replace("INVITE sip", "NEWMETHOD sip");
        let f = parse(text.as_bytes()).expect_err("mismatch");
        assert_eq!(f.error, ParseError::UnknownMethod);
        assert!(f.seed.is_some());
    }

    #[test]
    fn trailing_bytes_after_the_body_are_ignored() {
        let mut text = INVITE.as_bytes().to_vec();
        text.extend_from_slice(b"\r\nINVITE sip:joe@example.com SIP/2.0\r\n");
        assert_eq!(
            &request(std::str::from_utf8(&text).expect("ascii")).body[..],
            b"v=0\n"
        );
    }

    #[test]
    fn print_then_parse_is_stable() {
        let text = INVITE.replace("Max-Forwards: 70\r\n", "m: <sip:x@y>\r\nX-A: 1\r\n\t2\r\n");
        let first = parse(text.as_bytes()).expect("parses");
        let printed = first.print();
        let second = parse(&printed).expect("printed parses");
        assert_eq!(printed, second.print());
        let printed = String::from_utf8(printed.to_vec()).expect("ascii");
        assert!(
            printed.contains("\r\nContact: <sip:x@y>\r\nX-A: 1 2\r\n"),
            "{printed}"
        );
    }
}
