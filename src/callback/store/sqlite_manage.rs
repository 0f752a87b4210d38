//! [`ManageStore`] on the SQLite file.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::manage::{CallbackPatch, CallbackQuery, Changed, ManagedRow, StoredReply};
use super::sqlite::{Decode, decode_cdr, decode_row, is_plain_digits};
use super::sqlite_webhooks::{EventData, emit};
use super::{
    Creation, ManageStore, NewCallback, Registration, Source, SqliteStore, Status, StoreError,
};
use crate::callback::cdr::CdrRecord;
use crate::callback::webhook::EventKind;
use crate::callback::{CallbackId, QueueId};

/// The columns [`decode_managed`] reads.
pub(super) const COLUMNS: &str = "id, queue, number, caller_ani, called_number, priority, queued_at, \
     registered_at, ecbt_quoted_minutes, status, attempts, next_attempt_at, expires_at, \
     inbound_call_id, moved_from, customer_dialed_at, ecbt_error_ms, scheduled_for, created_by, \
     data, caller_id, source, rule_id, task, closed_reason";

/// An `idempotency_keys` row as read: hash, status, body, location, time.
type ReplyColumns = (Vec<u8>, i64, String, Option<String>, i64);

impl ManageStore for SqliteStore {
    fn create(&mut self, new: &NewCallback, extra: &Creation) -> Result<Registration, StoreError> {
        self.insert_callback(new, Some(extra))
    }

    fn get(&self, id: CallbackId) -> Result<Option<ManagedRow>, StoreError> {
        let err = self.sqlite_err("get");
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM callbacks WHERE id = ?1"))
            .map_err(&err)?;
        let mut rows = stmt.query([id.0]).map_err(&err)?;
        match rows.next().map_err(&err)? {
            Some(row) => Ok(Some(
                decode_managed(row).map_err(|e| e.into_store_error(&err))?,
            )),
            None => Ok(None),
        }
    }

