//! Prometheus text exposition (format 0.0.4) of a running engine, written
//! with `prometheus-client`'s encoder.
//!
//! A scrape asks the core task for one [`EngineStatus`] (the controller's
//! counters, plus what the media and store threads last published) and the
//! API's own store connection for the callbacks by queue and status, and
//! renders them through a [`Collector`] built for that scrape: nothing on a
//! call's path takes a lock or touches an atomic for metrics. Families
//! other API code bumps live in [`Shared`] (the webhook deliveries).
//!
//! Every family is written with its `# HELP` and `# TYPE` lines; a labelled
//! family shows one sample per label set seen so far (none before the
//! first). Gauges are live state at scrape time; `*_total` counters and
//! histograms count since start-up (they restart at 0 with the process,
//! which Prometheus' `rate()` handles as a reset). The families and their
//! labels are listed in [`FAMILIES`], [`DROPPED`] and [`LABELLED`], and in
//! the README's metrics table.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder,
    NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::b2bua::telemetry::Histogram;
use crate::engine::EngineStatus;
use crate::engine::transport::DropReason;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The families of one unlabelled sample each, first in every exposition
/// and in this order: name, type, help text (their names and meaning are
/// those of the hand-written exposition this module replaced).
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

/// The labelled families after [`FAMILIES`] and [`DROPPED`], in order:
/// name (histograms add `_bucket`, `_sum`, `_count`), type, labels, help.
pub const LABELLED: [(&str, Kind, &[&str], &str); 19] = [
    (
        "callbackd_calls_ended_total",
        Kind::Counter,
        &["direction", "outcome"],
        "Calls ended, by direction (inbound, outbound_agent, outbound_customer) and outcome (answered, busy, no_answer, failure, invalid_number, cancelled, interrupted): one per CDR leg, plus agent legs rung for live callers.",
    ),
    (
        "callbackd_sip_responses_sent_total",
        Kind::Counter,
        &["code", "method"],
        "SIP responses sent, by status code and CSeq method (retransmissions included).",
    ),
    (
        "callbackd_sip_responses_received_total",
        Kind::Counter,
        &["code", "method"],
        "SIP responses received, by status code and CSeq method (unknown methods: other).",
    ),
    (
        "callbackd_sip_retransmissions_total",
        Kind::Counter,
        &["direction"],
        "SIP retransmissions: sent (timer resends, 2xx until ACK, answers to repeats) and received (requests a live transaction absorbed).",
    ),
    (
        "callbackd_rtp_packets_total",
        Kind::Counter,
        &["direction"],
        "RTP datagrams: in (read from RTP sockets), out (prompts and tones sent), relayed (bridged to the other leg), refused (outside the allow-list or not the latched peer; RTCP too).",
    ),
    (
        "callbackd_rtcp_packets_total",
        Kind::Counter,
        &["direction"],
        "RTCP compound packets sent and accepted (in/out).",
    ),
    (
        "callbackd_media_send_errors_total",
        Kind::Counter,
        &[],
        "RTP and RTCP sends that failed.",
    ),
    (
        "callbackd_rtp_lost_packets_total",
        Kind::Counter,
        &[],
        "Packets lost in the RTP streams received (RFC 3550 A.3), summed from our RTCP report blocks.",
    ),
    (
        "callbackd_rtp_jitter_seconds",
        Kind::Histogram,
        &[],
        "Interarrival jitter (RFC 3550 A.8) of each received stream at each RTCP report we send.",
    ),
    (
        "callbackd_dtmf_digits_total",
        Kind::Counter,
        &["source"],
        "Key presses taken by the IVR, by the way the first copy came (rfc4733, inband, info).",
    ),
    (
        "callbackd_callbacks",
        Kind::Gauge,
        &["queue", "status"],
        "Stored callbacks by queue and status (read from the store at scrape time).",
    ),
    (
        "callbackd_ecbt_error_seconds",
        Kind::Histogram,
        &["queue"],
        "Announced ECBT error per callback: first customer dial minus registration minus the announced ECBT (positive: later than announced).",
    ),
    (
        "callbackd_ecbt_announced_minutes",
        Kind::Gauge,
        &["queue"],
        "The ECBT last announced to a caller of the queue who registered.",
    ),
    (
        "callbackd_ecbt_average_handle_time_seconds",
        Kind::Gauge,
        &["queue"],
        "The queue's rolling average handle time, which ECBTs are computed from.",
    ),
    (
        "callbackd_ecbt_staffed_agents",
        Kind::Gauge,
        &["queue"],
        "Agents an ECBT for the queue divides by now: registered or static, and not paused.",
    ),
    (
        "callbackd_scheduler_lag_seconds",
        Kind::Histogram,
        &[],
        "From a callback's due time (a retry's or a scheduled callback's) to its launch (hours, a free agent, a line and the poll included).",
    ),
    (
        "callbackd_store_commit_seconds",
        Kind::Histogram,
        &["op"],
        "Time of each store write (one transaction, synchronous=FULL) on the store thread, by op (register, due, claim, attempt, cdr).",
    ),
    (
        "callbackd_store_up",
        Kind::Gauge,
        &[],
        "1 when the API's store connection answered the callbacks query of this scrape, else 0.",
    ),
    (
        "callbackd_webhook_deliveries_total",
        Kind::Counter,
        &["result"],
        "Webhook deliveries by result (delivered, failed, retried), counted by the webhook worker.",
    ),
];

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing count since start-up.
    Counter,
    /// Observations in buckets, with their sum and count.
    Histogram,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }

    fn metric_type(self) -> MetricType {
        match self {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
            Kind::Histogram => MetricType::Histogram,
        }
    }
}

