//! SIP messages: the one place that touches `rsip`.
//!
//! `rsip` 0.4 tokenizes the start line and splits the header block into
//! name/value pairs; everything else is done here, because rsip is
//! unmaintained and has parse defects that real peers hit. Each is pinned by a
//! test at the bottom of this file:
//!
//! | rsip defect | what we do |
//! |---|---|
//! | typed `Via` rejects an unknown transport (`SIP/2.0/SCTP`, `…/XYZ`) | Via is parsed here; unknown transports are kept as [`Transport::Other`] |
//! | leading CRLF stripped from bodies | the body is cut from the original bytes after the first blank line, by `Content-Length` |
//! | a bare LF inside the reason phrase (or any header value) is accepted | rejected here as malformed |
//! | `SIP/1.0` (any `SIP/1.x`) accepted as a version | only `SIP/2.0` is accepted; others give [`ParseError::VersionNotSupported`] (→ 505) |
//!
//! | `Uri` rejects IPv6 references (`sip:[::1]:5060`), unknown `transport=` values and `tel:` URIs | [`SipUri`] is parsed here |
//!
//! rsip also knows neither compact header forms (`v:`, `i:`, `l:` …) nor
//! folded header lines; names are expanded and folded lines unfolded here.
//!
//! Parsing gives a [`Message`] whose essential headers (Via list, From, To,
//! Call-ID, CSeq, Max-Forwards) are already typed, so the transaction and
//! dialog layers never re-parse them. Responses are built by copying the raw
//! header values of the request, as RFC 3261 §8.2.6.2 asks.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

/// A parsed SIP message.
#[derive(Debug, Clone)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
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
    /// Any other token (rsip rejects these; we keep them).
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

/// A name-addr or addr-spec with header parameters (From, To, Contact,
/// Route, Record-Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The URI, without angle brackets.
    pub uri: Box<str>,
    /// The tag parameter, when present.
    pub tag: Option<Box<str>>,
    /// The value exactly as received.
    pub raw: Box<str>,
}

impl NameAddr {
    /// Parses a From/To/Contact/Route value.
    pub fn parse(value: &str) -> Result<NameAddr, ParseError> {
        let value = value.trim();
        let (uri, params) = if let Some(open) = value.find('<') {
            let close = value[open..]
                .find('>')
                .map(|i| open + i)
                .ok_or(ParseError::BadAddress)?;
            (&value[open + 1..close], &value[close + 1..])
        } else {
            // RFC 3261 §20.10: without angle brackets, parameters after the
            // URI belong to the header field, not to the URI.
            match value.find(';') {
                Some(semi) => (&value[..semi], &value[semi..]),
                None => (value, ""),
            }
        };
        let uri = uri.trim();
        if uri.is_empty() || !uri.contains(':') {
            return Err(ParseError::BadAddress);
        }
        let tag = params_iter(params)
            .find(|(name, _)| name.eq_ignore_ascii_case("tag"))
            .and_then(|(_, v)| v)
            .filter(|v| !v.is_empty())
            .map(Into::into);
        Ok(NameAddr {
            uri: uri.into(),
            tag,
            raw: value.into(),
        })
    }
}

/// The parts of a `sip:`/`sips:` URI that routing needs (RFC 3261 §19.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, when present (still escaped).
    pub user: Option<Box<str>>,
    /// The host: a name, an IPv4 literal, or an IPv6 literal without brackets.
    pub host: Box<str>,
    /// The port, when given.
    pub port: Option<u16>,
    /// The `transport` parameter, lower-cased, when given.
    pub transport: Option<Box<str>>,
    /// The `lr` parameter (loose routing, §16.12.1.1).
    pub lr: bool,
    /// The `maddr` parameter.
    pub maddr: Option<Box<str>>,
}

