//! What `/health`, `/ready`, `/live` and `/stats` answer: the run's live counters, sampled every
//! [`CONTROL_SAMPLE_INTERVAL`] by the control thread into rates (messages per second, writes per
//! second) and ages (time since a connection's last frame, since a sink's last write). The sampling
//! reads the same padded counters the summary reads; the hot path does nothing for it.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::constants::CONTROL_SAMPLE_INTERVAL;
use crate::feed::stats::{ConnectionStats, ReaderStats};
use crate::sidecar::thread::SidecarStats;
use crate::sink::SinkStats;
use crate::stream::StreamKind;

/// Samples kept: rates are taken over about one second.
const SAMPLES: usize = 5;

/// Everything the control plane reads, shared with the threads that write it.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The service name `/health` reports.
    pub service: String,
    /// Each reader's counters.
    pub readers: Vec<Arc<ReaderStats>>,
    /// Each sink's name (`kinesis`, `redis`) and counters.
    pub sinks: Vec<(&'static str, Arc<SinkStats>)>,
    /// The sidecar's counters, when it runs.
    pub sidecar: Option<Arc<SidecarStats>>,
    /// The symbols subscribed now (kept by the control plane as it adds and removes them).
    pub pairs: Arc<RwLock<Vec<String>>>,
    /// Whether the Redis writer keeps order books (Redis runs and `depth` is subscribed).
    pub books_kept: bool,
    /// A reader silent this long is unhealthy.
    pub stale_after: Duration,
    /// Pair discovery's counters, when it runs.
    pub discovery: Option<Arc<super::discovery::DiscoveryStats>>,
    /// Every symbol the feed has carried, by registry index (`Feed::registry`): the names of
    /// the per-symbol counters.
    pub registry: Arc<RwLock<Vec<String>>>,
    /// Each event consumer's name, by consumer index (the sinks in order, or `counter`).
    pub consumers: Vec<&'static str>,
    /// The stream kinds subscribed.
    pub streams: Vec<crate::stream::StreamKind>,
    /// Each connection's figures, in connection order (`Feed::connection_stats`).
    pub connections: Arc<RwLock<Vec<Arc<ConnectionStats>>>>,
}

impl Sources {
    /// The connections now (a copy of the list: connections opened at run time join it).
    pub fn connections(&self) -> Vec<Arc<ConnectionStats>> {
        crate::sync::read(&self.connections).clone()
    }
}

/// One sample of the counters that turn into rates and ages.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    frames: Vec<u64>,
    written: Vec<u64>,
}

/// The sampler: the last samples, and when each connection's frames and each sink's writes
/// last moved.
#[derive(Debug)]
pub struct Sampler {
    started: Instant,
    samples: VecDeque<Sample>,
    connection_moved: Vec<Option<Instant>>,
    sink_moved: Vec<Option<Instant>>,
}

impl Sampler {
    /// A sampler with nothing seen yet.
    pub fn new(now: Instant) -> Sampler {
        Sampler {
            started: now,
            samples: VecDeque::new(),
            connection_moved: Vec::new(),
            sink_moved: Vec::new(),
        }
    }

    /// Takes a sample of `sources` at `now`.
    pub fn sample(&mut self, sources: &Sources, now: Instant) {
        let sample = Sample {
            at: now,
            frames: sources
                .connections()
                .iter()
                .map(|c| c.frames.get())
                .collect(),
            written: sources.sinks.iter().map(|(_, s)| s.written.get()).collect(),
        };
        let last = self.samples.back();
        self.connection_moved.resize(sample.frames.len(), None);
        self.sink_moved.resize(sample.written.len(), None);
        for (i, &f) in sample.frames.iter().enumerate() {
            if f > last.and_then(|l| l.frames.get(i).copied()).unwrap_or(0) {
                self.connection_moved[i] = Some(now);
            }
        }
        for (i, &w) in sample.written.iter().enumerate() {
            if w > last.and_then(|l| l.written.get(i).copied()).unwrap_or(0) {
                self.sink_moved[i] = Some(now);
            }
        }
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Per connection and per sink: the rate over the samples kept, per second.
    fn rates(&self) -> (Vec<f64>, Vec<f64>) {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return (Vec::new(), Vec::new());
        };
        let secs = last.at.duration_since(first.at).as_secs_f64();
        let rate = |a: &[u64], b: &[u64]| -> Vec<f64> {
            b.iter()
                .enumerate()
                .map(|(i, &v)| match secs > 0.0 {
                    true => {
                        (v.saturating_sub(a.get(i).copied().unwrap_or(0)) as f64 / secs).round()
                    }
                    false => 0.0,
                })
                .collect()
        };
        (
            rate(&first.frames, &last.frames),
            rate(&first.written, &last.written),
        )
    }

