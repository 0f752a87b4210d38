//! Accounts (issue 11 point 1): users with a role, business units that
//! group queues, API tokens, passwords, and the append-only audit log.
//!
//! [`AccountStore`] is the seam: [`SqliteStore`](super::SqliteStore)
//! implements it today, a PostgreSQL store can later. Every change takes a
//! [`Change`] (who, when) and writes its audit row — the object before and
//! after, as JSON — in the same transaction as the change itself, so the log
//! never misses a change nor records one that was rolled back.
//!
//! # Tokens
//!
//! An API token is `cbd_` followed by 256 random bits from the operating
//! system in unpadded base64url (43 characters). It is shown once when it is
//! issued; the store keeps only its SHA-256. A fast hash is right here: the
//! secret is random, not a password, so there is nothing to guess from the
//! hash, and a lookup costs one indexed read of the hash
//! ([`AccountStore::authenticate`]). Passwords (for the console) are hashed
//! with argon2id ([`hash_password`]), salted, as a PHC string.

use std::collections::BTreeSet;
use std::fmt;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64ct::{Base64UrlUnpadded, Encoding};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::callback::QueueId;

use super::StoreError;

/// What a user may do (the issue's role matrix).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads what their units hold.
    Viewer,
    /// A viewer who also acts on their units: pauses agents, (later) edits
    /// callbacks, hours and switches.
    Manager,
    /// Everything: users, units, tokens, org-wide gates, the audit log.
    Admin,
}

impl Role {
    /// Every role, least to most powerful.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Manager, Role::Admin];

    /// The text stored and shown (`viewer`, `manager`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    /// Parses [`Role::as_str`]'s text (exact, lower case).
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Unique name (see [`check_name`]).
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The business units given to the user, by name, sorted.
    pub units: Vec<String>,
    /// A console password is set.
    pub has_password: bool,
    /// Refused everywhere (tokens and password) while set.
    pub disabled: bool,
    /// When the user was created.
    pub created_at: Timestamp,
}

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Unique name (see [`check_name`]).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Business units by name; each must exist.
    pub units: Vec<String>,
}

/// A change to a user; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    /// New role.
    pub role: Option<Role>,
    /// The complete new set of units (each must exist).
    pub units: Option<Vec<String>>,
    /// Disable or enable.
    pub disabled: Option<bool>,
}

/// A stored business unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Row id.
    pub id: i64,
    /// Unique name (see [`check_name`]).
    pub name: String,
    /// The queues it groups, sorted.
    pub queues: Vec<QueueId>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A change to a unit; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitPatch {
    /// New unique name.
    pub name: Option<String>,
    /// The complete new set of queues.
    pub queues: Option<Vec<QueueId>>,
}

/// A stored API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Row id (what [`AccountStore::revoke_token`] takes).
    pub id: i64,
    /// The user it authenticates.
    pub user: String,
    /// Free text saying what it is for.
    pub label: String,
    /// When it was issued.
    pub created_at: Timestamp,
    /// Refused from this instant on, if set.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Last accepted use (updated at most once a minute).
    pub last_used_at: Option<Timestamp>,
}

/// A token to store: its owner, label, expiry and the SHA-256 of its secret
/// ([`TokenSecret::generate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The user it authenticates.
    pub user: String,
    /// Free text.
    pub label: String,
    /// Optional expiry.
    pub expires_at: Option<Timestamp>,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
}

/// The authenticated caller of a request: the user, their role and the
/// queues of their units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User row id.
    pub user_id: i64,
    /// User name (the audit log's actor).
    pub name: String,
    /// Role.
    pub role: Role,
    /// The user's units, by name, sorted.
    pub units: Vec<String>,
    /// Every queue of those units.
    pub queues: BTreeSet<QueueId>,
}

impl Principal {
    /// Whether the caller may see and act on `queue`: an admin on any, others
    /// on the queues of their units.
    pub fn sees_queue(&self, queue: &QueueId) -> bool {
        self.role == Role::Admin || self.queues.contains(queue)
    }
}

/// What [`AccountStore::authenticate`] found for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// A live token of an enabled user.
    Valid(Principal),
    /// No token has this hash.
    Unknown,
    /// The token's expiry has passed.
    Expired,
    /// The token was revoked.
    Revoked,
    /// The token's user is disabled.
    UserDisabled,
}

/// Who makes a change, and when: the audit row's actor and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The acting user's name, or `cli` for the local command line.
    pub actor: String,
    /// When.
    pub at: Timestamp,
}

