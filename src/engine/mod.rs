//! The tokio shell: sockets, clocks, and the wiring of the sans-IO cores.
pub mod transport;
