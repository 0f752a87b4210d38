//! What the controller asks of the media plane, and what it hears back.
//!
//! The media plane (the engine's media thread, or a test's fake) owns every
//! RTP socket and the pacing clock; the controller speaks to it only through
//! [`MediaCommand`]s drained with [`Controller::poll_media`](super::Controller::poll_media)
//! and [`MediaEvent`]s fed to
//! [`Controller::handle_media_event`](super::Controller::handle_media_event).
//! A stream is named by a [`StreamKey`]: the endpoint's call key of the call or
//! leg it carries.
//!
//! [`MediaCommand::Add`] names the RTP port the controller allocated from
//! its pool; whoever carries the command out binds it (RTP on the port, RTCP
//! on the next) and answers at once with [`MediaEvent::Ready`] or
//! [`MediaEvent::AddFailed`] (the port is held by another process).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::media::dtmf::DtmfDigit;
use crate::media::g711::Law;
use crate::media::player::Item;
use crate::media::prompt::{PromptId, Ptime};

/// Identifies a stream: the endpoint's call key of its call or leg.
pub type StreamKey = u64;

/// How a stream sends and what it accepts.
#[derive(Debug, Clone)]
pub struct StreamParams {
    /// The negotiated G.711 law.
    pub law: Law,
    /// Its payload type (0, 8, or the offerer's dynamic number).
    pub payload_type: u8,
    /// The negotiated telephone-event payload type, if any.
    pub telephone_event: Option<u8>,
    /// Packet time we send at.
    pub ptime: Ptime,
    /// Where to send (the SDP address); `None` while on hold.
    pub remote: Option<SocketAddr>,
    /// The signalling peer's IP, also accepted as an RTP source for latching.
    pub signalling_peer: IpAddr,
    /// Whether we may send (the peer's direction allows receiving).
    pub send: bool,
    /// Whether RTP is expected from the peer (pauses the RTP timeout when not).
    pub receive: bool,
    /// Where the peer takes RTCP when its `a=rtcp` (RFC 3605) says so;
    /// otherwise the RTP address's port + 1 (RFC 3550 §11).
    pub rtcp: Option<SocketAddr>,
}

/// Commands to the media plane. `P` is how a new stream's ports are
/// given: a port number from the controller (`u16`, the default), or the
/// sockets the engine bound on it for its media thread.
#[derive(Debug)]
pub enum MediaCommand<P = u16> {
    /// Start a stream on these ports (silent until told to play or bridge).
    Add {
        /// The call's key.
        key: StreamKey,
        /// The SIP Call-ID, for logs.
        call_id: Arc<str>,
        /// The even RTP port (RTCP on the next), or the sockets bound on it.
        ports: P,
        /// Parameters.
        params: StreamParams,
    },
    /// New parameters after a re-INVITE/UPDATE (re-latches).
    Update {
        /// The call's key.
        key: StreamKey,
        /// Parameters.
        params: StreamParams,
    },
    /// Replace what the stream plays (an empty list stops playback).
    Play {
        /// The call's key.
        key: StreamKey,
        /// The play list.
        items: Vec<Item>,
        /// Echoed in [`MediaEvent::Idle`], so a play list that was replaced
        /// can never be mistaken for the current one finishing.
        token: u32,
    },
    /// Stop and drop a stream (its sockets close). A bridge it is in ends,
    /// and so does a recording of it.
    Remove {
        /// The call's key.
        key: StreamKey,
    },
    /// Negotiated details that [`StreamParams`] does not carry (yet): the
    /// comfort-noise payload type.
    Extra {
        /// The call's key.
        key: StreamKey,
        /// The details.
        extra: ExtraParams,
    },
    /// Connects two streams: both players stop, and RTP is relayed both ways
    /// (see [`crate::media::bridge`]). A stream already bridged elsewhere is
    /// unbridged from there first. While one of them plays a prompt, relaying
    /// *to* it pauses. Digits from a leg are still reported as
    /// [`MediaEvent::Digit`] on that leg; when the other leg negotiated no
    /// telephone-event they are not relayed, and the engine may send them
    /// as SIP INFO.
    Bridge {
        /// One leg (the agent's, by convention).
        a: StreamKey,
        /// The other leg (the customer's).
        b: StreamKey,
    },
    /// Disconnects two bridged streams; a recording of them ends. Both are
    /// idle afterwards (send [`MediaCommand::Play`] for anything else).
    Unbridge {
        /// One leg.
        a: StreamKey,
        /// The other leg.
        b: StreamKey,
    },
    /// Records what `a` and `b` receive as a stereo WAV at `path`: `a` (the
    /// agent) left, `b` (the customer) right, 8 kHz 16-bit. Written on a
    /// thread of its own; ends with [`MediaCommand::Unbridge`] or
    /// [`MediaCommand::Remove`] of either. With `notice`, that prompt
    /// (normally `recording_notice`) is played to `b` and recording starts
    /// when it has finished. Send it after [`MediaCommand::Bridge`], which stops
    /// players (and so a notice in progress).
    Record {
        /// The agent's leg (left channel).
        a: StreamKey,
        /// The customer's leg (right channel).
        b: StreamKey,
        /// The WAV file to create.
        path: PathBuf,
        /// The prompt played to `b` first (the recording notice).
        notice: Option<Box<str>>,
    },
    /// The engine's settings were reloaded (SIGHUP): RTP sources are
    /// checked against `acl` and prompts come from `prompts` from now on
    /// (a prompt being played goes on from the same position).
    Reload {
        /// The RTP source allow-list.
        acl: crate::acl::Acl,
        /// The prompts, loaded again.
        prompts: Arc<crate::media::prompt::PromptLibrary>,
    },
}

