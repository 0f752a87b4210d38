//! Shared harness for the tests that run callbackd as a process against real
//! peers: the release binary under a generated configuration, sipp runs and
//! their statistics, tshark captures with an RTP stream analysis, port
//! allocation, tool detection and a minimal SIP OPTIONS probe.
//!
//! Conventions:
//! - Every wait is bounded; a child process is killed when its owner drops.
//! - Tests that start sipp, tshark or the engine hold [`interop_lock`]: they
//!   share the loopback interface and the CPU, and RTP pacing is measured.
//! - A test that needs a missing tool calls [`require_tools`] first: it fails
//!   under `CI=true` and skips (printing why) elsewhere.
//! - Files of a test (config, engine log, sipp statistics and errors,
//!   captures) live in a [`TestDir`] under cargo's target tmp dir; it is kept
//!   when the test fails and its path printed.
//!
//! The parts the engine's authors may need to adjust are in one place each:
//! [`config_toml`] (config key names), [`is_ready_line`],
//! [`is_call_started_line`], [`parse_dtmf_line`] and [`log_field`] (log
//! wording).

// Each test crate that includes this module uses a subset of it.
#![allow(dead_code)]

pub mod kamailio;
pub mod linphone;
pub mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the engine may take to print its ready line.
pub const ENGINE_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERM'd child may take to exit before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Debian's sipp pcaps (`sip-tester`); `pcap` in sipp's working directory
/// points here.
pub const SIPP_PCAP_DIR: &str = "/usr/share/sip-tester";

// ---------------------------------------------------------------------------
// Environment: repository, binary, tools, serialisation
// ---------------------------------------------------------------------------

/// The repository root (the crate's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The release `callbackd` binary: `$CALLBACKD_BIN` if set; otherwise
/// `cargo build --release --bin callbackd` runs once per test process (a
/// no-op when fresh) and its output is used. A failed build fails the test.
pub fn callbackd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = env::var_os("CALLBACKD_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--release", "--bin", "callbackd"])
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .expect("cargo can be spawned");
        assert!(
            out.status.success(),
            "cargo build --release --bin callbackd failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir().join("release").join("callbackd")
    })
    .clone()
}

/// Checks that every tool is available: a bare name is looked up in `PATH`,
/// an absolute path must exist. When something is missing the test fails
/// under `CI=true`, and otherwise prints why and gets `false` (skip: return
/// early).
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !tool_available(tool))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test}: missing {} (scripts/install-test-tools.sh installs them)",
        missing.join(", ")
    );
    assert!(env::var("CI").as_deref() != Ok("true"), "CI=true: {why}");
    eprintln!("SKIPPED {why}");
    false
}

/// Serialises the tests that run sipp, tshark or the engine within one test
/// process. A test that failed while holding it does not poison the others.
pub fn interop_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A per-test directory under cargo's target tmp dir, emptied at creation.
/// Removed on drop unless the test is failing, in which case it is kept and
/// its path printed for the post-mortem.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `<target tmp>/interop/<name>-<pid>`.
    pub fn new(name: &str) -> TestDir {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("interop")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("target tmp dir is writable");
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// Ports of one test, apart from every other test's in this process:
/// SIP from 15060, the engine's RTP range from 30000, sipp's media from
/// 40000, 500 apart (sipp's `[auto_media_port]` is `mp + 4·(call−1)`, so
/// 100 calls span 400 ports, all outside the engine's range).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The engine's SIP port (UDP and TCP).
    pub engine_sip: u16,
    /// sipp's SIP port (`-p`).
    pub sipp_sip: u16,
    /// The engine's RTP range, `rtp.port_min` (even).
    pub rtp_min: u16,
    /// The engine's RTP range, `rtp.port_max`.
    pub rtp_max: u16,
    /// sipp's media port (`-mp`), first of a 500-port span.
    pub sipp_media: u16,
}

impl Ports {
    /// Width of the engine's RTP range and of sipp's media span.
    pub const SPAN: u16 = 500;

    /// Takes the next free block. Blocks whose SIP ports or media bases are
    /// busy on 127.0.0.1 (another program on this machine) are passed over.
    pub fn allocate() -> Ports {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let k = NEXT.fetch_add(1, Ordering::Relaxed);
            assert!(k < 50, "no free port block left for this test process");
            let k = u16::try_from(k).expect("k < 50");
            let ports = Ports {
                engine_sip: 15060 + 10 * k,
                sipp_sip: 15065 + 10 * k,
                rtp_min: 30000 + Self::SPAN * k,
                rtp_max: 30000 + Self::SPAN * k + Self::SPAN - 1,
                sipp_media: 40000 + Self::SPAN * k,
            };
            if ports.all_free() {
                return ports;
            }
        }
    }

    /// The engine's SIP address.
    pub fn engine_sip_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.engine_sip))
    }

    fn all_free(&self) -> bool {
        let lo = Ipv4Addr::LOCALHOST;
        let udp = |port| UdpSocket::bind((lo, port)).is_ok();
        let tcp = |port| TcpListener::bind((lo, port)).is_ok();
        udp(self.engine_sip)
            && tcp(self.engine_sip)
            && udp(self.sipp_sip)
            && tcp(self.sipp_sip)
            && udp(self.rtp_min)
            && udp(self.sipp_media)
    }
}

// ---------------------------------------------------------------------------
// Engine configuration
// ---------------------------------------------------------------------------

/// The settings a test varies; [`config_toml`] turns them into the file.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The address of `sip.bind`, `sip.advertised_host` and `rtp.bind_ip`:
    /// 127.0.0.1 unless a test moves it (`::1`, a network namespace's).
    pub ip: IpAddr,
    /// `sip.bind` port on [`EngineConfig::ip`].
    pub sip_port: u16,
    /// `rtp.port_min`.
    pub rtp_min: u16,
    /// `rtp.port_max`.
    pub rtp_max: u16,
    /// `rtp.rtp_timeout_s`: a call without RTP for this long is hung up.
    pub rtp_timeout_s: u32,
    /// `prompts.dir` (absolute).
    pub prompts_dir: PathBuf,
    /// `acl.sip` entries.
    pub acl_sip: Vec<String>,
    /// `acl.agents` entries (agents' phones: REGISTER, no new calls).
    pub acl_agents: Vec<String>,
    /// `acl.rtp` entries.
    pub acl_rtp: Vec<String>,
    /// `acl.action`: "reject" (403) or "drop".
    pub acl_action: String,
    /// `call.max_duration_s`.
    pub max_duration_s: u64,
    /// `call.max_calls`; must fit the RTP range (one port pair per call, two
    /// per callback line).
    pub max_calls: u32,
    /// `call.drain_s`; the engine's default when `None`.
    pub drain_s: Option<u64>,
    /// `sip.max_message_size`; the engine's default when `None`.
    pub max_message_size: Option<u32>,
    /// `sip.t1_ms`: server transactions linger 64·T1 after their final
    /// response.
    pub t1_ms: u32,
    /// `store.path`: a relative path is resolved against the directory of
    /// the configuration file, i.e. the test's own directory, so every test
    /// has its own database.
    pub store_path: PathBuf,
    /// The `[ivr]` table.
    pub ivr: IvrConfig,
    /// `log.level`.
    pub log_level: String,
    /// `[trunk]`, `[callbacks]`, the `support` queue's dialing keys and
    /// `[[agents]]`; `None`: the shipped defaults, no agents.
    pub callbacks: Option<CallbackConfig>,
    /// `[api]` on 127.0.0.1 at this port; `None`: the API is off.
    pub api_port: Option<u16>,
    /// `org.calling_window`: when customers may be rung, in their local
    /// time; around the clock unless a test narrows it.
    pub calling_window: String,
    /// Whole tables appended to the file as they are (e.g. `[edge]`).
    pub extra_toml: String,
}

/// The dialing side of a test configuration: one queue (`support`), static
/// agents, the trunk's termination on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackConfig {
    /// `trunk.termination`: where customer INVITEs go.
    pub termination: SocketAddr,
    /// `[[agents]]`: `(id, uri)` of static agents serving `support`.
    pub agents: Vec<(String, String)>,
    /// `callbacks.poll_interval_ms`.
    pub poll_interval_ms: u64,
    /// `queues.retry_time_s`.
    pub retry_time_s: u64,
    /// `queues.max_retries`.
    pub max_retries: u32,
    /// `queues.agent_ring_timeout_s`.
    pub agent_ring_timeout_s: u64,
    /// `queues.customer_ring_timeout_s`.
    pub customer_ring_timeout_s: u64,
    /// `queues.agent_cooldown_s`.
    pub agent_cooldown_s: u64,
    /// `queues.callback_number`: the caller ID customers see.
    pub callback_number: String,
    /// `[[agents]]`: `(id, user, password)` of agents whose phones
    /// REGISTER with callbackd, serving `support`.
    pub registered_agents: Vec<(String, String, String)>,
    /// `registrar.digest_algorithms`; the shipped default when empty.
    pub digest_algorithms: Vec<String>,
}