impl SipUri {
    /// Parses a `sip:` or `sips:` URI (without angle brackets).
    pub fn parse(uri: &str) -> Result<SipUri, ParseError> {
        let uri = uri.trim();
        let (secure, rest) = if let Some(r) = strip_prefix_ci(uri, "sips:") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(uri, "sip:") {
            (false, r)
        } else {
            return Err(ParseError::BadUri);
        };
        // Headers (`?…`) are not used for routing.
        let rest = rest.split('?').next().unwrap_or(rest);
        let (user, hostport_params) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostport, params) = match hostport_params.find(';') {
            Some(i) => (&hostport_params[..i], &hostport_params[i..]),
            None => (hostport_params, ""),
        };
        let (host, port) = split_host_port(hostport).ok_or(ParseError::BadUri)?;
        if host.is_empty() || host.contains(['<', '>', ' ', '"']) {
            return Err(ParseError::BadUri);
        }
        let mut parsed = SipUri {
            secure,
            user: user.filter(|u| !u.is_empty()).map(Into::into),
            host: host.into(),
            port,
            transport: None,
            lr: false,
            maddr: None,
        };
        for (name, value) in params_iter(params) {
            if name.eq_ignore_ascii_case("transport") {
                parsed.transport = value.map(|v| v.to_ascii_lowercase().into());
            } else if name.eq_ignore_ascii_case("lr") {
                parsed.lr = true;
            } else if name.eq_ignore_ascii_case("maddr") {
                parsed.maddr = value.map(Into::into);
            }
        }
        Ok(parsed)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
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
    from: Box<str>,
    to: Box<str>,
    to_has_tag: bool,
    call_id: Box<str>,
    cseq: Box<str>,
}

impl ResponseSeed {
    /// Builds a complete stateless response with the given To-tag (added only
    /// when the request's To has none).
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
        put_header(&mut out, "From", &self.from);
        if self.to_has_tag || status == 100 {
            put_header(&mut out, "To", &self.to);
        } else {
            put_to_with_tag(&mut out, &self.to, to_tag);
        }
        put_header(&mut out, "Call-ID", &self.call_id);
        put_header(&mut out, "CSeq", &self.cseq);
        for (name, value) in extra {
            put_header(&mut out, name, value);
        }
        put_header(&mut out, "Content-Length", "0");
        out.put_slice(b"\r\n");
        out.freeze()
    }
}

/// Parses one SIP message (a UDP datagram, or one frame cut from a stream).
pub fn parse(data: &[u8]) -> Result<Message, ParseFailure> {
    let fail = |error| ParseFailure { error, seed: None };
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or_else(|| fail(ParseError::Empty))?;
    let data = &data[start..];
    // RFC 3261 §7: the header block ends with an empty line. A datagram
    // without one was cut short (or is not SIP); reject it rather than guess.
    let Some(i) = find(data, b"\r\n\r\n") else {
        return Err(fail(ParseError::Syntax));
    };
    let (head_len, body_start) = (i + 2, i + 4);
    let head = &data[..head_len];
    let raw_body = &data[body_start..];

    // rsip wants the header block terminated by a blank line, and knows no
    // folding; unfold (RFC 3261 §7.3.1) into a copy only when needed.
    // Without folding (nearly always) the slice up to the blank line is
    // passed as it is: no copy on the common path.
    let unfolded;
    let head: &[u8] = if has_folding(head) {
        let mut copy = unfold(head);
        copy.extend_from_slice(b"\r\n");
        unfolded = copy;
        &unfolded
    } else {
        &data[..body_start]
    };

    use rsip::message::sip_message::Tokenizer as MessageTokenizer;
    let (_, tokens) = MessageTokenizer::tokenize(head).map_err(|_| fail(ParseError::Syntax))?;

    match tokens {
        MessageTokenizer::Request(req) => {
            let method = std::str::from_utf8(req.method.value)
                .ok()
                .and_then(Method::from_token)
                .ok_or_else(|| fail(ParseError::Syntax))?;
            let fields = collect_fields(&req.headers).map_err(fail)?;
            let seed = response_seed(&fields);
            let with_seed = |error| ParseFailure {
                error,
                seed: seed.clone(),
            };
            // After the seed, so a SIP/1.0 request can be answered with 505.
            check_version(req.version.major, req.version.minor).map_err(with_seed)?;
            // The Request-URI as written: between the first and last space of
            // the start line (rsip has validated its shape).
            let line_end = find(head, b"\r\n").unwrap_or(head.len());
            let line = std::str::from_utf8(&head[..line_end])
                .map_err(|_| with_seed(ParseError::NotUtf8))?;
            let uri = line
                .split(' ')
                .nth(1)
                .filter(|u| u.contains(':'))
                .ok_or_else(|| with_seed(ParseError::BadRequestUri))?;
            let headers = Headers::from_fields(fields).map_err(with_seed)?;
            if headers.cseq.method != method {
                return Err(with_seed(ParseError::BadCSeq));
            }
            let body = cut_body(&headers, raw_body).map_err(with_seed)?;
            Ok(Message::Request(Request {
                method,
                uri: uri.into(),
                headers,
                body,
            }))
        }
        MessageTokenizer::Response(resp) => {
            check_version(resp.version.major, resp.version.minor).map_err(fail)?;
            let code = std::str::from_utf8(resp.status_code.code)
                .ok()
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (100..=699).contains(c))
                .ok_or_else(|| fail(ParseError::BadStatus))?;
            // rsip accepts a bare LF inside the reason phrase.
            if resp
                .status_code
                .reason
                .iter()
                .any(|&b| b == b'\r' || b == b'\n')
            {
                return Err(fail(ParseError::BareLineBreak));
            }
            let reason = std::str::from_utf8(resp.status_code.reason)
                .map_err(|_| fail(ParseError::NotUtf8))?;
            let fields = collect_fields(&resp.headers).map_err(fail)?;
            let headers = Headers::from_fields(fields).map_err(fail)?;
            let body = cut_body(&headers, raw_body).map_err(fail)?;
            Ok(Message::Response(Response {
                status: code,
                reason: reason.into(),
                headers,
                body,
            }))
        }
    }
}

