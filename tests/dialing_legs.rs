//! Calling back, in-process, what happens on the legs (issue 4 points 3, 4,
//! 7): the recording of a bridged callback (notice, stereo WAV), hold and
//! resume re-INVITEs on either leg with the RTP timeout paused while held,
//! the RTP timeout ending a bridged call, early media from a carrier's 183,
//! digest challenges from the trunk (401 and 407), and the trunk's
//! calls-per-second cap. Same kit as `tests/dialing.rs`
//! (`common::dialing`): the engine on `127.0.0.1:0`, a scripted agent phone
//! and carrier, the store read afterwards. RTP ranges `rtp_base(70..)`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use callbackd::callback::cdr::{Leg, LegOutcome};
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::Status;
use callbackd::media::g711::Law;
use callbackd::sip::message::Request;

use common::dialing::*;
use common::dns::{FakeDns, Zone};
use common::{Rtp, SdpInfo, heard, segments};

// ---------------------------------------------------------------------------
// 1. Recording
// ---------------------------------------------------------------------------

/// A queue with `recording = true` and the notice: once the customer
/// answers, the customer hears the whole recording notice before any of
/// the agent's audio; then the bridged call is written as a stereo WAV,
/// 8 kHz 16-bit, the agent on the left and the customer on the right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_plays_the_notice_then_writes_a_stereo_wav() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(200, 6_000)], CARRIER_FILL).await;
    let setup = Setup::new(70, &[("alice", &agent)], &carrier);
    let recordings = Recordings::new("recording");
    let mut config = setup.config();
    config.queues[0].recording = true;
    config.queues[0].recording_notice = true;
    config.callbacks.recordings_dir = recordings.0.clone();
    let _files = StoreFiles::of(&config);
    let lib = library(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    carrier.wait_invite(1, SOON).await;
    agent.wait_request("BYE", 1, Duration::from_secs(20)).await;
    let answered = carrier.acked_at(0).expect("the customer's 200 was ACKed");

    // The customer: the notice, whole, then the agent.
    let to_carrier = carrier.rtp_before(Instant::now());
    let said = segments(&to_carrier, &lib, Law::Ulaw);
    let notice = said
        .iter()
        .position(|s| s.name == "recording_notice")
        .unwrap_or_else(|| panic!("the customer heard no recording notice: {said:?}"));
    assert!(said[notice].complete(), "the notice was played whole");
    let audio: Vec<&Rtp> = to_carrier
        .iter()
        .filter(|p| p.pt == Law::Ulaw.payload_type())
        .collect();
    let notice_end = audio[said[notice].start + said[notice].frames - 1].at;
    let first_agent = carrier.rtp_filled(AGENT_FILL);
    assert!(
        !first_agent.is_empty(),
        "the agent's audio reached the customer"
    );
    assert!(
        audio[said[notice].start].at >= answered - Duration::from_millis(100),
        "the notice starts when the customer answers"
    );
    assert!(
        first_agent[0].at > notice_end,
        "the customer heard the agent before the notice ended"
    );

    // The recording: one stereo WAV, agent left, customer right.
    let row = wait_status(&config, id, Status::Completed, SOON).await;
    assert_eq!(row.attempts, 1);
    let files = recordings.wait_files(1).await;
    assert!(
        files[0]
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("callback-{id}-")) && n.ends_with(".wav")),
        "{files:?}"
    );
    let mut wav = hound::WavReader::open(&files[0]).expect("a readable, finished WAV");
    let spec = wav.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8_000, 16)
    );
    let samples: Vec<i16> = wav
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .expect("samples");
    let agent_level = Law::Ulaw.decode(AGENT_FILL);
    let carrier_level = Law::Ulaw.decode(CARRIER_FILL);
    let frames: Vec<(i16, i16)> = samples.chunks_exact(2).map(|f| (f[0], f[1])).collect();
    let left_agent = frames.iter().filter(|f| f.0 == agent_level).count();
    let right_carrier = frames.iter().filter(|f| f.1 == carrier_level).count();
    // The customer hung up 6 s after answering, the notice took 2.9 s:
    // about 3 s were recorded.
    assert!(
        left_agent >= 8_000 * 2,
        "left channel: {left_agent} samples of the agent's audio in {} frames",
        frames.len()
    );
    assert!(
        right_carrier >= 8_000 * 2,
        "right channel: {right_carrier} samples of the customer's audio in {} frames",
        frames.len()
    );
    assert!(
        frames.len() <= 8_000 * 4,
        "{} frames: more than the bridged time after the notice",
        frames.len()
    );
    assert!(
        !frames
            .iter()
            .any(|f| f.0 == carrier_level || f.1 == agent_level),
        "the channels are swapped or mixed"
    );
    legs_closed(&engine).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. Hold, resume, RTP timeout
