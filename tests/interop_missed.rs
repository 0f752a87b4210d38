//! Interop acceptance test of the missed-call rules (issue 13, points 2 and
//! 3): the release `callbackd` binary against sipp on loopback, on a real
//! clock. The first interval of a rule is at least a minute, so the
//! scenarios share one engine and run side by side (each caller its own
//! number), and the calling window, which needs an engine of its own, runs
//! beside them in a second test:
//!
//! - a caller hangs up in the IVR → a minute later an agent (a sipp UAS) is
//!   called first and hears the rule's `missed_call_agent` prompt (its
//!   frames in the RTP it receives), then the customer (the sipp carrier)
//!   with the DID the caller dialed as caller ID; bridged, `completed`;
//! - a caller abandons in a queue, then calls again and registers a
//!   callback → the automatic task is cancelled (`customer_registered`) and
//!   the number is called once, by the registered callback;
//! - `PATCH /v1/missed-call-rules/{id}` `{"enabled":false}` cancels the
//!   rule's pending task (`rule_disabled`), which is never dialed;
//! - a number of area code 999 (no time zone) with a rule without a
//!   fallback zone → `failed`, `unknown_time_zone`, never dialed;
//! - 16 callers hang up at once → at most 15 automatic callbacks at once
//!   (the store's `dialing` rows sampled, and the attempts' spans), the
//!   16th is dialed once a line is free;
//! - (second test) a number whose local time is before the calling window
//!   is called when the window opens in its zone, not at the interval.
//!
//! The two tests do not take [`support::interop_lock`]: nothing here is
//! timed beyond "not before", each has its own port blocks, and run one
//! after the other they would take twice as long (two to three minutes
//! each, most of it waiting for the intervals).

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::Duration;

use callbackd::callback::cdr::{CdrRecord, Leg, LegOutcome};
use callbackd::callback::number::own_number;
use callbackd::callback::scheduler::Outcome;
use callbackd::callback::store::{
    AttemptRow, CallbackRow, LaunchStore, Source, SqliteStore, Status,
};
use callbackd::callback::timezone::zones_of;
use callbackd::media::g711::Law;
use callbackd::media::prompt::{PromptLibrary, Ptime};
use callbackd::sip::message::{self, Message, Request, Response};
use jiff::{SignedDuration, Timestamp};

use support::{
    CallbackConfig, Capture, Engine, EngineConfig, Ports, RtpPacket, Sipp, TestDir, UdpPacket,
    assert_clean, read_rtp, read_udp, require_tools, scenario_file, stored_callbacks,
    wait_udp_bound, wait_until, write_inf, write_tone_pcap,
};

/// The DID of `support` (the first queue: unrouted DIDs go there too).
const DID: &str = "3125550100";
/// The DID of `sales`, a queue no agent serves: its callers wait on hold.
const SALES_DID: &str = "3125550199";
/// The DID of `billing`, whose IVR hang-ups have a rule of their own.
const BILLING_DID: &str = "3125550177";
/// Every queue's callback number (the caller ID of registered callbacks).
const QUEUE_NUMBER: &str = "8005550100";
/// Scenario 1: hangs up in the IVR of `support`.
const IVR_CALLER: &str = "3125550111";
/// Scenario 2: abandons on hold in `sales`, then registers a callback.
const ABANDONING_CALLER: &str = "3125550122";
/// Scenario 3: hangs up in the IVR of `billing`; its rule is switched off.
const BILLING_CALLER: &str = "3125550133";
/// Scenario 5: area code 999 is in no time-zone map.
const NO_ZONE_CALLER: &str = "9995550155";
/// How long the callers who hang up in the IVR stay (the welcome alone
/// lasts longer), and how long the abandoning caller stays (past the
/// welcome, the estimate and the offer: on hold).
const IVR_STAY_MS: u32 = 4000;
const HOLD_STAY_MS: u32 = 18000;

/// The rules and the two extra queues of the shared engine. Every rule
/// counts a hang-up after 2 s, calls once, a minute later; 2 s of talk is
/// a success.
fn rules_toml() -> String {
    format!(
        "\n[[queues]]\nid = \"sales\"\ncallback_number = \"{QUEUE_NUMBER}\"\ndids = [\"{SALES_DID}\"]\n\
         \n[[queues]]\nid = \"billing\"\ncallback_number = \"{QUEUE_NUMBER}\"\ndids = [\"{BILLING_DID}\"]\n\
         \n[[missed_call_rules]]\nid = \"billing-ivr\"\nkind = \"ivr\"\nqueues = [\"billing\"]\n\
         min_time_s = 2\nintervals_min = [1]\nforward_to_queue = \"support\"\n\
         wait_for_answer_s = 10\nsuccess_after_s = 2\n\
         \n[[missed_call_rules]]\nid = \"ivr\"\nkind = \"ivr\"\nqueues = [\"support\"]\n\
         min_time_s = 2\nintervals_min = [1]\nwait_for_answer_s = 10\nsuccess_after_s = 2\n\
         \n[[missed_call_rules]]\nid = \"abandoned\"\nkind = \"contact_center\"\nqueues = [\"sales\"]\n\
         min_time_s = 2\nintervals_min = [1]\nforward_to_queue = \"support\"\n\
         wait_for_answer_s = 10\nsuccess_after_s = 2\n"
    )
}