impl Headers {
    fn from_fields(fields: Vec<Field>) -> Result<Headers, ParseError> {
        let mut vias = Vec::with_capacity(2);
        let mut from = None;
        let mut to = None;
        let mut call_id = None;
        let mut cseq = None;
        let mut max_forwards = None;
        for field in &fields {
            match field.name {
                HeaderName::Via => {
                    for value in split_list(&field.value) {
                        vias.push(parse_via(value)?);
                    }
                }
                HeaderName::From if from.is_none() => from = Some(NameAddr::parse(&field.value)?),
                HeaderName::To if to.is_none() => to = Some(NameAddr::parse(&field.value)?),
                HeaderName::CallId if call_id.is_none() => {
                    if field.value.is_empty() || field.value.contains(char::is_whitespace) {
                        return Err(ParseError::MissingHeader("Call-ID"));
                    }
                    call_id = Some(CallId(field.value.clone()));
                }
                HeaderName::CSeq if cseq.is_none() => cseq = Some(parse_cseq(&field.value)?),
                HeaderName::MaxForwards if max_forwards.is_none() => {
                    max_forwards = Some(
                        field
                            .value
                            .parse::<u32>()
                            .map_err(|_| ParseError::BadMaxForwards)?,
                    );
                }
                _ => {}
            }
        }
        if vias.is_empty() {
            return Err(ParseError::MissingHeader("Via"));
        }
        Ok(Headers {
            fields,
            vias,
            from: from.ok_or(ParseError::MissingHeader("From"))?,
            to: to.ok_or(ParseError::MissingHeader("To"))?,
            call_id: call_id.ok_or(ParseError::MissingHeader("Call-ID"))?,
            cseq: cseq.ok_or(ParseError::MissingHeader("CSeq"))?,
            max_forwards,
        })
    }

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
            from: h.from.raw.clone(),
            to: h.to.raw.clone(),
            to_has_tag: h.to.tag.is_some(),
            call_id: h.call_id.0.clone(),
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

/// Splits a comma-separated header value, respecting quotes and `<…>`.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        loop {
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
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// Iterates `;name=value` parameters (values unquoted as given).
pub fn params_iter(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    params.split(';').filter_map(|p| {
        let p = p.trim();
        if p.is_empty() {
            return None;
        }
        Some(match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        })
    })
}

// ---------------------------------------------------------------------------
// helpers

fn check_version(major: &[u8], minor: &[u8]) -> Result<(), ParseError> {
    // rsip accepts SIP/1.x; RFC 3261 §7.1 speaks only 2.0.
    if major == b"2" && minor == b"0" {
        Ok(())
    } else {
        Err(ParseError::VersionNotSupported)
    }
}