// ---------------------------------------------------------------------------

/// The customer puts the bridged callback on hold (`a=inactive`) for 4 s
/// and sends nothing, twice the RTP timeout (2 s): the engine answers
/// `inactive`, sends the customer nothing, the agent hears music on hold,
/// and the call survives. Resumed
/// (`sendrecv`), the agent's audio flows again. Then the customer's RTP
/// stops without a re-INVITE: the RTP timeout ends the call, BYE to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_hold_pauses_the_rtp_timeout_and_silence_ends_both_legs() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start(
        "carrier",
        vec![
            Answer::after(200)
                .hold(1_000, 5_000, "inactive")
                .silent_after(7_000)
                .reply(),
        ],
        CARRIER_FILL,
    )
    .await;
    let setup = Setup::new(71, &[("alice", &agent)], &carrier);
    let mut config = setup.config();
    config.rtp.rtp_timeout_s = 2;
    let _files = StoreFiles::of(&config);
    let lib = library(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    carrier.wait_invite(1, SOON).await;
    let (held_at, hold) = carrier.wait_response("INVITE", 1, SOON).await;
    assert_eq!(hold.status, 200, "hold re-INVITE: {hold:?}");
    let sdp = SdpInfo::parse(&hold.body);
    assert!(
        sdp.has("inactive"),
        "RFC 3264 §6.1: inactive is answered inactive: {:?}",
        sdp.attributes
    );
    let (resumed_at, resume) = carrier.wait_response("INVITE", 2, SOON).await;
    assert_eq!(resume.status, 200, "resume re-INVITE: {resume:?}");
    assert!(SdpInfo::parse(&resume.body).has("sendrecv"));
    let resume_sent = carrier.sent("INVITE")[1].0;
    assert!(
        resume_sent - held_at >= Duration::from_millis(3_800),
        "held {:?}",
        resume_sent - held_at
    );
    assert!(
        carrier.requests("BYE").is_empty() && agent.requests("BYE").is_empty(),
        "a held call was ended by the RTP timeout: {:?}",
        carrier.summary()
    );
    let during_hold = carrier.rtp_between(held_at + Duration::from_millis(100), resume_sent);
    assert!(
        during_hold.is_empty(),
        "{} packets sent to the customer while it was on hold (inactive)",
        during_hold.len()
    );
    // Meanwhile the agent hears music on hold, not silence.
    let agent_heard = heard(
        // From before the hold, so the music is seen from its first frame.
        &agent.rtp_between(held_at - Duration::from_millis(500), resume_sent),
        &lib,
        Law::Ulaw,
    );
    assert!(
        agent_heard.contains(&"hold_music"),
        "the agent heard {agent_heard:?} while the customer held"
    );

    // Resumed: the agent is heard again, and hears the customer.
    common::wait_until(SOON, "25 packets each way after the resume", || {
        agent.count_filled(CARRIER_FILL, |at| at > resumed_at) >= 25
            && carrier.count_filled(AGENT_FILL, |at| at > resumed_at) >= 25
    })
    .await;

    // The customer goes silent (2 s after the resume): BYE to both legs
    // once rtp_timeout (2 s) passed. How long after its RTP stopped is not
    // asserted here: that is orchestration, for a fake-clock test.
    carrier.wait_request("BYE", 1, SOON).await;
    agent.wait_request("BYE", 1, SOON).await;
    let row = wait_status(&config, id, Status::Completed, SOON).await;
    assert_eq!(row.attempts, 1);
    let cdrs = wait_cdrs(&config, id, 2).await;
    assert_eq!(cdr_of(&cdrs, Leg::Customer).outcome, LegOutcome::Answered);
    legs_closed(&engine).await;
    engine.shutdown().await;
}

