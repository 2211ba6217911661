//! The Redis writer thread: drains its rings into per-symbol [`SymbolState`], and whenever
//! something changed, writes coalesced pipelines over `redis.connections` connections
//! ([`lanes`]: symbol `i` always over connection `i % connections`, one pipeline in flight on
//! each; standalone: one pipeline for a connection's symbols; Cluster: one per symbol, all of
//! whose keys share a slot). Neither
//! Redis nor REST ever holds up the draining (a reader never waits for this thread: a full ring
//! is its `queue_full` notice).
//!
//! Order books ([`super::ob`], [`books`]): depth snapshots are asked of the sidecar, which owns
//! REST, through a request ring, and come back through this writer's repair ring with the
//! sidecar's stale notices (connection lost, symbol removed). A book synced from a snapshot is
//! published by an atomic re-anchor task (lock, build under temporary keys, `MULTI`/`RENAME`/
//! `EXEC`), never by deleting and rebuilding. Every configured symbol's book is marked stale
//! before anything else is written, and every book is marked stale last at stop.
//!
//! Outages: a failed pipeline drops the connection; the writer reconnects with full-jitter
//! backoff while it keeps draining and applying events in memory (trades held up to
//! `redis.buffer_trades_max`; beyond, the oldest go to the dead-letter file, counted as
//! dead-lettered). After a reconnect every symbol's state is written again, so a restarted
//! (empty) Redis is rebuilt. Trades left when the shutdown flush deadline passes go to the
//! dead-letter file too: nothing taken from the rings is dropped silently.
//!
//! Trades go through the writer's per-symbol [`TradeOrders`]: live events and the repairs the
//! sidecar fetched from REST (its repair ring, drained beside the event rings) merge into one
//! sequence per symbol, so `trades:{SYMBOL}` gets each trade id once and in id order. While ids
//! are missing, the symbol's later trades wait (at most `sidecar.hold_max_ms`; the book, best
//! bid/ask and other streams never wait).
//!
//! Trade entries carry fixed ids (`<ms>-<trade id>`): a retried `XADD` of a trade already in
//! the stream is refused by Redis ("equal or smaller than the target stream top item"), so no
//! trade is written twice. Such a refusal is not proof that the trade landed (an earlier
//! attempt may have been refused explicitly while a later trade landed, or the stream may hold
//! newer ids from another source), so the writer then asks `XRANGE` for that exact id: found,
//! the trade is counted as written; not found, it cannot be placed in the stream (a stream only
//! appends) and goes to the dead-letter file, marked `outcome` `unknown` if an earlier attempt
//! of it got no reply (it may have landed and been trimmed since), `failed` otherwise.

mod books;
mod lanes;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redis::Value;

use self::lanes::{Io, lane_of};
use super::ob::{BookSettings, DiffBudget, Wants};
use super::state::{PendingTrade, SentTrade, SymbolState};
use crate::backoff::jittered;
use crate::clock::{monotonic_ns, monotonic_ns_at, unix_ms, unix_us};
use crate::config::{KlinesConfig, RedisConfig};
use crate::feed::event::{BookRequest, FeedEvent, Repair};
use crate::idle::{Bell, Step, TaskIdle};
use crate::metrics::{Percentiles, latency_histogram};
use crate::sbe::spot_stream::Message;
use crate::sink::dlq::{DeadRecord, Outcome, Spool, Target};
use crate::sink::order::TradeOrders;
use crate::sink::{SinkError, SinkStats, SinkSummary, ring_depth};

use crate::constants::{
    IDLE_PARK_MAX, LATENCY_SAMPLES_MAX, REDIS_HOUSEKEEPING, REDIS_TIMEOUT, TRADES_PER_PIPELINE,
};

/// What the writer thread is given.
pub struct RedisSink {
    /// Settings.
    pub config: RedisConfig,
    /// The configured symbols, in index order: their books are marked stale at start.
    pub symbols: Vec<String>,
    /// One ring per reader.
    pub rings: Vec<rtrb::Consumer<FeedEvent>>,
    /// The sidecar's repair ring for this sink (trades fetched from REST, depth snapshots,
    /// stream notices); `None` without a sidecar.
    pub repairs: Option<rtrb::Consumer<Repair>>,
    /// How long a symbol's trades wait for missing ids before them (zero: gaps are passed
    /// over at once, as without trade repair nothing will bring them).
    pub hold_max: Duration,
    /// Depth snapshot requests to the sidecar; `None`: no sidecar, so books are never synced
    /// (and stay marked stale).
    pub book_requests: Option<rtrb::Producer<BookRequest>>,
    /// Live counters.
    pub stats: Arc<SinkStats>,
    /// Set once the readers and the sidecar have stopped: drain, flush, return.
    pub stop: Arc<AtomicBool>,
    /// The core the writer thread is pinned to ([`crate::cores::CorePlan`]); `None`: not
    /// pinned.
    pub core: Option<usize>,
    /// How long the final flush may take.
    pub flush_timeout: Duration,
    /// This writer's bell: the readers, the sidecar and the stop ring it.
    pub bell: Bell,
    /// The sidecar's bell, rung after snapshot requests were pushed to it.
    pub sidecar_bell: Bell,
    /// The klines built from the delivered trades (`[klines]`, `kl:` keys); off when no
    /// interval.
    pub klines: KlinesConfig,
}

/// Starts the writer thread.
pub fn spawn(
    sink: RedisSink,
) -> std::io::Result<std::thread::JoinHandle<Result<SinkSummary, SinkError>>> {
    std::thread::Builder::new()
        .name("hotpath-redis".into())
        .spawn(move || {
            crate::cores::pin(sink.core);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SinkError::Runtime {
                    sink: "redis",
                    reason: e.to_string(),
                })?;
            runtime.block_on(run(sink))
        })
}

/// A standalone or cluster connection (both are cheap, multiplexed handles).
#[derive(Clone)]
enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

async fn connect(config: &RedisConfig) -> Result<Conn, String> {
    if config.cluster_urls.is_empty() {
        let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| format!("redis.url: {e}"))?
            .set_tcp_settings(tcp_settings());
        let client = redis::Client::open(info).map_err(|e| format!("redis.url: {e}"))?;
        let options = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&options)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Conn::Single(conn))
    } else {
        let client = redis::cluster::ClusterClient::builder(config.cluster_urls.clone())
            .connection_timeout(REDIS_TIMEOUT)
            .response_timeout(REDIS_TIMEOUT)
            .retries(1)
            .tcp_settings(tcp_settings())
            .build()
            .map_err(|e| format!("redis.cluster_urls: {e}"))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Conn::Cluster(conn))
    }
}

/// The writer's sockets: `TCP_NODELAY` (redis-rs leaves Nagle's algorithm on), so a pipeline
/// written in several parts is not held back waiting for the acknowledgement of the first.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// The task sending a batch's pipelines.
type Replies = tokio::task::JoinHandle<Result<Vec<Value>, String>>;

/// A batch in flight: its sections and the receipt times of the events it covers.
struct Batch {
    sections: Vec<Section>,
    samples: Vec<u64>,
}

/// Sends the pipelines; the replies of all, in order.
async fn execute(conn: Conn, pipes: Vec<redis::Pipeline>) -> Result<Vec<Value>, String> {
    let mut replies = Vec::new();
    match conn {
        Conn::Single(mut c) => {
            for p in &pipes {
                let values: Vec<Value> = p.query_async(&mut c).await.map_err(|e| e.to_string())?;
                replies.extend(values);
            }
        }
        Conn::Cluster(c) => {
            let futures = pipes.iter().map(|p| {
                let mut c = c.clone();
                async move { p.query_async::<Vec<Value>>(&mut c).await }
            });
            for values in futures_util::future::join_all(futures).await {
                replies.extend(values.map_err(|e| e.to_string())?);
            }
        }
    }
    Ok(replies)
}