/// The `[trunk]`, `[callbacks]`, `[[queues]]` and `[[agents]]` text of `c`.
pub fn callbacks_toml(c: &CallbackConfig) -> String {
    let mut text = format!(
        "\n[trunk]\n\
         termination = {termination}\n\
         cps_limit = 100\n\
         \n\
         [callbacks]\n\
         poll_interval_ms = {poll}\n\
         \n\
         [[queues]]\n\
         id = \"support\"\n\
         callback_number = {number}\n\
         retry_time_s = {retry}\n\
         max_retries = {max_retries}\n\
         agent_ring_timeout_s = {agent_ring}\n\
         customer_ring_timeout_s = {customer_ring}\n\
         agent_cooldown_s = {cooldown}\n",
        termination = toml_string(&c.termination.to_string()),
        poll = c.poll_interval_ms,
        number = toml_string(&c.callback_number),
        retry = c.retry_time_s,
        max_retries = c.max_retries,
        agent_ring = c.agent_ring_timeout_s,
        customer_ring = c.customer_ring_timeout_s,
        cooldown = c.agent_cooldown_s,
    );
    for (id, uri) in &c.agents {
        text.push_str(&format!(
            "\n[[agents]]\nid = {}\nuri = {}\nqueues = [\"support\"]\n",
            toml_string(id),
            toml_string(uri)
        ));
    }
    for (id, user, password) in &c.registered_agents {
        text.push_str(&format!(
            "\n[[agents]]\nid = {}\nuser = {}\npassword = {}\nqueues = [\"support\"]\n",
            toml_string(id),
            toml_string(user),
            toml_string(password)
        ));
    }
    if !c.digest_algorithms.is_empty() {
        let quoted: Vec<String> = c.digest_algorithms.iter().map(|a| toml_string(a)).collect();
        text.push_str(&format!(
            "\n[registrar]\ndigest_algorithms = [{}]\n",
            quoted.join(", ")
        ));
    }
    text
}

/// The `[ivr]` table; [`Default`] is the shipped configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvrConfig {
    /// `ivr.first_digit_timeout_s`.
    pub first_digit_timeout_s: u32,
    /// `ivr.inter_digit_timeout_s`.
    pub inter_digit_timeout_s: u32,
    /// `ivr.max_invalid`.
    pub max_invalid: u32,
    /// `ivr.announce_interval_s`.
    pub announce_interval_s: u32,
}

impl Default for IvrConfig {
    fn default() -> Self {
        IvrConfig {
            first_digit_timeout_s: 10,
            inter_digit_timeout_s: 5,
            max_invalid: 3,
            announce_interval_s: 60,
        }
    }
}

impl EngineConfig {
    /// Loopback-only settings on `ports`, the repository's prompts, ACL
    /// allowing 127.0.0.1 only with 403 for others, log level info.
    pub fn new(ports: &Ports) -> EngineConfig {
        EngineConfig {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sip_port: ports.engine_sip,
            rtp_min: ports.rtp_min,
            rtp_max: ports.rtp_max,
            rtp_timeout_s: 60,
            prompts_dir: repo_root().join("prompts"),
            acl_sip: vec!["127.0.0.1/32".into()],
            acl_agents: Vec::new(),
            acl_rtp: vec!["127.0.0.1/32".into()],
            acl_action: "reject".into(),
            max_duration_s: 120,
            max_calls: 200,
            drain_s: None,
            max_message_size: None,
            t1_ms: 500,
            store_path: PathBuf::from("callbackd.sqlite"),
            ivr: IvrConfig::default(),
            log_level: "info".into(),
            callbacks: None,
            api_port: None,
            calling_window: "00:00-24:00".into(),
            extra_toml: String::new(),
        }
    }

    /// Writes [`config_toml`] to `<dir>/<name>` and returns the path.
    pub fn write(&self, dir: &TestDir, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, config_toml(self)).expect("test dir is writable");
        path
    }
}

/// The configuration file text for `c`. The one place that knows the key
/// names of the engine's TOML schema.
pub fn config_toml(c: &EngineConfig) -> String {
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let max_message_size = c
        .max_message_size
        .map(|n| format!("max_message_size = {n}\n"))
        .unwrap_or_default();
    let callbacks = c.callbacks.as_ref().map(callbacks_toml).unwrap_or_default();
    let drain = c
        .drain_s
        .map(|s| format!("drain_s = {s}\n"))
        .unwrap_or_default();
    format!(
        "[sip]\n\
         bind = \"{sip_bind}\"\n\
         advertised_host = \"{ip}\"\n\
         t1_ms = {t1_ms}\n\
         {max_message_size}\
         \n\
         [rtp]\n\
         bind_ip = \"{ip}\"\n\
         port_min = {rtp_min}\n\
         port_max = {rtp_max}\n\
         rtp_timeout_s = {rtp_timeout_s}\n\
         \n\
         [prompts]\n\
         dir = {prompts}\n\
         \n\
         [acl]\n\
         sip = {acl_sip}\n\
         agents = {acl_agents}\n\
         rtp = {acl_rtp}\n\
         action = {action}\n\
         \n\
         [call]\n\
         max_duration_s = {max_duration_s}\n\
         max_calls = {max_calls}\n\
         {drain}\
         \n\
         [store]\n\
         path = {store}\n\
         \n\
         [org]\n\
         calling_window = {calling_window}\n\
         \n\
         [ivr]\n\
         first_digit_timeout_s = {first_digit}\n\
         inter_digit_timeout_s = {inter_digit}\n\
         max_invalid = {max_invalid}\n\
         announce_interval_s = {announce}\n\
         \n\
         [log]\n\
         level = {level}\n\
         \n\
         [api]\n\
         {api}\n\
         {callbacks}\n\
         {extra}",
        sip_bind = SocketAddr::new(c.ip, c.sip_port),
        ip = c.ip,
        rtp_min = c.rtp_min,
        rtp_max = c.rtp_max,
        rtp_timeout_s = c.rtp_timeout_s,
        prompts = toml_string(&c.prompts_dir.to_string_lossy()),
        acl_sip = list(&c.acl_sip),
        acl_agents = list(&c.acl_agents),
        calling_window = toml_string(&c.calling_window),
        extra = c.extra_toml,
        api = match c.api_port {
            Some(port) => format!("enabled = true\nbind = \"127.0.0.1:{port}\""),
            None => "enabled = false".to_owned(),
        },
        acl_rtp = list(&c.acl_rtp),
        action = toml_string(&c.acl_action),
        max_duration_s = c.max_duration_s,
        max_calls = c.max_calls,
        t1_ms = c.t1_ms,
        store = toml_string(&c.store_path.to_string_lossy()),
        first_digit = c.ivr.first_digit_timeout_s,
        inter_digit = c.ivr.inter_digit_timeout_s,
        max_invalid = c.ivr.max_invalid,
        announce = c.ivr.announce_interval_s,
        level = toml_string(&c.log_level),
    )
}

/// `text` with `line` inserted right below the `[table]` header. Panics when
/// there is no such header, so a renamed table cannot make a negative test
/// pass for the wrong reason.
pub fn insert_in_table(text: &str, table: &str, line: &str) -> String {
    let header = format!("[{table}]\n");
    let at = text
        .find(&header)
        .unwrap_or_else(|| panic!("config has no {header:?}:\n{text}"));
    let split = at + header.len();
    format!("{}{line}\n{}", &text[..split], &text[split..])
}

// ---------------------------------------------------------------------------
// Engine process and its log
// ---------------------------------------------------------------------------

/// True for the line the engine prints once its sockets are bound.
pub fn is_ready_line(line: &str) -> bool {
    line.contains("listening")
}

/// Waits until `cond` holds, or panics naming `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not after {within:?}");
        // The poll interval of a wait on a condition, not a wait by itself.
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a program listens on UDP `port` (any local address), read
/// from /proc/net/udp{,6} so the port itself is never touched; panics after
/// `within`. A sipp UAS started on another thread is then ready for calls.
pub fn wait_udp_bound(port: u16, within: Duration) {
    let bound = || {
        ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
            fs::read_to_string(table).is_ok_and(|text| {
                text.lines().skip(1).any(|line| {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|local| local.rsplit(':').next())
                        .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                        == Some(port)
                })
            })
        })
    };
    wait_until(
        within,
        &format!("nothing listens on UDP port {port}"),
        bound,
    );
}

/// True for the line the engine prints when it creates a call.
pub fn is_call_started_line(line: &str) -> bool {
    line.contains("call started")
}

/// True for a Rust panic message.
pub fn is_panic_line(line: &str) -> bool {
    line.contains("panicked at")
}

/// The value of field `key` in a tracing text line (`key=value` or
/// `key="value"`), e.g. `log_field(line, "call_id")`.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    field_value(line, key)
}

/// True when `line` carries the event `message` (tracing prints it right
/// after the target's `: `) for the call `call_id`.
pub fn is_call_event(line: &str, message: &str, call_id: &str) -> bool {
    line.contains(&format!(": {message} ")) && field_value(line, "call_id") == Some(call_id)
}

/// A received DTMF digit as the engine logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfLog {
    /// The call's SIP Call-ID.
    pub call_id: String,
    /// The digit: `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: String,
}

/// Parses a line such as `INFO call{call_id=1-42@127.0.0.1}: dtmf digit="1"`
/// or `dtmf digit=1 call_id=…`: it must mention `dtmf` and carry the
/// `digit=` and `call_id=` fields (quoted or bare, in any order).
pub fn parse_dtmf_line(line: &str) -> Option<DtmfLog> {
    if !line.to_ascii_lowercase().contains("dtmf") {
        return None;
    }
    let digit = field_value(line, "digit")?;
    let call_id = field_value(line, "call_id")?;
    Some(DtmfLog {
        call_id: call_id.to_owned(),
        digit: digit.to_owned(),
    })
}

