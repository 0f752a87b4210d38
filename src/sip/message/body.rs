//! Message bodies: where the SDP is, and whether we can read what came.
//!
//! SIP-I/SIP-T carriers (ITU-T Q.1912.5, RFC 3372) send the INVITE's SDP
//! as one part of a `multipart/mixed` body beside the ISUP message
//! (`application/ISUP`). We answer from the SDP part and ignore parts we
//! cannot read unless they say `handling=required` (RFC 3261 §20.11, RFC
//! 5621 §9): then 415. A part without Content-Disposition is taken as
//! optional: SIP-I gateways often omit it on the ISUP part, and refusing
//! every such call would refuse the carrier.

use bytes::Bytes;

use super::parse::find;
use super::{HeaderName, Headers};

/// Why a body is refused with 415 (RFC 3261 §8.2.3, §21.4.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefusal {
    /// A Content-Encoding other than `identity` (answer with
    /// `Accept-Encoding: identity`).
    Encoding,
    /// A type we do not read, or a multipart body without one we read or
    /// that cannot be taken apart (answer with `Accept`).
    Type,
    /// A part we cannot read is marked `handling=required` (answer with
    /// `Accept`).
    RequiredPart,
}

/// At most this many parts are looked at; more is not a SIP body.
const MAX_PARTS: usize = 16;

/// Checks that the Content-Encoding is one we can undo: none or
/// `identity` (§20.12). An empty body has nothing to decode.
pub fn check_encoding(headers: &Headers, body: &[u8]) -> Result<(), BodyRefusal> {
    if body.is_empty() {
        return Ok(());
    }
    let all_identity = headers
        .get_all(HeaderName::ContentEncoding)
        .all(|e| e.eq_ignore_ascii_case("identity"));
    if all_identity {
        Ok(())
    } else {
        Err(BodyRefusal::Encoding)
    }
}

/// Checks that a body whose content we must read (the SDP of an INVITE or
/// UPDATE) is one we can: `readable` itself, or a multipart body holding
/// a `readable` part and no required part we cannot read.
pub fn check_body(headers: &Headers, body: &[u8], readable: &str) -> Result<(), BodyRefusal> {
    check_encoding(headers, body)?;
    if body.is_empty() {
        return Ok(());
    }
    let Some(content_type) = headers.get(HeaderName::ContentType) else {
        return Err(BodyRefusal::Type);
    };
    let (mime, params) = split_type(content_type);
    if mime.eq_ignore_ascii_case(readable) {
        return Ok(());
    }
    if !is_multipart(mime) {
        return Err(BodyRefusal::Type);
    }
    let parts = boundary(params)
        .and_then(|b| parts(body, b))
        .ok_or(BodyRefusal::Type)?;
    let mut found = false;
    for part in &parts {
        let part_mime = part.content_type.map_or("text/plain", |t| split_type(t).0);
        if part_mime.eq_ignore_ascii_case(readable) {
            if !part.identity_encoded() {
                return Err(BodyRefusal::Encoding);
            }
            found = true;
        } else if part.required() {
            return Err(BodyRefusal::RequiredPart);
        }
    }
    if found {
        Ok(())
    } else {
        Err(BodyRefusal::Type)
    }
}

/// The SDP of a message: the body when it is `application/sdp`, else the
/// first `application/sdp` part of a multipart body; `None` otherwise.
pub fn sdp_of(headers: &Headers, body: &Bytes) -> Option<Bytes> {
    const SDP: &str = "application/sdp";
    if body.is_empty() {
        return None;
    }
    let (mime, params) = split_type(headers.get(HeaderName::ContentType)?);
    if mime.eq_ignore_ascii_case(SDP) {
        return Some(body.clone());
    }
    if !is_multipart(mime) {
        return None;
    }
    let parts = parts(body, boundary(params)?)?;
    parts
        .iter()
        .find(|p| {
            p.content_type
                .is_some_and(|t| split_type(t).0.eq_ignore_ascii_case(SDP))
        })
        .map(|p| body.slice(p.start..p.end))
}

/// One part of a multipart body: its header values and where its content
/// lies in the body.
struct Part<'a> {
    content_type: Option<&'a str>,
    disposition: Option<&'a str>,
    encoding: Option<&'a str>,
    start: usize,
    end: usize,
}

