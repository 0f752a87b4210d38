//! The tokenizer: start line, header fields, body (RFC 3261 §7, §25.1).
//!
//! Written here rather than on a crate: rsip 0.4 (unmaintained) dropped
//! RFC 4475's valid `wsinv`, `intmeth`, `longreq` and `semiuri` — white
//! space around `:` in field names, odd tokens in methods, URIs with `;` and
//! `?` in the user part — and needed a workaround per defect. Everything
//! about a field's value beyond its name is left to the typed parsers
//! (Via, name-addr, CSeq …) so the grammar is in one place per element.

use bytes::Bytes;

use super::uri::{
    Params, is_absolute_uri, is_token_byte, is_wsp, split_host_port, strip_prefix_ci,
};
use super::{
    CSeq, CallId, Field, HeaderName, Headers, Message, Method, NameAddr, ParseError, ParseFailure,
    Request, Response, ResponseSeed, Rport, SipUri, Transport, Via, split_list_items,
};

/// The largest Max-Forwards (RFC 4475 §3.1.2.4 calls 300 overlarge; RFC
/// 3261 §8.1.1.6 starts at 70 and no element adds hops).
const MAX_FORWARDS_LIMIT: u32 = 255;

/// Parses one SIP message (a UDP datagram, or one frame cut from a stream).
/// Bytes after the body (`Content-Length` says where it ends) are ignored
/// (RFC 3261 §18.3; RFC 4475 §3.1.1.8).
pub fn parse(data: &[u8]) -> Result<Message, ParseFailure> {
    let fail = |error| ParseFailure { error, seed: None };
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or_else(|| fail(ParseError::Empty))?;
    let data = &data[start..];
    // §7: the header block ends with an empty line. A datagram without one
    // was cut short (or is not SIP); reject it rather than guess.
    let Some(end) = find(data, b"\r\n\r\n") else {
        // Still, a request whose complete header lines give Via and CSeq
        // gets its 400 (the archive's copy of RFC 4475 §3.1.2.15 ends so).
        return Err(ParseFailure {
            error: ParseError::Syntax,
            seed: seed_without_empty_line(data),
        });
    };
    let head = &data[..end];
    let raw_body = &data[end + 4..];
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let start_line = &head[..line_end];
    let block = head.get(line_end + 2..).unwrap_or(&[]);
    if start_line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(fail(ParseError::BareLineBreak));
    }

    if start_line.starts_with(b"SIP/") {
        let (status, reason) = parse_status_line(start_line).map_err(fail)?;
        let fields = collect_fields(block).map_err(fail)?;
        let headers = Headers::from_fields(fields, false).map_err(fail)?;
        let body = cut_body(&headers, raw_body).map_err(fail)?;
        return Ok(Message::Response(Response {
            status,
            reason: reason.into(),
            headers,
            body,
        }));
    }

    let fields = collect_fields(block).map_err(fail)?;
    let seed = response_seed(&fields);
    let with_seed = |error| ParseFailure {
        error,
        seed: seed.clone(),
    };
    // Before the header values, so a SIP/7.0 request gets its 505 even
    // though its Via says SIP/7.0 too (RFC 4475 §3.1.2.16).
    let (method, uri) = parse_request_line(start_line).map_err(with_seed)?;
    let headers = Headers::from_fields(fields, true).map_err(with_seed)?;
    if headers.cseq.method != method {
        // RFC 4475 §3.1.2.18: for a method we do not know, 501 says more
        // than 400.
        let error = match method {
            Method::Extension(_) => ParseError::UnknownMethod,
            _ => ParseError::BadCSeq,
        };
        return Err(with_seed(error));
    }
    let body = cut_body(&headers, raw_body).map_err(with_seed)?;
    Ok(Message::Request(Request {
        method,
        uri: uri.into(),
        headers,
        body,
    }))
}

/// The seed of a request that lacks the empty line after its header
/// fields: from the complete lines only.
fn seed_without_empty_line(data: &[u8]) -> Option<ResponseSeed> {
    if data.starts_with(b"SIP/") {
        return None;
    }
    let last = data.len() - data.iter().rev().position(|&b| b == b'\n')?;
    let head = data[..last].strip_suffix(b"\r\n")?;
    let line_end = find(head, b"\r\n")?;
    let fields = collect_fields(&head[line_end + 2..]).ok()?;
    response_seed(&fields)
}

/// `Method SP Request-URI SP SIP-Version`, single spaces only (§7.1;
/// RFC 4475 §3.1.2.9 and §3.1.2.10 may be rejected, and are).
fn parse_request_line(line: &[u8]) -> Result<(Method, &str), ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Syntax);
    };
    let method = Method::from_token(method).ok_or(ParseError::Syntax)?;
    check_version(version)?;
    if !is_absolute_uri(uri) {
        return Err(ParseError::BadRequestUri);
    }
    // A SIP Request-URI must be a SIP URI, and carry no headers (§19.1.1;
    // RFC 4475 §3.1.2.11).
    if strip_prefix_ci(uri, "sip:").is_some() || strip_prefix_ci(uri, "sips:").is_some() {
        match SipUri::parse(uri) {
            Ok(u) if u.headers.is_none() => {}
            _ => return Err(ParseError::BadRequestUri),
        }
    }
    Ok((method, uri))
}