/// One pipeline's commands for a symbol: which symbol, the trade commands (first, in order),
/// and how many commands it holds in all.
struct Section {
    symbol: usize,
    sent: Vec<SentTrade>,
    commands: usize,
}

/// What one reply says of the trade it is for.
enum Reply {
    /// The entry is in the stream (`XADD` acknowledged, or found by `XRANGE`).
    Landed,
    /// `XADD` refused as "equal or smaller": check with `XRANGE` next.
    Check,
    /// `XRANGE` found nothing: the stream holds newer entries; it cannot be placed.
    CannotPlace,
    /// An explicit error: tried again after a backoff.
    Refused(String),
}

impl Reply {
    fn of(sent: SentTrade, value: &Value) -> Reply {
        match (sent.check, value) {
            (false, Value::ServerError(e))
                if e.details().is_some_and(|d| d.contains("equal or smaller")) =>
            {
                Reply::Check
            }
            (_, Value::ServerError(e)) => Reply::Refused(format!("{e:?}")),
            (false, _) => Reply::Landed,
            (true, Value::Array(entries)) if entries.is_empty() => Reply::CannotPlace,
            (true, Value::Array(_)) => Reply::Landed,
            (true, other) => Reply::Refused(format!("XRANGE answered {other:?}")),
        }
    }
}

struct Writer {
    config: RedisConfig,
    states: Vec<Option<SymbolState>>,
    stats: Arc<SinkStats>,
    latency: Histogram<u64>,
    /// Receipt times of the events since each lane's last batch, per lane.
    samples: Vec<Vec<u64>>,
    /// Connections (lanes) the symbols are sharded over.
    lanes: usize,
    rng: crate::rng::Rng,
    errors_logged: u32,
    dead: Spool,
    /// The books' settings.
    book: BookSettings,
    /// Diff bytes held across symbols (sync buffers, check recordings).
    diffs: DiffBudget,
    /// Snapshot requests to the sidecar; `None`: no sidecar, books are never synced.
    requests: Option<rtrb::Producer<BookRequest>>,
    /// Requests the ring had no room for, oldest first.
    request_outbox: VecDeque<BookRequest>,
    /// Re-anchors in flight.
    reanchoring: Vec<Reanchoring>,
    /// Re-anchor failures in a row (for the retry delay).
    reanchor_failures: u32,
    /// The stop's stale marks were made.
    stop_marked: bool,
    /// When the next consistency check is due, and the symbol to try first.
    next_check: Option<Instant>,
    check_cursor: usize,
    /// When the books' state is next published for the control plane.
    next_book_publish: Instant,
    /// Trade order per symbol (live and repaired trades, each id once, in order).
    orders: TradeOrders<FeedEvent>,
    /// Trade events the orders released, with the first id to deliver (reused).
    released: Vec<(FeedEvent, i64)>,
    /// Gaps given up on so far (the first [`crate::constants::GAPS_LOGGED_MAX`] are logged).
    gaps_logged: u32,
    /// This writer's bell: tasks it spawns ring it when they finish.
    bell: Bell,
    /// The klines settings (for symbols added at run time).
    klines: KlinesConfig,
    /// When the timers (held-trade expiry, the queue-depth gauge, the dead-letter sync) run
    /// next.
    next_timers: Instant,
    /// The earliest time a failed re-anchor is tried again (Unix µs), if one may wait: set when
    /// one fails, refreshed by the housekeeping rounds ([`Writer::note_reanchor_retries`]).
    reanchor_retry_us: Option<i64>,
    /// Snapshot requests were pushed to the sidecar since its bell was last rung.
    requests_pushed: bool,
    /// An instant and the Unix time (µs) read with it: the Unix time of a round is derived
    /// from its one clock read; refreshed with the books' publication.
    wall: (Instant, i64),
    /// Frames waiting to be written were taken while a pipeline was in flight: they go when
    /// its reply lands, a linger does not hold them. Cleared by a round that starts the
    /// writes with no pipeline in flight.
    taken_in_flight: bool,
}

/// A re-anchor in flight: the symbol, its attempt number, the task.
struct Reanchoring {
    symbol: usize,
    attempt: u64,
    task: tokio::task::JoinHandle<Result<bool, String>>,
}

async fn run(sink: RedisSink) -> Result<SinkSummary, SinkError> {
    let RedisSink {
        config,
        symbols,
        mut rings,
        mut repairs,
        hold_max,
        book_requests,
        stats,
        stop,
        flush_timeout,
        core: _,
        bell,
        sidecar_bell,
        klines,
    } = sink;
    let mut idle = TaskIdle::new(config.idle, bell.clone()).with_linger(config.linger);
    let mut w = Writer::new(config, &symbols, stats, (book_requests, hold_max));
    for state in w.states.iter_mut().flatten() {
        state.set_klines(&klines);
    }
    w.klines = klines;
    w.bell = bell;
    let mut io = Io::new(w.lanes);
    let mut flush_deadline: Option<Instant> = None;
    // The last round lingered: its frames are written in this one.
    let mut lingered = false;
    loop {
        if io.quiet() && w.reanchoring.is_empty() {
            // Let the runtime run its other tasks (connect tasks, the driver, timers) now and
            // then even while every round finds work.
            tokio::task::coop::consume_budget().await;
        } else {
            // A pipeline or re-anchor is in flight: its reply is read by other tasks of this
            // runtime (the connection's driver, the write task). Yield every round, so the
            // reply is taken as soon as it arrives rather than after the coop budget's 128
            // rounds (milliseconds while events keep coming), and the lane's next batch
            // starts at once.
            tokio::task::yield_now().await;
        }
        let stopping = stop.load(Ordering::Acquire);
        // The round's one clock read; timers run in rounds with work, or when due.
        let now = w.now();
        let taken = w.drain(&mut rings, repairs.as_mut());
        w.taken_in_flight |= taken > 0 && !io.quiet();
        let mut work = taken;
        let timers = stopping || now.instant >= w.next_timers;
        if timers {
            w.next_timers = now.instant + REDIS_HOUSEKEEPING;
            w.expire_orders(now.ns);
        }
        if stopping {
            // Readers and sidecar have stopped and their rings are drained: nothing missing
            // will come any more, so everything held is delivered.
            w.finish_orders();
            flush_deadline.get_or_insert(now.instant + flush_timeout);
        }
        work += w.connection(&mut io, now.instant).await;
        work += w.finish_write(&mut io, now.ns).await;
        work += w.book_work(&io, stopping, now, timers || work > 0).await;
        if timers {
            w.gauge_depth(&rings);
            w.note_reanchor_retries(now.unix_us);
        }
        // A linger holds the frames taken while nothing is in flight until the oldest is
        // `linger` old; with a pipeline in flight the next batch goes when its reply lands.
        let hold = w.linger_hold(&io, idle.linger(), now.ns, stopping);
        if hold.is_none() && (timers || work > 0 || std::mem::take(&mut lingered)) {
            // With every lane idle, each connected lane's waiting frames go now.
            w.taken_in_flight &= !io.quiet();
            work += w.start_write(&mut io, now.unix_us).await;
        }
        let quiet = io.quiet() && w.reanchoring.is_empty();
        if stopping && quiet && drained(&rings, repairs.as_ref()) {
            if !w.stop_marked {
                // Everything known is written: the books are marked stale, last.
                w.mark_stopped();
                continue;
            }
            // Book syncs still fetching are not waited for: what is known has been written.
            if !w.states.iter().flatten().any(SymbolState::dirty) {
                break;
            }
        }
        if flush_deadline.is_some_and(|d| now.instant >= d) {
            let pending = w.abandon();
            tracing::warn!(
                path = %w.dead.path().display(),
                "redis: the shutdown flush deadline passed; {pending} trades not written \
                 (dead-lettered)"
            );
            break;
        }
        if timers && let Err(e) = w.dead.sync(now.instant) {
            w.log_error(&e);
        }
        if std::mem::take(&mut w.requests_pushed) {
            // Snapshot requests went to the sidecar: wake it if parked (only then: ringing
            // after every round with work woke a parked sidecar once per writer wake-up).
            sidecar_bell.ring();
        }
        let step = if let Some(rest) = hold {
            lingered = true;
            Some(Step::Linger(rest))
        } else {
            // Every connection that has symbols is writing (or down): frames that come now
            // cannot go before a reply, so wait for the reply, not for the readers.
            let awaiting = !quiet && !io.free_lane(w.states.len());
            let until = w.timers_due_in(&io, now, flush_deadline.is_some());
            idle.step_awaiting(work, awaiting, REDIS_HOUSEKEEPING, Some(until))
        };
        if let Some(step) = step {
            let has_work = || {
                (!stopping && stop.load(Ordering::Acquire)) || !drained(&rings, repairs.as_ref())
            };
            w.idle(&idle, step, &io, has_work).await;
        }
    }
    w.dead.finish().map_err(|reason| SinkError::DeadLetter {
        sink: "redis",
        reason,
    })?;
    Ok(w.summary())
}