/// An audit row to append (for changes outside the account tables: gates,
/// agent pauses).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Who and when.
    pub change: Change,
    /// What was done, `snake_case` (`set_gates`, `pause_agent`, …).
    pub action: String,
    /// What it was done to (`gates`, `agent:alice`, `user:bob`, …).
    pub target: String,
    /// The object before the change, if it existed.
    pub before: Option<serde_json::Value>,
    /// The object after the change, if it still exists.
    pub after: Option<serde_json::Value>,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// Row id, increasing: the pagination cursor.
    pub id: i64,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// Before, as JSON.
    pub before: Option<serde_json::Value>,
    /// After, as JSON.
    pub after: Option<serde_json::Value>,
}

/// Which audit rows [`AccountStore::audit`] returns: `at` in `[from, to)`,
/// id above `after_id`, oldest first, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditQuery {
    /// Earliest time, inclusive.
    pub from: Option<Timestamp>,
    /// Latest time, exclusive.
    pub to: Option<Timestamp>,
    /// Only rows with a larger id (the previous page's last id).
    pub after_id: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// Why an account operation was refused or failed.
#[derive(Debug, Error)]
pub enum AccountError {
    /// The store itself failed (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name is empty, too long or has characters outside
    /// `A-Z a-z 0-9 - _ . @`.
    #[error(
        "{what} name {name:?} is not valid (1..=64 of A-Z a-z 0-9 - _ . @, starting with a letter or digit)"
    )]
    InvalidName {
        /// `user` or `unit`.
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// A user or unit of that name exists already.
    #[error("{what} {name:?} already exists")]
    Exists {
        /// `user` or `unit`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// No user, unit or token of that name or id.
    #[error("no {what} {name:?}")]
    NotFound {
        /// `user`, `unit` or `token`.
        what: &'static str,
        /// The name or id asked for.
        name: String,
    },
}

/// The accounts, as the admin API and the CLI see them.
pub trait AccountStore: Send {
    /// Creates a user (no password, enabled) and audits it.
    fn create_user(&mut self, new: &NewUser, by: &Change) -> Result<User, AccountError>;

    /// Every user, by name.
    fn users(&self) -> Result<Vec<User>, AccountError>;

    /// The user called `name`, if any.
    fn user(&self, name: &str) -> Result<Option<User>, AccountError>;

    /// Changes a user's role, units or disabled flag and audits it.
    fn update_user(
        &mut self,
        name: &str,
        patch: &UserPatch,
        by: &Change,
    ) -> Result<User, AccountError>;

    /// Deletes a user and their tokens; audits it.
    fn delete_user(&mut self, name: &str, by: &Change) -> Result<(), AccountError>;

    /// Sets (or with `None` clears) a user's argon2id PHC string
    /// ([`hash_password`]); audits it without the hash.
    fn set_password(
        &mut self,
        name: &str,
        phc: Option<&str>,
        by: &Change,
    ) -> Result<(), AccountError>;

    /// The user's PHC string, if a password is set.
    fn password_hash(&self, name: &str) -> Result<Option<String>, AccountError>;

    /// Creates a business unit grouping `queues` and audits it.
    fn create_unit(
        &mut self,
        name: &str,
        queues: &[QueueId],
        by: &Change,
    ) -> Result<Unit, AccountError>;

    /// Every unit, by name.
    fn units(&self) -> Result<Vec<Unit>, AccountError>;

    /// Renames a unit or replaces its queues; audits it.
    fn update_unit(
        &mut self,
        name: &str,
        patch: &UnitPatch,
        by: &Change,
    ) -> Result<Unit, AccountError>;

    /// Deletes a unit (its users lose it); audits it.
    fn delete_unit(&mut self, name: &str, by: &Change) -> Result<(), AccountError>;

    /// Stores a token for an existing user and audits it (without the hash).
    fn issue_token(&mut self, new: &NewToken, by: &Change) -> Result<TokenInfo, AccountError>;

    /// The tokens of `user` (or of everyone), oldest first; no secrets.
    fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, AccountError>;

    /// Revokes token `id` (a revoked one stays revoked at its first time);
    /// audits it.
    fn revoke_token(&mut self, id: i64, by: &Change) -> Result<TokenInfo, AccountError>;

    /// Looks a token up by the SHA-256 of its secret and says whether it is
    /// live at `now`; a live one's `last_used_at` is brought up to date (at
    /// most once a minute, to keep reads cheap).
    fn authenticate(
        &mut self,
        hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Authentication, AccountError>;

    /// Appends one audit row (for changes made outside the account tables).
    fn append_audit(&mut self, entry: &AuditEntry) -> Result<i64, AccountError>;

    /// Audit rows, oldest first (see [`AuditQuery`]).
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, AccountError>;
}

/// The prefix of every API token.
pub const TOKEN_PREFIX: &str = "cbd_";

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;

/// A freshly generated token: the text to show once, and the hash to store.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret {
    /// `cbd_…`: shown to the user once, never stored.
    pub text: String,
    /// SHA-256 of `text`.
    pub hash: [u8; 32],
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<hidden>)")
    }
}

