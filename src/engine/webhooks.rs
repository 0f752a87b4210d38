//! The webhook delivery worker: a tokio task with its own store connection
//! that posts the outbox's pending deliveries (issue 11 point 5).
//!
//! Each round it reads the heads (per enabled subscription, its oldest
//! pending delivery), posts the due ones at once — one per subscription, so
//! a subscription's events go out in order — records every try with its
//! next step ([`RetryPolicy::after_try`]), then sleeps until the earliest
//! retry or the poll interval. Which head is due, the signature and the
//! schedule are the pure functions of [`crate::callback::webhook`].
//!
//! Delivery is at least once: a process stopped between a receiver's 2xx
//! and the record of it posts that event again after a restart, with the
//! same event id (receivers de-duplicate on `Callbackd-Event-Id`).
//!
//! HTTP: reqwest (hyper underneath) with rustls and the Mozilla root
//! certificates (webpki-roots), so `https://` receivers work on any
//! machine; redirects are not followed (a 3xx is a failed try).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::callback::store::{Outgoing, SqliteStore, StoreError, TryRecord, WebhookStore};
use crate::callback::webhook::{
    self, EVENT_ID_HEADER, EVENT_TYPE_HEADER, RetryPolicy, SIGNATURE_HEADER, Step,
};
use crate::config::WebhooksConfig;

/// How the worker delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The retry schedule.
    pub policy: RetryPolicy,
    /// The longest one POST may take.
    pub timeout: Duration,
    /// The longest sleep between two looks at the outbox.
    pub poll: Duration,
}

impl From<&WebhooksConfig> for WebhookSettings {
    fn from(c: &WebhooksConfig) -> WebhookSettings {
        WebhookSettings {
            policy: RetryPolicy {
                initial: Duration::from_millis(c.retry_initial_ms),
                max_delay: Duration::from_secs(c.retry_max_s),
                max_age: Duration::from_secs(c.max_age_s),
            },
            timeout: c.timeout(),
            poll: c.poll_interval(),
        }
    }
}

/// The running worker.
#[derive(Debug)]
pub struct WebhookWorker {
    task: JoinHandle<()>,
}

impl WebhookWorker {
    /// Starts the worker on the store file at `path` (its own connection).
    pub fn start(path: PathBuf, settings: WebhookSettings) -> WebhookWorker {
        WebhookWorker::start_observed(path, settings, |_| {})
    }

    /// [`WebhookWorker::start`], telling `observe` the outcome of every
    /// try (the binary counts them in `/metrics`).
    pub fn start_observed(
        path: PathBuf,
        settings: WebhookSettings,
        observe: impl Fn(&Step) + Send + Sync + 'static,
    ) -> WebhookWorker {
        WebhookWorker {
            task: tokio::spawn(run(path, settings, Box::new(observe))),
        }
    }

    /// Stops the worker; a try in flight is abandoned and made again by
    /// the next process (its delivery is still pending).
    pub fn stop(self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<SqliteStore>>;

/// Told the outcome of every try.
type Observer = Box<dyn Fn(&Step) + Send + Sync>;

async fn run(path: PathBuf, settings: WebhookSettings, observe: Observer) {
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "callbackd/",
            env!("CARGO_PKG_VERSION"),
            " webhooks"
        ))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "webhooks: no HTTP client; nothing will be delivered");
            return;
        }
    };
    let store = loop {
        let p = path.clone();
        match tokio::task::spawn_blocking(move || SqliteStore::open(&p)).await {
            Ok(Ok(store)) => break Arc::new(Mutex::new(store)),
            Ok(Err(e)) => warn!(error = %e, "webhooks: store not opened; trying again"),
            Err(e) => warn!(error = %e, "webhooks: store not opened; trying again"),
        }
        tokio::time::sleep(settings.poll).await;
    };
    info!(store = %path.display(), "webhook delivery worker started");
    loop {
        let wake = match round(&store, &client, &settings, &observe).await {
            Ok(wake) => wake,
            Err(e) => {
                warn!(error = %e, "webhooks: store error; trying again");
                None
            }
        };
        let mut sleep = settings.poll;
        if let Some(at) = wake {
            let until = at.duration_since(Timestamp::now());
            let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
            sleep = sleep.min(until);
        }
        tokio::time::sleep(sleep).await;
    }
}

