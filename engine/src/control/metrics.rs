//! `/metrics`: the run's live counters in the Prometheus text format (0.0.4), or OpenMetrics
//! when the scraper's `Accept` asks for it, encoded by `prometheus-client` (ARCHITECTURE.md,
//! "The control plane", says why that crate). Everything is read at scrape time by one
//! [`Collector`]: the padded counters the hot path already bumps, the live histograms its
//! threads publish, the sampler's ages; the hot path does no work for a scrape.
//!
//! Names follow seed 004 where it has one (`ingestor_*`) and Prometheus's conventions
//! otherwise (`hotpath_*`, base units in the name, `_total` on counters). Labels are bounded:
//! `reader` (one per reader core), `connection` (one per connection slot), `stream` (four
//! kinds), `sink` and `consumer` (two), `symbol` (the symbols subscribed now: a removed
//! symbol's series leave the exposition, its counters are kept and resume if it is added
//! again), so the per-symbol families have at most symbols x streams (x consumers) series.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::status::{Sampler, Sources};
use crate::feed::stats::{ConnectionStats, ReaderStats, SymbolCount};
use crate::stream::StreamKind;

/// The `Content-Type` of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Histogram bucket bounds, seconds: 100 ns to 10 s (the latency histograms' range).
const BUCKETS: [f64; 25] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
    5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labels = Vec<(&'static str, String)>;
/// A reader counter family: name, help, how to read it.
type ReaderFamily = (&'static str, &'static str, fn(&ReaderStats) -> u64);
/// A sink family: name, help, counter or gauge, how to read it.
type SinkFamily = (
    &'static str,
    &'static str,
    MetricType,
    fn(&crate::sink::SinkStats) -> u64,
);

/// The registry of one run: a single collector over `sources`.
pub fn registry(sources: Sources, sampler: Arc<Mutex<Sampler>>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RunCollector { sources, sampler }));
    registry
}

/// Encodes `registry` as OpenMetrics (`open_metrics`) or Prometheus text: body, content type.
pub fn encode(registry: &Registry, open_metrics: bool) -> Result<(String, &'static str), String> {
    let mut body = String::new();
    let encoded = if open_metrics {
        prometheus_client::encoding::text::encode(&mut body, registry).map(|()| OPENMETRICS)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, registry)
            .map(|()| PROMETHEUS_TEXT)
    };
    encoded
        .map(|t| (body, t))
        .map_err(|_| "the metrics could not be encoded".to_string())
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_open_metrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

#[derive(Debug)]
struct RunCollector {
    sources: Sources,
    sampler: Arc<Mutex<Sampler>>,
}

/// Writes one metric family.
fn family(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let mut m = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => m.encode_counter::<NoLabelSet, _, u64>(&(value as u64), None)?,
            _ => m.encode_gauge(&value)?,
        }
    }
    Ok(())
}

fn counter<'a>(name: &'a str, help: &'a str) -> (&'a str, &'a str, MetricType) {
    (name, help, MetricType::Counter)
}

fn gauge<'a>(name: &'a str, help: &'a str) -> (&'a str, &'a str, MetricType) {
    (name, help, MetricType::Gauge)
}

/// Writes one histogram family from hdrhistogram data (nanoseconds) as seconds.
fn histogram<'h>(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    series: impl IntoIterator<Item = (Labels, &'h crate::metrics::LiveHistogram)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, live) in series {
        let (sum, count, buckets) = live.read(seconds_buckets);
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// Sum (seconds), count and per-bucket counts (not cumulative; the last is `+Inf`).
pub fn seconds_buckets(h: &Histogram<u64>) -> (f64, u64, Vec<(f64, u64)>) {
    let mut counts = vec![0u64; BUCKETS.len() + 1];
    let mut sum = 0.0;
    for v in h.iter_recorded() {
        let secs = h.median_equivalent(v.value_iterated_to()) as f64 / 1e9;
        sum += secs * v.count_at_value() as f64;
        let at = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        counts[at] += v.count_at_value();
    }
    let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
    (sum, h.len(), bounds.zip(counts).collect())
}

fn reader_label(i: usize) -> Labels {
    vec![("reader", i.to_string())]
}

impl Collector for RunCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.readers(&mut encoder)?;
        self.symbols(&mut encoder)?;
        self.sinks(&mut encoder)?;
        self.sidecar(&mut encoder)?;
        self.discovery(&mut encoder)?;
        let pairs = crate::sync::read(&self.sources.pairs).len();
        family(
            &mut encoder,
            gauge("hotpath_pairs", "Symbols subscribed now."),
            [(Vec::new(), pairs as f64)],
        )
    }
}

