//! Test doubles for the store (for tests only; nothing here is used by the
//! daemon).

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;

use super::{
    Attempt, AttemptRow, CallbackRow, LaunchStore, NewCallback, NewTask, NextStep, Recorded,
    Recovery, Registration, SqliteStore, Store, StoreError, TaskFilter,
};
use crate::callback::cdr::CdrRecord;
use crate::callback::{CallbackId, QueueId};

/// A [`Store`] whose `register` always fails with an injected SQLite
/// I/O error and writes nothing (`list` stays empty). For tests of the
/// "unable to register" path. As a [`LaunchStore`] every write fails
/// the same way and every read finds nothing.
#[derive(Debug, Default)]
pub struct FailingStore {
    /// How many times `register` was called.
    pub register_calls: u32,
}

fn injected(op: &'static str) -> StoreError {
    StoreError::Sqlite {
        path: PathBuf::from("<FailingStore>"),
        op,
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("injected failure (FailingStore)".to_owned()),
        ),
    }
}

impl Store for FailingStore {
    fn register(&mut self, _new: &NewCallback) -> Result<Registration, StoreError> {
        self.register_calls += 1;
        Err(injected("register"))
    }

    fn list(&self) -> Result<Vec<CallbackRow>, StoreError> {
        Ok(Vec::new())
    }

    fn pending_ahead(&self, _queue: &QueueId, _queued_at: Timestamp) -> Result<u32, StoreError> {
        Ok(0)
    }
}

impl LaunchStore for FailingStore {
    fn due(&self, _now: Timestamp) -> Result<Vec<CallbackRow>, StoreError> {
        Ok(Vec::new())
    }

    fn claim(&mut self, _id: CallbackId, _now: Timestamp) -> Result<bool, StoreError> {
        Err(injected("claim"))
    }

    fn record_attempt(
        &mut self,
        _id: CallbackId,
        _attempt: &Attempt,
        _next: &NextStep,
    ) -> Result<Recorded, StoreError> {
        Err(injected("record_attempt"))
    }

    fn record_connected(
        &mut self,
        _id: CallbackId,
        _at: Timestamp,
        _agent: Option<&str>,
    ) -> Result<(), StoreError> {
        Err(injected("record_connected"))
    }

    fn expire(&mut self, _now: Timestamp) -> Result<Vec<CallbackId>, StoreError> {
        Err(injected("expire"))
    }

    fn set_claimant(&mut self, _node: &str, _lease: Duration) {}

    fn renew_claims(&mut self, _now: Timestamp) -> Result<usize, StoreError> {
        Err(injected("renew_claims"))
    }

    fn recover_interrupted(
        &mut self,
        _now: Timestamp,
        _longest_ring: Duration,
        _scope: Recovery,
    ) -> Result<Vec<CallbackId>, StoreError> {
        Err(injected("recover_interrupted"))
    }

    fn attempts(&self, _id: CallbackId) -> Result<Vec<AttemptRow>, StoreError> {
        Ok(Vec::new())
    }

    fn create_task(&mut self, _task: &NewTask) -> Result<Registration, StoreError> {
        Err(injected("create_task"))
    }

    fn cancel_tasks(
        &mut self,
        _which: &TaskFilter,
        _reason: &str,
        _now: Timestamp,
    ) -> Result<Vec<CallbackId>, StoreError> {
        Err(injected("cancel_tasks"))
    }

    fn write_cdr(&mut self, _record: &CdrRecord) -> Result<(), StoreError> {
        Err(injected("write_cdr"))
    }

    fn cdrs(
        &self,
        _since: Option<Timestamp>,
        _until: Option<Timestamp>,
    ) -> Result<Vec<CdrRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// Makes every later COMMIT of a registration on this connection fail
/// (SQLite `FOREIGN KEY constraint failed`), after the INSERT itself
/// succeeded inside the transaction. Uses TEMP objects only (a deferred
/// foreign key violated by a TEMP trigger on insert), so the database
/// file is never changed and closing the store removes them.
pub fn arm_commit_failure(store: &SqliteStore) -> Result<(), StoreError> {
    store
        .conn
        .execute_batch(
            "CREATE TEMP TABLE commit_blocker_parent (id INTEGER PRIMARY KEY);
             CREATE TEMP TABLE commit_blocker (
                 parent INTEGER REFERENCES commit_blocker_parent (id)
                     DEFERRABLE INITIALLY DEFERRED);
             CREATE TEMP TRIGGER commit_blocker_on_insert AFTER INSERT ON main.callbacks
             BEGIN
                 INSERT INTO commit_blocker (parent) VALUES (-1);
             END;",
        )
        .map_err(store.sqlite_err("arm_commit_failure"))
}

/// Undoes [`arm_commit_failure`].
pub fn disarm_commit_failure(store: &SqliteStore) -> Result<(), StoreError> {
    store
        .conn
        .execute_batch(
            "DROP TRIGGER temp.commit_blocker_on_insert;
             DROP TABLE temp.commit_blocker;
             DROP TABLE temp.commit_blocker_parent;",
        )
        .map_err(store.sqlite_err("disarm_commit_failure"))
}

/// The [`AccountStore`](super::AccountStore) test suite: each case takes a
/// fresh, empty store, so that every implementation (SQLite today,
/// PostgreSQL later) runs the same cases through
/// [`account_store_suite!`](crate::account_store_suite).
pub mod account_suite {
    use jiff::Timestamp;
    use serde_json::json;

    use crate::callback::QueueId;
    use crate::callback::store::accounts::{
        AccountError, AccountStore, AuditEntry, AuditQuery, Authentication, Change, NewToken,
        NewUser, Role, TokenSecret, UnitPatch, UserPatch, hash_password,
    };

