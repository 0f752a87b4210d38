//! SIP message framing on byte streams (RFC 3261 §18.3) and CRLF keep-alives
//! (RFC 5626 §4.4.1).
//!
//! A stream transport (TCP, later TLS) carries messages back to back; the only
//! delimiter is the empty line after the header block plus the Content-Length
//! of the body, which RFC 3261 §18.3 makes mandatory on streams. Between
//! messages a peer may send CRLF keep-alives: RFC 5626 §4.4.1 has the client
//! send a double CRLF "ping" and the server answer with a single CRLF "pong",
//! and RFC 3261 §7.5 asks receivers to ignore stray CRLFs before a message.
//!
//! [`StreamFramer`] is sans-IO: the caller pushes the bytes it read and drains
//! [`StreamFramer::next`] until `None`. Memory is bounded by the configured
//! maximum message size plus one pushed chunk: a header block that does not
//! end within the limit, or a declared body that would exceed it, is rejected
//! before the body is buffered.
//!
//! Over UDP each datagram is one message and there is nothing to frame;
//! [`is_keepalive`] recognises the CRLF-only datagrams some user agents send
//! to keep NAT bindings open.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// The single CRLF a server answers a double-CRLF ping with (RFC 5626 §4.4.1).
pub const PONG: &[u8] = b"\r\n";

/// One unit cut out of a SIP byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete message: the header block through the empty line, plus
    /// exactly Content-Length body bytes. Not parsed beyond that.
    Message(Bytes),
    /// A CRLF keep-alive between messages.
    KeepAlive(KeepAliveKind),
}

/// The two CRLF keep-alive shapes on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveKind {
    /// A double CRLF: an RFC 5626 §4.4.1 ping. Answer with [`PONG`].
    Ping,
    /// A single CRLF: the pong to our own ping, or a stray CRLF before a
    /// message (RFC 3261 §7.5). Nothing to answer.
    Pong,
}

/// Why a stream cannot be framed any further. Every variant is the peer's
/// fault; after one the framer yields nothing more and the caller should close
/// the connection (a stream cannot be resynchronised).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// The peer's header block, or its header block plus declared body, exceeds
    /// the maximum message size. `head` is the complete header block when it
    /// fits the limit (enough to build a 513 response), `None` otherwise.
    #[error("message exceeds the {limit}-byte limit")]
    TooLarge {
        /// The configured maximum message size.
        limit: usize,
        /// The complete header block, when it fits the limit itself.
        head: Option<Bytes>,
    },
    /// The peer sent a header block without Content-Length, which RFC 3261
    /// §18.3 requires on stream transports. `head` is that header block, for a
    /// 400 response.
    #[error("message without Content-Length on a stream transport")]
    MissingContentLength {
        /// The header block, through the empty line.
        head: Bytes,
    },
    /// The peer's Content-Length is empty, negative or not a decimal number.
    #[error("invalid Content-Length value")]
    InvalidContentLength {
        /// The header block, through the empty line.
        head: Bytes,
    },
    /// The peer sent several Content-Length headers with different values
    /// (the classic request-smuggling shape).
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength {
        /// The header block, through the empty line.
        head: Bytes,
    },
}

/// Cuts a SIP byte stream into messages and keep-alives (RFC 3261 §18.3).
///
/// ```text
///            CRLF / CRLFCRLF ─► KeepAlive
///               ┌─────┐
///               ▼     │ header block ends, Content-Length ok
///   push ──► [ Head ] ─────────────────────────────► [ Body ]
///               ▲                                       │ len bytes buffered
///               └──────────── Message ◄─────────────────┘
///   any error ──► [ Failed ]   (terminal: close the connection)
/// ```
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_message_size: usize,
    state: State,
}

