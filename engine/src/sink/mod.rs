//! The sinks: batched writers that drain the feed's rings into AWS Kinesis, Redis,
//! PostgreSQL and the S3 archive, each on
//! its own thread, never slowing the readers (a sink that falls behind only lets its own ring
//! fill, which the reader counts and reports as a `queue_full` notice).
//!
//! Each sink owns one ring per reader (`Rings::events[consumer]`) and one repair ring from the
//! sidecar, drains them in a loop, puts every trade event (live or repaired) through its
//! per-symbol [`order::TradeOrders`] so each trade id is delivered once and in order, batches,
//! writes, and keeps its counters in a [`SinkStats`] that the run's summary and the progress
//! line read while it runs.

pub mod dlq;
pub mod kinesis;
pub mod order;
pub mod postgres;
pub mod redis;
pub mod resend;
pub mod s3;

use serde::Serialize;

use crate::metrics::{Counter, LiveHistogram, Percentiles};

/// Why a sink could not start or finish: the one error type of the sink boundary. Failures of
/// single writes are not errors here: they are retried, dead-lettered and counted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The writer thread's runtime could not be built.
    #[error("{sink}: cannot start a runtime: {reason}")]
    Runtime {
        /// `kinesis` or `redis`.
        sink: &'static str,
        /// What the OS said.
        reason: String,
    },
    /// A Kinesis stream is missing (and may not be created), or could not be created.
    #[error("kinesis: stream {stream}: {reason}")]
    Stream {
        /// The stream name.
        stream: String,
        /// What is wrong.
        reason: String,
    },
    /// A client could not be set up from the configuration (the key is named).
    #[error("{sink}: {key}: {reason}")]
    Setup {
        /// `kinesis` or `redis`.
        sink: &'static str,
        /// The configuration key at fault.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The dead-letter file could not be written or closed: records may be lost; said loudly.
    #[error("{sink}: dead-letter file: {reason}")]
    DeadLetter {
        /// `kinesis` or `redis`.
        sink: &'static str,
        /// What failed.
        reason: String,
    },
}

/// A sink's live counters, shared with the progress reporter.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events taken from the rings.
    pub received: Counter,
    /// Repair events taken from the repair ring (trades the sidecar fetched from REST).
    pub repaired: Counter,
    /// Trade events dropped because this sink had delivered every id they carry (a repair
    /// and a late live copy of the same trades: only the first counts).
    pub duplicates: Counter,
    /// Trade ids this sink gave up on: missing, and neither live nor repaired in time.
    pub unrepaired: Counter,
    /// Trades left out of the klines (summed over the intervals): they came after a later
    /// candle of their interval had closed, so their candle went out without them.
    pub klines_late: Counter,
    /// Records (Kinesis: user records; Redis: trades) acknowledged by the sink's server.
    pub written: Counter,
    /// Records sent again after a failure.
    pub retried: Counter,
    /// Records written to the dead-letter file.
    pub dead_lettered: Counter,
    /// Records dropped and counted: neither delivered nor dead-lettered (the dead-letter file
    /// could not be written, or a frame could not be read).
    pub dropped: Counter,
    /// Requests or pipelines that failed as a whole.
    pub failed_requests: Counter,
    /// Requests sent.
    pub requests: Counter,
    /// Events waiting in the sink (its rings plus its own buffers), last seen.
    pub queue_depth: Counter,
    /// Reconnections (Redis) or circuit breaker openings (Kinesis).
    pub reconnects: Counter,
    /// Times the writer thread waited (parked or lingered) and woke again: with `received`,
    /// how many events one wake-up took (the Redis writer; zero for the others).
    pub wakeups: Counter,
    /// Receipt-to-acknowledgement latency of the newest event of the last acknowledged batch,
    /// nanoseconds (a gauge for the progress line; the summary has percentiles).
    pub ack_latency_ns: Counter,
    /// Receipt-to-acknowledgement latency of every acknowledged record, nanoseconds (recorded
    /// once per acknowledged batch; the control plane's histogram).
    pub ack_latency: LiveHistogram,
    /// The Redis writer's order book counters (zero for Kinesis).
    pub book: BookStats,
    /// The trades delivered, by symbol and kline interval (the sidecar's kline check and
    /// silence probes read it).
    pub tally: std::sync::Arc<crate::tally::TradeTally>,
}

