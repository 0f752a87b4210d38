//! SDP (RFC 8866, formerly RFC 4566) parsing and RFC 3264 offer/answer for
//! a G.711 endpoint.
//!
//! # Parsing
//!
//! [`SessionDescription::parse`] takes the raw body of a SIP message. It is
//! permissive where real peers are sloppy and harmless to accept (bare LF
//! line ends, trailing whitespace, blank lines, a missing `s=` or `t=`, an
//! `o=` user name with spaces, unparseable `a=ptime`), and strict where a
//! wrong answer would follow (no `v=0` first, a bad `m=` line or port, an
//! unknown line type letter, a `c=` we cannot send to, a malformed or
//! contradictory `a=rtpmap`, conflicting direction attributes). Every error is
//! the peer's fault: the caller answers 400.
//!
//! # Offer/answer (RFC 3264)
//!
//! As answerer, [`answer`] accepts the first audio `m=` line that carries
//! `RTP/AVP` and a G.711 law we support, choosing the **first supported
//! format in the offer's order** (RFC 3264 §6.1 recommends keeping the
//! offerer's preference) and answering that single codec plus
//! `telephone-event` when offered at 8000 Hz. Answering one codec means the
//! peer cannot switch codecs mid-stream, and our prompts are pre-encoded per
//! law. Every other `m=` line is refused with port 0 (RFC 3264 §6). An offer
//! without a common codec is [`NegotiationError::NoCommonCodec`] (488).
//!
//! As offerer (late offer in the 200 to an INVITE without a body, or an
//! outbound INVITE), [`offer`] lists our codecs in preference order plus
//! `telephone-event/8000` at payload type 101, and [`process_answer`] checks
//! the answer against it.
//!
//! [`SessionVersion`] keeps the `o=` version right across a dialog (RFC 3264
//! §8): the same body keeps its version, a changed body gets version + 1.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::media::g711::Law;

/// The payload type we offer `telephone-event/8000` at (RFC 4733 §7.1 leaves
/// it dynamic; 101 is what most carriers and PBXes use).
pub const OFFER_TELEPHONE_EVENT_PT: u8 = 101;

/// The RTP clock rate of G.711 and of the `telephone-event` we negotiate.
pub const G711_CLOCK_RATE: u32 = 8000;

/// The named events we act on: DTMF 0-9, *, #, A-D (RFC 4733 §3.2).
const DTMF_EVENTS: u16 = 0xFFFF;

/// A parsed session description (RFC 8866 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` line; empty when the peer omitted it.
    pub session_name: String,
    /// The session-level `c=` line, if any.
    pub connection: Option<Connection>,
    /// Session-level `b=` lines.
    pub bandwidths: Vec<Bandwidth>,
    /// The `t=` lines, in order (usually exactly one, `t=0 0`).
    pub timings: Vec<Timing>,
    /// Session-level `a=` lines.
    pub attributes: Attributes,
    /// The `m=` sections, in order.
    pub media: Vec<MediaDescription>,
}

/// The `o=` line (RFC 8866 §5.2). Identifiers are kept as sent: RFC 8866
/// requires digits, but they are only ever compared, never computed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `<username>`, `-` when the peer has none.
    pub username: String,
    /// `<sess-id>`.
    pub session_id: String,
    /// `<sess-version>`: a peer that changes its SDP must increase it.
    pub session_version: String,
    /// `<unicast-address>` as sent (may be a host name; it is never used to
    /// send media).
    pub address: String,
}

/// A `c=` line (RFC 8866 §5.7) with an IP literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The connection address; `0.0.0.0` (or `::`) means "do not send"
    /// (RFC 3264 §8.4).
    pub addr: IpAddr,
}

/// A `b=` line (RFC 8866 §5.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// `<bwtype>`, e.g. `AS`, `TIAS`, `CT`.
    pub kind: String,
    /// `<bandwidth>` (kbit/s for AS and CT, bit/s for TIAS).
    pub value: u64,
}

/// A `t=` line (RFC 8866 §5.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `<start-time>` in NTP seconds, 0 for unbounded.
    pub start: u64,
    /// `<stop-time>` in NTP seconds, 0 for unbounded.
    pub stop: u64,
}

/// An `m=` section (RFC 8866 §5.14) with its own lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `<media>`: `audio`, `video`, `image`, …
    pub media: String,
    /// `<port>`; 0 means the stream is refused or disabled.
    pub port: u16,
    /// The optional `/<number of ports>`.
    pub port_count: Option<u16>,
    /// `<proto>`: `RTP/AVP`, `RTP/SAVP`, `udptl`, …
    pub proto: String,
    /// `<fmt>` list, in the sender's order of preference; never empty.
    pub formats: Vec<String>,
    /// The media-level `c=` line, if any; overrides the session's.
    pub connection: Option<Connection>,
    /// Media-level `b=` lines.
    pub bandwidths: Vec<Bandwidth>,
    /// Media-level `a=` lines.
    pub attributes: Attributes,
}

/// The `a=` lines of one level (session or media).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `a=rtpmap` lines (RFC 8866 §6.6).
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` lines (RFC 8866 §6.15).
    pub fmtps: Vec<Fmtp>,
    /// `a=ptime` in milliseconds, when it parsed as an integer.
    pub ptime: Option<u32>,
    /// `a=maxptime` in milliseconds, when it parsed as an integer.
    pub maxptime: Option<u32>,
    /// `a=sendrecv`, `a=sendonly`, `a=recvonly` or `a=inactive`.
    pub direction: Option<Direction>,
    /// Every other attribute, as sent.
    pub other: Vec<Attribute>,
}

/// An `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The RTP payload type (0..=127).
    pub payload_type: u8,
    /// The encoding name as sent (compare case-insensitively).
    pub encoding: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The channel count (audio), or other encoding parameters.
    pub params: Option<String>,
}

/// An `a=fmtp:<fmt> <parameters>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    /// The format the parameters apply to.
    pub format: String,
    /// The parameters, as sent (may be empty).
    pub params: String,
}

/// An attribute this module does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The name before the colon.
    pub name: String,
    /// The value after the colon; `None` for a property attribute.
    pub value: Option<String>,
}

/// A media direction (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Send and receive (the default when no direction is given).
    SendRecv,
    /// Send only.
    SendOnly,
    /// Receive only.
    RecvOnly,
    /// Neither send nor receive.
    Inactive,
}

/// Why a body is not acceptable SDP. All of these are the peer's fault; the
/// line numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// The body is not UTF-8 (RFC 8866 §5 default charset).
    #[error("SDP is not valid UTF-8")]
    NotUtf8,
    /// The first line is not `v=` (RFC 8866 §5).
    #[error("SDP does not start with v=")]
    MissingVersion,
    /// `v=` carries something other than 0.
    #[error("unsupported SDP version on line {line}")]
    UnsupportedVersion {
        /// Line number.
        line: usize,
    },
    /// A line is not of the form `<letter>=<value>`.
    #[error("line {line} is not <type>=<value>")]
    MalformedLine {
        /// Line number.
        line: usize,
    },
    /// A type letter RFC 8866 does not define; §5 says such a description
    /// must be ignored or rejected as a whole.
    #[error("unknown line type {letter:?} on line {line}")]
    UnknownLineType {
        /// Line number.
        line: usize,
        /// The unknown type.
        letter: char,
    },
    /// A line that may appear once (`v=`, `o=`, `s=`) appears again.
    #[error("duplicate {letter}= on line {line}")]
    DuplicateLine {
        /// Line number.
        line: usize,
        /// The repeated type.
        letter: char,
    },
    /// A session-only line appears inside an `m=` section.
    #[error("{letter}= on line {line} is not allowed in a media section")]
    MisplacedLine {
        /// Line number.
        line: usize,
        /// The misplaced type.
        letter: char,
    },
    /// There is no `o=` line.
    #[error("SDP has no o= line")]
    MissingOrigin,
    /// The `o=` line does not have its six fields.
    #[error("malformed o= on line {line}")]
    BadOrigin {
        /// Line number.
        line: usize,
    },
    /// A `c=` line is malformed or does not carry an IP literal of its type.
    #[error("malformed or unusable c= on line {line}")]
    BadConnection {
        /// Line number.
        line: usize,
    },
    /// A `b=` line is not `<type>:<number>`.
    #[error("malformed b= on line {line}")]
    BadBandwidth {
        /// Line number.
        line: usize,
    },
    /// A `t=` line is not two integers.
    #[error("malformed t= on line {line}")]
    BadTiming {
        /// Line number.
        line: usize,
    },
    /// An `m=` line lacks a field or carries a non-token.
    #[error("malformed m= on line {line}")]
    BadMediaLine {
        /// Line number.
        line: usize,
    },
    /// The port (or port count) of an `m=` line is not a 16-bit number.
    #[error("bad port in m= on line {line}")]
    BadPort {
        /// Line number.
        line: usize,
    },
    /// An `a=rtpmap` line is malformed.
    #[error("malformed a=rtpmap on line {line}")]
    BadRtpmap {
        /// Line number.
        line: usize,
    },
    /// Two `a=rtpmap` lines map one payload type to different encodings.
    #[error("conflicting a=rtpmap for payload type {payload_type} on line {line}")]
    ConflictingRtpmap {
        /// Line number.
        line: usize,
        /// The payload type mapped twice.
        payload_type: u8,
    },
    /// Two different direction attributes at the same level.
    #[error("conflicting direction attribute on line {line}")]
    ConflictingDirection {
        /// Line number.
        line: usize,
    },
    /// An active `m=` section has no `c=` line, neither its own nor the
    /// session's (RFC 8866 §5.7).
    #[error("m= section {index} has no connection address")]
    MissingConnection {
        /// Zero-based index of the `m=` section.
        index: usize,
    },
}

