//! [`WebhookStore`] on the SQLite file, and [`emit`]: the outbox row a
//! status change writes in its own transaction.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::sqlite::Decode;
use super::sqlite_manage::{COLUMNS, decode_managed};
use super::webhooks::{
    Delivery, DeliveryState, NewWebhook, Outgoing, TryRecord, Webhook, WebhookPatch, WebhookStore,
};
use super::{SqliteStore, StoreError};
use crate::callback::CallbackId;
use crate::callback::view::CallbackBody;
use crate::callback::webhook::{AttemptInfo, EventKind, Head, SipContext, Step, payload};

/// What an event says beyond the callback: its time (`None`: SQLite's
/// clock, for the API's changes) and the attempt it is about.
pub(super) struct EventData {
    pub(super) at: Option<Timestamp>,
    pub(super) attempt: Option<AttemptInfo>,
}

impl EventData {
    pub(super) fn at(at: Timestamp) -> EventData {
        EventData {
            at: Some(at),
            attempt: None,
        }
    }

    pub(super) fn now() -> EventData {
        EventData {
            at: None,
            attempt: None,
        }
    }
}

/// Writes event `kind` of callback `id` — inside the caller's open
/// transaction, after its change — with one pending delivery per enabled
/// subscription to `kind`; writes nothing when there is none. The payload
/// shows the callback as it now is in the transaction.
pub(super) fn emit(
    tx: &Connection,
    kind: EventKind,
    id: CallbackId,
    data: EventData,
) -> Result<(), Decode> {
    let subscribers: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM webhooks WHERE enabled = 1 \
                 AND EXISTS (SELECT 1 FROM json_each(webhooks.events) WHERE value = ?1) \
             ORDER BY id",
        )?;
        stmt.query_map([kind.as_str()], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    if subscribers.is_empty() {
        return Ok(());
    }
    let (row, sip) = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {COLUMNS}, sip_context FROM callbacks WHERE id = ?1"
        ))?;
        let mut rows = stmt.query([id.0])?;
        let Some(row) = rows.next()? else {
            // The caller changed this row in the same transaction.
            return Err(Decode::Sqlite(rusqlite::Error::QueryReturnedNoRows));
        };
        let sip = match row.get::<_, Option<String>>("sip_context")? {
            Some(text) => Some(serde_json::from_str::<SipContext>(&text).map_err(|_| {
                Decode::Corrupt(StoreError::CorruptRow {
                    id: id.0,
                    column: "sip_context",
                    value: text,
                })
            })?),
            None => None,
        };
        (decode_managed(row)?, sip)
    };
    let at = match data.at {
        Some(at) => at,
        None => {
            let ms: i64 = tx.query_row(
                "SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER)",
                [],
                |r| r.get(0),
            )?;
            Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
        }
    };
    let uid: String = tx.query_row("SELECT 'evt_' || lower(hex(randomblob(16)))", [], |r| {
        r.get(0)
    })?;
    let body = payload(
        &uid,
        kind,
        at,
        &CallbackBody::from(row),
        data.attempt.as_ref(),
        sip.as_ref(),
    );
    tx.prepare_cached(
        "INSERT INTO webhook_events (uid, type, callback_id, occurred_at, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![uid, kind.as_str(), id.0, at.as_millisecond(), body])?;
    let event = tx.last_insert_rowid();
    let mut insert =
        tx.prepare_cached("INSERT INTO webhook_deliveries (event_id, webhook_id) VALUES (?1, ?2)")?;
    for webhook in subscribers {
        insert.execute(params![event, webhook])?;
    }
    Ok(())
}

/// The 1-based number of the attempt of callback `id` that is going on now
/// (the attempts on record, plus one).
pub(super) fn current_attempt(tx: &Connection, id: CallbackId) -> rusqlite::Result<u32> {
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM attempts WHERE callback_id = ?1",
        [id.0],
        |r| r.get(0),
    )?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1))
}

const WEBHOOK_COLUMNS: &str = "id, url, events, enabled, description, created_by, created_at";

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, e.uid, e.type, e.callback_id, e.occurred_at, \
     d.state, d.tries, d.first_try_at, d.last_try_at, d.next_try_at, d.last_status, d.last_error";