    /// Milliseconds since connection `i`'s last frame (since start when it never had one).
    pub fn connection_age(&self, i: usize, now: Instant) -> u64 {
        let since = self
            .connection_moved
            .get(i)
            .copied()
            .flatten()
            .unwrap_or(self.started);
        ms(now.saturating_duration_since(since))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The sampling period, for the control thread's ticker.
pub fn sample_every() -> Duration {
    CONTROL_SAMPLE_INTERVAL
}

/// A connection's state: `connected` (a frame within `stale_after`), `stale`, or `idle` (it
/// carries no stream now: every symbol of it was removed; left out of health and ready).
pub fn connection_state(
    connection: &ConnectionStats,
    i: usize,
    sources: &Sources,
    sampler: &Sampler,
    now: Instant,
) -> &'static str {
    if connection.carrying.get() == 0 {
        "idle"
    } else if sampler.connection_age(i, now) < ms(sources.stale_after) {
        "connected"
    } else {
        "stale"
    }
}

/// `/health`: `(healthy, body)`. Unhealthy when a connection carrying streams has had no frame
/// for `stale_after` (or never had one that long after start), or a sink has events waiting
/// and has written nothing for `stale_after` while its requests fail.
pub fn health(sources: &Sources, sampler: &Sampler, now: Instant) -> (bool, Value) {
    let (msgs, writes) = sampler.rates();
    let mut healthy = true;
    let mut components = serde_json::Map::new();
    for (i, connection) in sources.connections().iter().enumerate() {
        let state = connection_state(connection, i, sources, sampler, now);
        healthy &= state != "stale";
        components.insert(
            format!("sbe_websocket_{i}"),
            json!({
                "status": state,
                "reader": connection.reader,
                "last_message_age_ms": sampler.connection_age(i, now),
                "messages_per_second": msgs.get(i).copied().unwrap_or(0.0),
                "reconnect_count": connection.reconnects.get(),
            }),
        );
    }
    for (i, (name, sink)) in sources.sinks.iter().enumerate() {
        let (state, ok) = sink_state(
            sink,
            sampler.sink_moved.get(i).copied().flatten(),
            sources,
            sampler,
            now,
        );
        healthy &= ok;
        components.insert(
            format!("{name}_producer"),
            sink_json(sink, state, writes.get(i).copied()),
        );
    }
    components.insert("sbe_decoder".into(), decoder_json(sources));
    if let Some(sidecar) = &sources.sidecar {
        components.insert("sidecar".into(), sidecar_json(sidecar));
    }
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "service": sources.service,
        "uptime_s": now.saturating_duration_since(sampler.started).as_secs(),
        "components": components,
    });
    (healthy, body)
}

/// A sink's state: `healthy` (written lately, or nothing waiting), `failing` (events waiting,
/// nothing written for `stale_after`, requests failing) or `stalled` (waiting, not written).
fn sink_state(
    sink: &SinkStats,
    moved: Option<Instant>,
    sources: &Sources,
    sampler: &Sampler,
    now: Instant,
) -> (&'static str, bool) {
    let quiet =
        now.saturating_duration_since(moved.unwrap_or(sampler.started)) >= sources.stale_after;
    match (
        sink.queue_depth.get() > 0 && quiet,
        sink.failed_requests.get() > 0,
    ) {
        (false, _) => ("healthy", true),
        (true, true) => ("failing", false),
        (true, false) => ("stalled", false),
    }
}

fn sink_json(sink: &SinkStats, state: &str, written_per_s: Option<f64>) -> Value {
    let written = sink.written.get();
    let attempts = written + sink.retried.get() + sink.dead_lettered.get();
    json!({
        "status": state,
        "success_rate": if attempts == 0 { 1.0 } else { written as f64 / attempts as f64 },
        "latency_ms": sink.ack_latency_ns.get() as f64 / 1e6,
        "buffer_size": sink.queue_depth.get(),
        "written": written,
        "written_per_second": written_per_s.unwrap_or(0.0),
        "retried": sink.retried.get(),
        "dead_lettered": sink.dead_lettered.get(),
        "failed_requests": sink.failed_requests.get(),
        "reconnects": sink.reconnects.get(),
    })
}

fn sum(sources: &Sources, f: impl Fn(&ReaderStats) -> u64) -> u64 {
    sources.readers.iter().map(|r| f(r)).sum()
}

