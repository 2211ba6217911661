//! The S3 archive writer (`[s3] enabled = true`): a ring-fed sink like the others. It drains
//! its rings (one per reader, plus the sidecar's repair ring), puts every trade (live or
//! repaired) through its per-symbol [`TradeOrders`] (each id once, in order), and keeps per
//! symbol the trades of the current UTC hour. A symbol's hour is closed, and its trades go to
//! the bucket as Parquet parts ([`Store::archive`]), when a trade of a later hour arrives, when
//! the hour has been over for `s3.close_grace_ms` (late repairs), at `s3.part_rows_max`
//! trades, and at shutdown (a partial part).
//!
//! **A restart resumes from the bucket.** [`Store::archive`] lists the hour's parts before it
//! writes and skips the ids they hold, so trades written before a crash or a restart (or by
//! `hotpath backfill trades`) are never written twice; a part that failed is written again
//! from the start (same key, same trades) after a full-jitter backoff.
//!
//! It runs a current-thread tokio runtime of its own with one archive job in flight while it
//! goes on draining, so nothing here blocks a reader (a full ring is the reader's
//! `queue_full` notice). Trades wait in memory while S3 is down, closed parts up to
//! `s3.buffer_trades_max` trades: past it the oldest trades part is dropped. A dropped part,
//! and at shutdown what is not written when the flush deadline passes, is counted as dropped
//! and logged, each part with the `hotpath backfill trades` command that fetches it again
//! (parts never claim ids they lack, so the backfill fills exactly those).
//!
//! **Candles** (`s3.kline_interval`, 1m by default): every trade delivered also feeds the
//! symbol's [`SymbolCandles`] (the `crate::kline` builder); a candle comes out when a trade of
//! a later interval arrives or when its interval ended `s3.close_grace_ms` ago with none of
//! the symbol's trades held for a repair. Only a complete one (no trade id missing around it:
//! see [`crate::archive::candles`]) is archived, per symbol and hour like the trades, in parts
//! named by their first and last open time, which the bucket's parts are checked against
//! before writing ([`Store::archive_klines`]): a restart never writes a candle twice.
//!
//! **Depth snapshots**: the sidecar hands each snapshot it fetched to the `snapshots` ring
//! (`s3.snapshot_queue` deep, a full ring drops for the archive only, counted by the sidecar);
//! each becomes one part named by its `lastUpdateId` ([`Store::put_snapshot`]). The writer
//! takes from the ring only while fewer than `s3.snapshot_queue` snapshots wait for S3, so
//! an S3 outage fills the ring and the sidecar drops instead of this writer's memory growing.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::archive::candles::{Closed, SymbolCandles};
use crate::archive::keys::{HOUR_US, hour_of};
use crate::archive::snapshots::{FetchedSnapshot, SnapshotRows};
use crate::archive::store::{Archived, Store, StoreError, client_from_chain};
use crate::archive::{Inexact, TradeRow, frame_rows};
use crate::backoff::Backoff;
use crate::clock::{monotonic_ns, unix_us};
use crate::config::s3::S3Config;
use crate::feed::event::{FeedEvent, Repair};
use crate::idle::{Bell, TaskIdle};
use crate::kline::Candle;
use crate::sink::order::TradeOrders;
use crate::sink::{SinkError, SinkStats, SinkSummary, ring_depth};
use crate::stream::StreamKind;

/// Errors logged one by one before they are only counted.
const ERRORS_LOGGED_MAX: u32 = 20;

/// What the writer thread is given.
pub struct S3Sink {
    /// Settings.
    pub config: S3Config,
    /// One ring per reader.
    pub rings: Vec<rtrb::Consumer<FeedEvent>>,
    /// The sidecar's repair ring for this sink; `None` without a sidecar.
    pub repairs: Option<rtrb::Consumer<Repair>>,
    /// The depth snapshots the sidecar fetched; `None`: none is archived.
    pub snapshots: Option<rtrb::Consumer<Box<FetchedSnapshot>>>,
    /// How long a symbol's trades wait for missing ids before them.
    pub hold_max: Duration,
    /// Live counters.
    pub stats: Arc<SinkStats>,
    /// Set once the readers and the sidecar have stopped: drain, flush, return.
    pub stop: Arc<AtomicBool>,
    /// The core the writer thread is pinned to; `None`: not pinned.
    pub core: Option<usize>,
    /// How long the final flush may take; what is left then is dropped and counted.
    pub flush_timeout: Duration,
    /// This writer's bell.
    pub bell: Bell,
}

