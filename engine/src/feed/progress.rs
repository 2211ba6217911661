//! The live progress line of `hotpath run --progress N`: one JSON object per period on stderr
//! with messages per second, gaps, queue drops and gap notices merged at a full notice ring (counts only: the line
//! stays the same size however many gaps come; ranges are in the summary and `run.gaps_file`), the trade ids the sidecar repaired and gave
//! up on (per sink that lost them), the streams it found silent and the kline intervals that
//! disagreed, and per sink its writes per second, totals, the latest
//! receipt-to-acknowledgement latency and its queue depth; for Redis also its order books'
//! re-anchors, re-syncs and consistency checks.

use std::time::Instant;

use serde_json::{Value, json};

use super::run::{Feed, SinkHandle};

/// Remembers the previous totals to turn them into rates.
pub struct Progress {
    started: Instant,
    last: Instant,
    last_frames: u64,
    last_written: Vec<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Starts counting now.
    pub fn new() -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            last: now,
            last_frames: 0,
            last_written: Vec::new(),
        }
    }

    /// The line for now.
    pub fn line(&mut self, feed: &Feed, sinks: &[SinkHandle]) -> String {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-9);
        let sum = |f: &dyn Fn(&super::stats::ReaderStats) -> u64| -> u64 {
            feed.stats.iter().map(|s| f(s)).sum()
        };
        let frames = sum(&|s| s.frames.get());
        let mut line = json!({
            "t_s": (now.duration_since(self.started).as_secs_f64() * 10.0).round() / 10.0,
            "msgs_per_s": ((frames - self.last_frames) as f64 / secs).round(),
            "frames": frames,
            "gaps": sum(&|s| s.gaps.get()),
            "queue_drops": sum(&|s| s.queue_drops.get()),
            "notice_drops": sum(&|s| s.notice_drops.get()),
        });
        if let Some(sidecar) = &feed.sidecar {
            line["repaired_ids"] = json!(sidecar.repaired_ids.get());
            line["unrepaired_ids"] = json!(sidecar.unrepaired_ids.get());
            line["silent_streams"] = json!(sidecar.silent_streams.get());
            line["kline_mismatches"] = json!(sidecar.kline_mismatches.get());
            line["stream_kline_mismatches"] = json!(sidecar.stream_kline_mismatches.get());
            line["stream_klines_unjudged"] = json!(sidecar.stream_klines_unjudged.get());
        }
        self.last_written.resize(sinks.len(), 0);
        for (i, sink) in sinks.iter().enumerate() {
            let written = sink.stats.written.get();
            line[sink.name] = json!({
                "written": written,
                "written_per_s": ((written - self.last_written[i]) as f64 / secs).round(),
                "retried": sink.stats.retried.get(),
                "dead_lettered": sink.stats.dead_lettered.get(),
                "unrepaired": sink.stats.unrepaired.get(),
                "ack_latency_us": sink.stats.ack_latency_ns.get() as f64 / 1000.0,
                "queue_depth": sink.stats.queue_depth.get(),
                "reconnects": sink.stats.reconnects.get(),
            });
            if sink.name == "redis" {
                let book = &sink.stats.book;
                line[sink.name]["reanchors"] = json!(book.reanchors.get());
                line[sink.name]["resyncs"] = json!(book.resyncs.get());
                line[sink.name]["consistency_checks"] = json!(book.consistency_checks.get());
                line[sink.name]["consistency_mismatches"] =
                    json!(book.consistency_mismatches.get());
            }
            self.last_written[i] = written;
        }
        self.last = now;
        self.last_frames = frames;
        Value::to_string(&line)
    }
}