/// Whether the event rings and the repair ring are empty.
fn drained(rings: &[rtrb::Consumer<FeedEvent>], repairs: Option<&rtrb::Consumer<Repair>>) -> bool {
    rings.iter().all(|r| r.is_empty()) && repairs.is_none_or(|r| r.is_empty())
}

/// A round's time, from one clock read: the instant, [`monotonic_ns`]' value of it, and the
/// Unix time in microseconds derived from the writer's wall-clock anchor.
#[derive(Clone, Copy, Debug)]
struct Now {
    instant: Instant,
    ns: u64,
    unix_us: i64,
}

/// At trace level, what the writer parks with (per connection: connected, a pipeline in
/// flight, its start marks acknowledged; dirty symbols, re-anchors in flight, requests waiting):
/// a stalled writer says which of them it waits for. Nothing is computed unless enabled.
fn trace_park(w: &Writer, io: &Io) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    let lanes: Vec<(bool, bool, bool)> = io
        .lanes
        .iter()
        .map(|l| (l.conn.is_some(), l.writing.is_some(), l.acked_once))
        .collect();
    tracing::trace!(
        dirty = w.states.iter().flatten().filter(|s| s.dirty()).count(),
        ?lanes,
        reanchoring = w.reanchoring.len(),
        requests_waiting = w.request_outbox.len(),
        "redis: parking (lanes: connected, writing, acked once)"
    );
}

impl Writer {
    /// A writer of `symbols` (their books marked stale first thing), asking the sidecar for
    /// snapshots through `requests`, holding trades at most `hold_max` after a gap.
    fn new(
        config: RedisConfig,
        symbols: &[String],
        stats: Arc<SinkStats>,
        (requests, hold_max): (Option<rtrb::Producer<BookRequest>>, Duration),
    ) -> Writer {
        let book = BookSettings::new(config.book_levels, config.snapshot_limit);
        let next_check = config.consistency_check.map(|every| Instant::now() + every);
        let lanes = config.connections.max(1);
        let mut w = Writer {
            dead: Spool::new(&config.dead_letter_path),
            diffs: DiffBudget::new(config.sync_buffer_bytes_max),
            config,
            states: Vec::new(),
            stats,
            latency: latency_histogram(),
            samples: vec![Vec::new(); lanes],
            lanes,
            rng: crate::rng::Rng::new(monotonic_ns() | 1),
            errors_logged: 0,
            book,
            requests,
            request_outbox: VecDeque::new(),
            reanchoring: Vec::new(),
            reanchor_failures: 0,
            stop_marked: false,
            next_check,
            check_cursor: 0,
            next_book_publish: Instant::now(),
            orders: trade_orders(hold_max),
            released: Vec::new(),
            gaps_logged: 0,
            bell: Bell::silent(),
            klines: KlinesConfig::default(),
            next_timers: Instant::now(),
            reanchor_retry_us: None,
            requests_pushed: false,
            wall: (Instant::now(), unix_us()),
            taken_in_flight: false,
        };
        // Every configured symbol's book is marked stale first thing (a previous run's book is
        // not fresh): new states start marked.
        let (layout, raw_json) = (w.config.keys, w.config.raw_json);
        for name in symbols {
            let state = SymbolState::new(name, book).with_format(layout, raw_json);
            w.states.push(Some(state));
        }
        w
    }

    /// The end-of-run summary.
    /// `flushed` means what it means for every sink ([`SinkSummary::flushed`]): every trade
    /// taken was written or dead-lettered (none pending, none held, none dropped), and the
    /// state keys, which cannot be dead-lettered, hold everything taken (none dirty).
    fn summary(&self) -> SinkSummary {
        let pending: usize = self.states.iter().flatten().map(|s| s.pending.len()).sum();
        let dirty = self.states.iter().flatten().any(SymbolState::dirty);
        let mut summary = self.stats.summary();
        summary.receipt_to_ack_ns = Percentiles::of(&self.latency);
        summary.flushed = pending == 0 && !dirty && self.orders.held() == 0 && summary.dropped == 0;
        summary.book = Some(self.stats.book.summary());
        summary
    }

    /// When to try again after `attempt` failures in a row.
    fn backoff(&mut self, attempt: u32) -> Instant {
        let (initial, max) = (self.config.reconnect_initial, self.config.reconnect_max);
        Instant::now() + jittered(&mut self.rng, initial, max, attempt)
    }

    /// Takes everything waiting in the event rings and the repair ring, and gives up on gaps
    /// held too long; returns how many items it took.
    fn drain(
        &mut self,
        rings: &mut [rtrb::Consumer<FeedEvent>],
        repairs: Option<&mut rtrb::Consumer<Repair>>,
    ) -> usize {
        let mut work = self.drain_events(rings);
        if let Some(ring) = repairs {
            while let Ok(repair) = ring.pop() {
                if repair.is_removal() {
                    work += self.drain_events(rings);
                }
                self.repair(repair);
                work += 1;
            }
        }
        if work > 0 {
            self.note_orders();
        }
        work
    }

    /// Gives up on gaps held too long (a timer: held at most `sidecar.hold_max_ms`).
    fn expire_orders(&mut self, now_ns: u64) {
        let mut released = std::mem::take(&mut self.released);
        self.orders.expire(now_ns, &mut released);
        self.deliver(released);
        self.note_orders();
    }

    /// The round's time from one clock read ([`Now`]).
    fn now(&self) -> Now {
        let instant = Instant::now();
        let (at, unix) = self.wall;
        let since = instant.saturating_duration_since(at).as_micros();
        Now {
            instant,
            ns: monotonic_ns_at(instant),
            unix_us: unix.saturating_add(i64::try_from(since).unwrap_or(i64::MAX)),
        }
    }