    fn at(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn by(actor: &str, when: &str) -> Change {
        Change {
            actor: actor.to_owned(),
            at: at(when),
        }
    }

    fn queues(names: &[&str]) -> Vec<QueueId> {
        names.iter().map(|q| QueueId((*q).into())).collect()
    }

    fn new_user(name: &str, role: Role, units: &[&str]) -> NewUser {
        NewUser {
            name: name.to_owned(),
            role,
            units: units.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    fn token_for<S: AccountStore>(
        store: &mut S,
        user: &str,
        expires_at: Option<Timestamp>,
    ) -> (TokenSecret, i64) {
        let secret = TokenSecret::generate().expect("OS randomness");
        let info = store
            .issue_token(
                &NewToken {
                    user: user.to_owned(),
                    label: "test".to_owned(),
                    expires_at,
                    hash: secret.hash,
                },
                &by("root", "2025-06-02T10:00:00Z"),
            )
            .expect("issue token");
        (secret, info.id)
    }

    const ALL: AuditQuery = AuditQuery {
        from: None,
        to: None,
        after_id: None,
        limit: 1000,
    };

    /// Users: create with units, read back, refuse duplicates, bad names
    /// and unknown units without writing anything.
    pub fn users_are_created_and_read_back<S: AccountStore>(store: &mut S) {
        store
            .create_unit(
                "east",
                &queues(&["support", "billing"]),
                &by("root", "2025-06-02T09:00:00Z"),
            )
            .unwrap();
        let ann = store
            .create_user(
                &new_user("ann", Role::Manager, &["east"]),
                &by("root", "2025-06-02T09:01:00Z"),
            )
            .unwrap();
        assert_eq!(
            (
                ann.name.as_str(),
                ann.role,
                ann.units.clone(),
                ann.has_password,
                ann.disabled
            ),
            ("ann", Role::Manager, vec!["east".to_owned()], false, false)
        );
        assert_eq!(ann.created_at, at("2025-06-02T09:01:00Z"));
        assert_eq!(store.user("ann").unwrap(), Some(ann.clone()));
        assert_eq!(store.user("nobody").unwrap(), None);
        let dup = store
            .create_user(
                &new_user("ann", Role::Viewer, &[]),
                &by("root", "2025-06-02T09:02:00Z"),
            )
            .unwrap_err();
        assert!(
            matches!(dup, AccountError::Exists { what: "user", .. }),
            "{dup}"
        );
        let bad = store
            .create_user(
                &new_user("-x", Role::Viewer, &[]),
                &by("root", "2025-06-02T09:02:00Z"),
            )
            .unwrap_err();
        assert!(
            matches!(bad, AccountError::InvalidName { what: "user", .. }),
            "{bad}"
        );
        let unknown_unit = store
            .create_user(
                &new_user("bob", Role::Viewer, &["west"]),
                &by("root", "2025-06-02T09:02:00Z"),
            )
            .unwrap_err();
        assert_eq!(unknown_unit.to_string(), "no unit \"west\"");
        assert_eq!(store.user("bob").unwrap(), None, "nothing written");
        store
            .create_user(
                &new_user("abe", Role::Admin, &[]),
                &by("root", "2025-06-02T09:03:00Z"),
            )
            .unwrap();
        let names: Vec<String> = store.users().unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["abe", "ann"]);
        // Two units' audit rows and two users': refusals wrote nothing.
        let actions: Vec<String> = store
            .audit(&ALL)
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(actions, ["create_unit", "create_user", "create_user"]);
    }

    /// Users: patch role, units and the disabled flag; delete takes the
    /// user's tokens with it; each change is audited before/after.
    pub fn users_are_patched_and_deleted_with_audit<S: AccountStore>(store: &mut S) {
        let t = by("root", "2025-06-02T09:00:00Z");
        store
            .create_unit("east", &queues(&["support"]), &t)
            .unwrap();
        store.create_unit("west", &queues(&["sales"]), &t).unwrap();
        store
            .create_user(&new_user("ann", Role::Viewer, &["east"]), &t)
            .unwrap();
        let patched = store
            .update_user(
                "ann",
                &UserPatch {
                    role: Some(Role::Manager),
                    units: Some(vec!["west".into(), "east".into()]),
                    disabled: Some(true),
                },
                &by("boss", "2025-06-02T09:05:00Z"),
            )
            .unwrap();
        assert_eq!(
            (patched.role, patched.units.clone(), patched.disabled),
            (
                Role::Manager,
                vec!["east".to_owned(), "west".to_owned()],
                true
            )
        );
        let unchanged = store
            .update_user(
                "ann",
                &UserPatch::default(),
                &by("boss", "2025-06-02T09:06:00Z"),
            )
            .unwrap();
        assert_eq!(unchanged, patched);
        let rows = store.audit(&ALL).unwrap();
        let update = rows
            .iter()
            .find(|r| r.action == "update_user")
            .expect("audited");
        assert_eq!(
            (update.actor.as_str(), update.target.as_str(), update.at),
            ("boss", "user:ann", at("2025-06-02T09:05:00Z"))
        );
        assert_eq!(
            update.before,
            Some(json!({"name": "ann", "role": "viewer", "units": ["east"],
                        "disabled": false, "has_password": false}))
        );
        assert_eq!(
            update.after,
            Some(
                json!({"name": "ann", "role": "manager", "units": ["east", "west"],
                        "disabled": true, "has_password": false})
            )
        );
        let (secret, _) = token_for(store, "ann", None);
        store
            .delete_user("ann", &by("boss", "2025-06-02T09:07:00Z"))
            .unwrap();
        assert_eq!(store.user("ann").unwrap(), None);
        assert_eq!(
            store
                .authenticate(&secret.hash, at("2025-06-02T09:08:00Z"))
                .unwrap(),
            Authentication::Unknown,
            "the user's tokens went with them"
        );
        let last = store.audit(&ALL).unwrap().pop().expect("rows");
        assert_eq!(
            (last.action.as_str(), last.after.clone()),
            ("delete_user", None)
        );
        assert_eq!(last.before.expect("before")["role"], "manager");
        assert!(matches!(
            store.delete_user("ann", &t),
            Err(AccountError::NotFound { what: "user", .. })
        ));
        assert!(matches!(
            store.update_user("ann", &UserPatch::default(), &t),
            Err(AccountError::NotFound { what: "user", .. })
        ));
    }

    /// Units: create, rename, replace queues, delete (members lose it).
    pub fn units_are_renamed_requeued_and_deleted<S: AccountStore>(store: &mut S) {
        let t = by("root", "2025-06-02T09:00:00Z");
        store
            .create_unit("east", &queues(&["support"]), &t)
            .unwrap();
        store.create_unit("west", &[], &t).unwrap();
        assert!(matches!(
            store.create_unit("east", &[], &t),
            Err(AccountError::Exists { what: "unit", .. })
        ));
        store
            .create_user(&new_user("ann", Role::Viewer, &["east"]), &t)
            .unwrap();
        assert!(matches!(
            store.update_unit(
                "east",
                &UnitPatch {
                    name: Some("west".into()),
                    queues: None
                },
                &t
            ),
            Err(AccountError::Exists { what: "unit", .. })
        ));
        let unit = store
            .update_unit(
                "east",
                &UnitPatch {
                    name: Some("north".into()),
                    queues: Some(queues(&["support", "billing"])),
                },
                &t,
            )
            .unwrap();
        assert_eq!(
            (unit.name.as_str(), unit.queues.clone()),
            ("north", queues(&["billing", "support"]))
        );
        assert_eq!(store.user("ann").unwrap().unwrap().units, ["north"]);
        let names: Vec<String> = store.units().unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["north", "west"]);
        store.delete_unit("north", &t).unwrap();
        assert!(store.user("ann").unwrap().unwrap().units.is_empty());
        let last = store.audit(&ALL).unwrap().pop().expect("rows");
        assert_eq!(
            last.before,
            Some(json!({"name": "north", "queues": ["billing", "support"], "users": ["ann"]}))
        );
        assert!(matches!(
            store.delete_unit("north", &t),
            Err(AccountError::NotFound { what: "unit", .. })
        ));
    }

    /// Tokens: a live token names its user, role and units' queues; expiry
    /// (at the instant), revocation and a disabled user refuse it; unknown
    /// hashes are unknown; the list has no secrets.
    pub fn tokens_authenticate_until_expired_revoked_or_disabled<S: AccountStore>(store: &mut S) {
        let t = by("root", "2025-06-02T09:00:00Z");
        store
            .create_unit("east", &queues(&["support", "billing"]), &t)
            .unwrap();
        store
            .create_unit("west", &queues(&["billing", "sales"]), &t)
            .unwrap();
        store
            .create_user(&new_user("ann", Role::Manager, &["east", "west"]), &t)
            .unwrap();
        let (live, live_id) = token_for(store, "ann", None);
        let (expiring, _) = token_for(store, "ann", Some(at("2025-06-02T12:00:00Z")));
        let noon = at("2025-06-02T12:00:00Z");
        let Authentication::Valid(p) = store
            .authenticate(&live.hash, at("2025-06-02T11:00:00Z"))
            .unwrap()
        else {
            panic!("live token refused");
        };
        assert_eq!((p.name.as_str(), p.role), ("ann", Role::Manager));
        assert_eq!(p.units, ["east", "west"]);
        assert_eq!(
            p.queues.into_iter().collect::<Vec<_>>(),
            queues(&["billing", "sales", "support"])
        );
        assert!(matches!(
            store
                .authenticate(&expiring.hash, at("2025-06-02T11:59:59.999Z"))
                .unwrap(),
            Authentication::Valid(_)
        ));
        assert_eq!(
            store.authenticate(&expiring.hash, noon).unwrap(),
            Authentication::Expired
        );
        assert_eq!(
            store.authenticate(&[7; 32], noon).unwrap(),
            Authentication::Unknown
        );
        let listed = store.tokens(Some("ann")).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].last_used_at, Some(at("2025-06-02T11:00:00Z")));
        assert_eq!(listed[1].expires_at, Some(noon));
        let revoked = store
            .revoke_token(live_id, &by("root", "2025-06-02T11:30:00Z"))
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(at("2025-06-02T11:30:00Z")));
        // Revoking again keeps the first time.
        let again = store
            .revoke_token(live_id, &by("root", "2025-06-02T11:40:00Z"))
            .unwrap();
        assert_eq!(again.revoked_at, Some(at("2025-06-02T11:30:00Z")));
        assert_eq!(
            store
                .authenticate(&live.hash, at("2025-06-02T11:31:00Z"))
                .unwrap(),
            Authentication::Revoked
        );
        let (other, _) = token_for(store, "ann", None);
        store
            .update_user(
                "ann",
                &UserPatch {
                    disabled: Some(true),
                    ..UserPatch::default()
                },
                &t,
            )
            .unwrap();
        assert_eq!(
            store.authenticate(&other.hash, noon).unwrap(),
            Authentication::UserDisabled
        );
        store
            .update_user(
                "ann",
                &UserPatch {
                    disabled: Some(false),
                    ..UserPatch::default()
                },
                &t,
            )
            .unwrap();
        assert!(matches!(
            store.authenticate(&other.hash, noon).unwrap(),
            Authentication::Valid(_)
        ));
        assert!(matches!(
            store.tokens(Some("nobody")),
            Err(AccountError::NotFound { what: "user", .. })
        ));
        assert!(matches!(
            store.revoke_token(999, &t),
            Err(AccountError::NotFound { what: "token", .. })
        ));
        let orphan = NewToken {
            user: "nobody".into(),
            label: String::new(),
            expires_at: None,
            hash: [1; 32],
        };
        assert!(matches!(
            store.issue_token(&orphan, &t),
            Err(AccountError::NotFound { what: "user", .. })
        ));
        let issued = store
            .audit(&ALL)
            .unwrap()
            .into_iter()
            .find(|r| r.action == "issue_token")
            .expect("audited");
        let after = issued.after.expect("after").to_string();
        assert!(
            !after.contains(&live.text[4..]),
            "no secret in the log: {after}"
        );
    }

    /// Passwords: set, read back as the PHC string, cleared; the audit row
    /// says only whether one is set.
    pub fn passwords_are_stored_as_given_and_audited_without_the_hash<S: AccountStore>(
        store: &mut S,
    ) {
        let t = by("root", "2025-06-02T09:00:00Z");
        store
            .create_user(&new_user("ann", Role::Viewer, &[]), &t)
            .unwrap();
        assert_eq!(store.password_hash("ann").unwrap(), None);
        let phc = hash_password("correct horse").unwrap();
        store
            .set_password("ann", Some(&phc), &by("ann", "2025-06-02T09:01:00Z"))
            .unwrap();
        assert_eq!(
            store.password_hash("ann").unwrap().as_deref(),
            Some(phc.as_str())
        );
        assert!(store.user("ann").unwrap().unwrap().has_password);
        let row = store.audit(&ALL).unwrap().pop().expect("rows");
        assert_eq!(
            (
                row.actor.as_str(),
                row.action.as_str(),
                row.before.clone(),
                row.after.clone()
            ),
            (
                "ann",
                "set_password",
                Some(json!({"has_password": false})),
                Some(json!({"has_password": true}))
            )
        );
        store.set_password("ann", None, &t).unwrap();
        assert_eq!(store.password_hash("ann").unwrap(), None);
        assert!(matches!(
            store.password_hash("bob"),
            Err(AccountError::NotFound { what: "user", .. })
        ));
        assert!(matches!(
            store.set_password("bob", None, &t),
            Err(AccountError::NotFound { what: "user", .. })
        ));
    }

    /// The audit log: appended rows come back oldest first, filtered by
    /// time (`[from, to)`) and paged by id.
    pub fn audit_rows_are_filtered_by_time_and_paged<S: AccountStore>(store: &mut S) {
        for (i, when) in [
            "2025-06-02T09:00:00Z",
            "2025-06-02T10:00:00Z",
            "2025-06-02T11:00:00Z",
            "2025-06-02T12:00:00Z",
        ]
        .into_iter()
        .enumerate()
        {
            store
                .append_audit(&AuditEntry {
                    change: by("ann", when),
                    action: "set_gates".into(),
                    target: "gates".into(),
                    before: Some(json!({"n": i})),
                    after: Some(json!({"n": i + 1})),
                })
                .unwrap();
        }
        let all = store.audit(&ALL).unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(all[2].before, Some(json!({"n": 2})));
        let window = store
            .audit(&AuditQuery {
                from: Some(at("2025-06-02T10:00:00Z")),
                to: Some(at("2025-06-02T12:00:00Z")),
                ..ALL
            })
            .unwrap();
        assert_eq!(
            window.iter().map(|r| r.at).collect::<Vec<_>>(),
            [at("2025-06-02T10:00:00Z"), at("2025-06-02T11:00:00Z")]
        );
        let page1 = store.audit(&AuditQuery { limit: 3, ..ALL }).unwrap();
        let page2 = store
            .audit(&AuditQuery {
                limit: 3,
                after_id: page1.last().map(|r| r.id),
                ..ALL
            })
            .unwrap();
        assert_eq!((page1.len(), page2.len()), (3, 1));
        assert_eq!(page2[0].id, all[3].id);
    }
}

