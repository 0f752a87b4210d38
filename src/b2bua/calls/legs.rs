//! Outbound legs' media: the port and offer reserved before a leg's INVITE,
//! its stream, its SDP answers and re-offers, what it plays, bridges and
//! recordings. The dialing side drives these; the legs share the call
//! layer's port pool and media commands with inbound calls.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use super::{Calls, stream_params};
use crate::b2bua::media::{MediaCommand, StreamParams};
use crate::media::g711::Law;
use crate::media::player::Item;
use crate::media::prompt::Ptime;
use crate::sip::endpoint::{CallKey, Endpoint};
use crate::sip::message::Method;
use crate::sip::sdp::{self, LocalMedia, SessionDescription, SessionVersion};

/// Media reserved for an outbound leg before its INVITE is sent.
pub struct ReservedLeg {
    port: u16,
    local: LocalMedia,
    /// Our SDP offer for the INVITE.
    pub offer: String,
}

/// An outbound leg's media.
pub(super) struct LegMedia {
    pub(super) port: u16,
    local: LocalMedia,
    version: SessionVersion,
    peer: Option<IpAddr>,
}

impl Calls {
    /// Our side of a session on `port`, with a fresh session id (RFC 4566
    /// §5.2: the o= line's id and first version).
    pub(super) fn local_media(&self, port: u16) -> LocalMedia {
        let session_id = fastrand::u64(1..u64::MAX / 2);
        LocalMedia {
            addr: self.rtp_advertised,
            port,
            codecs: self.codecs.clone(),
            ptime_default_ms: self.ptime_ms,
            session_id,
            session_version: session_id,
            user: "callbackd".into(),
            session_name: "callbackd".into(),
        }
    }

    /// Reserves media for an outbound leg: a port pair and our SDP offer.
    pub fn reserve_leg(&mut self, now: Instant) -> Option<ReservedLeg> {
        let port = self.ports.allocate(now)?;
        let local = self.local_media(port);
        let session_id = local.session_id;
        let offer = SessionVersion::new(session_id).stamp(&sdp::offer(&local));
        Some(ReservedLeg { port, local, offer })
    }

    /// Gives back a reservation whose INVITE was never sent.
    pub fn release_leg(&mut self, now: Instant, leg: ReservedLeg) {
        self.ports_release_now(now, leg.port);
    }

    /// Starts the media stream of an outbound leg (silent until answered).
    pub fn attach_leg(
        &mut self,
        call: CallKey,
        call_id: Arc<str>,
        leg: ReservedLeg,
        peer: Option<IpAddr>,
    ) {
        let law = self.codecs.first().copied().unwrap_or(Law::Ulaw);
        let params = StreamParams {
            law,
            payload_type: law.payload_type(),
            telephone_event: None,
            ptime: Ptime::DEFAULT,
            remote: None,
            signalling_peer: peer.unwrap_or(self.rtp_advertised),
            send: false,
            receive: false,
            rtcp: None,
        };
        self.media.push_back(MediaCommand::Add {
            key: call.0,
            call_id,
            ports: leg.port,
            params,
        });
        let version = SessionVersion::new(leg.local.session_version);
        self.legs.insert(
            call,
            LegMedia {
                port: leg.port,
                local: leg.local,
                version,
                peer,
            },
        );
    }

    /// An SDP answer on an outbound leg (early media or the 2xx).
    pub fn leg_answered(&mut self, _now: Instant, call: CallKey, sdp_answer: &[u8]) {
        let Some(leg) = self.legs.get(&call) else {
            return;
        };
        let media = SessionDescription::parse(sdp_answer)
            .map_err(|e| e.to_string())
            .and_then(|sdp| sdp::process_answer(&leg.local, &sdp).map_err(|e| e.to_string()));
        match media {
            Ok(media) => {
                let peer = leg
                    .peer
                    .or(media.remote.map(|r| r.ip()))
                    .unwrap_or(self.rtp_advertised);
                let params = stream_params(&media, peer);
                self.media.push_back(MediaCommand::Update {
                    key: call.0,
                    params,
                });
            }
            Err(e) => warn!(error = %e, "unusable SDP answer on an outbound leg"),
        }
    }

