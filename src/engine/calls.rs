//! The call layer: what happens to an answered call.
//!
//! For this slice of the product the flow is
//! `INVITE → 100 → 200 (SDP) → ACK → welcome prompt → hold music`, until the
//! caller hangs up or the configured maximum call length passes (then we send
//! BYE). It owns each call's RTP ports and media stream, and turns SDP offers
//! into answers.
//!
//! Port life: allocated when the INVITE is accepted, handed to the media
//! thread with the stream, and returned to the pool only when the media
//! thread confirms the stream (and its sockets) are gone — so a port is never
//! reused while a socket still holds it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::{Codec, Config};
use crate::engine::media::{Command, MediaEvent, MediaHandle, StreamParams};
use crate::media::g711::Law;
use crate::media::player::Item;
use crate::media::ports::PortPool;
use crate::media::prompt::{PromptId, PromptLibrary, Ptime};
use crate::sip::endpoint::{CallKey, EndReason, Endpoint, Event};
use crate::sip::message::Request;
use crate::sip::sdp::{
    self, LocalMedia, NegotiatedMedia, NegotiationError, SessionDescription, SessionVersion,
};

/// Every call the engine is handling.
pub struct Calls {
    calls: HashMap<CallKey, CallCtx>,
    /// Ports whose stream is being removed: released on `Removed`.
    closing: HashMap<u64, u16>,
    deadlines: BinaryHeap<Reverse<(Instant, CallKey)>>,
    ports: PortPool,
    media: MediaHandle,
    welcome: Option<PromptId>,
    hold: Option<PromptId>,
    rtp_bind: IpAddr,
    rtp_advertised: IpAddr,
    codecs: Vec<Law>,
    ptime_ms: u32,
    max_calls: usize,
    max_duration: Duration,
}

struct CallCtx {
    call_id: Arc<str>,
    port: u16,
    local: LocalMedia,
    version: SessionVersion,
    signalling_peer: IpAddr,
    /// The media in use, once negotiated.
    media: Option<NegotiatedMedia>,
    /// Our offer awaiting an answer in the ACK (late offer).
    awaiting_answer: bool,
    stream_added: bool,
}

impl Calls {
    /// The call layer for `config`.
    pub fn new(
        config: &Config,
        prompts: Arc<PromptLibrary>,
        media: MediaHandle,
        ports: PortPool,
    ) -> Calls {
        Calls {
            calls: HashMap::new(),
            closing: HashMap::new(),
            deadlines: BinaryHeap::new(),
            ports,
            media,
            welcome: prompts.id("welcome"),
            hold: prompts.id("hold_music"),
            rtp_bind: config.rtp.bind_ip,
            rtp_advertised: config.rtp.advertised_ip(),
            codecs: config
                .media
                .codecs
                .iter()
                .map(|c| match c {
                    Codec::Pcmu => Law::Ulaw,
                    Codec::Pcma => Law::Alaw,
                })
                .collect(),
            ptime_ms: config.media.ptime_ms,
            max_calls: config.call.max_calls as usize,
            max_duration: config.call.max_duration(),
        }
    }

