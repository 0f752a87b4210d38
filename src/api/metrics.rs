//! Prometheus text exposition (format 0.0.4) of an [`EngineStatus`].
//!
//! Every family is written with its `# HELP` and `# TYPE` lines and one
//! sample without labels, except `callbackd_edge_dropped_total`, which has
//! one sample per drop reason (`reason` label, see
//! [`DropReason`]). Gauges are live state read from the core task at
//! scrape time; `*_total` counters count since start-up (they restart at 0
//! with the process, which Prometheus' `rate()` handles as a reset).

use std::fmt::Write as _;

use crate::engine::EngineStatus;
use crate::engine::transport::DropReason;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric family [`render`] writes, in order: name, type, help text.
pub const FAMILIES: [(&str, Kind, &str); 22] = [
    (
        "callbackd_draining",
        Kind::Gauge,
        "1 while the engine shuts down (calls hung up, new ones refused), else 0.",
    ),
    (
        "callbackd_calls",
        Kind::Gauge,
        "Calls in progress in the call layer.",
    ),
    (
        "callbackd_sip_calls",
        Kind::Gauge,
        "SIP calls (INVITE dialogs) not yet ended.",
    ),
    (
        "callbackd_sip_transactions",
        Kind::Gauge,
        "Live SIP transactions, server and client.",
    ),
    (
        "callbackd_sip_timers",
        Kind::Gauge,
        "SIP objects with a pending timer.",
    ),
    (
        "callbackd_rtp_ports_in_use",
        Kind::Gauge,
        "RTP/RTCP port pairs in use.",
    ),
    (
        "callbackd_gate_registration_enabled",
        Kind::Gauge,
        "1 while callbacks are offered to callers, else 0.",
    ),
    (
        "callbackd_gate_launch_enabled",
        Kind::Gauge,
        "1 while registered callbacks are launched, else 0.",
    ),
    (
        "callbackd_incoming_calls_total",
        Kind::Counter,
        "INVITEs that passed the SIP checks and reached the call layer.",
    ),
    (
        "callbackd_callbacks_registered_total",
        Kind::Counter,
        "Callbacks durably registered.",
    ),
    (
        "callbackd_callbacks_already_scheduled_total",
        Kind::Counter,
        "Registrations refused because the number already had an active callback in the queue.",
    ),
    (
        "callbackd_callback_registration_failures_total",
        Kind::Counter,
        "Registrations the store failed to commit (nothing written).",
    ),
    (
        "callbackd_edge_rejected_403_total",
        Kind::Counter,
        "Stateless 403s sent at the socket to sources outside every allow-list.",
    ),
    (
        "callbackd_edge_overload_503_total",
        Kind::Counter,
        "Stateless 503s (Retry-After) sent at the socket to new INVITEs while overloaded.",
    ),
    (
        "callbackd_edge_tcp_connections",
        Kind::Gauge,
        "Accepted TCP connections open (capped by edge.max_tcp_connections).",
    ),
    (
        "callbackd_edge_queue_depth",
        Kind::Gauge,
        "Received SIP messages waiting for the core (overload above edge.overload_queue).",
    ),
    (
        "callbackd_edge_overloaded",
        Kind::Gauge,
        "1 while messages wait longer than edge.overload_delay_ms for the core, else 0.",
    ),
    (
        "callbackd_sip_send_failures_total",
        Kind::Counter,
        "SIP messages not delivered: sends refused, TCP connects or writes that failed.",
    ),
    (
        "callbackd_edge_trunk_addresses",
        Kind::Gauge,
        "Resolved trunk addresses allowed without being listed in acl.sip.",
    ),
    (
        "callbackd_register_auth_failures_total",
        Kind::Counter,
        "REGISTERs with wrong credentials (bad password or unknown user).",
    ),
    (
        "callbackd_register_refused_total",
        Kind::Counter,
        "REGISTERs refused unexamined from an address slowed down or blocked after failures.",
    ),
    (
        "callbackd_register_blocked_total",
        Kind::Counter,
        "Times an address was blocked for edge.auth_block_s after edge.auth_block_after failures.",
    ),
];

/// The labelled family: one sample per [`DropReason`].
pub const DROPPED: (&str, &str) = (
    "callbackd_edge_dropped_total",
    "Messages and connections stopped at the socket, by reason (outsider, outsider_tcp, tcp_total_cap, tcp_source_cap, source_rate, overload, queue_full, stateless_cap).",
);

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing count since start-up.
    Counter,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// The exposition of `status`: every family of [`FAMILIES`], in order.
