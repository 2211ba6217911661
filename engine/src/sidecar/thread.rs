//! The sidecar thread: drains every reader's notice ring, turns trade gaps into REST backfill
//! pages ([`super::backfill`]), cuts each page into SBE trades frames ([`super::frames`]) and
//! pushes them into the repair ring of each consumer (sink) that lost them. The hot path never
//! waits for it: readers only push notices, sinks only pop repairs.
//!
//! It runs on its own current-thread runtime and idles between rounds as `sidecar.idle` says
//! (by default it parks; a notice, a snapshot request, a finished fetch or the stop wakes it
//! through its [`Bell`], see [`crate::idle`]); each round that pushed repairs rings the bells of
//! the sinks that got them. A repair ring that is full keeps the repair in an outbox until it has
//! room: a fetched trade is never dropped. Requests that cannot be served within
//! `give_up_after` are abandoned and every consumer concerned is told ([`Repair::GaveUp`]), so
//! no sink waits for them forever; the ids are counted as unrepaired.
//!
//! Books ([`super::books`]): the consumers' depth snapshot requests are fetched beside, and
//! the readers' stream notices (lost, back, removed) are forwarded to the consumers keeping
//! books.
//!
//! Detection beyond the sequence check ([`super::detect`]): streams silent while their symbol
//! moves (a silent trade stream is probed with `historicalTrades` from the last id every sink
//! delivered; a silent depth stream's books are re-synced), and the periodic kline check (a
//! closed interval whose kline disagrees with what a sink delivered is backfilled for it).
//! Their REST jobs run between backfill pages, on the same client and weight budget. In JSON
//! mode with klines, the closed klines of Binance's kline streams are checked the same way
//! without REST (and their REST kline checks are skipped).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::backfill::{
    Backfill, Consumers, Delivery, Fetch, PAGE_IDS_MAX, PAGES_BURST, PAGES_PER_MINUTE,
};
use super::books::{BookSetup, Books};
use super::detect::{Detect, DetectSetup, Job};
use super::frames::{TradesFrame, page_frames};
use super::klines::{
    Judgement, interval_ids, interval_name, judge, judge_stream, parse_first_trade_id, parse_kline,
};
use crate::backoff::jittered;
use crate::binance::rest::{RestClient, RestError, RestTrade};
use crate::clock::{monotonic_ns, unix_ms};
use crate::feed::event::{Cause, FeedEvent, Notice, Repair, StreamChange};
use crate::gaps::{GapLog, GapReport};
use crate::idle::{Bell, IdleStrategy, Step, TaskIdle};
use crate::metrics::{Counter, Percentiles, latency_histogram, record_latency};
use crate::rng::Rng;
use crate::stream::StreamKind;
use crate::tally::Seen;

/// A page that came back empty (ids not served yet) is asked again after this long.
const EMPTY_PAGE_RETRY: Duration = Duration::from_millis(200);
/// Retry delays of failed pages (full jitter between these bounds, growing per failure).
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Give-ups logged one by one; later ones are only counted (a gap storm must not flood the log).
const GIVE_UPS_LOGGED_MAX: u64 = 20;
/// Detections (silent streams, kline mismatches, their failures) logged one by one; later ones
/// are only counted.
const DETECTIONS_LOGGED_MAX: u64 = 20;

/// Ids in `from..=to` (0 when empty), without overflow whatever ids the network sent.
fn id_count(from: i64, to: i64) -> u64 {
    u64::try_from(i128::from(to) - i128::from(from) + 1).unwrap_or(0)
}

/// A symbol was removed: every one of `consumers` not told yet by the books (those told are
/// `repairs[told..]`) is told too, so that each sink forgets the symbol's trade order and does
/// not wait, once it is added again, for the ids traded while it was away.
fn tell_removed(
    repairs: &mut Vec<(usize, Repair)>,
    told: usize,
    consumers: usize,
    notice: &Notice,
) {
    for consumer in 0..consumers {
        if repairs[told..].iter().any(|(c, _)| *c == consumer) {
            continue;
        }
        repairs.push((
            consumer,
            Repair::Stream {
                symbol: notice.gap.symbol,
                change: StreamChange::Removed,
                last_update_id: notice.gap.last_good,
            },
        ));
    }
}