/// One row of the callbacks gauge: queue, status, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackCount {
    /// The queue.
    pub queue: String,
    /// The status (`pending`, `dialing`, …).
    pub status: &'static str,
    /// How many callbacks.
    pub count: u64,
}

/// The result of one webhook delivery try, the label of
/// `callbackd_webhook_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryResult {
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: no more retries.
    Failed,
    /// Failed this time; another try is scheduled.
    Retried,
}

impl EncodeLabelValue for DeliveryResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        encoder.write_str(match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Failed => "failed",
            DeliveryResult::Retried => "retried",
        })
    }
}

/// Families the API's own workers bump, shared by every scrape (cheap to
/// clone: the counters are behind an `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Shared {
    webhook_deliveries: Family<[(&'static str, DeliveryResult); 1], Counter>,
}

impl Shared {
    /// Counts one webhook delivery try: the hook the webhook worker calls
    /// (it renders once the first try is counted).
    pub fn webhook_delivery(&self, result: DeliveryResult) {
        self.webhook_deliveries
            .get_or_create(&[("result", result)])
            .inc();
    }
}

/// The exposition of `status` alone: the engine's families (the callbacks
/// gauge, the store probe and the shared families are left out).
pub fn render(status: &EngineStatus) -> String {
    render_scrape(status, None, None)
}

/// The whole exposition: the engine's families, then the callbacks by
/// queue and status (`None`: the store could not be read, `callbackd_store_up`
/// is 0), then `shared`'s.
pub fn render_scrape(
    status: &EngineStatus,
    callbacks: Option<&[CallbackCount]>,
    shared: Option<&Shared>,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        status: status.clone(),
        callbacks: callbacks.map(<[CallbackCount]>::to_vec),
        shared: shared.cloned(),
    }));
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail, and the collector only writes.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// The name `prometheus-client` takes: a counter's without `_total` (the
/// encoder appends it).
fn bare(name: &'static str, kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
        Kind::Gauge | Kind::Histogram => name,
    }
}

/// One scrape's values, written by [`Collector::encode`].
#[derive(Debug)]
struct Snapshot {
    status: EngineStatus,
    callbacks: Option<Vec<CallbackCount>>,
    /// A full scrape's (with the store probe), not [`render`]'s.
    shared: Option<Shared>,
}