/// A per-connection counter family: name, help, how to read it.
type ConnectionFamily = (&'static str, &'static str, fn(&ConnectionStats) -> u64);
/// A per-symbol family: name, help, what it counts.
type SymbolFamily = (&'static str, &'static str, SymbolCount);

impl RunCollector {
    /// The symbols subscribed now with their registry indexes.
    fn subscribed(&self) -> Vec<(String, u16)> {
        let registry = crate::sync::read(&self.sources.registry);
        crate::sync::read(&self.sources.pairs)
            .iter()
            .filter_map(|p| {
                let at = registry.iter().position(|s| s == p)?;
                Some((p.clone(), u16::try_from(at).ok()?))
            })
            .collect()
    }

    /// The per-symbol and per-stream families, summed over the readers (a symbol moves to
    /// another reader when it is removed and added again).
    fn symbols(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let symbols = self.subscribed();
        let streams = &self.sources.streams;
        let readers = &self.sources.readers;
        let labels = |symbol: &str, kind: StreamKind| {
            vec![
                ("symbol", symbol.to_string()),
                ("stream", kind.suffix().to_string()),
            ]
        };
        let list: [SymbolFamily; 4] = [
            (
                "hotpath_symbol_frames",
                "Frames of the symbol's stream received (duplicates included).",
                SymbolCount::Frames,
            ),
            (
                "hotpath_symbol_gaps",
                "Sequence gaps on the wire in the symbol's stream.",
                SymbolCount::Gaps,
            ),
            (
                "hotpath_symbol_missing_ids",
                "Ids missing in the wire gaps of the symbol's stream.",
                SymbolCount::MissingIds,
            ),
            (
                "hotpath_symbol_duplicate_ids",
                "Ids of the symbol's stream dropped as already delivered (duplicate frames, overlaps).",
                SymbolCount::DuplicateIds,
            ),
        ];
        for (name, help, count) in list {
            let series = symbols.iter().flat_map(|(symbol, index)| {
                streams.iter().map(move |&kind| {
                    let n: u64 = readers
                        .iter()
                        .map(|r| r.symbols.get(*index, kind, count))
                        .sum();
                    (labels(symbol, kind), n as f64)
                })
            });
            family(encoder, counter(name, help), series)?;
        }
        let consumers = &self.sources.consumers;
        let drops = symbols.iter().flat_map(|(symbol, index)| {
            streams.iter().flat_map(move |&kind| {
                consumers.iter().enumerate().map(move |(c, name)| {
                    let n: u64 = readers
                        .iter()
                        .map(|r| r.symbols.drops(*index, kind, c))
                        .sum();
                    let mut l = labels(symbol, kind);
                    l.push(("consumer", name.to_string()));
                    (l, n as f64)
                })
            })
        });
        family(
            encoder,
            counter(
                "hotpath_symbol_queue_drops",
                "Events of the symbol's stream a consumer's full ring could not take (repaired for trades).",
            ),
            drops,
        )?;
        let Some(sidecar) = &self.sources.sidecar else {
            return Ok(());
        };
        let repaired = symbols.iter().map(|(symbol, index)| {
            (
                labels(symbol, StreamKind::Trade),
                sidecar.repaired_of(*index) as f64,
            )
        });
        family(
            encoder,
            counter(
                "hotpath_symbol_repaired_ids",
                "Trade ids of the symbol the sidecar handed to consumers (per consumer).",
            ),
            repaired,
        )
    }

    fn per_reader(&self, f: impl Fn(&ReaderStats) -> u64) -> Vec<(Labels, f64)> {
        let readers = self.sources.readers.iter().enumerate();
        readers
            .map(|(i, r)| (reader_label(i), f(r) as f64))
            .collect()
    }

