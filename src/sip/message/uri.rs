//! Addresses: name-addr / addr-spec values (From, To, Contact, Route,
//! Record-Route) and the parts of SIP URIs that routing needs (RFC 3261
//! §19.1, §20.10, §25.1).

use super::ParseError;

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
    /// Parses a From/To/Contact/Route value (RFC 3261 §20.10, §25.1):
    ///
    /// ```text
    /// ( name-addr / addr-spec ) *( SEMI param )
    /// name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
    /// display-name = *(token LWS) / quoted-string
    /// ```
    ///
    /// A quoted display name may hold anything, `<`, `>` and a whole URI
    /// included: the URI is the one in the angle brackets after it. An
    /// unquoted display name must be tokens (no `,`, `<`, `"` …). An
    /// addr-spec without brackets may not hold `,`, `?` or `;` (§20.10):
    /// parameters after it belong to the header field. Spaces just inside
    /// the brackets are ignored (RFC 4475 §3.1.2.14 allows that liberty).
    pub fn parse(value: &str) -> Result<NameAddr, ParseError> {
        let value = value.trim_matches(is_wsp);
        let bad = ParseError::BadAddress;
        let (uri, params) = if let Some(rest) = value.strip_prefix('"') {
            let end = quoted_end(rest).ok_or(bad.clone())?;
            let rest = rest[end + 1..].trim_start_matches(is_wsp);
            let inner = rest.strip_prefix('<').ok_or(bad.clone())?;
            let close = inner.find('>').ok_or(bad.clone())?;
            (&inner[..close], &inner[close + 1..])
        } else if let Some(open) = value.find('<') {
            // Tokens and LWS; UTF-8 beyond ASCII is let through too (phones
            // send unquoted accented names), separators are not (RFC 4475
            // §3.1.2.15: `Bell, Alexander <…>` is two values or none).
            let display = &value[..open];
            let display_ok = display
                .bytes()
                .all(|b| is_token_byte(b) || b == b' ' || b == b'\t' || b >= 0x80);
            if !display_ok {
                return Err(bad);
            }
            let inner = &value[open + 1..];
            let close = inner.find('>').ok_or(bad.clone())?;
            (&inner[..close], &inner[close + 1..])
        } else {
            let end = value.find([';', ' ', '\t']).unwrap_or(value.len());
            let uri = &value[..end];
            if uri.contains([',', '?', '"', '>']) {
                return Err(bad);
            }
            (uri, &value[end..])
        };
        let uri = uri.trim_matches(is_wsp);
        if !is_absolute_uri(uri) {
            return Err(bad);
        }
        let mut tag = None;
        for param in Params::new(params) {
            let (name, value) = param.map_err(|()| bad.clone())?;
            if name.eq_ignore_ascii_case("tag") {
                tag = value.filter(|v| !v.is_empty()).map(Into::into);
            }
        }
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
    /// The user part (with any `:password`), when present (still escaped).
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
    /// The headers (`?name=value&…`), when present: not allowed in a
    /// Request-URI (§19.1.1).
    pub headers: Option<Box<str>>,
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
        // §25.1: `@` appears nowhere but after the userinfo (it is escaped
        // in user, password, parameters and headers), while the user part
        // may hold `;`, `?`, `/` and `:` — split on `@` first.
        let (user, rest) = match rest.split_once('@') {
            Some((user, after)) if !after.contains('@') => (Some(user), after),
            Some(_) => return Err(ParseError::BadUri),
            None => (None, rest),
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h)),
            None => (rest, None),
        };
        let (hostport, params) = match rest.find(';') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(hostport).ok_or(ParseError::BadUri)?;
        let host_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if host.is_empty() || !host_ok || user.is_some_and(str::is_empty) {
            return Err(ParseError::BadUri);
        }
        if uri
            .bytes()
            .any(|b| !(0x21..0x7f).contains(&b) || b"<>\"".contains(&b))
        {
            return Err(ParseError::BadUri);
        }
        let mut parsed = SipUri {
            secure,
            user: user.map(Into::into),
            host: host.into(),
            port,
            transport: None,
            lr: false,
            maddr: None,
            headers: headers.map(Into::into),
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

/// The scheme of an absolute URI, lower-cased comparison left to the
/// caller: `sip`, `sips`, `tel`, `nobodyKnowsThisScheme` …
pub fn uri_scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first_alpha = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    (first_alpha && rest_ok).then_some(scheme)
}

