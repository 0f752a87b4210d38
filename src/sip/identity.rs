//! Who is calling: the caller's number as the network asserts it (RFC 3325
//! P-Asserted-Identity), whether it is withheld (RFC 3323/3325 Privacy, an
//! anonymous From), and where the call was redirected from (Diversion,
//! RFC 5806; History-Info, RFC 7044).
//!
//! P-Asserted-Identity is only believed from a trusted source — the carrier
//! trunk — because anyone else can write it; from other sources only From
//! is read. A withheld identity yields no number at all, so nothing
//! downstream can offer or read it back.

use super::message::{Headers, NameAddr};

/// The caller's identity as far as the IVR and the records may use it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallerIdentity {
    /// The caller's number (the URI's user part, `+` dropped), unless
    /// withheld.
    pub number: Option<String>,
    /// The caller asked for privacy, or sent an anonymous From.
    pub withheld: bool,
    /// The number came from a P-Asserted-Identity (a trusted source).
    pub asserted: bool,
    /// Redirection history, each Diversion value then each History-Info
    /// value as received (empty when the call was not redirected).
    pub diversion: Vec<String>,
    /// History-Info values as received.
    pub history_info: Vec<String>,
}

impl CallerIdentity {
    /// The identity of the caller of a request with `headers`; `trusted`
    /// says whether its source may assert identities (RFC 3325 §5: a
    /// network element within the trust domain).
    pub fn of(headers: &Headers, trusted: bool) -> CallerIdentity {
        let values = |name: &str| -> Vec<String> {
            headers
                .fields()
                .iter()
                .filter(|f| {
                    f.other_name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .map(|f| f.value.to_string())
                .collect()
        };
        let withheld = values("Privacy").iter().any(|v| privacy_withholds(v))
            || is_anonymous(&headers.from.uri);
        let asserted = trusted
            .then(|| {
                headers
                    .get_all(super::message::HeaderName::PAssertedIdentity)
                    .filter_map(|v| NameAddr::parse(v).ok())
                    .find_map(|a| user_part(&a.uri).map(str::to_owned))
            })
            .flatten();
        let number = if withheld {
            None
        } else {
            asserted
                .clone()
                .or_else(|| user_part(&headers.from.uri).map(str::to_owned))
        };
        CallerIdentity {
            asserted: asserted.is_some() && !withheld,
            number,
            withheld,
            diversion: values("Diversion"),
            history_info: values("History-Info"),
        }
    }

    /// The redirection history in one line for a record: the Diversion
    /// values, else the History-Info values, comma-separated; `None` when
    /// there is none.
    pub fn redirection(&self) -> Option<String> {
        let list = if self.diversion.is_empty() {
            &self.history_info
        } else {
            &self.diversion
        };
        (!list.is_empty()).then(|| list.join(", "))
    }
}

/// Whether a Privacy value (RFC 3323 §4.2: `priv-value *(";" priv-value)`)
/// asks that the caller's identity be withheld: `id` (RFC 3325), `user`,
/// `header` or `critical`; `none` and `session` do not.
fn privacy_withholds(value: &str) -> bool {
    value.split([';', ',']).map(str::trim).any(|v| {
        ["id", "user", "header", "critical"]
            .iter()
            .any(|w| v.eq_ignore_ascii_case(w))
    })
}

/// RFC 3323 §4.1.1.3: an anonymous From is `sip:anonymous@anonymous.invalid`;
/// carriers also send `anonymous@` their own host, or the user
/// `restricted`/`unavailable`.
fn is_anonymous(uri: &str) -> bool {
    let Some((_, rest)) = uri.split_once(':') else {
        return false;
    };
    let (user, host) = rest.split_once('@').unwrap_or(("", rest));
    let user = user.split(';').next().unwrap_or("");
    ["anonymous", "restricted", "unavailable", "unknown"]
        .iter()
        .any(|a| user.eq_ignore_ascii_case(a))
        || host
            .split([';', ':', '>'])
            .next()
            .is_some_and(|h| h.eq_ignore_ascii_case("anonymous.invalid"))
}

/// The user part of a sip:, sips: or tel: URI, parameters and a leading
/// `+` dropped; `None` when there is none.
pub fn user_part(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    let user = if scheme.eq_ignore_ascii_case("tel") {
        rest
    } else {
        rest.split_once('@')?.0
    };
    let user = user.split(';').next()?.trim_start_matches('+');
    (!user.is_empty()).then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, parse};

    fn headers(extra: &str, from: &str) -> Headers {
        let text = format!(
            "INVITE sip:3125550100@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
             From: {from};tag=a\r\nTo: <sip:3125550100@127.0.0.1>\r\n\
             Call-ID: id-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}\
             Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r.headers,
            other => panic!("{other:?}"),
        }
    }

