//! The PostgreSQL writer thread: drains its rings (one per reader, plus the sidecar's repair
//! ring) into rows, batches them (`postgres.batch_rows`, `postgres.linger_ms`) and writes each
//! batch exactly once ([`super::copy::write_batch`]: binary COPY into staging, merged with
//! `ON CONFLICT DO NOTHING`, one transaction). It runs a current-thread tokio runtime of its
//! own and keeps one batch (or one connection attempt) in flight while it goes on draining, so
//! nothing here can block a reader (a full ring is the reader's `queue_full` notice).
//!
//! A database outage: the batch goes back to the front of the queue, the connection is made
//! again with full-jitter backoff (`postgres.retry_initial_ms` .. `retry_max_ms`), and rows keep
//! queueing meanwhile, at most `postgres.buffer_rows_max`; beyond, the oldest go to the
//! dead-letter file (`outcome` `unknown` when a `COMMIT` of theirs got no answer). At shutdown
//! what is left after the flush deadline is dead-lettered too.
//!
//! Trades go through the writer's per-symbol [`TradeOrders`] like the other sinks': live and
//! repaired trades merge into one sequence per symbol, each trade id once and in order.
//! `books` rows come from the depth20 stream: at most one per symbol per
//! `postgres.book_interval_ms` of event time, top `postgres.book_levels` levels.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::copy::{self, BatchError, Session};
use super::rows::{self, Row};
use super::schema::{self, Layout};
use crate::backoff::Backoff;
use crate::clock::{monotonic_ns, unix_ms, unix_us};
use crate::config::postgres::PostgresConfig;
use crate::feed::event::{FeedEvent, Repair};
use crate::idle::{Bell, TaskIdle};
use crate::metrics::{Percentiles, latency_histogram};
use crate::sink::dlq::{DeadRecord, Outcome, Spool, Target};
use crate::sink::order::TradeOrders;
use crate::sink::{SinkError, SinkStats, SinkSummary, ring_depth};
use crate::stream::StreamKind;

/// Errors logged one by one before they are only counted.
const ERRORS_LOGGED_MAX: u32 = 20;

/// What the writer thread is given.
pub struct PostgresSink {
    /// Settings.
    pub config: PostgresConfig,
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
    /// The core the writer thread is pinned to ([`crate::cores::CorePlan`]); `None`: not
    /// pinned.
    pub core: Option<usize>,
    /// How long the final flush may take; what is left then is dead-lettered.
    pub flush_timeout: Duration,
    /// This writer's bell.
    pub bell: Bell,
}

/// Starts the writer thread.
pub fn spawn(
    sink: PostgresSink,
) -> std::io::Result<std::thread::JoinHandle<Result<SinkSummary, SinkError>>> {
    std::thread::Builder::new()
        .name("hotpath-postgres".into())
        .spawn(move || {
            crate::cores::pin(sink.core);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SinkError::Runtime {
                    sink: "postgres",
                    reason: e.to_string(),
                })?;
            runtime.block_on(run(sink))
        })
}

/// A row's bookkeeping beside it.
#[derive(Clone, Copy, Debug)]
struct Meta {
    recv_time_ns: u64,
    enqueued: Instant,
    attempts: u32,
    first_attempt_ms: i64,
    maybe_landed: bool,
}

/// What the job in flight ended with.
enum Done {
    Connected(Result<Session, String>),
    Written(Result<(), BatchError>),
    /// The batch got no answer within `postgres.request_timeout_ms` (its `COMMIT` may have
    /// been sent): the connection is dropped and the batch retried on a new one.
    TimedOut,
}

type Job = Pin<Box<dyn Future<Output = Done>>>;

/// The batch in flight: its rows (shared with the job), their bookkeeping, its new days.
struct InFlight {
    rows: Arc<Vec<Row>>,
    meta: Vec<Meta>,
    days: Vec<i64>,
}