/// Whether `uri` has the shape of an absolute URI (RFC 3261 §25.1
/// `absoluteURI`, or a SIP URI): a scheme, `:`, and at least one visible
/// character after it, with no white space, quote or angle bracket.
pub fn is_absolute_uri(uri: &str) -> bool {
    let Some(scheme) = uri_scheme(uri) else {
        return false;
    };
    let rest = &uri[scheme.len() + 1..];
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !b"<>\"".contains(&b))
}

/// Iterates `;name=value` parameters leniently (the leading `;` may be
/// missing, empty ones are skipped, values unquoted as given): for values
/// already checked, or where a bad parameter is no reason to refuse.
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

/// Strict `*( SEMI param )` with `SEMI = SWS ";" SWS`, `EQUAL = SWS "="
/// SWS` and values that are tokens, hosts or quoted strings (returned
/// without their quotes). An empty parameter (`;;`) or text that is not a
/// parameter is an error.
pub(super) struct Params<'a> {
    rest: &'a str,
}

impl<'a> Params<'a> {
    pub(super) fn new(params: &'a str) -> Params<'a> {
        Params { rest: params }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<(&'a str, Option<&'a str>), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.trim_start_matches(is_wsp);
        if rest.is_empty() {
            return None;
        }
        let Some(rest) = rest.strip_prefix(';') else {
            self.rest = "";
            return Some(Err(()));
        };
        let rest = rest.trim_start_matches(is_wsp);
        let name_end = rest
            .find(|c: char| !(c.is_ascii() && is_token_byte(c as u8)))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() {
            self.rest = "";
            return Some(Err(()));
        }
        let after = rest[name_end..].trim_start_matches(is_wsp);
        let Some(value) = after.strip_prefix('=') else {
            self.rest = after;
            return Some(Ok((name, None)));
        };
        let value = value.trim_start_matches(is_wsp);
        if let Some(quoted) = value.strip_prefix('"') {
            let Some(end) = quoted_end(quoted) else {
                self.rest = "";
                return Some(Err(()));
            };
            self.rest = &quoted[end + 1..];
            return Some(Ok((name, Some(&quoted[..end]))));
        }
        let end = value.find([';', ' ', '\t']).unwrap_or(value.len());
        let (v, after) = value.split_at(end);
        if v.is_empty() || v.contains(['"', ',', '<', '>', '\\']) {
            self.rest = "";
            return Some(Err(()));
        }
        self.rest = after;
        Some(Ok((name, Some(v))))
    }
}

/// The index of the `"` closing a quoted string whose opening quote was
/// just before `s` (quoted-pairs `\x` skipped), if any.
pub(super) fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `host[:port]`, `[v6]:port` or `v4:port`.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(parse_port(port)?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                return None;
            }
            Some((host, Some(parse_port(port)?)))
        }
        _ if s.contains(char::is_whitespace) => None,
        _ => Some((s, None)),
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