/// Starts the writer thread.
pub fn spawn(
    sink: S3Sink,
) -> std::io::Result<std::thread::JoinHandle<Result<SinkSummary, SinkError>>> {
    std::thread::Builder::new()
        .name("hotpath-s3".into())
        .spawn(move || {
            crate::cores::pin(sink.core);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SinkError::Runtime {
                    sink: "s3",
                    reason: e.to_string(),
                })?;
            runtime.block_on(run(sink))
        })
}

/// One symbol's trades of one hour, to be archived together.
struct Part {
    symbol: String,
    hour: i64,
    rows: Vec<TradeRow>,
    /// Receipt time of the newest event in it (monotonic ns).
    newest_recv_ns: u64,
}

/// One symbol's complete candles of one hour, to be archived together.
struct KlinePart {
    symbol: String,
    hour: i64,
    candles: Vec<Candle>,
}

/// What one archive job writes.
enum Work {
    Trades(Part),
    Klines(KlinePart),
    Snapshot(String, Box<SnapshotRows>),
}

type Job = Pin<Box<dyn Future<Output = (Work, Result<Archived, StoreError>)>>>;

/// What the S3 writer archived besides trades (the run summary's `sinks.s3.archive`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveSummary {
    /// Candles written.
    pub klines_written: u64,
    /// Candles a part in the bucket already held (not written again).
    pub klines_skipped: u64,
    /// Candles not archived: a trade id around them was missing, or one was not exact.
    pub klines_incomplete: u64,
    /// Candles revised by a trade after they were written (the bucket keeps the first).
    pub klines_late: u64,
    /// Candles and snapshots left unwritten when the shutdown flush deadline passed.
    pub klines_dropped: u64,
    /// Depth snapshots written.
    pub snapshots_written: u64,
    /// Depth snapshots refused (a level not exact at 10^-8) or dropped at the deadline.
    pub snapshots_dropped: u64,
}

/// The candles of the live writer: per symbol, its builder and the open hour's part.
struct Klines {
    interval: crate::kline::Interval,
    symbols: BTreeMap<u16, SymbolCandles>,
    open: BTreeMap<u16, KlinePart>,
    closed: Vec<Closed>,
}

struct Writer {
    config: S3Config,
    stats: Arc<SinkStats>,
    /// The open hour of each symbol, by the feed's symbol index.
    open: BTreeMap<u16, Part>,
    /// Closed hours (and candles, snapshots) waiting for their turn.
    queue: VecDeque<Work>,
    klines: Option<Klines>,
    /// Snapshots in `queue` (or in flight).
    snapshots_waiting: usize,
    archive: ArchiveSummary,
    retry_at: Instant,
    /// Trades, candles and snapshots of the job in flight.
    in_flight: (usize, usize, usize),
    backoff: Backoff,
    orders: TradeOrders<FeedEvent>,
    released: Vec<(FeedEvent, i64)>,
    scratch: Vec<TradeRow>,
    inexact: Vec<Inexact>,
    skipped: u64,
    gaps_logged: u32,
    errors_logged: u32,
}