/// A running engine: `callbackd run --config <dir>/callbackd.toml`, with
/// stdout and stderr collected line by line into memory and
/// `<dir>/engine.log`. Killed on drop.
pub struct Engine {
    child: Child,
    config: EngineConfig,
    config_path: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    log_path: PathBuf,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Engine {
    /// Writes the configuration, starts the engine and waits until it logs
    /// its ready line; fails the test with the collected log if it exits or
    /// stays silent for [`ENGINE_READY_TIMEOUT`].
    pub fn start(config: &EngineConfig, dir: &TestDir) -> Engine {
        Engine::start_wrapped(config, dir, &[])
    }

    /// [`Engine::start`] with the command line prefixed by `wrapper` (e.g.
    /// `ip netns exec NAME`, which execs the engine: the process is still
    /// the engine's). `config.toml` is named as `name` in the directory.
    pub fn start_wrapped(config: &EngineConfig, dir: &TestDir, wrapper: &[&str]) -> Engine {
        Engine::start_named(config, dir, wrapper, "callbackd.toml")
    }

    /// [`Engine::start_wrapped`] with the configuration written to
    /// `<dir>/<config_name>` and the log to `<dir>/<config_name>.log`: two
    /// engines can share a test directory (each its own `store_path`).
    pub fn start_named(
        config: &EngineConfig,
        dir: &TestDir,
        wrapper: &[&str],
        config_name: &str,
    ) -> Engine {
        let config_path = config.write(dir, config_name);
        let bin = callbackd_bin();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&bin);
                command
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let log_path = if config_name == "callbackd.toml" {
            dir.join("engine.log")
        } else {
            dir.join(&format!("{config_name}.log"))
        };
        let file = Arc::new(Mutex::new(
            File::create(&log_path).expect("test dir is writable"),
        ));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let readers = vec![
            collect_lines(stdout, Arc::clone(&log), Arc::clone(&file)),
            collect_lines(stderr, Arc::clone(&log), file),
        ];
        let mut engine = Engine {
            child,
            config: config.clone(),
            config_path,
            log,
            log_path,
            readers,
            exit: None,
        };
        engine.wait_ready(&bin);
        engine
    }

    /// The engine's SIP address.
    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.config.ip, self.config.sip_port)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The configuration file it was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The SQLite file of its callback store (`store.path`, a relative one
    /// resolved against the configuration file's directory, as the engine
    /// does).
    pub fn store_path(&self) -> PathBuf {
        let dir = self.config_path.parent().expect("config file has a parent");
        dir.join(&self.config.store_path)
    }

    /// Waits until a logged line satisfies `pred` and returns it, or `None`
    /// after `timeout` (or when the engine exited).
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = lock(&self.log).iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            if Instant::now() >= deadline || !self.is_running() {
                return None;
            }
            // Poll interval: the log is read by another thread.
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and returns at once (the engine drains its calls).
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdin(Stdio::null())
            .status();
    }

    /// Waits up to `within` for the process to exit by itself; its status,
    /// or `None` while it still runs. The log is complete once it exited.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop: SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL.
    /// Returns the exit status; the log is complete afterwards.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let status = terminate(&mut self.child, STOP_TIMEOUT);
        self.exit = Some(status);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// Every line logged so far (ANSI colours removed).
    pub fn log_lines(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// The log file, `<dir>/engine.log`.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `n` lines, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = lock(&self.log);
        let from = lines.len().saturating_sub(n);
        lines[from..].join("\n")
    }

    /// Fails the test when the log holds a panic message.
    pub fn assert_no_panic(&self) {
        let lines = lock(&self.log);
        if let Some(line) = lines.iter().find(|l| is_panic_line(l)) {
            panic!(
                "the engine panicked: {line}\n(log: {})",
                self.log_path.display()
            );
        }
    }

    fn wait_ready(&mut self, bin: &Path) {
        let deadline = Instant::now() + ENGINE_READY_TIMEOUT;
        loop {
            if lock(&self.log).iter().any(|l| is_ready_line(l)) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                panic!(
                    "{} exited ({status}) before its ready line; log:\n{}",
                    bin.display(),
                    self.log_tail(200)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} printed no ready line within {ENGINE_READY_TIMEOUT:?}; log:\n{}",
                    bin.display(),
                    self.log_tail(200)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every callback in the SQLite store at `path`, oldest first, read through
/// the engine's own [`SqliteStore`](callbackd::callback::store::SqliteStore)
/// (WAL: safe while the engine runs). Fails the test when the file is
/// missing, so "no row" cannot pass because the store was never created.
pub fn stored_callbacks(path: &Path) -> Vec<callbackd::callback::store::CallbackRow> {
    use callbackd::callback::store::{SqliteStore, Store};
    assert!(
        path.is_file(),
        "no callback store at {} (did the engine open it?)",
        path.display()
    );
    SqliteStore::open(path)
        .and_then(|store| store.list())
        .unwrap_or_else(|e| panic!("cannot read the callback store {}: {e}", path.display()))
}

/// Runs `callbackd callbacks list --config <config>` and returns its output.
pub fn callbacks_list(config: &Path) -> Output {
    Command::new(callbackd_bin())
        .args(["callbacks", "list", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("callbackd can be spawned")
}

/// Runs `callbackd check-config <path>` and returns its output.
pub fn check_config(path: &Path) -> Output {
    Command::new(callbackd_bin())
        .arg("check-config")
        .arg(path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("callbackd can be spawned")
}

// ---------------------------------------------------------------------------
// sipp
// ---------------------------------------------------------------------------

/// Which scenario sipp plays.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// A built-in one (`-sn uac`, `-sn uac_pcap`, …).
    Builtin(&'static str),
    /// A scenario file (`-sf`).
    File(PathBuf),
}

/// `tests/scenarios/<name>`.
pub fn scenario_file(name: &str) -> Scenario {
    Scenario::File(repo_root().join("tests").join("scenarios").join(name))
}

/// One sipp run, built up then [`run`](Sipp::run) in the foreground.
#[derive(Debug, Clone)]
pub struct Sipp {
    scenario: Scenario,
    remote: SocketAddr,
    ip: IpAddr,
    port: u16,
    media_port: u16,
    transport: &'static str,
    calls: u32,
    rate: u32,
    limit: u32,
    timeout_s: u32,
    extra: Vec<String>,
    wrapper: Vec<String>,
}

impl Sipp {
    /// A UAC towards `remote` from 127.0.0.1 on `ports.sipp_sip` /
    /// `ports.sipp_media`, UDP, one call at 10 calls/s, 60 s global timeout.
    pub fn uac(scenario: Scenario, remote: SocketAddr, ports: &Ports) -> Sipp {
        Sipp {
            scenario,
            remote,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: ports.sipp_sip,
            media_port: ports.sipp_media,
            transport: "u1",
            calls: 1,
            rate: 10,
            limit: 10,
            timeout_s: 60,
            extra: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Runs sipp through `wrapper` (e.g. `ip netns exec NAME`).
    pub fn wrapped(mut self, wrapper: &[String]) -> Sipp {
        self.wrapper = wrapper.to_vec();
        self
    }

    /// Local signalling and media address (`-i` and `-mi`).
    pub fn ip(mut self, ip: IpAddr) -> Sipp {
        self.ip = ip;
        self
    }

    /// Transport mode (`-t`): `u1` (UDP, one socket) or `t1` (TCP, one
    /// connection).
    pub fn transport(mut self, mode: &'static str) -> Sipp {
        self.transport = mode;
        self
    }

    /// Calls to place (`-m`), calls per second (`-r`), most at once (`-l`).
    pub fn load(mut self, calls: u32, rate: u32, limit: u32) -> Sipp {
        self.calls = calls;
        self.rate = rate;
        self.limit = limit;
        self
    }

    /// Global timeout in seconds (`-timeout`, with `-timeout_error`).
    pub fn timeout_s(mut self, seconds: u32) -> Sipp {
        self.timeout_s = seconds;
        self
    }

    /// Injection file (`-inf`): `[field0]`… of each call.
    pub fn inf(self, path: &Path) -> Sipp {
        self.arg("-inf").arg(&path.display().to_string())
    }

    /// One more raw argument.
    pub fn arg(mut self, arg: &str) -> Sipp {
        self.extra.push(arg.to_owned());
        self
    }

    /// The full argument list.
    pub fn args(&self, dir: &Path) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        match &self.scenario {
            Scenario::Builtin(name) => args.extend(["-sn".into(), (*name).to_owned()]),
            Scenario::File(path) => args.extend(["-sf".into(), path.display().to_string()]),
        }
        let ip = self.ip.to_string();
        let s = |v: &dyn ToString| v.to_string();
        args.extend([
            "-i".into(),
            ip.clone(),
            "-mi".into(),
            ip,
            "-p".into(),
            s(&self.port),
            "-mp".into(),
            s(&self.media_port),
            "-t".into(),
            self.transport.into(),
            "-m".into(),
            s(&self.calls),
            "-r".into(),
            s(&self.rate),
            "-l".into(),
            s(&self.limit),
            "-timeout".into(),
            format!("{}s", self.timeout_s),
            "-timeout_error".into(),
            "-trace_stat".into(),
            "-stf".into(),
            dir.join("stat.csv").display().to_string(),
            "-fd".into(),
            "1".into(),
            "-trace_err".into(),
            "-error_file".into(),
            dir.join("errors.log").display().to_string(),
            "-nostdin".into(),
        ]);
        args.extend(self.extra.iter().cloned());
        args.push(self.remote.to_string());
        args
    }

    /// Runs sipp in `<dir>/<name>` (with `pcap` linked to the Debian pcaps)
    /// and collects its exit status, statistics and error log. sipp is
    /// killed, failing the test, if it outlives its own timeout by 30 s.
    pub fn run(&self, dir: &TestDir, name: &str) -> SippRun {
        let work = dir.join(name);
        fs::create_dir_all(&work).expect("test dir is writable");
        let link = work.join("pcap");
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(SIPP_PCAP_DIR, &link).expect("symlink in test dir");
        }
        let args = self.args(&work);
        let command = format!("sipp {}", args.join(" "));
        eprintln!("{command}");
        let screen = File::create(work.join("screen.txt")).expect("test dir is writable");
        let stderr = File::create(work.join("stderr.txt")).expect("test dir is writable");
        let mut sipp = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut sipp = Command::new(program);
                sipp.args(rest).arg("sipp");
                sipp
            }
            None => Command::new("sipp"),
        };
        let mut child = sipp
            .args(&args)
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(screen)
            .stderr(stderr)
            .spawn()
            .expect("sipp can be spawned");
        let pid = child.id();
        let limit = Duration::from_secs(u64::from(self.timeout_s) + 30);
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait on sipp") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{command}\nstill running after {limit:?}; killed");
            }
            thread::sleep(Duration::from_millis(50));
        };
        let read = |file: &str| fs::read_to_string(work.join(file)).unwrap_or_default();
        SippRun {
            command,
            pid,
            status,
            stats: parse_stat_csv(&read("stat.csv")),
            errors: read("errors.log"),
            stderr: read("stderr.txt"),
            screen: read("screen.txt"),
        }
    }
}