/// The callback side shared by both tests: `agents` static agents at the
/// agent sipp UAS (one port, a user part each), the carrier at the trunk.
fn callbacks(agent: &Ports, carrier: &Ports, agents: usize) -> CallbackConfig {
    CallbackConfig {
        termination: SocketAddr::from((Ipv4Addr::LOCALHOST, carrier.sipp_sip)),
        agents: (1..=agents)
            .map(|i| {
                (
                    format!("a{i:02}"),
                    format!("sip:a{i:02}@127.0.0.1:{}", agent.sipp_sip),
                )
            })
            .collect(),
        poll_interval_ms: 200,
        retry_time_s: 5,
        max_retries: 0,
        agent_ring_timeout_s: 10,
        customer_ring_timeout_s: 10,
        agent_cooldown_s: 5,
        callback_number: QUEUE_NUMBER.into(),
        registered_agents: Vec::new(),
        digest_algorithms: Vec::new(),
    }
}

/// Scenarios 1 to 5 in one engine (20 static agents at one sipp UAS, one
/// carrier UAS answering every customer call and hanging up after 5 s):
/// the IVR, billing and 999 callers hang up together while the abandoning
/// caller holds in `sales`; the billing rule is switched off, the
/// abandoning caller registers, then the 16 call and hang up. The store is
/// sampled until every callback has ended; the capture and the store are
/// checked afterwards.
#[test]
fn missed_calls_are_called_back_cancelled_and_held_to_fifteen_lines() {
    let test = "missed_calls_are_called_back_cancelled_and_held_to_fifteen_lines";
    if !require_tools(test, &["sipp", "tshark"]) {
        return;
    }
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    let (sales_ports, group_ports) = (Ports::allocate(), Ports::allocate());
    let mut config = EngineConfig::new(&main);
    config.callbacks = Some(callbacks(&agent_ports, &carrier_ports, 20));
    config.extra_toml = rules_toml();
    let api_port = main.engine_sip + 2;
    config.api_port = Some(api_port);
    let token = admin_token(&dir);
    let capture = Capture::start_filter(
        &dir,
        "missed",
        &format!(
            "udp port {} or udp port {} or udp port {} or udp portrange {}-{}",
            main.engine_sip,
            agent_ports.sipp_sip,
            carrier_ports.sipp_sip,
            main.rtp_min,
            main.rtp_max
        ),
    );
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();
    let store = engine.store_path();
    std::fs::create_dir_all(dir.join("carrier")).expect("test dir is writable");
    write_tone_pcap(&dir.join("carrier").join("carrier_audio.pcap"), 440.0, 400);
    let group: Vec<String> = (0..16).map(|i| format!("31255502{i:02}")).collect();
    let early_inf = write_inf(
        &dir,
        "early.csv",
        &[
            format!("{IVR_CALLER};{DID}"),
            format!("{BILLING_CALLER};{BILLING_DID}"),
            format!("{NO_ZONE_CALLER};{DID}"),
        ],
    );
    let sales_inf = write_inf(
        &dir,
        "sales.csv",
        &[format!("{ABANDONING_CALLER};{SALES_DID}")],
    );
    let register_inf = write_inf(&dir, "register.csv", &[ABANDONING_CALLER.to_owned()]);
    let group_inf = write_inf(
        &dir,
        "group.csv",
        &group
            .iter()
            .map(|n| format!("{n};{DID}"))
            .collect::<Vec<_>>(),
    );
    // Agent and customer calls: scenario 1, the registered callback of
    // scenario 2, and the 16.
    let outbound = 18;

    let mut most_dialing = 0;
    let mut first_due: HashMap<String, Timestamp> = HashMap::new();
    let (agent, carrier, early, sales, register, group_run) = thread::scope(|s| {
        let agent = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_with_audio.xml"),
                engine_addr,
                &agent_ports,
            )
            .load(outbound, 100, 100)
            .arg("-aa")
            .timeout_s(240)
            .run(&dir, "agent")
        });
        let carrier = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_audio_hangup.xml"),
                engine_addr,
                &carrier_ports,
            )
            .load(outbound, 100, 100)
            .arg("-aa")
            .timeout_s(240)
            .run(&dir, "carrier")
        });
        wait_udp_bound(agent_ports.sipp_sip, Duration::from_secs(10));
        wait_udp_bound(carrier_ports.sipp_sip, Duration::from_secs(10));
        // Scenarios 1, 3 and 5 hang up in the IVR together; scenario 2's
        // caller waits on hold in `sales` meanwhile.
        let early = s.spawn(|| {
            Sipp::uac(
                scenario_file("caller_hangs_up_after.xml"),
                engine_addr,
                &main,
            )
            .inf(&early_inf)
            .load(3, 10, 3)
            .arg("-d")
            .arg(&IVR_STAY_MS.to_string())
            .timeout_s(30)
            .run(&dir, "early")
        });
        let sales = s.spawn(|| {
            Sipp::uac(
                scenario_file("caller_hangs_up_after.xml"),
                engine_addr,
                &sales_ports,
            )
            .inf(&sales_inf)
            .arg("-d")
            .arg(&HOLD_STAY_MS.to_string())
            .timeout_s(40)
            .run(&dir, "sales")
        });

        // Scenario 3: the billing caller's task is pending; the rule is
        // switched off through the API and the task is cancelled.
        let billing = wait_row(&store, "the billing caller's task", |r| {
            r.number == BILLING_CALLER && r.source == Source::MissedCall
        });
        assert_eq!(billing.status, Status::Pending, "{billing:#?}");
        assert_eq!(billing.rule.as_deref(), Some("billing-ivr"));
        let (status, answer) = support::api_request(
            api_port,
            "PATCH",
            "/v1/missed-call-rules/billing-ivr",
            &token,
            Some(r#"{"enabled":false}"#),
        );
        assert_eq!(status, 200, "{answer}");
        let patched: serde_json::Value = serde_json::from_str(&answer).expect("a JSON rule");
        assert_eq!(patched["enabled"], false, "{answer}");
        let billing = wait_row(&store, "the billing task cancelled", |r| {
            r.id == billing.id && r.status == Status::Cancelled
        });
        assert_eq!(billing.closed_reason.as_deref(), Some("rule_disabled"));
        assert!(
            Timestamp::now() < billing.registered_at + SignedDuration::from_secs(60),
            "cancelled before it was due"
        );

        // Scenario 5: no zone, no fallback: failed at once, with the reason.
        let no_zone = wait_row(&store, "the 999 caller's task", |r| {
            r.number == NO_ZONE_CALLER && r.source == Source::MissedCall
        });
        assert_eq!(no_zone.status, Status::Failed, "{no_zone:#?}");
        assert_eq!(no_zone.closed_reason.as_deref(), Some("unknown_time_zone"));
        assert_eq!(no_zone.next_attempt_at, None);

        // Scenario 1's task: due a minute after the hang-up.
        let ivr = wait_row(&store, "the IVR caller's task", |r| {
            r.number == IVR_CALLER && r.source == Source::MissedCall
        });
        assert_eq!(ivr.rule.as_deref(), Some("ivr"));
        let due = ivr.next_attempt_at.expect("scheduled");
        assert_eq!(due, ivr.registered_at + SignedDuration::from_secs(60));
        first_due.insert(IVR_CALLER.to_owned(), due);

        // Scenario 2: the caller abandoned on hold (a contact-center
        // task); calling again, they register a callback for their number.
        let sales = sales.join().expect("sales caller thread");
        let abandoned = wait_row(&store, "the abandoning caller's task", |r| {
            r.number == ABANDONING_CALLER && r.source == Source::MissedCall
        });
        assert_eq!(abandoned.status, Status::Pending, "{abandoned:#?}");
        assert_eq!(abandoned.rule.as_deref(), Some("abandoned"));
        assert!(
            abandoned
                .task
                .as_deref()
                .is_some_and(|t| t.contains("\"contact_center\"")),
            "missed in the queue: {abandoned:#?}"
        );
        let register = Sipp::uac(
            scenario_file("register_callback.xml"),
            engine_addr,
            &sales_ports,
        )
        .inf(&register_inf)
        .timeout_s(60)
        .run(&dir, "register");
        let abandoned = wait_row(&store, "the abandoned task cancelled", |r| {
            r.id == abandoned.id && r.status == Status::Cancelled
        });
        assert_eq!(
            abandoned.closed_reason.as_deref(),
            Some("customer_registered")
        );

        // Scenario 4: sixteen callers hang up at once.
        let group_run = Sipp::uac(
            scenario_file("caller_hangs_up_after.xml"),
            engine_addr,
            &group_ports,
        )
        .inf(&group_inf)
        .load(16, 100, 16)
        .arg("-d")
        .arg(&IVR_STAY_MS.to_string())
        .timeout_s(30)
        .run(&dir, "group");
        let rows = wait_rows(&store, "the 16 tasks", |rows| {
            group.iter().all(|n| {
                rows.iter()
                    .any(|r| r.number == *n && r.source == Source::MissedCall)
            })
        });
        for row in rows.iter().filter(|r| group.contains(&r.number)) {
            assert_eq!(row.status, Status::Pending, "{row:#?}");
            first_due.insert(row.number.clone(), row.next_attempt_at.expect("due"));
        }
        // Until every automatic and registered callback has ended, the
        // dialing rows are sampled: never more than the 15 lines.
        wait_until(Duration::from_secs(180), "every callback ended", || {
            let rows = stored_callbacks(&store);
            let dialing = rows
                .iter()
                .filter(|r| r.source == Source::MissedCall && r.status == Status::Dialing)
                .count();
            assert!(dialing <= 15, "{dialing} automatic callbacks at once");
            most_dialing = most_dialing.max(dialing);
            rows.iter()
                .all(|r| !matches!(r.status, Status::Pending | Status::Dialing))
        });
        (
            agent.join().expect("agent sipp thread"),
            carrier.join().expect("carrier sipp thread"),
            early.join().expect("early callers thread"),
            sales,
            register,
            group_run,
        )
    });
    let pcap = capture.stop();
    assert_clean(&early, 3);
    assert_clean(&sales, 1);
    assert_clean(&register, 1);
    assert_clean(&group_run, 16);
    assert_clean(&agent, u64::from(outbound));
    assert_clean(&carrier, u64::from(outbound));

    let rows = stored_callbacks(&store);
    let db = SqliteStore::open(&store).expect("open the store");
    let cdrs = db.cdrs(None, None).expect("CDRs");
    let sip = sip_messages(&pcap, main.engine_sip);
    let to_carrier = |m: &&Sip| m.dst.port() == carrier_ports.sipp_sip;
    let customer_invites = requests(&sip, "INVITE", to_carrier);
    let customer_invites_to = |number: &str| -> Vec<(i128, &Request)> {
        let wanted = format!("sip:+1{number}@");
        customer_invites
            .iter()
            .filter(|(_, r)| r.uri.starts_with(&wanted))
            .copied()
            .collect()
    };
    let task_of = |number: &str| -> &CallbackRow {
        rows.iter()
            .find(|r| r.number == number && r.source == Source::MissedCall)
            .unwrap_or_else(|| panic!("no task for {number}: {rows:#?}"))
    };

    // Scenario 1: agent first (with the rule's prompt), then the customer
    // with the DID as caller ID, bridged, completed.
    let ivr = task_of(IVR_CALLER);
    assert_eq!(ivr.status, Status::Completed, "{ivr:#?}");
    let attempts = answered_once(&db, ivr);
    assert!(
        attempts.attempt.started_at >= first_due[IVR_CALLER],
        "dialed at {} before its time {}",
        attempts.attempt.started_at,
        first_due[IVR_CALLER]
    );
    let leg = |row: &CallbackRow, leg: Leg| -> CdrRecord {
        let legs: Vec<&CdrRecord> = cdrs
            .iter()
            .filter(|c| c.callback == Some(row.id) && c.leg == leg)
            .collect();
        assert_eq!(
            legs.len(),
            1,
            "one {leg:?} leg of {}: {cdrs:#?}",
            row.number
        );
        assert_eq!(legs[0].outcome, LegOutcome::Answered, "{:?}", legs[0]);
        legs[0].clone()
    };
    let agent_cdr = leg(ivr, Leg::Agent);
    let customer_cdr = leg(ivr, Leg::Customer);
    let agent_invite = first_request(&sip, "INVITE", by_call_id(&agent_cdr.call_id));
    let agent_ok = first_response(&sip, 200, "INVITE", by_call_id(&agent_cdr.call_id));
    let customer_invite = first_request(&sip, "INVITE", by_call_id(&customer_cdr.call_id));
    let customer_ok = first_response(&sip, 200, "INVITE", by_call_id(&customer_cdr.call_id));
    let customer_bye = first_request(&sip, "BYE", by_call_id(&customer_cdr.call_id));
    assert_eq!(
        agent_invite.1.uri.split('@').nth(1),
        Some(&*format!("127.0.0.1:{}", agent_ports.sipp_sip))
    );
    assert!(
        agent_invite.0 < agent_ok.0 && agent_ok.0 < customer_invite.0,
        "the agent is INVITEd and answers before the customer is INVITEd"
    );
    assert_eq!(customer_invites_to(IVR_CALLER).len(), 1);
    assert!(
        customer_invite
            .1
            .uri
            .starts_with(&format!("sip:+1{IVR_CALLER}@")),
        "{}",
        customer_invite.1.uri
    );
    assert_eq!(
        &*customer_invite.1.headers.from.uri,
        format!("sip:+1{DID}@127.0.0.1;user=phone").as_str(),
        "the DID the caller dialed is the caller ID"
    );
    // The agent's RTP: the prompt first, then the customer's tone.
    let rtp = read_rtp(&pcap, main.rtp_min, main.rtp_max);
    let agent_leg = sdp_port(&agent_invite.1.body);
    let customer_leg = sdp_port(&customer_invite.1.body);
    let at_agent: Vec<&RtpPacket> = rtp
        .iter()
        .filter(|p| p.src.port() == agent_leg && p.dst.port() == sdp_port(&agent_ok.1.body))
        .collect();
    let (heard, of) = prompt_heard(&at_agent, "missed_call_agent", customer_invite.0);
    eprintln!(
        "agent leg: {} packets; {heard} of the {of} frames of missed_call_agent before the \
         customer was dialed",
        at_agent.len()
    );
    assert!(
        of >= 50 && heard * 10 >= of * 9,
        "the agent hears missed_call_agent: {heard} of {of} frames"
    );
    let by_carrier: Vec<&RtpPacket> = rtp
        .iter()
        .filter(|p| p.dst.port() == customer_leg && p.src.port() == sdp_port(&customer_ok.1.body))
        .collect();
    let bridged: Vec<&RtpPacket> = at_agent
        .iter()
        .copied()
        .filter(|p| p.time_ns > customer_ok.0 && p.time_ns < customer_bye.0)
        .collect();
    let relayed = relayed(&by_carrier, &bridged);
    assert!(
        relayed >= 100,
        "the customer's audio reaches the agent: {relayed} packets of {}",
        by_carrier.len()
    );

    // Scenario 2: the task was never attempted; the number was called
    // once, by the registered callback (the queue's number as caller ID).
    let abandoned = task_of(ABANDONING_CALLER);
    assert_eq!(abandoned.status, Status::Cancelled);
    assert!(db.attempts(abandoned.id).expect("attempts").is_empty());
    let registered = rows
        .iter()
        .find(|r| r.number == ABANDONING_CALLER && r.source == Source::Ivr)
        .unwrap_or_else(|| panic!("no registered callback: {rows:#?}"));
    assert_eq!(registered.status, Status::Completed, "{registered:#?}");
    answered_once(&db, registered);
    let invites = customer_invites_to(ABANDONING_CALLER);
    assert_eq!(invites.len(), 1, "one call to the abandoning caller");
    assert_eq!(
        invites[0].1.headers.call_id.as_str(),
        leg(registered, Leg::Customer).call_id,
        "the registered callback's call"
    );
    assert_eq!(
        &*invites[0].1.headers.from.uri,
        format!("sip:+1{QUEUE_NUMBER}@127.0.0.1;user=phone").as_str()
    );

    // Scenarios 3 and 5: never dialed.
    for number in [BILLING_CALLER, NO_ZONE_CALLER] {
        let task = task_of(number);
        assert!(db.attempts(task.id).expect("attempts").is_empty());
        assert!(
            customer_invites_to(number).is_empty(),
            "{number} was called"
        );
    }
    assert_eq!(task_of(BILLING_CALLER).status, Status::Cancelled);
    assert_eq!(task_of(NO_ZONE_CALLER).status, Status::Failed);

    // Scenario 4: sixteen tasks due within a second of each other; at most
    // 15 attempts at once, 15 reached; the last one dialed once a line was
    // free (after an attempt of the others ended).
    let dues: Vec<Timestamp> = group.iter().map(|n| first_due[n]).collect();
    let (earliest, latest) = (
        *dues.iter().min().expect("16 dues"),
        *dues.iter().max().expect("16 dues"),
    );
    assert!(
        latest.duration_since(earliest) < SignedDuration::from_secs(2),
        "due together: {dues:?}"
    );
    let mut spans: Vec<AttemptRow> = Vec::new();
    for number in &group {
        let task = task_of(number);
        assert_eq!(task.status, Status::Completed, "{task:#?}");
        spans.push(answered_once(&db, task));
        assert_eq!(customer_invites_to(number).len(), 1, "{number}");
    }
    let overlap = most_overlapping(&spans);
    eprintln!(
        "16 tasks due within {:?}: at most {most_dialing} dialing rows seen at once, at most \
         {overlap} attempts overlapping",
        latest.duration_since(earliest)
    );
    assert_eq!(most_dialing, 15, "15 lines in use at once were seen");
    assert_eq!(overlap, 15, "at most 15 attempts at once");
    spans.sort_by_key(|a| a.attempt.started_at);
    let (last, first_fifteen) = spans.split_last().expect("16 attempts");
    let freed = first_fifteen
        .iter()
        .map(|a| a.attempt.ended_at)
        .min()
        .expect("15 attempts");
    assert!(
        last.attempt.started_at >= freed,
        "the 16th started at {}, the first line freed at {freed}",
        last.attempt.started_at
    );
    assert!(
        first_fifteen
            .iter()
            .all(|a| a.attempt.started_at < last.attempt.started_at),
        "the 16th waited"
    );
    // Every customer call of the capture belongs to one of the 18.
    assert_eq!(
        customer_invites.len(),
        usize::try_from(outbound).expect("small")
    );

    engine.stop();
    engine.assert_no_panic();
}