async fn run(sink: S3Sink) -> Result<SinkSummary, SinkError> {
    let S3Sink {
        config,
        mut rings,
        mut repairs,
        mut snapshots,
        hold_max,
        stats,
        stop,
        core: _,
        flush_timeout,
        bell,
    } = sink;
    let store = Store::new(client_from_chain(&config).await, config.clone());
    let mut idler = TaskIdle::new(config.idle, bell);
    let mut w = Writer::new(config, stats, hold_max);
    let mut job: Option<Job> = None;
    let mut flush_deadline: Option<Instant> = None;
    loop {
        tokio::task::coop::consume_budget().await;
        let stopping = stop.load(Ordering::Acquire);
        let mut work = ring_depth(&rings) + repairs.as_ref().map_or(0, |r| r.slots());
        w.drain(&mut rings, &mut repairs);
        work += w.take_snapshots(&mut snapshots, stopping);
        let now = Instant::now();
        w.close_due(unix_us(), stopping);
        w.bound();
        if stopping && flush_deadline.is_none() {
            flush_deadline = Some(now + flush_timeout);
        }
        if job.is_none() && now >= w.retry_at {
            job = w.queue.pop_front().map(|work| {
                w.in_flight = work.counts();
                start(&store, work)
            });
            work += usize::from(job.is_some());
        }
        let held: usize = w.orders.held() + w.queue.len() + w.open.len();
        w.stats.queue_depth.set((ring_depth(&rings) + held) as u64);
        let snapshots_empty = snapshots.as_ref().is_none_or(|r| r.is_empty());
        let rings_empty = rings.iter().all(|r| r.is_empty()) && snapshots_empty;
        if stopping && job.is_none() && w.queue.is_empty() && rings_empty {
            break;
        }
        if flush_deadline.is_some_and(|d| now >= d) {
            drop(job.take());
            w.abandon();
            break;
        }
        let has_work = || {
            (!stopping && stop.load(Ordering::Acquire))
                || rings.iter().any(|r| !r.is_empty())
                || repairs.as_ref().is_some_and(|r| !r.is_empty())
                || snapshots.as_ref().is_some_and(|r| !r.is_empty())
        };
        match (idler.step(work), job.as_mut()) {
            (None, Some(j)) => {
                if let Some((work, done)) = futures_util::FutureExt::now_or_never(j.as_mut()) {
                    job = None;
                    w.settle(work, done);
                }
            }
            (None, None) => {}
            (Some(step), None) => idler.wait(step, has_work).await,
            (Some(step), Some(j)) => {
                tokio::select! {
                    (work, done) = j.as_mut() => {
                        job = None;
                        w.settle(work, done);
                    }
                    () = idler.wait(step, has_work) => {}
                }
            }
        }
    }
    Ok(w.finish())
}

impl Work {
    /// (trades, candles, snapshots) in it.
    fn counts(&self) -> (usize, usize, usize) {
        match self {
            Work::Trades(part) => (part.rows.len(), 0, 0),
            Work::Klines(part) => (0, part.candles.len(), 0),
            Work::Snapshot(..) => (0, 0, 1),
        }
    }
}

/// Says that `part`'s trades were not archived, and which backfill fetches them again.
fn say_lost(part: &Part, why: &str) {
    let (Some(first), Some(last)) = (part.rows.first(), part.rows.last()) else {
        return;
    };
    let (from_ms, to_ms) = (
        first.trade_time_us.div_euclid(1000),
        last.trade_time_us.div_euclid(1000) + 1,
    );
    tracing::error!(
        symbol = %part.symbol,
        trades = part.rows.len(),
        first_id = first.trade_id,
        last_id = last.trade_id,
        "s3: trades not archived ({why}); `hotpath backfill trades --symbol {} --from {from_ms} \
         --to {to_ms}` fetches them again",
        part.symbol
    );
}

/// The archive job of `work`.
fn start(store: &Store, work: Work) -> Job {
    let store = store.clone();
    Box::pin(async move {
        let done = match &work {
            Work::Trades(part) => store.archive(&part.symbol, &part.rows).await,
            Work::Klines(part) => {
                let interval = store.config().kline_interval.map_or("1m", |i| i.name);
                store
                    .archive_klines(&part.symbol, interval, &part.candles)
                    .await
            }
            Work::Snapshot(symbol, rows) => {
                store.put_snapshot(symbol, rows).await.map(|_| Archived {
                    parts: 1,
                    written: 1,
                    ..Archived::default()
                })
            }
        };
        (work, done)
    })
}

impl Writer {
    fn new(config: S3Config, stats: Arc<SinkStats>, hold_max: Duration) -> Writer {
        Writer {
            backoff: Backoff::new(config.retry_initial, config.retry_max, monotonic_ns() | 1),
            klines: config.kline_interval.map(|interval| Klines {
                interval,
                symbols: BTreeMap::new(),
                open: BTreeMap::new(),
                closed: Vec::new(),
            }),
            config,
            stats,
            open: BTreeMap::new(),
            queue: VecDeque::new(),
            snapshots_waiting: 0,
            archive: ArchiveSummary::default(),
            retry_at: Instant::now(),
            in_flight: (0, 0, 0),
            orders: TradeOrders::new(
                u64::try_from(hold_max.as_nanos()).unwrap_or(u64::MAX),
                crate::constants::TRADE_EVENTS_HELD_MAX,
            ),
            released: Vec::new(),
            scratch: Vec::new(),
            inexact: Vec::new(),
            skipped: 0,
            gaps_logged: 0,
            errors_logged: 0,
        }
    }