/// What the sidecar needs to run.
pub struct SidecarSetup {
    /// One notice ring per reader.
    pub notices: Vec<rtrb::Consumer<Notice>>,
    /// One repair ring per consumer, in consumer order (the bit of [`Consumers`]).
    pub repairs: Vec<rtrb::Producer<Repair>>,
    /// Symbol names by index (the feed appends when a symbol is added at run time).
    pub symbols: Arc<RwLock<Vec<String>>>,
    /// The REST client (trade backfill); `None` when there is no consumer to repair.
    pub rest: Option<RestClient>,
    /// A request not served within this long is given up.
    pub give_up_after: Duration,
    /// Counters, shared with the progress line.
    pub stats: Arc<SidecarStats>,
    /// Set when the readers have stopped: finish the requests, then exit.
    pub done: Arc<AtomicBool>,
    /// How long to keep repairing after `done` before giving up what is left.
    pub flush_timeout: Duration,
    /// Depth snapshots for the consumers keeping books; `None`: none does.
    pub books: Option<BookSetup>,
    /// What the thread does when idle.
    pub idle: IdleStrategy,
    /// The sidecar's bell: the readers (notices), the Redis writer (snapshot requests) and the
    /// stop ring it.
    pub bell: Bell,
    /// Each repair ring's consumer's bell (as `repairs`), rung after a round pushed to it.
    pub repair_bells: Vec<Bell>,
    /// Silence and kline detection.
    pub detect: DetectSetup,
    /// The core the thread is pinned to ([`crate::cores::CorePlan`]); `None`: not pinned.
    pub core: Option<usize>,
    /// Every gap range is written here too (`run.gaps_file`), when set.
    pub gaps_file: Option<PathBuf>,
}

/// The sidecar's live counters.
#[derive(Debug, Default)]
pub struct SidecarStats {
    /// Notices received (gaps and queue drops, every stream).
    pub notices: Counter,
    /// Trade gaps turned into backfill requests.
    pub trade_gaps: Counter,
    /// Trade ids requested (per request, not per consumer).
    pub requested_ids: Counter,
    /// Trade ids handed to consumers (per consumer).
    pub repaired_ids: Counter,
    /// Trade ids given up on (per consumer).
    pub unrepaired_ids: Counter,
    /// Trade ids handed to consumers (per consumer), by symbol index: `repaired_ids` per
    /// symbol, for the control plane (bumped once per delivery, under a lock only a scrape
    /// shares; the sidecar is not a reader).
    pub repaired_by_symbol: std::sync::Mutex<Vec<u64>>,
    /// REST pages fetched.
    pub pages: Counter,
    /// REST pages that failed (and were retried).
    pub page_failures: Counter,
    /// Repairs waiting for room in a full repair ring.
    pub outbox: Counter,
    /// Depth snapshots fetched for consumers' books.
    pub depth_snapshots: Counter,
    /// Depth snapshot fetches that failed (syncs are retried).
    pub depth_failures: Counter,
    /// Depth snapshots handed to the S3 archive (`s3.snapshot_queue`).
    pub snapshots_archived: Counter,
    /// Depth snapshots not archived: the archive's queue was full (never waited for).
    pub snapshots_archive_dropped: Counter,
    /// Latency of every REST request (historical trades and depth snapshots), nanoseconds.
    pub rest_latency: crate::metrics::LiveHistogram,
    /// The REST weight used in the current minute, as Binance last reported it (a gauge).
    pub rest_weight_used: Counter,
    /// Streams found silent for longer than `sidecar.stream_silence_ms` while their symbol
    /// moved.
    pub silent_streams: Counter,
    /// Silent streams that had missed something: trades found by the probe, or books
    /// re-synced.
    pub silence_repairs: Counter,
    /// Kline intervals compared with what the sinks delivered.
    pub kline_checks: Counter,
    /// Kline intervals that disagreed with a sink (its trades of the interval backfilled).
    pub kline_mismatches: Counter,
    /// REST kline checks not made: a closed stream kline of the interval was checked instead.
    pub kline_checks_skipped: Counter,
    /// Closed stream klines (JSON mode) compared with what the sinks delivered.
    pub stream_kline_checks: Counter,
    /// Closed stream klines that disagreed with a sink (its trades `f ..= L` backfilled).
    pub stream_kline_mismatches: Counter,
    /// Closed stream klines no sink's tally could judge: the kline's interval is not a whole
    /// number of `sidecar.kline_check` intervals, reaches back beyond what the tally keeps, or
    /// a part of it was not watched whole.
    pub stream_klines_unjudged: Counter,
    /// Silence probes and kline checks whose REST requests failed (not retried: the next scan
    /// or check comes).
    pub detect_failures: Counter,
}

impl SidecarStats {
    /// Counts `ids` repaired ids of symbol `symbol`.
    pub(crate) fn repaired(&self, symbol: u16, ids: u64) {
        let mut by_symbol = crate::sync::lock(&self.repaired_by_symbol);
        let at = usize::from(symbol);
        if by_symbol.len() <= at {
            by_symbol.resize(at + 1, 0);
        }
        by_symbol[at] += ids;
    }

    /// Trade ids of symbol `symbol` handed to consumers (per consumer).
    pub fn repaired_of(&self, symbol: u16) -> u64 {
        crate::sync::lock(&self.repaired_by_symbol)
            .get(usize::from(symbol))
            .copied()
            .unwrap_or(0)
    }
}