impl WebhookStore for SqliteStore {
    fn create_webhook(&mut self, new: &NewWebhook) -> Result<Webhook, StoreError> {
        let err = self.sqlite_err("create_webhook");
        self.conn
            .execute(
                "INSERT INTO webhooks (url, events, secret, enabled, description, created_by, \
                     created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    new.url,
                    events_json(&new.events),
                    new.secret,
                    new.enabled,
                    new.description,
                    new.created_by,
                    new.created_at.as_millisecond(),
                ],
            )
            .map_err(&err)?;
        let id = self.conn.last_insert_rowid();
        self.webhook(id)?
            .ok_or_else(|| err(rusqlite::Error::QueryReturnedNoRows))
    }

    fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let err = self.sqlite_err("webhooks");
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"
            ))
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_webhook(row).map_err(|e| e.into_store_error(&err))?);
        }
        Ok(out)
    }

    fn webhook(&self, id: i64) -> Result<Option<Webhook>, StoreError> {
        read_webhook(&self.conn, id).map_err(|e| e.into_store_error(self.sqlite_err("webhook")))
    }

    fn patch_webhook(
        &mut self,
        id: i64,
        patch: &WebhookPatch,
    ) -> Result<Option<(Webhook, Webhook)>, StoreError> {
        let (path, conn) = self.parts();
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            op: "patch_webhook",
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let Some(before) = read_webhook(&tx, id).map_err(|e| e.into_store_error(err))? else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE webhooks SET url = coalesce(?2, url), events = coalesce(?3, events), \
                 enabled = coalesce(?4, enabled), description = coalesce(?5, description) \
             WHERE id = ?1",
            params![
                id,
                patch.url,
                patch.events.as_deref().map(events_json),
                patch.enabled,
                patch.description,
            ],
        )
        .map_err(err)?;
        let Some(after) = read_webhook(&tx, id).map_err(|e| e.into_store_error(err))? else {
            return Ok(None);
        };
        tx.commit().map_err(err)?;
        Ok(Some((before, after)))
    }

    fn delete_webhook(&mut self, id: i64) -> Result<Option<Webhook>, StoreError> {
        let (path, conn) = self.parts();
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            op: "delete_webhook",
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let Some(before) = read_webhook(&tx, id).map_err(|e| e.into_store_error(err))? else {
            return Ok(None);
        };
        // ON DELETE CASCADE takes its deliveries.
        tx.execute("DELETE FROM webhooks WHERE id = ?1", [id])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Some(before))
    }

    fn deliveries(
        &self,
        webhook: i64,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let err = self.sqlite_err("deliveries");
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                 JOIN webhook_events e ON e.id = d.event_id \
                 WHERE d.webhook_id = ?1 AND (?2 IS NULL OR d.id > ?2) \
                 ORDER BY d.id LIMIT ?3"
            ))
            .map_err(&err)?;
        let mut rows = stmt
            .query(params![webhook, after_id, limit])
            .map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_delivery(row).map_err(|e| e.into_store_error(&err))?);
        }
        Ok(out)
    }

    fn webhook_heads(&self) -> Result<Vec<Head>, StoreError> {
        let err = self.sqlite_err("webhook_heads");
        // Per subscription the lowest event id among its pending
        // deliveries: events are numbered in commit order.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT d.id, d.webhook_id, d.next_try_at FROM webhook_deliveries d \
                 JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE w.enabled = 1 AND d.state = 'pending' AND d.event_id = \
                     (SELECT min(event_id) FROM webhook_deliveries \
                      WHERE webhook_id = d.webhook_id AND state = 'pending') \
                 ORDER BY d.webhook_id",
            )
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            let delivery: i64 = row.get(0).map_err(&err)?;
            let next: Option<i64> = row.get(2).map_err(&err)?;
            out.push(Head {
                delivery,
                webhook: row.get(1).map_err(&err)?,
                next_try_at: next
                    .map(|ms| timestamp(delivery, "webhook_deliveries.next_try_at", ms))
                    .transpose()?,
            });
        }
        Ok(out)
    }

    fn outgoing(&self, id: i64) -> Result<Option<Outgoing>, StoreError> {
        let err = self.sqlite_err("outgoing");
        // The delivery as read, and its first try's raw time.
        let row = self
            .conn
            .query_row(
                "SELECT w.url, w.secret, e.uid, e.type, e.payload, d.tries, d.first_try_at \
                 FROM webhook_deliveries d \
                 JOIN webhooks w ON w.id = d.webhook_id \
                 JOIN webhook_events e ON e.id = d.event_id \
                 WHERE d.id = ?1 AND d.state = 'pending'",
                [id],
                |r| {
                    let tries: i64 = r.get(5)?;
                    let outgoing = Outgoing {
                        delivery: id,
                        url: r.get(0)?,
                        secret: r.get(1)?,
                        event_id: r.get(2)?,
                        event_type: r.get(3)?,
                        payload: r.get(4)?,
                        tries: u32::try_from(tries).unwrap_or(u32::MAX),
                        first_try_at: None,
                    };
                    Ok((outgoing, r.get::<_, Option<i64>>(6)?))
                },
            )
            .optional()
            .map_err(&err)?;
        let Some((mut outgoing, first)) = row else {
            return Ok(None);
        };
        outgoing.first_try_at = first
            .map(|ms| timestamp(id, "webhook_deliveries.first_try_at", ms))
            .transpose()?;
        Ok(Some(outgoing))
    }

    fn record_try(&mut self, id: i64, record: &TryRecord) -> Result<(), StoreError> {
        let (state, next) = match record.step {
            Step::Delivered => (DeliveryState::Delivered, None),
            Step::Retry { at } => (DeliveryState::Pending, Some(at.as_millisecond())),
            Step::GiveUp => (DeliveryState::Failed, None),
        };
        self.conn
            .execute(
                "UPDATE webhook_deliveries SET state = ?2, tries = tries + 1, \
                     first_try_at = coalesce(first_try_at, ?3), last_try_at = ?3, \
                     next_try_at = ?4, last_status = ?5, last_error = ?6 \
                 WHERE id = ?1 AND state = 'pending'",
                params![
                    id,
                    state.as_str(),
                    record.at.as_millisecond(),
                    next,
                    record.status,
                    record.error,
                ],
            )
            .map_err(self.sqlite_err("record_try"))?;
        Ok(())
    }
}