impl SippRun {
    /// The Call-ID sipp gave its call number `n` (1-based), from its
    /// default `-cid_str` `%u-%p@%s`.
    pub fn call_id(&self, n: u32, ip: IpAddr) -> String {
        format!("{n}-{}@{ip}", self.pid)
    }
}

/// Writes a sipp injection file `<dir>/<name>`: `SEQUENTIAL`, then one row
/// per call (call `n` takes row `n − 1`), fields `;`-separated.
pub fn write_inf(dir: &TestDir, name: &str, rows: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::from("SEQUENTIAL\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    fs::write(&path, text).expect("test dir is writable");
    path
}

/// What one sipp run left behind.
#[derive(Debug)]
pub struct SippRun {
    /// The command line, for messages.
    pub command: String,
    /// sipp's process id: its Call-IDs are `<call number>-<pid>@<ip>`.
    pub pid: u32,
    /// sipp's exit status: 0 when every call passed.
    pub status: ExitStatus,
    /// The last row of the `-stf` statistics file, or why it is unusable.
    pub stats: Result<SippStats, String>,
    /// The `-error_file` contents (unexpected messages, retransmissions…).
    pub errors: String,
    /// sipp's stderr.
    pub stderr: String,
    /// sipp's screen output (stdout).
    pub screen: String,
}

/// Cumulative counters from the last row of a sipp `-trace_stat` file.
#[derive(Debug, Clone, Default)]
pub struct SippStats {
    /// `TotalCallCreated`.
    pub total_calls: u64,
    /// `SuccessfulCall(C)`.
    pub successful: u64,
    /// `FailedCall(C)`.
    pub failed: u64,
    /// `FailedMaxUDPRetrans(C)`.
    pub failed_max_udp_retrans: u64,
    /// `FailedUnexpectedMessage(C)`.
    pub failed_unexpected: u64,
    /// `FailedCallRejected(C)`.
    pub failed_rejected: u64,
    /// `FailedTimeoutOnRecv(C)`.
    pub failed_timeout_on_recv: u64,
    /// `FailedTcpConnect(C)`.
    pub failed_tcp_connect: u64,
    /// `FailedTcpClosed(C)`.
    pub failed_tcp_closed: u64,
    /// `OutOfCallMsgs(C)`: messages matching no call.
    pub out_of_call: u64,
    /// `DeadCallMsgs(C)`: messages for calls already ended.
    pub dead_call: u64,
    /// `Retransmissions(C)`.
    pub retransmissions: u64,
    /// `Warnings(C)`.
    pub warnings: u64,
    /// `FatalErrors(C)`.
    pub fatal_errors: u64,
    /// Every column of the last row by header name.
    pub columns: BTreeMap<String, String>,
}

impl SippStats {
    /// A column of the last row by its header name.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.columns.get(column).map(String::as_str)
    }
}

/// Parses a sipp `-trace_stat` file: `;`-separated, a header row, then one
/// row per dump; the last row holds the final cumulative counters.
pub fn parse_stat_csv(text: &str) -> Result<SippStats, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("statistics file is empty or missing")?
        .split(';')
        .collect();
    let last = lines.next_back().ok_or("statistics file has no data row")?;
    let columns: BTreeMap<String, String> = header
        .iter()
        .zip(last.split(';'))
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| ((*name).to_owned(), value.trim().to_owned()))
        .collect();
    let count = |name: &str| -> Result<u64, String> {
        let value = columns
            .get(name)
            .ok_or_else(|| format!("statistics file lacks column {name}"))?;
        value
            .parse()
            .map_err(|_| format!("column {name}: {value:?} is not a count"))
    };
    Ok(SippStats {
        total_calls: count("TotalCallCreated")?,
        successful: count("SuccessfulCall(C)")?,
        failed: count("FailedCall(C)")?,
        failed_max_udp_retrans: count("FailedMaxUDPRetrans(C)")?,
        failed_unexpected: count("FailedUnexpectedMessage(C)")?,
        failed_rejected: count("FailedCallRejected(C)")?,
        failed_timeout_on_recv: count("FailedTimeoutOnRecv(C)")?,
        failed_tcp_connect: count("FailedTcpConnect(C)")?,
        failed_tcp_closed: count("FailedTcpClosed(C)")?,
        out_of_call: count("OutOfCallMsgs(C)")?,
        dead_call: count("DeadCallMsgs(C)")?,
        retransmissions: count("Retransmissions(C)")?,
        warnings: count("Warnings(C)")?,
        fatal_errors: count("FatalErrors(C)")?,
        columns,
    })
}

/// A clean run of `calls` calls: exit status 0, `calls` successful, none
/// failed, no retransmission, no out-of-call or dead-call message. Fails
/// the test with the statistics and sipp's error log otherwise.
pub fn assert_clean(run: &SippRun, calls: u64) {
    let mut problems = Vec::new();
    if !run.status.success() {
        problems.push(format!("sipp {}", run.status));
    }
    match &run.stats {
        Err(why) => problems.push(why.clone()),
        Ok(s) => {
            let checks = [
                ("SuccessfulCall(C)", s.successful, calls),
                ("FailedCall(C)", s.failed, 0),
                ("Retransmissions(C)", s.retransmissions, 0),
                ("OutOfCallMsgs(C)", s.out_of_call, 0),
                ("DeadCallMsgs(C)", s.dead_call, 0),
            ];
            for (name, got, want) in checks {
                if got != want {
                    problems.push(format!("{name} = {got}, expected {want}"));
                }
            }
        }
    }
    if problems.is_empty() {
        eprintln!("sipp clean: {calls} calls successful, none failed or retransmitted");
        return;
    }
    let failures = match &run.stats {
        Ok(s) => s
            .columns
            .iter()
            .filter(|(k, v)| k.starts_with("Failed") && k.ends_with("(C)") && *v != "0")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => String::new(),
    };
    panic!(
        "{}\nsipp run not clean: {}\nfailure counters: {failures}\n\
         --- sipp error file (first 20000 bytes) ---\n{}\n--- sipp stderr ---\n{}\n\
         --- sipp screen (last 3000 bytes) ---\n{}",
        run.command,
        problems.join("; "),
        head(&run.errors, 20_000),
        run.stderr,
        tail(&run.screen, 3_000),
    );
}

// ---------------------------------------------------------------------------
// baresip
// ---------------------------------------------------------------------------

/// A baresip softphone (Debian's 1.0.0), headless: no sound device
/// (`aubridge` loops what it hears back as its microphone), one codec, keys
/// pressed through its `cons` module (every UDP datagram's characters are
/// key presses; in a call a digit key sends an RFC 4733 telephone-event).
/// Either it places one call ([`Baresip::dial`]) or it is an agent's phone
/// that answers by itself ([`Baresip::agent`]). Killed on drop.
pub struct Baresip {
    child: Option<Child>,
    keys: UdpSocket,
    cons: SocketAddr,
    out_path: PathBuf,
}