/// The agent puts the bridged callback on hold (`a=sendonly`) for 3 s and
/// sends nothing: answered `recvonly`, the agent is sent nothing, the
/// customer hears music on hold, and the call outlives the RTP timeout
/// (2 s); resumed, the customer's audio
/// reaches the agent again; the customer's BYE ends both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_hold_and_resume_on_a_bridged_callback() {
    // The whisper takes about 5 s after the agent answers; the customer
    // answers 200 ms after its INVITE: the hold (9 s after the agent's
    // ACK) falls inside the bridge.
    let agent = Peer::start(
        "agent",
        vec![Answer::after(100).hold(9_000, 12_000, "sendonly").reply()],
        AGENT_FILL,
    )
    .await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(200, 10_000)], CARRIER_FILL).await;
    let setup = Setup::new(72, &[("alice", &agent)], &carrier);
    let mut config = setup.config();
    config.rtp.rtp_timeout_s = 2;
    let _files = StoreFiles::of(&config);
    let lib = library(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    carrier.wait_invite(1, SOON).await;
    let (held_at, hold) = agent
        .wait_response("INVITE", 1, Duration::from_secs(15))
        .await;
    let bridged = carrier.acked_at(0).expect("the customer answered");
    assert!(held_at > bridged, "the hold came after the bridge");
    assert_eq!(hold.status, 200, "hold re-INVITE: {hold:?}");
    let sdp = SdpInfo::parse(&hold.body);
    assert!(
        sdp.has("recvonly"),
        "RFC 3264 §6.1: sendonly is answered recvonly: {:?}",
        sdp.attributes
    );
    let (resumed_at, resume) = agent.wait_response("INVITE", 2, SOON).await;
    assert_eq!(resume.status, 200);
    assert!(SdpInfo::parse(&resume.body).has("sendrecv"));
    let resume_sent = agent.sent("INVITE")[1].0;
    assert!(
        agent.requests("BYE").is_empty() && carrier.requests("BYE").is_empty(),
        "the held call was ended: {:?}",
        agent.summary()
    );
    let during_hold = agent.rtp_between(held_at + Duration::from_millis(100), resume_sent);
    assert!(
        during_hold.is_empty(),
        "{} packets sent to the agent while it was on hold (sendonly)",
        during_hold.len()
    );
    // The customer hears music on hold meanwhile, then the agent again.
    let customer_heard = heard(
        &carrier.rtp_between(held_at - Duration::from_millis(500), resume_sent),
        &lib,
        Law::Ulaw,
    );
    assert!(
        customer_heard.contains(&"hold_music"),
        "the customer heard {customer_heard:?} while the agent held"
    );
    // Before the hold and after the resume the customer is heard.
    let before = agent.count_filled(CARRIER_FILL, |at| at < held_at);
    assert!(before >= 25, "{} packets before the hold", before);
    let (agent_bye, _) = agent.wait_request("BYE", 1, Duration::from_secs(15)).await;
    let after = agent.count_filled(CARRIER_FILL, |at| at > resumed_at);
    assert!(
        after >= 25,
        "{} customer packets reached the agent after the resume",
        after
    );
    let agent_again = carrier.count_filled(AGENT_FILL, |at| at > resumed_at);
    assert!(
        agent_again >= 25,
        "{agent_again} agent packets reached the customer after the resume"
    );
    let carrier_bye = carrier.sent_bye_at().expect("the customer hung up");
    assert!(agent_bye >= carrier_bye);
    let row = wait_status(&config, id, Status::Completed, SOON).await;
    assert_eq!(row.attempts, 1);
    legs_closed(&engine).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. Early media
// ---------------------------------------------------------------------------

/// The carrier answers the customer INVITE with a 183 and SDP, then sends
/// its RTP (an announcement, a ringback of its own) for 2 s before the
/// 200: the agent hears that early media, not our local ringback, and the
/// customer's audio after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_from_a_183_is_relayed_to_the_agent() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start(
        "carrier",
        vec![
            Answer::after(2_000)
                .with_early_media()
                .hangup_after(1_500)
                .reply(),
        ],
        CARRIER_FILL,
    )
    .await;
    let setup = Setup::new(73, &[("alice", &agent)], &carrier);
    let config = setup.config();
    let _files = StoreFiles::of(&config);
    let lib = library(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    let (invited, _) = carrier.wait_invite(1, SOON).await;
    agent.wait_request("BYE", 1, SOON).await;
    let answered = carrier.acked_at(0).expect("the customer's 200 was ACKed");
    let early = agent.count_filled(EARLY_FILL, |at| at < answered);
    assert!(
        early >= 60,
        "{} early-media packets reached the agent in the 2 s before the answer",
        early
    );
    let ringing = heard(
        &agent.rtp_between(invited + Duration::from_millis(100), answered),
        &lib,
        Law::Ulaw,
    );
    assert!(
        !ringing.contains(&"ringback"),
        "local ringback over the carrier's early media: {ringing:?}"
    );
    let after = agent.count_filled(CARRIER_FILL, |at| at > answered);
    assert!(after >= 50, "{after} customer packets after the answer");
    let row = wait_status(&config, id, Status::Completed, SOON).await;
    assert_eq!(row.attempts, 1);
    legs_closed(&engine).await;
    engine.shutdown().await;
}

