//! Counters the reader threads bump and the summary, the consumers and the control plane's
//! Prometheus exporter read. Each counter sits on its own cache line so readers on different
//! cores never share one.
//!
//! Every counter here has one writer: its reader thread (the frame path and the connection
//! slots run on that thread's single-threaded runtime). So they are [`OwnedCounter`]s, bumped
//! with a relaxed load and store instead of a locked `fetch_add`.
//!
//! [`SymbolStats`] keeps the per-symbol and per-stream counters (frames, wire gaps, missing
//! and duplicate ids, queue drops per consumer) in chunks of 64 symbols, allocated by the
//! reader when a symbol index first appears (at start and when a symbol is added: never per
//! frame) and published through a `OnceLock`, so the control plane reads them at scrape time
//! without a lock the reader could wait for.

use std::sync::OnceLock;

use crate::metrics::{Counter, LiveHistogram, OwnedCell, OwnedCounter};
use crate::stream::StreamKind;

/// Counters of one reader thread.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Binary frames received.
    pub frames: OwnedCounter,
    /// Events accepted, per [`StreamKind`] index.
    pub events: [OwnedCounter; 4],
    /// Duplicate frames dropped.
    pub duplicates: OwnedCounter,
    /// Gaps detected on the wire.
    pub gaps: OwnedCounter,
    /// Ids missing in those gaps.
    pub missing_ids: OwnedCounter,
    /// Frames that failed to decode (truncated, malformed).
    pub decode_errors: OwnedCounter,
    /// Frames with an unknown template id.
    pub unknown_templates: OwnedCounter,
    /// Frames of another schema.
    pub schema_mismatches: OwnedCounter,
    /// Frames for a symbol that is not configured.
    pub unknown_symbols: OwnedCounter,
    /// Events a consumer's full ring could not take.
    pub queue_drops: OwnedCounter,
    /// Gap notices that found the sidecar's ring full and were merged into a waiting one of
    /// their stream (their ids are asked for through it, [`super::pending`]).
    pub notice_drops: OwnedCounter,
    /// Connections opened (first and later).
    pub connects: OwnedCounter,
    /// Connections lost (closed by the server or the network) or found silent.
    pub reconnects: OwnedCounter,
    /// Make-before-break switches.
    pub switches: OwnedCounter,
    /// Dual mode: connections moved from SBE to the JSON streams (key refused or SBE down).
    pub fallbacks_to_json: OwnedCounter,
    /// Dual mode: connections moved back from JSON to SBE.
    pub returns_to_sbe: OwnedCounter,
    /// Text frames (JSON control and events).
    pub text_frames: OwnedCounter,
    /// JSON market-data frames that did not parse or convert (`feed.format = "json"`),
    /// skipped.
    pub json_malformed: OwnedCounter,
    /// Closed klines received on the kline streams (JSON mode with `[klines] intervals`),
    /// handed to the sidecar's stream kline check.
    pub stream_klines: OwnedCounter,
    /// Closed klines the sidecar's kline ring had no room for (or no sidecar took): their
    /// intervals are left to the REST kline check.
    pub stream_klines_dropped: OwnedCounter,
    /// SUBSCRIBE/UNSUBSCRIBE requests Binance answered with an error (retried with backoff).
    pub control_errors: OwnedCounter,
    /// SUBSCRIBE/UNSUBSCRIBE requests without a reply in time (retried with backoff).
    pub control_timeouts: OwnedCounter,
    /// Per symbol and stream counters, by registry index.
    pub symbols: SymbolStats,
    /// Receive-to-enqueue latency, a copy of the reader's own histogram published once a
    /// second (never per frame) for the control plane.
    pub wire_to_queue: LiveHistogram,
}

impl ReaderStats {
    /// Events accepted of `kind`.
    pub fn events_of(&self, kind: StreamKind) -> u64 {
        self.events[kind as usize].get()
    }
}