    /// Sets the queue-depth gauge: the rings, the trades pending, the trade events held.
    fn gauge_depth(&self, rings: &[rtrb::Consumer<FeedEvent>]) {
        let pending: usize = self.states.iter().flatten().map(|s| s.pending.len()).sum();
        let depth = ring_depth(rings) + pending + self.orders.held();
        self.stats.queue_depth.set(depth as u64);
    }

    /// How long an idle park may last: until the next housekeeping round while one has
    /// something to time (trades held for their repairs, a re-anchor in flight, a shutdown
    /// flush), until a connection that is down tries again, until a failed re-anchor is
    /// retried (in the housekeeping round from then on), else [`IDLE_PARK_MAX`]. Everything
    /// else that gives the writer work rings its bell (the readers' and the sidecar's rings,
    /// the stop) or wakes it (its connect, write and re-anchor tasks); its slower timers
    /// (consistency checks, the books' publication, the dead-letter sync, requests the
    /// sidecar's full ring had no room for) tolerate the cap.
    fn timers_due_in(&self, io: &Io, now: Now, flushing: bool) -> Duration {
        let housekeeping = self.next_timers.saturating_duration_since(now.instant);
        let mut due = IDLE_PARK_MAX;
        if flushing || !self.reanchoring.is_empty() || self.orders.held() > 0 {
            due = due.min(housekeeping);
        }
        if let Some(at) = io.next_connect() {
            due = due.min(at.saturating_duration_since(now.instant));
        }
        if let Some(at_us) = self.reanchor_retry_us {
            let wait = u64::try_from(at_us.saturating_sub(now.unix_us)).unwrap_or(0);
            due = due.min(Duration::from_micros(wait).max(housekeeping));
        }
        due
    }

    /// Carries out an idle `step` (traced when it parks); a park, a linger or an await is
    /// counted as a wake-up.
    async fn idle(&self, idle: &TaskIdle, step: Step, io: &Io, has_work: impl FnOnce() -> bool) {
        match step {
            Step::Park(_) => trace_park(self, io),
            Step::Linger(_) | Step::Await(_) => {}
            Step::Spin | Step::Yield => return idle.wait(step, has_work).await,
        }
        self.stats.wakeups.add(1);
        idle.wait(step, has_work).await;
    }

    /// With a `linger`, how much longer the frames taken since the last pipeline wait: while
    /// nothing is in flight, until the oldest of them is `linger` old. `None`: write now (no
    /// linger, stopping, a pipeline or a re-anchor in flight (a linger sleeps the thread, and
    /// would hold its reply), frames taken while a pipeline was in flight (they go with its
    /// reply), nothing waiting, or old enough).
    fn linger_hold(
        &self,
        io: &Io,
        linger: Duration,
        now_ns: u64,
        stopping: bool,
    ) -> Option<Duration> {
        if linger.is_zero()
            || stopping
            || !io.quiet()
            || !self.reanchoring.is_empty()
            || self.taken_in_flight
        {
            return None;
        }
        let oldest = self.samples.iter().filter_map(|s| s.first()).min()?;
        let age = Duration::from_nanos(now_ns.saturating_sub(*oldest));
        linger.checked_sub(age).filter(|rest| !rest.is_zero())
    }

    /// Takes everything waiting in the event rings; returns how many.
    fn drain_events(&mut self, rings: &mut [rtrb::Consumer<FeedEvent>]) -> usize {
        let mut taken = 0;
        for ring in rings.iter_mut() {
            while let Ok(event) = ring.pop() {
                self.accept(event);
                taken += 1;
            }
        }
        taken
    }

    /// A live event: trades through their symbol's order, the rest applied at once.
    fn accept(&mut self, event: FeedEvent) {
        if event.is_announcement() {
            // Trade ids lost at this ring before any of the symbol's reached it: the order
            // starts at them and waits for their repair.
            return self
                .orders
                .announce(event.symbol, event.first_id, event.last_id);
        }
        self.stats.received.add(1);
        self.route(event);
    }