/// No exemplars: the type `encode_histogram` wants for none.
type NoExemplars<'a> = Option<&'a HashMap<usize, Exemplar<NoLabelSet, f64>>>;

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let status = &self.status;
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
        for ((name, kind, help), value) in FAMILIES.iter().zip(values) {
            let m = encoder.encode_descriptor(bare(name, *kind), help, None, kind.metric_type())?;
            match kind {
                Kind::Counter => ConstCounter::new(value).encode(m)?,
                Kind::Gauge | Kind::Histogram => {
                    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(m)?
                }
            }
        }
        let (name, help) = DROPPED;
        let mut m = encoder.encode_descriptor(
            bare(name, Kind::Counter),
            help,
            None,
            MetricType::Counter,
        )?;
        for reason in DropReason::ALL {
            let labels = [("reason", reason.label())];
            ConstCounter::new(status.edge.dropped(reason)).encode(m.encode_family(&labels)?)?;
        }

        let calls = &t.calls;
        let media = &status.media;
        for (name, kind, labels, help) in LABELLED {
            // The store probe and the shared families are a full scrape's.
            let full = self.shared.as_ref();
            if full.is_none()
                && matches!(
                    name,
                    "callbackd_store_up" | "callbackd_webhook_deliveries_total"
                )
            {
                continue;
            }
            let mut m =
                encoder.encode_descriptor(bare(name, kind), help, None, kind.metric_type())?;
            match name {
                "callbackd_calls_ended_total" => {
                    for ((direction, outcome), n) in &calls.calls_ended {
                        let l = [
                            (labels[0], direction.as_str()),
                            (labels[1], outcome.as_str()),
                        ];
                        ConstCounter::new(*n).encode(m.encode_family(&l)?)?;
                    }
                }
                "callbackd_sip_responses_sent_total" | "callbackd_sip_responses_received_total" => {
                    let by = if name == "callbackd_sip_responses_sent_total" {
                        &t.sip.responses_sent
                    } else {
                        &t.sip.responses_received
                    };
                    for ((code, method), n) in by {
                        let l = [
                            (labels[0], code.to_string()),
                            (labels[1], (*method).to_owned()),
                        ];
                        ConstCounter::new(*n).encode(m.encode_family(&l)?)?;
                    }
                }
                "callbackd_sip_retransmissions_total" => {
                    for (direction, n) in [
                        ("sent", t.sip.retransmissions_sent),
                        ("received", t.sip.retransmissions_received),
                    ] {
                        ConstCounter::new(n).encode(m.encode_family(&[(labels[0], direction)])?)?;
                    }
                }
                "callbackd_rtp_packets_total" => {
                    for (direction, n) in [
                        ("in", media.rtp_received),
                        ("out", media.rtp_sent),
                        ("relayed", media.rtp_relayed),
                        ("refused", media.rtp_refused),
                    ] {
                        ConstCounter::new(n).encode(m.encode_family(&[(labels[0], direction)])?)?;
                    }
                }
                "callbackd_rtcp_packets_total" => {
                    for (direction, n) in [("in", media.rtcp_received), ("out", media.rtcp_sent)] {
                        ConstCounter::new(n).encode(m.encode_family(&[(labels[0], direction)])?)?;
                    }
                }
                "callbackd_media_send_errors_total" => {
                    ConstCounter::new(media.send_errors).encode(m)?
                }
                "callbackd_rtp_lost_packets_total" => {
                    ConstCounter::new(media.rtp_lost).encode(m)?
                }
                "callbackd_rtp_jitter_seconds" => histogram(m, &media.jitter)?,
                "callbackd_dtmf_digits_total" => {
                    for (source, n) in &calls.dtmf_digits {
                        let l = [(labels[0], source.as_str())];
                        ConstCounter::new(*n).encode(m.encode_family(&l)?)?;
                    }
                }
                "callbackd_callbacks" => {
                    for c in self.callbacks.iter().flatten() {
                        let l = [(labels[0], c.queue.as_str()), (labels[1], c.status)];
                        let v = i64::try_from(c.count).unwrap_or(i64::MAX);
                        ConstGauge::new(v).encode(m.encode_family(&l)?)?;
                    }
                }
                "callbackd_ecbt_error_seconds" => {
                    for (queue, h) in &calls.ecbt_error {
                        histogram(m.encode_family(&[(labels[0], queue.as_str())])?, h)?;
                    }
                }
                "callbackd_ecbt_announced_minutes" => {
                    for q in &status.queues {
                        let Some(minutes) = q.last_announced_minutes else {
                            continue;
                        };
                        let l = [(labels[0], q.queue.as_str())];
                        ConstGauge::new(i64::from(minutes)).encode(m.encode_family(&l)?)?;
                    }
                }
                "callbackd_ecbt_average_handle_time_seconds" => {
                    for q in &status.queues {
                        let l = [(labels[0], q.queue.as_str())];
                        let aht = q.average_handle_time.as_secs_f64();
                        ConstGauge::new(aht).encode(m.encode_family(&l)?)?;
                    }
                }
                "callbackd_ecbt_staffed_agents" => {
                    for q in &status.queues {
                        let l = [(labels[0], q.queue.as_str())];
                        let n = i64::from(q.staffed_agents);
                        ConstGauge::new(n).encode(m.encode_family(&l)?)?;
                    }
                }
                "callbackd_scheduler_lag_seconds" => histogram(m, &calls.scheduler_lag)?,
                "callbackd_store_commit_seconds" => {
                    for (op, h) in &status.commits {
                        histogram(m.encode_family(&[(labels[0], *op)])?, h)?;
                    }
                }
                "callbackd_store_up" => {
                    ConstGauge::new(i64::from(self.callbacks.is_some())).encode(m)?;
                }
                "callbackd_webhook_deliveries_total" => {
                    if let Some(shared) = full {
                        shared.webhook_deliveries.encode(m)?;
                    }
                }
                // Every name of LABELLED has its arm above (a test renders
                // each with its HELP, TYPE and samples).
                _ => {}
            }
        }
        Ok(())
    }
}