/// The carrier sends its 183 reliably (RFC 3262: `Require: 100rel`,
/// `RSeq: 1`): the customer INVITE offered `Supported: 100rel`, the engine
/// PRACKs the 183 (`RAck: 1 <CSeq> INVITE`, in the dialog the 183 made),
/// and the early media still reaches the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reliable_183_is_pracked_and_its_early_media_relayed() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start(
        "carrier",
        vec![Answer::after(1_500).reliably().hangup_after(1_000).reply()],
        CARRIER_FILL,
    )
    .await;
    let setup = Setup::new(78, &[("alice", &agent)], &carrier);
    let config = setup.config();
    let _files = StoreFiles::of(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    let (_, invite) = carrier.wait_invite(1, SOON).await;
    let supported = common::header(&invite.headers, "Supported").unwrap_or_default();
    assert!(
        supported
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("100rel")),
        "Supported: {supported:?}"
    );
    let (_, prack) = carrier.wait_request("PRACK", 1, SOON).await;
    let rack = common::header(&prack.headers, "RAck").expect("RAck");
    assert_eq!(
        rack.split_whitespace().collect::<Vec<_>>(),
        ["1", &invite.headers.cseq.seq.to_string(), "INVITE"],
        "RAck: {rack}"
    );
    assert_eq!(prack.headers.call_id, invite.headers.call_id);
    assert!(prack.headers.to.tag.is_some(), "in the early dialog");
    assert!(prack.headers.cseq.seq > invite.headers.cseq.seq);
    agent.wait_request("BYE", 1, SOON).await;
    let answered = carrier.acked_at(0).expect("the customer answered");
    let early = agent.count_filled(EARLY_FILL, |at| at < answered);
    assert!(early >= 40, "{early} early-media packets before the answer");
    wait_status(&config, id, Status::Completed, SOON).await;
    legs_closed(&engine).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Trunk digest authentication
// ---------------------------------------------------------------------------

/// The trunk challenges the customer INVITE with 401 (qop=auth): the INVITE
/// is sent again with the same Call-ID and From tag, CSeq + 1, and an
/// Authorization header whose response is right for the configured
/// credentials; the call then goes through. The challenge is not an
/// attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_401_is_answered_with_digest_credentials() {
    trunk_challenge(74, 401, true).await;
}

/// The same with 407 and Proxy-Authorization (no qop: RFC 2069 style).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_407_is_answered_with_proxy_credentials() {
    trunk_challenge(75, 407, false).await;
}