/// Runs every [`account_suite`] case as its own `#[test]` on stores made by
/// `$make` (an expression giving a fresh, empty store).
#[macro_export]
macro_rules! account_store_suite {
    ($make:expr) => {
        $crate::account_store_suite!(@cases $make;
            users_are_created_and_read_back,
            users_are_patched_and_deleted_with_audit,
            units_are_renamed_requeued_and_deleted,
            tokens_authenticate_until_expired_revoked_or_disabled,
            passwords_are_stored_as_given_and_audited_without_the_hash,
            audit_rows_are_filtered_by_time_and_paged,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let mut store = $make;
                $crate::callback::store::testing::account_suite::$case(&mut store);
            }
        )*
    };
}

/// The [`ManageStore`](super::ManageStore) test suite (the callbacks API's
/// view), run on every implementation through
/// [`manage_store_suite!`](crate::manage_store_suite). Each case takes a
/// fresh, empty store.
pub mod manage_suite {
    use jiff::{SignedDuration, Timestamp};

    use crate::callback::store::{
        CallbackPatch, CallbackQuery, Changed, Creation, LaunchStore, ManageStore, NewCallback,
        Registration, Status, StoredReply,
    };
    use crate::callback::{CallbackId, QueueId};

    fn at(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    /// 2025-06-02 (a Monday) 10:00 UTC.
    fn t0() -> Timestamp {
        at("2025-06-02T10:00:00Z")
    }

    fn mins(n: i64) -> SignedDuration {
        SignedDuration::from_mins(n)
    }

    fn new_cb(queue: &str, number: &str, scheduled_for: Option<Timestamp>) -> NewCallback {
        let place = scheduled_for.unwrap_or(t0());
        NewCallback {
            queue: QueueId(queue.into()),
            number: number.to_owned(),
            caller_ani: String::new(),
            called_number: String::new(),
            priority: 0,
            queued_at: place,
            registered_at: t0(),
            ecbt_quoted_minutes: 0,
            expires_at: place + mins(120),
            inbound_call_id: String::new(),
            sip_context: None,
        }
    }

    fn creation(scheduled_for: Option<Timestamp>, data: Option<&str>) -> Creation {
        Creation {
            scheduled_for,
            created_by: "ann".to_owned(),
            data: data.map(str::to_owned),
            caller_id: None,
        }
    }

    fn create<S: ManageStore>(store: &mut S, queue: &str, number: &str) -> CallbackId {
        match store
            .create(&new_cb(queue, number, None), &creation(None, None))
            .expect("create")
        {
            Registration::Registered(id) => id,
            other => panic!("{other:?}"),
        }
    }

    const ALL: CallbackQuery = CallbackQuery {
        queues: None,
        status: None,
        number: None,
        source: None,
        from: None,
        to: None,
        after_id: None,
        limit: 1000,
    };

    /// A scheduled callback is read back with its time and data, is not
    /// due before its time and is at it; a second one for the same queue
    /// and number is refused naming the first, as the IVR's is.
    pub fn created_callbacks_are_scheduled_and_refuse_duplicates<S: ManageStore + LaunchStore>(
        store: &mut S,
    ) {
        let when = t0() + mins(10);
        let Registration::Registered(id) = store
            .create(
                &new_cb("support", "3125550188", Some(when)),
                &creation(Some(when), Some(r#"{"order":"A-17"}"#)),
            )
            .expect("create")
        else {
            panic!("registered");
        };
        let got = store.get(id).expect("get").expect("stored");
        assert_eq!(got.scheduled_for, Some(when));
        assert_eq!(got.row.next_attempt_at, Some(when));
        assert_eq!(got.row.queued_at, when);
        assert_eq!(got.row.status, Status::Pending);
        assert_eq!(got.created_by.as_deref(), Some("ann"));
        assert_eq!(got.data.as_deref(), Some(r#"{"order":"A-17"}"#));
        assert!(store.due(when - mins(1)).expect("due").is_empty());
        let due: Vec<_> = store.due(when).expect("due").iter().map(|r| r.id).collect();
        assert_eq!(due, [id]);
        assert_eq!(
            store
                .create(
                    &new_cb("support", "3125550188", None),
                    &creation(None, None)
                )
                .expect("create"),
            Registration::AlreadyScheduled(id)
        );
        assert_eq!(store.get(CallbackId(id.0 + 100)).expect("get"), None);
        assert_eq!(store.query(&ALL).expect("query").len(), 1);
    }

    /// Filters (queues, status, number, registered from/to) and pages by
    /// id after a cursor.
    pub fn queries_filter_and_page_by_id<S: ManageStore>(store: &mut S) {
        let a = create(store, "support", "3125550101");
        let b = create(store, "sales", "3125550102");
        let c = create(store, "support", "3125550103");
        let ids = |q: &CallbackQuery, store: &S| -> Vec<CallbackId> {
            store
                .query(q)
                .expect("query")
                .iter()
                .map(|r| r.row.id)
                .collect()
        };
        assert_eq!(ids(&ALL, store), [a, b, c]);
        let support = CallbackQuery {
            queues: Some(vec![QueueId("support".into())]),
            ..ALL
        };
        assert_eq!(ids(&support, store), [a, c]);
        let none = CallbackQuery {
            queues: Some(Vec::new()),
            ..ALL
        };
        assert!(ids(&none, store).is_empty());
        let by_number = CallbackQuery {
            number: Some("3125550102".into()),
            ..ALL
        };
        assert_eq!(ids(&by_number, store), [b]);
        assert!(matches!(
            store.cancel(b).expect("cancel"),
            Changed::Done { .. }
        ));
        let cancelled = CallbackQuery {
            status: Some(Status::Cancelled),
            ..ALL
        };
        assert_eq!(ids(&cancelled, store), [b]);
        let later = CallbackQuery {
            from: Some(t0() + mins(1)),
            ..ALL
        };
        assert!(ids(&later, store).is_empty());
        let before = CallbackQuery {
            to: Some(t0() + mins(1)),
            ..ALL
        };
        assert_eq!(ids(&before, store), [a, b, c]);
        let page1 = CallbackQuery { limit: 2, ..ALL };
        assert_eq!(ids(&page1, store), [a, b]);
        let page2 = CallbackQuery {
            after_id: Some(b.0),
            limit: 2,
            ..ALL
        };
        assert_eq!(ids(&page2, store), [c]);
    }

    /// Cancel by id changes only a pending callback; cancel by number
    /// takes every pending one of that number in the given queues.
    pub fn cancel_by_id_and_by_number_take_only_pending<S: ManageStore + LaunchStore>(
        store: &mut S,
    ) {
        let a = create(store, "support", "3125550188");
        let b = create(store, "sales", "3125550188");
        let c = create(store, "billing", "3125550188");
        let other = create(store, "support", "3125550199");
        match store.cancel(a).expect("cancel") {
            Changed::Done { before, after } => {
                assert_eq!(before.row.status, Status::Pending);
                assert_eq!(after.row.status, Status::Cancelled);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.cancel(a).expect("cancel"),
            Changed::NotPending(Status::Cancelled)
        );
        assert_eq!(
            store.cancel(CallbackId(999)).expect("cancel"),
            Changed::NotFound
        );
        assert!(store.claim(c, t0()).expect("claim"));
        let cancelled = store
            .cancel_by_number(
                "3125550188",
                &[
                    QueueId("support".into()),
                    QueueId("sales".into()),
                    QueueId("billing".into()),
                ],
            )
            .expect("cancel by number");
        let ids: Vec<_> = cancelled.iter().map(|r| r.row.id).collect();
        assert_eq!(ids, [b], "a was already cancelled, c is dialing");
        assert_eq!(cancelled[0].row.status, Status::Cancelled);
        assert_eq!(
            store.cancel(c).expect("cancel"),
            Changed::NotPending(Status::Dialing)
        );
        assert_eq!(
            store.get(other).expect("get").expect("row").row.status,
            Status::Pending
        );
        assert!(
            store
                .cancel_by_number("3125550199", &[QueueId("sales".into())])
                .expect("cancel by number")
                .is_empty(),
            "another queue's is not touched"
        );
    }

    /// A patch reschedules (launch time and place in line), renumbers and
    /// reprioritises a pending callback; a number taken in the queue is
    /// refused naming the other; a finished one is not changed.
    pub fn patch_reschedules_renumbers_and_refuses_taken_numbers<S: ManageStore>(store: &mut S) {
        let a = create(store, "support", "3125550188");
        let b = create(store, "support", "3125550199");
        let when = t0() + mins(30);
        let patch = CallbackPatch {
            scheduled_for: Some(when),
            number: Some("3125550177".into()),
            priority: Some(7),
            caller_id: Some(Some("8005550100".into())),
        };
        let Changed::Done { before, after } = store.patch(a, &patch).expect("patch") else {
            panic!("applied");
        };
        assert_eq!(before.row.number, "3125550188");
        assert_eq!(after.row.number, "3125550177");
        assert_eq!(after.row.priority, 7);
        assert_eq!(before.row.caller_id, None);
        assert_eq!(after.row.caller_id.as_deref(), Some("8005550100"));
        let kept = CallbackPatch {
            priority: Some(8),
            ..CallbackPatch::default()
        };
        let Changed::Done { after, .. } = store.patch(a, &kept).expect("patch") else {
            panic!("applied");
        };
        assert_eq!(
            after.row.caller_id.as_deref(),
            Some("8005550100"),
            "a patch without caller_id keeps it"
        );
        let cleared = CallbackPatch {
            caller_id: Some(None),
            ..CallbackPatch::default()
        };
        let Changed::Done { after, .. } = store.patch(a, &cleared).expect("patch") else {
            panic!("applied");
        };
        assert_eq!(after.row.caller_id, None, "null clears it");
        assert_eq!(after.scheduled_for, Some(when));
        assert_eq!(after.row.next_attempt_at, Some(when));
        assert_eq!(after.row.queued_at, when);
        let taken = CallbackPatch {
            number: Some("3125550199".into()),
            ..CallbackPatch::default()
        };
        assert_eq!(
            store.patch(a, &taken).expect("patch"),
            Changed::Duplicate(b)
        );
        assert_eq!(
            store.get(a).expect("get").expect("row").row.number,
            "3125550177"
        );
        assert!(matches!(
            store.cancel(b).expect("cancel"),
            Changed::Done { .. }
        ));
        assert_eq!(
            store.patch(b, &patch).expect("patch"),
            Changed::NotPending(Status::Cancelled)
        );
    }

    /// The per-number count sees only API-created callbacks since the
    /// instant; a kept reply is read back, never overwritten, and
    /// forgotten once older than the horizon.
    pub fn counts_and_idempotent_replies<S: ManageStore>(store: &mut S) {
        create(store, "support", "3125550188");
        create(store, "sales", "3125550188");
        store
            .register(&new_cb("billing", "3125550188", None))
            .expect("register");
        assert_eq!(
            store.created_since("3125550188", t0()).expect("count"),
            [t0(), t0()]
        );
        assert!(
            store
                .created_since("3125550188", t0() + mins(1))
                .expect("count")
                .is_empty()
        );
        let reply = |hash: u8, status: u16, when: Timestamp| StoredReply {
            request_sha256: [hash; 32],
            status,
            body: format!("{{\"status\":{status}}}"),
            location: Some("/v1/callbacks/1".into()),
            created_at: when,
        };
        assert_eq!(store.idempotent_reply("ann", "k1").expect("read"), None);
        store
            .keep_reply("ann", "k1", &reply(1, 201, t0()), t0() - mins(1440))
            .expect("keep");
        store
            .keep_reply("ann", "k1", &reply(2, 409, t0()), t0() - mins(1440))
            .expect("keep again");
        assert_eq!(
            store.idempotent_reply("ann", "k1").expect("read"),
            Some(reply(1, 201, t0()))
        );
        assert_eq!(
            store.idempotent_reply("wes", "k1").expect("read"),
            None,
            "keys are per user"
        );
        store
            .keep_reply(
                "ann",
                "k2",
                &reply(3, 201, t0() + mins(1441)),
                t0() + mins(1),
            )
            .expect("keep");
        assert_eq!(store.idempotent_reply("ann", "k1").expect("read"), None);
        assert!(store.idempotent_reply("ann", "k2").expect("read").is_some());
    }
}

/// Runs every [`manage_suite`] case as its own `#[test]` on stores made by
/// `$make` (an expression giving a fresh, empty store).
#[macro_export]
macro_rules! manage_store_suite {
    ($make:expr) => {
        $crate::manage_store_suite!(@cases $make;
            created_callbacks_are_scheduled_and_refuse_duplicates,
            queries_filter_and_page_by_id,
            cancel_by_id_and_by_number_take_only_pending,
            patch_reschedules_renumbers_and_refuses_taken_numbers,
            counts_and_idempotent_replies,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let mut store = $make;
                $crate::callback::store::testing::manage_suite::$case(&mut store);
            }
        )*
    };
}

/// The automatic-task cases (issue 13: missed-call rules) of
/// [`LaunchStore::create_task`], [`LaunchStore::cancel_tasks`] and the
/// cancellations that registering, creating and completing a callback make,
/// run on every implementation through
/// [`task_store_suite!`](crate::task_store_suite). Each case takes a fresh,
/// empty store.
pub mod task_suite {
    use jiff::{SignedDuration, Timestamp};

    use crate::callback::scheduler::Outcome;
    use crate::callback::store::{
        Attempt, CallbackPatch, CallbackQuery, CallbackRow, Changed, Creation, LaunchStore,
        ManageStore, NewCallback, NewTask, NewWebhook, NextStep, Registration, Source, Status,
        StoreError, TaskFilter, WebhookStore,
    };
    use crate::callback::webhook::EventKind;
    use crate::callback::{CallbackId, QueueId};

    /// 2025-06-02 (a Monday) 10:00 UTC: when the calls were missed.
    fn t0() -> Timestamp {
        "2025-06-02T10:00:00Z".parse().expect("test timestamp")
    }

    fn mins(n: i64) -> SignedDuration {
        SignedDuration::from_mins(n)
    }

    fn new_cb(queue: &str, number: &str) -> NewCallback {
        NewCallback {
            queue: QueueId(queue.into()),
            number: number.to_owned(),
            caller_ani: number.to_owned(),
            called_number: "8005550199".to_owned(),
            priority: 0,
            queued_at: t0(),
            registered_at: t0(),
            ecbt_quoted_minutes: 0,
            expires_at: t0() + mins(240),
            inbound_call_id: format!("missed-{number}@pbx"),
            sip_context: None,
        }
    }

    fn snapshot(attempt: u32) -> String {
        format!(r#"{{"attempt":{attempt},"intervals_min":[5,10],"caller_id":"8005550199"}}"#)
    }

    /// A task of `rule` in `queue` for `number`, first dialed 5 minutes
    /// after the missed call.
    fn task(queue: &str, number: &str, rule: &str) -> NewTask {
        NewTask {
            callback: new_cb(queue, number),
            rule: rule.to_owned(),
            task: snapshot(1),
            first_attempt_at: Some(t0() + mins(5)),
            reason: None,
        }
    }

    fn created<S: LaunchStore>(store: &mut S, new: &NewTask) -> CallbackId {
        match store.create_task(new).expect("create_task") {
            Registration::Registered(id) => id,
            other => panic!("expected Registered, got {other:?}"),
        }
    }

    fn row<S: ManageStore>(store: &S, id: CallbackId) -> CallbackRow {
        store.get(id).expect("get").expect("stored").row
    }

    fn count<S: ManageStore>(store: &S) -> usize {
        store.query(&ALL).expect("query").len()
    }

    /// Subscribes to every event, so that each one written is seen.
    fn subscribe<S: WebhookStore>(store: &mut S) -> i64 {
        store
            .create_webhook(&NewWebhook {
                url: "https://hooks.example.com/tasks".into(),
                events: EventKind::ALL.to_vec(),
                secret: "whsec_task_suite".into(),
                enabled: true,
                description: String::new(),
                created_by: "test".into(),
                created_at: t0(),
            })
            .expect("create webhook")
            .id
    }

    /// The events written since the subscription, in order.
    fn events<S: WebhookStore>(store: &S, hook: i64) -> Vec<(CallbackId, String)> {
        store
            .deliveries(hook, None, 1000)
            .expect("deliveries")
            .into_iter()
            .map(|d| (d.callback, d.event_type))
            .collect()
    }

    fn ev(id: CallbackId, kind: EventKind) -> (CallbackId, String) {
        (id, kind.as_str().to_owned())
    }

    const ALL: CallbackQuery = CallbackQuery {
        queues: None,
        status: None,
        number: None,
        source: None,
        from: None,
        to: None,
        after_id: None,
        limit: 1000,
    };

    /// A task is stored pending with its rule and snapshot, due at its
    /// first attempt time; a second one for the number is refused naming
    /// it. A task that is not started is stored failed with its reason,
    /// never due. Each writes its events; the source filter finds them.
    pub fn tasks_are_created_pending_or_failed_not_started<
        S: ManageStore + LaunchStore + WebhookStore,
    >(
        store: &mut S,
    ) {
        let hook = subscribe(store);
        let new = task("support", "3125550188", "after-hours");
        let id = created(store, &new);
        let r = row(store, id);
        assert_eq!(
            (r.source, r.rule.as_deref(), r.task.as_deref(), r.status),
            (
                Source::MissedCall,
                Some("after-hours"),
                Some(snapshot(1).as_str()),
                Status::Pending
            )
        );
        assert_eq!(r.next_attempt_at, Some(t0() + mins(5)));
        assert_eq!(
            (r.closed_reason, r.called_number.as_str()),
            (None, "8005550199")
        );
        assert_eq!(r.registered_at, t0(), "registered when the call was missed");
        assert!(store.due(t0() + mins(4)).expect("due").is_empty());
        let due: Vec<_> = store
            .due(t0() + mins(5))
            .expect("due")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(due, [id]);
        assert_eq!(
            store
                .create_task(&task("sales", "3125550188", "abandoned"))
                .expect("create_task"),
            Registration::AlreadyScheduled(id),
            "one automatic call per number"
        );
        assert_eq!(count(store), 1, "the refusal wrote nothing");

        let not_started = NewTask {
            first_attempt_at: None,
            reason: Some("unknown_time_zone".into()),
            ..task("support", "4165550100", "after-hours")
        };
        let failed = created(store, &not_started);
        let f = row(store, failed);
        assert_eq!(
            (
                f.source,
                f.status,
                f.closed_reason.as_deref(),
                f.next_attempt_at
            ),
            (
                Source::MissedCall,
                Status::Failed,
                Some("unknown_time_zone"),
                None
            )
        );
        assert_eq!(f.rule.as_deref(), Some("after-hours"));
        let due: Vec<_> = store
            .due(t0() + mins(60))
            .expect("due")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(due, [id], "a task not started is never due");
        // Not started, so nothing is dialed: stored even beside an active one.
        let beside = NewTask {
            first_attempt_at: None,
            reason: Some("queue_deleted".into()),
            ..task("support", "3125550188", "after-hours")
        };
        let beside = created(store, &beside);
        assert_eq!(row(store, beside).status, Status::Failed);
        assert_eq!(
            events(store, hook),
            [
                ev(id, EventKind::Registered),
                ev(id, EventKind::Scheduled),
                ev(failed, EventKind::Registered),
                ev(failed, EventKind::Failed),
                ev(beside, EventKind::Registered),
                ev(beside, EventKind::Failed),
            ]
        );
        let bad = NewTask {
            first_attempt_at: None,
            reason: Some("Unknown Zone".into()),
            ..task("support", "3125550199", "after-hours")
        };
        assert!(matches!(
            store.create_task(&bad),
            Err(StoreError::InvalidReason { .. })
        ));
        let bad_number = task("support", "+13125550199", "after-hours");
        assert!(matches!(
            store.create_task(&bad_number),
            Err(StoreError::NumberNotDigits { .. })
        ));
        assert_eq!(count(store), 3, "refusals write nothing");

        let ivr = match store
            .register(&new_cb("support", "2125550100"))
            .expect("register")
        {
            Registration::Registered(id) => id,
            other => panic!("{other:?}"),
        };
        let api = match store
            .create(
                &new_cb("support", "2125550101"),
                &Creation {
                    scheduled_for: None,
                    created_by: "ann".into(),
                    data: None,
                    caller_id: None,
                },
            )
            .expect("create")
        {
            Registration::Registered(id) => id,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (row(store, ivr).source, row(store, api).source),
            (Source::Ivr, Source::Api)
        );
        let of = |source| {
            let q = CallbackQuery {
                source: Some(source),
                ..ALL
            };
            store
                .query(&q)
                .expect("query")
                .iter()
                .map(|r| r.row.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(of(Source::MissedCall), [id, failed, beside]);
        assert_eq!(of(Source::Ivr), [ivr]);
        assert_eq!(of(Source::Api), [api]);
    }

    /// An active callback of any source, in any queue, stops a task for
    /// the same number: the customer is called anyway.
    pub fn task_is_refused_while_any_callback_for_the_number_is_active<
        S: ManageStore + LaunchStore,
    >(
        store: &mut S,
    ) {
        let Registration::Registered(ivr) = store
            .register(&new_cb("billing", "3125550188"))
            .expect("register")
        else {
            panic!("registered");
        };
        assert_eq!(
            store
                .create_task(&task("support", "3125550188", "abandoned"))
                .expect("create_task"),
            Registration::AlreadyScheduled(ivr)
        );
        // Dialing counts too.
        assert!(store.claim(ivr, t0()).expect("claim"));
        assert_eq!(
            store
                .create_task(&task("sales", "3125550188", "abandoned"))
                .expect("create_task"),
            Registration::AlreadyScheduled(ivr)
        );
        assert_eq!(count(store), 1, "nothing written");
        // Once it is finished, the next missed call gets its task.
        store
            .record_attempt(ivr, &attempt(Outcome::InvalidNumber), &NextStep::Failed)
            .expect("record");
        let id = created(store, &task("support", "3125550188", "abandoned"));
        assert_eq!(row(store, id).status, Status::Pending);
    }

    /// `cancel_tasks` by number, rule, queue and all takes only pending
    /// tasks: never a dialing one, never an IVR or API callback; each
    /// gets the reason, no next attempt and its event.
    pub fn cancel_tasks_takes_only_pending_tasks_that_match<
        S: ManageStore + LaunchStore + WebhookStore,
    >(
        store: &mut S,
    ) {
        let a = created(store, &task("support", "3125550101", "r1"));
        let b = created(store, &task("sales", "3125550102", "r2"));
        let c = created(store, &task("sales", "3125550103", "r1"));
        let d = created(store, &task("support", "3125550104", "r2"));
        let e = created(store, &task("billing", "3125550105", "r3"));
        let f = created(store, &task("billing", "3125550107", "r3"));
        let Registration::Registered(ivr) = store
            .register(&new_cb("support", "3125550106"))
            .expect("register")
        else {
            panic!("registered");
        };
        assert!(
            store.claim(c, t0() + mins(5)).expect("claim"),
            "c is dialing"
        );
        let hook = subscribe(store);
        let later = t0() + mins(30);
        assert_eq!(
            store
                .cancel_tasks(
                    &TaskFilter::Number("3125550102".into()),
                    "customer_reached",
                    later
                )
                .expect("by number"),
            [b]
        );
        assert_eq!(
            store
                .cancel_tasks(&TaskFilter::Rule("r1".into()), "rule_disabled", later)
                .expect("by rule"),
            [a],
            "c is dialing: its call finishes"
        );
        assert_eq!(
            store
                .cancel_tasks(
                    &TaskFilter::Queue(QueueId("support".into())),
                    "queue_deleted",
                    later
                )
                .expect("by queue"),
            [d],
            "the IVR's callback in the queue is not a task"
        );
        assert!(
            store
                .cancel_tasks(&TaskFilter::Rule("r1".into()), "rule_disabled", later)
                .expect("again")
                .is_empty()
        );
        // One by id: the dialing one is left alone, the IVR's is no task.
        for id in [c, ivr] {
            assert!(
                store
                    .cancel_tasks(&TaskFilter::Id(id), "agent_deleted", later)
                    .expect("by id")
                    .is_empty()
            );
        }
        assert_eq!(
            store
                .cancel_tasks(&TaskFilter::Id(e), "agent_deleted", later)
                .expect("by id"),
            [e]
        );
        assert_eq!(
            store
                .cancel_tasks(&TaskFilter::All, "org_frozen", later)
                .expect("all"),
            [f]
        );
        for (id, reason) in [
            (a, "rule_disabled"),
            (b, "customer_reached"),
            (d, "queue_deleted"),
            (e, "agent_deleted"),
            (f, "org_frozen"),
        ] {
            let r = row(store, id);
            assert_eq!(
                (r.status, r.closed_reason.as_deref(), r.next_attempt_at),
                (Status::Cancelled, Some(reason), None),
                "{id}"
            );
        }
        assert_eq!(
            (row(store, c).status, row(store, c).closed_reason),
            (Status::Dialing, None)
        );
        assert_eq!(
            (row(store, ivr).status, row(store, ivr).closed_reason),
            (Status::Pending, None)
        );
        assert_eq!(
            events(store, hook),
            [
                ev(b, EventKind::Cancelled),
                ev(a, EventKind::Cancelled),
                ev(d, EventKind::Cancelled),
                ev(e, EventKind::Cancelled),
                ev(f, EventKind::Cancelled),
            ]
        );
        assert!(matches!(
            store.cancel_tasks(&TaskFilter::All, "", later),
            Err(StoreError::InvalidReason { .. })
        ));
        assert!(matches!(
            store.cancel_tasks(&TaskFilter::All, "org-frozen", later),
            Err(StoreError::InvalidReason { .. })
        ));
    }

    /// A customer who registers in the IVR is not also called by the
    /// automatic task: the number's pending tasks (any queue) are cancelled
    /// in the same transaction, and the registration is not refused as
    /// their duplicate. The API's create does the same.
    pub fn registering_or_creating_cancels_the_numbers_pending_tasks<
        S: ManageStore + LaunchStore + WebhookStore,
    >(
        store: &mut S,
    ) {
        let same_queue = created(store, &task("support", "3125550188", "abandoned"));
        let other = created(store, &task("sales", "3125550199", "abandoned"));
        let hook = subscribe(store);
        let ivr = match store
            .register(&new_cb("support", "3125550188"))
            .expect("register")
        {
            Registration::Registered(id) => id,
            other => panic!("a task is no duplicate of a registration: {other:?}"),
        };
        let t = row(store, same_queue);
        assert_eq!(
            (t.status, t.closed_reason.as_deref()),
            (Status::Cancelled, Some("customer_registered"))
        );
        assert_eq!(row(store, ivr).source, Source::Ivr);
        assert_eq!(
            row(store, other).status,
            Status::Pending,
            "another number's task stays"
        );
        assert_eq!(
            events(store, hook),
            [
                ev(same_queue, EventKind::Cancelled),
                ev(ivr, EventKind::Registered)
            ]
        );

        // The API: a task in another queue for the number goes too.
        let api = match store
            .create(
                &new_cb("billing", "3125550199"),
                &Creation {
                    scheduled_for: Some(t0() + mins(60)),
                    created_by: "ann".into(),
                    data: None,
                    caller_id: None,
                },
            )
            .expect("create")
        {
            Registration::Registered(id) => id,
            other => panic!("{other:?}"),
        };
        let t = row(store, other);
        assert_eq!(
            (t.status, t.closed_reason.as_deref()),
            (Status::Cancelled, Some("callback_created"))
        );
        assert_eq!(row(store, api).source, Source::Api);

        // A dialing task is left to finish; a duplicate registration in
        // its queue is refused as before.
        let dialing = created(store, &task("support", "3125550177", "abandoned"));
        assert!(store.claim(dialing, t0() + mins(5)).expect("claim"));
        assert_eq!(
            store
                .register(&new_cb("support", "3125550177"))
                .expect("register"),
            Registration::AlreadyScheduled(dialing)
        );
        assert_eq!(row(store, dialing).status, Status::Dialing);
    }

    /// A callback to the number that completes cancels the number's other
    /// pending tasks ("customer_reached"). A task's retry may carry the
    /// next attempt's settings snapshot, which replaces the stored one; a
    /// short call is a counted customer attempt, read back as such.
    pub fn completion_cancels_other_tasks_and_retries_carry_the_snapshot<
        S: ManageStore + LaunchStore + WebhookStore,
    >(
        store: &mut S,
    ) {
        let t = created(store, &task("support", "3125550188", "abandoned"));
        let at = t0() + mins(5);
        assert!(store.claim(t, at).expect("claim"));
        store
            .record_attempt(
                t,
                &attempt(Outcome::ShortCall),
                &NextStep::Retry {
                    at: at + mins(10),
                    task: Some(snapshot(2)),
                },
            )
            .expect("record");
        let r = row(store, t);
        assert_eq!(
            (r.status, r.attempts, r.next_attempt_at, r.task.as_deref()),
            (
                Status::Pending,
                1,
                Some(at + mins(10)),
                Some(snapshot(2).as_str())
            )
        );
        let outcomes: Vec<_> = store
            .attempts(t)
            .expect("attempts")
            .iter()
            .map(|a| a.attempt.outcome)
            .collect();
        assert_eq!(outcomes, [Outcome::ShortCall]);
        assert!(store.claim(t, at + mins(10)).expect("claim"));
        store
            .record_attempt(
                t,
                &attempt(Outcome::NoAnswer),
                &NextStep::Retry {
                    at: at + mins(20),
                    task: None,
                },
            )
            .expect("record");
        assert_eq!(
            row(store, t).task.as_deref(),
            Some(snapshot(2).as_str()),
            "no snapshot: the stored one is kept"
        );

        // An API callback for another number, renumbered onto the task's
        // (a patch checks its own queue only): two active for the number.
        let Registration::Registered(api) = store
            .create(
                &new_cb("billing", "3125550199"),
                &Creation {
                    scheduled_for: None,
                    created_by: "ann".into(),
                    data: None,
                    caller_id: None,
                },
            )
            .expect("create")
        else {
            panic!("registered");
        };
        let patch = CallbackPatch {
            number: Some("3125550188".into()),
            ..CallbackPatch::default()
        };
        assert!(matches!(
            store.patch(api, &patch).expect("patch"),
            Changed::Done { .. }
        ));
        let untouched = created(store, &task("sales", "3125550177", "abandoned"));
        let hook = subscribe(store);
        assert!(store.claim(api, t0() + mins(30)).expect("claim"));
        store
            .record_attempt(api, &attempt(Outcome::Answered), &NextStep::Completed)
            .expect("record");
        let r = row(store, t);
        assert_eq!(
            (r.status, r.closed_reason.as_deref(), r.next_attempt_at),
            (Status::Cancelled, Some("customer_reached"), None)
        );
        assert_eq!(row(store, api).status, Status::Completed);
        assert_eq!(row(store, untouched).status, Status::Pending);
        let seen = events(store, hook);
        assert!(seen.contains(&ev(t, EventKind::Cancelled)), "{seen:?}");
        assert!(seen.contains(&ev(api, EventKind::Completed)), "{seen:?}");
        assert!(!seen.iter().any(|(id, _)| *id == untouched), "{seen:?}");
    }

    fn attempt(outcome: Outcome) -> Attempt {
        Attempt {
            started_at: t0() + mins(5),
            ended_at: t0() + mins(6),
            outcome,
            sip_status: Some(200),
            agent: Some("alice".into()),
            customer_dialed_at: None,
        }
    }
}

/// Runs every [`task_suite`] case as its own `#[test]` on stores made by
/// `$make` (an expression giving a fresh, empty store).
#[macro_export]
macro_rules! task_store_suite {
    ($make:expr) => {
        $crate::task_store_suite!(@cases $make;
            tasks_are_created_pending_or_failed_not_started,
            task_is_refused_while_any_callback_for_the_number_is_active,
            cancel_tasks_takes_only_pending_tasks_that_match,
            registering_or_creating_cancels_the_numbers_pending_tasks,
            completion_cancels_other_tasks_and_retries_carry_the_snapshot,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let mut store = $make;
                $crate::callback::store::testing::task_suite::$case(&mut store);
            }
        )*
    };
}

/// Creates user `name` with `role` in `units` (which must exist) and
/// issues it an API token, in `store` (any [`AccountStore`]); the token's
/// text. Panics on failure: for test set-up.
///
/// [`AccountStore`]: super::AccountStore
pub fn user_with_token(
    store: &mut impl super::AccountStore,
    name: &str,
    role: super::Role,
    units: &[&str],
) -> String {
    let change = super::Change {
        actor: "test".into(),
        at: Timestamp::now(),
    };
    store
        .create_user(
            &super::NewUser {
                name: name.into(),
                role,
                units: units.iter().map(|u| (*u).to_owned()).collect(),
            },
            &change,
        )
        .expect("create user");
    let secret = super::TokenSecret::generate().expect("OS randomness");
    store
        .issue_token(
            &super::NewToken {
                user: name.into(),
                label: "test".into(),
                expires_at: None,
                hash: secret.hash,
            },
            &change,
        )
        .expect("issue token");
    secret.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::store::test_support::*;

    #[test]
    fn failing_store_errors_and_keeps_nothing() {
        let mut store = FailingStore::default();
        let err = store
            .register(&new_cb("support", "3125550188", "2025-06-02T15:00:00Z"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Sqlite { op: "register", .. }),
            "{err:?}"
        );
        assert_eq!(store.register_calls, 1);
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            store
                .pending_ahead(&queue("support"), ts("2025-06-02T15:00:00Z"))
                .unwrap(),
            0
        );
    }

    #[test]
    fn failing_store_fails_every_launch_write() {
        let mut store = FailingStore::default();
        assert!(matches!(
            store.claim(CallbackId(1), now()),
            Err(StoreError::Sqlite { op: "claim", .. })
        ));
        assert!(matches!(
            store.recover_interrupted(now(), Duration::from_secs(1), Recovery::AtStart),
            Err(StoreError::Sqlite {
                op: "recover_interrupted",
                ..
            })
        ));
        assert!(store.due(now()).unwrap().is_empty());
    }
}