fn events_json(events: &[EventKind]) -> String {
    serde_json::Value::from(events.iter().map(|k| k.as_str()).collect::<Vec<_>>()).to_string()
}

fn timestamp(id: i64, column: &'static str, ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|_| StoreError::CorruptRow {
        id,
        column,
        value: ms.to_string(),
    })
}

fn read_webhook(conn: &Connection, id: i64) -> Result<Option<Webhook>, Decode> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1"
    ))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode_webhook(row)?)),
        None => Ok(None),
    }
}

fn decode_webhook(row: &rusqlite::Row<'_>) -> Result<Webhook, Decode> {
    let id: i64 = row.get("id")?;
    let corrupt = |column: &'static str, value: String| {
        Decode::Corrupt(StoreError::CorruptRow { id, column, value })
    };
    let events_text: String = row.get("events")?;
    let names: Vec<String> = serde_json::from_str(&events_text)
        .map_err(|_| corrupt("webhooks.events", events_text.clone()))?;
    let events = names
        .iter()
        .map(|n| EventKind::parse(n))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| corrupt("webhooks.events", events_text.clone()))?;
    let created: i64 = row.get("created_at")?;
    Ok(Webhook {
        id,
        url: row.get("url")?,
        events,
        enabled: row.get("enabled")?,
        description: row.get("description")?,
        created_by: row.get("created_by")?,
        created_at: Timestamp::from_millisecond(created)
            .map_err(|_| corrupt("webhooks.created_at", created.to_string()))?,
    })
}