/// One connection slot's figures as its state machine keeps them ([`super::slot::Slot::figures`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotFigures {
    /// Data frames received on the slot's connections.
    pub frames: u64,
    /// Connections lost or found silent.
    pub reconnects: u64,
    /// Whether a connection of the slot has delivered and is current.
    pub delivering: bool,
    /// Whether the slot carries any stream (every symbol of it may have been removed).
    pub carrying: bool,
}

/// One connection (slot) as the control plane sees it: `/health`'s websocket components,
/// `ingestor_sbe_connection_status`, `/ready`. Its reader publishes the slot's figures once per
/// read batch (relaxed stores, never per frame); the control plane's sampler turns frames into
/// rates and ages.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// The reader running it.
    pub reader: usize,
    /// Data frames received.
    pub frames: Counter,
    /// Connections lost or found silent.
    pub reconnects: Counter,
    /// 1 while a connection of the slot is current, else 0.
    pub delivering: Counter,
    /// 1 while the slot carries any stream, else 0 (then it is left out of health and ready).
    pub carrying: Counter,
}

impl ConnectionStats {
    /// Counters of a connection on reader `reader`, carrying streams.
    pub fn on_reader(reader: usize) -> ConnectionStats {
        let stats = ConnectionStats {
            reader,
            ..ConnectionStats::default()
        };
        stats.carrying.set(1);
        stats
    }

    /// Publishes `figures` (the reader, once per read batch).
    #[inline]
    pub fn publish(&self, figures: SlotFigures) {
        self.frames.set(figures.frames);
        self.reconnects.set(figures.reconnects);
        self.delivering.set(u64::from(figures.delivering));
        self.carrying.set(u64::from(figures.carrying));
    }
}

/// What [`SymbolStats`] counts per symbol and stream (besides queue drops per consumer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolCount {
    /// Frames of the symbol received (decoded, duplicates included).
    Frames = 0,
    /// Sequence gaps on the wire.
    Gaps = 1,
    /// Ids missing in those gaps.
    MissingIds = 2,
    /// Ids dropped as already delivered: whole duplicate frames and the overlapping part of a
    /// partly new one.
    DuplicateIds = 3,
}

/// Counts per symbol and stream before the queue drops.
const COUNTS: usize = 4;
/// Symbols per chunk.
const CHUNK: usize = 64;
/// Chunks: every `u16` symbol index has one.
const CHUNKS: usize = (u16::MAX as usize + 1) / CHUNK;
const KINDS: usize = StreamKind::ALL.len();

/// The counters of [`CHUNK`] symbols: per symbol, [`COUNTS`] then one per consumer, each per
/// stream kind.
#[derive(Debug)]
struct Chunk {
    consumers: usize,
    cells: Box<[OwnedCell]>,
}

impl Chunk {
    fn stride(&self) -> usize {
        (COUNTS + self.consumers) * KINDS
    }
}

/// Per symbol and stream counters of one reader thread, by the symbol's registry index.
/// One writer (the reader); any thread reads. Bounded: at most one row per registry index,
/// and the registry never forgets a symbol (a symbol removed and added again gets its index,
/// and its counters, back), so memory is bounded by the symbols the run has ever carried.
#[derive(Debug)]
pub struct SymbolStats {
    chunks: Box<[OnceLock<Chunk>]>,
}

