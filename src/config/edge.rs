//! `[edge]`: what an internet-facing SIP port needs besides the allow-lists
//! — caps on TCP connections and per-source message rates, overload
//! control, digest brute-force protection — and the capacity the process
//! can hold given its open-files limit and RTP ports.

use serde::Deserialize;

use crate::sip::registrar::GuardSettings;

use super::{CallConfig, CallbacksConfig, Fault, Invalid, RtpConfig, fail, in_range};

/// `[edge]`: caps and overload thresholds (see the README, "Running on the
/// internet").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Accepted TCP connections open at once, all sources together; more
    /// are closed at accept.
    pub max_tcp_connections: u32,
    /// Accepted TCP connections open at once from one address.
    pub max_tcp_per_source: u32,
    /// SIP messages per second from one address (UDP datagrams and TCP
    /// messages), bursts of twice that; the rest are dropped.
    pub max_messages_per_source: u32,
    /// Stateless answers (403 to outsiders, 503 while overloaded) per
    /// second, all sources together; beyond it requests are only dropped,
    /// so the port cannot be used to reflect a flood.
    pub max_stateless_per_s: u32,
    /// Received messages waiting for the core beyond which new INVITEs get
    /// 503 (the queue holds 4,096).
    pub overload_queue: u32,
    /// A message that waited longer than this for the core means it is
    /// falling behind: new INVITEs get 503 until one waits less.
    pub overload_delay_ms: u64,
    /// The `Retry-After` of the overload 503, seconds.
    pub overload_retry_after_s: u32,
    /// Failed REGISTERs from one address after which it may try only once
    /// per second, then once per 2, 4, 8… s (others get 403 unexamined).
    pub auth_slowdown_after: u32,
    /// Failed REGISTERs from one address after which every REGISTER from
    /// it gets 403 for `auth_block_s`.
    pub auth_block_after: u32,
    /// How long an address is refused after `auth_block_after` failures.
    pub auth_block_s: u64,
}

impl EdgeConfig {
    /// The registrar's brute-force protection.
    pub fn guard(&self) -> GuardSettings {
        GuardSettings {
            slowdown_after: self.auth_slowdown_after,
            block_after: self.auth_block_after,
            block_for: std::time::Duration::from_secs(self.auth_block_s),
        }
    }

    /// The `[edge]` value rules, in file order.
    pub(super) fn check(&self) -> Result<(), Fault> {
        in_range(
            "edge.max_tcp_connections",
            self.max_tcp_connections.into(),
            1..=1_000_000,
        )?;
        in_range(
            "edge.max_tcp_per_source",
            self.max_tcp_per_source.into(),
            1..=self.max_tcp_connections.into(),
        )?;
        in_range(
            "edge.max_messages_per_source",
            self.max_messages_per_source.into(),
            1..=1_000_000,
        )?;
        in_range(
            "edge.max_stateless_per_s",
            self.max_stateless_per_s.into(),
            0..=1_000_000,
        )?;
        in_range("edge.overload_queue", self.overload_queue.into(), 16..=4096)?;
        in_range(
            "edge.overload_delay_ms",
            self.overload_delay_ms,
            10..=60_000,
        )?;
        in_range(
            "edge.overload_retry_after_s",
            self.overload_retry_after_s.into(),
            1..=3600,
        )?;
        in_range(
            "edge.auth_slowdown_after",
            self.auth_slowdown_after.into(),
            1..=1000,
        )?;
        if self.auth_block_after <= self.auth_slowdown_after {
            return fail(
                "edge.auth_block_after",
                Invalid::Below {
                    value: self.auth_block_after.into(),
                    other_field: "edge.auth_slowdown_after + 1",
                    other: u64::from(self.auth_slowdown_after) + 1,
                },
            );
        }
        in_range("edge.auth_block_s", self.auth_block_s, 1..=86_400)
    }
}

impl Default for EdgeConfig {
    fn default() -> EdgeConfig {
        EdgeConfig {
            max_tcp_connections: 1024,
            max_tcp_per_source: 64,
            max_messages_per_source: 1000,
            max_stateless_per_s: 200,
            overload_queue: 1024,
            overload_delay_ms: 500,
            overload_retry_after_s: 5,
            auth_slowdown_after: 5,
            auth_block_after: 20,
            auth_block_s: 300,
        }
    }
}

/// File descriptors kept for everything but TCP connections and media:
/// the listeners, the store (database, WAL, shared memory), the admin API
/// and its clients, DNS, the runtime's own, standard streams.
pub const RESERVED_FDS: u64 = 256;

