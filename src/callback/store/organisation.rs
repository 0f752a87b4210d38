//! The organisation as stored: numbered versions of one TOML document
//! (`[org]`, `[[queues]]`, `[[agents]]`, see
//! [`crate::config::Organisation`]), each written with its audit row.
//!
//! The store does not interpret the document; the caller checks it (the
//! configuration's value rules) before saving. Versions start at 1 and
//! every save writes the next one: a save that names a version other than
//! the latest is refused ([`OrgSaveError::Conflict`]), so two
//! administrators editing at once cannot silently undo each other (the API
//! maps it to 412 with `If-Match`, and retries its own read-modify-write).
//! Older versions stay, for the record.

use std::collections::BTreeMap;

use jiff::Timestamp;
use thiserror::Error;

use super::{AuditEntry, StoreError};
use crate::callback::QueueId;

/// One stored version of the organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrganisation {
    /// 1 for the seed, then one more per change.
    pub version: u64,
    /// The TOML document.
    pub document: String,
    /// When it was written.
    pub changed_at: Timestamp,
    /// Who wrote it (`config.toml` for the seed, else a user name).
    pub changed_by: String,
}

/// Why a version was not saved.
#[derive(Debug, Error)]
pub enum OrgSaveError {
    /// The latest version is not the one the change was made to.
    #[error("the organisation changed meanwhile: version {latest} is the latest")]
    Conflict {
        /// The latest stored version (0: none).
        latest: u64,
    },
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The organisation's versions.
pub trait OrganisationStore {
    /// The latest version, or `None` before the first start seeded it.
    fn organisation(&self) -> Result<Option<StoredOrganisation>, StoreError>;

    /// Writes version `base + 1` with `document`, and `audit` in the same
    /// transaction, if `base` is the latest version (0: none yet).
    fn save_organisation(
        &mut self,
        base: u64,
        document: &str,
        audit: &AuditEntry,
    ) -> Result<u64, OrgSaveError>;

    /// Pending callbacks per queue (what launching switched back on would
    /// start), queues without any left out.
    fn pending_by_queue(&self) -> Result<BTreeMap<QueueId, u64>, StoreError>;
}
