//! Why a configuration was refused: the error, where in the text, and the
//! rule a value breaks.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use thiserror::Error;

use crate::callback::QueueId;
use crate::callback::number::InvalidNumber;
use crate::callback::trunk::TrunkError;

use super::agents::AgentUriError;

/// Why a configuration was refused. All are local faults (the operator's
/// file), displayed as `origin: where: what`.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The path given to [`Config::load`](super::Config::load).
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The text is not TOML or does not fit the schema: bad syntax, unknown
    /// key, wrong type, unknown enum value, malformed address.
    #[error("{origin}{}: {message}", location_prefix(location.as_ref(), message))]
    Syntax {
        /// The file (or label) the text came from.
        origin: String,
        /// Where in the text, when the parser knows.
        location: Option<Location>,
        /// The parser's description.
        message: String,
    },
    /// A well-formed value breaks a rule.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// The file (or label) the configuration came from.
        origin: String,
        /// Dotted path of the field, e.g. `rtp.port_min` or `acl.sip[1]`.
        field: String,
        /// The rule it breaks.
        reason: Invalid,
    },
}

/// A position in the configuration text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The `[table]` header the position is under, if any.
    pub table: Option<String>,
}

/// The rule a configuration value breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Invalid {
    /// A number is outside its allowed range.
    #[error("{value} is outside {min}..={max}")]
    OutOfRange {
        /// The configured value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A value must not exceed another field.
    #[error("{value} is greater than {other_field} {other}")]
    Exceeds {
        /// The configured value.
        value: u64,
        /// The field it is compared with.
        other_field: &'static str,
        /// That field's value.
        other: u64,
    },
    /// A value is below a floor set by a standard.
    #[error("{value} is below {min}, the minimum set by {rule}")]
    BelowRfcMinimum {
        /// The configured value.
        value: u64,
        /// The floor.
        min: u64,
        /// Where the floor comes from.
        rule: &'static str,
    },
    /// A value must be a multiple of a step.
    #[error("{value} is not a multiple of {of}")]
    NotMultiple {
        /// The configured value.
        value: u64,
        /// The step.
        of: u64,
    },
    /// A value must be at least 1.
    #[error("must be at least 1")]
    Zero,
    /// Port 0 (an ephemeral port) cannot be configured.
    #[error("port 0 is not allowed")]
    PortZero,
    /// The RTP range must start on an even port.
    #[error(
        "{value} is odd; RTP takes the even port of each pair and RTCP the odd one (RFC 3550 §11)"
    )]
    OddPort {
        /// The configured port.
        value: u16,
    },
    /// The RTP range holds a single port.
    #[error("equals rtp.port_min {port}; the range needs at least one RTP/RTCP port pair")]
    SinglePort {
        /// The port.
        port: u16,
    },
    /// More concurrent calls and callback legs than RTP port pairs.
    #[error(
        "{calls} calls + {legs} callback legs need more RTP port pairs than the {pairs} in rtp.port_min..=rtp.port_max"
    )]
    NotEnoughPorts {
        /// Configured concurrent calls.
        calls: u32,
        /// `2 × callbacks.max_lines`: an agent and a customer leg per line.
        legs: u32,
        /// Port pairs in the range.
        pairs: u16,
    },
    /// The open-files limit cannot hold the calls and callback legs.
    #[error(
        "{calls} calls + {legs} callback legs need more media streams than the {streams} the open-files limit ({open_files}) leaves after TCP and reserved descriptors (raise `ulimit -n` / LimitNOFILE, or lower edge.max_tcp_connections)"
    )]
    NotEnoughFiles {
        /// `call.max_calls`.
        calls: u64,
        /// `2 × callbacks.max_lines`.
        legs: u64,
        /// Streams the descriptors hold.
        streams: u64,
        /// The limit.
        open_files: u64,
    },
    /// A wildcard bind address cannot be put into Via, Contact or SDP.
    #[error("must be set when {bound_field} is the wildcard address {ip}")]
    WildcardNeedsAdvertised {
        /// The bind field.
        bound_field: &'static str,
        /// Its wildcard IP.
        ip: IpAddr,
    },
    /// The unspecified address cannot be advertised.
    #[error("{ip} cannot be advertised to peers")]
    Unspecified {
        /// The configured IP.
        ip: IpAddr,
    },
    /// A list must not be empty.
    #[error("must list at least one entry")]
    Empty,
    /// A list names an entry twice.
    #[error("{entry} is listed twice")]
    Duplicate {
        /// The repeated entry.
        entry: String,
    },
    /// A header value with control characters or non-ASCII text.
    #[error("must be 1..=256 printable ASCII characters (it becomes a header value)")]
    NotHeaderText,
    /// A path is empty.
    #[error("must not be empty")]
    EmptyPath,
    /// `[prompts.files]` names a prompt that does not exist.
    #[error("unknown prompt name {name:?} (see config::PROMPT_NAMES)")]
    UnknownPrompt {
        /// The name as written.
        name: String,
    },
    /// A prompt file is not there.
    #[error("missing prompt file {}{}", path.display(), and_more(*more))]
    MissingPromptFile {
        /// The first missing file, as resolved.
        path: PathBuf,
        /// How many other prompt files are missing too.
        more: usize,
    },
    /// The time zone is not in the IANA database.
    #[error("unknown time zone {name:?} (expected an IANA name such as \"America/Chicago\")")]
    UnknownTimeZone {
        /// The name as written.
        name: String,
    },
    /// An hours key that is not a weekday.
    #[error("unknown weekday (expected mon, tue, wed, thu, fri, sat or sun)")]
    UnknownWeekday,
    /// Two hours keys name the same weekday (e.g. `Mon` and `mon`).
    #[error("names a weekday that is already given")]
    DuplicateWeekday,
    /// Opening hours that are not `HH:MM-HH:MM` or `closed`.
    #[error("{range:?} is not HH:MM-HH:MM (24-hour clock, 24:00 = midnight) or \"closed\"")]
    BadHours {
        /// The hours as written.
        range: String,
    },
    /// Opening hours that close before they open (write a window across
    /// midnight as two days).
    #[error("closes at {close}, which is not after it opens at {open}")]
    CloseNotAfterOpen {
        /// Opening time as written.
        open: String,
        /// Closing time as written.
        close: String,
    },
    /// A date that is not a real `YYYY-MM-DD` date.
    #[error("{value:?} is not a YYYY-MM-DD date")]
    BadDate {
        /// The date as written.
        value: String,
    },
    /// A number or prefix with something other than the digits 0-9.
    #[error("{value:?} must be digits 0-9 only, at least one")]
    NotDigits {
        /// The value as written.
        value: String,
    },
    /// A price that is negative, infinite or not a number.
    #[error("{value} is not a finite price of 0 or more")]
    BadRate {
        /// The price as parsed.
        value: String,
    },
    /// A queue id that is empty, too long, or has spaces, commas or other
    /// characters outside the allowed set.
    #[error("{id:?} must be 1..=64 characters of A-Z a-z 0-9 - _ .")]
    BadQueueId {
        /// The id as written.
        id: String,
    },
    /// A called number already routed to an earlier queue.
    #[error("{did} is already routed to queue {queue:?}")]
    DidClaimed {
        /// The called number.
        did: String,
        /// The queue that lists it first.
        queue: String,
    },
    /// A TCP listener on the address SIP over TCP already listens on.
    #[error("{addr} overlaps sip.bind {sip}, where SIP over TCP listens")]
    SipTcpListener {
        /// The configured address.
        addr: SocketAddr,
        /// SIP's listening address.
        sip: SocketAddr,
    },
    /// A trunk setting the trunk cannot use (termination, call rate).
    #[error("{0}")]
    Trunk(TrunkError),
    /// `user=phone` asked for national numbers.
    #[error(
        "needs number_format = \"e164\": a national number with user=phone must carry a phone-context (RFC 3966 §5.1.5)"
    )]
    UserPhoneNeedsE164,
    /// One of a pair of settings without the other.
    #[error("must be set when {other_field} is")]
    RequiredWith {
        /// The field that is set.
        other_field: &'static str,
    },
    /// A text value is empty.
    #[error("must not be empty")]
    EmptyValue,
    /// A queue's callback number is not a number that can be called.
    #[error("{value:?} is not a callable number: {reason}")]
    BadCallbackNumber {
        /// The number as written.
        value: String,
        /// Why not.
        reason: InvalidNumber,
    },
    /// A caller ID outside the organisation's callback numbers.
    #[error("{value:?} is not one of org.callback_numbers")]
    NotACallbackNumber {
        /// The number as written.
        value: String,
    },
    /// Without `org.callback_numbers`, an agent's caller ID that no queue
    /// presents.
    #[error("{value:?} is no queue's callback_number (and org.callback_numbers is empty)")]
    NotAQueueNumber {
        /// The number as written.
        value: String,
    },
    /// A value must not be below another field.
    #[error("{value} is less than {other_field} {other}")]
    Below {
        /// The configured value.
        value: u64,
        /// The field it is compared with.
        other_field: &'static str,
        /// That field's value.
        other: u64,
    },
    /// A realm that cannot be put in a quoted string.
    #[error(
        "must be 1..=256 printable ASCII characters without \" or \\ (it is quoted in WWW-Authenticate)"
    )]
    BadRealm,
    /// A queue id that names no configured queue.
    #[error("{id:?} is not a configured queue")]
    UnknownQueue {
        /// The id as written.
        id: String,
    },
    /// A missed-call rule id that is empty, too long, or has characters
    /// outside the allowed set.
    #[error("{id:?} must be 1..=64 characters of A-Z a-z 0-9 - _ .")]
    BadRuleId {
        /// The id as written.
        id: String,
    },
    /// A prompt name that is not a plain file name.
    #[error(
        "{name:?} must be a prompt name: 1..=64 characters of A-Z a-z 0-9 - _ . (the file is <prompts.dir>/<name>.wav)"
    )]
    BadPromptName {
        /// The name as written.
        name: String,
    },
    /// A rule's schedule that does not parse.
    #[error("{reason} (expected HH:MM-HH:MM or closed)")]
    BadSchedule {
        /// Why.
        reason: String,
    },
    /// A calling window that does not parse.
    #[error("{reason} (expected HH:MM-HH:MM, such as 08:00-21:00)")]
    BadCallingWindow {
        /// Why.
        reason: String,
    },
    /// A queue failing over to itself.
    #[error("must name another queue, not the queue itself")]
    FailoverToItself,
    /// An agent id that is empty, too long, or has characters outside the
    /// allowed set.
    #[error("{id:?} must be 1..=64 characters of A-Z a-z 0-9 - _ .")]
    BadAgentId {
        /// The id as written.
        id: String,
    },
    /// Neither or both of two alternative settings.
    #[error("set exactly one of {first} or {second}")]
    ExactlyOneOf {
        /// One setting.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// A setting that only means something with another one.
    #[error("is only allowed with {other_field}")]
    OnlyWith {
        /// The setting it needs.
        other_field: &'static str,
    },
    /// A static agent URI that cannot be dialled.
    #[error("{value:?} {reason}")]
    BadAgentUri {
        /// The URI as written.
        value: String,
        /// Why not.
        reason: AgentUriError,
    },
    /// A user name that is not a plain SIP user part.
    #[error("{user:?} must be 1..=64 characters of A-Z a-z 0-9 - _ . +")]
    BadSipUser {
        /// The user as written.
        user: String,
    },
    /// A number of minutes the number prompts cannot say.
    #[error("{value} minutes cannot be announced; the prompts say numbers up to {max}")]
    NotSpeakable {
        /// The configured value.
        value: u32,
        /// The largest number prompt (`number_<max>`).
        max: u32,
    },
}

