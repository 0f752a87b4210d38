//! The callback domain: business-hours gates, the durable store of callback
//! requests, the launch scheduler, one callback attempt (agent first) as a
//! state machine, trunk dialing rules and call detail records. Validated
//! numbers and the ids live in [`crate::domain`] and are re-exported here.

pub mod cdr;
pub mod dialer;
pub mod hours;
pub mod scheduler;
pub mod store;
pub mod trunk;
pub mod view;
pub mod webhook;

/// Numbers as the caller keys them; defined in [`crate::domain::number`]
/// (the IVR validates with it too) and kept reachable here.
pub use crate::domain::number;
/// The ids shared with the ACD and the IVR, defined in [`crate::domain`].
pub use crate::domain::{CallbackId, QueueId};
