//! The caller-facing IVR, pure: the registration flow and the estimated
//! callback time (ECBT).

pub mod ecbt;
pub mod flow;

/// An estimated callback time as it is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecbt {
    /// "about N minutes": whole minutes, rounded up, at least the floor.
    Minutes(u32),
    /// "more than N minutes": the estimate passed the configured ceiling.
    MoreThan(u32),
}