pub(super) fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 3261 §25.1 `token` characters.
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse("sip:a@b;tag=1").expect("addr-spec");
        assert_eq!((&*a.uri, a.tag.as_deref()), ("sip:a@b", Some("1")));
        let a = NameAddr::parse("\"x\" <sip:a@b;lr>;tag=2").expect("name-addr");
        assert_eq!((&*a.uri, a.tag.as_deref()), ("sip:a@b;lr", Some("2")));
        let a = NameAddr::parse("caller<sip:caller@example.com>;tag=323").expect("no LWS");
        assert_eq!(&*a.uri, "sip:caller@example.com");
        let a = NameAddr::parse("sip:a@b ;  tag  =  x1").expect("spaced tag");
        assert_eq!(a.tag.as_deref(), Some("x1"));
        let a = NameAddr::parse("<sip:a@b>;p=\"v;w\";tag=t").expect("quoted param");
        assert_eq!(a.tag.as_deref(), Some("t"));
    }

    #[test]
    fn quoted_display_name_may_hold_angle_brackets() {
        let a = NameAddr::parse("\"Sales <EMEA>\" <sip:a@host>;tag=9").expect("answered");
        assert_eq!((&*a.uri, a.tag.as_deref()), ("sip:a@host", Some("9")));
        let a = NameAddr::parse("\"Call <sip:3125559999@spoof.example>\" <sip:a@host>")
            .expect("parses");
        assert_eq!(&*a.uri, "sip:a@host", "the quoted URI is never taken");
        let a = NameAddr::parse(r#""a \"<sip:x@y>\" b" <sip:a@host>"#).expect("escaped quotes");
        assert_eq!(&*a.uri, "sip:a@host");
    }

    #[test]
    fn rejects_unterminated_quoted_display_name() {
        assert_eq!(
            NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>"),
            Err(ParseError::BadAddress)
        );
    }

    #[test]
    fn unquoted_utf8_display_name_is_accepted() {
        let a = NameAddr::parse("José Núñez <sip:a@b>;tag=1").expect("accented");
        assert_eq!(&*a.uri, "sip:a@b");
    }

    #[test]
    fn rejects_unquoted_display_name_with_separators() {
        for bad in [
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "a\"b <sip:a@b>",
            "x@y <sip:a@b>",
        ] {
            assert_eq!(NameAddr::parse(bad), Err(ParseError::BadAddress), "{bad}");
        }
    }

    #[test]
    fn rejects_addr_spec_that_needs_brackets() {
        for bad in [
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "sip:a@b,sip:c@d",
        ] {
            assert_eq!(NameAddr::parse(bad), Err(ParseError::BadAddress), "{bad}");
        }
    }

    #[test]
    fn rejects_empty_and_malformed_params() {
        for bad in [
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:a@b>;tag=",
            "<sip:a@b>;=x",
            "<sip:a@b> junk",
            "<sip:a@b>;p=\"open",
            "<sip:a@b>;tag=a\\b",
            "<sip:a@b",
            "nothing",
            "<>",
            "< >",
            "<1abc:x>",
        ] {
            assert_eq!(NameAddr::parse(bad), Err(ParseError::BadAddress), "{bad}");
        }
    }

    #[test]
    fn other_schemes_are_addresses_too() {
        assert_eq!(
            &*NameAddr::parse("isbn:2983792873").expect("isbn").uri,
            "isbn:2983792873"
        );
        assert_eq!(
            &*NameAddr::parse("<name:John_Smith>").expect("name").uri,
            "name:John_Smith"
        );
    }

    #[test]
    fn sip_uri_forms() {
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
        // The user part may hold `;`, `?`, `:` (RFC 4475 §3.1.1.2, §3.1.1.9).
        let u = SipUri::parse("sip:user;par=u%40example.net@example.com").expect("semiuri");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(&*u.host, "example.com");
        let u = SipUri::parse("sip:a?b,c:d@example.com").expect("user with ? and :");
        assert_eq!((&*u.host, u.headers), ("example.com", None));
        let u = SipUri::parse("sip:user@example.com?Route=%3Csip:example.com%3E").expect("headers");
        assert_eq!(u.headers.as_deref(), Some("Route=%3Csip:example.com%3E"));
    }

    #[test]
    fn rejects_malformed_sip_uris() {
        for bad in [
            "tel:+15551234567",
            "sip:a@b:99999",
            "sip:",
            "sip:@host",
            "sip:a@b@c",
            "sip:a b@c",
            "sip:host:",
            "sip:ho~st",
            "sip:a@<b>",
            "sip:a@b:+5",
        ] {
            assert_eq!(SipUri::parse(bad), Err(ParseError::BadUri), "{bad}");
        }
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

    #[test]
    fn uri_schemes() {
        assert_eq!(
            uri_scheme("soap.beep://192.0.2.103:3002"),
            Some("soap.beep")
        );
        assert_eq!(
            uri_scheme("nobodyKnowsThisScheme:x"),
            Some("nobodyKnowsThisScheme")
        );
        assert_eq!(uri_scheme("1x:y"), None);
        assert_eq!(uri_scheme("<sip:a@b>"), None);
        assert!(!is_absolute_uri("sip:"));
        assert!(!is_absolute_uri("sip:a b"));
    }
}
