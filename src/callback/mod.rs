//! The callback domain: validated numbers, business-hours gates, the
//! durable store of callback requests, the launch scheduler, one callback
//! attempt (agent first) as a state machine, trunk dialing rules and call
//! detail records.

pub mod cdr;
pub mod dialer;
pub mod hours;
pub mod number;
pub mod scheduler;
pub mod store;
pub mod trunk;

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