/// What the sidecar reports at the end of a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SidecarSummary {
    /// Notices received.
    pub notices: u64,
    /// Trade gaps requested.
    pub trade_gaps: u64,
    /// Trade ids requested.
    pub requested_ids: u64,
    /// Trade ids handed to consumers (per consumer).
    pub repaired_ids: u64,
    /// Trade ids given up on (per consumer).
    pub unrepaired_ids: u64,
    /// REST pages fetched.
    pub pages: u64,
    /// REST pages that failed.
    pub page_failures: u64,
    /// Depth snapshots fetched for consumers' books.
    pub depth_snapshots: u64,
    /// Depth snapshot fetches that failed.
    pub depth_failures: u64,
    /// Depth snapshots handed to the S3 archive.
    pub snapshots_archived: u64,
    /// Depth snapshots the S3 archive's full queue did not take (dropped for the archive
    /// only: the books got them).
    pub snapshots_archive_dropped: u64,
    /// Streams found silent while their symbol moved.
    pub silent_streams: u64,
    /// Silent streams that had missed trades or whose books were re-synced.
    pub silence_repairs: u64,
    /// Kline intervals checked.
    pub kline_checks: u64,
    /// Kline intervals that disagreed with a sink.
    pub kline_mismatches: u64,
    /// REST kline checks not made: a closed stream kline of the interval was checked instead.
    pub kline_checks_skipped: u64,
    /// Closed stream klines compared with what the sinks delivered.
    pub stream_kline_checks: u64,
    /// Closed stream klines that disagreed with a sink.
    pub stream_kline_mismatches: u64,
    /// Closed stream klines no sink's tally could judge.
    pub stream_klines_unjudged: u64,
    /// Silence probes and kline checks that failed.
    pub detect_failures: u64,
    /// Gap notice to repair pushed into the consumer's ring, nanoseconds.
    pub time_to_repair_ns: Percentiles,
}

/// What the thread returns: the summary and the gap ranges it saw.
pub struct SidecarReport {
    /// Counters and latency.
    pub summary: SidecarSummary,
    /// The gap notices' ranges, counted (the first ones listed), for the run summary.
    pub gaps: GapReport,
}

/// Starts the sidecar thread.
pub fn spawn(setup: SidecarSetup) -> std::io::Result<JoinHandle<SidecarReport>> {
    std::thread::Builder::new()
        .name("hotpath-sidecar".into())
        .spawn(move || {
            crate::cores::pin(setup.core);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(Sidecar::new(setup).run()),
                Err(e) => {
                    tracing::error!("sidecar: cannot start its runtime: {e}");
                    SidecarReport {
                        summary: SidecarSummary::default(),
                        gaps: GapReport::default(),
                    }
                }
            }
        })
}

struct Sidecar {
    give_ups_logged: u64,
    setup: SidecarSetup,
    plan: Backfill,
    outbox: VecDeque<(usize, Repair)>,
    /// Every gap notice's range, counted (bounded; see [`GapLog`]).
    gaps: GapLog,
    latency: Histogram<u64>,
    rng: Rng,
    failures: u32,
    deliveries: Vec<Delivery>,
    frames: Vec<TradesFrame>,
    books: Option<Books>,
    book_repairs: Vec<(usize, Repair)>,
    /// A REST client for trade backfill was given (without one, trade gaps are only counted).
    trade_repair: bool,
    idle: TaskIdle,
    /// Repair rings pushed to since their bells last rang: bit `i` for consumer `i`.
    to_ring: u64,
    detect: Detect,
    detections_logged: u64,
    /// Symbols removed while a detection job awaited REST: its answer is not delivered (the
    /// sinks forgot the symbol's order; trades of it now would start a stale one).
    removed_during_job: Vec<u16>,
    /// The stream klines due for their check (reused).
    due_klines: Vec<crate::feed::event::StreamKline>,
}

impl Sidecar {
    fn new(mut setup: SidecarSetup) -> Sidecar {
        let give_up_ns = u64::try_from(setup.give_up_after.as_nanos()).unwrap_or(u64::MAX);
        let bell = setup.bell.clone();
        let books = setup
            .books
            .take()
            .map(|b| Books::new(b, monotonic_ns(), bell.clone()));
        let trade_repair = setup.rest.is_some();
        let detect_setup = std::mem::take(&mut setup.detect);
        let detect = Detect::new(detect_setup, monotonic_ns(), unix_ms());
        let gaps_file = setup.gaps_file.take();
        Sidecar {
            idle: TaskIdle::new(setup.idle, bell),
            to_ring: 0,
            detect,
            detections_logged: 0,
            removed_during_job: Vec::new(),
            due_klines: Vec::new(),
            give_ups_logged: 0,
            books,
            book_repairs: Vec::new(),
            trade_repair,
            setup,
            plan: Backfill::new(give_up_ns).with_pace(PAGES_PER_MINUTE, PAGES_BURST),
            outbox: VecDeque::new(),
            gaps: GapLog::new(gaps_file.as_deref()),
            latency: latency_histogram(),
            rng: Rng::new(monotonic_ns() | 1),
            failures: 0,
            deliveries: Vec::new(),
            frames: Vec::new(),
        }
    }