pub fn render(status: &EngineStatus) -> String {
    let s = &status.stats;
    let t = &status.totals;
    let values: [u64; FAMILIES.len()] = [
        u64::from(status.draining),
        count(s.calls),
        count(s.sip.calls),
        count(s.sip.transactions),
        count(s.sip.timers),
        count(s.rtp_ports),
        u64::from(status.gates.registration_enabled),
        u64::from(status.gates.launch_enabled),
        t.incoming_calls,
        t.callbacks_registered,
        t.callbacks_already_scheduled,
        t.registration_failures,
        status.edge.rejected_403,
        status.edge.overload_503,
        status.edge.tcp_connections,
        status.edge.queue_depth,
        u64::from(status.edge.overloaded),
        status.edge.send_failures,
        status.edge.trunk_targets,
        t.auth.failures,
        t.auth.refused,
        t.auth.blocked,
    ];
    let mut out = String::with_capacity(2048);
    for ((name, kind, help), value) in FAMILIES.iter().zip(values) {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {}\n{name} {value}\n",
            kind.as_str()
        );
    }
    let (name, help) = DROPPED;
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
    for reason in DropReason::ALL {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{}\"}} {}",
            reason.label(),
            status.edge.dropped(reason)
        );
    }
    out
}

/// A `usize` count as a sample value (saturating; never reached in practice).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::hours::Gates;
    use crate::engine::transport::EdgeTotals;
    use crate::engine::{EngineStats, EngineTotals};
    use crate::sip::endpoint::Stats;
    use crate::sip::registrar::GuardStats;

    fn status() -> EngineStatus {
        EngineStatus {
            stats: EngineStats {
                sip: Stats {
                    calls: 2,
                    transactions: 3,
                    timers: 4,
                },
                calls: 5,
                rtp_ports: 6,
            },
            gates: Gates {
                registration_enabled: false,
                launch_enabled: true,
            },
            draining: true,
            totals: EngineTotals {
                incoming_calls: 7,
                callbacks_registered: 8,
                callbacks_already_scheduled: 9,
                registration_failures: 10,
                auth: GuardStats {
                    failures: 17,
                    refused: 18,
                    blocked: 19,
                    tracked: 1,
                },
            },
            edge: EdgeTotals {
                dropped: [101, 102, 103, 104, 105, 106, 107, 108],
                rejected_403: 11,
                overload_503: 12,
                tcp_connections: 13,
                queue_depth: 14,
                overloaded: true,
                trunk_targets: 16,
                send_failures: 20,
            },
        }
    }

    /// The sample value of `name` (the line without `#` that starts with
    /// `name `).
    fn sample(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_value_lands_on_its_own_metric() {
        let text = render(&status());
        let expected = [
            ("callbackd_draining", 1),
            ("callbackd_calls", 5),
            ("callbackd_sip_calls", 2),
            ("callbackd_sip_transactions", 3),
            ("callbackd_sip_timers", 4),
            ("callbackd_rtp_ports_in_use", 6),
            ("callbackd_gate_registration_enabled", 0),
            ("callbackd_gate_launch_enabled", 1),
            ("callbackd_incoming_calls_total", 7),
            ("callbackd_callbacks_registered_total", 8),
            ("callbackd_callbacks_already_scheduled_total", 9),
            ("callbackd_callback_registration_failures_total", 10),
            ("callbackd_edge_rejected_403_total", 11),
            ("callbackd_edge_overload_503_total", 12),
            ("callbackd_edge_tcp_connections", 13),
            ("callbackd_edge_queue_depth", 14),
            ("callbackd_edge_overloaded", 1),
            ("callbackd_sip_send_failures_total", 20),
            ("callbackd_edge_trunk_addresses", 16),
            ("callbackd_register_auth_failures_total", 17),
            ("callbackd_register_refused_total", 18),
            ("callbackd_register_blocked_total", 19),
        ];
        assert_eq!(expected.len(), FAMILIES.len());
        for (name, value) in expected {
            assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
        }
    }

    #[test]
    fn every_family_has_help_type_and_one_sample_in_order() {
        let text = render(&status());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3 * FAMILIES.len() + 2 + DropReason::ALL.len());
        for (i, (name, kind, help)) in FAMILIES.iter().enumerate() {
            assert_eq!(lines[3 * i], format!("# HELP {name} {help}"));
            assert_eq!(lines[3 * i + 1], format!("# TYPE {name} {}", kind.as_str()));
            assert!(lines[3 * i + 2].starts_with(&format!("{name} ")));
        }
        assert!(text.ends_with('\n'), "the format ends every line with \\n");
    }

    #[test]
    fn every_drop_reason_has_its_labelled_sample() {
        let text = render(&status());
        let (name, help) = DROPPED;
        assert!(text.contains(&format!("# HELP {name} {help}\n# TYPE {name} counter\n")));
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            let line = format!("{name}{{reason=\"{}\"}} {}", reason.label(), 101 + i);
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn counters_end_in_total_and_gauges_do_not() {
        for (name, kind, _) in FAMILIES {
            assert_eq!(name.ends_with("_total"), kind == Kind::Counter, "{name}");
        }
    }

    #[test]
    fn names_and_help_are_valid_exposition_text() {
        for (name, _, help) in FAMILIES {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            // HELP text may not hold a raw newline or backslash unescaped.
            assert!(!help.contains(['\n', '\\']), "{name}");
        }
    }
}