impl Part<'_> {
    fn required(&self) -> bool {
        self.disposition.is_some_and(|d| {
            d.split(';').skip(1).any(|p| {
                p.split_once('=').is_some_and(|(n, v)| {
                    n.trim().eq_ignore_ascii_case("handling")
                        && v.trim().trim_matches('"').eq_ignore_ascii_case("required")
                })
            })
        })
    }

    fn identity_encoded(&self) -> bool {
        self.encoding.is_none_or(|e| {
            ["identity", "binary", "7bit", "8bit"]
                .iter()
                .any(|ok| e.eq_ignore_ascii_case(ok))
        })
    }
}

/// Takes a multipart body apart (RFC 2046 §5.1.1). `None` when it does
/// not follow the grammar (no delimiter, no close delimiter, a part
/// without its header/content separator) or has more than [`MAX_PARTS`].
fn parts<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let delimiter = format!("\r\n--{boundary}");
    let dash_boundary = &delimiter.as_bytes()[2..];
    // The first delimiter may open the body (no preamble) or follow one.
    let mut at = if body.starts_with(dash_boundary) {
        0
    } else {
        find(body, delimiter.as_bytes())? + 2
    };
    let mut parts = Vec::new();
    loop {
        let after = at + dash_boundary.len();
        let rest = body.get(after..)?;
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        if parts.len() == MAX_PARTS {
            return None;
        }
        // Transport padding, then CRLF.
        let start = after + find(rest, b"\r\n")? + 2;
        let next = start + find(body.get(start..)?, delimiter.as_bytes())?;
        let part = &body[start..next];
        let (head, content) = if part.starts_with(b"\r\n") {
            (&part[..0], 2)
        } else {
            let i = find(part, b"\r\n\r\n")?;
            (&part[..i], i + 4)
        };
        let mut p = Part {
            content_type: None,
            disposition: None,
            encoding: None,
            start: start + content,
            end: next,
        };
        for line in std::str::from_utf8(head).ok()?.split("\r\n") {
            let (name, value) = line.split_once(':')?;
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("Content-Type") {
                p.content_type = Some(value);
            } else if name.eq_ignore_ascii_case("Content-Disposition") {
                p.disposition = Some(value);
            } else if name.eq_ignore_ascii_case("Content-Encoding")
                || name.eq_ignore_ascii_case("Content-Transfer-Encoding")
            {
                p.encoding = Some(value);
            }
        }
        parts.push(p);
        at = next + 2;
    }
}

fn split_type(value: &str) -> (&str, &str) {
    match value.split_once(';') {
        Some((mime, params)) => (mime.trim(), params),
        None => (value.trim(), ""),
    }
}

fn is_multipart(mime: &str) -> bool {
    mime.get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
}

/// The `boundary` parameter (RFC 2046 §5.1.1: 1–70 characters, quoted or
/// not).
fn boundary(params: &str) -> Option<&str> {
    params
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| (1..=70).contains(&b.len()))
}

#[cfg(test)]
mod tests {
    use super::super::{Message, parse};
    use super::*;

    const SDP: &str = "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\n";

    fn invite(content_type: &str, extra: &str, body: &str) -> (Headers, Bytes) {
        let text = format!(
            "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:b@127.0.0.1>;tag=9\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\n\
Content-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => (r.headers, r.body),
            other => panic!("{other:?}"),
        }
    }

    /// A SIP-I INVITE body: SDP beside ISUP (binary), as carriers send it.
    fn sip_i(isup_disposition: &str) -> String {
        format!(
            "--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n\
--unique-boundary-1\r\nContent-Type: application/ISUP; version=itu-t92+\r\n{isup_disposition}\
\r\n\u{1}\u{10}\u{48}\u{0}\u{a}\u{3}\u{2}\u{a}\u{8}\r\n--unique-boundary-1--\r\n"
        )
    }