impl Baresip {
    /// Writes a configuration into `<dir>/baresip/` and starts baresip
    /// dialling `sip:service@<target>` as `sip:<user>@127.0.0.1`, PCMU only.
    /// SIP on `ports.sipp_sip` (TLS takes the port above it), the key
    /// console on `ports.sipp_sip + 2`, RTP within `ports.sipp_media`'s span.
    /// baresip quits by itself after 90 s.
    pub fn dial(dir: &TestDir, ports: &Ports, target: SocketAddr, user: &str) -> Baresip {
        let account = format!("<sip:{user}@127.0.0.1>;regint=0;audio_codecs=PCMU/8000/1");
        Baresip::start(
            dir,
            ports,
            &account,
            Some(&format!("/dial sip:service@{target}")),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[],
        )
    }

    /// Starts baresip as an agent's phone that answers every call at once
    /// (`answermode=auto`), PCMA only, listening on `ports.sipp_sip`. It
    /// REGISTERs as `sip:<user>@<registrar>` with digest `password`, every
    /// 300 s. Debian's baresip 1.0.0 (libre 1.1.0) gives up on a 401 with
    /// any `WWW-Authenticate` naming an algorithm it does not know
    /// ("Register: Function not implemented"), even when an MD5 challenge
    /// comes first: the registrar must offer MD5 alone for it
    /// (`registrar.digest_algorithms = ["MD5"]`). Files, ports and the 90 s limit as
    /// for [`Baresip::dial`].
    pub fn agent(
        dir: &TestDir,
        ports: &Ports,
        user: &str,
        registrar: SocketAddr,
        password: &str,
    ) -> Baresip {
        let account = format!(
            "<sip:{user}@{registrar}>;auth_pass={password};answermode=auto;regint=300;\
             audio_codecs=PCMA/8000/1"
        );
        Baresip::start(
            dir,
            ports,
            &account,
            None,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[],
        )
    }

    /// [`Baresip::agent`] on address `ip` (SIP and RTP), its command line
    /// prefixed by `wrapper` (e.g. `ip netns exec NAME`: a phone inside a
    /// network namespace). Its key console stays on the namespace's own
    /// loopback, out of reach: stop it with [`Baresip::kill`].
    pub fn agent_at(
        dir: &TestDir,
        ports: &Ports,
        ip: IpAddr,
        wrapper: &[&str],
        user: &str,
        registrar: SocketAddr,
        password: &str,
    ) -> Baresip {
        let account = format!(
            "<sip:{user}@{registrar}>;auth_pass={password};answermode=auto;regint=300;\
             audio_codecs=PCMA/8000/1"
        );
        Baresip::start(dir, ports, &account, None, ip, wrapper)
    }

    fn start(
        dir: &TestDir,
        ports: &Ports,
        account: &str,
        command: Option<&str>,
        ip: IpAddr,
        wrapper: &[&str],
    ) -> Baresip {
        let conf = dir.join("baresip");
        fs::create_dir_all(&conf).expect("test dir is writable");
        let cons = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.sipp_sip + 2));
        let config = format!(
            "poll_method\tepoll\n\
             call_local_timeout\t30\n\
             call_max_calls\t1\n\
             sip_listen\t{listen}\n\
             net_interface\t{ip}\n\
             audio_player\taubridge,x\n\
             audio_source\taubridge,x\n\
             audio_alert\taubridge,x\n\
             rtp_ports\t{rtp_min}-{rtp_max}\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\tg711.so\n\
             module\taubridge.so\n\
             module\tcons.so\n\
             module_tmp\taccount.so\n\
             module_app\tmenu.so\n\
             cons_listen\t{cons}\n",
            listen = SocketAddr::new(ip, ports.sipp_sip),
            rtp_min = ports.sipp_media,
            rtp_max = ports.sipp_media + 99,
        );
        fs::write(conf.join("config"), config).expect("test dir is writable");
        fs::write(conf.join("accounts"), format!("{account}\n")).expect("test dir is writable");
        fs::write(conf.join("contacts"), "").expect("test dir is writable");
        let out_path = dir.join("baresip.out");
        let out = File::create(&out_path).expect("test dir is writable");
        let err = out.try_clone().expect("file handle can be cloned");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("baresip");
                cmd
            }
            None => Command::new("baresip"),
        };
        cmd.arg("-f").arg(&conf);
        if let Some(command) = command {
            cmd.arg("-e").arg(command);
        }
        let child = cmd
            .args(["-t", "90"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("baresip can be spawned");
        let keys = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP on loopback");
        Baresip {
            child: Some(child),
            keys,
            cons,
            out_path,
        }
    }

    /// Presses each key of `keys`, `gap` apart (after each one).
    pub fn keys(&self, keys: &str, gap: Duration) {
        for key in keys.chars() {
            let mut buf = [0u8; 4];
            self.keys
                .send_to(key.encode_utf8(&mut buf).as_bytes(), self.cons)
                .expect("loopback accepts the datagram");
            thread::sleep(gap);
        }
    }

    /// Everything baresip printed so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    /// Waits until the output contains `text`; false after `timeout` or
    /// when baresip exited.
    pub fn wait_output(&mut self, timeout: Duration, text: &str) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(text) {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() >= deadline {
                return self.output().contains(text);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills baresip at once and returns its output.
    pub fn kill(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.output()
    }

    /// Quits (key `q`), killing baresip if it is still there after 5 s, and
    /// returns its output.
    pub fn quit(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = self.keys.send_to(b"q", self.cons);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.output()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// tshark capture and RTP analysis
// ---------------------------------------------------------------------------

/// A running `tshark -i lo` capture of a UDP port range into a pcapng file.
/// Killed on drop if not stopped.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    stderr_path: PathBuf,
}

impl Capture {
    /// Starts capturing UDP on loopback where either port is in
    /// `first..=last`, writing `<dir>/<name>.pcapng`, and returns once tshark
    /// reports it is capturing.
    pub fn start(dir: &TestDir, name: &str, first: u16, last: u16) -> Capture {
        Capture::start_filter(dir, name, &format!("udp portrange {first}-{last}"))
    }

    /// Starts capturing on loopback what the capture filter `bpf` selects
    /// (e.g. `udp port 15060 or udp portrange 30000-30499`), writing
    /// `<dir>/<name>.pcapng`, and returns once tshark reports it is
    /// capturing.
    pub fn start_filter(dir: &TestDir, name: &str, bpf: &str) -> Capture {
        Capture::start_on(dir, name, &[], "lo", bpf)
    }

    /// [`Capture::start_filter`] on interface `iface`, tshark run through
    /// `wrapper` (e.g. `ip netns exec NAME` for an interface inside a
    /// namespace).
    pub fn start_on(
        dir: &TestDir,
        name: &str,
        wrapper: &[String],
        iface: &str,
        bpf: &str,
    ) -> Capture {
        let file = dir.join(&format!("{name}.pcapng"));
        let stderr_path = dir.join(&format!("{name}.tshark.txt"));
        let stderr = File::create(&stderr_path).expect("test dir is writable");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg("tshark");
                command
            }
            None => Command::new("tshark"),
        };
        let child = command
            .args(["-i", iface, "-q", "-w"])
            .arg(&file)
            .args(["-f", bpf])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("tshark can be spawned");
        let mut capture = Capture {
            child: Some(child),
            file,
            stderr_path,
        };
        capture.wait_capturing();
        capture
    }

    /// Stops tshark (SIGTERM, so it finishes the file) and returns the file.
    pub fn stop(mut self) -> PathBuf {
        // Let packets still in flight on loopback reach the capture.
        thread::sleep(Duration::from_millis(300));
        if let Some(mut child) = self.child.take() {
            let status = terminate(&mut child, STOP_TIMEOUT);
            assert!(
                self.file.is_file(),
                "tshark ({status}) left no capture file; stderr:\n{}",
                fs::read_to_string(&self.stderr_path).unwrap_or_default()
            );
        }
        self.file.clone()
    }

    fn wait_capturing(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = fs::read_to_string(&self.stderr_path).unwrap_or_default();
            if text.contains("Capturing on") {
                // tshark prints this as dumpcap starts; give the filter a moment.
                thread::sleep(Duration::from_millis(300));
                return;
            }
            let child = self.child.as_mut().expect("capture not stopped");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tshark exited ({status}) before capturing:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "tshark did not start capturing within 10 s:\n{text}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One RTP packet from a capture.
#[derive(Debug, Clone)]
pub struct RtpPacket {
    /// Capture time, nanoseconds since the Unix epoch.
    pub time_ns: i128,
    /// Source address.
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// Every RTP (version 2) packet in `pcap` on a UDP port in `first..=last`,
/// in capture order, decoded by tshark.
pub fn read_rtp(pcap: &Path, first: u16, last: u16) -> Vec<RtpPacket> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-d", &format!("udp.port=={first}-{last},rtp")])
        .args(["-Y", "rtp.version==2", "-T", "fields", "-E", "separator=/t"])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
        ])
        .args(["-e", "ip.dst", "-e", "udp.dstport", "-e", "rtp.p_type"])
        .args(["-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.ssrc"])
        .args(["-e", "rtp.payload"])
        .stdin(Stdio::null())
        .output()
        .expect("tshark can be spawned");
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| parse_rtp_fields(l).unwrap_or_else(|| panic!("unexpected tshark line {l:?}")))
        .collect()
}