    fn readers(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let readers = &self.sources.readers;
        let events = readers.iter().enumerate().flat_map(|(i, r)| {
            StreamKind::ALL.iter().map(move |&k| {
                let labels = vec![
                    ("reader", i.to_string()),
                    ("stream", k.suffix().to_string()),
                ];
                (labels, r.events_of(k) as f64)
            })
        });
        family(
            encoder,
            counter(
                "ingestor_sbe_messages",
                "SBE events accepted, per stream kind.",
            ),
            events,
        )?;
        let list: [ReaderFamily; 19] = [
            ("hotpath_frames", "Binary frames received.", |r| {
                r.frames.get()
            }),
            (
                "ingestor_sbe_sequence_gaps",
                "Sequence gaps detected on the wire.",
                |r| r.gaps.get(),
            ),
            (
                "hotpath_missing_ids",
                "Ids missing in the gaps on the wire.",
                |r| r.missing_ids.get(),
            ),
            ("hotpath_duplicates", "Duplicate events dropped.", |r| {
                r.duplicates.get()
            }),
            (
                "hotpath_decode_errors",
                "Frames that failed to decode.",
                |r| r.decode_errors.get(),
            ),
            (
                "hotpath_json_malformed",
                "JSON market-data frames that did not parse or convert, skipped.",
                |r| r.json_malformed.get(),
            ),
            (
                "hotpath_stream_klines",
                "Closed klines received on the JSON kline streams, for the sidecar's check.",
                |r| r.stream_klines.get(),
            ),
            (
                "hotpath_stream_klines_dropped",
                "Closed stream klines the sidecar's kline ring had no room for.",
                |r| r.stream_klines_dropped.get(),
            ),
            (
                "hotpath_unknown_templates",
                "Frames of unknown templates.",
                |r| r.unknown_templates.get(),
            ),
            (
                "hotpath_unknown_symbols",
                "Frames of symbols not subscribed.",
                |r| r.unknown_symbols.get(),
            ),
            (
                "hotpath_queue_drops",
                "Events a consumer's full ring could not take.",
                |r| r.queue_drops.get(),
            ),
            (
                "hotpath_notice_drops",
                "Gap notices that found the notice ring full, merged into a waiting one (their ids are still repaired).",
                |r| r.notice_drops.get(),
            ),
            ("hotpath_connects", "WebSocket connections opened.", |r| {
                r.connects.get()
            }),
            (
                "hotpath_reconnects",
                "WebSocket connections lost or found silent.",
                |r| r.reconnects.get(),
            ),
            (
                "hotpath_connection_switches",
                "Make-before-break connection switches.",
                |r| r.switches.get(),
            ),
            (
                "hotpath_feed_fallbacks_to_json",
                "Dual feed: connections moved from SBE to the JSON streams.",
                |r| r.fallbacks_to_json.get(),
            ),
            (
                "hotpath_feed_returns_to_sbe",
                "Dual feed: connections moved back from JSON to SBE.",
                |r| r.returns_to_sbe.get(),
            ),
            (
                "hotpath_control_errors",
                "SUBSCRIBE/UNSUBSCRIBE requests refused (retried).",
                |r| r.control_errors.get(),
            ),
            (
                "hotpath_control_timeouts",
                "SUBSCRIBE/UNSUBSCRIBE requests unanswered (retried).",
                |r| r.control_timeouts.get(),
            ),
        ];
        for (name, help, f) in list {
            family(encoder, counter(name, help), self.per_reader(f))?;
        }
        self.connection_gauges(encoder)?;
        histogram(
            encoder,
            (
                "ingestor_sbe_decode_duration_seconds",
                "Receipt to enqueue per event (decode, sequence check, ring push); published by the reader once a second.",
            ),
            readers
                .iter()
                .enumerate()
                .map(|(i, r)| (reader_label(i), &r.wire_to_queue)),
        )
    }