    async fn run(mut self) -> SidecarReport {
        let mut deadline_ns: Option<u64> = None;
        let mut rest = self.setup.rest.take();
        loop {
            // Let the runtime run its other tasks (snapshot fetches, timers) now and then even
            // while every round finds work.
            tokio::task::coop::consume_budget().await;
            let stopping = self.setup.done.load(Ordering::Acquire);
            let now = monotonic_ns();
            let mut work = self.drain_notices(now);
            work += self.flush_outbox();
            work += self.scan(now);
            work += self.poll_books();
            self.expire(now);
            let done = stopping;
            if done {
                self.stop_books();
                self.detect.clear();
                let flush_ns = u64::try_from(self.setup.flush_timeout.as_nanos()).unwrap_or(0);
                let deadline = *deadline_ns.get_or_insert(now.saturating_add(flush_ns));
                if now >= deadline {
                    self.give_up_everything();
                }
                let drained = self.setup.notices.iter().all(|r| r.is_empty());
                if drained && self.plan.pending() == 0 && self.outbox.is_empty() {
                    break;
                }
                // The sinks still drain their repair rings (they stop after the sidecar), so
                // the outbox keeps moving for a grace period; only a ring still full after it
                // (its sink is stuck) leaves repairs behind, and those are counted.
                let grace = deadline.saturating_add(flush_ns);
                if now >= grace && drained && self.plan.pending() == 0 {
                    self.count_outbox_lost();
                    break;
                }
            }
            let fetch = match rest.as_mut() {
                Some(client) => self.plan.next_fetch(now).map(|f| (f, client)),
                None => None,
            };
            self.ring_consumers();
            match fetch {
                Some((fetch, client)) => {
                    self.fetch(client, fetch).await;
                    self.ring_consumers();
                }
                None => {
                    let job = match rest.as_mut() {
                        Some(client) if !done => {
                            self.detect.next_job(monotonic_ns()).map(|j| (j, client))
                        }
                        _ => None,
                    };
                    match job {
                        Some((job, client)) => {
                            self.run_job(client, job).await;
                            self.ring_consumers();
                        }
                        None => {
                            if let Some(step) = self.idle.step(work) {
                                self.idle.wait(step, || self.has_work(stopping)).await;
                            }
                        }
                    }
                }
            }
        }
        self.report()
    }

    /// Every consumer, as a bit set.
    fn all_consumers(&self) -> Consumers {
        let consumers = self.setup.repairs.len();
        if consumers >= 64 {
            u64::MAX
        } else {
            (1u64 << consumers) - 1
        }
    }

    /// Notices into backfill requests; returns how many were taken.
    fn drain_notices(&mut self, now: u64) -> usize {
        let consumers = self.setup.repairs.len();
        let all = self.all_consumers();
        let mut taken = 0;
        let mut removed: Vec<u16> = Vec::new();
        for ring in self.setup.notices.iter_mut() {
            while let Ok(notice) = ring.pop() {
                taken += 1;
                self.setup.stats.notices.bump();
                if notice.cause.is_gap() {
                    let name = crate::sync::read(&self.setup.symbols)
                        .get(usize::from(notice.gap.symbol))
                        .cloned()
                        .unwrap_or_default();
                    if let Some(range) = notice.range(name) {
                        self.gaps.record(range);
                    }
                }
                let told = self.book_repairs.len();
                if let Some(books) = self.books.as_ref() {
                    books.stream_repairs(&notice, &mut self.book_repairs);
                }
                if notice.cause.is_removal() {
                    self.detect.forget(notice.gap.symbol, now);
                    if !self.removed_during_job.contains(&notice.gap.symbol) {
                        self.removed_during_job.push(notice.gap.symbol);
                    }
                    if self.trade_repair {
                        removed.push(notice.gap.symbol);
                        tell_removed(&mut self.book_repairs, told, consumers, &notice);
                    }
                }
                let trades_wanted = self.trade_repair && notice.gap.kind == StreamKind::Trade;
                if !notice.cause.is_gap() || !trades_wanted || consumers == 0 {
                    continue;
                }
                let mask = match notice.cause {
                    Cause::Wire => all,
                    Cause::QueueFull { consumer } if consumer < 64 => (1u64 << consumer) & all,
                    Cause::QueueFull { .. } => 0,
                    Cause::Disconnected | Cause::Reconnected | Cause::Removed | Cause::Halted => 0,
                };
                let range = notice.gap.missing_range();
                let (from, to) = (*range.start(), *range.end());
                if mask != 0 && from <= to {
                    self.setup.stats.trade_gaps.bump();
                    self.setup.stats.requested_ids.add(id_count(from, to));
                    self.plan.request(notice.gap.symbol, from, to, mask, now);
                }
            }
        }
        for symbol in removed {
            self.forget_backfill(symbol);
        }
        taken
    }

    /// A removed symbol's backfill still pending is given up now, each consumer told before
    /// the removal itself (which goes out with the book repairs, later in the round): a repair
    /// reaching a sink after it forgot the symbol's order would start a new order at ids from
    /// before the removal, and the symbol, added again, would wait for every id traded while
    /// it was away. A page in flight delivers nothing (its requests are gone).
    fn forget_backfill(&mut self, symbol: u16) {
        let mut abandoned = Vec::new();
        self.plan.forget(symbol, &mut abandoned);
        self.abandon(&abandoned);
    }