/// Issue 13 point 3: a number where it is before the calling window is
/// called when the window opens in its own zone. The window is set to open
/// two to three minutes from now in the zone of one of 808/213/303/312/212
/// (the first whose local time leaves the window inside one day); the
/// caller hangs up in the IVR; the task is due at the window's start, past
/// the rule's one-minute interval, and the agent's INVITE is not sent
/// before it.
#[test]
fn a_number_before_the_calling_window_is_called_when_it_opens_in_its_zone() {
    let test = "a_number_before_the_calling_window_is_called_when_it_opens_in_its_zone";
    if !require_tools(test, &["sipp", "tshark"]) {
        return;
    }
    let dir = TestDir::new(test);
    let (main, agent_ports, carrier_ports) =
        (Ports::allocate(), Ports::allocate(), Ports::allocate());
    // The binary first: a build now would eat into the minutes the window
    // is computed to leave.
    support::callbackd_bin();
    let (number, opens, window) = window_opening_soon(Timestamp::now());
    eprintln!("{number}: calling window {window} local, opens at {opens}");
    let mut config = EngineConfig::new(&main);
    config.callbacks = Some(callbacks(&agent_ports, &carrier_ports, 1));
    config.calling_window = window;
    config.extra_toml = "\n[[missed_call_rules]]\nid = \"ivr\"\nkind = \"ivr\"\n\
         min_time_s = 2\nintervals_min = [1]\nwait_for_answer_s = 10\nsuccess_after_s = 2\n"
        .into();
    let capture = Capture::start_filter(
        &dir,
        "window",
        &format!(
            "udp port {} or udp port {} or udp port {}",
            main.engine_sip, agent_ports.sipp_sip, carrier_ports.sipp_sip
        ),
    );
    let mut engine = Engine::start(&config, &dir);
    let engine_addr = engine.sip_addr();
    let store = engine.store_path();
    std::fs::create_dir_all(dir.join("carrier")).expect("test dir is writable");
    write_tone_pcap(&dir.join("carrier").join("carrier_audio.pcap"), 440.0, 400);
    let inf = write_inf(&dir, "caller.csv", &[format!("{number};{DID}")]);

    let (agent, carrier, caller, task) = thread::scope(|s| {
        let agent = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_with_audio.xml"),
                engine_addr,
                &agent_ports,
            )
            .arg("-aa")
            .timeout_s(300)
            .run(&dir, "agent")
        });
        let carrier = s.spawn(|| {
            Sipp::uac(
                scenario_file("uas_answer_audio_hangup.xml"),
                engine_addr,
                &carrier_ports,
            )
            .arg("-aa")
            .timeout_s(300)
            .run(&dir, "carrier")
        });
        wait_udp_bound(agent_ports.sipp_sip, Duration::from_secs(10));
        wait_udp_bound(carrier_ports.sipp_sip, Duration::from_secs(10));
        let caller = Sipp::uac(
            scenario_file("caller_hangs_up_after.xml"),
            engine_addr,
            &main,
        )
        .inf(&inf)
        .arg("-d")
        .arg(&IVR_STAY_MS.to_string())
        .timeout_s(30)
        .run(&dir, "caller");
        let task = wait_row(&store, "the task", |r| r.source == Source::MissedCall);
        assert_eq!(task.status, Status::Pending, "{task:#?}");
        let by_interval = task.registered_at + SignedDuration::from_secs(60);
        assert!(
            opens > by_interval,
            "the window opens at {opens}, after the interval ends at {by_interval}"
        );
        assert_eq!(
            task.next_attempt_at,
            Some(opens),
            "due when the window opens, not at the interval ({by_interval})"
        );
        let within = Duration::from_secs(
            u64::try_from(opens.duration_since(Timestamp::now()).as_secs() + 60).unwrap_or(60),
        );
        let task = wait_row_within(&store, within, "the task completed", |r| {
            r.id == task.id && r.status == Status::Completed
        });
        (
            agent.join().expect("agent sipp thread"),
            carrier.join().expect("carrier sipp thread"),
            caller,
            task,
        )
    });
    let pcap = capture.stop();
    assert_clean(&caller, 1);
    assert_clean(&agent, 1);
    assert_clean(&carrier, 1);
    let db = SqliteStore::open(&store).expect("open the store");
    let attempt = answered_once(&db, &task);
    assert!(
        attempt.attempt.started_at >= opens,
        "attempt started at {}, the window opens at {opens}",
        attempt.attempt.started_at
    );
    let sip = sip_messages(&pcap, main.engine_sip);
    let agent_invites = requests(&sip, "INVITE", |m: &&Sip| {
        m.dst.port() == agent_ports.sipp_sip
    });
    assert_eq!(agent_invites.len(), 1, "one agent INVITE");
    let opens_ns = opens.as_nanosecond();
    assert!(
        agent_invites[0].0 >= opens_ns,
        "the agent INVITE left {:.3} s before the window opened",
        (opens_ns - agent_invites[0].0) as f64 / 1e9
    );
    eprintln!(
        "the agent was INVITEd {:.3} s after the window opened",
        (agent_invites[0].0 - opens_ns) as f64 / 1e9
    );
    engine.stop();
    engine.assert_no_panic();
}