type RawHeader<'a> = rsip::headers::header::Tokenizer<'a>;

/// Turns rsip's name/value slices into fields.
fn collect_fields(raw: &[RawHeader<'_>]) -> Result<Vec<Field>, ParseError> {
    let mut fields = Vec::with_capacity(raw.len());
    for header in raw {
        let name = std::str::from_utf8(header.name).map_err(|_| ParseError::NotUtf8)?;
        // rsip takes a value up to CRLF, so a bare CR or LF can hide inside.
        if header.value.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(ParseError::BareLineBreak);
        }
        let value = std::str::from_utf8(header.value).map_err(|_| ParseError::NotUtf8)?;
        let canonical = HeaderName::parse(name);
        fields.push(Field {
            name: canonical,
            other_name: (canonical == HeaderName::Other).then(|| name.into()),
            value: value.trim().into(),
        });
    }
    Ok(fields)
}

fn response_seed(fields: &[Field]) -> Option<ResponseSeed> {
    let first = |name| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.clone())
    };
    let vias: Vec<Box<str>> = fields
        .iter()
        .filter(|f| f.name == HeaderName::Via)
        .map(|f| f.value.clone())
        .collect();
    if vias.is_empty() {
        return None;
    }
    let to = first(HeaderName::To)?;
    let to_has_tag = NameAddr::parse(&to).ok().is_some_and(|t| t.tag.is_some());
    Some(ResponseSeed {
        vias,
        from: first(HeaderName::From)?,
        to,
        to_has_tag,
        call_id: first(HeaderName::CallId)?,
        cseq: first(HeaderName::CSeq)?,
    })
}

fn parse_via(value: &str) -> Result<Via, ParseError> {
    // sent-protocol LWS sent-by *( SEMI via-params )
    let (proto, rest) = value
        .split_once(char::is_whitespace)
        .ok_or(ParseError::BadVia)?;
    let mut parts = proto.split('/');
    let (Some(name), Some(version), Some(transport), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadVia);
    };
    if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" || transport.is_empty() {
        return Err(ParseError::BadVia);
    }
    let rest = rest.trim_start();
    let (sent_by, params) = match rest.find(';') {
        Some(i) => (rest[..i].trim(), &rest[i..]),
        None => (rest.trim(), ""),
    };
    let (host, port) = split_host_port(sent_by).ok_or(ParseError::BadVia)?;
    let mut via = Via {
        transport: Transport::parse(transport.trim()),
        host: host.into(),
        port,
        branch: None,
        received: None,
        rport: Rport::Absent,
        raw: value.into(),
    };
    for (name, val) in params_iter(params) {
        if name.eq_ignore_ascii_case("branch") {
            via.branch = val.filter(|v| !v.is_empty()).map(Into::into);
        } else if name.eq_ignore_ascii_case("received") {
            via.received = val.and_then(|v| v.trim_matches(['[', ']']).parse().ok());
        } else if name.eq_ignore_ascii_case("rport") {
            via.rport = match val {
                None | Some("") => Rport::Requested,
                Some(v) => Rport::Value(v.parse().map_err(|_| ParseError::BadVia)?),
            };
        }
    }
    Ok(via)
}

/// Splits `host[:port]`, `[v6]:port` or `v4:port`.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                return None;
            }
            Some((host, Some(port.parse().ok()?)))
        }
        _ if s.contains(char::is_whitespace) => None,
        _ => Some((s, None)),
    }
}

fn parse_cseq(value: &str) -> Result<CSeq, ParseError> {
    let mut it = value.split_whitespace();
    let (Some(seq), Some(method), None) = (it.next(), it.next(), it.next()) else {
        return Err(ParseError::BadCSeq);
    };
    Ok(CSeq {
        seq: seq.parse().map_err(|_| ParseError::BadCSeq)?,
        method: Method::from_token(method).ok_or(ParseError::BadCSeq)?,
    })
}