    /// Per connection: status, last message age, frames and reconnects (labels `connection`,
    /// its index in connection order, and `reader`).
    fn connection_gauges(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let connections = self.sources.connections();
        let (states, ages): (Vec<&str>, Vec<u64>) = {
            let sampler = crate::sync::lock(&self.sampler);
            connections
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let state = super::status::connection_state(c, i, &self.sources, &sampler, now);
                    (state, sampler.connection_age(i, now))
                })
                .unzip()
        };
        let labels = |i: usize| {
            vec![
                ("connection", i.to_string()),
                ("reader", connections[i].reader.to_string()),
            ]
        };
        let status = states
            .iter()
            .enumerate()
            .map(|(i, &s)| (labels(i), f64::from(u8::from(s == "connected"))));
        family(
            encoder,
            gauge(
                "ingestor_sbe_connection_status",
                "1 while the connection delivers frames (one within http.stale_after_ms), else 0.",
            ),
            status,
        )?;
        let age = ages
            .iter()
            .enumerate()
            .map(|(i, &a)| (labels(i), a as f64 / 1e3));
        family(
            encoder,
            gauge(
                "hotpath_last_message_age_seconds",
                "Time since the connection's last frame (sampled every 250 ms).",
            ),
            age,
        )?;
        let list: [ConnectionFamily; 2] = [
            (
                "hotpath_connection_frames",
                "Data frames the connection received (published once per read batch).",
                |c| c.frames.get(),
            ),
            (
                "hotpath_connection_reconnects",
                "The connection lost or found silent (and opened again).",
                |c| c.reconnects.get(),
            ),
        ];
        for (name, help, f) in list {
            let series = (0..connections.len()).map(|i| (labels(i), f(&connections[i]) as f64));
            family(encoder, counter(name, help), series)?;
        }
        Ok(())
    }

    fn sinks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sinks = &self.sources.sinks;
        let kinesis = sinks.iter().filter(|(n, _)| *n == "kinesis");
        family(
            encoder,
            counter(
                "ingestor_kinesis_records_sent",
                "Records Kinesis acknowledged.",
            ),
            kinesis.map(|(_, s)| (Vec::new(), s.written.get() as f64)),
        )?;
        let list: [SinkFamily; 10] = [
            (
                "hotpath_sink_written",
                "Records the sink's server acknowledged.",
                MetricType::Counter,
                |s| s.written.get(),
            ),
            (
                "hotpath_sink_retried",
                "Records sent again after a failure.",
                MetricType::Counter,
                |s| s.retried.get(),
            ),
            (
                "hotpath_sink_dead_lettered",
                "Records written to the dead-letter file.",
                MetricType::Counter,
                |s| s.dead_lettered.get(),
            ),
            (
                "hotpath_sink_dropped",
                "Records neither delivered nor dead-lettered.",
                MetricType::Counter,
                |s| s.dropped.get(),
            ),
            (
                "hotpath_sink_failed_requests",
                "Requests or pipelines that failed as a whole.",
                MetricType::Counter,
                |s| s.failed_requests.get(),
            ),
            (
                "hotpath_sink_reconnects",
                "Redis reconnections or Kinesis breaker openings.",
                MetricType::Counter,
                |s| s.reconnects.get(),
            ),
            (
                "hotpath_sink_repaired_events",
                "Repair events taken from the sidecar.",
                MetricType::Counter,
                |s| s.repaired.get(),
            ),
            (
                "hotpath_sink_unrepaired_ids",
                "Trade ids the sink gave up on.",
                MetricType::Counter,
                |s| s.unrepaired.get(),
            ),
            (
                "hotpath_sink_klines_late_trades",
                "Trades left out of kline candles that had already closed.",
                MetricType::Counter,
                |s| s.klines_late.get(),
            ),
            (
                "hotpath_sink_queue_depth",
                "Events waiting in the sink (rings and buffers).",
                MetricType::Gauge,
                |s| s.queue_depth.get(),
            ),
        ];
        for (name, help, kind, f) in list {
            let series = sinks
                .iter()
                .map(|(n, s)| (vec![("sink", n.to_string())], f(s) as f64));
            family(encoder, (name, help, kind), series)?;
        }
        histogram(
            encoder,
            (
                "hotpath_sink_ack_latency_seconds",
                "Receipt from the wire to the sink's acknowledgement, per record.",
            ),
            sinks
                .iter()
                .map(|(n, s)| (vec![("sink", n.to_string())], &s.ack_latency)),
        )?;
        self.books(encoder)
    }

    fn books(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((_, redis)) = self.sources.sinks.iter().find(|(n, _)| *n == "redis") else {
            return Ok(());
        };
        let book = &redis.book;
        family(
            encoder,
            counter(
                "ingestor_rest_reanchors",
                "Atomic re-anchors of Redis order books.",
            ),
            [(Vec::new(), book.reanchors.get() as f64)],
        )?;
        family(
            encoder,
            counter(
                "hotpath_book_resyncs",
                "Books synced again after a gap, an edge or a failed check.",
            ),
            [(Vec::new(), book.resyncs.get() as f64)],
        )?;
        family(
            encoder,
            counter(
                "hotpath_book_consistency_checks",
                "Book consistency checks concluded.",
            ),
            [(Vec::new(), book.consistency_checks.get() as f64)],
        )?;
        family(
            encoder,
            counter(
                "hotpath_book_consistency_mismatches",
                "Consistency checks that found the book wrong.",
            ),
            [(Vec::new(), book.consistency_mismatches.get() as f64)],
        )?;
        let stale: Vec<(Labels, f64)> = crate::sync::lock(&book.books)
            .iter()
            .map(|b| {
                (
                    vec![("symbol", b.symbol.clone())],
                    f64::from(u8::from(b.stale)),
                )
            })
            .collect();
        family(
            encoder,
            gauge(
                "hotpath_book_stale",
                "1 while the symbol's Redis book is marked stale.",
            ),
            stale,
        )
    }

    fn discovery(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(d) = &self.sources.discovery else {
            return Ok(());
        };
        let outcomes = [("ok", d.refreshes.get()), ("failed", d.failures.get())]
            .map(|(o, n)| (vec![("outcome", o.to_string())], n as f64));
        family(
            encoder,
            counter(
                "hotpath_discovery_refreshes",
                "Pair discovery refreshes, by outcome (a failed one keeps the pairs).",
            ),
            outcomes,
        )?;
        let changes = [("added", d.added.get()), ("removed", d.removed.get())]
            .map(|(c, n)| (vec![("change", c.to_string())], n as f64));
        family(
            encoder,
            counter(
                "hotpath_discovery_pair_changes",
                "Symbols pair discovery added or removed (halted ones included).",
            ),
            changes,
        )?;
        let halted: Vec<(Labels, f64)> = crate::sync::lock(&d.halted)
            .iter()
            .map(|s| (vec![("symbol", s.clone())], 1.0))
            .collect();
        family(
            encoder,
            gauge(
                "hotpath_symbol_halted",
                "1 for each watched symbol whose exchangeInfo status is HALT or BREAK.",
            ),
            halted,
        )
    }

    fn sidecar(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = &self.sources.sidecar else {
            return Ok(());
        };
        let calls = [
            ("historicalTrades", "ok", s.pages.get()),
            ("historicalTrades", "error", s.page_failures.get()),
            ("depth", "ok", s.depth_snapshots.get()),
            ("depth", "error", s.depth_failures.get()),
        ];
        let calls = calls.map(|(e, o, n)| {
            (
                vec![("endpoint", e.to_string()), ("outcome", o.to_string())],
                n as f64,
            )
        });
        family(
            encoder,
            counter(
                "ingestor_rest_api_calls",
                "Binance REST requests made by the sidecar.",
            ),
            calls,
        )?;
        family(
            encoder,
            counter(
                "ingestor_rest_gaps_detected",
                "Trade gaps turned into REST backfills.",
            ),
            [(Vec::new(), s.trade_gaps.get() as f64)],
        )?;
        family(
            encoder,
            counter(
                "hotpath_repaired_ids",
                "Trade ids the sidecar handed to sinks (per sink).",
            ),
            [(Vec::new(), s.repaired_ids.get() as f64)],
        )?;
        family(
            encoder,
            counter(
                "hotpath_unrepaired_ids",
                "Trade ids the sidecar gave up on (per sink).",
            ),
            [(Vec::new(), s.unrepaired_ids.get() as f64)],
        )?;
        let detections = [
            ("silence", "found", s.silent_streams.get()),
            ("silence", "repaired", s.silence_repairs.get()),
            ("kline", "checked", s.kline_checks.get()),
            ("kline", "mismatch", s.kline_mismatches.get()),
            ("kline", "skipped", s.kline_checks_skipped.get()),
            ("stream_kline", "checked", s.stream_kline_checks.get()),
            ("stream_kline", "mismatch", s.stream_kline_mismatches.get()),
            ("stream_kline", "unjudged", s.stream_klines_unjudged.get()),
        ];
        family(
            encoder,
            counter(
                "hotpath_detections",
                "Silent streams found and repaired; kline intervals checked (REST, or the closed \
                 stream klines of JSON mode), disagreeing, not judged, and REST checks skipped for a \
                 stream kline.",
            ),
            detections.map(|(d, o, n)| {
                (
                    vec![("detector", d.to_string()), ("outcome", o.to_string())],
                    n as f64,
                )
            }),
        )?;
        family(
            encoder,
            gauge(
                "hotpath_rest_weight_used",
                "REST weight used in the current minute, as Binance last reported.",
            ),
            [(Vec::new(), s.rest_weight_used.get() as f64)],
        )?;
        histogram(
            encoder,
            (
                "ingestor_rest_api_latency_seconds",
                "Binance REST request latency.",
            ),
            [(Vec::new(), &s.rest_latency)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{latency_histogram, record_latency};

    #[test]
    fn buckets_span_nanoseconds_to_seconds_and_keep_every_value() {
        let mut h = latency_histogram();
        for ns in [
            50,
            300,
            2_000,
            40_000,
            3_000_000,
            2_000_000_000,
            10_000_000_000,
        ] {
            record_latency(&mut h, ns);
        }
        let (sum, count, buckets) = seconds_buckets(&h);
        assert_eq!(count, 7);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 7);
        assert_eq!(buckets[0], (1e-7, 1), "50 ns in the first bucket");
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
        assert!((sum - 12.003_042_35).abs() < 0.02, "{sum}");
    }

    /// The per-symbol families: summed over the readers, labelled by symbol, stream and
    /// consumer, only for the symbols subscribed now (a removed one's series leave).
    #[test]
    fn per_symbol_series_cover_the_subscribed_symbols_only() {
        use crate::feed::stats::SymbolCount;
        use std::sync::RwLock;
        let readers: Vec<Arc<ReaderStats>> = (0..2).map(|_| Arc::default()).collect();
        for r in &readers {
            r.symbols.ensure(0, 2);
            r.symbols.ensure(1, 2);
            r.symbols.add(1, StreamKind::Trade, SymbolCount::Frames, 3);
            r.symbols.add(0, StreamKind::Trade, SymbolCount::Frames, 50);
        }
        readers[0]
            .symbols
            .add(1, StreamKind::Trade, SymbolCount::Gaps, 1);
        readers[1].symbols.dropped(1, StreamKind::Depth, 1);
        let sidecar = Arc::new(crate::sidecar::thread::SidecarStats::default());
        sidecar.repaired(1, 7);
        let sources = Sources {
            service: "hotpath".into(),
            readers,
            sinks: Vec::new(),
            sidecar: Some(sidecar),
            pairs: Arc::new(RwLock::new(vec!["BTCUSDT".into()])),
            books_kept: false,
            stale_after: std::time::Duration::from_secs(1),
            discovery: None,
            registry: Arc::new(RwLock::new(vec!["ETHUSDT".into(), "BTCUSDT".into()])),
            consumers: vec!["kinesis", "redis"],
            streams: vec![StreamKind::Trade, StreamKind::Depth],
            connections: Arc::default(),
        };
        let sampler = Arc::new(Mutex::new(Sampler::new(Instant::now())));
        let (text, _) = encode(&registry(sources, sampler), false).expect("encodes");
        for line in [
            "hotpath_symbol_frames_total{symbol=\"BTCUSDT\",stream=\"trade\"} 6",
            "hotpath_symbol_frames_total{symbol=\"BTCUSDT\",stream=\"depth\"} 0",
            "hotpath_symbol_gaps_total{symbol=\"BTCUSDT\",stream=\"trade\"} 1",
            "hotpath_symbol_queue_drops_total{symbol=\"BTCUSDT\",stream=\"depth\",consumer=\"redis\"} 1",
            "hotpath_symbol_queue_drops_total{symbol=\"BTCUSDT\",stream=\"depth\",consumer=\"kinesis\"} 0",
            "hotpath_symbol_repaired_ids_total{symbol=\"BTCUSDT\",stream=\"trade\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("ETHUSDT"), "a removed symbol has no series");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("hotpath_symbol_") && l.contains("bestBidAsk")),
            "streams not subscribed have none"
        );
    }

    #[test]
    fn open_metrics_only_when_asked() {
        assert!(wants_open_metrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_open_metrics(Some("text/plain")));
        assert!(!wants_open_metrics(None));
    }
}