/// A number of one of the candidate area codes, the instant its calling
/// window opens and the window's text: the window opens at the first whole
/// minute at least 100 s after `now` (past a one-minute interval counted
/// from a hang-up a few seconds from now) and lasts two hours, in the
/// number's zone. The first candidate whose opening lies between 00:30 and
/// 21:30 local is taken, so the window never wraps over midnight (the five
/// zones span five or six hours: one always fits).
fn window_opening_soon(now: Timestamp) -> (String, Timestamp, String) {
    for number in [
        "8085550166",
        "2135550166",
        "3035550166",
        "3125550166",
        "2125550166",
    ] {
        let phone = own_number(number).expect("a callable number");
        let zones = zones_of(&phone).expect("a zone");
        let name = zones.names()[0].to_string();
        let tz = jiff::tz::TimeZone::get(&name).expect("a known zone");
        let opens = (now + SignedDuration::from_secs(100))
            .to_zoned(tz)
            .round(
                jiff::ZonedRound::new()
                    .smallest(jiff::Unit::Minute)
                    .mode(jiff::RoundMode::Ceil),
            )
            .expect("rounds");
        let minutes = i32::from(opens.hour()) * 60 + i32::from(opens.minute());
        if !(30..=21 * 60 + 30).contains(&minutes) {
            continue;
        }
        let closes = opens
            .checked_add(SignedDuration::from_hours(2))
            .expect("in range");
        let window = format!("{}-{}", opens.strftime("%H:%M"), closes.strftime("%H:%M"));
        return (number.to_owned(), opens.timestamp(), window);
    }
    panic!("no candidate zone has a local time between 00:30 and 21:30 at {now}");
}