/// One UDP datagram from a capture.
#[derive(Debug, Clone)]
pub struct UdpPacket {
    /// Capture time, nanoseconds since the Unix epoch.
    pub time_ns: i128,
    /// Source address.
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Every UDP datagram in `pcap` matching the display filter `filter` (e.g.
/// `udp.port==15060` for the engine's SIP), in capture order.
pub fn read_udp(pcap: &Path, filter: &str) -> Vec<UdpPacket> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", filter, "-T", "fields", "-E", "separator=/t"])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
        ])
        .args(["-e", "ip.dst", "-e", "udp.dstport", "-e", "udp.payload"])
        .stdin(Stdio::null())
        .output()
        .expect("tshark can be spawned");
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| parse_udp_fields(l).unwrap_or_else(|| panic!("unexpected tshark line {l:?}")))
        .collect()
}

/// Writes a classic pcap file (Ethernet, IPv4, UDP 127.0.0.1 → 127.0.0.1)
/// of `packets` RTP packets 20 ms apart: payload type 8 (PCMA), 160 bytes
/// of a `hz` sine each, one SSRC, sequence and timestamp counting up — the
/// kind of file sipp's `play_pcap_audio` replays. Its audio differs from
/// every prompt and from sipp's `g711a.pcap`, so a capture shows where it
/// went.
pub fn write_tone_pcap(path: &Path, hz: f64, packets: u16) {
    use callbackd::media::g711::Law;
    let mut out = Vec::new();
    // Global header: magic, version 2.4, UTC offset, accuracy, snaplen,
    // link type 1 (Ethernet).
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let ssrc: u32 = 0x7e57_0001;
    for i in 0..packets {
        let mut rtp = vec![0x80, 8];
        rtp.extend_from_slice(&i.to_be_bytes());
        rtp.extend_from_slice(&(u32::from(i) * 160).to_be_bytes());
        rtp.extend_from_slice(&ssrc.to_be_bytes());
        for n in 0..160u32 {
            let t = f64::from(u32::from(i) * 160 + n) / 8000.0;
            let sample = (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
            rtp.push(Law::Alaw.encode(sample));
        }
        let udp_len = u16::try_from(8 + rtp.len()).expect("small packet");
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + usize::from(ip_len));
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00]);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&ip_len.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).expect("folded");
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let micros = u32::from(i) * 20_000;
        out.extend_from_slice(&(1_700_000_000 + micros / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(micros % 1_000_000).to_le_bytes());
        let len = u32::try_from(frame.len()).expect("small frame");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&frame);
    }
    fs::write(path, out).expect("test dir is writable");
}

/// One RTP stream: the packets of one SSRC from one source address.
#[derive(Debug, Clone)]
pub struct RtpStream {
    /// Source address.
    pub src: SocketAddr,
    /// SSRC.
    pub ssrc: u32,
    /// The packetization the stream is measured against.
    pub ptime_ms: u32,
    /// Destinations seen.
    pub dst: BTreeSet<SocketAddr>,
    /// Packet count.
    pub packets: usize,
    /// Payload types seen.
    pub payload_types: BTreeSet<u8>,
    /// Packets whose sequence number is not the previous one + 1.
    pub seq_breaks: usize,
    /// Packets whose timestamp is not the previous one + ptime·8.
    pub ts_breaks: usize,
    /// Distinct byte values over all payloads.
    pub distinct_payload_bytes: usize,
    /// Arrival gaps between consecutive packets, nanoseconds.
    pub gaps_ns: Vec<i128>,
}

impl RtpStream {
    /// Real audio rather than a constant (silence) or near-constant payload.
    pub fn is_real_audio(&self) -> bool {
        self.distinct_payload_bytes > 16
    }
}

/// Groups the packets `keep` selects into streams by (source, SSRC) and
/// measures each against a G.711 clock of `ptime_ms` per packet (8 samples
/// per ms).
pub fn rtp_streams(
    packets: &[RtpPacket],
    ptime_ms: u32,
    keep: impl Fn(&RtpPacket) -> bool,
) -> Vec<RtpStream> {
    struct Acc {
        stream: RtpStream,
        bytes: [bool; 256],
        last: Option<(i128, u16, u32)>,
    }
    let ts_step = ptime_ms * 8;
    let mut streams: BTreeMap<(SocketAddr, u32), Acc> = BTreeMap::new();
    for p in packets.iter().filter(|p| keep(p)) {
        let acc = streams.entry((p.src, p.ssrc)).or_insert_with(|| Acc {
            stream: RtpStream {
                src: p.src,
                ssrc: p.ssrc,
                ptime_ms,
                dst: BTreeSet::new(),
                packets: 0,
                payload_types: BTreeSet::new(),
                seq_breaks: 0,
                ts_breaks: 0,
                distinct_payload_bytes: 0,
                gaps_ns: Vec::new(),
            },
            bytes: [false; 256],
            last: None,
        });
        let s = &mut acc.stream;
        s.dst.insert(p.dst);
        s.packets += 1;
        s.payload_types.insert(p.pt);
        for &b in &p.payload {
            acc.bytes[usize::from(b)] = true;
        }
        if let Some((time, seq, ts)) = acc.last {
            s.gaps_ns.push(p.time_ns - time);
            if p.seq != seq.wrapping_add(1) {
                s.seq_breaks += 1;
            }
            if p.ts != ts.wrapping_add(ts_step) {
                s.ts_breaks += 1;
            }
        }
        acc.last = Some((p.time_ns, p.seq, p.ts));
    }
    streams
        .into_values()
        .map(|mut acc| {
            acc.stream.distinct_payload_bytes = acc.bytes.iter().filter(|&&b| b).count();
            acc.stream
        })
        .collect()
}

/// The 99th percentile over every stream of |gap − ptime|, in ms; `None`
/// when there is no gap at all.
pub fn gap_deviation_p99_ms(streams: &[RtpStream]) -> Option<f64> {
    gap_deviation_ms(streams, 99)
}

/// The `pct`th percentile (nearest rank) over every stream of
/// |gap − ptime|, in ms; `None` when there is no gap at all.
pub fn gap_deviation_ms(streams: &[RtpStream], pct: usize) -> Option<f64> {
    let mut deviations: Vec<i128> = streams
        .iter()
        .flat_map(|s| {
            let ptime_ns = i128::from(s.ptime_ms) * 1_000_000;
            s.gaps_ns.iter().map(move |g| (g - ptime_ns).abs())
        })
        .collect();
    if deviations.is_empty() {
        return None;
    }
    deviations.sort_unstable();
    // Nearest-rank percentile: the smallest value at or above pct % of them.
    let rank = (deviations.len() * pct).div_ceil(100).max(1);
    Some(deviations[rank - 1] as f64 / 1e6)
}

/// Every stream carries only payload type `pt`, real audio, sequence +1
/// and timestamp +ptime·8 per packet, at least `min_packets` packets; and
/// packets go out at the ptime (as given to [`rtp_streams`]), not at half
/// or twice it: the median |gap − ptime| is under a quarter of the ptime, a
/// bound a busy machine does not reach. The jitter (p99) is printed, not
/// asserted: a measurement, not a test. Fails the test naming the offending
/// streams otherwise.
pub fn assert_paced_audio(streams: &[RtpStream], pt: u8, min_packets: usize) {
    let mut bad = Vec::new();
    for s in streams {
        let mut why = Vec::new();
        if s.payload_types.iter().ne([pt].iter()) {
            why.push(format!("payload types {:?}", s.payload_types));
        }
        if !s.is_real_audio() {
            why.push(format!(
                "only {} distinct payload byte values",
                s.distinct_payload_bytes
            ));
        }
        if s.seq_breaks > 0 {
            why.push(format!("{} sequence breaks", s.seq_breaks));
        }
        if s.ts_breaks > 0 {
            why.push(format!(
                "{} timestamp steps other than {}",
                s.ts_breaks,
                s.ptime_ms * 8
            ));
        }
        if s.packets < min_packets {
            why.push(format!(
                "{} packets, expected at least {min_packets}",
                s.packets
            ));
        }
        if !why.is_empty() {
            bad.push(format!(
                "{} ssrc {:#010x}: {}",
                s.src,
                s.ssrc,
                why.join(", ")
            ));
        }
    }
    let p99 = gap_deviation_p99_ms(streams);
    let packets: usize = streams.iter().map(|s| s.packets).sum();
    println!(
        "pacing: {} streams, {packets} packets, p99 |gap - {} ms| = {}",
        streams.len(),
        streams.first().map_or(0, |s| s.ptime_ms),
        p99.map_or_else(|| "n/a".to_string(), |ms| format!("{ms:.3} ms"))
    );
    let ptime_ms = f64::from(streams.first().map_or(0, |s| s.ptime_ms));
    match gap_deviation_ms(streams, 50) {
        Some(ms) if ms <= ptime_ms / 4.0 => {}
        Some(ms) => bad.push(format!(
            "median |gap - ptime| = {ms:.3} ms, limit {} ms",
            ptime_ms / 4.0
        )),
        None => bad.push("no inter-packet gap at all".into()),
    }
    assert!(
        bad.is_empty(),
        "{} of {} streams (or their pacing) are wrong:\n{}",
        bad.len(),
        streams.len(),
        bad.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

// ---------------------------------------------------------------------------
// SIP probe
// ---------------------------------------------------------------------------

/// An OPTIONS request to `target` as sent from `local` over `transport`
/// (`"UDP"` or `"TCP"`).
pub fn options_request(transport: &str, local: SocketAddr, target: SocketAddr, id: &str) -> String {
    format!(
        "OPTIONS sip:ping@{target} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK-{id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag=probe-{id}\r\n\
         To: <sip:ping@{target}>\r\n\
         Call-ID: {id}@probe\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The status code of a SIP response (`SIP/2.0 200 OK…` → 200).
pub fn status_code(message: &[u8]) -> Option<u16> {
    let rest = message.strip_prefix(b"SIP/2.0 ")?;
    let code = rest.get(..3)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Sends an OPTIONS over UDP from a fresh socket, retransmitting every
/// 500 ms for 4 s, and returns the first final response's status code for
/// that Call-ID.
pub fn udp_options(target: SocketAddr, id: &str) -> Result<u16, String> {
    udp_options_from(IpAddr::V4(Ipv4Addr::LOCALHOST), target, id)
}

/// [`udp_options`] from a socket on `source` (another loopback address).
pub fn udp_options_from(source: IpAddr, target: SocketAddr, id: &str) -> Result<u16, String> {
    let socket = UdpSocket::bind((source, 0)).map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let request = options_request("UDP", local, target, id);
    let call_id = format!("Call-ID: {id}@probe");
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        socket
            .send_to(request.as_bytes(), target)
            .map_err(|e| e.to_string())?;
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                break;
            };
            let reply = &buf[..n];
            let mentions_call = String::from_utf8_lossy(reply).contains(&call_id);
            match status_code(reply) {
                Some(code) if code >= 200 && mentions_call => return Ok(code),
                _ => {}
            }
        }
    }
    Err(format!(
        "no final response to OPTIONS {id} from {target} within 4 s"
    ))
}

/// Sends an OPTIONS over a new TCP connection and returns the status code
/// of the first final response within 4 s.
pub fn tcp_options(target: SocketAddr, id: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
        .map_err(|e| format!("connect {target}: {e}"))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let request = options_request("TCP", local, target, id);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "connection closed; received {:?}",
                    lossy(&received)
                ));
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
        // Responses are framed by the blank line (OPTIONS replies here carry
        // no body we need); skip provisional ones.
        while let Some(end) = find(&received, b"\r\n\r\n") {
            let message: Vec<u8> = received.drain(..end + 4).collect();
            if let Some(code) = status_code(&message).filter(|c| *c >= 200) {
                return Ok(code);
            }
        }
    }
    Err(format!(
        "no final response to OPTIONS {id} over TCP within 4 s"
    ))
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

