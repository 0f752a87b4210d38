//! [`AccountStore`] on [`SqliteStore`]: every change is one `BEGIN
//! IMMEDIATE` transaction that reads the object, changes it, and appends its
//! audit row (before/after as JSON), so that a check and its write cannot be
//! split by another writer and the log holds exactly the committed changes.

use std::collections::BTreeSet;
use std::path::Path;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::json;

use crate::callback::QueueId;

use super::StoreError;
use super::accounts::{
    AccountError, AccountStore, AuditEntry, AuditQuery, AuditRow, Authentication, Change, NewToken,
    NewUser, Principal, Role, TokenInfo, Unit, UnitPatch, User, UserPatch, check_name,
};
use super::sqlite::SqliteStore;

/// `last_used_at` is rewritten only when older than this (milliseconds):
/// a busy client must not turn every read into a durable write.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

impl AccountStore for SqliteStore {
    fn create_user(&mut self, new: &NewUser, by: &Change) -> Result<User, AccountError> {
        check_name("user", &new.name)?;
        let (path, conn) = self.parts();
        let err = sql_err(path, "create_user");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        if user_id(&tx, &new.name).map_err(&err)?.is_some() {
            return Err(AccountError::Exists {
                what: "user",
                name: new.name.clone(),
            });
        }
        let units = unit_ids(&tx, &new.units, &err)?;
        tx.execute(
            "INSERT INTO users (name, role, created_at) VALUES (?1, ?2, ?3)",
            params![new.name, new.role.as_str(), by.at.as_millisecond()],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        set_user_units(&tx, id, &units).map_err(&err)?;
        let user = load_user(&tx, &new.name, &err)?.expect("inserted in this transaction");
        insert_audit(
            &tx,
            by,
            "create_user",
            &format!("user:{}", new.name),
            None,
            Some(&user_json(&user)),
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(user)
    }

    fn users(&self) -> Result<Vec<User>, AccountError> {
        let err = sql_err(self.path(), "users");
        let names: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT name FROM users ORDER BY name")
                .map_err(&err)?;
            stmt.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(&err)?
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(user) = load_user(&self.conn, &name, &err)? {
                out.push(user);
            }
        }
        Ok(out)
    }

    fn user(&self, name: &str) -> Result<Option<User>, AccountError> {
        load_user(&self.conn, name, &sql_err(self.path(), "user"))
    }

    fn update_user(
        &mut self,
        name: &str,
        patch: &UserPatch,
        by: &Change,
    ) -> Result<User, AccountError> {
        let (path, conn) = self.parts();
        let err = sql_err(path, "update_user");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let before = load_user(&tx, name, &err)?.ok_or_else(|| not_found("user", name))?;
        if let Some(role) = patch.role {
            tx.execute(
                "UPDATE users SET role = ?1 WHERE id = ?2",
                params![role.as_str(), before.id],
            )
            .map_err(&err)?;
        }
        if let Some(disabled) = patch.disabled {
            tx.execute(
                "UPDATE users SET disabled = ?1 WHERE id = ?2",
                params![disabled, before.id],
            )
            .map_err(&err)?;
        }
        if let Some(units) = &patch.units {
            let ids = unit_ids(&tx, units, &err)?;
            tx.execute(
                "DELETE FROM user_units WHERE user_id = ?1",
                params![before.id],
            )
            .map_err(&err)?;
            set_user_units(&tx, before.id, &ids).map_err(&err)?;
        }
        let after = load_user(&tx, name, &err)?.expect("updated in this transaction");
        insert_audit(
            &tx,
            by,
            "update_user",
            &format!("user:{name}"),
            Some(&user_json(&before)),
            Some(&user_json(&after)),
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(after)
    }

    fn delete_user(&mut self, name: &str, by: &Change) -> Result<(), AccountError> {
        let (path, conn) = self.parts();
        let err = sql_err(path, "delete_user");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let before = load_user(&tx, name, &err)?.ok_or_else(|| not_found("user", name))?;
        // Tokens and unit memberships go with the user (ON DELETE CASCADE).
        tx.execute("DELETE FROM users WHERE id = ?1", params![before.id])
            .map_err(&err)?;
        insert_audit(
            &tx,
            by,
            "delete_user",
            &format!("user:{name}"),
            Some(&user_json(&before)),
            None,
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(())
    }

    fn set_password(
        &mut self,
        name: &str,
        phc: Option<&str>,
        by: &Change,
    ) -> Result<(), AccountError> {
        let (path, conn) = self.parts();
        let err = sql_err(path, "set_password");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let before = load_user(&tx, name, &err)?.ok_or_else(|| not_found("user", name))?;
        tx.execute(
            "UPDATE users SET password_hash = ?1 WHERE id = ?2",
            params![phc, before.id],
        )
        .map_err(&err)?;
        // The hash never reaches the log: only whether one is set.
        insert_audit(
            &tx,
            by,
            "set_password",
            &format!("user:{name}"),
            Some(&json!({ "has_password": before.has_password })),
            Some(&json!({ "has_password": phc.is_some() })),
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(())
    }

    fn password_hash(&self, name: &str) -> Result<Option<String>, AccountError> {
        let err = sql_err(self.path(), "password_hash");
        let found: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT password_hash FROM users WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)?;
        found.ok_or_else(|| not_found("user", name))
    }

    fn create_unit(
        &mut self,
        name: &str,
        queues: &[QueueId],
        by: &Change,
    ) -> Result<Unit, AccountError> {
        check_name("unit", name)?;
        let (path, conn) = self.parts();
        let err = sql_err(path, "create_unit");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        if load_unit(&tx, name, &err)?.is_some() {
            return Err(AccountError::Exists {
                what: "unit",
                name: name.to_owned(),
            });
        }
        tx.execute(
            "INSERT INTO units (name, created_at) VALUES (?1, ?2)",
            params![name, by.at.as_millisecond()],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        set_unit_queues(&tx, id, queues).map_err(&err)?;
        let unit = load_unit(&tx, name, &err)?.expect("inserted in this transaction");
        insert_audit(
            &tx,
            by,
            "create_unit",
            &format!("unit:{name}"),
            None,
            Some(&unit_json(&unit)),
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(unit)
    }

    fn units(&self) -> Result<Vec<Unit>, AccountError> {
        let err = sql_err(self.path(), "units");
        let names: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT name FROM units ORDER BY name")
                .map_err(&err)?;
            stmt.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(&err)?
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(unit) = load_unit(&self.conn, &name, &err)? {
                out.push(unit);
            }
        }
        Ok(out)
    }

    fn update_unit(
        &mut self,
        name: &str,
        patch: &UnitPatch,
        by: &Change,
    ) -> Result<Unit, AccountError> {
        if let Some(new_name) = &patch.name {
            check_name("unit", new_name)?;
        }
        let (path, conn) = self.parts();
        let err = sql_err(path, "update_unit");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let before = load_unit(&tx, name, &err)?.ok_or_else(|| not_found("unit", name))?;
        let mut now_named = name.to_owned();
        if let Some(new_name) = patch.name.as_deref().filter(|n| *n != name) {
            if load_unit(&tx, new_name, &err)?.is_some() {
                return Err(AccountError::Exists {
                    what: "unit",
                    name: new_name.to_owned(),
                });
            }
            tx.execute(
                "UPDATE units SET name = ?1 WHERE id = ?2",
                params![new_name, before.id],
            )
            .map_err(&err)?;
            new_name.clone_into(&mut now_named);
        }
        if let Some(queues) = &patch.queues {
            tx.execute(
                "DELETE FROM unit_queues WHERE unit_id = ?1",
                params![before.id],
            )
            .map_err(&err)?;
            set_unit_queues(&tx, before.id, queues).map_err(&err)?;
        }
        let after = load_unit(&tx, &now_named, &err)?.expect("updated in this transaction");
        insert_audit(
            &tx,
            by,
            "update_unit",
            &format!("unit:{name}"),
            Some(&unit_json(&before)),
            Some(&unit_json(&after)),
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(after)
    }

    fn delete_unit(&mut self, name: &str, by: &Change) -> Result<(), AccountError> {
        let (path, conn) = self.parts();
        let err = sql_err(path, "delete_unit");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let before = load_unit(&tx, name, &err)?.ok_or_else(|| not_found("unit", name))?;
        let members: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT u.name FROM user_units uu JOIN users u ON u.id = uu.user_id \
                     WHERE uu.unit_id = ?1 ORDER BY u.name",
                )
                .map_err(&err)?;
            stmt.query_map(params![before.id], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(&err)?
        };
        tx.execute("DELETE FROM units WHERE id = ?1", params![before.id])
            .map_err(&err)?;
        let mut was = unit_json(&before);
        was["users"] = json!(members);
        insert_audit(
            &tx,
            by,
            "delete_unit",
            &format!("unit:{name}"),
            Some(&was),
            None,
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(())
    }

    fn issue_token(&mut self, new: &NewToken, by: &Change) -> Result<TokenInfo, AccountError> {
        let (path, conn) = self.parts();
        let err = sql_err(path, "issue_token");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let user = user_id(&tx, &new.user)
            .map_err(&err)?
            .ok_or_else(|| not_found("user", &new.user))?;
        tx.execute(
            "INSERT INTO api_tokens (user_id, label, secret_sha256, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                user,
                new.label,
                &new.hash[..],
                by.at.as_millisecond(),
                new.expires_at.map(|t| t.as_millisecond()),
            ],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        let info = load_token(&tx, id, &err)?.expect("inserted in this transaction");
        insert_audit(
            &tx,
            by,
            "issue_token",
            &format!("token:{id}"),
            None,
            Some(&token_json(&info)),
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(info)
    }

    fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, AccountError> {
        let err = sql_err(self.path(), "tokens");
        if let Some(name) = user
            && user_id(&self.conn, name).map_err(&err)?.is_none()
        {
            return Err(not_found("user", name));
        }
        let mut stmt = self
            .conn
            .prepare(&format!(
                "{TOKEN_SELECT} WHERE (?1 IS NULL OR u.name = ?1) ORDER BY t.id"
            ))
            .map_err(&err)?;
        let mut rows = stmt.query(params![user]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            out.push(decode_token(row, &err)?);
        }
        Ok(out)
    }

    fn revoke_token(&mut self, id: i64, by: &Change) -> Result<TokenInfo, AccountError> {
        let (path, conn) = self.parts();
        let err = sql_err(path, "revoke_token");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let before =
            load_token(&tx, id, &err)?.ok_or_else(|| not_found("token", &id.to_string()))?;
        tx.execute(
            "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            params![by.at.as_millisecond(), id],
        )
        .map_err(&err)?;
        let after = load_token(&tx, id, &err)?.expect("exists in this transaction");
        insert_audit(
            &tx,
            by,
            "revoke_token",
            &format!("token:{id}"),
            Some(&token_json(&before)),
            Some(&token_json(&after)),
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(after)
    }

    fn authenticate(
        &mut self,
        hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Authentication, AccountError> {
        let err = sql_err(self.path(), "authenticate");
        // The secret's hash is the (unique, indexed) key: no secret is
        // compared byte by byte, so there is no timing to measure.
        let found: Option<TokenLookup> = self
            .conn
            .query_row(
                "SELECT t.id, t.expires_at, t.revoked_at, t.last_used_at, u.name, u.disabled \
                 FROM api_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.secret_sha256 = ?1",
                params![&hash[..]],
                |r| {
                    Ok(TokenLookup {
                        id: r.get(0)?,
                        expires_at: r.get(1)?,
                        revoked_at: r.get(2)?,
                        last_used_at: r.get(3)?,
                        user: r.get(4)?,
                        disabled: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(&err)?;
        let Some(TokenLookup {
            id,
            expires_at,
            revoked_at,
            last_used_at,
            user: name,
            disabled,
        }) = found
        else {
            return Ok(Authentication::Unknown);
        };
        let now_ms = now.as_millisecond();
        if revoked_at.is_some() {
            return Ok(Authentication::Revoked);
        }
        if expires_at.is_some_and(|t| t <= now_ms) {
            return Ok(Authentication::Expired);
        }
        if disabled {
            return Ok(Authentication::UserDisabled);
        }
        if last_used_at.is_none_or(|t| t + LAST_USED_GRANULARITY_MS <= now_ms) {
            self.conn
                .execute(
                    "UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2",
                    params![now_ms, id],
                )
                .map_err(&err)?;
        }
        let user = load_user(&self.conn, &name, &err)?.ok_or_else(|| not_found("user", &name))?;
        let queues: BTreeSet<QueueId> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT DISTINCT uq.queue FROM user_units uu \
                     JOIN unit_queues uq ON uq.unit_id = uu.unit_id WHERE uu.user_id = ?1",
                )
                .map_err(&err)?;
            stmt.query_map(params![user.id], |r| r.get::<_, String>(0))
                .and_then(|rows| {
                    rows.map(|q| q.map(|q| QueueId(q.into_boxed_str())))
                        .collect::<Result<_, _>>()
                })
                .map_err(&err)?
        };
        Ok(Authentication::Valid(Principal {
            user_id: user.id,
            name: user.name,
            role: user.role,
            units: user.units,
            queues,
        }))
    }

    fn append_audit(&mut self, entry: &AuditEntry) -> Result<i64, AccountError> {
        let err = sql_err(self.path(), "append_audit");
        insert_audit(
            &self.conn,
            &entry.change,
            &entry.action,
            &entry.target,
            entry.before.as_ref(),
            entry.after.as_ref(),
        )
        .map_err(&err)?;
        Ok(self.conn.last_insert_rowid())
    }

    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, AccountError> {
        let err = sql_err(self.path(), "audit");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, at, actor, action, target, before, after FROM audit_log \
                 WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at < ?2) \
                   AND (?3 IS NULL OR id > ?3) \
                 ORDER BY id LIMIT ?4",
            )
            .map_err(&err)?;
        let mut rows = stmt
            .query(params![
                query.from.map(|t| t.as_millisecond()),
                query.to.map(|t| t.as_millisecond()),
                query.after_id,
                query.limit,
            ])
            .map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            let id: i64 = row.get(0).map_err(&err)?;
            let json_col = |i: usize, column: &'static str| -> Result<_, AccountError> {
                match row.get::<_, Option<String>>(i).map_err(&err)? {
                    None => Ok(None),
                    Some(text) => serde_json::from_str(&text)
                        .map(Some)
                        .map_err(|_| corrupt(id, column, text)),
                }
            };
            out.push(AuditRow {
                id,
                at: millis_ts(id, "audit_log.at", row.get(1).map_err(&err)?)?,
                actor: row.get(2).map_err(&err)?,
                action: row.get(3).map_err(&err)?,
                target: row.get(4).map_err(&err)?,
                before: json_col(5, "audit_log.before")?,
                after: json_col(6, "audit_log.after")?,
            });
        }
        Ok(out)
    }
}

/// What [`AccountStore::authenticate`] reads for a token hash (times in
/// Unix milliseconds).
struct TokenLookup {
    id: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    user: String,
    disabled: bool,
}

fn sql_err<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> AccountError + 'a {
    move |source| {
        AccountError::Store(StoreError::Sqlite {
            path: path.to_owned(),
            op,
            source,
        })
    }
}

fn not_found(what: &'static str, name: &str) -> AccountError {
    AccountError::NotFound {
        what,
        name: name.to_owned(),
    }
}

fn corrupt(id: i64, column: &'static str, value: String) -> AccountError {
    AccountError::Store(StoreError::CorruptRow { id, column, value })
}

fn millis_ts(id: i64, column: &'static str, ms: i64) -> Result<Timestamp, AccountError> {
    Timestamp::from_millisecond(ms).map_err(|_| corrupt(id, column, ms.to_string()))
}

fn user_id(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT id FROM users WHERE name = ?1", params![name], |r| {
        r.get(0)
    })
    .optional()
}

/// The ids of the units named, in order; the first unknown one is an error.
fn unit_ids(
    conn: &Connection,
    names: &[String],
    err: &impl Fn(rusqlite::Error) -> AccountError,
) -> Result<Vec<i64>, AccountError> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        let id: Option<i64> = conn
            .query_row("SELECT id FROM units WHERE name = ?1", params![name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?;
        ids.push(id.ok_or_else(|| not_found("unit", name))?);
    }
    Ok(ids)
}

fn set_user_units(conn: &Connection, user: i64, units: &[i64]) -> rusqlite::Result<()> {
    for unit in units {
        conn.execute(
            "INSERT OR IGNORE INTO user_units (user_id, unit_id) VALUES (?1, ?2)",
            params![user, unit],
        )?;
    }
    Ok(())
}

fn set_unit_queues(conn: &Connection, unit: i64, queues: &[QueueId]) -> rusqlite::Result<()> {
    for queue in queues {
        conn.execute(
            "INSERT OR IGNORE INTO unit_queues (unit_id, queue) VALUES (?1, ?2)",
            params![unit, queue.as_str()],
        )?;
    }
    Ok(())
}

fn load_user(
    conn: &Connection,
    name: &str,
    err: &impl Fn(rusqlite::Error) -> AccountError,
) -> Result<Option<User>, AccountError> {
    let found: Option<(i64, String, String, bool, bool, i64)> = conn
        .query_row(
            "SELECT id, name, role, password_hash IS NOT NULL, disabled, created_at \
             FROM users WHERE name = ?1",
            params![name],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .optional()
        .map_err(err)?;
    let Some((id, name, role, has_password, disabled, created_at)) = found else {
        return Ok(None);
    };
    let role = Role::parse(&role).ok_or_else(|| corrupt(id, "users.role", role))?;
    let mut stmt = conn
        .prepare(
            "SELECT n.name FROM user_units uu JOIN units n ON n.id = uu.unit_id \
             WHERE uu.user_id = ?1 ORDER BY n.name",
        )
        .map_err(err)?;
    let units = stmt
        .query_map(params![id], |r| r.get(0))
        .and_then(|rows| rows.collect::<Result<_, _>>())
        .map_err(err)?;
    Ok(Some(User {
        id,
        name,
        role,
        units,
        has_password,
        disabled,
        created_at: millis_ts(id, "users.created_at", created_at)?,
    }))
}

fn load_unit(
    conn: &Connection,
    name: &str,
    err: &impl Fn(rusqlite::Error) -> AccountError,
) -> Result<Option<Unit>, AccountError> {
    let found: Option<(i64, String, i64)> = conn
        .query_row(
            "SELECT id, name, created_at FROM units WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(err)?;
    let Some((id, name, created_at)) = found else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare("SELECT queue FROM unit_queues WHERE unit_id = ?1 ORDER BY queue")
        .map_err(err)?;
    let queues = stmt
        .query_map(params![id], |r| r.get::<_, String>(0))
        .and_then(|rows| {
            rows.map(|q| q.map(|q| QueueId(q.into_boxed_str())))
                .collect::<Result<_, _>>()
        })
        .map_err(err)?;
    Ok(Some(Unit {
        id,
        name,
        queues,
        created_at: millis_ts(id, "units.created_at", created_at)?,
    }))
}

const TOKEN_SELECT: &str = "SELECT t.id, u.name, t.label, t.created_at, t.expires_at, \
     t.revoked_at, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id";

fn load_token(
    conn: &Connection,
    id: i64,
    err: &impl Fn(rusqlite::Error) -> AccountError,
) -> Result<Option<TokenInfo>, AccountError> {
    let mut stmt = conn
        .prepare(&format!("{TOKEN_SELECT} WHERE t.id = ?1"))
        .map_err(err)?;
    let mut rows = stmt.query(params![id]).map_err(err)?;
    match rows.next().map_err(err)? {
        Some(row) => Ok(Some(decode_token(row, err)?)),
        None => Ok(None),
    }
}

fn decode_token(
    row: &rusqlite::Row<'_>,
    err: &impl Fn(rusqlite::Error) -> AccountError,
) -> Result<TokenInfo, AccountError> {
    let id: i64 = row.get(0).map_err(err)?;
    let optional = |i: usize, column: &'static str| -> Result<Option<Timestamp>, AccountError> {
        row.get::<_, Option<i64>>(i)
            .map_err(err)?
            .map(|ms| millis_ts(id, column, ms))
            .transpose()
    };
    Ok(TokenInfo {
        id,
        user: row.get(1).map_err(err)?,
        label: row.get(2).map_err(err)?,
        created_at: millis_ts(id, "api_tokens.created_at", row.get(3).map_err(err)?)?,
        expires_at: optional(4, "api_tokens.expires_at")?,
        revoked_at: optional(5, "api_tokens.revoked_at")?,
        last_used_at: optional(6, "api_tokens.last_used_at")?,
    })
}

pub(super) fn insert_audit(
    conn: &Connection,
    by: &Change,
    action: &str,
    target: &str,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, target, before, after) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            by.at.as_millisecond(),
            by.actor,
            action,
            target,
            before.map(|v| v.to_string()),
            after.map(|v| v.to_string()),
        ],
    )?;
    Ok(())
}

/// A user as the audit log records it (no id, no hash).
fn user_json(u: &User) -> serde_json::Value {
    json!({
        "name": u.name,
        "role": u.role.as_str(),
        "units": u.units,
        "disabled": u.disabled,
        "has_password": u.has_password,
    })
}

fn unit_json(u: &Unit) -> serde_json::Value {
    json!({
        "name": u.name,
        "queues": u.queues.iter().map(QueueId::as_str).collect::<Vec<_>>(),
    })
}

fn token_json(t: &TokenInfo) -> serde_json::Value {
    json!({
        "id": t.id,
        "user": t.user,
        "label": t.label,
        "expires_at": t.expires_at.map(|t| t.to_string()),
        "revoked_at": t.revoked_at.map(|t| t.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::callback::store::accounts::{AuditEntry, TokenSecret};

    mod suite {
        crate::account_store_suite!(
            crate::callback::store::SqliteStore::open_in_memory().expect("in-memory store")
        );
    }

    fn change() -> Change {
        Change {
            actor: "root".into(),
            at: "2025-06-02T09:00:00Z".parse::<Timestamp>().unwrap(),
        }
    }

    #[test]
    fn audit_log_refuses_update_and_delete() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        store
            .append_audit(&AuditEntry {
                change: change(),
                action: "set_gates".into(),
                target: "gates".into(),
                before: None,
                after: None,
            })
            .unwrap();
        for sql in [
            "UPDATE audit_log SET actor = 'someone else'",
            "DELETE FROM audit_log",
        ] {
            let e = store.conn.execute(sql, []).unwrap_err();
            assert!(e.to_string().contains("append-only"), "{sql}: {e}");
        }
    }

    #[test]
    fn only_the_hash_of_a_token_is_stored() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        store
            .create_user(
                &NewUser {
                    name: "ann".into(),
                    role: Role::Admin,
                    units: vec![],
                },
                &change(),
            )
            .unwrap();
        let secret = TokenSecret::generate().unwrap();
        store
            .issue_token(
                &NewToken {
                    user: "ann".into(),
                    label: "ci".into(),
                    expires_at: None,
                    hash: secret.hash,
                },
                &change(),
            )
            .unwrap();
        let stored: Vec<u8> = store
            .conn
            .query_row("SELECT secret_sha256 FROM api_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, secret.hash);
        // No column of any table holds the token text.
        let dump: String = store
            .conn
            .query_row(
                "SELECT group_concat(label || coalesce(hex(secret_sha256), ''), '|') FROM api_tokens",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!dump.contains(&secret.text[4..]));
    }

    #[test]
    fn a_corrupt_role_is_reported_as_a_corrupt_row() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        store
            .create_user(
                &NewUser {
                    name: "ann".into(),
                    role: Role::Viewer,
                    units: vec![],
                },
                &change(),
            )
            .unwrap();
        // The CHECK constraint stops this in normal use; drop it to forge a row.
        store
            .conn
            .execute_batch("PRAGMA ignore_check_constraints = ON; UPDATE users SET role = 'root';")
            .unwrap();
        let e = store.user("ann").unwrap_err();
        assert!(
            matches!(
                e,
                AccountError::Store(StoreError::CorruptRow {
                    column: "users.role",
                    ..
                })
            ),
            "{e}"
        );
    }
}