    fn query(&self, q: &CallbackQuery) -> Result<Vec<ManagedRow>, StoreError> {
        let err = self.sqlite_err("query");
        // The queue list as a JSON array, read with json_each: one
        // statement whatever its length.
        let queues = q.queues.as_ref().map(|qs| {
            serde_json::Value::from(qs.iter().map(|q| q.as_str()).collect::<Vec<_>>()).to_string()
        });
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM callbacks \
                 WHERE (?1 IS NULL OR queue IN (SELECT value FROM json_each(?1))) \
                     AND (?2 IS NULL OR status = ?2) \
                     AND (?3 IS NULL OR number = ?3) \
                     AND (?4 IS NULL OR registered_at >= ?4) \
                     AND (?5 IS NULL OR registered_at < ?5) \
                     AND (?6 IS NULL OR id > ?6) \
                     AND (?8 IS NULL OR source = ?8) \
                 ORDER BY id LIMIT ?7"
            ))
            .map_err(&err)?;
        let mut rows = stmt
            .query(params![
                queues,
                q.status.map(Status::as_str),
                q.number,
                q.from.map(Timestamp::as_millisecond),
                q.to.map(Timestamp::as_millisecond),
                q.after_id,
                q.limit,
                q.source.map(Source::as_str),
            ])
            .map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_managed(row).map_err(|e| e.into_store_error(&err))?);
        }
        Ok(out)
    }

    fn cancel(&mut self, id: CallbackId) -> Result<Changed, StoreError> {
        self.change_pending(id, "cancel", Some(EventKind::Cancelled), |tx, _| {
            tx.execute(
                "UPDATE callbacks SET status = 'cancelled' WHERE id = ?1",
                [id.0],
            )?;
            Ok(None)
        })
    }

    fn cancel_by_number(
        &mut self,
        number: &str,
        queues: &[QueueId],
    ) -> Result<Vec<ManagedRow>, StoreError> {
        let (path, conn) = self.parts();
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            op: "cancel_by_number",
            source,
        };
        let queues = serde_json::Value::from(queues.iter().map(|q| q.as_str()).collect::<Vec<_>>())
            .to_string();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut out = Vec::new();
        {
            let mut stmt = tx
                .prepare(&format!(
                    "UPDATE callbacks SET status = 'cancelled' \
                     WHERE number = ?1 AND status = 'pending' \
                         AND queue IN (SELECT value FROM json_each(?2)) \
                     RETURNING {COLUMNS}"
                ))
                .map_err(err)?;
            let mut rows = stmt.query(params![number, queues]).map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                out.push(decode_managed(row).map_err(|e| e.into_store_error(err))?);
            }
        }
        out.sort_by_key(|r| r.row.id.0);
        for row in &out {
            emit(&tx, EventKind::Cancelled, row.row.id, EventData::now())
                .map_err(|e| e.into_store_error(err))?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    fn patch(&mut self, id: CallbackId, patch: &CallbackPatch) -> Result<Changed, StoreError> {
        for digits in [&patch.number, &patch.caller_id.clone().flatten()] {
            if let Some(digits) = digits
                && !is_plain_digits(digits)
            {
                return Err(StoreError::NumberNotDigits {
                    number: digits.clone(),
                });
            }
        }
        let event = patch.scheduled_for.map(|_| EventKind::Scheduled);
        self.change_pending(id, "patch", event, |tx, before| {
            if let Some(number) = &patch.number
                && *number != before.row.number
            {
                let other: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM callbacks WHERE queue = ?1 AND number = ?2 \
                             AND status IN ('pending', 'dialing') AND id <> ?3 \
                         ORDER BY id LIMIT 1",
                        params![before.row.queue.as_str(), number, id.0],
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(other) = other {
                    return Ok(Some(CallbackId(other)));
                }
            }
            let at = patch.scheduled_for.map(Timestamp::as_millisecond);
            tx.execute(
                "UPDATE callbacks SET \
                     number = coalesce(?2, number), \
                     priority = coalesce(?3, priority), \
                     scheduled_for = coalesce(?4, scheduled_for), \
                     next_attempt_at = coalesce(?4, next_attempt_at), \
                     queued_at = coalesce(?4, queued_at), \
                     caller_id = CASE WHEN ?5 THEN ?6 ELSE caller_id END \
                 WHERE id = ?1",
                params![
                    id.0,
                    patch.number,
                    patch.priority,
                    at,
                    patch.caller_id.is_some(),
                    patch.caller_id.clone().flatten()
                ],
            )?;
            Ok(None)
        })
    }

    fn created_since(&self, number: &str, since: Timestamp) -> Result<Vec<Timestamp>, StoreError> {
        let err = self.sqlite_err("created_since");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT registered_at FROM callbacks \
                 WHERE number = ?1 AND registered_at >= ?2 AND created_by IS NOT NULL \
                 ORDER BY registered_at",
            )
            .map_err(&err)?;
        let mut rows = stmt
            .query(params![number, since.as_millisecond()])
            .map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            let ms: i64 = row.get(0).map_err(&err)?;
            out.push(
                Timestamp::from_millisecond(ms).map_err(|_| StoreError::CorruptRow {
                    id: 0,
                    column: "registered_at",
                    value: ms.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    fn cdrs_of(&self, id: CallbackId) -> Result<Vec<CdrRecord>, StoreError> {
        let err = self.sqlite_err("cdrs_of");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, callback_id, inbound_call_id, leg, call_id, start_at, answer_at, \
                     end_at, outcome, sip_code, peer, redirected_from, source \
                 FROM cdr WHERE callback_id = ?1 ORDER BY start_at, id",
            )
            .map_err(&err)?;
        let mut rows = stmt.query([id.0]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_cdr(row).map_err(|e| e.into_store_error(&err))?);
        }
        Ok(out)
    }

    fn idempotent_reply(&self, actor: &str, key: &str) -> Result<Option<StoredReply>, StoreError> {
        let err = self.sqlite_err("idempotent_reply");
        let found: Option<ReplyColumns> = self
            .conn
            .query_row(
                "SELECT request_sha256, status, body, location, created_at \
                 FROM idempotency_keys WHERE actor = ?1 AND key = ?2",
                params![actor, key],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .optional()
            .map_err(&err)?;
        let Some((hash, status, body, location, created_at)) = found else {
            return Ok(None);
        };
        let corrupt = |column: &'static str, value: String| StoreError::CorruptRow {
            id: 0,
            column,
            value,
        };
        Ok(Some(StoredReply {
            request_sha256: hash
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("idempotency_keys.request_sha256", format!("{hash:?}")))?,
            status: u16::try_from(status)
                .map_err(|_| corrupt("idempotency_keys.status", status.to_string()))?,
            body,
            location,
            created_at: Timestamp::from_millisecond(created_at)
                .map_err(|_| corrupt("idempotency_keys.created_at", created_at.to_string()))?,
        }))
    }

    fn keep_reply(
        &mut self,
        actor: &str,
        key: &str,
        reply: &StoredReply,
        forget_before: Timestamp,
    ) -> Result<(), StoreError> {
        let (path, conn) = self.parts();
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            op: "keep_reply",
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "DELETE FROM idempotency_keys WHERE created_at < ?1",
            [forget_before.as_millisecond()],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT OR IGNORE INTO idempotency_keys \
                 (actor, key, request_sha256, status, body, location, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                actor,
                key,
                reply.request_sha256.as_slice(),
                reply.status,
                reply.body,
                reply.location,
                reply.created_at.as_millisecond(),
            ],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }
}