fn decoder_json(sources: &Sources) -> Value {
    let (count, total_ns) = sources.readers.iter().fold((0u64, 0f64), |(n, t), r| {
        r.wire_to_queue
            .read(|h| (n + h.len(), t + h.mean() * h.len() as f64))
    });
    json!({
        "status": "loaded",
        "messages_decoded": StreamKind::ALL.iter().map(|&k| sum(sources, |r| r.events_of(k))).sum::<u64>(),
        "decode_errors": sum(sources, |r| r.decode_errors.get()),
        "unknown_templates": sum(sources, |r| r.unknown_templates.get()),
        "schema_mismatches": sum(sources, |r| r.schema_mismatches.get()),
        "unknown_symbols": sum(sources, |r| r.unknown_symbols.get()),
        "avg_decode_time_us": if count == 0 { 0.0 } else { total_ns / count as f64 / 1e3 },
    })
}

fn sidecar_json(sidecar: &SidecarStats) -> Value {
    json!({
        "status": "running",
        "gaps": sidecar.trade_gaps.get(),
        "requested_ids": sidecar.requested_ids.get(),
        "repaired_ids": sidecar.repaired_ids.get(),
        "unrepaired_ids": sidecar.unrepaired_ids.get(),
        "rest_pages": sidecar.pages.get(),
        "rest_failures": sidecar.page_failures.get() + sidecar.depth_failures.get(),
        "depth_snapshots": sidecar.depth_snapshots.get(),
        "rest_weight_used": sidecar.rest_weight_used.get(),
        "silent_streams": sidecar.silent_streams.get(),
        "kline_checks": sidecar.kline_checks.get(),
        "kline_mismatches": sidecar.kline_mismatches.get(),
        "kline_checks_skipped": sidecar.kline_checks_skipped.get(),
        "stream_kline_checks": sidecar.stream_kline_checks.get(),
        "stream_kline_mismatches": sidecar.stream_kline_mismatches.get(),
        "stream_klines_unjudged": sidecar.stream_klines_unjudged.get(),
    })
}

/// `/ready`: `(ready, body)`. Ready once every connection carrying streams has delivered a
/// frame, every sink has written once and, where the Redis writer keeps books, every
/// subscribed symbol's book is synced (not stale).
pub fn ready(sources: &Sources) -> (bool, Value) {
    let silent: Vec<usize> = sources
        .connections()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.carrying.get() == 1 && c.frames.get() == 0)
        .map(|(i, _)| i)
        .collect();
    let unwritten: Vec<&str> = sources
        .sinks
        .iter()
        .filter(|(_, s)| s.written.get() == 0)
        .map(|(n, _)| *n)
        .collect();
    let unsynced = unsynced_books(sources);
    let ready = silent.is_empty() && unwritten.is_empty() && unsynced.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "connections_without_frames": silent,
        "sinks_without_writes": unwritten,
        "books_not_synced": unsynced,
    });
    (ready, body)
}

/// The subscribed symbols whose Redis book is not synced (none when no books are kept).
fn unsynced_books(sources: &Sources) -> Vec<String> {
    if !sources.books_kept {
        return Vec::new();
    }
    let Some((_, redis)) = sources.sinks.iter().find(|(n, _)| *n == "redis") else {
        return Vec::new();
    };
    let books = crate::sync::lock(&redis.book.books);
    crate::sync::read(&sources.pairs)
        .iter()
        .filter(|p| !books.iter().any(|b| &b.symbol == *p && !b.stale))
        .cloned()
        .collect()
}