/// What we advertise and support, for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// The advertised media address (`c=` and `o=`), e.g. the public address.
    pub addr: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// The laws we support, our preference first (the order of our offers;
    /// as answerer the offerer's order wins).
    pub codecs: Vec<Law>,
    /// The packetization time we use when the peer states none we can honour.
    pub ptime_default_ms: u32,
    /// `<sess-id>` of our `o=` line.
    pub session_id: u64,
    /// `<sess-version>` of our `o=` line (see [`SessionVersion`]).
    pub session_version: u64,
    /// `<username>` of our `o=` line (spaces are not allowed; `-` if empty).
    pub user: String,
    /// Our `s=` line (`-` if empty).
    pub session_name: String,
}

/// The outcome of negotiating one audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// The G.711 law both sides use.
    pub law: Law,
    /// The payload type carrying `law` (the offerer's number).
    pub payload_type: u8,
    /// The payload type of `telephone-event/8000`, when negotiated; absent
    /// means DTMF must be detected in-band.
    pub telephone_event: Option<u8>,
    /// The packetization time we send with.
    pub ptime_ms: u32,
    /// Where to send RTP; `None` when the peer gave a hold address
    /// (`0.0.0.0`/`::`, RFC 3264 §8.4) or port 0.
    pub remote: Option<SocketAddr>,
    /// What *we* may do: `can_send()` / `can_receive()`.
    pub direction: Direction,
    /// Where the peer takes RTCP when its `a=rtcp` (RFC 3605) says so;
    /// `None` means the RTP port + 1 (RFC 3550 §11), or no remote at all.
    pub rtcp: Option<SocketAddr>,
}

/// Our answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The SDP body, CRLF line ends.
    pub sdp: String,
    /// What was agreed for the accepted audio stream.
    pub media: NegotiatedMedia,
}

/// Why an offer or answer cannot be agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// Peer: no `RTP/AVP` audio stream with a G.711 law we support (488).
    #[error("no common codec")]
    NoCommonCodec,
    /// Peer: the answer does not have one `m=` line per offered one
    /// (RFC 3264 §6).
    #[error("answer has {answered} m= lines, the offer had {offered}")]
    MediaCountMismatch {
        /// `m=` lines we offered.
        offered: usize,
        /// `m=` lines in the answer.
        answered: usize,
    },
    /// Peer: the answer refused our audio stream (port 0).
    #[error("answer refused the audio stream")]
    AudioRejected,
    /// Peer: the answer changed the transport protocol of our stream.
    #[error("answer changed the transport protocol")]
    ProtoMismatch,
    /// Local: our configuration lists no codec at all.
    #[error("no local codec configured")]
    NoLocalCodecs,
}

/// Tracks the `o=` version of the SDP we send within one dialog
/// (RFC 3264 §8: "the version MUST be incremented by one" when the
/// description changes, and kept when it does not, e.g. a session refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionVersion {
    version: u64,
    /// The last body sent, with its `o=` version left out.
    last: Option<String>,
    /// The last body sent, as sent: our current session.
    sent: Option<String>,
}

impl SessionDescription {
    /// Parses an SDP body (RFC 8866 §5). CRLF or bare LF line ends, trailing
    /// whitespace and blank lines are tolerated.
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        let mut lines = text
            .split('\n')
            .map(|l| l.trim_end_matches(|c: char| c.is_ascii_whitespace()))
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.is_empty());

        // RFC 8866 §5: "v=" first, and only version 0 exists.
        let Some((first_no, first)) = lines.next() else {
            return Err(SdpError::MissingVersion);
        };
        let (letter, value) = split_line(first_no, first)?;
        if letter != 'v' {
            return Err(SdpError::MissingVersion);
        }
        if value.trim() != "0" {
            return Err(SdpError::UnsupportedVersion { line: first_no });
        }

        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut bandwidths = Vec::new();
        let mut timings = Vec::new();
        let mut attributes = Attributes::default();
        let mut media: Vec<MediaDescription> = Vec::new();

        for (no, line) in lines {
            let (letter, value) = split_line(no, line)?;
            if let Some(m) = media.last_mut() {
                // RFC 8866 §5: a media section holds i, c, b, k and a lines.
                match letter {
                    'm' => media.push(parse_media(no, value)?),
                    'c' => m.connection = Some(parse_connection(no, value)?),
                    'b' => m.bandwidths.push(parse_bandwidth(no, value)?),
                    'a' => {
                        if let Err(e) = m.attributes.add(no, value)
                            && m.is_audio()
                        {
                            return Err(e);
                        }
                        // RFC 3264 §6: we refuse every stream but audio, so
                        // what a video or image stream says about its formats
                        // is never used; an attribute we cannot read there is
                        // no reason to refuse the call (RFC 4475 §3.1.1.3:
                        // `a=rtpmap:31 LPC` has no clock rate).
                    }
                    'i' | 'k' => {}
                    'v' | 'o' | 's' | 'u' | 'e' | 'p' | 't' | 'r' | 'z' => {
                        return Err(SdpError::MisplacedLine { line: no, letter });
                    }
                    other => {
                        return Err(SdpError::UnknownLineType {
                            line: no,
                            letter: other,
                        });
                    }
                }
                continue;
            }
            match letter {
                'v' => return Err(SdpError::DuplicateLine { line: no, letter }),
                'o' if origin.is_some() => {
                    return Err(SdpError::DuplicateLine { line: no, letter });
                }
                'o' => origin = Some(parse_origin(no, value)?),
                's' if session_name.is_some() => {
                    return Err(SdpError::DuplicateLine { line: no, letter });
                }
                's' => session_name = Some(value.to_owned()),
                'c' => connection = Some(parse_connection(no, value)?),
                'b' => bandwidths.push(parse_bandwidth(no, value)?),
                't' => timings.push(parse_timing(no, value)?),
                'a' => attributes.add(no, value)?,
                'm' => media.push(parse_media(no, value)?),
                'i' | 'u' | 'e' | 'p' | 'r' | 'z' | 'k' => {}
                other => {
                    return Err(SdpError::UnknownLineType {
                        line: no,
                        letter: other,
                    });
                }
            }
        }

        let origin = origin.ok_or(SdpError::MissingOrigin)?;
        // RFC 8866 §5.7: every stream needs a c= at one of the two levels. A
        // refused stream (port 0) is never sent to, so it may lack one.
        if connection.is_none() {
            let orphan = media
                .iter()
                .position(|m| m.port != 0 && m.connection.is_none());
            if let Some(index) = orphan {
                return Err(SdpError::MissingConnection { index });
            }
        }

        Ok(Self {
            origin,
            session_name: session_name.unwrap_or_default(),
            connection,
            bandwidths,
            timings,
            attributes,
            media,
        })
    }
}

impl MediaDescription {
    /// Whether this is an `audio` section.
    pub fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    /// The `a=rtpmap` for `payload_type`, if present.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.attributes
            .rtpmaps
            .iter()
            .find(|r| r.payload_type == payload_type)
    }

    /// The `a=fmtp` parameters for `format`, if present.
    pub fn fmtp(&self, format: &str) -> Option<&str> {
        self.attributes
            .fmtps
            .iter()
            .find(|f| f.format == format)
            .map(|f| f.params.as_str())
    }

    /// The G.711 law a payload type means here: its `a=rtpmap` when present
    /// (`PCMU/8000` or `PCMA/8000`, any number), otherwise the static
    /// assignments 0 and 8 of RFC 3551 §6.
    pub fn law_of(&self, payload_type: u8) -> Option<Law> {
        match self.rtpmap(payload_type) {
            Some(map) => law_of_rtpmap(map),
            None => match payload_type {
                0 => Some(Law::Ulaw),
                8 => Some(Law::Alaw),
                _ => None,
            },
        }
    }

    /// The payload types of the format list, skipping non-numeric formats.
    fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| parse_payload_type(f))
    }

    /// Like [`Self::payload_types`], with the format as written.
    fn numbered_formats(&self) -> impl Iterator<Item = (&str, u8)> + '_ {
        self.formats
            .iter()
            .filter_map(|f| Some((f.as_str(), parse_payload_type(f)?)))
    }
}

