//! The vocabulary every layer shares: queue, callback and caller ids, and
//! validated phone numbers. Pure values with no dependencies on the rest of
//! the crate, so that the ACD, the callback domain, the IVR and the
//! configuration can all name them without depending on one another.

pub mod number;

use std::fmt;

/// A queue's identifier from the configuration (e.g. `"support"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub Box<str>);

impl QueueId {
    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The row id of a stored callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallbackId(pub i64);

impl fmt::Display for CallbackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A live caller as the ACD knows it: the engine's call key value
/// (`sip::endpoint::CallKey.0`), so the engine needs no second map from
/// calls to queue entries. Unique per queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerId(pub u64);