    /// Calls in progress.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// RTP port pairs in use (including those being closed).
    pub fn ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// The next maximum-call-length deadline.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if self.calls.contains_key(&key) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Hangs up calls that reached the maximum length.
    pub fn handle_timeout(&mut self, now: Instant, endpoint: &mut Endpoint) {
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            if let Some(call) = self.calls.get(&key) {
                info!(call_id = %call.call_id, "maximum call length reached; hanging up");
                let _ = endpoint.hangup(now, key);
            }
        }
    }

    /// Hangs up every call (shutdown).
    pub fn hangup_all(&mut self, now: Instant, endpoint: &mut Endpoint) {
        for key in self.calls.keys().copied().collect::<Vec<_>>() {
            let _ = endpoint.hangup(now, key);
        }
    }

    /// Reacts to a SIP event.
    pub fn handle_sip_event(&mut self, now: Instant, event: Event, endpoint: &mut Endpoint) {
        match event {
            Event::IncomingCall {
                call,
                request,
                source,
            } => {
                self.incoming(now, call, &request, source.remote.ip(), endpoint);
            }
            Event::Confirmed { call, body } => self.confirmed(now, call, &body, endpoint),
            Event::Reoffer { call, method, sdp } => {
                let _ = method;
                self.reoffer(now, call, &sdp, endpoint);
            }
            Event::Info {
                call,
                content_type,
                body,
            } => {
                let Some(ctx) = self.calls.get(&call) else {
                    return;
                };
                if let Some(digit) = info_digit(&content_type, &body) {
                    info!(digit = %digit, call_id = %ctx.call_id, source = "info", "dtmf");
                }
            }
            Event::Ended { call, reason } => self.ended(call, reason),
        }
    }

    /// Reacts to a media-thread event.
    pub fn handle_media_event(&mut self, now: Instant, event: MediaEvent, endpoint: &mut Endpoint) {
        match event {
            MediaEvent::Digit { key, digit } => {
                if let Some(ctx) = self.calls.get(&CallKey(key)) {
                    info!(digit = %digit.as_char(), call_id = %ctx.call_id, source = "rfc4733", "dtmf");
                }
            }
            MediaEvent::RtpTimeout { key } => {
                if let Some(ctx) = self.calls.get(&CallKey(key)) {
                    info!(call_id = %ctx.call_id, "no RTP; hanging up");
                    let _ = endpoint.hangup(now, CallKey(key));
                }
            }
            MediaEvent::Removed { key } => {
                if let Some(port) = self.closing.remove(&key)
                    && let Err(e) = self.ports.release(port)
                {
                    warn!(error = %e, port, "port release");
                }
            }
            MediaEvent::PromptFinished { .. } | MediaEvent::Idle { .. } => {}
        }
    }

    fn incoming(
        &mut self,
        now: Instant,
        call: CallKey,
        request: &Request,
        peer: IpAddr,
        endpoint: &mut Endpoint,
    ) {
        let call_id: Arc<str> = request.headers.call_id.as_str().into();
        if self.calls.len() >= self.max_calls {
            warn!(%call_id, max = self.max_calls, "call limit reached; 503");
            let _ = endpoint.reject(now, call, 503, &[("Retry-After", "5")]);
            return;
        }
        // The offer: none (late offer), SDP, or something we cannot read.
        let offer = if request.body.is_empty() {
            None
        } else if !request.headers.content_type_is("application/sdp") {
            let _ = endpoint.reject(now, call, 415, &[("Accept", "application/sdp")]);
            return;
        } else {
            match SessionDescription::parse(&request.body) {
                Ok(sdp) => Some(sdp),
                Err(e) => {
                    debug!(%call_id, error = %e, "malformed SDP; 400");
                    let warning = format!("399 callbackd \"malformed SDP: {e}\"");
                    let _ = endpoint.reject(now, call, 400, &[("Warning", &warning)]);
                    return;
                }
            }
        };
        let Some((port, rtp, rtcp)) = self.bind_ports() else {
            warn!(%call_id, "no RTP port free; 503");
            let _ = endpoint.reject(now, call, 503, &[("Retry-After", "5")]);
            return;
        };
        let session_id = fastrand::u64(1..u64::MAX / 2);
        let local = LocalMedia {
            addr: self.rtp_advertised,
            port,
            codecs: self.codecs.clone(),
            ptime_default_ms: self.ptime_ms,
            session_id,
            session_version: session_id,
            user: "callbackd".into(),
            session_name: "callbackd".into(),
        };
        let mut version = SessionVersion::new(session_id);
        let (body, media) = match offer {
            Some(offer) => match sdp::answer(&offer, &local) {
                Ok(answer) => (version.stamp(&answer.sdp), Some(answer.media)),
                Err(e) => {
                    let status = match e {
                        NegotiationError::NoLocalCodecs => 500,
                        _ => 488,
                    };
                    debug!(%call_id, error = %e, status, "offer refused");
                    let warning = format!("304 callbackd \"{e}\"");
                    let _ = endpoint.reject(now, call, status, &[("Warning", &warning)]);
                    self.ports_release_now(port);
                    return;
                }
            },
            None => (version.stamp(&sdp::offer(&local)), None),
        };
        info!(
            %call_id,
            from = request.headers.from.uri.as_ref(),
            to = request.headers.to.uri.as_ref(),
            peer = %peer,
            codec = ?media.as_ref().map(|m| m.law),
            ptime = ?media.as_ref().map(|m| m.ptime_ms),
            "call started"
        );
        let mut ctx = CallCtx {
            call_id: call_id.clone(),
            port,
            local,
            version,
            signalling_peer: peer,
            awaiting_answer: media.is_none(),
            media: None,
            stream_added: false,
        };
        if let Some(media) = media {
            self.add_stream(call, &mut ctx, media, rtp, rtcp);
        } else {
            // Late offer: the stream starts when the ACK brings the answer;
            // keep the sockets bound meanwhile inside the stream itself.
            let params = StreamParams {
                law: self.codecs.first().copied().unwrap_or(Law::Ulaw),
                payload_type: self.codecs.first().map_or(0, |l| l.payload_type()),
                telephone_event: None,
                ptime: Ptime::DEFAULT,
                remote: None,
                signalling_peer: peer,
                send: false,
                receive: false,
            };
            self.media.send(Command::Add {
                key: call.0,
                call_id: call_id.clone(),
                rtp,
                rtcp,
                params,
            });
            ctx.stream_added = true;
        }
        self.calls.insert(call, ctx);
        if endpoint.answer(now, call, body.as_bytes()).is_err() {
            warn!(%call_id, "answer refused by the endpoint");
        }
    }

    fn add_stream(
        &mut self,
        call: CallKey,
        ctx: &mut CallCtx,
        media: NegotiatedMedia,
        rtp: UdpSocket,
        rtcp: UdpSocket,
    ) {
        let params = stream_params(&media, ctx.signalling_peer);
        self.media.send(Command::Add {
            key: call.0,
            call_id: ctx.call_id.clone(),
            rtp,
            rtcp,
            params,
        });
        ctx.media = Some(media);
        ctx.stream_added = true;
    }

    fn confirmed(&mut self, now: Instant, call: CallKey, body: &[u8], endpoint: &mut Endpoint) {
        let Some(ctx) = self.calls.get_mut(&call) else {
            return;
        };
        if ctx.awaiting_answer {
            ctx.awaiting_answer = false;
            let answer = SessionDescription::parse(body)
                .map_err(|e| e.to_string())
                .and_then(|sdp| sdp::process_answer(&ctx.local, &sdp).map_err(|e| e.to_string()));
            match answer {
                Ok(media) => {
                    let params = stream_params(&media, ctx.signalling_peer);
                    ctx.media = Some(media);
                    self.media.send(Command::Update {
                        key: call.0,
                        params,
                    });
                }
                Err(e) => {
                    // RFC 3264 §5 / RFC 3261 §13.2.1: a bad or missing answer
                    // in the ACK leaves no session; end the call.
                    info!(call_id = %ctx.call_id, error = %e, "no usable SDP answer in ACK; hanging up");
                    let _ = endpoint.hangup(now, call);
                    return;
                }
            }
        }
        if ctx.media.is_none() {
            return;
        }
        // A re-INVITE's ACK confirms again: only the first starts the flow.
        let first = !self.deadlines.iter().any(|Reverse((_, k))| *k == call);
        if first {
            let items: Vec<Item> = self
                .welcome
                .map(Item::Prompt)
                .into_iter()
                .chain(self.hold.map(Item::Loop))
                .collect();
            self.media.send(Command::Play { key: call.0, items });
            self.deadlines
                .push(Reverse((now + self.max_duration, call)));
        }
    }

    fn reoffer(&mut self, now: Instant, call: CallKey, offer: &[u8], endpoint: &mut Endpoint) {
        let Some(ctx) = self.calls.get_mut(&call) else {
            return;
        };
        if offer.is_empty() {
            // re-INVITE without SDP: we offer, the answer comes in the ACK.
            let body = ctx.version.stamp(&sdp::offer(&ctx.local));
            ctx.awaiting_answer = true;
            let _ = endpoint.answer_reoffer(now, call, body.as_bytes());
            return;
        }
        let parsed = match SessionDescription::parse(offer) {
            Ok(sdp) => sdp,
            Err(e) => {
                debug!(call_id = %ctx.call_id, error = %e, "malformed SDP in re-offer");
                let _ = endpoint.reject_reoffer(now, call, 400);
                return;
            }
        };
        match sdp::answer(&parsed, &ctx.local) {
            Ok(answer) => {
                let body = ctx.version.stamp(&answer.sdp);
                let media = answer.media;
                let params = stream_params(&media, ctx.signalling_peer);
                debug!(call_id = %ctx.call_id, direction = ?media.direction, remote = ?media.remote, "re-offer answered");
                ctx.media = Some(media);
                self.media.send(Command::Update {
                    key: call.0,
                    params,
                });
                let _ = endpoint.answer_reoffer(now, call, body.as_bytes());
            }
            Err(e) => {
                debug!(error = %e, "re-offer refused");
                let _ = endpoint.reject_reoffer(now, call, 488);
            }
        }
    }

    fn ended(&mut self, call: CallKey, reason: EndReason) {
        let Some(ctx) = self.calls.remove(&call) else {
            return;
        };
        info!(call_id = %ctx.call_id, ?reason, "call ended");
        if ctx.stream_added {
            self.closing.insert(call.0, ctx.port);
            self.media.send(Command::Remove { key: call.0 });
        } else {
            self.ports_release_now(ctx.port);
        }
    }

    fn ports_release_now(&mut self, port: u16) {
        if let Err(e) = self.ports.release(port) {
            warn!(error = %e, port, "port release");
        }
    }

    /// Allocates an even port and binds RTP on it and RTCP on the next one;
    /// ports that cannot be bound (another process holds them) are skipped.
    fn bind_ports(&mut self) -> Option<(u16, UdpSocket, UdpSocket)> {
        for _ in 0..16 {
            let port = self.ports.allocate()?;
            let rtp = UdpSocket::bind(SocketAddr::new(self.rtp_bind, port));
            let rtcp = UdpSocket::bind(SocketAddr::new(self.rtp_bind, port + 1));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => return Some((port, rtp, rtcp)),
                (rtp, rtcp) => {
                    debug!(
                        port,
                        rtp_ok = rtp.is_ok(),
                        rtcp_ok = rtcp.is_ok(),
                        "RTP port busy; skipping"
                    );
                    let _ = self.ports.release(port);
                    let _ = self.ports.mark_unusable(port);
                }
            }
        }
        None
    }
}

