//! The organisation at start-up: the stored version wins over the file.
//!
//! On the first start (an empty store) `config.toml`'s `[org]`,
//! `[[queues]]` and `[[agents]]` are stored as version 1; on every later
//! start the latest stored version is in force and the file's sections are
//! ignored (a warning says so when they differ). `callbackd import` stores
//! a file's sections as the next version; the admin API changes it at run
//! time; `callbackd export` writes it out.

use jiff::Timestamp;
use tracing::{info, warn};

use crate::callback::store::{AuditEntry, Change, OrgSaveError, OrganisationStore, SqliteStore};
use crate::config::{Organisation, Settings};

use super::EngineError;

/// The audit actor of versions written from the configuration file.
pub const FILE_ACTOR: &str = "config.toml";

/// `settings` with the stored organisation, and its version; seeds the
/// store from `settings` when it holds none. Fails when the stored
/// document does not pass this build's rules with the file's other
/// sections (the error names the field; `callbackd import` replaces it).
pub fn adopt_organisation(settings: Settings) -> Result<(Settings, u64), EngineError> {
    let mut store = SqliteStore::open(settings.store_path())?;
    adopt_with(settings, &mut store)
}

/// [`adopt_organisation`] on an open store.
pub fn adopt_with(
    settings: Settings,
    store: &mut impl OrganisationStore,
) -> Result<(Settings, u64), EngineError> {
    let Some(stored) = store.organisation()? else {
        let document = settings.organisation();
        let version = save(store, 0, &document, "seed_organisation", None)?;
        info!(version, "organisation stored from the configuration file");
        return Ok((settings, version));
    };
    let bad = |detail: String| EngineError::Organisation {
        version: stored.version,
        detail,
    };
    let document = Organisation::from_toml(&stored.document).map_err(|e| bad(e.to_string()))?;
    if document != settings.organisation() {
        warn!(
            version = stored.version,
            changed_by = %stored.changed_by,
            "config.toml's [org], [[queues]] and [[agents]] differ from the stored \
             organisation, which is in force (`callbackd export` shows it; \
             `callbackd import` stores the file's)"
        );
    }
    let adopted = settings
        .with_organisation(document)
        .map_err(|e| bad(e.to_string()))?;
    info!(version = stored.version, "organisation read from the store");
    Ok((adopted, stored.version))
}

/// Stores `document` as the version after `base`, audited as `action` by
/// the configuration file.
pub fn save(
    store: &mut impl OrganisationStore,
    base: u64,
    document: &Organisation,
    action: &str,
    before: Option<&Organisation>,
) -> Result<u64, EngineError> {
    let audit = AuditEntry {
        change: Change {
            actor: FILE_ACTOR.to_owned(),
            at: Timestamp::now(),
        },
        action: action.to_owned(),
        target: "organisation".to_owned(),
        before: before.map(redacted),
        after: Some(redacted(document)),
    };
    store
        .save_organisation(base, &document.to_toml(), &audit)
        .map_err(|e| match e {
            OrgSaveError::Store(e) => EngineError::Store(e),
            OrgSaveError::Conflict { latest } => EngineError::Organisation {
                version: latest,
                detail: "changed by someone else meanwhile; try again".to_owned(),
            },
        })
}

/// The organisation as JSON without agents' passwords (for the audit log
/// and the API): each agent shows `"password_set": true|false` instead.
pub fn redacted(document: &Organisation) -> serde_json::Value {
    let mut value = serde_json::to_value(document)
        .expect("the organisation's fields are strings, numbers, bools and string-keyed maps");
    if let Some(agents) = value.get_mut("agents").and_then(|a| a.as_array_mut()) {
        for agent in agents {
            if let Some(agent) = agent.as_object_mut() {
                let set = agent.remove("password").is_some_and(|p| !p.is_null());
                agent.insert("password_set".to_owned(), set.into());
            }
        }
    }
    value
}
