//! The store thread: the callback store (SQLite, blocking IO) on a thread of
//! its own, so the core task never waits on a disk flush.
//!
//! The controller's [`StoreRequest`]s go in over a channel in order; each is
//! carried out by [`execute`] and its answer sent back to the core, which
//! feeds it to the controller. Recording purges (file IO) run here too.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::b2bua::store::{StoreReply, StoreRequest, execute};
use crate::callback::store::LaunchStore;

/// The engine's handle on the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<StoreRequest>,
}

impl StoreHandle {
    /// Queues a request; false when the thread is gone.
    pub fn send(&self, request: StoreRequest) -> bool {
        self.tx.send(request).is_ok()
    }
}

/// Starts the store thread over `store`.
pub fn spawn(
    mut store: Box<dyn LaunchStore>,
    longest_ring: Duration,
    replies: UnboundedSender<StoreReply>,
) -> std::io::Result<(StoreHandle, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<StoreRequest>();
    let thread = thread::Builder::new()
        .name("callbackd-store".into())
        .spawn(move || {
            for request in rx {
                if let StoreRequest::PurgeRecordings { dir, retention } = &request {
                    for path in purge_old_recordings(dir, *retention, SystemTime::now()) {
                        info!(path = %path.display(), "recording past retention deleted");
                    }
                    continue;
                }
                let Some(reply) = execute(store.as_mut(), longest_ring, request) else {
                    continue;
                };
                if replies.send(reply).is_err() {
                    return;
                }
            }
        })?;
    Ok((StoreHandle { tx }, thread))
}

/// Deletes the `callback-*.wav` files in `dir` last written more than
/// `retention` before `now`; returns what it deleted. Other files are left.
fn purge_old_recordings(
    dir: &std::path::Path,
    retention: Duration,
    now: std::time::SystemTime,
) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_recording = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("callback-") && n.ends_with(".wav"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > retention);
        if !(is_recording && old) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => deleted.push(path),
            Err(e) => warn!(path = %path.display(), error = %e, "recording not deleted"),
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recordings_past_retention_are_purged() {
        let dir = std::env::temp_dir().join(format!("callbackd-purge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(86_400);
        let make = |name: &str, age: Duration| {
            let path = dir.join(name);
            let file = std::fs::File::create(&path).expect("create");
            file.set_modified(now - age).expect("set mtime");
            path
        };
        let old = make("callback-1-100.wav", 31 * day);
        let recent = make("callback-2-200.wav", 2 * day);
        let other = make("notes.txt", 90 * day);
        let deleted = purge_old_recordings(&dir, 30 * day, now);
        assert_eq!(deleted, vec![old.clone()]);
        assert!(!old.exists());
        assert!(recent.exists(), "inside the retention period");
        assert!(other.exists(), "not a recording");
        assert!(purge_old_recordings(&dir.join("missing"), day, now).is_empty());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