/// One look at the outbox: posts every due head, records the tries; the
/// earliest time a waiting head is due.
async fn round(
    store: &Shared,
    client: &reqwest::Client,
    settings: &WebhookSettings,
    observe: &Observer,
) -> Result<Option<Timestamp>, StoreError> {
    let heads = with_store(store, |s| s.webhook_heads()).await?;
    let (ready, wake) = webhook::due(&heads, Timestamp::now());
    if ready.is_empty() {
        return Ok(wake);
    }
    let ids: Vec<i64> = ready.iter().map(|h| h.delivery).collect();
    let outgoing = with_store(store, move |s| {
        let mut out = Vec::new();
        for id in ids {
            if let Some(o) = s.outgoing(id)? {
                out.push(o);
            }
        }
        Ok(out)
    })
    .await?;
    let mut posts = JoinSet::new();
    for o in outgoing {
        let client = client.clone();
        posts.spawn(async move {
            let at = Timestamp::now();
            let answer = post(&client, &o, at).await;
            (o, at, answer)
        });
    }
    let mut records = Vec::new();
    while let Some(joined) = posts.join_next().await {
        let Ok((o, at, answer)) = joined else {
            continue;
        };
        let (status, error) = match answer {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (Some(status), Some(format!("HTTP {status}"))),
            Err(e) => (None, Some(e)),
        };
        let ok = error.is_none();
        let first = o.first_try_at.unwrap_or(at);
        let step = settings
            .policy
            .after_try(ok, o.tries.saturating_add(1), first, at);
        observe(&step);
        match step {
            Step::Delivered => debug!(event = %o.event_id, url = %o.url, "webhook delivered"),
            Step::Retry { at: next } => info!(
                event = %o.event_id,
                url = %o.url,
                error = error.as_deref().unwrap_or(""),
                next = %next,
                "webhook try failed; will retry"
            ),
            Step::GiveUp => warn!(
                event = %o.event_id,
                url = %o.url,
                error = error.as_deref().unwrap_or(""),
                "webhook delivery failed for good"
            ),
        }
        records.push((
            o.delivery,
            TryRecord {
                at,
                status,
                error,
                step,
            },
        ));
    }
    with_store(store, move |s| {
        for (id, record) in &records {
            s.record_try(*id, record)?;
        }
        Ok(())
    })
    .await?;
    // Delivered heads make room for the next event at once.
    Ok(Some(Timestamp::now()))
}

/// Posts `o`, signed at `at`: the HTTP status, or why there was none.
async fn post(client: &reqwest::Client, o: &Outgoing, at: Timestamp) -> Result<u16, String> {
    let signature = webhook::sign(o.secret.as_bytes(), at.as_second(), o.payload.as_bytes());
    let response = client
        .post(&o.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, &o.event_id)
        .header(EVENT_TYPE_HEADER, &o.event_type)
        .header(SIGNATURE_HEADER, signature)
        .body(o.payload.clone())
        .send()
        .await
        .map_err(|e| error_text(&e))?;
    Ok(response.status().as_u16())
}

/// A reqwest error with its causes (`error sending request: … connection
/// refused`), since the top line alone rarely says what went wrong.
fn error_text(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn with_store<T, F>(store: &Shared, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
    .await
    .unwrap_or_else(|e| {
        Err(StoreError::Sqlite {
            path: PathBuf::from("<webhooks>"),
            op: "webhooks",
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
                Some(format!("store task failed: {e}")),
            ),
        })
    })
}