/// `/stats`: what the progress line and the summary's counters say, live.
pub fn stats(sources: &Sources, sampler: &Sampler, now: Instant) -> Value {
    let (msgs, writes) = sampler.rates();
    let mut out = json!({
        "uptime_s": now.saturating_duration_since(sampler.started).as_secs_f64(),
        "msgs_per_s": msgs.iter().sum::<f64>(),
        "frames": sum(sources, |r| r.frames.get()),
        "events": StreamKind::ALL.iter().map(|&k| (k.suffix().to_string(), json!(sum(sources, |r| r.events_of(k))))).collect::<serde_json::Map<_, _>>(),
        "duplicates": sum(sources, |r| r.duplicates.get()),
        "gaps": sum(sources, |r| r.gaps.get()),
        "missing_ids": sum(sources, |r| r.missing_ids.get()),
        "decode_errors": sum(sources, |r| r.decode_errors.get()),
        "unknown_templates": sum(sources, |r| r.unknown_templates.get()),
        "schema_mismatches": sum(sources, |r| r.schema_mismatches.get()),
        "unknown_symbols": sum(sources, |r| r.unknown_symbols.get()),
        "queue_drops": sum(sources, |r| r.queue_drops.get()),
        "connects": sum(sources, |r| r.connects.get()),
        "reconnects": sum(sources, |r| r.reconnects.get()),
        "switches": sum(sources, |r| r.switches.get()),
        "fallbacks_to_json": sum(sources, |r| r.fallbacks_to_json.get()),
        "returns_to_sbe": sum(sources, |r| r.returns_to_sbe.get()),
        "control_errors": sum(sources, |r| r.control_errors.get()),
        "control_timeouts": sum(sources, |r| r.control_timeouts.get()),
        "pairs": crate::sync::read(&sources.pairs).len(),
    });
    if let Some(sidecar) = &sources.sidecar {
        out["sidecar"] = sidecar_json(sidecar);
    }
    for (i, (name, sink)) in sources.sinks.iter().enumerate() {
        let mut s = sink_json(sink, "", writes.get(i).copied());
        if let Some(map) = s.as_object_mut() {
            map.remove("status");
        }
        s["unrepaired"] = json!(sink.unrepaired.get());
        if *name == "redis" {
            let book = &sink.book;
            s["reanchors"] = json!(book.reanchors.get());
            s["resyncs"] = json!(book.resyncs.get());
            s["consistency_checks"] = json!(book.consistency_checks.get());
            s["consistency_mismatches"] = json!(book.consistency_mismatches.get());
        }
        out[*name] = s;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::stats::SlotFigures;

    fn sources(connections: Vec<Arc<ConnectionStats>>) -> Sources {
        Sources {
            service: "hotpath".into(),
            readers: vec![Arc::default()],
            sinks: Vec::new(),
            sidecar: None,
            pairs: Arc::default(),
            books_kept: false,
            stale_after: Duration::from_secs(2),
            discovery: None,
            registry: Arc::default(),
            consumers: vec!["counter"],
            streams: StreamKind::ALL.to_vec(),
            connections: Arc::new(RwLock::new(connections)),
        }
    }

    fn publish(c: &ConnectionStats, frames: u64, reconnects: u64, carrying: bool) {
        c.publish(SlotFigures {
            frames,
            reconnects,
            delivering: frames > 0,
            carrying,
        });
    }

    /// Health and readiness are per connection: each has its own age, rate and reconnects;
    /// one that never delivered keeps `/ready` off and goes stale; one carrying nothing (its
    /// symbols removed) is idle and counts for neither.
    #[test]
    fn health_and_ready_are_per_connection() {
        let connections: Vec<Arc<ConnectionStats>> = (0..3)
            .map(|i| Arc::new(ConnectionStats::on_reader(i % 2)))
            .collect();
        let sources = sources(connections.clone());
        let start = Instant::now();
        let mut sampler = Sampler::new(start);
        sampler.sample(&sources, start);
        assert_eq!(
            ready(&sources).1["connections_without_frames"],
            json!([0, 1, 2])
        );
        publish(&connections[0], 100, 1, true);
        publish(&connections[2], 0, 0, false);
        let later = start + Duration::from_secs(1);
        sampler.sample(&sources, later);
        let (is_ready, body) = ready(&sources);
        assert!(!is_ready);
        assert_eq!(body["connections_without_frames"], json!([1]));
        let (healthy, body) = health(&sources, &sampler, later);
        assert!(healthy, "connection 1 is not stale yet: {body}");
        let first = &body["components"]["sbe_websocket_0"];
        assert_eq!(first["status"], "connected");
        assert_eq!(first["messages_per_second"], 100.0);
        assert_eq!(first["reconnect_count"], 1);
        assert_eq!(body["components"]["sbe_websocket_1"]["reader"], 1);
        assert_eq!(body["components"]["sbe_websocket_2"]["status"], "idle");
        let stale = start + Duration::from_secs(3);
        publish(&connections[0], 200, 1, true);
        sampler.sample(&sources, stale);
        let (healthy, body) = health(&sources, &sampler, stale);
        assert!(!healthy, "{body}");
        assert_eq!(body["components"]["sbe_websocket_0"]["status"], "connected");
        assert_eq!(body["components"]["sbe_websocket_1"]["status"], "stale");
        assert_eq!(body["components"]["sbe_websocket_2"]["status"], "idle");
        publish(&connections[1], 5, 0, true);
        assert!(ready(&sources).0, "every carrying connection delivered");
    }
}