impl SqliteStore {
    /// One transaction: reads callback `id`; unless it is pending, writes
    /// nothing; else runs `change` (which may refuse with a duplicate's id)
    /// and reads the row again.
    fn change_pending(
        &mut self,
        id: CallbackId,
        op: &'static str,
        event: Option<EventKind>,
        change: impl FnOnce(&Transaction<'_>, &ManagedRow) -> rusqlite::Result<Option<CallbackId>>,
    ) -> Result<Changed, StoreError> {
        let (path, conn) = self.parts();
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            op,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let read = |tx: &Transaction<'_>| -> Result<Option<ManagedRow>, StoreError> {
            let mut stmt = tx
                .prepare(&format!("SELECT {COLUMNS} FROM callbacks WHERE id = ?1"))
                .map_err(err)?;
            let mut rows = stmt.query([id.0]).map_err(err)?;
            match rows.next().map_err(err)? {
                Some(row) => Ok(Some(
                    decode_managed(row).map_err(|e| e.into_store_error(err))?,
                )),
                None => Ok(None),
            }
        };
        let Some(before) = read(&tx)? else {
            return Ok(Changed::NotFound);
        };
        if before.row.status != Status::Pending {
            return Ok(Changed::NotPending(before.row.status));
        }
        if let Some(other) = change(&tx, &before).map_err(err)? {
            return Ok(Changed::Duplicate(other));
        }
        // Read back in the same transaction: the row is there.
        let Some(after) = read(&tx)? else {
            return Ok(Changed::NotFound);
        };
        if let Some(kind) = event {
            emit(&tx, kind, id, EventData::now()).map_err(|e| e.into_store_error(err))?;
        }
        tx.commit().map_err(err)?;
        Ok(Changed::Done {
            before: Box::new(before),
            after: Box::new(after),
        })
    }
}

pub(super) fn decode_managed(row: &rusqlite::Row<'_>) -> Result<ManagedRow, Decode> {
    let base = decode_row(row)?;
    let scheduled_for = match row.get::<_, Option<i64>>("scheduled_for")? {
        Some(ms) => Some(Timestamp::from_millisecond(ms).map_err(|_| {
            Decode::Corrupt(StoreError::CorruptRow {
                id: base.id.0,
                column: "scheduled_for",
                value: ms.to_string(),
            })
        })?),
        None => None,
    };
    Ok(ManagedRow {
        row: base,
        scheduled_for,
        created_by: row.get("created_by")?,
        data: row.get("data")?,
        ecbt_error_ms: row.get("ecbt_error_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use crate::callback::store::SqliteStore;

    crate::manage_store_suite!(SqliteStore::open_in_memory().expect("in-memory store"));

    mod tasks {
        use crate::callback::store::SqliteStore;

        crate::task_store_suite!(SqliteStore::open_in_memory().expect("in-memory store"));
    }
}