/// Writes `h` (its non-cumulative buckets; the encoder accumulates them).
fn histogram(m: MetricEncoder<'_>, h: &Histogram) -> fmt::Result {
    let mut m = m;
    m.encode_histogram(h.sum(), h.count(), &h.buckets(), None as NoExemplars<'_>)
}

/// A `usize` count as a sample value (saturating; never reached in practice).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::b2bua::telemetry::{CallDirection, QueueEcbt, Telemetry};
    use crate::callback::QueueId;
    use crate::callback::cdr::LegOutcome;
    use crate::callback::hours::Gates;
    use crate::engine::media::{JITTER_BOUNDS, MediaTotals};
    use crate::engine::store::COMMIT_BOUNDS;
    use crate::engine::transport::EdgeTotals;
    use crate::engine::{EngineStats, EngineTotals};
    use crate::media::digits::DigitSource;
    use crate::sip::endpoint::{Stats, Totals as SipTotals};
    use crate::sip::registrar::GuardStats;

    fn status() -> EngineStatus {
        let support = QueueId("support".into());
        let mut calls = Telemetry::default();
        calls.call_ended(CallDirection::Inbound, LegOutcome::Answered);
        calls.call_ended(CallDirection::OutboundCustomer, LegOutcome::Busy);
        calls.dtmf_digits.insert(DigitSource::Rfc4733, 10);
        calls.ecbt_error(&support, jiff::SignedDuration::from_secs(-90));
        calls.scheduler_lag.observe(0.3);
        let mut jitter = Histogram::new(JITTER_BOUNDS);
        jitter.observe(0.004);
        let mut commit = Histogram::new(COMMIT_BOUNDS);
        commit.observe(0.002);
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
                sip: SipTotals {
                    responses_sent: BTreeMap::from([((200, "INVITE"), 3)]),
                    responses_received: BTreeMap::from([((486, "INVITE"), 1)]),
                    retransmissions_sent: 4,
                    retransmissions_received: 2,
                },
                calls,
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
            queues: vec![QueueEcbt {
                queue: support,
                average_handle_time: Duration::from_millis(150_500),
                staffed_agents: 2,
                last_announced_minutes: Some(3),
            }],
            media: MediaTotals {
                rtp_sent: 500,
                rtp_relayed: 300,
                rtp_received: 800,
                rtp_refused: 1,
                send_errors: 0,
                rtcp_sent: 6,
                rtcp_received: 5,
                rtp_lost: 2,
                jitter,
            },
            commits: BTreeMap::from([("register", commit)]),
            sip_bound: true,
        }
    }

    fn full() -> String {
        let shared = Shared::default();
        shared.webhook_delivery(DeliveryResult::Delivered);
        let counts = [CallbackCount {
            queue: "support".into(),
            status: "pending",
            count: 4,
        }];
        render_scrape(&status(), Some(&counts), Some(&shared))
    }

    /// The sample value of `name` (the line without `#` that starts with
    /// `name `, labels included in `name`).
    fn sample(text: &str, name: &str) -> Option<f64> {
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
            assert_eq!(sample(&text, name), Some(value as f64), "{name} in\n{text}");
        }
    }

    #[test]
    fn the_unlabelled_families_come_first_with_help_type_and_one_sample_in_order() {
        let text = render(&status());
        let lines: Vec<&str> = text.lines().collect();
        for (i, (name, kind, help)) in FAMILIES.iter().enumerate() {
            assert_eq!(lines[3 * i], format!("# HELP {name} {help}"));
            assert_eq!(lines[3 * i + 1], format!("# TYPE {name} {}", kind.as_str()));
            assert!(lines[3 * i + 2].starts_with(&format!("{name} ")));
        }
        assert!(text.ends_with('\n'), "the format ends every line with \\n");
        assert!(!text.contains("# EOF"), "0.0.4, not OpenMetrics");
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
    fn every_labelled_family_has_help_type_and_its_samples() {
        let text = full();
        for (name, kind, _, help) in LABELLED {
            assert!(
                text.contains(&format!(
                    "# HELP {name} {help}\n# TYPE {name} {}\n",
                    kind.as_str()
                )),
                "{name} in\n{text}"
            );
        }
        let expected = [
            (
                r#"callbackd_calls_ended_total{direction="inbound",outcome="answered"}"#,
                1.0,
            ),
            (
                r#"callbackd_calls_ended_total{direction="outbound_customer",outcome="busy"}"#,
                1.0,
            ),
            (
                r#"callbackd_sip_responses_sent_total{code="200",method="INVITE"}"#,
                3.0,
            ),
            (
                r#"callbackd_sip_responses_received_total{code="486",method="INVITE"}"#,
                1.0,
            ),
            (
                r#"callbackd_sip_retransmissions_total{direction="sent"}"#,
                4.0,
            ),
            (
                r#"callbackd_sip_retransmissions_total{direction="received"}"#,
                2.0,
            ),
            (r#"callbackd_rtp_packets_total{direction="in"}"#, 800.0),
            (r#"callbackd_rtp_packets_total{direction="out"}"#, 500.0),
            (r#"callbackd_rtp_packets_total{direction="relayed"}"#, 300.0),
            (r#"callbackd_rtp_packets_total{direction="refused"}"#, 1.0),
            (r#"callbackd_rtcp_packets_total{direction="in"}"#, 5.0),
            (r#"callbackd_rtcp_packets_total{direction="out"}"#, 6.0),
            ("callbackd_media_send_errors_total", 0.0),
            ("callbackd_rtp_lost_packets_total", 2.0),
            (r#"callbackd_rtp_jitter_seconds_bucket{le="0.005"}"#, 1.0),
            ("callbackd_rtp_jitter_seconds_count", 1.0),
            (r#"callbackd_dtmf_digits_total{source="rfc4733"}"#, 10.0),
            (
                r#"callbackd_callbacks{queue="support",status="pending"}"#,
                4.0,
            ),
            (
                r#"callbackd_ecbt_error_seconds_bucket{queue="support",le="-120"}"#,
                0.0,
            ),
            (
                r#"callbackd_ecbt_error_seconds_bucket{queue="support",le="-60"}"#,
                1.0,
            ),
            (
                r#"callbackd_ecbt_error_seconds_bucket{queue="support",le="+Inf"}"#,
                1.0,
            ),
            (
                r#"callbackd_ecbt_error_seconds_sum{queue="support"}"#,
                -90.0,
            ),
            (
                r#"callbackd_ecbt_error_seconds_count{queue="support"}"#,
                1.0,
            ),
            (r#"callbackd_ecbt_announced_minutes{queue="support"}"#, 3.0),
            (
                r#"callbackd_ecbt_average_handle_time_seconds{queue="support"}"#,
                150.5,
            ),
            (r#"callbackd_ecbt_staffed_agents{queue="support"}"#, 2.0),
            (r#"callbackd_scheduler_lag_seconds_bucket{le="0.5"}"#, 1.0),
            ("callbackd_scheduler_lag_seconds_sum", 0.3),
            (
                r#"callbackd_store_commit_seconds_bucket{op="register",le="0.0025"}"#,
                1.0,
            ),
            (
                r#"callbackd_store_commit_seconds_count{op="register"}"#,
                1.0,
            ),
            ("callbackd_store_up", 1.0),
            (
                r#"callbackd_webhook_deliveries_total{result="delivered"}"#,
                1.0,
            ),
        ];
        for (name, value) in expected {
            assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
        }
    }

    #[test]
    fn an_unreadable_store_shows_as_store_down_and_no_callback_gauge() {
        let text = render_scrape(&status(), None, Some(&Shared::default()));
        assert_eq!(sample(&text, "callbackd_store_up"), Some(0.0));
        assert!(!text.contains("callbackd_callbacks{"), "{text}");
    }

    #[test]
    fn counters_end_in_total_and_others_do_not() {
        for (name, kind, _) in FAMILIES {
            assert_eq!(name.ends_with("_total"), kind == Kind::Counter, "{name}");
        }
        for (name, kind, _, _) in LABELLED {
            assert_eq!(name.ends_with("_total"), kind == Kind::Counter, "{name}");
        }
    }

    #[test]
    fn names_and_help_are_valid_exposition_text() {
        let all = FAMILIES
            .iter()
            .map(|(name, _, help)| (*name, *help))
            .chain(LABELLED.iter().map(|(name, _, _, help)| (*name, *help)))
            .chain([DROPPED]);
        for (name, help) in all {
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
