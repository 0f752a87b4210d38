//! Call detail records: one row per leg (inbound, agent, customer), linked
//! to the callback and to the inbound call that registered it (issue 4
//! point 6), and the CSV export behind `callbackd cdr`.
//!
//! The rows are written and read by the store
//! ([`LaunchStore::write_cdr`](crate::callback::store::LaunchStore::write_cdr),
//! [`LaunchStore::cdrs`](crate::callback::store::LaunchStore::cdrs)); this
//! module holds the record and its CSV form.
//!
//! # CSV
//!
//! RFC 4180: a header row, then one line per record, CRLF line ends, fields
//! separated by commas; a field containing a comma, a double quote, CR or LF
//! is enclosed in double quotes with its quotes doubled. Times are RFC 3339
//! UTC with milliseconds (`2025-06-02T15:00:00.123Z`); an absent value
//! (no answer time, no SIP code, no callback) is an empty field. The last
//! column, `type`, is the source of the callback the leg served (`ivr`,
//! `api`, `missed_call`; empty for an inbound call that registered nothing
//! and a live caller's legs).

use std::io::{self, Write};

use jiff::Timestamp;

use crate::callback::CallbackId;
use crate::callback::store::Source;

/// Which leg a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The caller's call into callbackd (the IVR, or a live caller in a queue).
    Inbound,
    /// Our call to the agent.
    Agent,
    /// Our call to the customer through the trunk.
    Customer,
}

impl Leg {
    /// Every leg.
    pub const ALL: [Leg; 3] = [Leg::Inbound, Leg::Agent, Leg::Customer];

    /// The text stored in the `leg` column and written to the CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Inbound => "inbound",
            Leg::Agent => "agent",
            Leg::Customer => "customer",
        }
    }

    /// Parses the stored text (exact, lower case).
    pub fn parse(text: &str) -> Option<Leg> {
        Leg::ALL.into_iter().find(|l| l.as_str() == text)
    }
}

/// How a leg ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LegOutcome {
    /// Answered (2xx), then ended normally.
    Answered,
    /// 486 or 600.
    Busy,
    /// Our ring timeout, 480 or 408.
    NoAnswer,
    /// Any other failure (other final response, transport error).
    Failure,
    /// 404, 484 or 604: the number does not exist.
    InvalidNumber,
    /// We cancelled it for another reason (the other leg went away first).
    Cancelled,
    /// The process stopped during the leg.
    Interrupted,
}

impl LegOutcome {
    /// Every outcome.
    pub const ALL: [LegOutcome; 7] = [
        LegOutcome::Answered,
        LegOutcome::Busy,
        LegOutcome::NoAnswer,
        LegOutcome::Failure,
        LegOutcome::InvalidNumber,
        LegOutcome::Cancelled,
        LegOutcome::Interrupted,
    ];

    /// The text stored in the `outcome` column and written to the CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            LegOutcome::Answered => "answered",
            LegOutcome::Busy => "busy",
            LegOutcome::NoAnswer => "no_answer",
            LegOutcome::Failure => "failure",
            LegOutcome::InvalidNumber => "invalid_number",
            LegOutcome::Cancelled => "cancelled",
            LegOutcome::Interrupted => "interrupted",
        }
    }

    /// Parses the stored text (exact, lower case).
    pub fn parse(text: &str) -> Option<LegOutcome> {
        LegOutcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// One leg's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrRecord {
    /// The callback this leg served; `None` for an inbound call that
    /// registered nothing, or a live caller's agent leg.
    pub callback: Option<CallbackId>,
    /// Call-ID of the inbound call: the one that registered the callback,
    /// or the live caller's own.
    pub inbound_call_id: String,
    /// Which leg.
    pub leg: Leg,
    /// This leg's own Call-ID.
    pub call_id: String,
    /// When the leg started (INVITE received or sent).
    pub start: Timestamp,
    /// When it was answered, if it was.
    pub answer: Option<Timestamp>,
    /// When it ended.
    pub end: Timestamp,
    /// How it ended.
    pub outcome: LegOutcome,
    /// The final SIP status of the leg's INVITE, if one was received or sent.
    pub sip_code: Option<u16>,
    /// The other party: the caller's URI, the agent's URI, or the customer
    /// Request-URI.
    pub peer: String,
    /// An inbound call's redirection history (Diversion, else History-Info,
    /// values as received); `None` when it was not redirected, and on the
    /// agent and customer legs.
    pub redirected_from: Option<String>,
    /// The source of the callback this leg served (the CSV's `type`);
    /// `None` for an inbound call that registered nothing and a live
    /// caller's legs.
    pub source: Option<Source>,
}

/// The CSV header, in column order.
pub const CSV_HEADER: [&str; 12] = [
    "callback_id",
    "inbound_call_id",
    "leg",
    "call_id",
    "start",
    "answer",
    "end",
    "outcome",
    "sip_code",
    "peer",
    "redirected_from",
    "type",
];