impl Invalid {
    pub(super) fn exceeds(
        value: impl Into<u64>,
        other_field: &'static str,
        other: impl Into<u64>,
    ) -> Invalid {
        Invalid::Exceeds {
            value: value.into(),
            other_field,
            other: other.into(),
        }
    }

    pub(super) fn duplicate(entry: &str) -> Invalid {
        Invalid::Duplicate {
            entry: entry.to_owned(),
        }
    }

    pub(super) fn not_digits(value: &str) -> Invalid {
        Invalid::NotDigits {
            value: value.to_owned(),
        }
    }

    pub(super) fn unknown_queue(id: &QueueId) -> Invalid {
        Invalid::UnknownQueue {
            id: id.as_str().to_owned(),
        }
    }
}

/// Turns a toml error into [`ConfigError::Syntax`] with line, column and the
/// enclosing table.
pub(super) fn syntax_error(text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
    let location = error.span().and_then(|span| locate(text, span.start));
    ConfigError::Syntax {
        origin: origin.to_owned(),
        location,
        message: error.message().trim_end().replace('\n', "; "),
    }
}

/// Line, column and enclosing `[table]` of byte offset `offset`.
pub(super) fn locate(text: &str, offset: usize) -> Option<Location> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    // The table is the last header line above this one. Only lines that look
    // like a header of bare keys count, so an array element on a line of its
    // own is not mistaken for one. An error on a header line itself (an
    // unknown table) is about a key whose parent the header spells out, so
    // no enclosing table is named for it.
    let this_line = text[line_start..].lines().next().unwrap_or("");
    let table = match table_header(this_line) {
        Some(_) => None,
        None => before[..line_start].lines().rev().find_map(table_header),
    };
    Some(Location {
        line,
        column,
        table,
    })
}

/// The table name if `line` is a `[table]` or `[[table]]` header of bare keys.
pub(super) fn table_header(line: &str) -> Option<String> {
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(inner);
    let name: String = inner.chars().filter(|c| *c != ' ' && *c != '\t').collect();
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    (!name.is_empty() && name.chars().all(bare)).then_some(name)
}

/// `:line:column` and, unless the message already names it, `: in [table]`.
pub(super) fn location_prefix(location: Option<&Location>, message: &str) -> String {
    let Some(loc) = location else {
        return String::new();
    };
    match &loc.table {
        Some(table) if !message.starts_with(&format!("{table}.")) => {
            format!(":{}:{}: in [{table}]", loc.line, loc.column)
        }
        Some(_) | None => format!(":{}:{}", loc.line, loc.column),
    }
}

pub(super) fn and_more(more: usize) -> String {
    match more {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    }
}