    /// The summary at the end; `flushed` when nothing is left in memory and nothing dropped.
    fn finish(self) -> SinkSummary {
        if self.skipped > 0 {
            tracing::info!(
                skipped = self.skipped,
                "s3: trades already in the bucket were not written again"
            );
        }
        let mut summary = self.stats.summary();
        summary.flushed = self.queue.is_empty()
            && self.open.is_empty()
            && self.orders.held() == 0
            && summary.dropped == 0;
        summary.archive = Some(self.archive);
        summary
    }

    /// Takes everything waiting in the rings; gives up on gaps held too long.
    fn drain(
        &mut self,
        rings: &mut [rtrb::Consumer<FeedEvent>],
        repairs: &mut Option<rtrb::Consumer<Repair>>,
    ) {
        self.drain_events(rings);
        if let Some(ring) = repairs.as_mut() {
            while let Ok(repair) = ring.pop() {
                if repair.is_removal() {
                    self.drain_events(rings);
                }
                self.repair(repair);
            }
        }
        let mut released = std::mem::take(&mut self.released);
        self.orders.expire(monotonic_ns(), &mut released);
        self.deliver(released);
        crate::sink::order::note("s3", &mut self.orders, &self.stats, &mut self.gaps_logged);
    }

    /// Takes the snapshots waiting in `ring` while fewer than `s3.snapshot_queue` wait for
    /// S3 (every one when `stopping`); returns how many.
    fn take_snapshots(
        &mut self,
        ring: &mut Option<rtrb::Consumer<Box<FetchedSnapshot>>>,
        stopping: bool,
    ) -> usize {
        let Some(ring) = ring.as_mut() else {
            return 0;
        };
        let mut taken = 0;
        while stopping || self.snapshots_waiting < self.config.snapshot_queue {
            let Ok(fetched) = ring.pop() else { break };
            taken += 1;
            match SnapshotRows::of(&fetched) {
                Ok(rows) => {
                    self.snapshots_waiting += 1;
                    let work = Work::Snapshot(fetched.symbol, Box::new(rows));
                    self.queue.push_back(work);
                }
                Err(e) => {
                    self.archive.snapshots_dropped += 1;
                    self.log_error(format!("{} snapshot not archived: {e}", fetched.symbol));
                }
            }
        }
        taken
    }

    fn drain_events(&mut self, rings: &mut [rtrb::Consumer<FeedEvent>]) {
        for ring in rings.iter_mut() {
            while let Ok(event) = ring.pop() {
                if event.is_announcement() {
                    self.orders
                        .announce(event.symbol, event.first_id, event.last_id);
                    continue;
                }
                self.stats.received.add(1);
                if event.kind == StreamKind::Trade {
                    self.route(event);
                }
            }
        }
    }

    fn route(&mut self, event: FeedEvent) {
        let mut released = std::mem::take(&mut self.released);
        let (symbol, first, last, now) = (
            event.symbol,
            event.first_id,
            event.last_id,
            event.recv_time_ns,
        );
        self.orders
            .offer(symbol, first, last, event, now, &mut released);
        self.deliver(released);
    }

    fn repair(&mut self, repair: Repair) {
        match repair {
            Repair::Event(event) => {
                self.stats.repaired.add(1);
                if event.kind == StreamKind::Trade {
                    self.route(event);
                }
            }
            Repair::GaveUp { symbol, from, to } => {
                let mut released = std::mem::take(&mut self.released);
                self.orders.unfetchable(symbol, from, to, &mut released);
                self.deliver(released);
            }
            Repair::Stream { symbol, change, .. } if change.is_removal() => {
                let mut released = std::mem::take(&mut self.released);
                self.orders.forget(symbol, &mut released);
                self.deliver(released);
                self.stats.tally.forget(symbol);
                if let Some(part) = self.open.remove(&symbol) {
                    self.queue.push_back(Work::Trades(part));
                }
                if let Some(k) = self.klines.as_mut() {
                    k.symbols.remove(&symbol);
                    if let Some(part) = k.open.remove(&symbol) {
                        self.queue.push_back(Work::Klines(part));
                    }
                }
            }
            Repair::Book(_) | Repair::BookUnavailable { .. } | Repair::Stream { .. } => {}
        }
    }