fn cut_body(headers: &Headers, raw_body: &[u8]) -> Result<Bytes, ParseError> {
    let Some(len) = headers.get(HeaderName::ContentLength) else {
        // Over UDP Content-Length is optional: the body is the rest.
        return Ok(Bytes::copy_from_slice(raw_body));
    };
    let len: usize = len.parse().map_err(|_| ParseError::BadContentLength)?;
    match raw_body.get(..len) {
        Some(body) => Ok(Bytes::copy_from_slice(body)),
        None => Err(ParseError::BodyTruncated),
    }
}

fn has_folding(head: &[u8]) -> bool {
    head.windows(3)
        .any(|w| w[0] == b'\r' && w[1] == b'\n' && (w[2] == b' ' || w[2] == b'\t'))
}

fn unfold(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    let mut i = 0;
    while i < head.len() {
        if head[i] == b'\r'
            && head.get(i + 1) == Some(&b'\n')
            && matches!(head.get(i + 2), Some(b' ' | b'\t'))
        {
            out.push(b' ');
            i += 2;
            while matches!(head.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
        } else {
            out.push(head[i]);
            i += 1;
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

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

    // --- rsip defects pinned ---------------------------------------------

    #[test]
    fn rsip_defect_unknown_via_transport_is_kept() {
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
    fn rsip_defect_leading_crlf_in_body_is_preserved() {
        let text = INVITE
            .replace("Content-Length: 4", "Content-Length: 6")
            .replace("\r\nv=0\n", "\r\n\r\nv=0\n");
        let r = request(&text);
        assert_eq!(&r.body[..], b"\r\nv=0\n");
    }

    #[test]
    fn rsip_defect_bare_lf_in_reason_phrase_is_rejected() {
        let text = b"SIP/2.0 200 O\nK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 7 OPTIONS\r\n\r\n";
        assert_eq!(error(text), ParseError::BareLineBreak);
    }

    #[test]
    fn rsip_defect_sip_1_0_is_rejected_as_unsupported_version() {
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
        // Without Call-ID no response can be built.
        assert!(failure.seed.is_none());
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
        assert_eq!(error(text.as_bytes()), ParseError::Syntax);
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

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse("sip:a@b;tag=1").expect("addr-spec");
        assert_eq!((&*a.uri, a.tag.as_deref()), ("sip:a@b", Some("1")));
        let a = NameAddr::parse("\"x\" <sip:a@b;lr>;tag=2").expect("name-addr");
        assert_eq!((&*a.uri, a.tag.as_deref()), ("sip:a@b;lr", Some("2")));
        assert_eq!(NameAddr::parse("<sip:a@b"), Err(ParseError::BadAddress));
        assert_eq!(NameAddr::parse("nothing"), Err(ParseError::BadAddress));
    }

    #[test]
    fn rsip_defect_uri_forms_rsip_rejects_are_parsed() {
        let u = SipUri::parse("sip:[::1]:5060;transport=TCP").expect("IPv6 reference");
        assert_eq!(
            (&*u.host, u.port, u.transport.as_deref()),
            ("::1", Some(5060), Some("tcp"))
        );
        let u = SipUri::parse("sips:a@example.com;transport=xyz;lr;maddr=1.2.3.4")
            .expect("unknown transport");
        assert!(u.secure && u.lr);
        assert_eq!(u.transport.as_deref(), Some("xyz"));
        assert_eq!(u.maddr.as_deref(), Some("1.2.3.4"));
        assert_eq!(u.user.as_deref(), Some("a"));
        let u = SipUri::parse("sip:127.0.0.1:5060;ftag=abc;lr=on").expect("lr with a value");
        assert!(u.lr);
        assert_eq!(SipUri::parse("tel:+15551234567"), Err(ParseError::BadUri));
        assert_eq!(SipUri::parse("sip:a@b:99999"), Err(ParseError::BadUri));
        assert_eq!(SipUri::parse("sip:"), Err(ParseError::BadUri));
    }

    #[test]
    fn split_host_port_forms() {
        assert_eq!(split_host_port("1.2.3.4:5"), Some(("1.2.3.4", Some(5))));
        assert_eq!(split_host_port("[::1]:5"), Some(("::1", Some(5))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_host_port("host"), Some(("host", None)));
        assert_eq!(split_host_port("host:x"), None);
        assert_eq!(split_host_port(""), None);
    }
}
