//! `[store]` and `[callbacks]`: where callback requests are kept, and the
//! launcher's limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Fault, Invalid, fail, in_range};

/// `[store]`: the durable store of callback requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file; relative to the configuration file's directory (see
    /// [`Config::store_path`](super::Config::store_path)).
    pub path: PathBuf,
}

impl StoreConfig {
    /// The `[store]` value rules.
    pub(super) fn check(&self) -> Result<(), Fault> {
        if self.path.as_os_str().is_empty() {
            return fail("store.path", Invalid::EmptyPath);
        }
        Ok(())
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            path: PathBuf::from("callbackd.sqlite"),
        }
    }
}

/// `[callbacks]`: the launcher's limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Most callback calls at once (issue 4: shipped 15).
    pub max_lines: u32,
    /// How often due callbacks are looked up, milliseconds.
    pub poll_interval_ms: u64,
    /// Where call recordings go; relative to the configuration's directory.
    pub recordings_dir: PathBuf,
    /// Recordings older than this many days are deleted.
    pub recording_retention_days: u64,
    /// Most callbacks `POST /v1/callbacks` creates for one number in any
    /// 24 hours (the per-target cap); over it → 429 with `Retry-After`.
    pub api_max_per_number_per_day: u32,
}

impl CallbacksConfig {
    /// The look-up interval as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The recordings directory, resolved against `base_dir`.
    pub fn recordings_dir(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(&self.recordings_dir)
    }

    /// How long recordings are kept.
    pub fn recording_retention(&self) -> Duration {
        Duration::from_secs(self.recording_retention_days.saturating_mul(86_400))
    }

    /// The `[callbacks]` value rules, in file order.
    pub(super) fn check(&self) -> Result<(), Fault> {
        in_range("callbacks.max_lines", self.max_lines.into(), 1..=MAX_LINES)?;
        in_range(
            "callbacks.poll_interval_ms",
            self.poll_interval_ms,
            100..=60_000,
        )?;
        in_range(
            "callbacks.recording_retention_days",
            self.recording_retention_days,
            1..=3650,
        )?;
        in_range(
            "callbacks.api_max_per_number_per_day",
            self.api_max_per_number_per_day.into(),
            1..=1000,
        )?;
        if self.recordings_dir.as_os_str().is_empty() {
            return fail("callbacks.recordings_dir", Invalid::EmptyValue);
        }
        Ok(())
    }
}

impl Default for CallbacksConfig {
    fn default() -> CallbacksConfig {
        CallbacksConfig {
            max_lines: 15,
            poll_interval_ms: 1000,
            recordings_dir: PathBuf::from("recordings"),
            recording_retention_days: 30,
            api_max_per_number_per_day: 3,
        }
    }
}

/// Most concurrent callback calls `[callbacks] max_lines` may allow.
const MAX_LINES: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::*;

    #[test]
    fn rejects_api_cap_out_of_range() {
        let e = error("[callbacks]\napi_max_per_number_per_day = 0\n");
        assert!(
            e.starts_with("config.toml: callbacks.api_max_per_number_per_day:"),
            "{e}"
        );
    }

    #[test]
    fn rejects_empty_store_path() {
        let e = error("[store]\npath = \"\"\n");
        assert_eq!(e, "config.toml: store.path: must not be empty");
    }

    #[test]
    fn store_path_resolves_against_the_config_directory() {
        let c = Config::default();
        assert_eq!(
            c.store_path(Path::new("/etc/callbackd")),
            Path::new("/etc/callbackd/callbackd.sqlite")
        );
        let c = parse("[store]\npath = \"/var/lib/callbackd/cb.sqlite\"\n").expect("absolute");
        assert_eq!(
            c.store_path(Path::new("/etc/callbackd")),
            Path::new("/var/lib/callbackd/cb.sqlite")
        );
    }

    #[test]
    fn rejects_max_lines_out_of_range() {
        let e = error("[callbacks]\nmax_lines = 0\n");
        assert_eq!(
            e,
            "config.toml: callbacks.max_lines: 0 is outside 1..=10000"
        );
        let e = error("[callbacks]\nmax_lines = 10001\n");
        assert_eq!(
            e,
            "config.toml: callbacks.max_lines: 10001 is outside 1..=10000"
        );
    }

    #[test]
    fn rejects_recording_retention_out_of_range_and_empty_dir() {
        let e = error("[callbacks]\nrecording_retention_days = 0\n");
        assert_eq!(
            e,
            "config.toml: callbacks.recording_retention_days: 0 is outside 1..=3650"
        );
        let e = error("[callbacks]\nrecordings_dir = \"\"\n");
        assert!(
            e.starts_with("config.toml: callbacks.recordings_dir: "),
            "{e}"
        );
        let c = parse("[[queues]]\nid = \"support\"\nrecording = true\nrecording_notice = false\n")
            .expect("recording keys");
        assert!(c.queues[0].recording && !c.queues[0].recording_notice);
    }

    #[test]
    fn rejects_poll_interval_out_of_range() {
        let e = error("[callbacks]\npoll_interval_ms = 99\n");
        assert_eq!(
            e,
            "config.toml: callbacks.poll_interval_ms: 99 is outside 100..=60000"
        );
        let e = error("[callbacks]\npoll_interval_ms = 60001\n");
        assert_eq!(
            e,
            "config.toml: callbacks.poll_interval_ms: 60001 is outside 100..=60000"
        );
    }
}