    fn deliver(&mut self, mut released: Vec<(FeedEvent, i64)>) {
        for (event, from) in released.drain(..) {
            self.stats.tally.add(event.symbol, &event.frame, from);
            self.accept(&event, from);
        }
        self.released = released;
    }

    /// Adds the trades of `event` from id `from` on to its symbol's open hour, closing the
    /// hour first when they belong to a later one or the part is full.
    fn accept(&mut self, event: &FeedEvent, from: i64) {
        let Some(symbol) = frame_rows(&event.frame, from, &mut self.scratch, &mut self.inexact)
        else {
            self.stats.dropped.add(1);
            self.log_error("a trades frame that cannot be read".into());
            return;
        };
        for e in std::mem::take(&mut self.inexact) {
            self.stats.dropped.add(1);
            self.log_error(e.to_string());
        }
        self.candles(event.symbol, &symbol);
        let rows_max = self.config.part_rows_max;
        for row in self.scratch.drain(..) {
            let hour = hour_of(row.trade_time_us);
            let part = self.open.entry(event.symbol).or_insert_with(|| Part {
                symbol: symbol.clone(),
                hour,
                rows: Vec::new(),
                newest_recv_ns: 0,
            });
            if (part.hour != hour || part.rows.len() >= rows_max) && !part.rows.is_empty() {
                let closed = std::mem::replace(
                    part,
                    Part {
                        symbol: symbol.clone(),
                        hour,
                        rows: Vec::new(),
                        newest_recv_ns: 0,
                    },
                );
                self.queue.push_back(Work::Trades(closed));
            }
            part.hour = hour;
            part.rows.push(row);
            part.newest_recv_ns = event.recv_time_ns;
        }
    }

    /// Closes the hours that ended `s3.close_grace_ms` ago (every open one when `all`).
    fn close_due(&mut self, now_us: i64, all: bool) {
        if all {
            let mut released = std::mem::take(&mut self.released);
            self.orders.finish(&mut released);
            self.deliver(released);
        }
        let grace_us = i64::try_from(self.config.close_grace.as_micros()).unwrap_or(i64::MAX);
        let due: Vec<u16> = self
            .open
            .iter()
            .filter(|(_, p)| all || now_us >= ((p.hour + 1) * HOUR_US).saturating_add(grace_us))
            .map(|(&s, _)| s)
            .collect();
        for symbol in due {
            if let Some(part) = self.open.remove(&symbol) {
                self.queue.push_back(Work::Trades(part));
            }
        }
        self.close_candles(now_us, all);
    }

    /// Feeds the rows in `scratch` (the trades of `index` just delivered) to its candles.
    fn candles(&mut self, index: u16, symbol: &str) {
        let Some(k) = self.klines.as_mut() else {
            return;
        };
        let candles = k
            .symbols
            .entry(index)
            .or_insert_with(|| SymbolCandles::new(k.interval));
        for row in &self.scratch {
            candles.push(row, &mut k.closed);
        }
        self.take_candles(index, symbol);
    }

