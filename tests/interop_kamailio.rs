//! Kamailio with the dispatcher in front of two release `callbackd`
//! binaries (issue 9, acceptance point 3), all on loopback:
//!
//! - OPTIONS pings mark both engines up (they start inactive);
//! - calls through Kamailio, which Record-Routes, complete with BYE from
//!   either side: the caller's own BYE, and the engine's BYE at the end of
//!   the IVR (a callback registered) — both in-dialog requests travel
//!   through the proxy (`loose_route`);
//! - SIGTERM to the first engine while a caller is registering a callback
//!   there: it answers OPTIONS with 503, the dispatcher marks it down, the
//!   caller in progress finishes (the callback is stored, the engine's BYE
//!   reaches the caller), and new calls through Kamailio meanwhile all
//!   succeed on the second engine — none fails (no 408); then the drained
//!   engine exits by itself.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Duration;

use callbackd::callback::store::Status;

use support::kamailio::Kamailio;
use support::{
    Engine, EngineConfig, IvrConfig, Ports, Sipp, SippRun, TestDir, assert_clean, interop_lock,
    is_call_event, log_field, require_tools, scenario_file, stored_callbacks, udp_options,
    write_inf,
};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn kamailio_dispatcher_moves_traffic_away_from_a_draining_engine() {
    let test = "kamailio_dispatcher_moves_traffic_away_from_a_draining_engine";
    if !require_tools(test, &["sipp", "kamailio", "kamcmd"]) {
        return;
    }
    let _serial = interop_lock();
    let dir = TestDir::new(test);
    let (a_ports, b_ports, proxy_ports, c1, c2) = (
        Ports::allocate(),
        Ports::allocate(),
        Ports::allocate(),
        Ports::allocate(),
        Ports::allocate(),
    );
    let engine_config = |ports: &Ports, store: &str| {
        let mut config = EngineConfig::new(ports);
        config.store_path = store.into();
        config.drain_s = Some(60);
        config.ivr = IvrConfig {
            first_digit_timeout_s: 8,
            inter_digit_timeout_s: 4,
            ..IvrConfig::default()
        };
        config
    };
    let mut a = Engine::start_named(&engine_config(&a_ports, "a.sqlite"), &dir, &[], "a.toml");
    let mut b = Engine::start_named(&engine_config(&b_ports, "b.sqlite"), &dir, &[], "b.toml");
    let (a_addr, b_addr) = (a.sip_addr(), b.sip_addr());
    let proxy = Kamailio::start(
        &dir,
        SocketAddr::new(LO, proxy_ports.engine_sip),
        &[a_addr, b_addr],
    );

    // Both start inactive; the pings' 200s make them active.
    for engine in [a_addr, b_addr] {
        proxy.wait_destination(engine, Duration::from_secs(10), "up", |d| d.is_active());
    }

    // Through the proxy (to `a`, the first by priority): one caller
    // registers a callback (the engine hangs up), another hangs up itself.
    let numbers = write_inf(&dir, "numbers.csv", &["3125550188".into()]);
    let (register, hangup) = thread::scope(|s| {
        let register = s.spawn(|| {
            Sipp::uac(
                scenario_file("register_callback_via_proxy.xml"),
                proxy.addr,
                &c1,
            )
            .inf(&numbers)
            .timeout_s(60)
            .run(&dir, "register1")
        });
        let hangup = Sipp::uac(
            scenario_file("caller_hangs_up_via_proxy.xml"),
            proxy.addr,
            &c2,
        )
        .timeout_s(30)
        .run(&dir, "hangup1");
        (register.join().expect("caller thread"), hangup)
    });
    assert_clean(&register, 1);
    assert_clean(&hangup, 1);
    let engine_bye = register.call_id(1, LO);
    let caller_bye = hangup.call_id(1, LO);
    let a_log = a.log_lines();
    for (call_id, reason) in [(&engine_bye, "LocalHangup"), (&caller_bye, "RemoteBye")] {
        assert!(
            a_log.iter().any(|l| is_call_event(l, "call ended", call_id)
                && log_field(l, "reason") == Some(reason)),
            "engine a: call {call_id} did not end with {reason}:\n{}",
            a.log_tail(40)
        );
        // The ACK and the BYE went through the proxy's route set.
        let log = proxy.log();
        for method in ["ACK", "BYE"] {
            assert!(
                log.contains(&format!("ROUTED {method} {call_id} ")),
                "{method} of {call_id} did not pass through Kamailio:\n{log}"
            );
        }
    }
    assert_eq!(rows_with(&a, "3125550188"), 1, "a stored the callback");

    // Drain: SIGTERM to `a` while a caller is registering a callback there.
    let numbers2 = write_inf(&dir, "numbers2.csv", &["3125550177".into()]);
    let (in_progress, new_calls) = thread::scope(|s| {
        let in_progress = s.spawn(|| {
            Sipp::uac(
                scenario_file("register_callback_via_proxy.xml"),
                proxy.addr,
                &c1,
            )
            .inf(&numbers2)
            .timeout_s(60)
            .run(&dir, "register2")
        });
        // Its call is the second from c1's port (the first was in phase 1).
        let from_c1 = format!("from=\"sip:caller@127.0.0.1:{}\"", c1.sipp_sip);
        support::wait_until(
            Duration::from_secs(10),
            "the second caller reaching engine a",
            || {
                a.log_lines()
                    .iter()
                    .filter(|l| l.contains(": call started ") && l.contains(&from_c1))
                    .count()
                    >= 2
            },
        );
        a.sigterm();
        // Draining: OPTIONS gets 503 (also what the dispatcher's pings get).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for probe in 0.. {
            let code = udp_options(a_addr, &format!("drain-{probe}"));
            if code == Ok(503) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "engine a answers OPTIONS with {code:?} after SIGTERM, not 503"
            );
        }
        // New calls right away (before and after the dispatcher notices):
        // each lands on `b`, directly or by failover on a's 503.
        let new_calls = Sipp::uac(
            scenario_file("caller_hangs_up_via_proxy.xml"),
            proxy.addr,
            &c2,
        )
        .load(4, 2, 4)
        .timeout_s(40)
        .run(&dir, "during_drain");
        proxy.wait_destination(a_addr, Duration::from_secs(10), "marked down", |d| {
            !d.is_active()
        });
        (in_progress.join().expect("caller thread"), new_calls)
    });
    // The caller in progress finished: its callback is stored, the
    // engine's BYE reached it.
    assert_clean(&in_progress, 1);
    assert_eq!(
        rows_with(&a, "3125550177"),
        1,
        "a stored the second callback"
    );
    // No new call failed (a 408 or any other failure would count).
    assert_clean(&new_calls, 4);
    let new_ids: Vec<String> = (1..=4).map(|n| new_calls.call_id(n, LO)).collect();
    let b_log = b.log_lines();
    for id in &new_ids {
        assert!(
            b_log.iter().any(|l| is_call_event(l, "call ended", id)),
            "new call {id} was not served by engine b:\n{}",
            b.log_tail(40)
        );
    }
    let log = proxy.log();
    assert!(
        !log.contains(" 408"),
        "Kamailio saw a 408 during the drain:\n{log}"
    );
    // With no call left, a ends by itself.
    let status = a.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "engine a did not exit cleanly after draining: {status:?}\n{}",
        a.log_tail(40)
    );
    print_dispatch(&log, &new_ids, &in_progress);
    a.assert_no_panic();
    b.stop();
    b.assert_no_panic();
}

/// How many callbacks for `number` the engine's store holds.
fn rows_with(engine: &Engine, number: &str) -> usize {
    stored_callbacks(&engine.store_path())
        .iter()
        .filter(|r| r.number == number && r.status == Status::Pending)
        .count()
}

/// Where Kamailio sent each call (for the test's output).
fn print_dispatch(log: &str, new_ids: &[String], in_progress: &SippRun) {
    let first = in_progress.call_id(1, LO);
    for line in log
        .lines()
        .filter(|l| l.contains("DISPATCH") || l.contains("FAILOVER") || l.contains("FAILED"))
        .filter(|l| l.contains(&first) || new_ids.iter().any(|id| l.contains(id.as_str())))
    {
        eprintln!("kamailio: {}", line.trim());
    }
}
