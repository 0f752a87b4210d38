//! The callback domain: business-hours gates, the durable store of callback
//! requests, the launch scheduler, one callback attempt (agent first) as a
//! state machine, trunk dialing rules, call detail records, and the
//! customer's time zone (from the number) with the legal calling window in
//! [`timezone`]. Validated numbers and the ids live in [`crate::domain`] and
//! are re-exported here.

pub mod cdr;
pub mod dialer;
pub mod hours;
pub mod rules;
pub mod scheduler;
pub mod store;
pub mod timezone;
pub mod trunk;
pub mod view;
pub mod webhook;

/// Numbers as the caller keys them; defined in [`crate::domain::number`]
/// (the IVR validates with it too) and kept reachable here.
pub use crate::domain::number;
/// The ids shared with the ACD and the IVR, defined in [`crate::domain`].
pub use crate::domain::{CallbackId, QueueId};