    #[test]
    fn multipart_sdp_part_is_found_and_accepted() {
        let (h, body) = invite(
            "multipart/mixed;boundary=unique-boundary-1",
            "",
            &sip_i("Content-Disposition: signal; handling=optional\r\n"),
        );
        assert_eq!(check_body(&h, &body, "application/sdp"), Ok(()));
        assert_eq!(sdp_of(&h, &body).as_deref(), Some(SDP.as_bytes()));
        // Without Content-Disposition the ISUP part is optional too.
        let (h, body) = invite(
            "multipart/mixed; boundary=\"unique-boundary-1\"",
            "",
            &sip_i(""),
        );
        assert_eq!(check_body(&h, &body, "application/sdp"), Ok(()));
        assert_eq!(sdp_of(&h, &body).as_deref(), Some(SDP.as_bytes()));
    }

    #[test]
    fn required_unknown_part_is_refused() {
        let (h, body) = invite(
            "multipart/mixed;boundary=unique-boundary-1",
            "",
            &sip_i("Content-Disposition: signal;handling=required\r\n"),
        );
        assert_eq!(
            check_body(&h, &body, "application/sdp"),
            Err(BodyRefusal::RequiredPart)
        );
    }

    #[test]
    fn plain_sdp_and_unknown_types() {
        let (h, body) = invite("application/sdp", "", SDP);
        assert_eq!(check_body(&h, &body, "application/sdp"), Ok(()));
        assert_eq!(sdp_of(&h, &body), Some(body.clone()));
        let (h, body) = invite("application/unknownformat", "", "<audio/>");
        assert_eq!(
            check_body(&h, &body, "application/sdp"),
            Err(BodyRefusal::Type)
        );
        assert_eq!(sdp_of(&h, &body), None);
    }

    #[test]
    fn content_encoding_other_than_identity_is_refused() {
        let (h, body) = invite("application/sdp", "Content-Encoding: gzip\r\n", SDP);
        assert_eq!(
            check_body(&h, &body, "application/sdp"),
            Err(BodyRefusal::Encoding)
        );
        assert_eq!(check_encoding(&h, &body), Err(BodyRefusal::Encoding));
        let (h, body) = invite("application/sdp", "e: identity\r\n", SDP);
        assert_eq!(check_body(&h, &body, "application/sdp"), Ok(()));
    }

    #[test]
    fn rejects_malformed_multipart_bodies() {
        let good = sip_i("");
        for body in [
            // No close delimiter.
            good.replace("--unique-boundary-1--", "--unique-boundary-1"),
            // No delimiter at all.
            SDP.to_owned(),
            // A part without the blank line after its headers.
            "--unique-boundary-1\r\nContent-Type: application/sdp\r\n--unique-boundary-1--".into(),
            // Truncated right after a delimiter.
            "--unique-boundary-1".into(),
            String::new() + "x",
        ] {
            let (h, b) = invite("multipart/mixed;boundary=unique-boundary-1", "", &body);
            assert_eq!(
                check_body(&h, &b, "application/sdp"),
                Err(BodyRefusal::Type),
                "{body:?}"
            );
            assert_eq!(sdp_of(&h, &b), None);
        }
        // No boundary parameter, or an overlong one.
        let (h, b) = invite("multipart/mixed", "", &good);
        assert_eq!(
            check_body(&h, &b, "application/sdp"),
            Err(BodyRefusal::Type)
        );
        let long = "b".repeat(71);
        let (h, b) = invite(&format!("multipart/mixed;boundary={long}"), "", &good);
        assert_eq!(sdp_of(&h, &b), None);
        // Too many parts.
        let many = "--b\r\n\r\nx\r\n".repeat(MAX_PARTS + 1) + "--b--";
        let (h, b) = invite("multipart/mixed;boundary=b", "", &many);
        assert_eq!(
            check_body(&h, &b, "application/sdp"),
            Err(BodyRefusal::Type)
        );
    }

    #[test]
    fn every_truncation_of_a_multipart_body_is_safe() {
        let body = sip_i("Content-Disposition: signal; handling=required\r\n");
        for cut in 0..body.len() {
            let Some(prefix) = body.get(..cut) else {
                continue;
            };
            let (h, b) = invite("multipart/mixed;boundary=unique-boundary-1", "", prefix);
            let _ = check_body(&h, &b, "application/sdp");
            let _ = sdp_of(&h, &b);
        }
    }
}