/// `SIP-Version SP Status-Code SP Reason-Phrase`; the reason may be empty
/// (RFC 4475 §3.1.1.13).
fn parse_status_line(line: &[u8]) -> Result<(u16, &str), ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let (version, rest) = line.split_once(' ').ok_or(ParseError::Syntax)?;
    check_version(version)?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadStatus);
    }
    let status: u16 = code.parse().map_err(|_| ParseError::BadStatus)?;
    if !(100..=699).contains(&status) {
        return Err(ParseError::BadStatus);
    }
    Ok((status, reason))
}

/// `SIP/2.0` is spoken; another `SIP/x.y` gets 505; anything else is not
/// a version at all.
fn check_version(version: &str) -> Result<(), ParseError> {
    let Some(number) = strip_prefix_ci(version, "SIP/") else {
        return Err(ParseError::Syntax);
    };
    if number == "2.0" {
        return Ok(());
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match number.split_once('.') {
        Some((major, minor)) if digits(major) && digits(minor) => {
            Err(ParseError::VersionNotSupported)
        }
        _ => Err(ParseError::Syntax),
    }
}

/// Splits the header block (after the start line, without the empty line)
/// into fields: `name HCOLON value`, where `HCOLON = *( SP / HTAB ) ":"
/// SWS` and a line starting with white space continues the one before
/// (§7.3.1: the fold is one SP).
fn collect_fields(block: &[u8]) -> Result<Vec<Field>, ParseError> {
    let mut raw: Vec<(&[u8], Vec<u8>)> = Vec::with_capacity(16);
    if block.is_empty() {
        return Ok(Vec::new());
    }
    for line in split_crlf(block) {
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(ParseError::BareLineBreak);
        }
        if let Some(b' ' | b'\t') = line.first() {
            let (_, value) = raw.last_mut().ok_or(ParseError::Syntax)?;
            while let Some(b' ' | b'\t') = value.last() {
                value.pop();
            }
            value.push(b' ');
            value.extend_from_slice(trim_wsp(line));
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::Syntax)?;
        let name = trim_wsp(&line[..colon]);
        if name.is_empty() || !name.iter().copied().all(is_token_byte) {
            return Err(ParseError::Syntax);
        }
        raw.push((name, line[colon + 1..].to_vec()));
    }
    let mut fields = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        // Token bytes are ASCII: the name is UTF-8.
        let name = std::str::from_utf8(name).map_err(|_| ParseError::Syntax)?;
        let value = String::from_utf8(value).map_err(|_| ParseError::NotUtf8)?;
        let canonical = HeaderName::parse(name);
        fields.push(Field {
            name: canonical,
            other_name: (canonical == HeaderName::Other).then(|| name.into()),
            value: value.trim_matches(is_wsp).into(),
        });
    }
    Ok(fields)
}

