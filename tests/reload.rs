//! Issue 11 point 9: SIGHUP re-reads `config.toml`'s engine settings (the
//! allow-lists, the trunk, the prompts) into the running release binary;
//! a file that fails its checks is logged with the field and the running
//! settings stay. Calls in progress are not touched (the controller's
//! `reload` leaves them; the organisation stays the stored one).

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use support::{Engine, EngineConfig, Ports, TestDir, config_toml, interop_lock, udp_options_from};

/// A loopback address outside the test configuration's allow-list.
const OUTSIDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn sighup(engine: &Engine) {
    let status = Command::new("kill")
        .args(["-HUP", &engine.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -HUP {status}");
}

#[test]
fn sighup_reloads_the_allow_list_and_an_invalid_file_keeps_the_running_one() {
    let _serial = interop_lock();
    let dir = TestDir::new("sighup_reloads_the_allow_list");
    let ports = Ports::allocate();
    let mut config = EngineConfig::new(&ports);
    let mut engine = Engine::start(&config, &dir);
    let target = engine.sip_addr();
    assert_eq!(
        udp_options_from(OUTSIDER, target, "before"),
        Ok(403),
        "127.0.0.3 is not in [acl] sip yet"
    );

    // Allowed in the file, then SIGHUP: allowed at once, no restart.
    config.acl_sip.push("127.0.0.3/32".into());
    std::fs::write(engine.config_path(), config_toml(&config)).expect("rewrite the file");
    sighup(&engine);
    let line = engine.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("configuration reloaded") || l.contains("configuration not reloaded")
    });
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("configuration reloaded")),
        "{line:?}\n{}",
        engine.log_tail(20)
    );
    assert_eq!(udp_options_from(OUTSIDER, target, "after"), Ok(200));

    // A file that breaks a rule: logged with the field, nothing changes.
    let mut broken = config.clone();
    broken.acl_sip.retain(|net| net != "127.0.0.3/32");
    let text = config_toml(&broken).replacen("[rtp]", "[rtp]\nptime_oops = 1", 1);
    std::fs::write(engine.config_path(), text).expect("rewrite the file");
    sighup(&engine);
    let refused = engine.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("configuration not reloaded")
    });
    assert!(
        refused.as_deref().is_some_and(|l| l.contains("ptime_oops")),
        "the refusal names the field: {refused:?}\n{}",
        engine.log_tail(20)
    );
    assert_eq!(
        udp_options_from(OUTSIDER, target, "kept"),
        Ok(200),
        "the running allow-list stays"
    );
    assert!(engine.is_running());
    engine.stop();
    engine.assert_no_panic();
}
