//! The Grafana dashboard in `deploy/grafana/callbackd.json` queries only
//! metric families the exposition has: every `callbackd_*` name in a
//! panel's query (a histogram's `_bucket`, `_sum`, `_count` series
//! included) must have its `# TYPE` line in a rendered `/metrics`. A
//! family renamed or removed in `src/api/metrics.rs` fails this test until
//! the dashboard follows.

use std::collections::BTreeSet;
use std::path::Path;

use callbackd::api::metrics::{self, CallbackCount, Shared};
use callbackd::callback::hours::Gates;
use callbackd::engine::{EngineStats, EngineStatus, EngineTotals};

/// The `# TYPE` lines of a full exposition: family name → type.
fn exposed() -> Vec<(String, String)> {
    let status = EngineStatus {
        stats: EngineStats::default(),
        gates: Gates {
            registration_enabled: true,
            launch_enabled: true,
        },
        draining: false,
        totals: EngineTotals::default(),
        edge: Default::default(),
        queues: Vec::new(),
        media: Default::default(),
        commits: Default::default(),
        sip_bound: true,
    };
    let counts: [CallbackCount; 0] = [];
    let text = metrics::render_scrape(&status, Some(&counts), Some(&Shared::default()));
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// Every `expr` of every panel target, panels in rows included.
fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The `callbackd_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("callbackd_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if !preceded {
            names.push(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/callbackd.json");
    let text = std::fs::read_to_string(&path).expect("deploy/grafana/callbackd.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[test]
fn every_metric_the_dashboard_queries_is_exposed() {
    let exposed = exposed();
    let kind_of = |name: &str| {
        exposed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.as_str())
    };
    let mut exprs = Vec::new();
    queries(&dashboard(), &mut exprs);
    assert!(exprs.len() >= 20, "the panels' queries: {exprs:?}");
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "a query with no callbackd metric: {expr}"
        );
        for name in names {
            let family = match kind_of(&name) {
                Some(_) => name.clone(),
                None => {
                    // A histogram's series.
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or_else(|| panic!("{name} (in {expr}) is not exposed"));
                    assert_eq!(
                        kind_of(base),
                        Some("histogram"),
                        "{name} (in {expr}): {base} is not an exposed histogram"
                    );
                    base.to_owned()
                }
            };
            used.insert(family);
        }
    }
    // The panels operators asked for are there.
    for family in [
        "callbackd_incoming_calls_total",
        "callbackd_calls_ended_total",
        "callbackd_sip_responses_sent_total",
        "callbackd_sip_retransmissions_total",
        "callbackd_rtp_lost_packets_total",
        "callbackd_rtp_jitter_seconds",
        "callbackd_callbacks",
        "callbackd_ecbt_announced_minutes",
        "callbackd_ecbt_error_seconds",
        "callbackd_scheduler_lag_seconds",
        "callbackd_store_commit_seconds",
    ] {
        assert!(used.contains(family), "no panel shows {family}");
    }
}

#[test]
fn names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (op, le) (rate(callbackd_store_commit_seconds_bucket[5m]))) / callbackd_x"
        ),
        ["callbackd_store_commit_seconds_bucket", "callbackd_x"]
    );
    assert!(metric_names("rate(my_callbackd_thing[5m])").is_empty());
}