/// Writes `rows` as CSV (RFC 4180, see the module documentation) with a
/// header row.
pub fn write_csv(rows: &[CdrRecord], out: &mut impl Write) -> io::Result<()> {
    let mut line = String::new();
    push_line(&mut line, CSV_HEADER.iter().copied());
    out.write_all(line.as_bytes())?;
    for r in rows {
        line.clear();
        let fields = [
            r.callback.map(|id| id.to_string()).unwrap_or_default(),
            r.inbound_call_id.clone(),
            r.leg.as_str().to_owned(),
            r.call_id.clone(),
            utc_millis(r.start),
            r.answer.map(utc_millis).unwrap_or_default(),
            utc_millis(r.end),
            r.outcome.as_str().to_owned(),
            r.sip_code.map(|c| c.to_string()).unwrap_or_default(),
            r.peer.clone(),
            r.redirected_from.clone().unwrap_or_default(),
            r.source.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        ];
        push_line(&mut line, fields.iter().map(String::as_str));
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

/// RFC 3339 UTC with milliseconds, as in the CSV.
pub fn utc_millis(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Appends one CSV record and its CRLF to `line`.
fn push_line<'a>(line: &mut String, fields: impl Iterator<Item = &'a str>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            line.push(',');
        }
        // RFC 4180 §2 (6), (7): quote fields holding a separator, a quote or
        // a line break; double the quotes inside.
        if field.contains([',', '"', '\r', '\n']) {
            line.push('"');
            for c in field.chars() {
                if c == '"' {
                    line.push('"');
                }
                line.push(c);
            }
            line.push('"');
        } else {
            line.push_str(field);
        }
    }
    // RFC 4180 §2 (1): records end with CRLF.
    line.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn record() -> CdrRecord {
        CdrRecord {
            callback: Some(CallbackId(42)),
            inbound_call_id: "a84b4c76e66710@pc33.example.com".into(),
            leg: Leg::Customer,
            call_id: "cb-42-1@callbackd".into(),
            start: ts("2025-06-02T15:00:00Z"),
            answer: Some(ts("2025-06-02T15:00:07.25Z")),
            end: ts("2025-06-02T15:04:00.123Z"),
            outcome: LegOutcome::Answered,
            sip_code: Some(200),
            peer: "sip:+13125550188@trunk.example.net;user=phone".into(),
            redirected_from: None,
            source: Some(Source::MissedCall),
        }
    }

    fn csv(rows: &[CdrRecord]) -> String {
        let mut out = Vec::new();
        write_csv(rows, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_header_and_one_crlf_line_per_record() {
        let mut no_answer = record();
        no_answer.callback = None;
        no_answer.leg = Leg::Agent;
        no_answer.answer = None;
        no_answer.outcome = LegOutcome::NoAnswer;
        no_answer.sip_code = None;
        no_answer.peer = "sip:201@pbx.example.com".into();
        no_answer.source = None;
        let mut diverted = record();
        diverted.leg = Leg::Inbound;
        diverted.redirected_from =
            Some("<sip:3125550100@pbx.example.com>;reason=no-answer, <sip:3125550101@pbx>".into());
        diverted.source = Some(Source::Ivr);
        let text = csv(&[record(), no_answer, diverted]);
        assert_eq!(
            text,
            "callback_id,inbound_call_id,leg,call_id,start,answer,end,outcome,sip_code,peer,\
             redirected_from,type\r\n\
             42,a84b4c76e66710@pc33.example.com,customer,cb-42-1@callbackd,\
             2025-06-02T15:00:00.000Z,2025-06-02T15:00:07.250Z,2025-06-02T15:04:00.123Z,\
             answered,200,sip:+13125550188@trunk.example.net;user=phone,,missed_call\r\n\
             ,a84b4c76e66710@pc33.example.com,agent,cb-42-1@callbackd,\
             2025-06-02T15:00:00.000Z,,2025-06-02T15:04:00.123Z,no_answer,,sip:201@pbx.example.com,,\r\n\
             42,a84b4c76e66710@pc33.example.com,inbound,cb-42-1@callbackd,\
             2025-06-02T15:00:00.000Z,2025-06-02T15:00:07.250Z,2025-06-02T15:04:00.123Z,\
             answered,200,sip:+13125550188@trunk.example.net;user=phone,\
             \"<sip:3125550100@pbx.example.com>;reason=no-answer, <sip:3125550101@pbx>\",ivr\r\n"
        );
    }

    #[test]
    fn empty_export_is_the_header_alone() {
        assert_eq!(csv(&[]), CSV_HEADER.join(",") + "\r\n");
    }

    #[test]
    fn quotes_fields_with_separators_quotes_and_line_breaks() {
        let mut r = record();
        r.peer = "\"Alice, A.\" <sip:alice@example.com>".into();
        r.call_id = "line\r\nbreak".into();
        let text = csv(&[r]);
        let line = text.split("\r\n").nth(1).unwrap();
        assert!(
            line.starts_with("42,a84b4c76e66710@pc33.example.com,customer,\"line"),
            "{text}"
        );
        assert!(
            text.ends_with(
                ",answered,200,\"\"\"Alice, A.\"\" <sip:alice@example.com>\",,missed_call\r\n"
            ),
            "{text}"
        );
        // A plain field is never quoted.
        assert!(!text.contains("\"customer\""));
    }

    #[test]
    fn text_forms_round_trip() {
        for l in Leg::ALL {
            assert_eq!(Leg::parse(l.as_str()), Some(l));
        }
        for o in LegOutcome::ALL {
            assert_eq!(LegOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Leg::parse("Agent"), None);
        assert_eq!(LegOutcome::parse(""), None);
    }
}