    /// The candles that ended `s3.close_grace_ms` ago close (unless the symbol's trades are
    /// held); the hours of candles that ended that long ago too (every one when `all`).
    fn close_candles(&mut self, now_us: i64, all: bool) {
        let Some(k) = self.klines.as_mut() else {
            return;
        };
        let grace_ms = i64::try_from(self.config.close_grace.as_millis()).unwrap_or(i64::MAX);
        let now_ms = now_us.div_euclid(1000);
        let indexes: Vec<u16> = k.symbols.keys().copied().collect();
        for index in indexes {
            let held = self.orders.holds(index);
            if let Some(k) = self.klines.as_mut()
                && let Some(candles) = k.symbols.get_mut(&index)
            {
                candles.advance(now_ms, grace_ms, held, &mut k.closed);
            }
            let name = self
                .klines
                .as_ref()
                .and_then(|k| k.open.get(&index))
                .map(|p| p.symbol.clone());
            if let Some(name) = name {
                self.take_candles(index, &name);
            }
        }
        let Some(k) = self.klines.as_mut() else {
            return;
        };
        let late_ms = grace_ms.saturating_add(k.interval.ms);
        let hour_ms = HOUR_US / 1000;
        let due: Vec<u16> = k
            .open
            .iter()
            .filter(|(_, p)| all || now_ms >= ((p.hour + 1) * hour_ms).saturating_add(late_ms))
            .map(|(&s, _)| s)
            .collect();
        for index in due {
            if let Some(part) = k.open.remove(&index) {
                self.queue.push_back(Work::Klines(part));
            }
        }
    }

    /// The candles closed for `index` go to its open hour's part (complete ones), replace the
    /// one they revise, or are counted.
    fn take_candles(&mut self, index: u16, symbol: &str) {
        let Some(k) = self.klines.as_mut() else {
            return;
        };
        let hour_ms = HOUR_US / 1000;
        for closed in k.closed.drain(..) {
            let c = closed.candle;
            if !closed.complete {
                self.archive.klines_incomplete += 1;
                continue;
            }
            let hour = c.open_ms.div_euclid(hour_ms);
            let part = k.open.entry(index).or_insert_with(|| KlinePart {
                symbol: symbol.to_string(),
                hour,
                candles: Vec::new(),
            });
            if closed.revision {
                match part.candles.last_mut() {
                    Some(last) if last.open_ms == c.open_ms => *last = c,
                    _ => self.archive.klines_late += 1,
                }
                continue;
            }
            if part.hour != hour && !part.candles.is_empty() {
                let done = std::mem::replace(
                    part,
                    KlinePart {
                        symbol: symbol.to_string(),
                        hour,
                        candles: Vec::new(),
                    },
                );
                self.queue.push_back(Work::Klines(done));
            }
            part.hour = hour;
            part.candles.push(c);
        }
    }

    /// The end of the job in flight: counted, or put back for a retry after a backoff.
    fn settle(&mut self, work: Work, done: Result<Archived, StoreError>) {
        self.in_flight = (0, 0, 0);
        self.stats.requests.add(1);
        let archived = match done {
            Ok(archived) => archived,
            Err(e) => {
                self.stats.failed_requests.add(1);
                let what = match &work {
                    Work::Trades(part) => {
                        self.stats.retried.add(part.rows.len() as u64);
                        format!("{} hour {}", part.symbol, part.hour)
                    }
                    Work::Klines(part) => format!("{} klines of hour {}", part.symbol, part.hour),
                    Work::Snapshot(symbol, rows) => {
                        format!("{symbol} snapshot {}", rows.last_update_id)
                    }
                };
                self.log_error(format!("{what}: {e} (retried)"));
                self.retry_at = Instant::now() + self.backoff.next_delay();
                self.queue.push_front(work);
                return;
            }
        };
        self.backoff.reset();
        match work {
            Work::Trades(part) => {
                self.stats.written.add(archived.written as u64);
                self.skipped += archived.skipped as u64;
                let latency = monotonic_ns().saturating_sub(part.newest_recv_ns);
                self.stats.ack_latency_ns.set(latency);
            }
            Work::Klines(_) => {
                self.archive.klines_written += archived.written as u64;
                self.archive.klines_skipped += archived.skipped as u64;
            }
            Work::Snapshot(..) => {
                self.snapshots_waiting = self.snapshots_waiting.saturating_sub(1);
                self.archive.snapshots_written += 1;
            }
        }
    }

    /// Keeps the closed trades parts within `s3.buffer_trades_max` trades: the oldest go,
    /// each counted and said with its backfill.
    fn bound(&mut self) {
        let mut queued: usize = self.queue.iter().map(|w| w.counts().0).sum();
        while queued > self.config.buffer_trades_max {
            let at = self.queue.iter().position(|w| matches!(w, Work::Trades(_)));
            let Some(Work::Trades(part)) = at.and_then(|at| self.queue.remove(at)) else {
                break;
            };
            queued -= part.rows.len();
            self.stats.dropped.add(part.rows.len() as u64);
            say_lost(&part, "s3.buffer_trades_max reached while S3 failed");
        }
    }

