//! Kamailio 5.6 (Debian's `kamailio`) as a stateful dispatcher in front of
//! callbackd, on loopback: the test writes its `kamailio.cfg` and
//! `dispatcher.list` into its own directory and runs it in the foreground
//! as its child (killed on drop).
//!
//! The configuration: one listener on 127.0.0.1, Record-Route on INVITEs,
//! in-dialog requests by `loose_route`, new requests to set 1 by
//! `ds_select_dst` with algorithm 8 (by priority: the first destination
//! while it is up), failover in a failure route on 503 or a branch
//! timeout, OPTIONS pings every second (`ds_probing_mode=1`, a destination
//! goes inactive after one failed ping and active after one 2xx), and the
//! `ctl` module's socket for `kamcmd dispatcher.list`.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::TestDir;

/// Where Debian installs the modules.
pub const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/";

/// A running Kamailio; killed on drop.
pub struct Kamailio {
    child: Option<Child>,
    ctl: PathBuf,
    log_path: PathBuf,
    /// Its SIP address.
    pub addr: SocketAddr,
}

/// A dispatcher destination's state as `kamcmd dispatcher.list` shows it:
/// `FLAGS: AP` (active, probing), `IP` (inactive, probing), …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `sip:host:port`.
    pub uri: String,
    /// The flags column.
    pub flags: String,
}

impl Destination {
    /// Active (`A…`): new calls may go there.
    pub fn is_active(&self) -> bool {
        self.flags.starts_with('A')
    }
}

/// The `kamailio.cfg` text.
pub fn config(addr: SocketAddr, dir: &Path, ctl: &Path) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:{addr}
mpath="{MODULES}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "ctl.so"
loadmodule "dispatcher.so"
modparam("ctl", "binrpc", "unix:{ctl}")
modparam("rr", "enable_full_lr", 1)
modparam("tm", "fr_timer", 3000)
modparam("tm", "fr_inv_timer", 30000)
modparam("dispatcher", "list_file", "{list}")
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_from", "sip:dispatcher@{addr}")
modparam("dispatcher", "ds_ping_reply_codes", "class=2")
modparam("dispatcher", "flags", 2)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            xlog("L_NOTICE", "ROUTED $rm $ci to $ru\n");
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{ t_relay(); }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ t_relay(); }}
        exit;
    }}
    t_check_trans();
    if (is_method("INVITE")) {{ record_route(); }}
    if (!ds_select_dst("1", "8")) {{
        xlog("L_NOTICE", "NODEST $rm $ci\n");
        sl_send_reply("503", "No destination");
        exit;
    }}
    xlog("L_NOTICE", "DISPATCH $rm $ci to $du\n");
    t_on_failure("FAILOVER");
    t_relay();
    exit;
}}

failure_route[FAILOVER] {{
    if (t_is_canceled()) {{ exit; }}
    if (t_check_status("503") || (t_branch_timeout() && !t_branch_replied())) {{
        xlog("L_NOTICE", "FAILED $ci at $du ($T_reply_code), marking it down\n");
        ds_mark_dst("ip");
        if (ds_next_dst()) {{
            xlog("L_NOTICE", "FAILOVER $ci to $du\n");
            t_on_failure("FAILOVER");
            t_relay();
            exit;
        }}
    }}
}}
"#,
        ctl = ctl.display(),
        list = dir.join("dispatcher.list").display(),
    )
}

impl Kamailio {
    /// Writes the configuration into `<dir>/kamailio/` with `destinations`
    /// (in priority order, each starting inactive: only a ping answered 2xx
    /// makes it active), checks it (`kamailio -c`) and starts Kamailio on
    /// `addr`; returns once its control socket answers.
    pub fn start(dir: &TestDir, addr: SocketAddr, destinations: &[SocketAddr]) -> Kamailio {
        let home = dir.join("kamailio");
        fs::create_dir_all(&home).expect("test dir is writable");
        let cfg = home.join("kamailio.cfg");
        // A unix socket path is limited to ~104 bytes: not in the test dir.
        let ctl = PathBuf::from(format!(
            "/tmp/callbackd-kamailio-{}-{}.ctl",
            std::process::id(),
            addr.port()
        ));
        let _ = fs::remove_file(&ctl);
        fs::write(&cfg, config(addr, &home, &ctl)).expect("test dir is writable");
        // setid uri flags priority: flags 9 = inactive + probing.
        let list: String = destinations
            .iter()
            .enumerate()
            .map(|(i, d)| format!("1 sip:{d} 9 {}\n", 100 - i))
            .collect();
        fs::write(home.join("dispatcher.list"), list).expect("test dir is writable");
        let check = Command::new("kamailio")
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("kamailio can be spawned");
        assert!(
            check.status.success(),
            "kamailio -c refuses the generated configuration:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log_path = home.join("kamailio.log");
        let out = File::create(&log_path).expect("test dir is writable");
        let err = out.try_clone().expect("file handle can be cloned");
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "8", "-Y"])
            .arg(&home)
            .arg("-P")
            .arg(home.join("kamailio.pid"))
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("kamailio can be spawned");
        let mut kamailio = Kamailio {
            child: Some(child),
            ctl,
            log_path,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while kamailio.try_list().is_err() {
            let exited = kamailio
                .child
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            assert!(
                !exited && Instant::now() < deadline,
                "kamailio did not start (exited: {exited}):\n{}",
                kamailio.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        kamailio
    }

    /// `kamcmd dispatcher.list`, parsed.
    pub fn destinations(&self) -> Vec<Destination> {
        self.try_list()
            .unwrap_or_else(|e| panic!("kamcmd dispatcher.list: {e}\n{}", self.log()))
    }

    fn try_list(&self) -> Result<Vec<Destination>, String> {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}", self.ctl.display()))
            .arg("dispatcher.list")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Waits until `dst`'s state satisfies `pred`; panics after `within`
    /// with the list and the log.
    pub fn wait_destination(
        &self,
        dst: SocketAddr,
        within: Duration,
        what: &str,
        pred: impl Fn(&Destination) -> bool,
    ) {
        let uri = format!("sip:{dst}");
        let deadline = Instant::now() + within;
        loop {
            let list = self.destinations();
            if list.iter().any(|d| d.uri == uri && pred(d)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dispatcher: {uri} not {what} after {within:?}: {list:?}\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything Kamailio logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(&self.ctl);
    }
}

/// The `URI:`/`FLAGS:` pairs of `kamcmd dispatcher.list`'s output.
pub fn parse_list(text: &str) -> Vec<Destination> {
    let mut out = Vec::new();
    let mut uri: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(u) = line.strip_prefix("URI: ") {
            uri = Some(u.trim().to_owned());
        } else if let Some(f) = line.strip_prefix("FLAGS: ")
            && let Some(uri) = uri.take()
        {
            out.push(Destination {
                uri,
                flags: f.trim().to_owned(),
            });
        }
    }
    out
}