    /// Fetches one page (while the notice rings keep being drained) and hands its trades out.
    async fn fetch(&mut self, client: &mut RestClient, fetch: Fetch) {
        let Some(symbol) = self.symbol(fetch.symbol) else {
            self.plan.fetched(fetch, None, &mut Vec::new());
            return;
        };
        let limit = fetch.limit.clamp(1, PAGE_IDS_MAX);
        let started = monotonic_ns();
        let result = self
            .drive(client.historical_trades(&symbol, Some(fetch.from_id), limit))
            .await;
        let now = monotonic_ns();
        self.setup
            .stats
            .rest_latency
            .record_all([now.saturating_sub(started)]);
        self.setup
            .stats
            .rest_weight_used
            .set(u64::from(client.used_weight()));
        match result {
            Ok(trades) => self.on_page(&symbol, fetch, &trades, now),
            Err(e) => {
                self.setup.stats.page_failures.bump();
                self.failures = self.failures.saturating_add(1);
                let delay = e.retry_after().unwrap_or_else(|| {
                    jittered(&mut self.rng, RETRY_INITIAL, RETRY_MAX, self.failures)
                });
                tracing::warn!(
                    "sidecar: historicalTrades {symbol} fromId={} failed: {e}; retrying in {delay:?}",
                    fetch.from_id
                );
                let retry_at = now.saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(0));
                self.plan.failed(fetch, retry_at);
            }
        }
    }

    /// Awaits `request` while the notice rings keep being drained, the outbox flushed and the
    /// books served.
    async fn drive<F: std::future::Future>(&mut self, request: F) -> F::Output {
        tokio::pin!(request);
        loop {
            // Woken by a notice, a snapshot request or a finished snapshot fetch.
            let park = Step::Park(crate::constants::IDLE_PARK_MAX);
            tokio::select! {
                result = &mut request => break result,
                () = self.idle.wait(park, || false) => {
                    let now = monotonic_ns();
                    self.drain_notices(now);
                    self.flush_outbox();
                    self.poll_books();
                    self.ring_consumers();
                }
            }
        }
    }

    fn on_page(&mut self, symbol: &str, fetch: Fetch, trades: &[RestTrade], now: u64) {
        self.setup.stats.pages.bump();
        self.frames.clear();
        let got = match page_frames(symbol, trades, &mut self.frames) {
            Ok(()) => self
                .frames
                .first()
                .zip(self.frames.last())
                .map(|(a, b)| (a.first_id, b.last_id)),
            Err(e) => {
                tracing::warn!("sidecar: {symbol} page from {}: {e}", fetch.from_id);
                None
            }
        };
        if got.is_none() {
            let retry = u64::try_from(EMPTY_PAGE_RETRY.as_nanos()).unwrap_or(0);
            self.plan.failed(fetch, now.saturating_add(retry));
            return;
        }
        self.failures = 0;
        let mut deliveries = std::mem::take(&mut self.deliveries);
        deliveries.clear();
        self.plan.fetched(fetch, got, &mut deliveries);
        for delivery in &deliveries {
            self.deliver(delivery, now);
        }
        self.deliveries = deliveries;
    }

    /// Pushes every frame overlapping `delivery` to each of its consumers. Frames reaching
    /// beyond the delivery are harmless: each sink delivers every id once, whatever its source.
    fn deliver(&mut self, delivery: &Delivery, now: u64) {
        let ids = id_count(delivery.from, delivery.to);
        for consumer in 0..self.setup.repairs.len().min(64) {
            if delivery.consumers & (1u64 << consumer) == 0 {
                continue;
            }
            for at in 0..self.frames.len() {
                let frame = &self.frames[at];
                if frame.last_id < delivery.from || frame.first_id > delivery.to {
                    continue;
                }
                let event = FeedEvent {
                    recv_time_ns: now,
                    symbol: delivery.symbol,
                    kind: StreamKind::Trade,
                    first_id: frame.first_id,
                    last_id: frame.last_id,
                    first_new_id: frame.first_id,
                    event_time_us: frame.time_us,
                    frame: frame.frame.clone(),
                };
                self.push(consumer, Repair::Event(event));
            }
            self.setup.stats.repaired_ids.add(ids);
            self.setup.stats.repaired(delivery.symbol, ids);
            record_latency(&mut self.latency, now.saturating_sub(delivery.requested_ns));
        }
    }

    /// The book work of one round; its repairs (and the stale ones the notices made) go out.
    fn poll_books(&mut self) -> usize {
        let mut work = 0;
        if let Some(books) = self.books.as_mut() {
            let before = (
                books.fetched,
                books.failed,
                books.archived,
                books.archive_dropped,
            );
            work = books.poll(&self.setup.symbols, &mut self.book_repairs);
            let stats = &self.setup.stats;
            stats.depth_snapshots.add(books.fetched - before.0);
            stats.depth_failures.add(books.failed - before.1);
            stats.snapshots_archived.add(books.archived - before.2);
            stats
                .snapshots_archive_dropped
                .add(books.archive_dropped - before.3);
            stats.rest_latency.record_all(books.latencies.drain(..));
            if let Some(used) = books.used_weight {
                stats.rest_weight_used.set(u64::from(used));
            }
        }
        let mut repairs = std::mem::take(&mut self.book_repairs);
        for (consumer, repair) in repairs.drain(..) {
            if consumer < self.setup.repairs.len() {
                self.push(consumer, repair);
            }
        }
        self.book_repairs = repairs;
        work
    }

    /// At stop: no more snapshots, and book repairs not yet delivered are dropped (only
    /// trades are worth the flush time; the consumers mark their books stale at stop).
    fn stop_books(&mut self) {
        if let Some(books) = self.books.as_mut() {
            books.stop();
        }
        self.book_repairs.clear();
        self.outbox
            .retain(|(_, r)| matches!(r, Repair::Event(_) | Repair::GaveUp { .. }));
    }

    /// Whether a round would find something to do now (asked after announcing a park): a
    /// notice or snapshot request waiting, or the stop (when the round did not see it yet).
    fn has_work(&self, stopping: bool) -> bool {
        (!stopping && self.setup.done.load(Ordering::Acquire))
            || self.setup.notices.iter().any(|r| !r.is_empty())
            || self.books.as_ref().is_some_and(Books::has_requests)
    }

    /// Rings the bell of each consumer whose repair ring got something since the last call.
    fn ring_consumers(&mut self) {
        if self.to_ring == 0 {
            return;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        for (consumer, bell) in self.setup.repair_bells.iter().enumerate().take(64) {
            if self.to_ring & (1u64 << consumer) != 0 {
                bell.ring_fenced();
            }
        }
        self.to_ring = 0;
    }

    fn push(&mut self, consumer: usize, repair: Repair) {
        // Behind earlier repairs of this consumer, to keep their order.
        if self.outbox.iter().any(|(c, _)| *c == consumer) {
            self.outbox.push_back((consumer, repair));
        } else if let Err(rtrb::PushError::Full(repair)) = self.setup.repairs[consumer].push(repair)
        {
            self.outbox.push_back((consumer, repair));
        } else {
            self.to_ring |= 1u64 << consumer.min(63);
        }
        self.setup.stats.outbox.set(self.outbox.len() as u64);
    }

    fn flush_outbox(&mut self) -> usize {
        let mut moved = 0;
        let mut blocked: u64 = 0;
        let mut kept = VecDeque::with_capacity(self.outbox.len());
        while let Some((consumer, repair)) = self.outbox.pop_front() {
            if blocked & (1u64 << consumer.min(63)) != 0 {
                kept.push_back((consumer, repair));
                continue;
            }
            match self.setup.repairs[consumer].push(repair) {
                Ok(()) => {
                    moved += 1;
                    self.to_ring |= 1u64 << consumer.min(63);
                }
                Err(rtrb::PushError::Full(repair)) => {
                    blocked |= 1u64 << consumer.min(63);
                    kept.push_back((consumer, repair));
                }
            }
        }
        self.outbox = kept;
        self.setup.stats.outbox.set(self.outbox.len() as u64);
        moved
    }

    fn expire(&mut self, now: u64) {
        let mut abandoned = Vec::new();
        self.plan.expire(now, &mut abandoned);
        self.abandon(&abandoned);
    }

    fn give_up_everything(&mut self) {
        let mut abandoned = Vec::new();
        // Every request is older than the give-up bound at the end of time.
        self.plan.expire(u64::MAX, &mut abandoned);
        self.abandon(&abandoned);
    }

    /// Tells each consumer concerned that these ids will not come.
    fn abandon(&mut self, abandoned: &[Delivery]) {
        for d in abandoned {
            let ids = id_count(d.from, d.to);
            self.give_ups_logged += 1;
            if self.give_ups_logged <= GIVE_UPS_LOGGED_MAX {
                tracing::warn!(
                    "sidecar: giving up on trades {}..={} of symbol #{} ({ids} ids){}",
                    d.from,
                    d.to,
                    d.symbol,
                    if self.give_ups_logged == GIVE_UPS_LOGGED_MAX {
                        " (further give-ups are counted, not logged)"
                    } else {
                        ""
                    }
                );
            }
            for consumer in 0..self.setup.repairs.len().min(64) {
                if d.consumers & (1u64 << consumer) != 0 {
                    self.setup.stats.unrepaired_ids.add(ids);
                    let gave_up = Repair::GaveUp {
                        symbol: d.symbol,
                        from: d.from,
                        to: d.to,
                    };
                    self.push(consumer, gave_up);
                }
            }
        }
    }

    fn count_outbox_lost(&mut self) {
        for (_, repair) in self.outbox.drain(..) {
            if let Repair::Event(event) = repair {
                let ids = id_count(event.first_id, event.last_id);
                self.setup.stats.unrepaired_ids.add(ids);
            }
        }
    }

    fn symbol(&self, index: u16) -> Option<String> {
        let symbols = crate::sync::read(&self.setup.symbols);
        symbols.get(usize::from(index)).cloned()
    }

    fn report(self) -> SidecarReport {
        let s = &self.setup.stats;
        SidecarReport {
            summary: SidecarSummary {
                notices: s.notices.get(),
                trade_gaps: s.trade_gaps.get(),
                requested_ids: s.requested_ids.get(),
                repaired_ids: s.repaired_ids.get(),
                unrepaired_ids: s.unrepaired_ids.get(),
                pages: s.pages.get(),
                page_failures: s.page_failures.get(),
                depth_snapshots: s.depth_snapshots.get(),
                depth_failures: s.depth_failures.get(),
                snapshots_archived: s.snapshots_archived.get(),
                snapshots_archive_dropped: s.snapshots_archive_dropped.get(),
                silent_streams: s.silent_streams.get(),
                silence_repairs: s.silence_repairs.get(),
                kline_checks: s.kline_checks.get(),
                kline_mismatches: s.kline_mismatches.get(),
                kline_checks_skipped: s.kline_checks_skipped.get(),
                stream_kline_checks: s.stream_kline_checks.get(),
                stream_kline_mismatches: s.stream_kline_mismatches.get(),
                stream_klines_unjudged: s.stream_klines_unjudged.get(),
                detect_failures: s.detect_failures.get(),
                time_to_repair_ns: Percentiles::of(&self.latency),
            },
            gaps: self.gaps.finish(),
        }
    }
}