/// The media thread's parameters for a negotiated session.
fn stream_params(media: &NegotiatedMedia, peer: IpAddr) -> StreamParams {
    let ptime = u16::try_from(media.ptime_ms)
        .ok()
        .and_then(Ptime::from_ms)
        .unwrap_or(Ptime::DEFAULT);
    StreamParams {
        law: media.law,
        payload_type: media.payload_type,
        telephone_event: media.telephone_event,
        ptime,
        remote: media.remote,
        signalling_peer: peer,
        send: media.direction.can_send(),
        receive: media.direction.can_receive() && media.remote.is_some(),
    }
}

/// The digit of a SIP INFO (RFC 6086 use with `application/dtmf-relay`, the
/// de-facto `Signal=5` format, or `application/dtmf` with the bare digit).
fn info_digit(content_type: &str, body: &[u8]) -> Option<char> {
    let body = std::str::from_utf8(body).ok()?;
    let mime = content_type.split(';').next()?.trim();
    let candidate = if mime.eq_ignore_ascii_case("application/dtmf-relay") {
        body.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("signal")
                .then(|| value.trim())
        })?
    } else if mime.eq_ignore_ascii_case("application/dtmf") {
        body.trim()
    } else {
        return None;
    };
    let mut chars = candidate.chars();
    let c = chars.next()?;
    (chars.next().is_none() && matches!(c, '0'..='9' | '*' | '#' | 'A'..='D' | 'a'..='d'))
        .then(|| c.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_digits_in_both_formats() {
        assert_eq!(
            info_digit("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(
            info_digit("application/dtmf-relay", b"Signal= #\r\n"),
            Some('#')
        );
        assert_eq!(info_digit("application/dtmf", b"7"), Some('7'));
        assert_eq!(info_digit("application/dtmf-relay", b"Signal=55\r\n"), None);
        assert_eq!(info_digit("text/plain", b"5"), None);
        assert_eq!(info_digit("application/dtmf", b"\xff"), None);
    }
}