const TRUNK_USER: &str = "acct-17";
const TRUNK_PASSWORD: &str = "s3cret-Pa55";

async fn trunk_challenge(slot: u16, status: u16, qop: bool) {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start(
        "carrier",
        vec![Reply::Challenge { status, qop }, Reply::hangup(200, 1_000)],
        CARRIER_FILL,
    )
    .await;
    let setup = Setup::new(slot, &[("alice", &agent)], &carrier);
    let mut config = setup.config();
    config.trunk.username = Some(TRUNK_USER.into());
    config.trunk.password = Some(TRUNK_PASSWORD.to_owned().into());
    let _files = StoreFiles::of(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    let (_, first) = carrier.wait_invite(1, SOON).await;
    let (_, second) = carrier.wait_invite(2, SOON).await;
    assert_eq!(
        second.headers.call_id, first.headers.call_id,
        "same Call-ID"
    );
    assert_eq!(
        second.headers.from.tag, first.headers.from.tag,
        "same From tag"
    );
    assert_eq!(
        second.headers.cseq.seq,
        first.headers.cseq.seq + 1,
        "CSeq + 1"
    );
    assert_ne!(
        second.headers.vias[0].branch, first.headers.vias[0].branch,
        "a new transaction"
    );
    // The challenge's ACK (RFC 3261 §17.1.1.3: same branch, CSeq method ACK).
    let ack = carrier
        .requests("ACK")
        .into_iter()
        .find(|(_, a)| a.headers.cseq.seq == first.headers.cseq.seq)
        .expect("the challenge was ACKed");
    assert_eq!(ack.1.headers.vias[0].branch, first.headers.vias[0].branch);

    let (header, other) = if status == 407 {
        ("Proxy-Authorization", "Authorization")
    } else {
        ("Authorization", "Proxy-Authorization")
    };
    assert!(common::header(&first.headers, header).is_none());
    assert!(common::header(&second.headers, other).is_none());
    let credentials = common::header(&second.headers, header)
        .unwrap_or_else(|| panic!("the retried INVITE carries {header}"));
    check_digest(credentials, &second, qop);

    let row = wait_status(&config, id, Status::Completed, SOON).await;
    assert_eq!(row.attempts, 1, "the challenge is not an attempt");
    let all = attempts(&config, id);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].attempt.outcome, Outcome::Answered);
    legs_closed(&engine).await;
    engine.shutdown().await;
}

/// Checks a Digest credentials header against RFC 2617 / RFC 7616 (MD5),
/// computed here independently of the crate's digest module.
fn check_digest(value: &str, invite: &Request, qop: bool) {
    let value = value
        .strip_prefix("Digest ")
        .unwrap_or_else(|| panic!("not Digest: {value}"));
    let params = auth_params(value);
    let get = |k: &str| {
        params
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k} in {value}"))
    };
    assert_eq!(get("username"), TRUNK_USER);
    assert_eq!(get("realm"), REALM);
    assert_eq!(get("nonce"), NONCE);
    let uri = get("uri");
    assert_eq!(uri, invite.uri.to_string(), "uri is the Request-URI");
    if let Some(algorithm) = params.get("algorithm") {
        assert!(algorithm.eq_ignore_ascii_case("MD5"), "{value}");
    }
    let md5 = |s: String| {
        Md5::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let ha1 = md5(format!("{TRUNK_USER}:{REALM}:{TRUNK_PASSWORD}"));
    let ha2 = md5(format!("INVITE:{uri}"));
    let want = if qop {
        assert_eq!(get("qop"), "auth");
        let nc = get("nc");
        assert_eq!(nc, "00000001", "the first use of this nonce");
        let cnonce = get("cnonce");
        assert!(!cnonce.is_empty());
        md5(format!("{ha1}:{NONCE}:{nc}:{cnonce}:auth:{ha2}"))
    } else {
        assert!(!params.contains_key("qop"), "qop without a qop challenge");
        md5(format!("{ha1}:{NONCE}:{ha2}"))
    };
    assert_eq!(get("response"), want, "digest response for {value}");
}