struct Writer {
    config: PostgresConfig,
    stats: Arc<SinkStats>,
    dead: Spool,
    latency: Histogram<u64>,
    queue: VecDeque<(Row, Meta)>,
    in_flight: Option<InFlight>,
    session: Option<Session>,
    connected_before: bool,
    retry_at: Instant,
    backoff: Backoff,
    /// Days whose partitions exist (plain layout), since the session's connect and the last
    /// failed batch.
    days: BTreeSet<i64>,
    /// Event time of each symbol's last `books` row, by the feed's symbol index.
    last_book_us: Vec<Option<i64>>,
    scratch: Vec<Row>,
    orders: TradeOrders<FeedEvent>,
    released: Vec<(FeedEvent, i64)>,
    gaps_logged: u32,
    errors_logged: u32,
}

async fn run(sink: PostgresSink) -> Result<SinkSummary, SinkError> {
    let PostgresSink {
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
    let mut idler = TaskIdle::new(config.idle, bell);
    let mut w = Writer::new(config, stats, hold_max);
    let mut job: Option<Job> = None;
    let mut flush_deadline: Option<Instant> = None;
    loop {
        tokio::task::coop::consume_budget().await;
        let stopping = stop.load(Ordering::Acquire);
        let mut work = ring_depth(&rings) + repairs.as_ref().map_or(0, |r| r.slots());
        w.drain(&mut rings, &mut repairs);
        if stopping {
            w.finish_orders();
        }
        let now = Instant::now();
        if stopping && flush_deadline.is_none() {
            flush_deadline = Some(now + flush_timeout);
        }
        w.bound();
        if let Err(e) = w.dead.sync(now) {
            tracing::error!("postgres: {e}");
        }
        if job.is_none() {
            job = w.next_job(now, stopping);
            work += usize::from(job.is_some());
        }
        let held = w.orders.held() + w.queue.len();
        w.stats.queue_depth.set((ring_depth(&rings) + held) as u64);
        if stopping && job.is_none() && w.queue.is_empty() && rings.iter().all(|r| r.is_empty()) {
            break;
        }
        if flush_deadline.is_some_and(|d| now >= d) {
            drop(job.take());
            w.abandon("the shutdown flush deadline passed");
            break;
        }
        let has_work = || {
            (!stopping && stop.load(Ordering::Acquire))
                || rings.iter().any(|r| !r.is_empty())
                || repairs.as_ref().is_some_and(|r| !r.is_empty())
        };
        match (idler.step(work), job.as_mut()) {
            (None, Some(j)) => {
                if let Some(done) = futures_util::FutureExt::now_or_never(j.as_mut()) {
                    job = None;
                    w.settle(done);
                }
            }
            (None, None) => {}
            (Some(step), None) => idler.wait(step, has_work).await,
            (Some(step), Some(j)) => {
                tokio::select! {
                    done = j.as_mut() => {
                        job = None;
                        w.settle(done);
                    }
                    () = idler.wait(step, has_work) => {}
                }
            }
        }
    }
    w.finish()
}

impl Writer {
    fn new(config: PostgresConfig, stats: Arc<SinkStats>, hold_max: Duration) -> Writer {
        Writer {
            dead: Spool::new(&config.dead_letter_path),
            backoff: Backoff::new(config.retry_initial, config.retry_max, monotonic_ns() | 1),
            config,
            stats,
            latency: latency_histogram(),
            queue: VecDeque::new(),
            in_flight: None,
            session: None,
            connected_before: false,
            retry_at: Instant::now(),
            days: BTreeSet::new(),
            last_book_us: Vec::new(),
            scratch: Vec::new(),
            orders: TradeOrders::new(
                u64::try_from(hold_max.as_nanos()).unwrap_or(u64::MAX),
                crate::constants::TRADE_EVENTS_HELD_MAX,
            ),
            released: Vec::new(),
            gaps_logged: 0,
            errors_logged: 0,
        }
    }

    /// The summary at the end; `flushed` when nothing is left in memory and nothing dropped.
    fn finish(mut self) -> Result<SinkSummary, SinkError> {
        self.dead.finish().map_err(|reason| SinkError::DeadLetter {
            sink: "postgres",
            reason,
        })?;
        let mut summary = self.stats.summary();
        summary.receipt_to_ack_ns = Percentiles::of(&self.latency);
        summary.flushed = self.queue.is_empty()
            && self.in_flight.is_none()
            && self.orders.held() == 0
            && summary.dropped == 0;
        Ok(summary)
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
        self.note_orders();
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
                self.route(event);
            }
        }
    }

    /// Trades through their symbol's order, the rest straight on.
    fn route(&mut self, event: FeedEvent) {
        if event.kind != StreamKind::Trade {
            return self.accept(&event, i64::MIN);
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

    fn repair(&mut self, repair: Repair) {
        match repair {
            Repair::Event(event) => {
                self.stats.repaired.add(1);
                self.route(event);
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

    fn finish_orders(&mut self) {
        let mut released = std::mem::take(&mut self.released);
        self.orders.finish(&mut released);
        self.deliver(released);
        self.note_orders();
    }

    fn note_orders(&mut self) {
        crate::sink::order::note(
            "postgres",
            &mut self.orders,
            &self.stats,
            &mut self.gaps_logged,
        );
    }

    /// Queues the rows of `event`: its trades from id `from` on, or a `books` row from a
    /// depth20 snapshot due by the interval.
    fn accept(&mut self, event: &FeedEvent, from: i64) {
        let meta = Meta {
            recv_time_ns: event.recv_time_ns,
            enqueued: Instant::now(),
            attempts: 0,
            first_attempt_ms: 0,
            maybe_landed: false,
        };
        match event.kind {
            StreamKind::Trade => {
                if !rows::ticks(&event.frame, from, &mut self.scratch) {
                    self.stats.dropped.add(1);
                    self.log_error("a trades frame that cannot be read");
                }
                for row in self.scratch.drain(..) {
                    self.queue.push_back((row, meta));
                }
            }
            StreamKind::Depth20 => {
                let index = usize::from(event.symbol);
                if self.last_book_us.len() <= index {
                    self.last_book_us.resize(index + 1, None);
                }
                let interval =
                    i64::try_from(self.config.book_interval.as_micros()).unwrap_or(i64::MAX);
                let due = self.last_book_us[index]
                    .is_none_or(|last| event.event_time_us.saturating_sub(last) >= interval);
                if !due {
                    return;
                }
                match rows::book(&event.frame, self.config.book_levels) {
                    Some(book) => {
                        self.last_book_us[index] = Some(event.event_time_us);
                        self.queue.push_back((Row::Book(book), meta));
                    }
                    None => {
                        self.stats.dropped.add(1);
                        self.log_error("a depth20 frame that cannot be read");
                    }
                }
            }
            StreamKind::BestBidAsk | StreamKind::Depth => {}
        }
    }

    /// Keeps the rows held within `postgres.buffer_rows_max`: the oldest beyond it go to the
    /// dead-letter file.
    fn bound(&mut self) {
        let in_flight = self.in_flight.as_ref().map_or(0, |b| b.meta.len());
        while self.queue.len() + in_flight > self.config.buffer_rows_max {
            let Some((row, meta)) = self.queue.pop_front() else {
                break;
            };
            self.dead_letter(&row, meta, "postgres.buffer_rows_max reached");
        }
    }

    /// The next connection attempt or batch, when one is due.
    fn next_job(&mut self, now: Instant, stopping: bool) -> Option<Job> {
        if now < self.retry_at {
            return None;
        }
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        let timeout = self.config.request_timeout;
        let Some(session) = &self.session else {
            let url = self.config.url.clone();
            let retention = self.config.retention_days;
            return Some(Box::pin(async move {
                match tokio::time::timeout(timeout, connect(&url, retention, timeout)).await {
                    Ok(connected) => Done::Connected(connected),
                    Err(_) => Done::Connected(Err(format!(
                        "no answer within postgres.request_timeout_ms ({} ms)",
                        timeout.as_millis()
                    ))),
                }
            }));
        };
        let ready = self.queue.len() >= self.config.batch_rows
            || self.queue.front().is_some_and(|(_, m)| {
                stopping || now.duration_since(m.enqueued) >= self.config.linger
            });
        if !ready {
            return None;
        }
        let take = self.queue.len().min(self.config.batch_rows);
        let mut batch = Vec::with_capacity(take);
        let mut meta = Vec::with_capacity(take);
        let first_attempt_ms = unix_ms();
        for (row, mut m) in self.queue.drain(..take) {
            m.attempts = m.attempts.saturating_add(1);
            if m.first_attempt_ms == 0 {
                m.first_attempt_ms = first_attempt_ms;
            }
            batch.push(row);
            meta.push(m);
        }
        let days = self.new_days(&batch, session.layout);
        let partitions: Vec<String> = days
            .iter()
            .flat_map(|&d| schema::PARTITIONED.map(|t| schema::create_partition(t, d)))
            .collect();
        let rows = Arc::new(batch);
        let (client, job_rows) = (session.client.clone(), rows.clone());
        let retention = (!days.is_empty())
            .then_some(self.config.retention_days)
            .flatten();
        let layout = session.layout;
        self.in_flight = Some(InFlight { rows, meta, days });
        self.stats.requests.add(1);
        let write = async move {
            if let Some(days) = retention {
                let today = schema::day_of_us(unix_us());
                if let Err(e) = schema::retain(&client, layout, days, today).await {
                    tracing::warn!("postgres: retention: {}", copy::error_text(&e));
                }
            }
            copy::write_batch(&client, &job_rows, &partitions).await
        };
        Some(Box::pin(async move {
            match tokio::time::timeout(timeout, write).await {
                Ok(result) => Done::Written(result),
                Err(_) => Done::TimedOut,
            }
        }))
    }

    /// The UTC days of `rows` whose partitions are not known to exist (plain layout).
    fn new_days(&self, rows: &[Row], layout: Layout) -> Vec<i64> {
        if layout == Layout::Timescale {
            return Vec::new();
        }
        let mut days: Vec<i64> = rows
            .iter()
            .map(|r| match r {
                Row::Tick(t) => schema::day_of_us(t.trade_time.0),
                Row::Book(b) => schema::day_of_us(b.event_time.0),
            })
            .filter(|d| !self.days.contains(d))
            .collect();
        days.sort_unstable();
        days.dedup();
        days
    }

    /// What a finished job means for the writer.
    fn settle(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Connected(Ok(session)) => {
                if self.connected_before {
                    self.stats.reconnects.add(1);
                }
                self.connected_before = true;
                tracing::info!("postgres: connected ({:?} layout)", session.layout);
                // The database may have been recreated meanwhile (its tables made again by
                // the migrations, not its partitions): each day's partition is made again,
                // if missing, before rows of that day are written.
                self.days.clear();
                self.session = Some(session);
            }
            Done::Connected(Err(e)) => {
                self.stats.failed_requests.add(1);
                self.log_error(&format!("cannot connect: {e}"));
                self.retry_at = now + self.backoff.next_delay();
            }
            Done::Written(result) => self.settle_batch(result, now),
            Done::TimedOut => {
                // A connection that stopped answering (a hung server, a lost network path)
                // may never fail by itself: it is dropped, and the batch goes again on a new
                // one (the unique keys make a repeat of rows that did land a no-op).
                self.session = None;
                let message = format!(
                    "no answer within postgres.request_timeout_ms ({} ms); reconnecting",
                    self.config.request_timeout.as_millis()
                );
                let failed = BatchError {
                    message,
                    maybe_landed: true,
                };
                self.settle_batch(Err(failed), now);
            }
        }
    }

    fn settle_batch(&mut self, result: Result<(), BatchError>, now: Instant) {
        let Some(batch) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.backoff.reset();
                self.days.extend(batch.days);
                let landed = monotonic_ns();
                let mut newest = 0;
                for m in &batch.meta {
                    let ns = landed.saturating_sub(m.recv_time_ns);
                    let _ = self.latency.record(ns.max(1));
                    newest = newest.max(m.recv_time_ns);
                }
                self.stats.ack_latency.record_all(
                    batch
                        .meta
                        .iter()
                        .map(|m| landed.saturating_sub(m.recv_time_ns)),
                );
                self.stats.ack_latency_ns.set(landed.saturating_sub(newest));
                self.stats.written.add(batch.meta.len() as u64);
            }
            Err(e) => {
                self.stats.failed_requests.add(1);
                self.stats.retried.add(batch.meta.len() as u64);
                self.log_error(&format!(
                    "batch of {} rows failed: {}",
                    batch.meta.len(),
                    e.message
                ));
                let rows = Arc::try_unwrap(batch.rows).unwrap_or_else(|shared| (*shared).clone());
                for (row, mut m) in rows.into_iter().zip(batch.meta).rev() {
                    m.maybe_landed |= e.maybe_landed;
                    self.queue.push_front((row, m));
                }
                if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
                    self.session = None;
                }
                // A partition may be gone (dropped by hand or by another writer's retention):
                // the retry makes its days' partitions again, if missing.
                self.days.clear();
                self.retry_at = now + self.backoff.next_delay();
            }
        }
    }

    /// At the flush deadline: everything left goes to the dead-letter file.
    fn abandon(&mut self, why: &str) {
        if let Some(batch) = self.in_flight.take() {
            for (row, mut m) in batch.rows.iter().zip(batch.meta) {
                // The batch was on its way: its COMMIT may have been sent.
                m.maybe_landed = true;
                self.dead_letter(row, m, why);
            }
        }
        while let Some((row, meta)) = self.queue.pop_front() {
            self.dead_letter(&row, meta, why);
        }
    }

    fn dead_letter(&mut self, row: &Row, meta: Meta, why: &str) {
        let record = DeadRecord {
            target: Target::Postgres {
                table: row.table().to_string(),
                row: row.text(),
            },
            attempts: meta.attempts,
            first_attempt_ms: meta.first_attempt_ms,
            dead_at_ms: unix_ms(),
            outcome: if meta.maybe_landed {
                Outcome::Unknown
            } else {
                Outcome::Failed
            },
            error: why.to_string(),
        };
        match self.dead.append(&record) {
            Ok(()) => self.stats.dead_lettered.add(1),
            Err(e) => {
                self.stats.dropped.add(1);
                self.log_error(&format!("cannot write the dead-letter file: {e}"));
            }
        }
    }

    fn log_error(&mut self, message: &str) {
        self.errors_logged = self.errors_logged.saturating_add(1);
        if self.errors_logged <= ERRORS_LOGGED_MAX {
            tracing::warn!(
                "postgres: {}{message}",
                if self.errors_logged == ERRORS_LOGGED_MAX {
                    "(further errors are counted, not logged) "
                } else {
                    ""
                }
            );
        }
    }
}

/// Connects, migrates, makes the staging tables and applies the retention.
async fn connect(
    url: &str,
    retention: Option<u32>,
    request_timeout: Duration,
) -> Result<Session, String> {
    let session = copy::connect(url, copy::idle_abort(request_timeout))
        .await
        .map_err(|e| crate::config::redact_urls(&copy::error_text(&e)))?;
    if let Some(days) = retention {
        let today = schema::day_of_us(unix_us());
        let dropped = schema::retain(&session.client, session.layout, days, today)
            .await
            .map_err(|e| copy::error_text(&e))?;
        if !dropped.is_empty() {
            tracing::info!("postgres: retention dropped {}", dropped.join(", "));
        }
    }
    Ok(session)
}
