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
//! `s3.buffer_trades_max` trades: past it the oldest part is dropped. A dropped part, and at
//! shutdown what is not written when the flush deadline passes, is counted as dropped and
//! logged with the `hotpath backfill trades` command that fetches it again (parts never claim
//! ids they lack, so the backfill fills exactly those).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::archive::keys::{HOUR_US, hour_of};
use crate::archive::store::{Archived, Store, StoreError, client_from_chain};
use crate::archive::{Inexact, TradeRow, frame_rows};
use crate::backoff::Backoff;
use crate::clock::{monotonic_ns, unix_us};
use crate::config::s3::S3Config;
use crate::feed::event::{FeedEvent, Repair};
use crate::idle::{Bell, TaskIdle};
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

type Job = Pin<Box<dyn Future<Output = (Part, Result<Archived, StoreError>)>>>;

/// What a part holds, to say what was lost and how to fetch it again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    symbol: String,
    ids: (i64, i64),
    /// Trade times of its first and last trade, microseconds since the epoch.
    times_us: (i64, i64),
    rows: usize,
}

impl Span {
    fn of(part: &Part) -> Option<Span> {
        let (first, last) = (part.rows.first()?, part.rows.last()?);
        Some(Span {
            symbol: part.symbol.clone(),
            ids: (first.trade_id, last.trade_id),
            times_us: (first.trade_time_us, last.trade_time_us),
            rows: part.rows.len(),
        })
    }

    /// Counts the span as dropped and says which backfill fetches it again.
    fn lost(&self, stats: &SinkStats, why: &str) {
        stats.dropped.add(self.rows as u64);
        let (from_ms, to_ms) = (
            self.times_us.0.div_euclid(1000),
            self.times_us.1.div_euclid(1000) + 1,
        );
        tracing::error!(
            symbol = %self.symbol,
            trades = self.rows,
            first_id = self.ids.0,
            last_id = self.ids.1,
            "s3: trades not archived ({why}); `hotpath backfill trades --symbol {} --from {from_ms} \
             --to {to_ms}` fetches them again",
            self.symbol
        );
    }
}

struct Writer {
    config: S3Config,
    stats: Arc<SinkStats>,
    /// The open hour of each symbol, by the feed's symbol index.
    open: BTreeMap<u16, Part>,
    /// Closed hours waiting for their turn.
    queue: VecDeque<Part>,
    retry_at: Instant,
    /// The job in flight's trades.
    in_flight: Option<Span>,
    /// Trades in `queue`.
    queued_rows: usize,
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
        let now = Instant::now();
        w.close_due(unix_us(), stopping);
        w.bound();
        if stopping && flush_deadline.is_none() {
            flush_deadline = Some(now + flush_timeout);
        }
        if job.is_none() && now >= w.retry_at {
            job = w.dequeue().map(|part| {
                w.in_flight = Span::of(&part);
                start(&store, part)
            });
            work += usize::from(job.is_some());
        }
        let held: usize = w.orders.held() + w.queue.len() + w.open.len();
        w.stats.queue_depth.set((ring_depth(&rings) + held) as u64);
        if stopping && job.is_none() && w.queue.is_empty() && rings.iter().all(|r| r.is_empty()) {
            break;
        }
        if flush_deadline.is_some_and(|d| now >= d) {
            if let Some(j) = job.take() {
                drop(j);
            }
            w.abandon();
            break;
        }
        let has_work = || {
            (!stopping && stop.load(Ordering::Acquire))
                || rings.iter().any(|r| !r.is_empty())
                || repairs.as_ref().is_some_and(|r| !r.is_empty())
        };
        match (idler.step(work), job.as_mut()) {
            (None, Some(j)) => {
                if let Some((part, done)) = futures_util::FutureExt::now_or_never(j.as_mut()) {
                    job = None;
                    w.settle(part, done);
                }
            }
            (None, None) => {}
            (Some(step), None) => idler.wait(step, has_work).await,
            (Some(step), Some(j)) => {
                tokio::select! {
                    (part, done) = j.as_mut() => {
                        job = None;
                        w.settle(part, done);
                    }
                    () = idler.wait(step, has_work) => {}
                }
            }
        }
    }
    Ok(w.finish())
}

/// The archive job of `part`.
fn start(store: &Store, part: Part) -> Job {
    let store = store.clone();
    Box::pin(async move {
        let done = store.archive(&part.symbol, &part.rows).await;
        (part, done)
    })
}

impl Writer {
    fn new(config: S3Config, stats: Arc<SinkStats>, hold_max: Duration) -> Writer {
        Writer {
            backoff: Backoff::new(config.retry_initial, config.retry_max, monotonic_ns() | 1),
            config,
            stats,
            open: BTreeMap::new(),
            queue: VecDeque::new(),
            retry_at: Instant::now(),
            in_flight: None,
            queued_rows: 0,
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
                    self.enqueue(part);
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
                self.queued_rows += closed.rows.len();
                self.queue.push_back(closed);
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
                self.enqueue(part);
            }
        }
    }

    /// The end of the job in flight: counted, or put back for a retry after a backoff.
    fn settle(&mut self, part: Part, done: Result<Archived, StoreError>) {
        self.in_flight = None;
        self.stats.requests.add(1);
        match done {
            Ok(archived) => {
                self.stats.written.add(archived.written as u64);
                self.skipped += archived.skipped as u64;
                let latency = monotonic_ns().saturating_sub(part.newest_recv_ns);
                self.stats.ack_latency_ns.set(latency);
                self.backoff.reset();
            }
            Err(e) => {
                self.stats.failed_requests.add(1);
                self.stats.retried.add(part.rows.len() as u64);
                self.log_error(format!("{} hour {}: {e} (retried)", part.symbol, part.hour));
                self.retry_at = Instant::now() + self.backoff.next_delay();
                self.queued_rows += part.rows.len();
                self.queue.push_front(part);
            }
        }
    }

    /// Adds a closed part to the queue.
    fn enqueue(&mut self, part: Part) {
        self.queued_rows += part.rows.len();
        self.queue.push_back(part);
    }

    /// Takes the oldest closed part.
    fn dequeue(&mut self) -> Option<Part> {
        let part = self.queue.pop_front()?;
        self.queued_rows -= part.rows.len();
        Some(part)
    }

    /// Keeps the closed parts within `s3.buffer_trades_max` trades: the oldest go, each
    /// counted and said with its backfill.
    fn bound(&mut self) {
        while self.queued_rows > self.config.buffer_trades_max {
            let Some(part) = self.dequeue() else { break };
            if let Some(span) = Span::of(&part) {
                span.lost(&self.stats, "s3.buffer_trades_max reached while S3 failed");
            }
        }
    }

    /// The flush deadline passed: what is left is dropped, counted and said part by part.
    fn abandon(&mut self) {
        let why = "the shutdown flush deadline passed";
        let open: Vec<Part> = std::mem::take(&mut self.open).into_values().collect();
        let queued = std::mem::take(&mut self.queue);
        let spans = queued.iter().chain(&open).filter_map(Span::of);
        for span in self.in_flight.take().into_iter().chain(spans) {
            span.lost(&self.stats, why);
        }
        self.queued_rows = 0;
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
        let kept: Vec<i64> = w.queue.iter().map(|p| p.rows[0].trade_id).collect();
        assert_eq!(kept, vec![31, 41]);
        assert_eq!(w.queued_rows, 20);
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