fn tool_available(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    env::var_os("PATH").is_some_and(|path| {
        env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(tool)).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `source` line by line into `lines` and `file`, ANSI codes removed.
fn collect_lines(
    source: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    file: Arc<Mutex<File>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = strip_ansi(&String::from_utf8_lossy(&raw))
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            let _ = writeln!(lock(&file), "{line}");
            lock(&lines).push(line);
        }
    })
}

/// SIGTERM (through `kill`, no libc needed), wait up to `grace`, then
/// SIGKILL. Returns the exit status.
fn terminate(child: &mut Child, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdin(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "pid {} ignored SIGTERM for {grace:?}; killing it",
        child.id()
    );
    let _ = child.kill();
    child.wait().expect("wait on a killed child")
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // CSI: ESC [ parameters… final byte in '@'..='~'.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The value of `key=value` in a tracing text line: the key must start a
/// token (after a space, `{`, `,` or the line start); the value ends at
/// whitespace, `}` or `,` and loses surrounding quotes.
fn field_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=");
    let mut from = 0;
    while let Some(pos) = line[from..].find(&needle) {
        let at = from + pos;
        let starts_token = line[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || c == '{' || c == ',' || c == ':');
        if starts_token {
            let rest = &line[at + needle.len()..];
            let value = match rest.strip_prefix('"') {
                Some(quoted) => &quoted[..quoted.find('"')?],
                None => {
                    let end = rest
                        .find(|c: char| c.is_whitespace() || c == '}' || c == ',')
                        .unwrap_or(rest.len());
                    &rest[..end]
                }
            };
            return (!value.is_empty()).then_some(value);
        }
        from = at + needle.len();
    }
    None
}