/// A token of admin `root`, written to the test's store before the engine
/// starts.
fn admin_token(dir: &TestDir) -> String {
    use callbackd::callback::store::{Role, testing::user_with_token};
    let mut store = SqliteStore::open(&dir.join("callbackd.sqlite")).expect("open the store");
    user_with_token(&mut store, "root", Role::Admin, &[])
}

/// The row `pick` selects, once the store holds it (60 s at most).
fn wait_row(path: &Path, what: &str, pick: impl Fn(&CallbackRow) -> bool) -> CallbackRow {
    wait_row_within(path, Duration::from_secs(60), what, pick)
}

fn wait_row_within(
    path: &Path,
    within: Duration,
    what: &str,
    pick: impl Fn(&CallbackRow) -> bool,
) -> CallbackRow {
    let mut found = None;
    wait_until(within, what, || {
        found = stored_callbacks(path).into_iter().find(|r| pick(r));
        found.is_some()
    });
    found.expect("found")
}

/// The rows once `done` holds for them (60 s at most).
fn wait_rows(path: &Path, what: &str, done: impl Fn(&[CallbackRow]) -> bool) -> Vec<CallbackRow> {
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(60), what, || {
        rows = stored_callbacks(path);
        done(&rows)
    });
    rows
}

/// The callback's one attempt, answered.
fn answered_once(db: &SqliteStore, row: &CallbackRow) -> AttemptRow {
    let mut attempts = db.attempts(row.id).expect("attempts");
    assert_eq!(attempts.len(), 1, "{}: {attempts:#?}", row.number);
    assert_eq!(
        attempts[0].attempt.outcome,
        Outcome::Answered,
        "{attempts:#?}"
    );
    attempts.remove(0)
}