    /// A re-INVITE/UPDATE on an outbound leg (hold, resume, a new address):
    /// answered like one on an inbound call, with the leg's media updated.
    pub fn leg_reoffer(
        &mut self,
        now: Instant,
        call: CallKey,
        method: &Method,
        offer: &[u8],
        endpoint: &mut Endpoint,
    ) {
        let Some(leg) = self.legs.get_mut(&call) else {
            let _ = endpoint.reject_reoffer(now, call, 481);
            return;
        };
        if offer.is_empty() && *method == Method::Update {
            // A refresh without an offer (RFC 3311 §5.2): 200, no SDP.
            let _ = endpoint.answer_reoffer(now, call, b"");
            return;
        }
        if offer.is_empty() {
            // re-INVITE without SDP: we offer our current session again
            // (same body, same o= version); the answer in the ACK is taken
            // by `leg_answered` on Confirmed.
            let body = match leg.version.last_sent() {
                Some(current) => current.to_owned(),
                None => leg.version.stamp(&sdp::offer(&leg.local)),
            };
            let _ = endpoint.answer_reoffer(now, call, body.as_bytes());
            return;
        }
        let answer = SessionDescription::parse(offer)
            .map_err(|e| e.to_string())
            .and_then(|sdp| sdp::answer(&sdp, &leg.local).map_err(|e| e.to_string()));
        match answer {
            Ok(answer) => {
                let body = leg.version.stamp(&answer.sdp);
                let peer = leg
                    .peer
                    .or(answer.media.remote.map(|r| r.ip()))
                    .unwrap_or(self.rtp_advertised);
                let params = stream_params(&answer.media, peer);
                self.media.push_back(MediaCommand::Update {
                    key: call.0,
                    params,
                });
                let _ = endpoint.answer_reoffer(now, call, body.as_bytes());
            }
            Err(e) => {
                debug!(error = %e, "re-offer on an outbound leg refused");
                let _ = endpoint.reject_reoffer(now, call, 488);
            }
        }
    }

    /// Plays named prompts on a leg (the agent's whisper).
    pub fn play_names(&mut self, call: CallKey, names: &[String], token: u32) {
        let items = names
            .iter()
            .filter_map(|n| self.prompts.id(n).map(Item::Prompt))
            .collect();
        self.media.push_back(MediaCommand::Play {
            key: call.0,
            items,
            token,
        });
    }

    /// Loops one prompt on a leg (ringback to the agent).
    pub fn play_loop(&mut self, call: CallKey, name: &str, token: u32) {
        let items = self.prompts.id(name).map(Item::Loop).into_iter().collect();
        self.media.push_back(MediaCommand::Play {
            key: call.0,
            items,
            token,
        });
    }

    /// Relays RTP both ways between two calls.
    pub fn bridge(&mut self, a: CallKey, b: CallKey) {
        self.media
            .push_back(MediaCommand::Bridge { a: a.0, b: b.0 });
    }

    /// Records a bridged call: `agent` on the left channel, `customer` on
    /// the right, the notice played to the customer first when asked.
    pub fn record(
        &mut self,
        agent: CallKey,
        customer: CallKey,
        path: std::path::PathBuf,
        notice: Option<Box<str>>,
    ) {
        self.media.push_back(MediaCommand::Record {
            a: agent.0,
            b: customer.0,
            path,
            notice,
        });
    }

    /// Ends an outbound leg's media; its ports return to the pool once the
    /// media thread has closed the sockets.
    pub fn close_leg(&mut self, call: CallKey) {
        let Some(leg) = self.legs.remove(&call) else {
            return;
        };
        self.closing.insert(call.0, leg.port);
        self.media.push_back(MediaCommand::Remove { key: call.0 });
    }
}