fn parse_rtp_fields(line: &str) -> Option<RtpPacket> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 9 {
        return None;
    }
    let (secs, frac) = f[0].split_once('.').unwrap_or((f[0], "0"));
    let frac_ns = format!("{frac:0<9}");
    let time_ns =
        secs.parse::<i128>().ok()? * 1_000_000_000 + frac_ns.get(..9)?.parse::<i128>().ok()?;
    let addr = |ip: &str, port: &str| -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
    };
    let ssrc = f[8].trim_start_matches("0x");
    let payload_hex: String = f
        .get(9)
        .unwrap_or(&"")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let payload = (0..payload_hex.len() / 2)
        .map(|i| u8::from_str_radix(&payload_hex[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(RtpPacket {
        time_ns,
        src: addr(f[1], f[2])?,
        dst: addr(f[3], f[4])?,
        pt: f[5].parse().ok()?,
        seq: f[6].parse().ok()?,
        ts: f[7].parse().ok()?,
        ssrc: u32::from_str_radix(ssrc, 16).ok()?,
        payload,
    })
}

fn parse_udp_fields(line: &str) -> Option<UdpPacket> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 5 {
        return None;
    }
    let (secs, frac) = f[0].split_once('.').unwrap_or((f[0], "0"));
    let frac_ns = format!("{frac:0<9}");
    let time_ns =
        secs.parse::<i128>().ok()? * 1_000_000_000 + frac_ns.get(..9)?.parse::<i128>().ok()?;
    let addr = |ip: &str, port: &str| -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
    };
    let hex: String = f
        .get(5)
        .unwrap_or(&"")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let payload = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(UdpPacket {
        time_ns,
        src: addr(f[1], f[2])?,
        dst: addr(f[3], f[4])?,
        payload,
    })
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn head(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// `method path` with a bearer token (and a JSON body) to the admin API on
/// 127.0.0.1:`port` (HTTP/1.1, `Connection: close`), retrying the connect
/// while the engine process starts (bounded): the status and the body.
pub fn api_request(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, String) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(Instant::now() < deadline, "the API on {addr}: {e}");
                // The engine is another process: try again shortly.
                thread::sleep(Duration::from_millis(50));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("the answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns `parse_stat_csv` requires, in sipp 3.6.1's order.
    const STAT_COLUMNS: &[&str] = &[
        "TotalCallCreated",
        "SuccessfulCall(C)",
        "FailedCall(C)",
        "FailedMaxUDPRetrans(C)",
        "FailedTcpConnect(C)",
        "FailedTcpClosed(C)",
        "FailedUnexpectedMessage(C)",
        "FailedCallRejected(C)",
        "FailedTimeoutOnRecv(C)",
        "OutOfCallMsgs(C)",
        "DeadCallMsgs(C)",
        "Retransmissions(C)",
        "Warnings(C)",
        "FatalErrors(C)",
    ];

    fn stat_file(rows: &[&[u64]]) -> String {
        // sipp ends every row with a ';'.
        let mut text = format!("StartTime;{};\n", STAT_COLUMNS.join(";"));
        for row in rows {
            let cells: Vec<String> = row.iter().map(u64::to_string).collect();
            text.push_str(&format!(
                "2026-11-21\t10:32:29.848553;{};\n",
                cells.join(";")
            ));
        }
        text
    }

    #[test]
    fn stat_csv_takes_the_last_row() {
        let text = stat_file(&[
            &[49, 40, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            &[100, 97, 3, 1, 0, 0, 2, 0, 0, 4, 5, 6, 0, 0],
        ]);
        let s = parse_stat_csv(&text).expect("well-formed file");
        assert_eq!(
            (
                s.total_calls,
                s.successful,
                s.failed,
                s.failed_max_udp_retrans
            ),
            (100, 97, 3, 1)
        );
        assert_eq!(
            (
                s.out_of_call,
                s.dead_call,
                s.retransmissions,
                s.failed_unexpected
            ),
            (4, 5, 6, 2)
        );
        assert_eq!(s.get("StartTime"), Some("2026-11-21\t10:32:29.848553"));
    }

    #[test]
    fn stat_csv_rejects_header_only() {
        assert!(parse_stat_csv(&stat_file(&[])).is_err());
        assert!(parse_stat_csv("").is_err());
    }

    #[test]
    fn stat_csv_rejects_missing_column() {
        let text = stat_file(&[&[1; 14]]).replace("Retransmissions(C)", "Retrans");
        let err = parse_stat_csv(&text).expect_err("column renamed");
        assert!(err.contains("Retransmissions(C)"), "{err}");
    }

    #[test]
    fn stat_csv_rejects_non_numeric_count() {
        let text = stat_file(&[&[1; 14]]).replacen(";1;", ";x;", 1);
        assert!(parse_stat_csv(&text).is_err());
    }

    #[test]
    fn dtmf_line_in_span_or_event_fields() {
        let span = "2026-11-21T10:00:00Z  INFO call{call_id=1-42@127.0.0.1}: callbackd::engine: dtmf digit=\"1\"";
        let bare =
            "2026-11-21T10:00:00Z  INFO callbackd::engine: dtmf digit=# call_id=\"7-42@127.0.0.1\"";
        assert_eq!(
            parse_dtmf_line(span),
            Some(DtmfLog {
                call_id: "1-42@127.0.0.1".into(),
                digit: "1".into()
            })
        );
        assert_eq!(
            parse_dtmf_line(bare),
            Some(DtmfLog {
                call_id: "7-42@127.0.0.1".into(),
                digit: "#".into()
            })
        );
    }

    #[test]
    fn dtmf_line_rejects_other_fields_and_lines() {
        assert_eq!(parse_dtmf_line("INFO dtmf digits=12 call_id=x"), None);
        assert_eq!(parse_dtmf_line("INFO dtmf last_digit=1 call_id=x"), None);
        assert_eq!(parse_dtmf_line("INFO dtmf digit=1"), None);
        assert_eq!(parse_dtmf_line("INFO key digit=1 call_id=x"), None);
    }

    #[test]
    fn ansi_colours_are_removed() {
        let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[1mcall\u{1b}[0m\u{1b}[1m{\u{1b}[0m\
            \u{1b}[3mcall_id\u{1b}[0m\u{1b}[2m=\u{1b}[0m9-1@h\u{1b}[1m}\u{1b}[0m: dtmf \
            \u{1b}[3mdigit\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"1\"";
        let plain = strip_ansi(coloured);
        assert_eq!(plain, " INFO call{call_id=9-1@h}: dtmf digit=\"1\"");
        assert!(parse_dtmf_line(&plain).is_some());
    }

    #[test]
    fn tshark_rtp_line_parses() {
        let line = "1027664343.298086000\t127.0.0.1\t30000\t127.0.0.1\t40004\t8\t65535\t480\t0xdee0ee8f\td5d4ff";
        let p = parse_rtp_fields(line).expect("well-formed line");
        assert_eq!(p.time_ns, 1_027_664_343_298_086_000);
        assert_eq!(p.src, SocketAddr::from(([127, 0, 0, 1], 30000)));
        assert_eq!(p.dst.port(), 40004);
        assert_eq!((p.pt, p.seq, p.ts, p.ssrc), (8, 65535, 480, 0xdee0_ee8f));
        assert_eq!(p.payload, vec![0xd5, 0xd4, 0xff]);
        assert!(parse_rtp_fields("1.0\t127.0.0.1\tx").is_none());
    }

    fn packet(ms: i128, seq: u16, ts: u32, payload: u8) -> RtpPacket {
        RtpPacket {
            time_ns: ms * 1_000_000,
            src: SocketAddr::from(([127, 0, 0, 1], 30000)),
            dst: SocketAddr::from(([127, 0, 0, 1], 40000)),
            pt: 8,
            seq,
            ts,
            ssrc: 7,
            payload: vec![payload, payload.wrapping_add(1)],
        }
    }

    #[test]
    fn streams_count_sequence_and_timestamp_breaks_across_wrap() {
        let packets = [
            packet(0, 65534, u32::MAX - 159, 0),
            packet(20, 65535, 0, 2),
            packet(40, 0, 160, 4),
            packet(61, 2, 320, 6),
            packet(80, 3, 800, 8),
        ];
        let streams = rtp_streams(&packets, 20, |_| true);
        assert_eq!(streams.len(), 1);
        let s = &streams[0];
        assert_eq!((s.packets, s.seq_breaks, s.ts_breaks), (5, 1, 1));
        assert_eq!(
            s.gaps_ns,
            vec![20_000_000, 20_000_000, 21_000_000, 19_000_000]
        );
        assert_eq!(s.distinct_payload_bytes, 10);
        assert!(!s.is_real_audio());
    }

    #[test]
    fn p99_is_nearest_rank_over_all_streams() {
        // 200 gaps, `late` of them 5 ms late: the 198th smallest is the p99.
        let gaps = |late: i128| {
            let mut t = 0;
            let packets: Vec<RtpPacket> = (0..=200)
                .map(|i| {
                    if i > 0 {
                        t += if i > 200 - late { 25 } else { 20 };
                    }
                    packet(t, 0, 0, 0)
                })
                .collect();
            rtp_streams(&packets, 20, |_| true)
        };
        assert_eq!(gaps(3)[0].gaps_ns.len(), 200);
        assert_eq!(gap_deviation_p99_ms(&gaps(3)), Some(5.0));
        assert_eq!(gap_deviation_p99_ms(&gaps(2)), Some(0.0));
        assert_eq!(gap_deviation_p99_ms(&[]), None);
    }

    #[test]
    fn config_text_is_valid_toml_with_the_given_values() {
        let ports = Ports {
            engine_sip: 15060,
            sipp_sip: 15065,
            rtp_min: 30000,
            rtp_max: 30499,
            sipp_media: 40000,
        };
        let mut config = EngineConfig::new(&ports);
        config.prompts_dir = PathBuf::from("/a \"b\"\\c");
        config.max_message_size = Some(4096);
        let table: toml::Table = toml::from_str(&config_toml(&config)).expect("valid TOML");
        assert_eq!(table["sip"]["bind"].as_str(), Some("127.0.0.1:15060"));
        assert_eq!(table["sip"]["max_message_size"].as_integer(), Some(4096));
        assert_eq!(table["rtp"]["port_max"].as_integer(), Some(30499));
        assert_eq!(table["prompts"]["dir"].as_str(), Some("/a \"b\"\\c"));
        assert_eq!(table["acl"]["sip"][0].as_str(), Some("127.0.0.1/32"));
        assert_eq!(table["sip"]["t1_ms"].as_integer(), Some(500));
        assert_eq!(table["rtp"]["rtp_timeout_s"].as_integer(), Some(60));
        assert_eq!(table["store"]["path"].as_str(), Some("callbackd.sqlite"));
        assert_eq!(table["org"]["calling_window"].as_str(), Some("00:00-24:00"));
        assert_eq!(table["ivr"]["first_digit_timeout_s"].as_integer(), Some(10));
        assert_eq!(table["ivr"]["inter_digit_timeout_s"].as_integer(), Some(5));
        assert_eq!(table["ivr"]["max_invalid"].as_integer(), Some(3));
        assert_eq!(table["ivr"]["announce_interval_s"].as_integer(), Some(60));
    }

    #[test]
    fn callbacks_text_is_a_valid_engine_config() {
        let ports = Ports {
            engine_sip: 15060,
            sipp_sip: 15065,
            rtp_min: 30000,
            rtp_max: 30499,
            sipp_media: 40000,
        };
        let mut config = EngineConfig::new(&ports);
        config.callbacks = Some(CallbackConfig {
            termination: SocketAddr::from((Ipv4Addr::LOCALHOST, 15075)),
            agents: vec![("alice".into(), "sip:alice@127.0.0.1:15085".into())],
            poll_interval_ms: 200,
            retry_time_s: 2,
            max_retries: 1,
            agent_ring_timeout_s: 3,
            customer_ring_timeout_s: 4,
            agent_cooldown_s: 5,
            callback_number: "3125550100".into(),
            registered_agents: Vec::new(),
            digest_algorithms: Vec::new(),
        });
        let parsed = callbackd::config::Config::from_toml_str(&config_toml(&config), "t.toml")
            .expect("the engine accepts the test configuration");
        assert_eq!(parsed.trunk.termination, "127.0.0.1:15075");
        assert_eq!(parsed.callbacks.poll_interval_ms, 200);
        let queue = &parsed.queues[0];
        assert_eq!(queue.id.as_str(), "support");
        assert_eq!(queue.callback_number, "3125550100");
        assert_eq!(
            (queue.retry_time_s, queue.max_retries),
            (2, 1),
            "retry keys"
        );
        assert_eq!(
            (
                queue.agent_ring_timeout_s,
                queue.customer_ring_timeout_s,
                queue.agent_cooldown_s
            ),
            (3, 4, 5)
        );
        assert_eq!(parsed.agents.len(), 1);
        assert_eq!(
            parsed.agents[0].uri.as_deref(),
            Some("sip:alice@127.0.0.1:15085")
        );
    }

    #[test]
    fn log_field_reads_call_events() {
        let line = "2026-11-21T11:07:49Z  INFO callbackd::b2bua::calls: returned to the queue \
            call_id=1-17529@127.0.0.1 queue=support position=Some(1)";
        assert!(is_call_event(
            line,
            "returned to the queue",
            "1-17529@127.0.0.1"
        ));
        assert!(!is_call_event(
            line,
            "returned to the queue",
            "1-17529@127.0.0"
        ));
        assert!(!is_call_event(line, "call ended", "1-17529@127.0.0.1"));
        assert_eq!(log_field(line, "position"), Some("Some(1)"));
        assert_eq!(log_field(line, "queue"), Some("support"));
    }

    #[test]
    fn insert_in_table_puts_the_line_under_the_header() {
        let text = "[sip]\nbind = \"x\"\n\n[rtp]\nport_min = 2\n";
        let out = insert_in_table(text, "rtp", "typo = 1");
        assert_eq!(
            out,
            "[sip]\nbind = \"x\"\n\n[rtp]\ntypo = 1\nport_min = 2\n"
        );
    }

    #[test]
    #[should_panic(expected = "config has no")]
    fn insert_in_table_rejects_unknown_table() {
        insert_in_table("[sip]\n", "media", "x = 1");
    }

    #[test]
    fn options_status_line_parses() {
        assert_eq!(status_code(b"SIP/2.0 200 OK\r\n\r\n"), Some(200));
        assert_eq!(status_code(b"SIP/2.0 4"), None);
        assert_eq!(status_code(b"OPTIONS sip:x SIP/2.0\r\n"), None);
    }
}