impl TokenSecret {
    /// A new token from the operating system's random source.
    pub fn generate() -> Result<TokenSecret, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        let text = format!("{TOKEN_PREFIX}{}", Base64UrlUnpadded::encode_string(&bytes));
        let hash = token_hash(&text).expect("a generated token has the token format");
        Ok(TokenSecret { text, hash })
    }
}

/// The SHA-256 of a presented token, or `None` when it does not have the
/// token format (prefix, 43 base64url characters for 32 bytes): such a
/// string cannot be a token, and is refused without a store lookup.
pub fn token_hash(text: &str) -> Option<[u8; 32]> {
    let body = text.strip_prefix(TOKEN_PREFIX)?;
    let mut bytes = [0u8; TOKEN_BYTES];
    let decoded = Base64UrlUnpadded::decode(body, &mut bytes).ok()?;
    if decoded.len() != TOKEN_BYTES {
        return None;
    }
    Some(Sha256::digest(text.as_bytes()).into())
}

/// Why a password was not hashed.
#[derive(Debug, Error)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// Longer than [`MAX_PASSWORD_BYTES`] (argon2 work is bounded).
    #[error("the password must have at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The hasher failed (no random salt).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Fewest characters in a password.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Most bytes in a password.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// An argon2id PHC string (`$argon2id$v=19$…`, random salt, the crate's
/// default cost) for `password`.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (false for a string that
/// does not parse).
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Checks a user or unit name: 1..=64 of `A-Z a-z 0-9 - _ . @`, the first
/// a letter or digit (so that it never looks like an option on the CLI).
pub fn check_name(what: &'static str, name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_format_and_differ() {
        let a = TokenSecret::generate().unwrap();
        let b = TokenSecret::generate().unwrap();
        assert!(a.text.starts_with("cbd_"), "{}", a.text);
        assert_eq!(a.text.len(), 4 + 43);
        assert!(
            a.text[4..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a.text, b.text);
        assert_ne!(a.hash, b.hash);
        assert_eq!(token_hash(&a.text), Some(a.hash));
        assert_eq!(format!("{a:?}"), "TokenSecret(<hidden>)");
    }

    #[test]
    fn token_hash_is_sha256_of_the_whole_text() {
        let text = format!("cbd_{}", "A".repeat(43));
        let expected: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        assert_eq!(token_hash(&text), Some(expected));
    }

    #[test]
    fn rejects_strings_without_the_token_format() {
        let good = TokenSecret::generate().unwrap().text;
        for bad in [
            "",
            "cbd_",
            "Bearer cbd_x",
            &good[4..],                         // no prefix
            &good[..good.len() - 1],            // one character short
            &format!("{good}A"),                // one too many
            &format!("cbd_{}", "*".repeat(43)), // not base64url
            &format!("CBD_{}", &good[4..]),     // prefix is case-sensitive
        ] {
            assert_eq!(token_hash(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn password_hash_is_argon2id_salted_and_verifies() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "a random salt each time");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("correct horse!", &a));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn rejects_short_and_huge_passwords() {
        assert!(matches!(
            hash_password("1234567"),
            Err(PasswordError::TooShort)
        ));
        assert!(matches!(
            hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        ));
    }

    #[test]
    fn names_are_checked() {
        for good in ["alice", "a", "ops-team_2.east", "bob@example.com", "9lives"] {
            assert!(check_name("user", good).is_ok(), "{good}");
        }
        for bad in ["", "-rf", "_x", "a b", "ünï", "a/b", &"x".repeat(65)] {
            let e = check_name("user", bad).unwrap_err();
            assert!(e.to_string().starts_with("user name"), "{e}");
        }
    }

    #[test]
    fn role_text_round_trips() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert!(Role::Admin > Role::Manager && Role::Manager > Role::Viewer);
    }
}
