//! [`OrganisationStore`] on the SQLite file.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::organisation::{OrgSaveError, OrganisationStore, StoredOrganisation};
use super::sqlite_accounts::insert_audit;
use super::{AuditEntry, SqliteStore, StoreError};
use crate::callback::QueueId;

impl OrganisationStore for SqliteStore {
    fn organisation(&self) -> Result<Option<StoredOrganisation>, StoreError> {
        let err = self.sqlite_err("organisation");
        let row = self
            .conn
            .query_row(
                "SELECT version, document, changed_at, changed_by FROM organisation \
                 ORDER BY version DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(&err)?;
        let Some((version, document, changed_at, changed_by)) = row else {
            return Ok(None);
        };
        let changed_at =
            jiff::Timestamp::from_millisecond(changed_at).map_err(|_| StoreError::CorruptRow {
                id: version,
                column: "organisation.changed_at",
                value: changed_at.to_string(),
            })?;
        Ok(Some(StoredOrganisation {
            version: u64::try_from(version).unwrap_or(0),
            document,
            changed_at,
            changed_by,
        }))
    }

    fn save_organisation(
        &mut self,
        base: u64,
        document: &str,
        audit: &AuditEntry,
    ) -> Result<u64, OrgSaveError> {
        let path = self.path.clone();
        let err = move |source| StoreError::Sqlite {
            path: path.clone(),
            op: "save_organisation",
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let latest: i64 = tx
            .query_row(
                "SELECT coalesce(max(version), 0) FROM organisation",
                [],
                |r| r.get(0),
            )
            .map_err(&err)?;
        let latest = u64::try_from(latest).unwrap_or(0);
        if latest != base {
            return Err(OrgSaveError::Conflict { latest });
        }
        let version = base + 1;
        tx.execute(
            "INSERT INTO organisation (version, document, changed_at, changed_by) \
             VALUES (?1, ?2, ?3, ?4)",
            params![
                i64::try_from(version).unwrap_or(i64::MAX),
                document,
                audit.change.at.as_millisecond(),
                audit.change.actor,
            ],
        )
        .map_err(&err)?;
        insert_audit(
            &tx,
            &audit.change,
            &audit.action,
            &audit.target,
            audit.before.as_ref(),
            audit.after.as_ref(),
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(version)
    }

    fn pending_by_queue(&self) -> Result<BTreeMap<QueueId, u64>, StoreError> {
        let err = self.sqlite_err("pending_by_queue");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT queue, count(*) FROM callbacks WHERE status = 'pending' GROUP BY queue",
            )
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(&err)?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let (queue, n) = row.map_err(&err)?;
            counts.insert(
                QueueId(queue.into_boxed_str()),
                u64::try_from(n).unwrap_or(0),
            );
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::store::Change;
    use crate::callback::store::test_support::*;

    fn audit(actor: &str) -> AuditEntry {
        AuditEntry {
            change: Change {
                actor: actor.into(),
                at: now(),
            },
            action: "set_organisation".into(),
            target: "organisation".into(),
            before: None,
            after: Some(serde_json::json!({"x": 1})),
        }
    }

    #[test]
    fn versions_follow_each_other_and_a_stale_base_is_refused() {
        let db = temp_db("org-versions");
        let mut store = SqliteStore::open(&db.path).unwrap();
        assert_eq!(store.organisation().unwrap(), None);
        assert_eq!(
            store
                .save_organisation(0, "[org]\nname = \"a\"\n", &audit("config.toml"))
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .save_organisation(1, "[org]\nname = \"b\"\n", &audit("ann"))
                .unwrap(),
            2
        );
        match store.save_organisation(1, "[org]\nname = \"c\"\n", &audit("bob")) {
            Err(OrgSaveError::Conflict { latest }) => assert_eq!(latest, 2),
            other => panic!("stale base accepted: {other:?}"),
        }
        let latest = store.organisation().unwrap().unwrap();
        assert_eq!(
            (
                latest.version,
                latest.document.as_str(),
                latest.changed_by.as_str()
            ),
            (2, "[org]\nname = \"b\"\n", "ann")
        );
        // Each save wrote its audit row; the refused one none.
        let audit_rows: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM audit_log WHERE action = 'set_organisation'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(audit_rows, 2);
        // The version survives reopening.
        drop(store);
        let store = SqliteStore::open(&db.path).unwrap();
        assert_eq!(store.organisation().unwrap().unwrap().version, 2);
    }
}
