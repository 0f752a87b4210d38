//! Fixtures shared by the section tests.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

pub(super) const SHIPPED: &str = include_str!("../../config.toml");

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("callbackd-config-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Creates `prompts/<name>.wav` for every prompt except `skip`.
    pub(super) fn with_prompts(skip: &[&str]) -> TempDir {
        let t = TempDir::new();
        let dir = t.0.join("prompts");
        std::fs::create_dir_all(&dir).expect("create prompts dir");
        for name in PROMPT_NAMES.iter().filter(|n| !skip.contains(n)) {
            std::fs::write(dir.join(format!("{name}.wav")), b"RIFF").expect("write prompt");
        }
        t
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "config.toml")
}

/// Parses `text`, expects an error, returns its display.
/// `config` checked against the repository's prompts.
pub(super) fn checked(config: Config) -> super::Settings {
    config
        .check(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("checked config")
}

pub(super) fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn ts(text: &str) -> jiff::Timestamp {
    text.parse().expect("test timestamp")
}

/// Two queues, the second with its own hours and a higher priority.
pub(super) const TWO_QUEUES: &str = r#"
    [org]
    timezone = "America/New_York"
    holidays = ["2026-07-03"]
    [org.hours]
    mon = "08:00-18:00"
    tue = "08:00-18:00"
    wed = "08:00-18:00"
    thu = "08:00-18:00"
    fri = "08:00-18:00"

    [[queues]]
    id = "support"
    dids = ["8005550100", "3125550100"]

    [[queues]]
    id = "sales"
    priority = 10
    offer_after_s = 30
    staffed_agents = 4
    callback_expiry_h = 48
    dids = ["8005550199"]
    [queues.hours]
    fri = "08:00-12:00"
    sat = "10:00-14:00"
"#;

/// Two queues with failover, a static and a registered agent.
pub(super) const AGENTS: &str = r#"
    [callbacks]
    max_lines = 2
    poll_interval_ms = 250
    [registrar]
    realm = "acme.example"
    min_expires_s = 30
    max_expires_s = 600
    default_expires_s = 120

    [[queues]]
    id = "support"
    retry_time_s = 5
    max_retries = 1
    failover = "sales"
    agent_ring_timeout_s = 7
    customer_ring_timeout_s = 9
    agent_cooldown_s = 0

    [[queues]]
    id = "sales"
    priority = 5

    [[agents]]
    id = "alice"
    uri = "sip:1001@127.0.0.1:5080"
    queues = ["support"]

    [[agents]]
    id = "bob"
    user = "bob"
    password = "hunter2"
    queues = ["support", "sales"]
"#;

/// `AGENTS` with `old` replaced by `new` (which must be there).
pub(super) fn agents_with(old: &str, new: &str) -> String {
    assert!(AGENTS.contains(old), "fixture has {old:?}");
    AGENTS.replacen(old, new, 1)
}