    fn route(&mut self, event: FeedEvent) {
        if event.kind != crate::stream::StreamKind::Trade {
            return self.apply(event, i64::MIN);
        }
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

    /// Applies the events the orders released, each from its first id to deliver; hands the
    /// (emptied) buffer back for reuse.
    fn deliver(&mut self, mut released: Vec<(FeedEvent, i64)>) {
        for (event, from) in released.drain(..) {
            self.stats.tally.add(event.symbol, &event.frame, from);
            self.apply(event, from);
        }
        self.released = released;
    }

    /// At shutdown: every held trade event is applied, the ids still missing counted.
    fn finish_orders(&mut self) {
        let mut released = std::mem::take(&mut self.released);
        self.orders.finish(&mut released);
        self.deliver(released);
        self.note_orders();
    }

    /// Copies the orders' counts to the live counters and logs each gap given up on, once.
    fn note_orders(&mut self) {
        crate::sink::order::note(
            "redis",
            &mut self.orders,
            &self.stats,
            &mut self.gaps_logged,
        );
    }

    /// Applies one event to its symbol's state; a trades event from trade id `from` on.
    fn apply(&mut self, event: FeedEvent, from: i64) {
        let Ok(message) = crate::sbe::decode(&event.frame) else {
            self.stats.dropped.add(1);
            return;
        };
        let index = usize::from(event.symbol);
        if self.states.len() <= index {
            self.states.resize_with(index + 1, || None);
        }
        let book = self.book;
        let (layout, raw_json) = (self.config.keys, self.config.raw_json);
        let klines = &self.klines;
        let state = self.states[index].get_or_insert_with(|| {
            let name = symbol_name(&message);
            let mut state = SymbolState::new(&name, book).with_format(layout, raw_json);
            state.set_klines(klines);
            state
        });
        let buffer = self.config.buffer_trades_max;
        let wants = match &message {
            Message::TradesStreamEvent(m) => {
                let late = state.klines_late();
                state.on_trades(m, from, event.recv_time_ns, buffer);
                self.stats.klines_late.add(state.klines_late() - late);
                Wants::Nothing
            }
            _ => state.on_frame(&message, event.recv_time_ns, buffer, &mut self.diffs),
        };
        if !self.klines.intervals.is_empty()
            && let Some(now_ms) = event.exchange_time_ms()
        {
            let held = self.orders.holds(event.symbol);
            state.kline_clock(now_ms, held);
        }
        let evicted = std::mem::take(&mut state.evicted);
        let dirty = state.dirty();
        for t in &evicted {
            self.dead_letter(
                index,
                t,
                "redis.buffer_trades_max reached while Redis was unreachable",
            );
        }
        // A frame that leaves nothing to write (a depth20 snapshot, which is not the book's
        // source; a repeated top of book; a trade already taken) has no Redis ack to wait for:
        // sampling it would time the lane's next unrelated write instead.
        if let Some(samples) = self.samples.get_mut(lane_of(index, self.lanes))
            && samples.len() < LATENCY_SAMPLES_MAX
            && dirty
        {
            samples.push(event.recv_time_ns);
        }
        self.after_book(index, wants);
    }

    /// Builds the pipelines of every dirty symbol of `lane` (standalone: one; Cluster: one per
    /// symbol, its keys sharing a slot).
    fn prepare(
        &mut self,
        lane: usize,
        cluster: bool,
        now_us: i64,
    ) -> (Vec<redis::Pipeline>, Batch) {
        let samples = self
            .samples
            .get_mut(lane)
            .map(std::mem::take)
            .unwrap_or_default();
        let lanes = self.lanes;
        let mut budget = TRADES_PER_PIPELINE;
        let mut sections = Vec::new();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let maxlen = self.config.trades_maxlen;
        let mut pipes = Vec::new();
        for (symbol, state) in self.states.iter_mut().enumerate() {
            if lane_of(symbol, lanes) != lane {
                continue;
            }
            let Some(state) = state.as_mut().filter(|s| s.dirty()) else {
                continue;
            };
            // Trades held back for a repair: the windows are not claimed complete.
            state.trades_held = u16::try_from(symbol).is_ok_and(|s| self.orders.holds(s));
            let before = pipe.len();
            let mut sent = Vec::new();
            let trades = state.write(&mut pipe, (maxlen, budget), now_us, &mut sent);
            budget -= trades;
            sections.push(Section {
                symbol,
                sent,
                commands: pipe.len() - before,
            });
            if cluster {
                pipes.push(std::mem::replace(&mut pipe, redis::pipe()));
                pipe.ignore_errors();
            }
            if budget == 0 {
                break;
            }
        }
        if !cluster {
            pipes.push(pipe);
        }
        self.stats.requests.add(pipes.len() as u64);
        (pipes, Batch { sections, samples })
    }

    /// Applies Redis' replies. Each trade's reply says whether it is in the stream (counted
    /// as written), is to be checked with `XRANGE`, cannot be placed (dead-lettered) or was
    /// refused explicitly (it stays pending; the batch fails, so the state is written again
    /// after a backoff). A refusal of another key's command fails the batch too. `acked`: when
    /// the replies were taken ([`monotonic_ns`]).
    fn settle(&mut self, batch: Batch, replies: &[Value], acked: u64) -> Result<(), String> {
        if let Some(newest) = batch.samples.iter().max() {
            self.stats.ack_latency_ns.set(acked.saturating_sub(*newest));
        }
        for recv in &batch.samples {
            let _ = self
                .latency
                .record(acked.saturating_sub(*recv).clamp(1, self.latency.high()));
        }
        self.stats
            .ack_latency
            .record_all(batch.samples.iter().map(|r| acked.saturating_sub(*r)));
        let mut at = 0;
        let mut refused = None;
        for section in batch.sections {
            let replies =
                &replies[at.min(replies.len())..(at + section.commands).min(replies.len())];
            at += section.commands;
            let trades = section.sent.len().min(replies.len());
            if let Some(e) = self.settle_trades(section.symbol, &section.sent, &replies[..trades]) {
                refused.get_or_insert(e);
            }
            if let Some(e) = replies.iter().skip(trades).find_map(|r| match r {
                Value::ServerError(e) => Some(e),
                _ => None,
            }) {
                refused.get_or_insert_with(|| format!("write refused: {e:?}"));
            }
        }
        match refused {
            Some(e) => {
                self.log_error(&e);
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Applies the replies to one symbol's trade commands `sent`; returns the first explicit
    /// refusal. A trade no longer pending (moved to the dead-letter file meanwhile) is skipped:
    /// it is counted already.
    fn settle_trades(
        &mut self,
        symbol: usize,
        sent: &[SentTrade],
        replies: &[Value],
    ) -> Option<String> {
        let state = self.states.get_mut(symbol).and_then(Option::as_mut)?;
        let mut refused = None;
        let mut landed = Vec::new();
        let mut buried = Vec::new();
        for (&s, reply) in sent.iter().zip(replies) {
            let Some(t) = state.pending_mut(s.id) else {
                continue;
            };
            t.in_flight = false;
            match Reply::of(s, reply) {
                Reply::Landed => landed.push(s.id),
                // An earlier explicit refusal, if any, stays the error to report.
                Reply::Check => t.check = true,
                Reply::CannotPlace => buried.push(s.id),
                Reply::Refused(e) => {
                    t.error = Some(e.clone());
                    refused.get_or_insert_with(|| format!("trade {} refused: {e}", s.id));
                }
            }
        }
        // Replies missing for the rest (never expected): as if unanswered.
        state.unanswered();
        self.stats.written.add(landed.len() as u64);
        let mut dead = Vec::new();
        state.pending.retain(|t| {
            if buried.binary_search(&t.id).is_ok() {
                dead.push(t.clone());
                return false;
            }
            landed.binary_search(&t.id).is_err()
        });
        for t in &dead {
            let why = format!(
                "{} holds entries newer than {} (from another source, or written after an \
                 earlier attempt of it was refused) and a Redis stream only appends: it cannot \
                 be placed",
                state_key(&self.states, symbol),
                t.entry_id
            );
            self.dead_letter(symbol, t, &why);
        }
        refused
    }

    /// Moves every pending trade to the dead-letter file (the shutdown deadline passed);
    /// returns how many.
    fn abandon(&mut self) -> usize {
        let mut count = 0;
        for symbol in 0..self.states.len() {
            let pending = match self.states[symbol].as_mut() {
                Some(state) => std::mem::take(&mut state.pending),
                None => continue,
            };
            count += pending.len();
            for t in &pending {
                self.dead_letter(symbol, t, "the shutdown flush deadline passed");
            }
        }
        count
    }

    /// Writes trade `t` of `symbol` to the dead-letter file, counted as dead-lettered (as
    /// dropped if the file cannot be written). `outcome` is `unknown` when an `XADD` of it got
    /// no reply or is still in flight.
    fn dead_letter(&mut self, symbol: usize, t: &PendingTrade, why: &str) {
        let Some(state) = self.states.get(symbol).and_then(Option::as_ref) else {
            return;
        };
        let record = DeadRecord {
            target: Target::Redis {
                key: state.keys.trades.clone(),
                id: t.entry_id.clone(),
                fields: state.entry_fields(t),
            },
            attempts: t.attempts,
            first_attempt_ms: t.first_attempt_ms,
            dead_at_ms: unix_ms(),
            outcome: if t.maybe_landed || (t.in_flight && !t.check) {
                Outcome::Unknown
            } else {
                Outcome::Failed
            },
            error: match &t.error {
                Some(e) => format!("{why}; an attempt was refused: {e}"),
                None => why.to_string(),
            },
        };
        match self.dead.append(&record) {
            Ok(()) => self.stats.dead_lettered.add(1),
            Err(e) => {
                self.stats.dropped.add(1);
                let path = self.dead.path().display().to_string();
                self.log_error(&format!("{e} ({path})"));
            }
        }
    }

    fn log_error(&mut self, message: &str) {
        if self.errors_logged < 10 {
            self.errors_logged += 1;
            tracing::error!("redis: {message}");
        }
    }
}

/// The trades key of `symbol`, for messages.
fn state_key(states: &[Option<SymbolState>], symbol: usize) -> String {
    states
        .get(symbol)
        .and_then(Option::as_ref)
        .map(|s| s.keys.trades.clone())
        .unwrap_or_default()
}

/// The trade orders of a writer holding at most `hold_max` after a gap.
fn trade_orders(hold_max: Duration) -> TradeOrders<FeedEvent> {
    TradeOrders::new(
        u64::try_from(hold_max.as_nanos()).unwrap_or(u64::MAX),
        crate::constants::TRADE_EVENTS_HELD_MAX,
    )
}

fn symbol_name(message: &Message<'_>) -> String {
    String::from_utf8_lossy(crate::sbe::symbol(message)).into_owned()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::sbe::spot_stream::{BoolEnum, TradesStreamEventEncoder};
    use crate::sink::dlq;
    use crate::stream::StreamKind;

    /// A fresh, empty directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hotpath-redis-writer-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    }

    fn writer(dead: &Path) -> Writer {
        let config = RedisConfig {
            dead_letter_path: dead.to_path_buf(),
            ..RedisConfig::default()
        };
        let stats = Arc::new(SinkStats::default());
        Writer::new(config, &[], stats, (None, Duration::from_secs(1)))
    }

    fn trades(ids: std::ops::RangeInclusive<i64>) -> FeedEvent {
        trades_at(ids, 1_763_700_000_000_000)
    }

    fn trades_at(ids: std::ops::RangeInclusive<i64>, time_us: i64) -> FeedEvent {
        let mut out = vec![0u8; 1024];
        let length = {
            let mut e = TradesStreamEventEncoder::wrap(&mut out).expect("room");
            e.event_time(time_us)
                .transact_time(time_us)
                .price_exponent(-2)
                .qty_exponent(-3);
            let count = u32::try_from(ids.clone().count()).expect("a few");
            let mut group = e.trades(count).expect("a group");
            for id in ids.clone() {
                group
                    .next_entry()
                    .expect("an entry")
                    .id(id)
                    .price(6_976_988)
                    .qty(1)
                    .is_buyer_maker(BoolEnum::True);
            }
            e.symbol(b"BTCUSDT").expect("a symbol");
            e.finish()
        };
        out.truncate(length);
        FeedEvent {
            recv_time_ns: 1,
            symbol: 0,
            kind: StreamKind::Trade,
            first_id: *ids.start(),
            last_id: *ids.end(),
            first_new_id: *ids.start(),
            event_time_us: time_us,
            frame: bytes::Bytes::from(out),
        }
    }

    /// A trade arriving after a later candle of its interval closed is left out of its
    /// candle: counted in the sink's summary.
    #[test]
    fn trades_left_out_of_closed_candles_are_counted() {
        let dir = scratch("klines-late");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.klines = KlinesConfig {
            intervals: vec![crate::kline::Interval::of("1s").expect("1s")],
            close_after_ms: 0,
        };
        let (t0, second) = (1_763_700_000_000_000, 1_000_000);
        w.apply(trades_at(1..=1, t0 + 100_000), 1);
        w.apply(trades_at(2..=3, t0 + second + 100_000), 2);
        // The symbol's clock (a frame of it at second 5) closes second 1 without a gap seen.
        let clock = FeedEvent {
            event_time_us: t0 + 5 * second,
            ..trades_at(3..=3, t0 + second + 100_000)
        };
        w.apply(clock, 3);
        w.apply(trades_at(4..=5, t0 + second + 900_000), 4);
        assert_eq!(w.stats.summary().klines_late, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn reply(resp: &str) -> Value {
        redis::parse_redis_value(resp.as_bytes()).expect("a RESP reply")
    }

    const OOM: &str = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
    const SMALLER: &str =
        "-ERR The ID specified in XADD is equal or smaller than the target stream top item\r\n";

    /// One round: the commands of the next pipeline (as RESP text) and the replies given to
    /// them, trade commands first, `rest` for the other keys' commands.
    fn round(w: &mut Writer, trades: &[Value]) -> (String, Result<(), String>) {
        let (pipes, batch) = w.prepare(0, false, unix_us());
        let text = String::from_utf8_lossy(&pipes[0].get_packed_pipeline()).into_owned();
        let commands: usize = batch.sections.iter().map(|s| s.commands).sum();
        let mut replies = trades.to_vec();
        replies.resize(commands, Value::Okay);
        (text, w.settle(batch, &replies, monotonic_ns()))
    }

    /// Regression (found in review): trade 1 was refused (OOM) while trade 2 landed; on the
    /// retry Redis refused trade 1 as "equal or smaller than the target stream top item", and
    /// the writer counted it as written. It is not in the stream: an XRANGE says so, and it
    /// goes to the dead-letter file.
    #[test]
    fn a_refused_trade_overtaken_by_a_later_one_is_dead_lettered_not_counted_written() {
        let dir = scratch("overtaken");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.accept(trades(1..=2));
        let (text, settled) = round(&mut w, &[reply(OOM), reply("$15\r\n1763700000000-2\r\n")]);
        assert_eq!(text.matches("XADD").count(), 2);
        assert!(settled.is_err(), "an explicit refusal fails the batch");
        assert_eq!(w.stats.written.get(), 1, "trade 2 landed");
        let (text, settled) = round(&mut w, &[reply(SMALLER)]);
        assert!(text.contains("1763700000000-1") && text.contains("XADD"));
        assert_eq!(settled, Ok(()));
        assert_eq!(w.stats.written.get(), 1, "a refusal is not proof");
        let (text, settled) = round(&mut w, &[reply("*0\r\n")]);
        assert!(text.contains("XRANGE") && !text.contains("XADD"), "{text}");
        assert_eq!(settled, Ok(()));
        assert_eq!(w.stats.written.get(), 1);
        assert_eq!(w.stats.dead_lettered.get(), 1);
        assert!(w.states[0].as_ref().is_some_and(|s| s.pending.is_empty()));
        w.dead.finish().expect("written through");
        let letters = dlq::read(&dir.join("dead.jsonl")).expect("the file");
        let [record] = letters.records.as_slice() else {
            panic!("one record: {letters:?}");
        };
        assert_eq!(record.outcome, dlq::Outcome::Failed);
        assert_eq!(record.attempts, 2);
        assert!(
            record.error.contains("cannot be placed"),
            "{}",
            record.error
        );
        assert!(record.error.contains("OOM"), "{}", record.error);
        let dlq::Target::Redis { key, id, fields } = &record.target else {
            panic!("a Redis record");
        };
        assert_eq!(
            (key.as_str(), id.as_str()),
            ("trades:{BTCUSDT}", "1763700000000-1")
        );
        assert_eq!(fields[0], ("exchange".to_string(), "binance".to_string()));
        assert!(fields.contains(&("side".to_string(), "sell".to_string())));
        assert!(fields.contains(&("price".to_string(), "69769.88".to_string())));
    }

    /// A trade whose pipeline got no reply may have landed: the "equal or smaller" refusal of
    /// its retry is checked, and found, it is counted as written once.
    #[test]
    fn an_unanswered_trade_found_by_xrange_is_written_once() {
        let dir = scratch("unanswered");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.accept(trades(7..=8));
        let (_pipes, _batch) = w.prepare(0, false, unix_us());
        // The connection is lost: no reply at all.
        for state in w.states.iter_mut().flatten() {
            state.unanswered();
            state.mark_all_dirty();
        }
        assert!(
            w.states[0]
                .as_ref()
                .is_some_and(|s| s.pending.iter().all(|t| t.maybe_landed))
        );
        let (_, settled) = round(&mut w, &[reply(SMALLER), reply(SMALLER)]);
        assert_eq!(settled, Ok(()));
        assert_eq!(w.stats.written.get(), 0);
        // Trade 7 is there; trade 8 is not (trimmed since, or never landed): unknown.
        let found = "*1\r\n*2\r\n$15\r\n1763700000000-7\r\n*2\r\n$4\r\nside\r\n$4\r\nsell\r\n";
        let (text, settled) = round(&mut w, &[reply(found), reply("*0\r\n")]);
        assert_eq!(text.matches("XRANGE").count(), 2);
        assert_eq!(settled, Ok(()));
        assert_eq!(w.stats.written.get(), 1);
        assert_eq!(w.stats.dead_lettered.get(), 1);
        w.dead.finish().expect("written through");
        let letters = dlq::read(&dir.join("dead.jsonl")).expect("the file");
        assert_eq!(letters.records.len(), 1);
        assert_eq!(letters.records[0].outcome, dlq::Outcome::Unknown);
    }

    /// A partly overlapping trades event adds only its new trades (Redis was already
    /// idempotent here: the state skips ids it has seen).
    #[test]
    fn a_partly_overlapping_trades_event_adds_only_its_new_trades() {
        let dir = scratch("overlap");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.accept(trades(1..=5));
        w.accept(trades(3..=8));
        let state = w.states[0].as_ref().expect("a state");
        let ids: Vec<i64> = state.pending.iter().map(|t| t.id).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<i64>>());
        assert_eq!(state.duplicates, 3);
    }

    /// A linger holds frames taken while nothing is in flight until the oldest is `linger`
    /// old, never while stopping. Regression (review13): it sleeps the writer's thread, so it
    /// held the reply of a re-anchor in flight; it holds nothing then.
    #[test]
    fn a_linger_holds_new_frames_until_the_oldest_is_that_old_but_not_a_reanchor_reply() {
        let dir = scratch("linger-hold");
        let mut w = writer(&dir.join("dead.jsonl"));
        let io = Io::new(w.lanes);
        let linger = Duration::from_millis(10);
        let received = 5_000_000_000;
        let now = received + 1_000_000;
        assert_eq!(
            w.linger_hold(&io, linger, now, false),
            None,
            "nothing waits"
        );
        let mut event = trades(1..=2);
        event.recv_time_ns = received;
        w.accept(event);
        let rest = Some(Duration::from_millis(9));
        assert_eq!(w.linger_hold(&io, linger, now, false), rest);
        assert_eq!(w.linger_hold(&io, Duration::ZERO, now, false), None);
        assert_eq!(w.linger_hold(&io, linger, now, true), None, "stopping");
        assert_eq!(
            w.linger_hold(&io, linger, received + 10_000_000, false),
            None
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            w.reanchoring.push(Reanchoring {
                symbol: 0,
                attempt: 1,
                task: tokio::spawn(std::future::pending()),
            });
            assert_eq!(
                w.linger_hold(&io, linger, now, false),
                None,
                "a re-anchor in flight"
            );
            w.reanchoring.clear();
        });
        assert_eq!(w.linger_hold(&io, linger, now, false), rest);
        w.taken_in_flight = true;
        assert_eq!(
            w.linger_hold(&io, linger, now, false),
            None,
            "taken while a pipeline was in flight"
        );
    }

    /// Receipt-to-ack is sampled for frames that leave something to write: a depth20
    /// snapshot (not the book's source) has no ack of its own, and sampling it would time the
    /// lane's next unrelated write.
    #[test]
    fn frames_that_leave_nothing_to_write_are_not_sampled_for_latency() {
        use crate::sim::exchange::{Event, Payload, StreamKey};
        let dir = scratch("latency-samples");
        let mut w = writer(&dir.join("dead.jsonl"));
        let time_us = 1_763_700_000_000_000;
        let snapshot = Event {
            key: StreamKey {
                symbol: 0,
                kind: StreamKind::Depth20,
            },
            event_time_us: time_us,
            payload: Payload::Depth20 {
                update_id: 7,
                bids: vec![(6_976_900, 5)],
                asks: vec![(6_977_000, 5)],
            },
        };
        let mut frame = Vec::new();
        crate::sim::encode::encode_sbe("BTCUSDT", &snapshot, &mut frame);
        let event = |frame: Vec<u8>| FeedEvent {
            recv_time_ns: 1,
            symbol: 0,
            kind: StreamKind::Depth20,
            first_id: 0,
            last_id: 0,
            first_new_id: 0,
            event_time_us: time_us,
            frame: bytes::Bytes::from(frame),
        };
        // The symbol's first frame has its (new, unsynced) book marked stale: that waits.
        w.accept(event(frame.clone()));
        assert_eq!(
            w.samples.concat().len(),
            1,
            "the stale mark waits for its ack"
        );
        let (text, settled) = round(&mut w, &[]);
        assert!(text.contains("stale"), "{text}");
        assert_eq!(settled, Ok(()));
        assert!(w.samples.concat().is_empty(), "taken by the write");
        w.accept(event(frame));
        assert!(
            w.samples.concat().is_empty(),
            "nothing to write, nothing sampled"
        );
        w.accept(trades(1..=2));
        assert_eq!(w.samples.concat().len(), 1, "the trades wait for their ack");
    }

    fn pending_ids(w: &Writer) -> Vec<i64> {
        w.states[0]
            .as_ref()
            .map(|s| s.pending.iter().map(|t| t.id).collect())
            .unwrap_or_default()
    }

    /// An idle writer parks until its next housekeeping round only while that round has
    /// something to time (trades held for a repair, a re-anchor in flight, a shutdown flush);
    /// otherwise as long as a park may last, the rest of its inputs waking it.
    #[test]
    fn an_idle_writer_parks_until_housekeeping_only_while_it_times_something() {
        let dir = scratch("timers-due");
        let mut w = writer(&dir.join("dead.jsonl"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (io, now) = connecting(&mut w).await;
            w.next_timers = now.instant + Duration::from_millis(2);
            let soon = Duration::from_millis(2);
            assert_eq!(
                w.timers_due_in(&io, now, false),
                IDLE_PARK_MAX,
                "nothing to time"
            );
            assert_eq!(w.timers_due_in(&io, now, true), soon, "a shutdown flush");
            let past = later(now, soon * 2);
            assert_eq!(w.timers_due_in(&io, past, true), Duration::ZERO);
            w.accept(trades(1..=2));
            w.accept(trades(6..=7));
            let held = w.timers_due_in(&io, now, false);
            assert_eq!(held, soon, "6 and 7 held for 3..=5");
            w.repair(Repair::Event(trades(3..=5)));
            assert_eq!(w.timers_due_in(&io, now, false), IDLE_PARK_MAX, "released");
            w.reanchoring.push(Reanchoring {
                symbol: 0,
                attempt: 1,
                task: tokio::spawn(std::future::pending()),
            });
            let reanchoring = w.timers_due_in(&io, now, false);
            assert_eq!(reanchoring, soon, "a re-anchor in flight");
            w.reanchoring.clear();
        });
    }

    /// The writer's connection, connecting (its task not run yet), and the round's time.
    async fn connecting(w: &mut Writer) -> (Io, Now) {
        let mut io = Io::new(1);
        let now = w.now();
        assert_eq!(w.connection(&mut io, now.instant).await, 0, "started only");
        (io, now)
    }

    /// `now`, `by` later.
    fn later(now: Now, by: Duration) -> Now {
        let us = i64::try_from(by.as_micros()).expect("short");
        Now {
            instant: now.instant + by,
            ns: now.ns + u64::try_from(by.as_nanos()).expect("short"),
            unix_us: now.unix_us + us,
        }
    }

    /// A writer whose reconnects and re-anchor retries wait 1 to 5 ms.
    fn quick_retries(dead: &Path) -> Writer {
        let config = RedisConfig {
            dead_letter_path: dead.to_path_buf(),
            reconnect_initial: Duration::from_millis(5),
            reconnect_max: Duration::from_millis(5),
            ..RedisConfig::default()
        };
        let stats = Arc::new(SinkStats::default());
        Writer::new(config, &[], stats, (None, Duration::from_secs(1)))
    }

    /// Waits until `task` has run to its end.
    async fn finished<T>(task: &tokio::task::JoinHandle<T>) {
        while !task.is_finished() {
            tokio::task::yield_now().await;
        }
    }

    /// Review of idle: nothing rings the writer when a connection's reconnect backoff ends.
    /// The old parks, doubling from 50 us, reconnected within about a park of the backoff's
    /// end; parking for the cap, the writer left its connection down (and the frames taken
    /// meanwhile unwritten) up to 10 ms past it. An idle writer parks no longer than until its
    /// next reconnect.
    #[test]
    fn an_idle_writer_with_a_connection_down_parks_until_its_reconnect_is_due() {
        let dir = scratch("reconnect-due");
        let mut w = quick_retries(&dir.join("dead.jsonl"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let mut io = Io::new(1);
            let failing = tokio::spawn(async { Err::<Vec<Value>, String>("reset".into()) });
            finished(&failing).await;
            let batch = Batch {
                sections: Vec::new(),
                samples: Vec::new(),
            };
            io.lanes[0].writing = Some((failing, batch));
            let now = w.now();
            assert_eq!(w.finish_write(&mut io, now.ns).await, 1, "the write failed");
            assert!(io.lanes[0].conn.is_none(), "the connection is dropped");
            w.next_timers = now.instant + REDIS_HOUSEKEEPING;
            let due = w.timers_due_in(&io, now, false);
            assert!(due <= Duration::from_millis(5), "parks {due:?}");
            // Once the connect is under way, its task wakes the writer.
            assert_eq!(w.connection(&mut io, later(now, due).instant).await, 0);
            assert_eq!(w.timers_due_in(&io, now, false), IDLE_PARK_MAX);
        });
    }

    /// Review of idle: nothing rings the writer when a failed re-anchor's retry delay ends
    /// either: an idle writer parks no longer than until the retry (or its next housekeeping
    /// round, which starts re-anchors, if that comes later).
    #[test]
    fn an_idle_writer_parks_until_a_failed_reanchor_is_retried() {
        let dir = scratch("reanchor-retry-due");
        let mut w = quick_retries(&dir.join("dead.jsonl"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let task = tokio::spawn(async { Err::<bool, String>("no reply".into()) });
            finished(&task).await;
            let (io, now) = connecting(&mut w).await;
            w.reanchoring.push(Reanchoring {
                symbol: 0,
                attempt: 1,
                task,
            });
            assert_eq!(w.finish_reanchors().await, 1);
            w.next_timers = now.instant;
            let due = w.timers_due_in(&io, now, false);
            assert!(due <= Duration::from_millis(5), "parks {due:?}");
            w.next_timers = now.instant + Duration::from_millis(8);
            let due = w.timers_due_in(&io, now, false);
            assert_eq!(
                due,
                Duration::from_millis(8),
                "the housekeeping round retries it"
            );
            // A housekeeping round finds no book waiting for a retry (none has a book here).
            w.note_reanchor_retries(now.unix_us);
            assert_eq!(w.timers_due_in(&io, now, false), IDLE_PARK_MAX);
        });
    }

    /// A gap holds the symbol's later trades out of the stream until the sidecar's repair
    /// arrives; then all go in order, and a late copy of repaired trades adds nothing.
    #[test]
    fn a_gap_holds_later_trades_until_the_repair_and_late_copies_add_nothing() {
        let dir = scratch("repair");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.accept(trades(1..=2));
        w.accept(trades(6..=7));
        assert_eq!(pending_ids(&w), vec![1, 2], "6 and 7 wait for 3..=5");
        // The repair overlaps what was delivered and what is held: each id once.
        w.repair(Repair::Event(trades(2..=6)));
        assert_eq!(pending_ids(&w), (1..=7).collect::<Vec<_>>());
        w.repair(Repair::Event(trades(3..=4)));
        w.accept(trades(7..=8));
        assert_eq!(pending_ids(&w), (1..=8).collect::<Vec<_>>());
        w.note_orders();
        assert_eq!(w.stats.repaired.get(), 2);
        assert_eq!(w.stats.duplicates.get(), 1, "the late 3..=4");
        assert_eq!(w.stats.received.get(), 3);
        assert_eq!(w.stats.unrepaired.get(), 0);
    }

    /// When the sidecar gives up on the missing ids, the held trades go on and the ids are
    /// counted as unrepaired; at shutdown everything still held goes on too.
    #[test]
    fn given_up_ids_and_shutdown_release_held_trades_and_count_what_never_came() {
        let dir = scratch("gave-up");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.accept(trades(1..=1));
        w.accept(trades(4..=4));
        w.repair(Repair::GaveUp {
            symbol: 0,
            from: 2,
            to: 3,
        });
        assert_eq!(pending_ids(&w), vec![1, 4]);
        w.accept(trades(9..=9));
        assert_eq!(pending_ids(&w), vec![1, 4]);
        w.finish_orders();
        assert_eq!(pending_ids(&w), vec![1, 4, 9]);
        assert_eq!(w.stats.unrepaired.get(), 2 + 4);
        assert_eq!(w.orders.held(), 0);
    }

    /// Trades beyond the buffer and those left at the deadline go to the dead-letter file.
    #[test]
    fn trades_beyond_the_buffer_and_at_the_deadline_are_dead_lettered() {
        let dir = scratch("buffer");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.config.buffer_trades_max = 3;
        w.accept(trades(1..=5));
        assert_eq!(w.stats.dead_lettered.get(), 2);
        let (_pipes, _batch) = w.prepare(0, false, unix_us());
        // In flight when the deadline passes: unknown.
        assert_eq!(w.abandon(), 3);
        assert_eq!(w.stats.dead_lettered.get(), 5);
        assert_eq!(w.stats.dropped.get(), 0);
        w.dead.finish().expect("written through");
        let letters = dlq::read(&dir.join("dead.jsonl")).expect("the file");
        let outcomes: Vec<dlq::Outcome> = letters.records.iter().map(|r| r.outcome).collect();
        use dlq::Outcome::{Failed, Unknown};
        assert_eq!(outcomes, [Failed, Failed, Unknown, Unknown, Unknown]);
        assert!(letters.records[0].error.contains("buffer_trades_max"));
        assert!(letters.records[4].error.contains("shutdown"));
    }

    /// The windows are written as incomplete while the symbol's trades are held back for a
    /// repair, complete again once it came.
    #[test]
    fn a_symbol_holding_trades_is_written_as_incomplete() {
        let dir = scratch("held");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.accept(trades(1..=2));
        w.accept(trades(5..=6));
        let _ = w.prepare(0, false, unix_us());
        let held = |w: &Writer| w.states.iter().flatten().any(|s| s.trades_held);
        assert!(held(&w), "3..=4 missing");
        w.accept(trades(3..=4));
        let _ = w.prepare(0, false, unix_us());
        assert!(!held(&w), "repaired");
    }

    /// Regression: `flushed` meant "nothing left at the deadline" here but "every record
    /// accounted for" in the Kinesis writer; a trade dropped (the dead-letter file could not be
    /// written) still gave `flushed: true`. Now both mean: everything taken was written or
    /// dead-lettered.
    #[test]
    fn flushed_means_everything_taken_was_written_or_dead_lettered() {
        let dir = scratch("flushed");
        let w = writer(&dir.join("dead.jsonl"));
        assert!(w.summary().flushed, "nothing taken, nothing left");
        w.stats.dropped.add(1);
        assert!(!w.summary().flushed, "a trade dropped");
        let dir = scratch("flushed-pending");
        let mut w = writer(&dir.join("dead.jsonl"));
        w.accept(trades(1..=2));
        assert!(!w.summary().flushed, "trades pending");
        w.abandon();
        assert_eq!(w.stats.dead_lettered.get(), 2);
        for state in w.states.iter_mut().flatten() {
            state.pending.clear();
        }
        assert!(
            !w.summary().flushed,
            "the trade windows taken were never written: {:?}",
            w.summary()
        );
    }
}