impl Headers {
    /// Types the essentials. Fields that must appear once (From, To,
    /// Call-ID, CSeq, Max-Forwards, Content-Length) appearing twice are an
    /// error (RFC 4475 §3.3.8, §3.3.9). In requests every Contact is
    /// checked too (`*` or name-addrs), so a malformed one gets its 400
    /// here, before any layer acts on the request.
    fn from_fields(fields: Vec<Field>, request: bool) -> Result<Headers, ParseError> {
        let mut vias = Vec::with_capacity(2);
        let mut from = None;
        let mut to = None;
        let mut call_id = None;
        let mut cseq = None;
        let mut max_forwards = None;
        let mut content_length = false;
        let once = |seen: bool, name: &'static str| {
            if seen {
                Err(ParseError::Duplicate(name))
            } else {
                Ok(())
            }
        };
        for field in &fields {
            let value = &*field.value;
            match field.name {
                HeaderName::Via => {
                    for item in split_list_items(value) {
                        vias.push(parse_via(item.ok_or(ParseError::BadVia)?)?);
                    }
                }
                HeaderName::From => {
                    once(from.is_some(), "From")?;
                    from = Some(NameAddr::parse(value)?);
                }
                HeaderName::To => {
                    once(to.is_some(), "To")?;
                    to = Some(NameAddr::parse(value)?);
                }
                HeaderName::CallId => {
                    once(call_id.is_some(), "Call-ID")?;
                    if value.is_empty() || value.contains(char::is_whitespace) {
                        return Err(ParseError::MissingHeader("Call-ID"));
                    }
                    call_id = Some(CallId(field.value.clone()));
                }
                HeaderName::CSeq => {
                    once(cseq.is_some(), "CSeq")?;
                    cseq = Some(parse_cseq(value)?);
                }
                HeaderName::MaxForwards => {
                    once(max_forwards.is_some(), "Max-Forwards")?;
                    max_forwards = Some(
                        parse_digits(value)
                            .filter(|&n| n <= MAX_FORWARDS_LIMIT)
                            .ok_or(ParseError::BadMaxForwards)?,
                    );
                }
                HeaderName::ContentLength => {
                    once(content_length, "Content-Length")?;
                    content_length = true;
                }
                HeaderName::Contact if request => {
                    for item in split_list_items(value) {
                        let item = item.ok_or(ParseError::BadAddress)?;
                        // `*` and its rules (alone, Expires: 0) are the
                        // registrar's (§10.3 step 6).
                        if !item.starts_with('*') {
                            NameAddr::parse(item)?;
                        }
                    }
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
}

/// What a stateless response needs from a request that failed to parse:
/// its Vias and CSeq at least (a client matches a response on the top
/// Via's branch and the CSeq method, §17.1.3), From, To and Call-ID when
/// present (RFC 4475 §3.3.1: answer 400 even without them).
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
    let to = first(HeaderName::To);
    let to_has_tag = to
        .as_deref()
        .and_then(|t| NameAddr::parse(t).ok())
        .is_some_and(|t| t.tag.is_some());
    Some(ResponseSeed {
        vias,
        from: first(HeaderName::From),
        to,
        to_has_tag,
        call_id: first(HeaderName::CallId),
        cseq: first(HeaderName::CSeq)?,
    })
}

/// `sent-protocol LWS sent-by *( SEMI via-params )` with `SLASH = SWS "/"
/// SWS` (RFC 3261 §20.42, §25.1; RFC 4475 §3.1.1.1 spreads one over three
/// lines).
fn parse_via(value: &str) -> Result<Via, ParseError> {
    let bad = ParseError::BadVia;
    let (name, rest) = value.split_once('/').ok_or(bad.clone())?;
    let (version, rest) = rest.split_once('/').ok_or(bad.clone())?;
    if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
        return Err(bad);
    }
    let rest = rest.trim_start_matches(is_wsp);
    let transport_end = rest.find(is_wsp).ok_or(bad.clone())?;
    let transport = &rest[..transport_end];
    if !transport.bytes().all(is_token_byte) {
        return Err(bad);
    }
    let rest = rest[transport_end..].trim_start_matches(is_wsp);
    let (sent_by, params) = match rest.find(';') {
        Some(i) => (rest[..i].trim_matches(is_wsp), &rest[i..]),
        None => (rest.trim_matches(is_wsp), ""),
    };
    let (host, port) = split_host_port(sent_by).ok_or(bad.clone())?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(bad);
    }
    let mut via = Via {
        transport: Transport::parse(transport),
        host: host.into(),
        port,
        branch: None,
        received: None,
        rport: Rport::Absent,
        raw: value.into(),
    };
    for param in Params::new(params) {
        let (name, val) = param.map_err(|()| bad.clone())?;
        if name.eq_ignore_ascii_case("branch") {
            via.branch = val.filter(|v| !v.is_empty()).map(Into::into);
        } else if name.eq_ignore_ascii_case("received") {
            via.received = val.and_then(|v| v.trim_matches(['[', ']']).parse().ok());
        } else if name.eq_ignore_ascii_case("rport") {
            via.rport = match val {
                None => Rport::Requested,
                Some(v) => Rport::Value(v.parse().map_err(|_| bad.clone())?),
            };
        }
    }
    Ok(via)
}

/// `1*DIGIT LWS Method`; the number must fit 32 bits (RFC 4475 §3.1.2.4).
fn parse_cseq(value: &str) -> Result<CSeq, ParseError> {
    let mut it = value.split_whitespace();
    let (Some(seq), Some(method), None) = (it.next(), it.next(), it.next()) else {
        return Err(ParseError::BadCSeq);
    };
    Ok(CSeq {
        seq: parse_digits(seq).ok_or(ParseError::BadCSeq)?,
        method: Method::from_token(method).ok_or(ParseError::BadCSeq)?,
    })
}

/// Digits only, fitting a u32 (leading zeros allowed: `0068`).
fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn cut_body(headers: &Headers, raw_body: &[u8]) -> Result<Bytes, ParseError> {
    let Some(len) = headers.get(HeaderName::ContentLength) else {
        // Over UDP Content-Length is optional: the body is the rest.
        return Ok(Bytes::copy_from_slice(raw_body));
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadContentLength);
    }
    let len: usize = len.parse().map_err(|_| ParseError::BadContentLength)?;
    match raw_body.get(..len) {
        Some(body) => Ok(Bytes::copy_from_slice(body)),
        None => Err(ParseError::BodyTruncated),
    }
}

fn split_crlf(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(block);
    std::iter::from_fn(move || {
        let s = rest?;
        match find(s, b"\r\n") {
            Some(i) => {
                rest = Some(&s[i + 2..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

fn trim_wsp(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