/// `k=v, k="v", …` into a map (keys lower-cased, quotes removed).
fn auth_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("k=v");
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        out.insert(key.trim().to_ascii_lowercase(), value.to_owned());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

// ---------------------------------------------------------------------------
// 5. Calls-per-second cap
// ---------------------------------------------------------------------------

/// Two callbacks due at once, two free agents, a trunk capped at 0.5 calls
/// per second: both agents are rung at once, but the second customer
/// INVITE waits until 2 s after the first. Both complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_cps_cap_spaces_customer_invites() {
    let alice = Peer::start("alice", vec![Reply::after(100)], AGENT_FILL).await;
    let bob = Peer::start("bob", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(100, 1_000)], CARRIER_FILL).await;
    let mut setup = Setup::new(76, &[("alice", &alice), ("bob", &bob)], &carrier);
    setup.cps_limit = 0.5;
    let config = setup.config();
    let _files = StoreFiles::of(&config);
    let first = register(&config, NUMBER);
    let second = register(&config, "3125550199");
    let engine = common::start(config.clone()).await;

    // When each INVITE goes out (agents at once, customers 2 s apart) is
    // orchestration, for a fake-clock test; here: all of them go out, and
    // both callbacks complete under the cap.
    alice.wait_invite(1, SOON).await;
    bob.wait_invite(1, SOON).await;
    carrier.wait_invite(1, SOON).await;
    carrier.wait_invite(2, SOON).await;
    for id in [first, second] {
        wait_status(&config, id, Status::Completed, SOON).await;
    }
    legs_closed(&engine).await;
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fresh recordings directory, removed when the test passes.
struct Recordings(PathBuf);