/// What the Redis writer's order books went through (see `redis::ob`).
#[derive(Debug, Default)]
pub struct BookStats {
    /// Atomic re-anchors that swapped a new state in.
    pub reanchors: Counter,
    /// Re-anchors that failed (lock held elsewhere, swap refused, Redis lost) and were retried.
    pub reanchor_failures: Counter,
    /// Books synced again after a gap, a snapshot edge or a failed consistency check.
    pub resyncs: Counter,
    /// Consistency checks concluded (agreed or not).
    pub consistency_checks: Counter,
    /// Consistency checks that found the book different from REST (the book is re-synced).
    pub consistency_mismatches: Counter,
    /// Consistency checks that could not conclude (snapshot too old or too shallow).
    pub consistency_inconclusive: Counter,
    /// Diffs buffered during a sync dropped to keep within `redis.sync_buffer_bytes_max`.
    pub sync_buffer_drops: Counter,
    /// Each book's state, published every [`crate::constants::CONTROL_SAMPLE_INTERVAL`] by the
    /// Redis writer for the control plane (`/ready`, the staleness metric).
    pub books: std::sync::Mutex<Vec<BookState>>,
}

/// One symbol's book as the control plane sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookState {
    /// The symbol.
    pub symbol: String,
    /// Whether `ob:{S}` is marked stale (not synced, or no longer known current).
    pub stale: bool,
}

/// [`BookStats`] at the end of a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BookSummary {
    /// Atomic re-anchors that swapped a new state in.
    pub reanchors: u64,
    /// Re-anchors that failed and were retried.
    pub reanchor_failures: u64,
    /// Books synced again after a gap, an edge or a mismatch.
    pub resyncs: u64,
    /// Consistency checks concluded.
    pub consistency_checks: u64,
    /// Consistency checks that disagreed.
    pub consistency_mismatches: u64,
    /// Consistency checks that could not conclude.
    pub consistency_inconclusive: u64,
    /// Sync-buffer diffs dropped.
    pub sync_buffer_drops: u64,
}

impl BookStats {
    /// The counters now.
    pub fn summary(&self) -> BookSummary {
        BookSummary {
            reanchors: self.reanchors.get(),
            reanchor_failures: self.reanchor_failures.get(),
            resyncs: self.resyncs.get(),
            consistency_checks: self.consistency_checks.get(),
            consistency_mismatches: self.consistency_mismatches.get(),
            consistency_inconclusive: self.consistency_inconclusive.get(),
            sync_buffer_drops: self.sync_buffer_drops.get(),
        }
    }
}

/// What a sink reports at the end of a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SinkSummary {
    /// Events taken from the rings.
    pub received: u64,
    /// Repair events taken from the repair ring.
    pub repaired: u64,
    /// Trade events dropped as already delivered.
    pub duplicates: u64,
    /// Trade ids given up on.
    pub unrepaired: u64,
    /// Trades left out of candles that had closed (summed over the intervals).
    pub klines_late: u64,
    /// Records acknowledged.
    pub written: u64,
    /// Records sent again after a failure.
    pub retried: u64,
    /// Records written to the dead-letter file.
    pub dead_lettered: u64,
    /// Records dropped (counted, reported as gaps).
    pub dropped: u64,
    /// Requests that failed as a whole.
    pub failed_requests: u64,
    /// Requests or pipelines sent.
    pub requests: u64,
    /// Reconnections or breaker openings.
    pub reconnects: u64,
    /// Times the writer waited and woke again (the Redis writer; zero for the others).
    pub wakeups: u64,
    /// Frame receipt to write acknowledged, nanoseconds.
    pub receipt_to_ack_ns: Percentiles,
    /// The same in every sink: everything this sink took (events from the rings, repairs)
    /// was landed or dead-lettered before it exited: nothing left in memory, nothing held,
    /// nothing dropped (`dropped == 0`). For Redis the state keys (`bbo:`, `ob:`, `tr:`,
    /// `feat:`), which cannot be dead-lettered, must also hold everything taken.
    pub flushed: bool,
    /// The Redis writer's order books (absent for Kinesis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub book: Option<BookSummary>,
    /// The S3 writer's candles and depth snapshots (absent for the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<s3::ArchiveSummary>,
}

impl SinkStats {
    /// The counters as a summary (latency and `flushed` filled by the sink).
    pub fn summary(&self) -> SinkSummary {
        SinkSummary {
            received: self.received.get(),
            repaired: self.repaired.get(),
            duplicates: self.duplicates.get(),
            unrepaired: self.unrepaired.get(),
            klines_late: self.klines_late.get(),
            written: self.written.get(),
            retried: self.retried.get(),
            dead_lettered: self.dead_lettered.get(),
            dropped: self.dropped.get(),
            failed_requests: self.failed_requests.get(),
            requests: self.requests.get(),
            reconnects: self.reconnects.get(),
            wakeups: self.wakeups.get(),
            receipt_to_ack_ns: Percentiles::default(),
            flushed: false,
            book: None,
            archive: None,
        }
    }
}

/// Items waiting in `rings`.
pub fn ring_depth<T>(rings: &[rtrb::Consumer<T>]) -> usize {
    rings.iter().map(|r| r.slots()).sum()
}