/// The most attempts in progress at one instant.
fn most_overlapping(attempts: &[AttemptRow]) -> usize {
    attempts
        .iter()
        .map(|a| {
            let at = a.attempt.started_at;
            attempts
                .iter()
                .filter(|b| b.attempt.started_at <= at && at < b.attempt.ended_at)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// How many of the frames of prompt `name` (PCMA, 20 ms, as the engine
/// prepares them; constant frames left out) the packets sent before
/// `before_ns` carry, in order; and how many there are.
fn prompt_heard(packets: &[&RtpPacket], name: &str, before_ns: i128) -> (usize, usize) {
    let mut library =
        PromptLibrary::load(&support::repo_root().join("prompts"), &[name]).expect("the prompt");
    library.prepare(&[Law::Alaw], &[Ptime::DEFAULT]);
    let id = library.id(name).expect("loaded");
    let frames: Vec<&[u8]> = library
        .frames(id, Law::Alaw, Ptime::DEFAULT)
        .expect("prepared")
        .iter()
        .filter(|f| f.iter().any(|&b| b != f[0]))
        .collect();
    let mut next = 0;
    for p in packets.iter().filter(|p| p.time_ns < before_ns) {
        if next < frames.len() && p.pt == 8 && p.payload == frames[next] {
            next += 1;
        }
    }
    (next, frames.len())
}

/// How many of `got` carry a payload one of `sent` carried (relayed
/// unchanged: both legs PCMA; constant payloads left out).
fn relayed(sent: &[&RtpPacket], got: &[&RtpPacket]) -> usize {
    let payloads: std::collections::HashSet<&[u8]> = sent
        .iter()
        .filter(|p| p.payload.len() >= 80 && p.payload.iter().any(|&b| b != p.payload[0]))
        .map(|p| p.payload.as_slice())
        .collect();
    got.iter()
        .filter(|p| payloads.contains(p.payload.as_slice()))
        .count()
}

/// One SIP message from the capture.
struct Sip {
    time_ns: i128,
    dst: SocketAddr,
    message: Message,
}

/// Every SIP message to or from the engine's port, in capture order.
fn sip_messages(pcap: &Path, engine_port: u16) -> Vec<Sip> {
    read_udp(pcap, &format!("udp.port=={engine_port}"))
        .into_iter()
        .filter_map(
            |UdpPacket {
                 time_ns,
                 dst,
                 payload,
                 ..
             }| {
                Some(Sip {
                    time_ns,
                    dst,
                    message: message::parse(&payload).ok()?,
                })
            },
        )
        .collect()
}

/// Selects the messages of dialog `call_id`.
fn by_call_id(call_id: &str) -> impl Fn(&&Sip) -> bool + '_ {
    move |m| sip_call_id(m) == call_id
}

fn sip_call_id(m: &Sip) -> &str {
    match &m.message {
        Message::Request(r) => r.headers.call_id.as_str(),
        Message::Response(r) => r.headers.call_id.as_str(),
    }
}

/// Every request `method` that `pick` selects, in capture order.
fn requests<'a>(
    sip: &'a [Sip],
    method: &str,
    pick: impl Fn(&&Sip) -> bool,
) -> Vec<(i128, &'a Request)> {
    sip.iter()
        .filter(|m| pick(m))
        .filter_map(|m| match &m.message {
            Message::Request(r) if r.method.as_str() == method => Some((m.time_ns, r)),
            _ => None,
        })
        .collect()
}

fn first_request<'a>(
    sip: &'a [Sip],
    method: &str,
    pick: impl Fn(&&Sip) -> bool,
) -> (i128, &'a Request) {
    requests(sip, method, pick)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {method} in the capture"))
}

fn first_response<'a>(
    sip: &'a [Sip],
    status: u16,
    method: &str,
    pick: impl Fn(&&Sip) -> bool,
) -> (i128, &'a Response) {
    sip.iter()
        .filter(|m| pick(m))
        .find_map(|m| match &m.message {
            Message::Response(r)
                if r.status == status && r.headers.cseq.method.as_str() == method =>
            {
                Some((m.time_ns, r))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {status} to {method} in the capture"))
}

/// The m=audio port of an SDP body.
fn sdp_port(body: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio port in {text}"))
}