impl Recordings {
    fn new(name: &str) -> Recordings {
        let dir = std::env::temp_dir().join(format!(
            "callbackd-recordings-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Recordings(dir)
    }

    /// The WAV files once there are `count` and they stopped growing.
    async fn wait_files(&self, count: usize) -> Vec<PathBuf> {
        let deadline = Instant::now() + SOON;
        let mut last: Option<Vec<(PathBuf, u64)>> = None;
        loop {
            let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(&self.0)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| {
                            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                            (e.path(), len)
                        })
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            if files.len() >= count && last.as_ref() == Some(&files) {
                assert_eq!(files.len(), count, "{files:?}");
                return files.into_iter().map(|(p, _)| p).collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} recordings in {}, want {count}",
                files.len(),
                self.0.display()
            );
            last = Some(files);
            // Poll interval: the recorder does not signal a finished file,
            // so a list is taken as final when two polls agree.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Recordings {
    fn drop(&mut self) {
        // Passed or failed: runs leave nothing behind.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// 6. RFC 3263: SRV, failover, Retry-After, lookups again
// ---------------------------------------------------------------------------

/// The termination is a name (`trunk.test`) served by a DNS server of the
/// test's (`[trunk] dns_servers`): SRV gives carrier A (priority 10) and
/// carrier B (priority 20). The name server refuses everything for the
/// first second, so the engine starts without targets: the callback waits
/// (no agent is rung for a call that cannot go out) until the name is
/// looked up again (every 5 s while it does not resolve). Carrier A answers 503 with Retry-After: 30: the same
/// attempt fails over to B, which answers; the next callback goes straight
/// to B. The Request-URI keeps the domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_srv_failover_honours_retry_after_and_dns_coming_up_late() {
    let agent = Peer::start("agent", vec![Reply::after(300)], AGENT_FILL).await;
    let carrier_a = Peer::start(
        "carrier-a",
        vec![Reply::Unavailable {
            retry_after: Some(30),
        }],
        CARRIER_FILL,
    )
    .await;
    let carrier_b = Peer::start("carrier-b", vec![Reply::hangup(100, 1_000)], CARRIER_FILL).await;
    let dns = FakeDns::start(
        vec![
            (
                "_sip._udp.trunk.test.",
                Zone::Srv(vec![
                    (10, 1, carrier_a.sip_addr().port(), "a.trunk.test."),
                    (20, 1, carrier_b.sip_addr().port(), "b.trunk.test."),
                ]),
            ),
            ("a.trunk.test.", Zone::LOOPBACK),
            ("b.trunk.test.", Zone::LOOPBACK),
        ],
        Duration::ZERO,
    );
    let mut setup = Setup::new(77, &[("alice", &agent)], &carrier_a);
    setup.termination = "trunk.test".into();
    let mut config = setup.config();
    config.trunk.dns_servers = vec![dns.addr];
    let _files = StoreFiles::of(&config);
    let first = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;
    // The name server refuses until the engine has been refused once.
    common::wait_until(SOON, "the engine asked the name server", || {
        dns.refused() > 0
    })
    .await;
    // Nothing is launched before the name resolves.
    assert!(
        agent.invites().is_empty(),
        "the agent was rung before the trunk resolved"
    );
    dns.set_up(true);
    // When the name is looked up again (5 s on) is orchestration; here:
    // it is, and the callback goes out then.
    agent.wait_invite(1, Duration::from_secs(15)).await;
    // The first callback: A refuses with 503, B takes the same attempt.
    // The failover's instant is tests/controller.rs's (503 failover).
    let (_, invite_a) = carrier_a.wait_invite(1, Duration::from_secs(15)).await;
    let (_, invite_b) = carrier_b.wait_invite(1, SOON).await;
    let uri = format!("sip:+1{NUMBER}@trunk.test;user=phone");
    assert_eq!(&*invite_a.uri, uri.as_str());
    assert_eq!(&*invite_b.uri, uri.as_str());
    assert_eq!(agent.invites().len(), 1, "one attempt, one agent call");
    let row = wait_status(&config, first, Status::Completed, SOON).await;
    assert_eq!(row.attempts, 1, "the failover is inside one attempt");
    let srv_asked = dns.asked("SRV", "_sip._udp.trunk.test.");
    assert!(
        srv_asked >= 2,
        "the SRV name was asked {srv_asked} times: not looked up again after the refusal"
    );

    // The next callback: A asked not to be used for 30 s.
    let second = register(&config, "3125550199");
    carrier_b.wait_invite(2, Duration::from_secs(20)).await;
    wait_status(&config, second, Status::Completed, SOON).await;
    assert_eq!(
        carrier_a.invites().len(),
        1,
        "carrier A was used during its Retry-After"
    );
    legs_closed(&engine).await;
    engine.shutdown().await;
}

/// Issue 9 point 4 (RFC 3263 §4): a static agent's URI names a host without
/// a port. The engine asks the SRV of its transport, `_sip._udp.<host>`,
/// then the SRV target's address, and the INVITE reaches the port the SRV
/// record names. The name server is slow (300 ms an answer), so Timer A
/// (T1 = 50 ms) fires several times before the answer: those
/// retransmissions wait for the lookup in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_named_by_host_is_found_by_srv_and_looked_up_once() {
    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    let carrier = Peer::start("carrier", vec![Reply::hangup(100, 1_000)], CARRIER_FILL).await;
    let dns = FakeDns::start(
        vec![
            (
                "_sip._udp.agents.test.",
                Zone::Srv(vec![(10, 1, agent.sip_addr().port(), "box.agents.test.")]),
            ),
            ("box.agents.test.", Zone::LOOPBACK),
        ],
        Duration::from_millis(300),
    );
    dns.set_up(true);
    let mut setup = Setup::new(83, &[("alice", &agent)], &carrier);
    setup.agents = vec![("alice".into(), "sip:alice@agents.test".into())];
    let mut config = setup.config();
    config.trunk.dns_servers = vec![dns.addr];
    let _files = StoreFiles::of(&config);
    let id = register(&config, NUMBER);
    let engine = common::start(config.clone()).await;

    let (_, invite) = agent.wait_invite(1, SOON).await;
    assert_eq!(&*invite.uri, "sip:alice@agents.test");
    carrier.wait_invite(1, SOON).await;
    wait_status(&config, id, Status::Completed, SOON).await;
    // Asked once for the whole transaction (the retransmissions during the
    // lookup wait for it; hickory would also merge identical questions in
    // flight, so this does not tell the two apart).
    assert_eq!(
        dns.asked("SRV", "_sip._udp.agents.test."),
        1,
        "questions: {:?}",
        dns.questions()
    );
    legs_closed(&engine).await;
    engine.shutdown().await;
}

/// Issue 9 point 4 (RFC 3261 §8.1.3.1, §17.1.4; RFC 3263 §4.3): the trunk
/// is TCP and SRV names two targets; the first, a port on 127.0.0.1 that
/// nobody listens on, refuses the connection. The refusal fails the INVITE
/// at once (503, not received) and the same attempt's INVITE reaches the
/// second target without waiting for Timer B — 32 s here, T1 being 500 ms:
/// the wait for it is bounded well under that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_trunk_target_refusing_the_connection_fails_over_at_once() {
    use tokio::io::AsyncReadExt;

    let agent = Peer::start("agent", vec![Reply::after(100)], AGENT_FILL).await;
    // Target A: a port bound, then closed again; connections are refused.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port");
    // Target B: records the INVITEs that reach it over TCP.
    let carrier_b = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind carrier B");
    let b_port = carrier_b.local_addr().expect("carrier B address").port();
    let (invite_tx, mut invite_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let Ok((mut stream, _)) = carrier_b.accept().await else {
            return;
        };
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
            text.extend_from_slice(&buf[..n]);
            if text.windows(7).any(|w| w == b"INVITE ") {
                let _ = invite_tx.send(String::from_utf8_lossy(&text).into_owned());
                // Hold the connection open, answer nothing.
                std::future::pending::<()>().await;
            }
        }
    });
    let dns = FakeDns::start(
        vec![
            (
                "_sip._tcp.trunk.test.",
                Zone::Srv(vec![
                    (10, 1, refused.port(), "a.trunk.test."),
                    (20, 1, b_port, "b.trunk.test."),
                ]),
            ),
            ("a.trunk.test.", Zone::LOOPBACK),
            ("b.trunk.test.", Zone::LOOPBACK),
        ],
        Duration::ZERO,
    );
    dns.set_up(true);
    let mut setup = Setup::new(82, &[("alice", &agent)], &agent);
    setup.termination = "trunk.test".into();
    let mut config = setup.config();
    config.trunk.dns_servers = vec![dns.addr];
    config.trunk.transport = callbackd::config::TrunkTransportSetting::Tcp;
    // RFC 3261's default timers: Timer B is 64·T1 = 32 s.
    config.sip.t1_ms = 500;
    config.sip.t2_ms = 4000;
    config.sip.t4_ms = 5000;
    let _files = StoreFiles::of(&config);
    register(&config, NUMBER);
    let lib = library(&config);
    let engine = common::start(config.clone()).await;

    // The customer is called once the agent has heard the whisper.
    agent.wait_invite(1, SOON).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let whispered = loop {
        let heard = agent.rtp_before(Instant::now());
        let said = segments(&heard, &lib, Law::Ulaw);
        let names: Vec<&str> = said.iter().map(|s| s.name).collect();
        if common::find_run(&names, &WHISPER)
            .is_some_and(|at| said[at + WHISPER.len() - 1].complete())
        {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the agent never heard the whisper"
        );
        // Poll interval: the peer records RTP without signalling.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Well under Timer B (32 s): only an immediate failover gets there.
    let invite = tokio::time::timeout(Duration::from_secs(5), invite_rx.recv())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no INVITE reached the second target within 5 s of the whisper's end \
                 ({:?} ago): the refused connection was not a transport error",
                whispered.elapsed()
            )
        })
        .expect("carrier B's reader ended");
    assert!(
        invite.starts_with(&format!("INVITE sip:+1{NUMBER}@trunk.test")),
        "{invite}"
    );
    assert!(invite.contains("SIP/2.0/TCP "), "sent over TCP: {invite}");
    let status = engine.status().await.expect("engine running");
    assert!(
        status.edge.send_failures >= 1,
        "the refused connection was counted: {:?}",
        status.edge
    );
    reader.abort();
    engine.shutdown().await;
}