/// Time and kline detection: the scans, and the REST jobs they make.
impl Sidecar {
    /// Scans for silent streams and queues the kline checks due; a silent depth stream's
    /// books are re-synced at once. Returns how many streams fell silent.
    fn scan(&mut self, now: u64) -> usize {
        let symbols = &self.setup.symbols;
        let now_ms = unix_ms();
        let work = self.detect.take_stream_klines();
        let skipped = self
            .detect
            .schedule(now_ms, || crate::sync::read(symbols).len());
        self.setup.stats.kline_checks_skipped.add(skipped as u64);
        self.check_stream_klines(now_ms, now);
        let silent = self.detect.scan(now).len();
        if !self.trade_repair {
            // No REST client for trades: silent trade streams and kline intervals are only
            // counted (their jobs would never run).
            self.detect.clear();
        }
        for at in 0..silent {
            let (symbol, kind) = self.detect.silent()[at];
            self.setup.stats.silent_streams.bump();
            self.log_detection(|| {
                format!(
                    "sidecar: the {} stream of symbol #{symbol} is silent while the symbol moves",
                    kind.suffix()
                )
            });
            if kind == StreamKind::Depth
                && let Some(books) = self.books.as_ref()
                && books.silent(symbol, &mut self.book_repairs)
            {
                self.setup.stats.silence_repairs.bump();
            }
        }
        silent + work
    }