    const FROM: &str = "<sip:3125550111@carrier.example>";

    #[test]
    fn from_gives_the_number_without_an_assertion() {
        let id = CallerIdentity::of(&headers("", FROM), true);
        assert_eq!(id.number.as_deref(), Some("3125550111"));
        assert!(!id.withheld && !id.asserted);
    }

    #[test]
    fn a_trusted_assertion_wins_over_from() {
        let h = headers(
            "P-Asserted-Identity: \"Bob\" <sip:+13125550122@carrier.example;user=phone>\r\n",
            FROM,
        );
        let id = CallerIdentity::of(&h, true);
        assert_eq!(id.number.as_deref(), Some("13125550122"));
        assert!(id.asserted);
        let h = headers("P-Asserted-Identity: <tel:+13125550133>\r\n", FROM);
        assert_eq!(
            CallerIdentity::of(&h, true).number.as_deref(),
            Some("13125550133")
        );
    }

    #[test]
    fn an_untrusted_assertion_is_ignored() {
        let h = headers(
            "P-Asserted-Identity: <sip:3125559999@spoof.example>\r\n",
            FROM,
        );
        let id = CallerIdentity::of(&h, false);
        assert_eq!(id.number.as_deref(), Some("3125550111"));
        assert!(!id.asserted);
    }

    #[test]
    fn privacy_id_withholds_even_an_asserted_number() {
        for privacy in ["id", "user", "header;id", "critical", "ID"] {
            let h = headers(
                &format!(
                    "P-Asserted-Identity: <sip:3125550122@carrier.example>\r\nPrivacy: {privacy}\r\n"
                ),
                FROM,
            );
            let id = CallerIdentity::of(&h, true);
            assert_eq!(id.number, None, "{privacy}");
            assert!(id.withheld && !id.asserted, "{privacy}");
        }
        for privacy in ["none", "session"] {
            let h = headers(&format!("Privacy: {privacy}\r\n"), FROM);
            let id = CallerIdentity::of(&h, true);
            assert_eq!(id.number.as_deref(), Some("3125550111"), "{privacy}");
        }
    }

    #[test]
    fn an_anonymous_from_is_withheld() {
        for from in [
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
            "<sip:anonymous@carrier.example>",
            "<sip:restricted@carrier.example>",
            "<sip:3125550111@anonymous.invalid>",
        ] {
            let id = CallerIdentity::of(&headers("", from), true);
            assert_eq!(id.number, None, "{from}");
            assert!(id.withheld, "{from}");
        }
    }

    #[test]
    fn redirection_history_is_kept_as_received() {
        let h = headers(
            "Diversion: <sip:3125550100@pbx.example>;reason=no-answer;counter=1\r\n\
             Diversion: <sip:3125550101@pbx.example>;reason=unconditional\r\n",
            FROM,
        );
        let id = CallerIdentity::of(&h, true);
        assert_eq!(id.diversion.len(), 2);
        assert_eq!(
            id.redirection().as_deref(),
            Some(
                "<sip:3125550100@pbx.example>;reason=no-answer;counter=1, \
                 <sip:3125550101@pbx.example>;reason=unconditional"
            )
        );
        let h = headers(
            "History-Info: <sip:3125550100@pbx.example>;index=1\r\n",
            FROM,
        );
        let id = CallerIdentity::of(&h, true);
        assert_eq!(
            id.redirection().as_deref(),
            Some("<sip:3125550100@pbx.example>;index=1")
        );
        assert_eq!(
            CallerIdentity::of(&headers("", FROM), true).redirection(),
            None
        );
    }

    #[test]
    fn odd_uris_give_no_number_and_never_panic() {
        for uri in ["sip:", "tel:", "sip:@host", "x", "", "sip:;a@b", "tel:+"] {
            assert_eq!(user_part(uri), None, "{uri:?}");
            let _ = is_anonymous(uri);
        }
    }
}
