//! Tidy checks over `deploy/`: every metric the Grafana dashboard's queries (its `expr`
//! fields) and the Prometheus scrape configuration name exists in the control plane's
//! exposition, so a renamed metric cannot leave a dashboard panel silently empty; and the
//! systemd unit keeps the settings the README promises.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hotpath::control::discovery::DiscoveryStats;
use hotpath::control::metrics;
use hotpath::control::status::{Sampler, Sources};
use hotpath::feed::stats::ReaderStats;
use hotpath::sidecar::thread::SidecarStats;
use hotpath::sink::SinkStats;
use serde_json::Value;

fn deploy(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The exposition of a run with every part present: two readers, both sinks, the sidecar,
/// books and discovery.
fn exposition() -> String {
    let sources = Sources {
        service: "hotpath".into(),
        readers: vec![
            Arc::new(ReaderStats::default()),
            Arc::new(ReaderStats::default()),
        ],
        sinks: vec![
            ("kinesis", Arc::new(SinkStats::default())),
            ("redis", Arc::new(SinkStats::default())),
        ],
        sidecar: Some(Arc::new(SidecarStats::default())),
        pairs: Arc::new(RwLock::new(vec!["BTCUSDT".into()])),
        books_kept: true,
        stale_after: Duration::from_secs(10),
        discovery: Some(Arc::new(DiscoveryStats::default())),
        registry: Arc::new(RwLock::new(vec!["BTCUSDT".into()])),
        consumers: vec!["kinesis", "redis"],
        streams: hotpath::stream::StreamKind::ALL.to_vec(),
        connections: Arc::new(RwLock::new(vec![Arc::new(
            hotpath::feed::stats::ConnectionStats::on_reader(0),
        )])),
    };
    let sampler = Arc::new(Mutex::new(Sampler::new(Instant::now())));
    let registry = metrics::registry(sources, sampler);
    metrics::encode(&registry, false).expect("encodes").0
}

/// A metric name without the suffixes a series adds to its family's.
fn family_of(name: &str) -> &str {
    ["_bucket", "_count", "_sum", "_total", "_created"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// The families the exposition declares (`# TYPE name kind`) or has samples of.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if !l.starts_with('#') => l.split(['{', ' ']).next(),
            None => None,
        })
        .filter(|n| !n.is_empty())
        .map(|n| family_of(n).to_string())
        .collect()
}

/// Every `hotpath_*` / `ingestor_*` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("hotpath_") || w.starts_with("ingestor_"))
        .map(str::to_string)
        .collect()
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboards_and_scrape_configs_metrics_exist_in_the_exposition() {
    let known = families(&exposition());
    assert!(known.contains("ingestor_sbe_messages"), "{known:?}");
    let dashboard: Value =
        serde_json::from_str(&deploy("grafana/hotpath-dashboard.json")).expect("dashboard JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "the dashboard has its panels' queries");
    let mut used = BTreeSet::new();
    for query in &queries {
        used.extend(metric_names(query));
    }
    used.extend(metric_names(&deploy("prometheus.yml")));
    for name in [
        "ingestor_sbe_messages_total",
        "ingestor_sbe_sequence_gaps_total",
        "hotpath_repaired_ids_total",
        "hotpath_sink_queue_depth",
        "hotpath_sink_dead_lettered_total",
        "ingestor_sbe_connection_status",
        "hotpath_sink_ack_latency_seconds_bucket",
    ] {
        assert!(used.contains(name), "the dashboard shows {name}");
    }
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !known.contains(family_of(n)))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics in deploy/ that /metrics does not serve: {missing:?}"
    );
}

#[test]
fn the_systemd_unit_keeps_its_promises() {
    let unit = deploy("hotpath.service");
    for line in [
        "ExecStart=/usr/local/bin/hotpath run",
        "EnvironmentFile=/etc/hotpath/hotpath.env",
        "Environment=CONFIG_FILE=/etc/hotpath/hotpath.toml",
        // No transparent huge pages even where THP is "always" (README "Memory").
        "Environment=MIMALLOC_ALLOW_THP=0",
        "Restart=on-failure",
        "LimitMEMLOCK=infinity",
        "CPUAffinity=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=hotpath",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "deploy/hotpath.service has {line}"
        );
    }
    assert!(
        !unit.contains("SystemCallFilter=~@privileged @resources"),
        "the readers pin themselves with sched_setaffinity (@resources)"
    );
}