    /// Judges the closed stream klines due (closed `kline_lateness` ago) against each
    /// consumer's tally, without REST; a consumer that disagrees gets the kline's trades
    /// (`f ..= L`) backfilled. Without trade repair they are only dropped.
    fn check_stream_klines(&mut self, now_ms: i64, now: u64) {
        let mut due = std::mem::take(&mut self.due_klines);
        due.clear();
        self.detect.due_stream_klines(now_ms, &mut due);
        if !self.trade_repair {
            due.clear();
        }
        for kline in &due {
            let mut mask: Consumers = 0;
            let mut judged = false;
            for (consumer, tally) in self.detect.tallies.iter().enumerate().take(64) {
                let seen = |open_ms| tally.seen(kline.symbol, open_ms);
                match judge_stream(kline, tally.interval_ms(), seen) {
                    Judgement::Consistent => judged = true,
                    Judgement::Mismatch => (judged, mask) = (true, mask | 1u64 << consumer),
                    Judgement::Unjudged => {}
                }
            }
            if !judged {
                self.setup.stats.stream_klines_unjudged.bump();
                continue;
            }
            self.setup.stats.stream_kline_checks.bump();
            if mask == 0 {
                continue;
            }
            self.setup.stats.stream_kline_mismatches.bump();
            let name = self.symbol(kline.symbol).unwrap_or_default();
            self.log_detection(|| {
                format!(
                    "sidecar: {name} stream kline of {} ms at {}: {} trades {}..={}, a sink delivered another count, volume or ids; backfilling",
                    kline.interval_ms, kline.open_ms, kline.trades, kline.first_id, kline.last_id
                )
            });
            // The kline's own ids (a symbol's trade ids are consecutive: `n` = `L - f + 1`).
            let (from, to) = (kline.first_id, kline.last_id);
            if kline.trades > 0 && 0 <= from && from <= to {
                self.setup.stats.requested_ids.add(id_count(from, to));
                self.plan.request(kline.symbol, from, to, mask, now);
            }
        }
        self.due_klines = due;
    }