impl Default for SymbolStats {
    fn default() -> Self {
        SymbolStats {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl SymbolStats {
    /// Makes room for symbol `index` with `consumers` consumers (allocates its chunk the first
    /// time). Cold: the reader calls it at start and when a symbol is added, never per frame.
    pub fn ensure(&self, index: u16, consumers: usize) {
        self.chunks[usize::from(index) / CHUNK].get_or_init(|| Chunk {
            consumers,
            cells: (0..CHUNK * (COUNTS + consumers) * KINDS)
                .map(|_| OwnedCell::default())
                .collect(),
        });
    }

    #[inline]
    fn cell(&self, symbol: u16, kind: StreamKind, column: usize) -> Option<&OwnedCell> {
        let chunk = self.chunks[usize::from(symbol) / CHUNK].get()?;
        let row = usize::from(symbol) % CHUNK * chunk.stride();
        chunk.cells.get(row + column * KINDS + kind as usize)
    }

    /// Adds `n` to `count` of `symbol`'s `kind` stream. Only the reader may call this; a
    /// symbol without room ([`SymbolStats::ensure`]) is not counted.
    #[inline]
    pub fn add(&self, symbol: u16, kind: StreamKind, count: SymbolCount, n: u64) {
        if let Some(cell) = self.cell(symbol, kind, count as usize) {
            cell.add(n);
        }
    }

    /// Counts an event of `symbol`'s `kind` stream that `consumer`'s full ring could not take.
    #[inline]
    pub fn dropped(&self, symbol: u16, kind: StreamKind, consumer: usize) {
        if consumer < self.consumers(symbol)
            && let Some(cell) = self.cell(symbol, kind, COUNTS + consumer)
        {
            cell.add(1);
        }
    }

    /// `count` of `symbol`'s `kind` stream (0 for a symbol never seen).
    pub fn get(&self, symbol: u16, kind: StreamKind, count: SymbolCount) -> u64 {
        self.cell(symbol, kind, count as usize)
            .map_or(0, OwnedCell::get)
    }

    /// Events of `symbol`'s `kind` stream `consumer`'s full ring could not take.
    pub fn drops(&self, symbol: u16, kind: StreamKind, consumer: usize) -> u64 {
        if consumer >= self.consumers(symbol) {
            return 0;
        }
        self.cell(symbol, kind, COUNTS + consumer)
            .map_or(0, OwnedCell::get)
    }

    /// The consumers counted for `symbol` (0 for a symbol never seen).
    pub fn consumers(&self, symbol: u16) -> usize {
        self.chunks[usize::from(symbol) / CHUNK]
            .get()
            .map_or(0, |c| c.consumers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_counters_are_kept_per_symbol_stream_and_consumer() {
        let stats = SymbolStats::default();
        assert_eq!(stats.get(3, StreamKind::Trade, SymbolCount::Frames), 0);
        stats.add(3, StreamKind::Trade, SymbolCount::Frames, 1);
        assert_eq!(
            stats.get(3, StreamKind::Trade, SymbolCount::Frames),
            0,
            "no room yet: not counted"
        );
        for index in [3, 64, 65_535] {
            stats.ensure(index, 2);
        }
        stats.add(3, StreamKind::Trade, SymbolCount::Frames, 2);
        stats.add(3, StreamKind::Depth, SymbolCount::Gaps, 1);
        stats.add(64, StreamKind::Trade, SymbolCount::DuplicateIds, 5);
        stats.dropped(65_535, StreamKind::BestBidAsk, 1);
        stats.dropped(65_535, StreamKind::BestBidAsk, 2); // no such consumer: ignored
        assert_eq!(stats.get(3, StreamKind::Trade, SymbolCount::Frames), 2);
        assert_eq!(stats.get(3, StreamKind::Depth, SymbolCount::Gaps), 1);
        assert_eq!(stats.get(3, StreamKind::Depth, SymbolCount::Frames), 0);
        assert_eq!(stats.get(4, StreamKind::Trade, SymbolCount::Frames), 0);
        assert_eq!(
            stats.get(64, StreamKind::Trade, SymbolCount::DuplicateIds),
            5
        );
        assert_eq!(stats.drops(65_535, StreamKind::BestBidAsk, 1), 1);
        assert_eq!(stats.drops(65_535, StreamKind::BestBidAsk, 0), 0);
        assert_eq!(stats.drops(65_535, StreamKind::BestBidAsk, 2), 0);
        assert_eq!(stats.consumers(64), 2);
        assert_eq!(stats.consumers(200), 0);
    }
}