impl Direction {
    /// The direction an answerer uses for an offered one (RFC 3264 §6.1):
    /// sendonly ↔ recvonly, sendrecv and inactive stay.
    pub const fn complement(self) -> Self {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether media may be sent.
    pub const fn can_send(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether media is expected to be received.
    pub const fn can_receive(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The same direction with sending removed.
    pub const fn without_send(self) -> Self {
        match self {
            Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
            Direction::SendOnly | Direction::Inactive => Direction::Inactive,
        }
    }

    /// The attribute name (`sendrecv`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// Answers `offer` as UAS (RFC 3264 §6).
///
/// - The first `audio` `m=` line with a non-zero port, `RTP/AVP` and a G.711
///   law from `local.codecs` is accepted; its first such format in the
///   offer's order is the codec (RFC 3264 §6.1), answered at the offer's
///   payload type number.
/// - `telephone-event/8000` offered in that line is answered at the
///   offerer's number, its events narrowed to DTMF 0-15 (RFC 4733 §7.1.1).
/// - Every other `m=` line is answered with port 0 and its first format.
/// - The direction is the complement of the offered one; a hold address
///   (`c=0.0.0.0`, RFC 2543 style, or `::`) means we must not send
///   (RFC 3264 §8.4), so sending is removed from our direction as well:
///   legacy hold (`0.0.0.0` with sendrecv) is answered `recvonly`, which
///   states honestly what we will do while still letting the peer send.
/// - `a=ptime` is honoured when it is a valid G.711 packetization (10..=60
///   ms, a multiple of 10), clamped by `a=maxptime`, and echoed.
pub fn answer(offer: &SessionDescription, local: &LocalMedia) -> Result<Answer, NegotiationError> {
    if local.codecs.is_empty() {
        return Err(NegotiationError::NoLocalCodecs);
    }
    let (index, chosen) = offer
        .media
        .iter()
        .enumerate()
        .find_map(|(i, m)| select_offered_audio(offer, m, local).map(|c| (i, c)))
        .ok_or(NegotiationError::NoCommonCodec)?;

    let timing = offer
        .timings
        .first()
        .copied()
        .unwrap_or(Timing { start: 0, stop: 0 });
    let mut sdp = String::with_capacity(256 + 32 * offer.media.len());
    write_session_header(&mut sdp, local, timing);
    for (i, m) in offer.media.iter().enumerate() {
        if i != index {
            // RFC 3264 §6: a refused stream keeps media and proto, port 0,
            // and at least one format (the offered first, meaningless here).
            let first = m.formats.first().map_or("0", String::as_str);
            let _ = write!(sdp, "m={} 0 {} {}\r\n", m.media, m.proto, first);
            continue;
        }
        write_audio_section(
            &mut sdp,
            local.port,
            chosen.law,
            chosen.payload_type,
            chosen.telephone_event,
            chosen.ptime_ms,
            chosen.direction,
        );
    }

    Ok(Answer {
        sdp,
        media: NegotiatedMedia {
            law: chosen.law,
            payload_type: chosen.payload_type,
            telephone_event: chosen.telephone_event.map(|(pt, _)| pt),
            ptime_ms: chosen.ptime_ms,
            remote: chosen.remote,
            direction: chosen.direction,
            rtcp: rtcp_address(&offer.media[index], chosen.remote),
        },
    })
}

/// Our offer (late offer in a 200, or an outbound INVITE): one audio stream
/// with `local.codecs` in preference order at their static payload types,
/// `telephone-event/8000` at [`OFFER_TELEPHONE_EVENT_PT`] with events 0-16,
/// `a=ptime` and `a=sendrecv`.
pub fn offer(local: &LocalMedia) -> String {
    let mut sdp = String::with_capacity(320);
    write_session_header(&mut sdp, local, Timing { start: 0, stop: 0 });
    let _ = write!(sdp, "m=audio {} RTP/AVP", local.port);
    for law in dedup_laws(&local.codecs) {
        let _ = write!(sdp, " {}", law.payload_type());
    }
    let _ = write!(sdp, " {OFFER_TELEPHONE_EVENT_PT}\r\n");
    for law in dedup_laws(&local.codecs) {
        let _ = write!(
            sdp,
            "a=rtpmap:{} {}/{G711_CLOCK_RATE}\r\n",
            law.payload_type(),
            law.encoding_name()
        );
    }
    let _ = write!(
        sdp,
        "a=rtpmap:{OFFER_TELEPHONE_EVENT_PT} telephone-event/{G711_CLOCK_RATE}\r\n\
         a=fmtp:{OFFER_TELEPHONE_EVENT_PT} 0-16\r\n\
         a=ptime:{}\r\n\
         a=sendrecv\r\n",
        local.ptime_default_ms
    );
    sdp
}

/// Checks the answer to the SDP [`offer`] produced from `offer_local` and
/// returns what was agreed.
///
/// The answer must keep our single `m=` line (RFC 3264 §6), accept it (port
/// non-zero, `RTP/AVP`) and pick one of our laws at its static number; of
/// several, the answerer's first counts. `telephone-event` is taken only at
/// the number we offered (RFC 3264 §6.1 says the answer SHOULD reuse it): a
/// renumbered one is ignored rather than guessed at, leaving DTMF to
/// in-band detection. Our direction is the complement of the answer's,
/// without sending when the answer gives a hold address.
pub fn process_answer(
    offer_local: &LocalMedia,
    answer: &SessionDescription,
) -> Result<NegotiatedMedia, NegotiationError> {
    if offer_local.codecs.is_empty() {
        return Err(NegotiationError::NoLocalCodecs);
    }
    let [m] = answer.media.as_slice() else {
        return Err(NegotiationError::MediaCountMismatch {
            offered: 1,
            answered: answer.media.len(),
        });
    };
    if m.port == 0 {
        return Err(NegotiationError::AudioRejected);
    }
    if !m.proto.eq_ignore_ascii_case("RTP/AVP") || !m.is_audio() {
        return Err(NegotiationError::ProtoMismatch);
    }
    let (payload_type, law) = m
        .payload_types()
        .find_map(|pt| {
            let law = m.law_of(pt)?;
            (pt == law.payload_type() && offer_local.codecs.contains(&law)).then_some((pt, law))
        })
        .ok_or(NegotiationError::NoCommonCodec)?;
    let telephone_event = m
        .payload_types()
        .find(|&pt| pt == OFFER_TELEPHONE_EVENT_PT)
        .and_then(|pt| m.rtpmap(pt))
        .filter(|map| is_telephone_event(map))
        .map(|map| map.payload_type);

    let ptime_ms = negotiate_ptime(
        m.attributes.ptime.or(answer.attributes.ptime),
        m.attributes.maxptime.or(answer.attributes.maxptime),
        offer_local.ptime_default_ms,
    );
    let (direction, remote) = our_direction(answer, m);
    Ok(NegotiatedMedia {
        law,
        payload_type,
        telephone_event,
        ptime_ms,
        remote,
        direction,
        rtcp: rtcp_address(m, remote),
    })
}

impl SessionVersion {
    /// Starts at `initial` (the version of the first SDP of the dialog).
    pub const fn new(initial: u64) -> Self {
        Self {
            version: initial,
            last: None,
            sent: None,
        }
    }

    /// The last body stamped, exactly as it went out (our side of the
    /// current session); `None` before the first.
    pub fn last_sent(&self) -> Option<&str> {
        self.sent.as_deref()
    }

    /// The version of the last stamped body (or the initial one).
    pub const fn current(&self) -> u64 {
        self.version
    }

    /// Returns `sdp` (one of ours, rendered with any version) with the `o=`
    /// version set: unchanged if the body equals the last one stamped apart
    /// from that field, one more otherwise (RFC 3264 §8). The first body
    /// gets the initial version.
    pub fn stamp(&mut self, sdp: &str) -> String {
        let (key, version_span) = blank_origin_version(sdp);
        match &self.last {
            None => {}
            Some(last) if *last == key => {}
            // RFC 3264 §8: "incremented by one"; u64 does not wrap in any
            // real dialog.
            Some(_) => self.version = self.version.wrapping_add(1),
        }
        self.last = Some(key);
        let out = match version_span {
            None => sdp.to_owned(),
            Some((start, end)) => {
                let mut out = String::with_capacity(sdp.len() + 20);
                out.push_str(&sdp[..start]);
                let _ = write!(out, "{}", self.version);
                out.push_str(&sdp[end..]);
                out
            }
        };
        self.sent = Some(out.clone());
        out
    }
}

// ---------------------------------------------------------------------------
// Helpers: parsing.

/// Splits `x=value`; the type is one ASCII letter (RFC 8866 §5).
fn split_line(no: usize, line: &str) -> Result<(char, &str), SdpError> {
    let bytes = line.as_bytes();
    match bytes {
        [letter, b'=', ..] if letter.is_ascii_alphabetic() => Ok((char::from(*letter), &line[2..])),
        _ => Err(SdpError::MalformedLine { line: no }),
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`.
/// A user name with spaces (seen in the wild) is accepted: the last five
/// fields are taken from the right.
fn parse_origin(no: usize, value: &str) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let bad = SdpError::BadOrigin { line: no };
    let Some(split) = fields.len().checked_sub(5).filter(|&n| n >= 1) else {
        return Err(bad);
    };
    let (user, rest) = fields.split_at(split);
    let [session_id, session_version, _nettype, _addrtype, address] = rest else {
        return Err(bad);
    };
    Ok(Origin {
        username: user.join(" "),
        session_id: (*session_id).to_owned(),
        session_version: (*session_version).to_owned(),
        address: (*address).to_owned(),
    })
}

/// `c=IN IP4|IP6 <address>[/<ttl>][/<count>]`; the address must be an IP
/// literal of the stated family (we cannot resolve names, sans-IO).
fn parse_connection(no: usize, value: &str) -> Result<Connection, SdpError> {
    let bad = SdpError::BadConnection { line: no };
    let mut fields = value.split_ascii_whitespace();
    let (Some(nettype), Some(addrtype), Some(address), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(bad);
    };
    if !nettype.eq_ignore_ascii_case("IN") {
        return Err(bad);
    }
    // Multicast suffixes (RFC 8866 §5.7) are irrelevant to unicast RTP.
    let address = address.split('/').next().unwrap_or(address);
    let addr: IpAddr = address.parse().map_err(|_| bad.clone())?;
    let family_ok = match addr {
        IpAddr::V4(_) => addrtype.eq_ignore_ascii_case("IP4"),
        IpAddr::V6(_) => addrtype.eq_ignore_ascii_case("IP6"),
    };
    if !family_ok {
        return Err(bad);
    }
    Ok(Connection { addr })
}

/// `b=<bwtype>:<bandwidth>`.
fn parse_bandwidth(no: usize, value: &str) -> Result<Bandwidth, SdpError> {
    let (kind, number) = value
        .split_once(':')
        .ok_or(SdpError::BadBandwidth { line: no })?;
    let value = number
        .trim()
        .parse()
        .map_err(|_| SdpError::BadBandwidth { line: no })?;
    Ok(Bandwidth {
        kind: kind.trim().to_owned(),
        value,
    })
}

/// `t=<start> <stop>`.
fn parse_timing(no: usize, value: &str) -> Result<Timing, SdpError> {
    let mut fields = value.split_ascii_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(start)), Some(Ok(stop)), None) => Ok(Timing { start, stop }),
        _ => Err(SdpError::BadTiming { line: no }),
    }
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...` (RFC 8866 §5.14).
fn parse_media(no: usize, value: &str) -> Result<MediaDescription, SdpError> {
    let bad = SdpError::BadMediaLine { line: no };
    let mut fields = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(bad);
    };
    let formats: Vec<String> = fields.map(str::to_owned).collect();
    // Tokens only: these are echoed into our answer.
    let token = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if formats.is_empty() || !token(media) || !token(proto) || !formats.iter().all(|f| token(f)) {
        return Err(bad);
    }
    let bad_port = SdpError::BadPort { line: no };
    let (port, port_count) = match port.split_once('/') {
        Some((port, count)) => (port, Some(count)),
        None => (port, None),
    };
    let port = parse_decimal::<u16>(port).ok_or(bad_port.clone())?;
    let port_count = match port_count {
        Some(count) => Some(
            parse_decimal::<u16>(count)
                .filter(|&n| n > 0)
                .ok_or(bad_port)?,
        ),
        None => None,
    };
    Ok(MediaDescription {
        media: media.to_owned(),
        port,
        port_count,
        proto: proto.to_owned(),
        formats,
        connection: None,
        bandwidths: Vec::new(),
        attributes: Attributes::default(),
    })
}

impl Attributes {
    /// Adds one `a=` line.
    fn add(&mut self, no: usize, value: &str) -> Result<(), SdpError> {
        let (name, attr_value) = match value.split_once(':') {
            Some((name, v)) => (name, Some(v)),
            None => (value, None),
        };
        let direction = match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        };
        if let Some(direction) = direction {
            match self.direction {
                Some(existing) if existing != direction => {
                    return Err(SdpError::ConflictingDirection { line: no });
                }
                _ => self.direction = Some(direction),
            }
            return Ok(());
        }
        match (name, attr_value) {
            ("rtpmap", Some(v)) => {
                let map = parse_rtpmap(v).ok_or(SdpError::BadRtpmap { line: no })?;
                match self
                    .rtpmaps
                    .iter()
                    .find(|r| r.payload_type == map.payload_type)
                {
                    // A repeated identical line is harmless.
                    Some(existing) if *existing == map => {}
                    Some(_) => {
                        return Err(SdpError::ConflictingRtpmap {
                            line: no,
                            payload_type: map.payload_type,
                        });
                    }
                    None => self.rtpmaps.push(map),
                }
            }
            ("rtpmap", None) => return Err(SdpError::BadRtpmap { line: no }),
            ("fmtp", Some(v)) => {
                let v = v.trim_start();
                let (format, params) = v.split_once([' ', '\t']).unwrap_or((v, ""));
                self.fmtps.push(Fmtp {
                    format: format.to_owned(),
                    params: params.trim().to_owned(),
                });
            }
            // Peers that write `ptime:20.0` or worse get our default.
            ("ptime", Some(v)) if parse_decimal::<u32>(v.trim()).is_some() => {
                self.ptime = parse_decimal(v.trim());
            }
            ("maxptime", Some(v)) if parse_decimal::<u32>(v.trim()).is_some() => {
                self.maxptime = parse_decimal(v.trim());
            }
            _ => self.other.push(Attribute {
                name: name.to_owned(),
                value: attr_value.map(str::to_owned),
            }),
        }
        Ok(())
    }
}

/// `<pt> <encoding>/<clock>[/<params>]`.
fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, rest) = value.trim().split_once([' ', '\t'])?;
    let payload_type = parse_payload_type(pt)?;
    let mut parts = rest.trim().splitn(3, '/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parse_decimal(parts.next()?)?;
    let params = parts.next().map(str::to_owned);
    Some(RtpMap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        params,
    })
}

/// A payload type: a decimal 0..=127 (RFC 3550 §5.1, 7 bits).
fn parse_payload_type(s: &str) -> Option<u8> {
    parse_decimal::<u8>(s).filter(|&pt| pt <= 127)
}

/// Digits only (`str::parse` would also take a leading `+`).
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// ---------------------------------------------------------------------------
// Helpers: negotiation.

/// What we agreed to for the accepted offered stream.
struct Chosen {
    law: Law,
    payload_type: u8,
    /// Payload type and the event mask we answer.
    telephone_event: Option<(u8, u16)>,
    ptime_ms: u32,
    remote: Option<SocketAddr>,
    direction: Direction,
}

/// Whether `m` is an offered stream we accept, and on what terms.
fn select_offered_audio(
    offer: &SessionDescription,
    m: &MediaDescription,
    local: &LocalMedia,
) -> Option<Chosen> {
    // We do plain RTP only: RTP/SAVP, RTP/AVPF, UDP/TLS/… are refused.
    if m.port == 0 || !m.is_audio() || !m.proto.eq_ignore_ascii_case("RTP/AVP") {
        return None;
    }
    // RFC 3264 §6.1: keep the offerer's order; take its first we support.
    let (payload_type, law) = m.payload_types().find_map(|pt| {
        let law = m.law_of(pt)?;
        local.codecs.contains(&law).then_some((pt, law))
    })?;
    // RFC 4733 §7.1.1: telephone-event at the codec's clock rate, at the
    // offerer's number; events narrowed to the DTMF ones we act on.
    let telephone_event = m.numbered_formats().find_map(|(format, pt)| {
        let map = m.rtpmap(pt).filter(|map| is_telephone_event(map))?;
        let events = match m.fmtp(format) {
            Some(params) => parse_event_list(params).unwrap_or(DTMF_EVENTS),
            // RFC 4733 §2.4.1: no fmtp means events 0-15.
            None => DTMF_EVENTS,
        } & DTMF_EVENTS;
        (events != 0 && map.payload_type != payload_type).then_some((pt, events))
    });
    let ptime_ms = negotiate_ptime(
        m.attributes.ptime.or(offer.attributes.ptime),
        m.attributes.maxptime.or(offer.attributes.maxptime),
        local.ptime_default_ms,
    );
    let (direction, remote) = our_direction(offer, m);
    Some(Chosen {
        law,
        payload_type,
        telephone_event,
        ptime_ms,
        remote,
        direction,
    })
}

/// Our direction facing the peer's `m` (RFC 3264 §6.1 complement) and where
/// to send. A hold address means "send nothing" (RFC 3264 §8.4).
fn our_direction(
    sdp: &SessionDescription,
    m: &MediaDescription,
) -> (Direction, Option<SocketAddr>) {
    let theirs = m
        .attributes
        .direction
        .or(sdp.attributes.direction)
        .unwrap_or(Direction::SendRecv);
    let ours = theirs.complement();
    let addr = m.connection.or(sdp.connection).map(|c| c.addr);
    match addr {
        Some(addr) if !addr.is_unspecified() && m.port != 0 => {
            (ours, Some(SocketAddr::new(addr, m.port)))
        }
        _ => (ours.without_send(), None),
    }
}

/// The peer's RTCP address from `a=rtcp:<port> [IN IP4|IP6 <address>]`
/// (RFC 3605 §2.1) on `m`, when it has an RTP address at all. An attribute
/// that does not parse, or names an unspecified address, is ignored: RTCP
/// then goes to the RTP port + 1 as without it.
fn rtcp_address(m: &MediaDescription, remote: Option<SocketAddr>) -> Option<SocketAddr> {
    let remote = remote?;
    let value = m
        .attributes
        .other
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case("rtcp"))?
        .value
        .as_deref()?;
    let mut fields = value.split_ascii_whitespace();
    let port = parse_decimal::<u16>(fields.next()?).filter(|&p| p != 0)?;
    let ip = match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (None, ..) => remote.ip(),
        (Some(net), Some(kind), Some(addr), None) if net.eq_ignore_ascii_case("IN") => {
            let ip: IpAddr = addr.parse().ok()?;
            let family_ok = match ip {
                IpAddr::V4(_) => kind.eq_ignore_ascii_case("IP4"),
                IpAddr::V6(_) => kind.eq_ignore_ascii_case("IP6"),
            };
            (family_ok && !ip.is_unspecified()).then_some(ip)?
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The ptime we send with: the peer's when valid for G.711 (10..=60 ms, a
/// multiple of 10), else `default`; then lowered to the peer's maxptime.
fn negotiate_ptime(ptime: Option<u32>, maxptime: Option<u32>, default: u32) -> u32 {
    let valid = |p: u32| (10..=60).contains(&p) && p.is_multiple_of(10);
    let ptime = ptime.filter(|&p| valid(p)).unwrap_or(default);
    match maxptime {
        Some(max) if max >= 10 && ptime > max => (max - max % 10).min(60),
        _ => ptime,
    }
}

/// `telephone-event/8000` (RFC 4733 §7.1.1), any case.
fn is_telephone_event(map: &RtpMap) -> bool {
    map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == G711_CLOCK_RATE
}

/// `PCMU/8000` or `PCMA/8000`, mono.
fn law_of_rtpmap(map: &RtpMap) -> Option<Law> {
    if map.clock_rate != G711_CLOCK_RATE || map.params.as_deref().is_some_and(|p| p != "1") {
        return None;
    }
    [Law::Ulaw, Law::Alaw]
        .into_iter()
        .find(|law| map.encoding.eq_ignore_ascii_case(law.encoding_name()))
}

/// The events 0..=15 of an RFC 4733 §7.1.1 event list (`0-11,16`), as a
/// bit mask; `None` when the list is malformed.
fn parse_event_list(list: &str) -> Option<u16> {
    let mut mask = 0u16;
    for item in list.split(',') {
        let item = item.trim();
        let (low, high) = match item.split_once('-') {
            Some((low, high)) => (parse_decimal::<u8>(low)?, parse_decimal::<u8>(high)?),
            None => {
                let single = parse_decimal::<u8>(item)?;
                (single, single)
            }
        };
        if low > high {
            return None;
        }
        for event in low..=high.min(15) {
            mask |= 1 << event;
        }
    }
    Some(mask)
}

/// Renders a mask of events 0..=15 as ranges (`0-11,14`).
fn write_event_list(out: &mut String, mask: u16) {
    let mut first = true;
    let mut event = 0u8;
    while event < 16 {
        if mask & (1 << event) == 0 {
            event += 1;
            continue;
        }
        let start = event;
        while event < 16 && mask & (1 << event) != 0 {
            event += 1;
        }
        let end = event - 1;
        if !first {
            out.push(',');
        }
        first = false;
        let _ = if start == end {
            write!(out, "{start}")
        } else {
            write!(out, "{start}-{end}")
        };
    }
}

/// `local.codecs` without repeats, order kept.
fn dedup_laws(codecs: &[Law]) -> impl Iterator<Item = Law> + '_ {
    codecs
        .iter()
        .enumerate()
        .filter(|(i, law)| !codecs[..*i].contains(law))
        .map(|(_, &law)| law)
}

// ---------------------------------------------------------------------------
// Helpers: rendering.

/// `v=`, `o=`, `s=`, `c=`, `t=` of our SDP.
fn write_session_header(out: &mut String, local: &LocalMedia, timing: Timing) {
    let family = match local.addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    // Local configuration, but a space or line break here would corrupt
    // the whole body, so fall back to "-".
    let sane = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    let user = if sane(&local.user) {
        local.user.as_str()
    } else {
        "-"
    };
    let name = if !local.session_name.is_empty() && !local.session_name.contains(['\r', '\n', '\0'])
    {
        local.session_name.as_str()
    } else {
        "-"
    };
    let _ = write!(
        out,
        "v=0\r\n\
         o={user} {} {} IN {family} {}\r\n\
         s={name}\r\n\
         c=IN {family} {}\r\n\
         t={} {}\r\n",
        local.session_id, local.session_version, local.addr, local.addr, timing.start, timing.stop
    );
}

/// Our accepted audio `m=` section.
fn write_audio_section(
    out: &mut String,
    port: u16,
    law: Law,
    payload_type: u8,
    telephone_event: Option<(u8, u16)>,
    ptime_ms: u32,
    direction: Direction,
) {
    let _ = write!(out, "m=audio {port} RTP/AVP {payload_type}");
    if let Some((te, _)) = telephone_event {
        let _ = write!(out, " {te}");
    }
    let _ = write!(
        out,
        "\r\na=rtpmap:{payload_type} {}/{G711_CLOCK_RATE}\r\n",
        law.encoding_name()
    );
    if let Some((te, events)) = telephone_event {
        let _ = write!(
            out,
            "a=rtpmap:{te} telephone-event/{G711_CLOCK_RATE}\r\na=fmtp:{te} "
        );
        write_event_list(out, events);
        out.push_str("\r\n");
    }
    let _ = write!(out, "a=ptime:{ptime_ms}\r\na={}\r\n", direction.as_str());
}

/// The body with the `o=` version field removed (the comparison key), and
/// the byte span of that field.
fn blank_origin_version(sdp: &str) -> (String, Option<(usize, usize)>) {
    let mut offset = 0;
    for line in sdp.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("o=") {
            // Our own o= line: `<user> <id> <version> …`, single spaces.
            let mut fields = rest.splitn(4, ' ');
            let (Some(user), Some(id), Some(version)) =
                (fields.next(), fields.next(), fields.next())
            else {
                break;
            };
            let start = offset + 2 + user.len() + 1 + id.len() + 1;
            let end = start + version.len();
            let mut key = String::with_capacity(sdp.len());
            key.push_str(&sdp[..start]);
            key.push_str(&sdp[end..]);
            return (key, Some((start, end)));
        }
        offset += line.len();
    }
    (sdp.to_owned(), None)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// sipp 3.6 `uac_pcap` scenario offer (`sipp -sd uac_pcap`).
    const SIPP_UAC_PCAP: &str = "v=0\r\n\
        o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
        s=-\r\n\
        c=IN IP4 127.0.0.1\r\n\
        t=0 0\r\n\
        m=audio 6000 RTP/AVP 8 101\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-11,16\r\n";

    fn local() -> LocalMedia {
        LocalMedia {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            port: 40000,
            codecs: vec![Law::Ulaw, Law::Alaw],
            ptime_default_ms: 20,
            session_id: 4242,
            session_version: 7,
            user: "callbackd".into(),
            session_name: "callbackd".into(),
        }
    }

    fn parse(s: &str) -> SessionDescription {
        SessionDescription::parse(s.as_bytes()).expect("test SDP parses")
    }

    /// An offer with one audio line `m=audio 6000 RTP/AVP <formats>` plus
    /// `extra` lines after it.
    fn audio_offer(formats: &str, extra: &str) -> SessionDescription {
        parse(&format!(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP {formats}\r\n{extra}"
        ))
    }

    fn lines(sdp: &str) -> Vec<&str> {
        sdp.split("\r\n").filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn parses_sipp_uac_pcap_offer() {
        let sdp = parse(SIPP_UAC_PCAP);
        assert_eq!(sdp.origin.username, "user1");
        assert_eq!(sdp.origin.session_version, "2353687637");
        assert_eq!(sdp.session_name, "-");
        assert_eq!(
            sdp.connection,
            Some(Connection {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST)
            })
        );
        assert_eq!(sdp.timings, vec![Timing { start: 0, stop: 0 }]);
        let [m] = sdp.media.as_slice() else {
            panic!("one m= line expected")
        };
        assert_eq!(
            (m.media.as_str(), m.port, m.proto.as_str()),
            ("audio", 6000, "RTP/AVP")
        );
        assert_eq!(m.formats, vec!["8", "101"]);
        assert_eq!(m.law_of(8), Some(Law::Alaw));
        assert_eq!(m.fmtp("101"), Some("0-11,16"));
    }

    #[test]
    fn answers_sipp_uac_pcap_with_pcma_and_te_101() {
        let answer = answer(&parse(SIPP_UAC_PCAP), &local()).expect("acceptable");
        assert_eq!(answer.media.law, Law::Alaw);
        assert_eq!(answer.media.payload_type, 8);
        assert_eq!(answer.media.telephone_event, Some(101));
        assert_eq!(answer.media.remote, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(answer.media.direction, Direction::SendRecv);
        assert_eq!(
            lines(&answer.sdp),
            vec![
                "v=0",
                "o=callbackd 4242 7 IN IP4 192.0.2.10",
                "s=callbackd",
                "c=IN IP4 192.0.2.10",
                "t=0 0",
                "m=audio 40000 RTP/AVP 8 101",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:101 telephone-event/8000",
                // 0-11,16 narrowed to the DTMF events 0-15.
                "a=fmtp:101 0-11",
                "a=ptime:20",
                "a=sendrecv",
            ]
        );
        assert!(answer.sdp.ends_with("\r\n"));
        assert!(!answer.sdp.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn answers_te_at_offerers_number_96_play_dtmf_style() {
        let offer = audio_offer(
            "0 96",
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n",
        );
        let answer = answer(&offer, &local()).unwrap();
        assert_eq!(answer.media.telephone_event, Some(96));
        assert_eq!(answer.media.law, Law::Ulaw);
        let l = lines(&answer.sdp);
        assert!(l.contains(&"m=audio 40000 RTP/AVP 0 96"), "{l:?}");
        assert!(l.contains(&"a=rtpmap:96 telephone-event/8000"));
        assert!(l.contains(&"a=fmtp:96 0-15"));
    }

    #[test]
    fn echoes_te_fmtp_0_16_narrowed_to_0_15() {
        let offer = audio_offer(
            "0 101",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
        );
        let answer = answer(&offer, &local()).unwrap();
        assert!(lines(&answer.sdp).contains(&"a=fmtp:101 0-15"));
    }

    #[test]
    fn te_without_fmtp_answered_with_default_0_15() {
        let offer = audio_offer("8 101", "a=rtpmap:101 telephone-event/8000\r\n");
        let answer = answer(&offer, &local()).unwrap();
        assert_eq!(answer.media.telephone_event, Some(101));
        assert!(lines(&answer.sdp).contains(&"a=fmtp:101 0-15"));
    }

    #[test]
    fn omits_te_offered_at_other_clock_rate() {
        let offer = audio_offer("0 101", "a=rtpmap:101 telephone-event/16000\r\n");
        let answer = answer(&offer, &local()).unwrap();
        assert_eq!(answer.media.telephone_event, None);
        assert!(!answer.sdp.contains("telephone-event"));
        assert!(lines(&answer.sdp).contains(&"m=audio 40000 RTP/AVP 0"));
    }

    #[test]
    fn omits_te_offered_only_for_non_dtmf_events() {
        let offer = audio_offer(
            "0 101",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 16\r\n",
        );
        assert_eq!(
            answer(&offer, &local()).unwrap().media.telephone_event,
            None
        );
    }

    #[test]
    fn accepts_static_payload_types_without_rtpmap() {
        let answer = answer(&audio_offer("0 8", ""), &local()).unwrap();
        assert_eq!(
            (answer.media.law, answer.media.payload_type),
            (Law::Ulaw, 0)
        );
        assert!(lines(&answer.sdp).contains(&"a=rtpmap:0 PCMU/8000"));
        assert_eq!(answer.media.telephone_event, None);
    }

    #[test]
    fn accepts_dynamic_numbered_pcmu_and_answers_that_number() {
        let offer = audio_offer(
            "18 97",
            "a=rtpmap:18 G729/8000\r\na=rtpmap:97 pcmu/8000\r\n",
        );
        let answer = answer(&offer, &local()).unwrap();
        assert_eq!(
            (answer.media.law, answer.media.payload_type),
            (Law::Ulaw, 97)
        );
        let l = lines(&answer.sdp);
        assert!(l.contains(&"m=audio 40000 RTP/AVP 97"), "{l:?}");
        assert!(l.contains(&"a=rtpmap:97 PCMU/8000"));
    }

    #[test]
    fn follows_offerers_codec_order_not_ours() {
        // We prefer PCMU, the offer lists PCMA first: RFC 3264 §6.1.
        let answer = answer(&audio_offer("8 0", ""), &local()).unwrap();
        assert_eq!(answer.media.law, Law::Alaw);
    }

    #[test]
    fn skips_offered_law_we_do_not_support() {
        let mut ours = local();
        ours.codecs = vec![Law::Ulaw];
        let answer = answer(&audio_offer("8 0", ""), &ours).unwrap();
        assert_eq!(answer.media.law, Law::Ulaw);
    }

    #[test]
    fn rejects_g729_only_offer_with_no_common_codec() {
        let offer = audio_offer("18", "a=rtpmap:18 G729/8000\r\n");
        assert_eq!(
            answer(&offer, &local()),
            Err(NegotiationError::NoCommonCodec)
        );
    }

    #[test]
    fn rejects_static_number_remapped_to_other_codec() {
        // An rtpmap overrides the static meaning of 0 (RFC 8866 §6.6).
        let offer = audio_offer("0", "a=rtpmap:0 G729/8000\r\n");
        assert_eq!(
            answer(&offer, &local()),
            Err(NegotiationError::NoCommonCodec)
        );
    }

    #[test]
    fn rejects_pcmu_at_wrong_clock_rate() {
        let offer = audio_offer("97", "a=rtpmap:97 PCMU/16000\r\n");
        assert_eq!(
            answer(&offer, &local()),
            Err(NegotiationError::NoCommonCodec)
        );
    }

    #[test]
    fn rejects_offer_when_no_local_codecs() {
        let mut ours = local();
        ours.codecs.clear();
        assert_eq!(
            answer(&audio_offer("0", ""), &ours),
            Err(NegotiationError::NoLocalCodecs)
        );
    }

    #[test]
    fn answers_every_m_line_refusing_all_but_first_audio() {
        let offer = parse(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n\
             m=audio 6000 RTP/SAVP 0\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xyz\r\n\
             m=audio 6002 RTP/AVP 8 0\r\n\
             m=audio 6004 RTP/AVP 0\r\n\
             m=video 6006 RTP/AVP 31 34\r\n",
        );
        let answer = answer(&offer, &local()).unwrap();
        let m_lines: Vec<&str> = lines(&answer.sdp)
            .into_iter()
            .filter(|l| l.starts_with("m="))
            .collect();
        assert_eq!(
            m_lines,
            vec![
                "m=audio 0 RTP/SAVP 0",
                "m=audio 40000 RTP/AVP 8",
                "m=audio 0 RTP/AVP 0",
                "m=video 0 RTP/AVP 31",
            ]
        );
        assert_eq!(
            answer.media.remote,
            Some("198.51.100.5:6002".parse().unwrap())
        );
        let reparsed = SessionDescription::parse(answer.sdp.as_bytes()).unwrap();
        assert_eq!(reparsed.media.len(), 4);
    }

    #[test]
    fn skips_audio_m_line_with_port_zero() {
        let offer = parse(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n\
             m=audio 0 RTP/AVP 0\r\nm=audio 7000 RTP/AVP 0\r\n",
        );
        let answer = answer(&offer, &local()).unwrap();
        assert_eq!(
            answer.media.remote,
            Some("198.51.100.5:7000".parse().unwrap())
        );
        assert!(answer.sdp.contains("m=audio 0 RTP/AVP 0\r\nm=audio 40000 "));
    }

    #[test]
    fn answers_sendonly_with_recvonly() {
        let answer = answer(&audio_offer("0", "a=sendonly\r\n"), &local()).unwrap();
        assert_eq!(answer.media.direction, Direction::RecvOnly);
        assert!(!answer.media.direction.can_send());
        assert!(answer.media.direction.can_receive());
        assert!(lines(&answer.sdp).contains(&"a=recvonly"));
    }

    #[test]
    fn answers_recvonly_with_sendonly_and_inactive_with_inactive() {
        let a = answer(&audio_offer("0", "a=recvonly\r\n"), &local()).unwrap();
        assert_eq!(a.media.direction, Direction::SendOnly);
        assert!(lines(&a.sdp).contains(&"a=sendonly"));
        let a = answer(&audio_offer("0", "a=inactive\r\n"), &local()).unwrap();
        assert_eq!(a.media.direction, Direction::Inactive);
        assert!(lines(&a.sdp).contains(&"a=inactive"));
    }

    #[test]
    fn media_level_direction_overrides_session_level() {
        let offer = parse(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n\
             a=sendonly\r\nm=audio 6000 RTP/AVP 0\r\na=sendrecv\r\n",
        );
        assert_eq!(
            answer(&offer, &local()).unwrap().media.direction,
            Direction::SendRecv
        );
        let offer = parse(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n\
             a=sendonly\r\nm=audio 6000 RTP/AVP 0\r\n",
        );
        assert_eq!(
            answer(&offer, &local()).unwrap().media.direction,
            Direction::RecvOnly
        );
    }

    #[test]
    fn treats_c_0_0_0_0_as_hold() {
        let offer = parse(
            "v=0\r\no=- 1 2 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP 0\r\n",
        );
        let answer = answer(&offer, &local()).unwrap();
        assert_eq!(answer.media.remote, None);
        assert_eq!(answer.media.direction, Direction::RecvOnly);
        let l = lines(&answer.sdp);
        assert!(l.contains(&"a=recvonly"));
        // We still advertise where the peer may send.
        assert!(l.contains(&"c=IN IP4 192.0.2.10"));
    }

    #[test]
    fn hold_address_with_recvonly_answers_inactive() {
        let offer = parse(
            "v=0\r\no=- 1 2 IN IP4 198.51.100.5\r\ns=-\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n",
        );
        assert_eq!(
            answer(&offer, &local()).unwrap().media.direction,
            Direction::Inactive
        );
    }

    #[test]
    fn honours_offered_ptime_30() {
        let answer = answer(&audio_offer("8", "a=ptime:30\r\n"), &local()).unwrap();
        assert_eq!(answer.media.ptime_ms, 30);
        assert!(lines(&answer.sdp).contains(&"a=ptime:30"));
    }

    #[test]
    fn ignores_bad_ptime_and_uses_default() {
        for bad in [
            "a=ptime:25\r\n",
            "a=ptime:0\r\n",
            "a=ptime:120\r\n",
            "a=ptime:20.5\r\n",
        ] {
            let answer = answer(&audio_offer("8", bad), &local()).unwrap();
            assert_eq!(answer.media.ptime_ms, 20, "{bad}");
            assert!(lines(&answer.sdp).contains(&"a=ptime:20"));
        }
    }

    #[test]
    fn lowers_default_ptime_to_offered_maxptime() {
        let mut ours = local();
        ours.ptime_default_ms = 40;
        let answer = answer(&audio_offer("8", "a=maxptime:25\r\n"), &ours).unwrap();
        assert_eq!(answer.media.ptime_ms, 20);
    }

    #[test]
    fn parses_ipv6_connection() {
        let offer = parse(
            "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP 0\r\n",
        );
        let addr = IpAddr::V6("2001:db8::5".parse::<Ipv6Addr>().unwrap());
        assert_eq!(offer.connection, Some(Connection { addr }));
        let mut ours = local();
        ours.addr = "2001:db8::10".parse().unwrap();
        let answer = answer(&offer, &ours).unwrap();
        assert_eq!(answer.media.remote, Some(SocketAddr::new(addr, 6000)));
        assert!(lines(&answer.sdp).contains(&"c=IN IP6 2001:db8::10"));
        assert!(lines(&answer.sdp).contains(&"o=callbackd 4242 7 IN IP6 2001:db8::10"));
    }

    #[test]
    fn media_level_connection_overrides_session_level() {
        let offer = audio_offer("0", "c=IN IP4 203.0.113.9\r\n");
        assert_eq!(
            answer(&offer, &local()).unwrap().media.remote,
            Some("203.0.113.9:6000".parse().unwrap())
        );
    }

    #[test]
    fn accepts_bare_lf_trailing_whitespace_and_blank_last_lines() {
        let sloppy = "v=0\no=- 1 1 IN IP4 198.51.100.5  \ns=\nc=IN IP4 198.51.100.5\t\n\
                      t=0 0\nm=audio 6000 RTP/AVP 0 \na=ptime:30 \r\n\r\n\n";
        let sdp = parse(sloppy);
        assert_eq!(sdp.session_name, "");
        assert_eq!(sdp.media[0].formats, vec!["0"]);
        assert_eq!(sdp.media[0].attributes.ptime, Some(30));
    }

    #[test]
    fn parses_port_count_bandwidth_and_keeps_unknown_attributes() {
        let sdp = parse(
            "v=0\r\no=Cisco SIP UA 1 1 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\n\
             b=AS:64\r\nt=0 0\r\nm=audio 6000/2 RTP/AVP 0\r\nb=TIAS:64000\r\na=rtcp:6001\r\n\
             a=silenceSupp:off - - - -\r\n",
        );
        assert_eq!(sdp.origin.username, "Cisco SIP UA");
        assert_eq!(
            sdp.bandwidths,
            vec![Bandwidth {
                kind: "AS".into(),
                value: 64
            }]
        );
        let m = &sdp.media[0];
        assert_eq!((m.port, m.port_count), (6000, Some(2)));
        assert_eq!(m.bandwidths[0].value, 64000);
        assert_eq!(
            m.attributes.other,
            vec![
                Attribute {
                    name: "rtcp".into(),
                    value: Some("6001".into())
                },
                Attribute {
                    name: "silenceSupp".into(),
                    value: Some("off - - - -".into())
                },
            ]
        );
    }

    #[test]
    fn rejects_missing_v_line() {
        let err = SessionDescription::parse(b"o=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n").unwrap_err();
        assert_eq!(err, SdpError::MissingVersion);
        assert_eq!(
            SessionDescription::parse(b""),
            Err(SdpError::MissingVersion)
        );
        assert_eq!(
            SessionDescription::parse(b"\r\n\r\n"),
            Err(SdpError::MissingVersion)
        );
    }

    #[test]
    fn rejects_version_other_than_zero() {
        assert_eq!(
            SessionDescription::parse(b"v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n"),
            Err(SdpError::UnsupportedVersion { line: 1 })
        );
    }

    #[test]
    fn rejects_m_line_with_non_numeric_port() {
        let err = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio port RTP/AVP 0\r\n",
        )
        .unwrap_err();
        assert_eq!(err, SdpError::BadPort { line: 6 });
    }

    #[test]
    fn rejects_m_line_with_port_above_65535_or_signed() {
        for port in ["65536", "+5000", "-1", "5000/0", "5000/x"] {
            let body = format!(
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
            );
            assert_eq!(
                SessionDescription::parse(body.as_bytes()),
                Err(SdpError::BadPort { line: 6 }),
                "{port}"
            );
        }
    }

    #[test]
    fn rejects_truncated_m_line() {
        for m in ["m=audio 6000 RTP/AVP", "m=audio 6000", "m=audio", "m="] {
            let body =
                format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\n{m}\r\n");
            assert_eq!(
                SessionDescription::parse(body.as_bytes()),
                Err(SdpError::BadMediaLine { line: 5 }),
                "{m}"
            );
        }
    }

    #[test]
    fn rejects_truncated_lines() {
        let cases: [(&str, SdpError); 6] = [
            ("o=- 1 1 IN", SdpError::BadOrigin { line: 2 }),
            ("c=IN IP4", SdpError::BadConnection { line: 2 }),
            ("t=0", SdpError::BadTiming { line: 2 }),
            ("b=AS", SdpError::BadBandwidth { line: 2 }),
            ("a=rtpmap:8", SdpError::BadRtpmap { line: 2 }),
            ("x", SdpError::MalformedLine { line: 2 }),
        ];
        for (line, expected) in cases {
            let body = format!("v=0\r\n{line}\r\no=- 1 1 IN IP4 1.2.3.4\r\n");
            assert_eq!(
                SessionDescription::parse(body.as_bytes()),
                Err(expected),
                "{line}"
            );
        }
    }

    #[test]
    fn rejects_unknown_line_type_letter() {
        assert_eq!(
            SessionDescription::parse(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nx=1\r\n"),
            Err(SdpError::UnknownLineType {
                line: 3,
                letter: 'x'
            })
        );
    }

    #[test]
    fn rejects_connection_with_host_name_or_wrong_family() {
        for c in [
            "c=IN IP4 host.example.com",
            "c=IN IP6 1.2.3.4",
            "c=IN IP4 ::1",
            "c=ATM NSAP 1",
        ] {
            let body = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n{c}\r\n");
            assert_eq!(
                SessionDescription::parse(body.as_bytes()),
                Err(SdpError::BadConnection { line: 3 }),
                "{c}"
            );
        }
    }

    #[test]
    fn rejects_active_stream_without_connection() {
        let body = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(
            SessionDescription::parse(body),
            Err(SdpError::MissingConnection { index: 1 })
        );
    }

    #[test]
    fn rejects_duplicate_and_misplaced_session_lines() {
        assert_eq!(
            SessionDescription::parse(b"v=0\r\nv=0\r\n"),
            Err(SdpError::DuplicateLine {
                line: 2,
                letter: 'v'
            })
        );
        assert_eq!(
            SessionDescription::parse(
                b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n"
            ),
            Err(SdpError::MisplacedLine { line: 6, letter: 't' })
        );
    }

    #[test]
    fn rejects_conflicting_rtpmap_and_direction() {
        let body = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 96\r\n\
                    a=rtpmap:96 PCMU/8000\r\na=rtpmap:96 PCMA/8000\r\n";
        assert_eq!(
            SessionDescription::parse(body.as_bytes()),
            Err(SdpError::ConflictingRtpmap {
                line: 7,
                payload_type: 96
            })
        );
        let body = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\n\
                    a=sendonly\r\na=recvonly\r\n";
        assert_eq!(
            SessionDescription::parse(body.as_bytes()),
            Err(SdpError::ConflictingDirection { line: 7 })
        );
    }

    #[test]
    fn rejects_rtpmap_with_payload_type_above_127() {
        let body = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\na=rtpmap:128 PCMU/8000\r\n";
        assert_eq!(
            SessionDescription::parse(body.as_bytes()),
            Err(SdpError::BadRtpmap { line: 3 })
        );
    }

    #[test]
    fn unreadable_attributes_on_a_refused_stream_are_ignored() {
        // RFC 4475 §3.1.1.3: an rtpmap without a clock rate on the video
        // stream we refuse anyway.
        let body = "v=0\r\no=m 29739 7272939 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n\
                    t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\n\
                    a=rtpmap:31 LPC\r\na=sendonly\r\na=recvonly\r\n";
        let sdp = SessionDescription::parse(body.as_bytes()).expect("parses");
        assert_eq!(sdp.media.len(), 2);
        assert!(sdp.media[1].attributes.rtpmaps.is_empty());
    }

    #[test]
    fn rejects_unreadable_rtpmap_on_the_audio_stream() {
        let body = "v=0\r\no=m 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n\
                    t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\na=rtpmap:12 LPC\r\n";
        assert_eq!(
            SessionDescription::parse(body.as_bytes()),
            Err(SdpError::BadRtpmap { line: 7 })
        );
    }

    #[test]
    fn rejects_missing_origin() {
        assert_eq!(
            SessionDescription::parse(b"v=0\r\ns=-\r\n"),
            Err(SdpError::MissingOrigin)
        );
    }

    #[test]
    fn rejects_non_utf8_body() {
        let mut body = SIPP_UAC_PCAP.as_bytes().to_vec();
        body[30] = 0xFF;
        assert_eq!(SessionDescription::parse(&body), Err(SdpError::NotUtf8));
    }

    #[test]
    fn rejects_garbage_bytes_without_panic() {
        // A deterministic spread of inputs: every prefix of a real offer,
        // and pseudo-random byte strings (xorshift, fixed seed).
        for end in 0..SIPP_UAC_PCAP.len() {
            let _ = SessionDescription::parse(&SIPP_UAC_PCAP.as_bytes()[..end]);
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let mut bytes = Vec::with_capacity(64);
            for _ in 0..64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(b"v=0mac \r\n:/1IP4o"[(state % 16) as usize]);
            }
            let Ok(sdp) = SessionDescription::parse(&bytes) else {
                continue;
            };
            if let Ok(a) = answer(&sdp, &local()) {
                SessionDescription::parse(a.sdp.as_bytes()).expect("our answer parses");
            }
        }
        assert!(matches!(
            SessionDescription::parse(b"\x00\x01garbage=\xc3"),
            Err(SdpError::NotUtf8)
        ));
        assert!(matches!(
            SessionDescription::parse(b"garbage"),
            Err(SdpError::MalformedLine { line: 1 })
        ));
    }

    #[test]
    fn our_answer_reparses_and_reanswers_identically() {
        let ours = local();
        let first = answer(&parse(SIPP_UAC_PCAP), &ours).unwrap();
        let reparsed = parse(&first.sdp);
        assert_eq!(reparsed.origin.session_id, "4242");
        assert_eq!(reparsed.origin.session_version, "7");
        assert_eq!(reparsed.media[0].formats, vec!["8", "101"]);
        // Answering our own answer (as if it were an offer) yields the same
        // body: the parse → answer → parse cycle has a fixed point.
        let second = answer(&reparsed, &ours).unwrap();
        assert_eq!(second.sdp, first.sdp);
        assert_eq!(second.media.law, first.media.law);
        assert_eq!(second.media.telephone_event, first.media.telephone_event);
    }

    #[test]
    fn offer_lists_our_codecs_te_101_and_ptime() {
        let mut ours = local();
        ours.codecs = vec![Law::Alaw, Law::Ulaw, Law::Alaw];
        ours.ptime_default_ms = 30;
        let sdp = offer(&ours);
        assert_eq!(
            lines(&sdp),
            vec![
                "v=0",
                "o=callbackd 4242 7 IN IP4 192.0.2.10",
                "s=callbackd",
                "c=IN IP4 192.0.2.10",
                "t=0 0",
                "m=audio 40000 RTP/AVP 8 0 101",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=ptime:30",
                "a=sendrecv",
            ]
        );
    }

    #[test]
    fn sanitises_local_user_and_session_name() {
        let mut ours = local();
        ours.user = "call backd".into();
        ours.session_name = "a\r\nm=video 1 x y".into();
        let sdp = parse(&offer(&ours));
        assert_eq!(sdp.origin.username, "-");
        assert_eq!(sdp.session_name, "-");
        assert_eq!(sdp.media.len(), 1);
    }

    #[test]
    fn our_offer_answered_by_ourselves_negotiates_first_codec() {
        let ours = local();
        let offered = parse(&offer(&ours));
        let mut peer = local();
        peer.port = 50000;
        peer.addr = "198.51.100.7".parse().unwrap();
        let answered = answer(&offered, &peer).unwrap();
        assert_eq!(answered.media.law, Law::Ulaw);
        assert_eq!(answered.media.telephone_event, Some(101));
        let media = process_answer(&ours, &parse(&answered.sdp)).unwrap();
        assert_eq!(media.law, Law::Ulaw);
        assert_eq!(media.payload_type, 0);
        assert_eq!(media.telephone_event, Some(101));
        assert_eq!(media.remote, Some("198.51.100.7:50000".parse().unwrap()));
        assert_eq!(media.direction, Direction::SendRecv);
    }

    fn answer_body(m_lines: &str) -> SessionDescription {
        parse(&format!(
            "v=0\r\no=peer 9 9 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n{m_lines}"
        ))
    }

    #[test]
    fn process_answer_takes_answerers_codec_and_ptime() {
        let media = process_answer(
            &local(),
            &answer_body("m=audio 5004 RTP/AVP 8\r\na=ptime:30\r\na=sendonly\r\n"),
        )
        .unwrap();
        assert_eq!((media.law, media.payload_type), (Law::Alaw, 8));
        assert_eq!(media.ptime_ms, 30);
        assert_eq!(media.telephone_event, None);
        assert_eq!(media.direction, Direction::RecvOnly);
    }

    #[test]
    fn a_rtcp_port_alone_keeps_the_rtp_address() {
        let offer = audio_offer("0", "a=rtcp:6007\r\n");
        let media = answer(&offer, &local()).unwrap().media;
        assert_eq!(media.rtcp, Some("198.51.100.5:6007".parse().unwrap()));
    }

    #[test]
    fn a_rtcp_with_an_address_is_taken_whole() {
        // RFC 3605 §2.1's example form.
        let offer = audio_offer("0", "a=rtcp:53020 IN IP4 126.16.64.4\r\n");
        let media = answer(&offer, &local()).unwrap().media;
        assert_eq!(media.rtcp, Some("126.16.64.4:53020".parse().unwrap()));
        let media = process_answer(
            &local(),
            &answer_body("m=audio 5004 RTP/AVP 0\r\na=rtcp:5011 IN IP6 2001:db8::7\r\n"),
        )
        .unwrap();
        assert_eq!(media.rtcp, Some("[2001:db8::7]:5011".parse().unwrap()));
    }

    #[test]
    fn without_a_rtcp_rtcp_is_left_to_port_plus_one() {
        let media = answer(&audio_offer("0", ""), &local()).unwrap().media;
        assert_eq!(media.rtcp, None);
    }

    #[test]
    fn ignores_malformed_a_rtcp_and_keeps_the_call() {
        for bad in [
            "a=rtcp\r\n",
            "a=rtcp:\r\n",
            "a=rtcp:0\r\n",
            "a=rtcp:70000\r\n",
            "a=rtcp:+6001\r\n",
            "a=rtcp:6001 IN IP4\r\n",
            "a=rtcp:6001 IN IP6 192.0.2.1\r\n",
            "a=rtcp:6001 IN IP4 0.0.0.0\r\n",
            "a=rtcp:6001 IN IP4 host.example\r\n",
            "a=rtcp:6001 XX IP4 192.0.2.1\r\n",
            "a=rtcp:6001 IN IP4 192.0.2.1 extra\r\n",
        ] {
            let media = answer(&audio_offer("0", bad), &local())
                .unwrap_or_else(|e| panic!("{bad:?}: {e}"))
                .media;
            assert_eq!(media.rtcp, None, "{bad:?}");
        }
    }

    #[test]
    fn a_rtcp_on_a_held_stream_gives_no_address() {
        let offer = parse(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP 0\r\na=rtcp:6001\r\n",
        );
        assert_eq!(answer(&offer, &local()).unwrap().media.rtcp, None);
    }

    #[test]
    fn process_answer_rejects_port_zero() {
        assert_eq!(
            process_answer(&local(), &answer_body("m=audio 0 RTP/AVP 0\r\n")),
            Err(NegotiationError::AudioRejected)
        );
    }

    #[test]
    fn process_answer_rejects_codec_we_did_not_offer() {
        let mut ours = local();
        ours.codecs = vec![Law::Ulaw];
        assert_eq!(
            process_answer(&ours, &answer_body("m=audio 5004 RTP/AVP 8 18\r\n")),
            Err(NegotiationError::NoCommonCodec)
        );
        // PCMU renumbered to a dynamic type we never offered.
        assert_eq!(
            process_answer(
                &ours,
                &answer_body("m=audio 5004 RTP/AVP 97\r\na=rtpmap:97 PCMU/8000\r\n")
            ),
            Err(NegotiationError::NoCommonCodec)
        );
    }

    #[test]
    fn process_answer_rejects_extra_m_lines_and_changed_proto() {
        assert_eq!(
            process_answer(
                &local(),
                &answer_body("m=audio 5004 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n")
            ),
            Err(NegotiationError::MediaCountMismatch {
                offered: 1,
                answered: 2
            })
        );
        assert_eq!(
            process_answer(&local(), &answer_body("m=audio 5004 RTP/SAVP 0\r\n")),
            Err(NegotiationError::ProtoMismatch)
        );
    }

    #[test]
    fn process_answer_ignores_renumbered_telephone_event() {
        let media = process_answer(
            &local(),
            &answer_body("m=audio 5004 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n"),
        )
        .unwrap();
        assert_eq!(media.telephone_event, None);
    }

    #[test]
    fn process_answer_with_hold_address_does_not_send() {
        let body = parse(
            "v=0\r\no=peer 9 9 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
             m=audio 5004 RTP/AVP 0\r\n",
        );
        let media = process_answer(&local(), &body).unwrap();
        assert_eq!(media.remote, None);
        assert_eq!(media.direction, Direction::RecvOnly);
    }

    #[test]
    fn session_version_stays_for_same_body_and_bumps_by_one_on_change() {
        let mut ours = local();
        let mut version = SessionVersion::new(100);
        let first = version.stamp(&offer(&ours));
        assert!(first.contains("o=callbackd 4242 100 IN IP4"), "{first}");
        // Session refresh: identical content keeps the version, even when
        // rendered with a stale version number.
        ours.session_version = 5;
        let again = version.stamp(&offer(&ours));
        assert_eq!(again, first);
        assert_eq!(version.current(), 100);
        // Changed content (hold): exactly one more.
        ours.ptime_default_ms = 30;
        let changed = version.stamp(&offer(&ours));
        assert!(changed.contains("o=callbackd 4242 101 IN IP4"), "{changed}");
        assert!(changed.contains("a=ptime:30"));
        assert_eq!(version.current(), 101);
        // Same again: stays at 101.
        assert_eq!(version.stamp(&offer(&ours)), changed);
        assert_eq!(version.current(), 101);
    }

    #[test]
    fn event_list_round_trips_through_mask() {
        let mut out = String::new();
        write_event_list(&mut out, parse_event_list("0-9,11, 14-15").unwrap());
        assert_eq!(out, "0-9,11,14-15");
        assert_eq!(parse_event_list("5-3"), None);
        assert_eq!(parse_event_list("0-x"), None);
        assert_eq!(parse_event_list("300"), None);
        assert_eq!(parse_event_list("16-255"), Some(0));
    }
}