impl StreamFramer {
    /// A framer that accepts messages (header block plus body) of at most
    /// `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_message_size,
            state: State::Head { scanned: 0 },
        }
    }

    /// Appends bytes read from the stream. Drain [`Self::next`] afterwards;
    /// the buffer holds at most one message plus the last pushed chunk as long
    /// as the caller drains after every push.
    pub fn push(&mut self, data: &[u8]) {
        if matches!(self.state, State::Failed) {
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `None` when more data is needed (or after an
    /// error has been reported).
    #[allow(clippy::should_implement_trait)] // fallible, stateful: not an Iterator
    pub fn next(&mut self) -> Option<Result<Frame, FramingError>> {
        match self.state {
            State::Failed => None,
            State::Body { len } => self.take_message(len).map(Ok),
            State::Head { scanned } => self.scan_head(scanned),
        }
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn scan_head(&mut self, scanned: usize) -> Option<Result<Frame, FramingError>> {
        if scanned == 0 {
            // RFC 5626 §4.4.1 / RFC 3261 §7.5: CRLFs before a message.
            match leading_crlf(&self.buf) {
                Leading::NeedMore => return None,
                Leading::KeepAlive(kind, len) => {
                    let _ = self.buf.split_to(len);
                    return Some(Ok(Frame::KeepAlive(kind)));
                }
                Leading::Message => {}
            }
        }
        // Resume three bytes back: the terminator may straddle two pushes.
        let from = scanned.saturating_sub(3);
        let Some(end) = find_empty_line(&self.buf[from..]) else {
            if self.buf.len() > self.max_message_size {
                return Some(Err(self.fail(FramingError::TooLarge {
                    limit: self.max_message_size,
                    head: None,
                })));
            }
            self.state = State::Head {
                scanned: self.buf.len(),
            };
            return None;
        };
        let head_len = from + end + 4;
        if head_len > self.max_message_size {
            return Some(Err(self.fail(FramingError::TooLarge {
                limit: self.max_message_size,
                head: None,
            })));
        }
        let body_len = match content_length(&self.buf[..head_len]) {
            Ok(len) => len,
            Err(kind) => {
                let head = self.buf.split_to(head_len).freeze();
                let err = match kind {
                    ContentLengthError::Missing => FramingError::MissingContentLength { head },
                    ContentLengthError::Invalid => FramingError::InvalidContentLength { head },
                    ContentLengthError::Conflicting => {
                        FramingError::ConflictingContentLength { head }
                    }
                };
                return Some(Err(self.fail(err)));
            }
        };
        // Checked before a single body byte is kept beyond this push.
        let total = head_len.saturating_add(body_len);
        if total > self.max_message_size {
            let head = self.buf.split_to(head_len).freeze();
            return Some(Err(self.fail(FramingError::TooLarge {
                limit: self.max_message_size,
                head: Some(head),
            })));
        }
        self.state = State::Body { len: total };
        self.take_message(total).map(Ok)
    }

    fn take_message(&mut self, len: usize) -> Option<Frame> {
        if self.buf.len() < len {
            self.state = State::Body { len };
            return None;
        }
        self.state = State::Head { scanned: 0 };
        Some(Frame::Message(self.buf.split_to(len).freeze()))
    }

    fn fail(&mut self, err: FramingError) -> FramingError {
        self.state = State::Failed;
        self.buf = BytesMut::new();
        err
    }
}

/// Whether a UDP datagram is a CRLF keep-alive (only CR and LF bytes) to be
/// ignored. RFC 5626 keep-alives over UDP are STUN; CRLF datagrams are what
/// older user agents send to hold NAT bindings open.
pub fn is_keepalive(datagram: &[u8]) -> bool {
    !datagram.is_empty() && datagram.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// Where the framer is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the end of the header block; the first `scanned` bytes of
    /// the buffer are known not to contain it.
    Head { scanned: usize },
    /// The header block is complete; the message is `len` bytes long in all.
    Body { len: usize },
    /// An error was reported; terminal.
    Failed,
}

/// What the start of the buffer holds, at a frame boundary.
enum Leading {
    /// A prefix of a keep-alive; cannot tell yet.
    NeedMore,
    /// A keep-alive of the given kind and length in bytes.
    KeepAlive(KeepAliveKind, usize),
    /// Anything else: the start of a message.
    Message,
}

fn leading_crlf(buf: &[u8]) -> Leading {
    match buf {
        [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => Leading::NeedMore,
        [b'\r', b'\n', b'\r', b'\n', ..] => Leading::KeepAlive(KeepAliveKind::Ping, 4),
        [b'\r', b'\n', ..] => Leading::KeepAlive(KeepAliveKind::Pong, 2),
        _ => Leading::Message,
    }
}

/// Offset of the first CRLFCRLF in `buf`.
fn find_empty_line(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

enum ContentLengthError {
    Missing,
    Invalid,
    Conflicting,
}

/// The Content-Length of a header block (start line, headers, empty line).
/// RFC 3261 §7.3.3: the compact form of Content-Length is `l`; §25.1: header
/// names are case-insensitive and HCOLON allows whitespace before the colon.
/// A value too large for `usize` saturates (it is over any limit anyway).
fn content_length(head: &[u8]) -> Result<usize, ContentLengthError> {
    let mut found: Option<usize> = None;
    // The start line cannot carry a header; folded lines start with SP/HT.
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), None | Some(b' ' | b'\t')) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = trim(&line[colon + 1..]);
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(ContentLengthError::Invalid);
        }
        let len = value.iter().fold(0usize, |acc, &d| {
            acc.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        });
        match found {
            Some(previous) if previous != len => return Err(ContentLengthError::Conflicting),
            _ => found = Some(len),
        }
    }
    found.ok_or(ContentLengthError::Missing)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:cb@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-1\r\n\
        Call-ID: a@b\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";

    const INVITE: &[u8] = b"INVITE sip:cb@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-2\r\n\
        Content-Type: application/sdp\r\n\
        content-length :  12 \r\n\r\n\
        v=0\r\n\r\no=x\r\n";

    fn drain(framer: &mut StreamFramer) -> Vec<Result<Frame, FramingError>> {
        std::iter::from_fn(|| framer.next()).collect()
    }

    fn msg(bytes: &[u8]) -> Result<Frame, FramingError> {
        Ok(Frame::Message(Bytes::copy_from_slice(bytes)))
    }

    fn stream() -> Vec<u8> {
        [OPTIONS, INVITE].concat()
    }

    #[test]
    fn splits_two_messages_at_every_byte_boundary() {
        let data = stream();
        for cut in 0..=data.len() {
            let mut framer = StreamFramer::new(4096);
            let mut frames = Vec::new();
            framer.push(&data[..cut]);
            frames.extend(drain(&mut framer));
            framer.push(&data[cut..]);
            frames.extend(drain(&mut framer));
            assert_eq!(frames, vec![msg(OPTIONS), msg(INVITE)], "cut at {cut}");
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn frames_a_stream_fed_one_byte_at_a_time() {
        let data = stream();
        let mut framer = StreamFramer::new(4096);
        let mut frames = Vec::new();
        for byte in &data {
            framer.push(std::slice::from_ref(byte));
            frames.extend(drain(&mut framer));
        }
        assert_eq!(frames, vec![msg(OPTIONS), msg(INVITE)]);
    }

    #[test]
    fn frames_pipelined_messages_in_one_push() {
        let mut framer = StreamFramer::new(4096);
        framer.push(&[OPTIONS, INVITE, OPTIONS].concat());
        assert_eq!(
            drain(&mut framer),
            vec![msg(OPTIONS), msg(INVITE), msg(OPTIONS)]
        );
    }

    #[test]
    fn body_containing_an_empty_line_is_not_split() {
        let mut framer = StreamFramer::new(4096);
        framer.push(INVITE);
        let frames = drain(&mut framer);
        assert_eq!(frames, vec![msg(INVITE)]);
        let Some(Ok(Frame::Message(m))) = frames.first() else {
            panic!("expected a message");
        };
        assert!(m.ends_with(b"v=0\r\n\r\no=x\r\n"));
    }

    #[test]
    fn accepts_compact_content_length() {
        let m = b"MESSAGE sip:a@b SIP/2.0\r\nL\t:\t5\r\n\r\nhello";
        let mut framer = StreamFramer::new(4096);
        framer.push(m);
        framer.push(OPTIONS);
        assert_eq!(drain(&mut framer), vec![msg(m), msg(OPTIONS)]);
    }

    #[test]
    fn accepts_repeated_equal_content_length() {
        let m = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\nl: 2\r\n\r\nhi";
        let mut framer = StreamFramer::new(4096);
        framer.push(m);
        assert_eq!(drain(&mut framer), vec![msg(m)]);
    }

    #[test]
    fn ignores_lookalike_headers() {
        // X-Content-Length and a folded continuation must not count.
        let m = b"MESSAGE sip:a@b SIP/2.0\r\nX-Content-Length: 9\r\nSubject: a\r\n l: 7\r\n\
            Content-Length: 1\r\n\r\nZ";
        let mut framer = StreamFramer::new(4096);
        framer.push(m);
        assert_eq!(drain(&mut framer), vec![msg(m)]);
    }

    #[test]
    fn reports_double_crlf_ping_and_single_crlf_pong() {
        let mut framer = StreamFramer::new(4096);
        framer.push(b"\r\n\r\n");
        assert_eq!(
            drain(&mut framer),
            vec![Ok(Frame::KeepAlive(KeepAliveKind::Ping))]
        );
        framer.push(b"\r\n");
        assert_eq!(drain(&mut framer), vec![], "a lone CRLF may become a ping");
        framer.push(OPTIONS);
        assert_eq!(
            drain(&mut framer),
            vec![Ok(Frame::KeepAlive(KeepAliveKind::Pong)), msg(OPTIONS)]
        );
    }

    #[test]
    fn ping_split_across_pushes_is_one_ping() {
        let mut framer = StreamFramer::new(4096);
        let mut frames = Vec::new();
        for byte in b"\r\n\r\n" {
            framer.push(std::slice::from_ref(byte));
            frames.extend(drain(&mut framer));
        }
        assert_eq!(frames, vec![Ok(Frame::KeepAlive(KeepAliveKind::Ping))]);
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn keepalives_between_pipelined_messages() {
        let mut framer = StreamFramer::new(4096);
        framer.push(&[OPTIONS, b"\r\n\r\n", OPTIONS, b"\r\n", OPTIONS].concat());
        assert_eq!(
            drain(&mut framer),
            vec![
                msg(OPTIONS),
                Ok(Frame::KeepAlive(KeepAliveKind::Ping)),
                msg(OPTIONS),
                Ok(Frame::KeepAlive(KeepAliveKind::Pong)),
                msg(OPTIONS),
            ]
        );
    }

    #[test]
    fn rejects_header_block_without_end_beyond_limit() {
        let mut framer = StreamFramer::new(64);
        framer.push(b"INVITE sip:a@b SIP/2.0\r\nSubject: ");
        assert_eq!(drain(&mut framer), vec![]);
        framer.push(&[b'x'; 40]);
        assert_eq!(
            drain(&mut framer),
            vec![Err(FramingError::TooLarge {
                limit: 64,
                head: None
            })]
        );
        assert_eq!(framer.buffered(), 0, "buffer released after the error");
        framer.push(OPTIONS);
        assert_eq!(drain(&mut framer), vec![], "failed framer stays failed");
    }

    #[test]
    fn rejects_complete_header_block_over_limit() {
        let mut framer = StreamFramer::new(OPTIONS.len() - 1);
        framer.push(OPTIONS);
        assert!(matches!(
            drain(&mut framer).as_slice(),
            [Err(FramingError::TooLarge { head: None, .. })]
        ));
    }

    #[test]
    fn rejects_oversize_declared_body_before_it_arrives() {
        let head = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 100000000\r\n\r\n";
        let mut framer = StreamFramer::new(1024);
        framer.push(head);
        assert_eq!(
            drain(&mut framer),
            vec![Err(FramingError::TooLarge {
                limit: 1024,
                head: Some(Bytes::from_static(head)),
            })]
        );
        framer.push(&[b'x'; 4096]);
        assert_eq!(framer.buffered(), 0, "the body is never buffered");
    }

    #[test]
    fn rejects_content_length_overflowing_usize() {
        let mut framer = StreamFramer::new(1024);
        framer.push(b"MESSAGE sip:a@b SIP/2.0\r\nl: 99999999999999999999999999\r\n\r\n");
        assert!(matches!(
            drain(&mut framer).as_slice(),
            [Err(FramingError::TooLarge { head: Some(_), .. })]
        ));
    }

    #[test]
    fn rejects_missing_content_length_and_hands_back_the_head() {
        let head = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n";
        let mut framer = StreamFramer::new(1024);
        framer.push(head);
        framer.push(OPTIONS);
        assert_eq!(
            drain(&mut framer),
            vec![Err(FramingError::MissingContentLength {
                head: Bytes::from_static(head)
            })]
        );
    }

    #[test]
    fn rejects_negative_content_length() {
        let mut framer = StreamFramer::new(1024);
        framer.push(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert!(matches!(
            drain(&mut framer).as_slice(),
            [Err(FramingError::InvalidContentLength { .. })]
        ));
    }

    #[test]
    fn rejects_non_numeric_and_empty_content_length() {
        for value in ["12a", "0x10", "+3", "", "1 2"] {
            let mut framer = StreamFramer::new(1024);
            framer.push(format!("MESSAGE sip:a@b SIP/2.0\r\nl: {value}\r\n\r\n").as_bytes());
            assert!(
                matches!(
                    drain(&mut framer).as_slice(),
                    [Err(FramingError::InvalidContentLength { .. })]
                ),
                "value {value:?}"
            );
        }
    }

    #[test]
    fn rejects_conflicting_content_lengths() {
        let mut framer = StreamFramer::new(1024);
        framer.push(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 0\r\nl: 5\r\n\r\nhello");
        assert!(matches!(
            drain(&mut framer).as_slice(),
            [Err(FramingError::ConflictingContentLength { .. })]
        ));
    }

    #[test]
    fn rejects_binary_garbage() {
        // Garbage that happens to end a "header block": no Content-Length.
        let mut framer = StreamFramer::new(1024);
        framer.push(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n");
        assert!(matches!(
            drain(&mut framer).as_slice(),
            [Err(FramingError::MissingContentLength { .. })]
        ));
        // Garbage that never ends a header block: bounded by the limit.
        let mut framer = StreamFramer::new(1024);
        let noise: Vec<u8> = (0..2048u32).map(|i| (i * 7 % 251) as u8).collect();
        framer.push(&noise);
        assert!(matches!(
            drain(&mut framer).as_slice(),
            [Err(FramingError::TooLarge { head: None, .. })]
        ));
    }

    #[test]
    fn bare_cr_starts_a_message_not_a_keepalive() {
        let mut framer = StreamFramer::new(1024);
        framer.push(b"\rX sip:a@b SIP/2.0\r\nl: 0\r\n\r\n");
        assert!(matches!(
            drain(&mut framer).as_slice(),
            [Ok(Frame::Message(m))] if m.starts_with(b"\rX")
        ));
    }

    #[test]
    fn udp_keepalive_is_crlf_only() {
        assert!(is_keepalive(b"\r\n"));
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(!is_keepalive(b""));
        assert!(!is_keepalive(b"\r\nOPTIONS"));
        assert!(!is_keepalive(OPTIONS));
    }
}