    fn log_detection(&mut self, message: impl FnOnce() -> String) {
        self.detections_logged += 1;
        if self.detections_logged <= DETECTIONS_LOGGED_MAX {
            let more = if self.detections_logged == DETECTIONS_LOGGED_MAX {
                " (further detections are counted, not logged)"
            } else {
                ""
            };
            tracing::warn!("{}{more}", message());
        }
    }

    async fn run_job(&mut self, client: &mut RestClient, job: Job) {
        self.removed_during_job.clear();
        match job {
            Job::Probe { symbol, from } => self.probe(client, symbol, from).await,
            Job::Kline { symbol, open_ms } => self.check_kline(client, symbol, open_ms).await,
        }
    }

    /// A silent trade stream: trades from `from` on, if any, go to every consumer.
    async fn probe(&mut self, client: &mut RestClient, symbol: u16, from: i64) {
        let Some(name) = self.symbol(symbol) else {
            return;
        };
        let started = monotonic_ns();
        let result = self
            .drive(client.historical_trades(&name, Some(from), PAGE_IDS_MAX))
            .await;
        self.note_rest(started, client);
        let trades = match result {
            Ok(trades) => trades,
            Err(e) => return self.detect_failed("historicalTrades", &name, &e),
        };
        // None: the stream was just quiet.
        let (Some(first), Some(last)) = (trades.first(), trades.last()) else {
            return;
        };
        if self.removed_during_job.contains(&symbol) {
            return;
        }
        let (first, last) = (first.id, last.id);
        let now = monotonic_ns();
        self.setup.stats.silence_repairs.bump();
        self.setup.stats.requested_ids.add(id_count(first, last));
        self.plan
            .request(symbol, first, last, self.all_consumers(), now);
        let limit = u32::try_from(trades.len()).unwrap_or(PAGE_IDS_MAX);
        let fetch = Fetch {
            symbol,
            from_id: first,
            limit,
        };
        self.on_page(&name, fetch, &trades, now);
    }

    /// Compares `symbol`'s kline opening at `open_ms` with each consumer's tally; the trades
    /// of a disagreeing interval are backfilled for the consumers that disagree.
    async fn check_kline(&mut self, client: &mut RestClient, symbol: u16, open_ms: i64) {
        let (Some(name), Some(interval_ms)) =
            (self.symbol(symbol), self.detect.kline_interval_ms())
        else {
            return;
        };
        let watched = self
            .detect
            .tallies
            .iter()
            .any(|t| t.seen(symbol, open_ms) != Seen::NotWatched);
        if !watched {
            return;
        }
        let interval = interval_name(interval_ms);
        let started = monotonic_ns();
        let rows = self.drive(client.klines(&name, interval, open_ms, 1)).await;
        self.note_rest(started, client);
        let kline = match rows {
            Ok(rows) => parse_kline(&rows, open_ms),
            Err(e) => return self.detect_failed("klines", &name, &e),
        };
        let Some(kline) = kline else {
            let e = RestError::Invalid("a kline answer not understood".into());
            return self.detect_failed("klines", &name, &e);
        };
        self.setup.stats.kline_checks.bump();
        let mut mask: Consumers = 0;
        for (consumer, tally) in self.detect.tallies.iter().enumerate().take(64) {
            if judge(&kline, tally.seen(symbol, open_ms)) == Judgement::Mismatch {
                mask |= 1u64 << consumer;
            }
        }
        if mask == 0 {
            return;
        }
        self.setup.stats.kline_mismatches.bump();
        self.log_detection(|| {
            format!(
                "sidecar: {name} {interval} kline at {open_ms}: {} trades, a sink delivered another count or volume; backfilling",
                kline.count
            )
        });
        let end_ms = open_ms.saturating_add(interval_ms - 1);
        let started = monotonic_ns();
        let aggregates = self
            .drive(client.agg_trades(&name, open_ms, end_ms, 1))
            .await;
        self.note_rest(started, client);
        let first = match aggregates {
            Ok(aggregates) => parse_first_trade_id(&aggregates),
            Err(e) => return self.detect_failed("aggTrades", &name, &e),
        };
        if self.removed_during_job.contains(&symbol) {
            return;
        }
        if let Some((from, to)) = first.and_then(|f| interval_ids(f, kline.count)) {
            self.setup.stats.requested_ids.add(id_count(from, to));
            self.plan.request(symbol, from, to, mask, monotonic_ns());
        }
    }

    /// A detection request's latency and the weight Binance reports, like the pages'.
    fn note_rest(&self, started: u64, client: &RestClient) {
        let stats = &self.setup.stats;
        stats
            .rest_latency
            .record_all([monotonic_ns().saturating_sub(started)]);
        stats.rest_weight_used.set(u64::from(client.used_weight()));
    }

    fn detect_failed(&mut self, what: &str, symbol: &str, e: &RestError) {
        self.setup.stats.detect_failures.bump();
        self.log_detection(|| format!("sidecar: {what} {symbol} for a detection failed: {e}"));
    }
}