/// Negotiated details of a stream beyond [`StreamParams`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtraParams {
    /// The comfort-noise payload type (RFC 3389; 13 at 8 kHz) when the peer
    /// accepts it; without it comfort noise is never sent to this stream.
    pub comfort_noise: Option<u8>,
}

/// Reports from the media thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A digit started (RFC 4733 event, or in-band tones).
    Digit {
        /// The call's key.
        key: StreamKey,
        /// The digit.
        digit: DtmfDigit,
        /// Whether it came as an RFC 4733 event or was heard in the audio.
        inband: bool,
    },
    /// A prompt finished playing.
    PromptFinished {
        /// The call's key.
        key: StreamKey,
        /// Which prompt.
        prompt: PromptId,
    },
    /// The play list ran out.
    Idle {
        /// The call's key.
        key: StreamKey,
        /// The token of the play list that ran out.
        token: u32,
    },
    /// No RTP arrived for the configured time.
    RtpTimeout {
        /// The call's key.
        key: StreamKey,
    },
    /// The stream is gone (after [`MediaCommand::Remove`]); its ports may be reused.
    Removed {
        /// The call's key.
        key: StreamKey,
    },
    /// The stream of a [`MediaCommand::Add`] is running on its ports.
    Ready {
        /// The call's key.
        key: StreamKey,
    },
    /// The ports of a [`MediaCommand::Add`] could not be bound (another
    /// process holds one): no stream was started.
    AddFailed {
        /// The call's key.
        key: StreamKey,
    },
}

impl<P> MediaCommand<P> {
    /// The same command with a new stream's ports given another way (the
    /// engine binds the port number into sockets).
    pub fn map_ports<Q, E>(
        self,
        bind: impl FnOnce(P) -> Result<Q, E>,
    ) -> Result<MediaCommand<Q>, E> {
        Ok(match self {
            MediaCommand::Add {
                key,
                call_id,
                ports,
                params,
            } => MediaCommand::Add {
                key,
                call_id,
                ports: bind(ports)?,
                params,
            },
            MediaCommand::Update { key, params } => MediaCommand::Update { key, params },
            MediaCommand::Play { key, items, token } => MediaCommand::Play { key, items, token },
            MediaCommand::Remove { key } => MediaCommand::Remove { key },
            MediaCommand::Extra { key, extra } => MediaCommand::Extra { key, extra },
            MediaCommand::Bridge { a, b } => MediaCommand::Bridge { a, b },
            MediaCommand::Unbridge { a, b } => MediaCommand::Unbridge { a, b },
            MediaCommand::Record { a, b, path, notice } => {
                MediaCommand::Record { a, b, path, notice }
            }
            MediaCommand::Reload { acl, prompts } => MediaCommand::Reload { acl, prompts },
        })
    }
}