    /// The flush deadline passed: what is left is dropped, counted and said.
    fn abandon(&mut self) {
        let (mut trades, mut candles, mut snapshots) = self.in_flight;
        for work in &self.queue {
            let (t, c, s) = work.counts();
            (trades, candles, snapshots) = (trades + t, candles + c, snapshots + s);
        }
        trades += self.open.values().map(|p| p.rows.len()).sum::<usize>();
        if let Some(k) = &self.klines {
            candles += k.open.values().map(|p| p.candles.len()).sum::<usize>();
        }
        if trades + candles + snapshots > 0 {
            tracing::error!(
                trades,
                candles,
                snapshots,
                "s3: the shutdown flush deadline passed; these were not archived \
                 (hotpath backfill trades / klines --s3 can fetch them again)"
            );
        }
        let parts = self.queue.iter().filter_map(|w| match w {
            Work::Trades(part) => Some(part),
            _ => None,
        });
        for part in parts.chain(self.open.values()) {
            say_lost(part, "the shutdown flush deadline passed");
        }
        self.stats.dropped.add(trades as u64);
        self.archive.klines_dropped += candles as u64;
        self.archive.snapshots_dropped += snapshots as u64;
        self.queue.clear();
        self.open.clear();
        if let Some(k) = self.klines.as_mut() {
            k.open.clear();
        }
    }

    fn log_error(&mut self, message: String) {
        self.errors_logged = self.errors_logged.saturating_add(1);
        if self.errors_logged <= ERRORS_LOGGED_MAX {
            tracing::warn!("s3: {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::encode::encode_sbe;
    use crate::sim::exchange::{Event, Payload, StreamKey};
    use crate::sim::market::Trade;

    /// A trades event of symbol 0 with `ids`, one second apart from `start_us`.
    fn trades(ids: std::ops::RangeInclusive<i64>, start_us: i64) -> FeedEvent {
        let (first, last) = (*ids.start(), *ids.end());
        let trades = ids
            .map(|id| Trade {
                id,
                price: 6_976_988,
                qty: 1,
                buyer_maker: false,
                time_us: start_us,
            })
            .collect();
        let event = Event {
            key: StreamKey {
                symbol: 0,
                kind: StreamKind::Trade,
            },
            event_time_us: start_us,
            payload: Payload::Trades {
                transact_time_us: start_us,
                trades,
            },
        };
        let mut frame = Vec::new();
        encode_sbe("BTCUSDT", &event, &mut frame);
        FeedEvent {
            recv_time_ns: 1,
            symbol: 0,
            kind: StreamKind::Trade,
            first_id: first,
            last_id: last,
            first_new_id: first,
            event_time_us: start_us,
            frame: bytes::Bytes::from(frame),
        }
    }

    /// While S3 fails, closed parts wait in memory up to `s3.buffer_trades_max` trades: past
    /// it the oldest part is dropped and counted, the newest kept.
    #[test]
    fn closed_parts_are_held_within_the_buffer_bound_oldest_dropped_first() {
        let config = S3Config {
            part_rows_max: 10,
            buffer_trades_max: 25,
            ..S3Config::default()
        };
        let stats = Arc::new(SinkStats::default());
        let mut w = Writer::new(config, stats.clone(), Duration::ZERO);
        let hour_us = 1_795_957_200_000_000;
        for k in 0..6 {
            w.accept(&trades(k * 10 + 1..=k * 10 + 10, hour_us + k), k * 10 + 1);
            w.bound();
        }
        // Parts 1..=10 to 41..=50 closed (51..=60 is open): two fit within 25.
        let kept: Vec<i64> = w
            .queue
            .iter()
            .filter_map(|work| match work {
                Work::Trades(p) => Some(p.rows[0].trade_id),
                _ => None,
            })
            .collect();
        assert_eq!(kept, vec![31, 41]);
        assert_eq!(stats.dropped.get(), 30);
        w.abandon();
        assert_eq!(
            stats.dropped.get(),
            30 + 30,
            "20 queued and 10 open at the deadline"
        );
        assert!(w.queue.is_empty() && w.open.is_empty());
    }
}