fn decode_delivery(row: &rusqlite::Row<'_>) -> Result<Delivery, Decode> {
    let id: i64 = row.get(0)?;
    let corrupt = |column: &'static str, value: String| {
        Decode::Corrupt(StoreError::CorruptRow { id, column, value })
    };
    let time = |column: &'static str, ms: Option<i64>| -> Result<Option<Timestamp>, Decode> {
        ms.map(|ms| Timestamp::from_millisecond(ms).map_err(|_| corrupt(column, ms.to_string())))
            .transpose()
    };
    let state_text: String = row.get(6)?;
    let state = DeliveryState::parse(&state_text)
        .ok_or_else(|| corrupt("webhook_deliveries.state", state_text.clone()))?;
    let tries: i64 = row.get(7)?;
    let status: Option<i64> = row.get(11)?;
    Ok(Delivery {
        id,
        webhook: row.get(1)?,
        event_id: row.get(2)?,
        event_type: row.get(3)?,
        callback: CallbackId(row.get(4)?),
        occurred_at: time("webhook_events.occurred_at", Some(row.get(5)?))?
            .unwrap_or(Timestamp::UNIX_EPOCH),
        state,
        tries: u32::try_from(tries)
            .map_err(|_| corrupt("webhook_deliveries.tries", tries.to_string()))?,
        first_try_at: time("webhook_deliveries.first_try_at", row.get(8)?)?,
        last_try_at: time("webhook_deliveries.last_try_at", row.get(9)?)?,
        next_try_at: time("webhook_deliveries.next_try_at", row.get(10)?)?,
        last_status: status
            .map(|s| {
                u16::try_from(s)
                    .map_err(|_| corrupt("webhook_deliveries.last_status", s.to_string()))
            })
            .transpose()?,
        last_error: row.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::callback::scheduler::Outcome;
    use crate::callback::store::test_support::*;
    use crate::callback::store::testing::{arm_commit_failure, disarm_commit_failure};
    use crate::callback::store::{Attempt, LaunchStore, ManageStore, NextStep, Store};

    fn subscribe(store: &mut SqliteStore, events: &[EventKind]) -> Webhook {
        store
            .create_webhook(&NewWebhook {
                url: "http://127.0.0.1:9/hook".into(),
                events: events.to_vec(),
                secret: "whsec_test".into(),
                enabled: true,
                description: String::new(),
                created_by: "admin".into(),
                created_at: ts("2025-06-02T15:00:00Z"),
            })
            .unwrap()
    }

    /// The (type, payload) of every stored event, oldest first.
    fn events(store: &SqliteStore) -> Vec<(String, Value)> {
        let mut stmt = store
            .conn
            .prepare("SELECT type, payload FROM webhook_events ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            let text: String = r.get(1)?;
            Ok((r.get(0)?, serde_json::from_str(&text).unwrap()))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    fn registered_id(store: &mut SqliteStore, number: &str) -> CallbackId {
        match store
            .register(&new_cb("support", number, "2025-06-02T15:00:00Z"))
            .unwrap()
        {
            crate::callback::store::Registration::Registered(id) => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_is_stored_without_a_subscription() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let id = registered_id(&mut store, "3125550188");
        store.cancel(id).unwrap();
        assert!(events(&store).is_empty());
    }

    #[test]
    fn each_transition_writes_its_event_with_the_callback_attempt_and_sip_context() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let hook = subscribe(&mut store, &EventKind::ALL);
        let mut new = new_cb("support", "3125550188", "2025-06-02T15:00:00Z");
        new.sip_context = Some(SipContext {
            diversion: vec!["<sip:3125550100@pbx.example>;reason=no-answer".into()],
            history_info: Vec::new(),
            user_to_user: vec!["56a390f3;encoding=hex".into()],
        });
        let crate::callback::store::Registration::Registered(id) = store.register(&new).unwrap()
        else {
            panic!("registered")
        };
        let t = ts("2025-06-02T15:10:00Z");
        assert!(store.claim(id, t).unwrap());
        store
            .record_connected(id, ts("2025-06-02T15:10:20Z"), Some("alice"))
            .unwrap();
        store
            .record_attempt(
                id,
                &Attempt {
                    started_at: t,
                    ended_at: ts("2025-06-02T15:15:00Z"),
                    outcome: Outcome::Answered,
                    sip_status: Some(200),
                    agent: Some("alice".into()),
                    customer_dialed_at: None,
                },
                &NextStep::Completed,
            )
            .unwrap();
        let got = events(&store);
        let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "callback.registered",
                "callback.attempt_started",
                "callback.connected",
                "callback.completed"
            ]
        );
        let (_, registered) = &got[0];
        assert!(registered["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(registered["data"]["callback"]["id"], id.0);
        assert_eq!(registered["data"]["callback"]["status"], "pending");
        assert_eq!(
            registered["data"]["sip"]["diversion"][0],
            "<sip:3125550100@pbx.example>;reason=no-answer"
        );
        assert_eq!(
            registered["data"]["sip"]["user_to_user"][0],
            "56a390f3;encoding=hex"
        );
        assert_eq!(got[1].1["data"]["attempt"]["number"], 1);
        assert_eq!(got[1].1["data"]["callback"]["status"], "dialing");
        assert_eq!(got[2].1["data"]["attempt"]["agent"], "alice");
        assert_eq!(
            got[2].1["data"]["attempt"]["connected_at"],
            "2025-06-02T15:10:20Z"
        );
        let completed = &got[3].1;
        assert_eq!(completed["occurred_at"], "2025-06-02T15:15:00Z");
        assert_eq!(completed["data"]["callback"]["status"], "completed");
        assert_eq!(completed["data"]["attempt"]["number"], 1);
        assert_eq!(completed["data"]["attempt"]["outcome"], "answered");
        // Every event has a delivery for the subscription, in order.
        let log = store.deliveries(hook.id, None, 100).unwrap();
        assert_eq!(log.len(), 4);
        assert!(log.iter().all(|d| d.state == DeliveryState::Pending));
        assert_eq!(log[3].event_type, "callback.completed");
    }

    #[test]
    fn a_rolled_back_registration_announces_nothing() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        subscribe(&mut store, &[EventKind::Registered]);
        arm_commit_failure(&store).unwrap();
        assert!(
            store
                .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
                .is_err()
        );
        disarm_commit_failure(&store).unwrap();
        assert!(events(&store).is_empty());
        let count: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM webhook_deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 0);
    }

    #[test]
    fn subscriptions_get_only_their_types_and_heads_go_in_event_order() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let all = subscribe(&mut store, &[EventKind::Registered, EventKind::Cancelled]);
        let cancels = subscribe(&mut store, &[EventKind::Cancelled]);
        let a = registered_id(&mut store, "3125550188");
        let b = registered_id(&mut store, "3125550189");
        store.cancel(a).unwrap();
        store
            .cancel_by_number("3125550189", &[queue("support")])
            .unwrap();
        let types = |w: i64| -> Vec<(String, i64)> {
            store
                .deliveries(w, None, 100)
                .unwrap()
                .into_iter()
                .map(|d| (d.event_type, d.callback.0))
                .collect()
        };
        assert_eq!(
            types(all.id),
            [
                ("callback.registered".to_owned(), a.0),
                ("callback.registered".to_owned(), b.0),
                ("callback.cancelled".to_owned(), a.0),
                ("callback.cancelled".to_owned(), b.0),
            ]
        );
        assert_eq!(
            types(cancels.id),
            [
                ("callback.cancelled".to_owned(), a.0),
                ("callback.cancelled".to_owned(), b.0)
            ]
        );
        // The head of each subscription is its oldest pending delivery; a
        // retry keeps it the head, delivery or giving up moves it on.
        let log = store.deliveries(all.id, None, 100).unwrap();
        let head_of = |store: &SqliteStore, w: i64| {
            store
                .webhook_heads()
                .unwrap()
                .into_iter()
                .find(|h| h.webhook == w)
                .map(|h| h.delivery)
        };
        assert_eq!(head_of(&store, all.id), Some(log[0].id));
        let t = ts("2025-06-02T16:00:00Z");
        let retry_at = ts("2025-06-02T16:00:01Z");
        store
            .record_try(
                log[0].id,
                &TryRecord {
                    at: t,
                    status: Some(500),
                    error: Some("HTTP 500".into()),
                    step: Step::Retry { at: retry_at },
                },
            )
            .unwrap();
        let heads = store.webhook_heads().unwrap();
        let head = heads.iter().find(|h| h.webhook == all.id).unwrap();
        assert_eq!(
            (head.delivery, head.next_try_at),
            (log[0].id, Some(retry_at))
        );
        let outgoing = store.outgoing(log[0].id).unwrap().unwrap();
        assert_eq!((outgoing.tries, outgoing.first_try_at), (1, Some(t)));
        store
            .record_try(
                log[0].id,
                &TryRecord {
                    at: retry_at,
                    status: Some(204),
                    error: None,
                    step: Step::Delivered,
                },
            )
            .unwrap();
        assert_eq!(head_of(&store, all.id), Some(log[1].id));
        store
            .record_try(
                log[1].id,
                &TryRecord {
                    at: retry_at,
                    status: None,
                    error: Some("connection refused".into()),
                    step: Step::GiveUp,
                },
            )
            .unwrap();
        assert_eq!(head_of(&store, all.id), Some(log[2].id));
        let log = store.deliveries(all.id, None, 100).unwrap();
        assert_eq!(
            (log[0].state, log[0].tries, log[0].last_status),
            (DeliveryState::Delivered, 2, Some(204))
        );
        assert_eq!(
            (log[1].state, log[1].last_error.as_deref()),
            (DeliveryState::Failed, Some("connection refused"))
        );
        assert!(store.outgoing(log[0].id).unwrap().is_none(), "not pending");
        // A disabled subscription has no head; its deliveries wait.
        store
            .patch_webhook(
                all.id,
                &WebhookPatch {
                    enabled: Some(false),
                    ..WebhookPatch::default()
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(head_of(&store, all.id), None);
        assert!(head_of(&store, cancels.id).is_some());
        // Deleting a subscription takes its log.
        assert!(store.delete_webhook(cancels.id).unwrap().is_some());
        assert!(store.deliveries(cancels.id, None, 10).unwrap().is_empty());
        assert!(store.webhook(cancels.id).unwrap().is_none());
    }

    #[test]
    fn expiry_retry_and_recovery_are_announced() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let hook = subscribe(&mut store, &[EventKind::Scheduled, EventKind::Expired]);
        let a = registered_id(&mut store, "3125550188");
        let b = registered_id(&mut store, "3125550189");
        let t = ts("2025-06-02T15:10:00Z");
        assert!(store.claim(a, t).unwrap());
        store
            .record_attempt(
                a,
                &Attempt {
                    started_at: t,
                    ended_at: ts("2025-06-02T15:11:00Z"),
                    outcome: Outcome::Busy,
                    sip_status: Some(486),
                    agent: Some("alice".into()),
                    customer_dialed_at: None,
                },
                &NextStep::Retry {
                    at: ts("2025-06-02T15:21:00Z"),
                    task: None,
                },
            )
            .unwrap();
        assert!(store.claim(b, t).unwrap());
        store
            .recover_interrupted(
                ts("2025-06-02T15:12:00Z"),
                std::time::Duration::from_secs(60),
                crate::callback::store::Recovery::AtStart,
            )
            .unwrap();
        store.expire(ts("2025-06-03T00:00:00Z")).unwrap();
        let got: Vec<(String, i64, Value)> = store
            .deliveries(hook.id, None, 100)
            .unwrap()
            .into_iter()
            .map(|d| (d.event_type, d.callback.0, Value::Null))
            .collect();
        let kinds: Vec<(&str, i64)> = got.iter().map(|(t, c, _)| (t.as_str(), *c)).collect();
        assert_eq!(
            kinds,
            [
                ("callback.scheduled", a.0),
                ("callback.scheduled", b.0),
                ("callback.expired", a.0),
                ("callback.expired", b.0),
            ]
        );
        let payloads = events(&store);
        assert_eq!(payloads[0].1["data"]["attempt"]["outcome"], "busy");
        assert_eq!(payloads[0].1["data"]["attempt"]["sip_status"], 486);
        assert_eq!(
            payloads[0].1["data"]["callback"]["next_attempt_at"],
            "2025-06-02T15:21:00Z"
        );
        assert_eq!(payloads[1].1["data"]["attempt"]["outcome"], "interrupted");
    }
}