/// How many calls the process can hold, from its open-files limit and the
/// RTP port range. A media stream (one leg of a call) holds an RTP/RTCP
/// port pair and the two sockets on it: an inbound call one, a callback
/// two (agent and customer legs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The open-files limit the figure is for.
    pub open_files: u64,
    /// Kept for the TCP connections (`edge.max_tcp_connections`) and
    /// [`RESERVED_FDS`].
    pub reserved_fds: u64,
    /// Media streams the remaining descriptors hold (two sockets each).
    pub streams_by_fds: u64,
    /// Media streams the RTP range holds (one port pair each).
    pub streams_by_ports: u64,
    /// The smaller of the two.
    pub streams: u64,
    /// `call.max_calls`: inbound calls, one stream each.
    pub max_calls: u64,
    /// `callbacks.max_lines` callbacks at once, two streams each.
    pub callback_legs: u64,
}

impl Capacity {
    /// The capacity under an open-files limit of `open_files`.
    pub fn new(
        open_files: u64,
        edge: &EdgeConfig,
        rtp: &RtpConfig,
        call: &CallConfig,
        callbacks: &CallbacksConfig,
    ) -> Capacity {
        let reserved_fds = RESERVED_FDS + u64::from(edge.max_tcp_connections);
        let streams_by_fds = open_files.saturating_sub(reserved_fds) / 2;
        let streams_by_ports = u64::from(rtp.port_pairs());
        Capacity {
            open_files,
            reserved_fds,
            streams_by_fds,
            streams_by_ports,
            streams: streams_by_fds.min(streams_by_ports),
            max_calls: call.max_calls.into(),
            callback_legs: 2 * u64::from(callbacks.max_lines),
        }
    }

    /// Inbound calls the process can hold beside a full complement of
    /// callbacks.
    pub fn inbound_calls(&self) -> u64 {
        self.streams.saturating_sub(self.callback_legs)
    }

    /// The open-files rule: every inbound call `call.max_calls` allows and
    /// every callback leg must have its two sockets. (The RTP range is
    /// checked against `max_calls` by the `[call]` rules.)
    pub fn check(&self) -> Result<(), (String, Invalid)> {
        if self.max_calls + self.callback_legs > self.streams_by_fds {
            return Err((
                "call.max_calls".to_owned(),
                Invalid::NotEnoughFiles {
                    calls: self.max_calls,
                    legs: self.callback_legs,
                    streams: self.streams_by_fds,
                    open_files: self.open_files,
                },
            ));
        }
        Ok(())
    }
}

/// `check-config` prints this.
impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "capacity: {} media streams (open files {} - {} reserved = {} streams; RTP ports {} pairs); \
             call.max_calls {} inbound + callbacks.max_lines x 2 = {} callback legs; \
             {} inbound calls fit beside full callback lines",
            self.streams,
            self.open_files,
            self.reserved_fds,
            self.streams_by_fds,
            self.streams_by_ports,
            self.max_calls,
            self.callback_legs,
            self.inbound_calls(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn shipped_edge_is_the_default() {
        let c = parse(SHIPPED).expect("shipped");
        assert_eq!(c.edge, EdgeConfig::default());
    }

    #[test]
    fn rejects_per_source_cap_above_total() {
        let e = error("[edge]\nmax_tcp_connections = 10\nmax_tcp_per_source = 11\n");
        assert_eq!(
            e,
            "config.toml: edge.max_tcp_per_source: 11 is outside 1..=10"
        );
    }

    #[test]
    fn rejects_block_not_after_slowdown() {
        let e = error("[edge]\nauth_slowdown_after = 5\nauth_block_after = 5\n");
        assert!(
            e.starts_with("config.toml: edge.auth_block_after: 5 is less than"),
            "{e}"
        );
    }

    #[test]
    fn capacity_counts_fds_ports_inbound_and_legs() {
        let c = parse("[rtp]\nport_min = 20000\nport_max = 20999\n[call]\nmax_calls = 200\n[callbacks]\nmax_lines = 15\n").expect("valid");
        let cap = c.capacity(20_000);
        assert_eq!(cap.reserved_fds, 256 + 1024);
        assert_eq!(cap.streams_by_fds, (20_000 - 1280) / 2);
        assert_eq!(cap.streams_by_ports, 500);
        assert_eq!(cap.streams, 500);
        assert_eq!(cap.callback_legs, 30);
        assert_eq!(cap.inbound_calls(), 470);
        assert!(cap.check().is_ok());
        assert!(
            cap.to_string().starts_with("capacity: 500 media streams"),
            "{cap}"
        );
        // The default soft limit of many systems: 1,024 descriptors.
        let small = c.capacity(1024);
        assert_eq!(small.streams_by_fds, 0);
        let (field, reason) = small.check().expect_err("200 calls in 1,024 fds");
        assert_eq!(field, "call.max_calls");
        assert!(
            reason.to_string().contains("open-files limit (1024)"),
            "{reason}"
        );
        let fits = c.capacity(1280 + 2 * 230);
        assert!(fits.check().is_ok(), "200 calls + 30 legs in 230 streams");
        assert!(c.capacity(1280 + 2 * 229).check().is_err());
    }
}
