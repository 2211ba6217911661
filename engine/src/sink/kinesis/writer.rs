//! The Kinesis writer thread: drains its rings into its destination streams (trade, bestBidAsk,
//! depth, heartbeat), each with one [`Lane`] per open shard ([`Destination`]: the shards are
//! listed at start, again every `kinesis.shard_refresh_s` and soon after an answer shows a
//! record on another shard than its lane's), sends PutRecords batches (one in flight per shard
//! lane, so a partition key stays ordered and N shards move N times as much), retries failed entries only, backs off with full jitter,
//! stops hammering a dead endpoint with a [`Breaker`], and writes what it cannot deliver in
//! time to the dead-letter file. It runs a current-thread tokio runtime of its own; nothing it
//! does can block a reader (a full ring is the reader's `queue_full` notice). The rings are
//! drained from the start, also while the start-up stream check runs (into the lanes, bounded
//! by `kinesis.buffer_bytes_max`, beyond which records wait in the overflow file, [`Spill`], if on).
//!
//! Memory: the records queued and in flight hold at most `kinesis.buffer_bytes_max` (an
//! estimate: [`Entry::held_bytes`], [`super::destination::ShardLane::in_flight_bytes`]). Beyond
//! it, with `kinesis.spill_bytes_max` above 0 (off by default: the file is one queue for every
//! stream), new records wait in the overflow file (`kinesis.spill_path`, first in first out, every
//! later record behind them so that order holds) and come back as the backlog drains; beyond
//! `kinesis.spill_bytes_max` they go to the dead-letter file, counted. A Kinesis stall of seconds
//! therefore costs the process a few MiB, not the stall's worth of records.
//!
//! The SDK's own retries are disabled: this loop decides when to retry, so the breaker and the
//! delivery deadline see every failure.
//!
//! Delivery is at least once. A request that got no answer (a timeout, a lost connection, an
//! HTTP 500) may have landed: its records are retried, so a consumer can see one twice (dedupe
//! on symbol + trade id), and if they end in the dead-letter file they are marked
//! `"outcome":"unknown"` so that `hotpath dlq resend` does not send them again blindly. Records
//! refused explicitly (throttled entries, 4xx and 503 answers, a refused connection) are
//! `"outcome":"failed"`.
//!
//! Trades go through the writer's per-symbol [`TradeOrders`]: live events and the repairs the
//! sidecar fetched from REST (its repair ring, drained beside the event rings) merge into one
//! sequence per symbol, each trade id once and in id order. While ids are missing, later events
//! of the symbol wait (at most `sidecar.hold_max_ms`); a trades event that partly overlaps
//! trades already delivered is re-encoded here, in the sink thread, with only its new trades
//! ([`super::trim::trades_from`]), so Kinesis never receives a trade id twice from the feed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::DisplayErrorContext;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;

use super::avro::AvroEncoder;
use super::breaker::Breaker;
use super::destination::Destination;
use super::lane::{Aggregate, Entry};
use super::send::{Answer, Failure, Route, call, request_entries};
use super::shards::{self, ListError, ShardMap, hash_key};
use super::spill::Spill;
use crate::backoff::jittered;
use crate::clock::{monotonic_ns, unix_ms};
use crate::config::{KinesisConfig, KlinesConfig, Layout, Payload};
use crate::feed::event::{FeedEvent, Repair, StreamChange};
use crate::idle::{Bell, TaskIdle};
use crate::kline::{Candle, SymbolKlines};
use crate::metrics::{Percentiles, latency_histogram};
use crate::sbe::spot_stream::Message;
use crate::sink::dlq::{DeadRecord, Outcome, Spool, Target};
use crate::sink::order::TradeOrders;
use crate::sink::{SinkError, SinkStats, SinkSummary, ring_depth};
use crate::stream::StreamKind;

/// Destination streams: trade, bestBidAsk, depth (+ depth20), heartbeat, klines.
const DESTINATIONS: usize = 5;
const HEARTBEAT: usize = 3;
/// Closed candles built from the delivered trades (`kinesis.stream_kline`).
const KLINES: usize = 4;

/// Whether a destination's records are events (counted as received, written, dead-lettered);
/// heartbeats and klines are the writer's own records.
fn counted(dest: usize) -> bool {
    dest < HEARTBEAT
}
/// A listing asked for by a misplaced record waits at least this long after the last one.
const RELIST_MIN: Duration = Duration::from_secs(1);
/// How often the start-up drain looks at the rings while the stream check runs (the main
/// loop idles as `kinesis.idle` says, woken by its bell).
const TICK: Duration = Duration::from_millis(1);
/// The SDK's per-request deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An upper bound of the bytes KPL aggregation adds around one user record of one key: magic
/// (4), MD5 (16), the key table entry and the record's field tags and lengths.
const AGGREGATE_FRAMING: usize = 4 + 16 + 2 * 10 + 2 * 256 + 32;
/// The request's copies of its records' data besides the records themselves, what a request in
/// flight is counted for beyond its records: the data moved or copied into the request, and the
/// JSON body the SDK makes of it (base64, 4/3 of the data, in a buffer grown by doubling).
const REQUEST_COPIES: usize = 3;
/// The smallest request a backlog is sent in, however little room is left in memory for
/// requests in flight (so that some request can always start).
const REQUEST_BYTES_MIN: usize = 256 << 10;

/// The bytes a request may carry when requests in flight already hold `in_flight`: up to
/// `kinesis.batch_bytes_max`, but all requests in flight together about half of
/// `kinesis.buffer_bytes_max` at most (the queued records have the rest), at least
/// [`REQUEST_BYTES_MIN`]. Without it, the lanes of a backlog each send 5 MiB at once, which
/// with the request's copies holds tens of MiB beyond the budget.
fn request_bytes_max(config: &KinesisConfig, in_flight: usize) -> usize {
    let room = (config.buffer_bytes_max / 2).saturating_sub(in_flight);
    (room / (1 + REQUEST_COPIES))
        .max(REQUEST_BYTES_MIN)
        .min(config.batch_bytes_max)
}

/// Kinesis' limit on one record (data + partition key).
const RECORD_MAX: usize = super::aggregate::RECORD_BYTES_MAX;

/// The destination of a stream kind: its own per type, or the first (`stream_market`) for
/// every kind with `layout = "single"` (one set of lanes, so a symbol's records of all kinds
/// stay in the order they arrived).
fn destination_of(layout: Layout, kind: StreamKind) -> usize {
    if layout == Layout::Single {
        return 0;
    }
    match kind {
        StreamKind::Trade => 0,
        StreamKind::BestBidAsk => 1,
        StreamKind::Depth | StreamKind::Depth20 => 2,
    }
}

/// Builds a client from the standard AWS chain (environment, profile, web identity, IMDS),
/// with `region` and `endpoint_url` overrides and the SDK's retries off.
pub async fn client_from_chain(config: &KinesisConfig) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(REQUEST_TIMEOUT)
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    Client::new(&loader.load().await)
}

/// Checks that each stream exists, creating missing ones (one shard) when `create` is set,
/// and waits until created ones are ACTIVE. A missing stream is an error naming it; an
/// unreachable endpoint is not (the writer starts, retries, and dead-letters what it cannot
/// deliver): it is logged and the check ends.
pub async fn check_streams<S: AsRef<str>>(
    client: &Client,
    names: &[S],
    create: bool,
) -> Result<(), SinkError> {
    let mut created = Vec::new();
    for name in names.iter().map(AsRef::as_ref) {
        let described = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await;
        let Err(e) = described else {
            continue;
        };
        let missing = e
            .as_service_error()
            .is_some_and(|s| s.is_resource_not_found_exception());
        if !missing {
            tracing::warn!(
                "kinesis: cannot check stream {name}: {}; starting anyway (records are retried, \
                 then dead-lettered)",
                DisplayErrorContext(&e)
            );
            return Ok(());
        }
        if !create {
            return Err(SinkError::Stream {
                stream: name.to_string(),
                reason: "does not exist (create it, or set kinesis.create_streams = true)".into(),
            });
        }
        client
            .create_stream()
            .stream_name(name)
            .shard_count(1)
            .send()
            .await
            .map_err(|e| SinkError::Stream {
                stream: name.to_string(),
                reason: format!("cannot create: {}", DisplayErrorContext(&e)),
            })?;
        created.push(name);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in created {
        loop {
            let status = client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .map_err(|e| SinkError::Stream {
                    stream: name.to_string(),
                    reason: format!("cannot describe: {}", DisplayErrorContext(&e)),
                })?;
            let active = status
                .stream_description_summary()
                .is_some_and(|d| d.stream_status().as_str() == "ACTIVE");
            if active {
                break;
            }
            if Instant::now() > deadline {
                return Err(SinkError::Stream {
                    stream: name.to_string(),
                    reason: "did not become ACTIVE in 30 s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// What the writer thread is given.
pub struct KinesisSink {
    /// Settings.
    pub config: KinesisConfig,
    /// A ready client; `None` builds one from the AWS chain.
    pub client: Option<Client>,
    /// One ring per reader.
    pub rings: Vec<rtrb::Consumer<FeedEvent>>,
    /// The sidecar's repair ring for this sink; `None` without a sidecar.
    pub repairs: Option<rtrb::Consumer<Repair>>,
    /// How long a symbol's trades wait for missing ids before them (zero: gaps are passed
    /// over at once, as without a sidecar nothing will bring them).
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
    /// Told once the streams are checked: `Err` stops the run before it starts.
    pub ready: std::sync::mpsc::Sender<Result<(), SinkError>>,
    /// This writer's bell: the readers, the sidecar and the stop ring it.
    pub bell: Bell,
    /// The klines built from the delivered trades (`[klines]`); off when no interval.
    pub klines: KlinesConfig,
}

/// Starts the writer thread.
pub fn spawn(
    sink: KinesisSink,
) -> std::io::Result<std::thread::JoinHandle<Result<SinkSummary, SinkError>>> {
    std::thread::Builder::new()
        .name("hotpath-kinesis".into())
        .spawn(move || {
            crate::cores::pin(sink.core);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SinkError::Runtime {
                    sink: "kinesis",
                    reason: e.to_string(),
                })?;
            runtime.block_on(run(sink))
        })
}

/// What the writer's requests bring back: a PutRecords outcome, or a destination's listing.
enum Done {
    /// A PutRecords outcome; the batch waits in its lane's `in_flight`.
    Sent(Route, Result<Answer, Failure>),
    Listed(usize, Result<ShardMap, ListError>),
}

type Pending = Pin<Box<dyn Future<Output = Done>>>;

struct Writer {
    config: KinesisConfig,
    client: Client,
    /// The destination streams, by [`destination_of`] (and [`HEARTBEAT`]).
    dests: [Destination; DESTINATIONS],
    stats: Arc<SinkStats>,
    breaker: Breaker,
    dead: Spool,
    latency: Histogram<u64>,
    rng: crate::rng::Rng,
    heartbeat_seq: u64,
    next_heartbeat: Option<Instant>,
    json: String,
    /// The `avro` payload's encoder (`None` for the other payloads) and its buffer (reused).
    avro: Option<AvroEncoder>,
    avro_out: Vec<u8>,
    /// Scratch space for re-encoding partly overlapping trades events.
    trimmed: Vec<u8>,
    /// Partition keys and their hash keys by the feed's symbol index.
    keys: Vec<Option<(Arc<str>, u128)>>,
    errors_logged: u32,
    /// Trade order per symbol (live and repaired trades, each id once, in order).
    orders: TradeOrders<FeedEvent>,
    /// Trade events the orders released, with the first id to deliver (reused).
    released: Vec<(FeedEvent, i64)>,
    /// Gaps given up on so far (the first [`crate::constants::GAPS_LOGGED_MAX`] are logged).
    gaps_logged: u32,
    /// Shard listings in flight.
    listings: usize,
    /// The klines settings.
    klines: KlinesConfig,
    /// Candles per symbol index.
    candles: Vec<SymbolKlines>,
    /// Candles closed by the event at hand (reused).
    closed: Vec<(usize, Candle)>,
    /// Memory the queued records hold ([`Writer::held_bytes`]), what `enqueue` checks against
    /// `kinesis.buffer_bytes_max`: summed over every lane once per [`Writer::drain`] and kept up
    /// by each enqueue after it, so a record costs O(1), not O(shards).
    held: usize,
    /// Records beyond `kinesis.buffer_bytes_max`, waiting on disk.
    spill: Spill,
}

async fn run(sink: KinesisSink) -> Result<SinkSummary, SinkError> {
    let KinesisSink {
        config,
        client,
        mut rings,
        mut repairs,
        hold_max,
        stats,
        stop,
        flush_timeout,
        core: _,
        ready,
        bell,
        klines,
    } = sink;
    let mut idler = TaskIdle::new(config.idle, bell);
    let client = match client {
        Some(c) => c,
        None => client_from_chain(&config).await,
    };
    let names = match config.layout {
        Layout::PerType => [
            config.stream_trade.clone(),
            config.stream_best_bid_ask.clone(),
            config.stream_depth.clone(),
            config.heartbeat_stream.clone(),
            config.stream_kline.clone(),
        ],
        // Klines keep their own stream: their records are Binance's kline event JSON.
        Layout::Single => [
            config.stream_market.clone(),
            config.stream_market.clone(),
            config.stream_market.clone(),
            config.heartbeat_stream.clone(),
            config.stream_kline.clone(),
        ],
    };
    let mut w = Writer::new(config, client, names, stats, hold_max);
    w.klines = klines;
    if let Err(e) = w.start_up(&mut rings, &mut repairs, ready).await {
        // A failed check ends the run before it starts: what was drained meanwhile goes to the
        // dead-letter file, for `hotpath dlq resend` once the streams exist.
        return Err(w.dead_letter_unchecked(&mut rings, &mut repairs, e));
    }
    w.next_heartbeat = w.config.heartbeat_interval.map(|_| Instant::now());
    let mut sending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut flush_deadline: Option<Instant> = None;
    loop {
        // Let the runtime run its other tasks (requests, connections, timers) now and then
        // even while every round finds work: without an await that pends they would starve.
        tokio::task::coop::consume_budget().await;
        let stopping = stop.load(Ordering::Acquire);
        let mut work = ring_depth(&rings) + repairs.as_ref().map_or(0, |r| r.slots());
        w.drain(&mut rings, &mut repairs);
        if stopping {
            // Readers and sidecar have stopped and their rings are drained: nothing missing
            // will come any more, so everything held is delivered.
            w.finish_orders();
        }
        let now = Instant::now();
        if stopping && flush_deadline.is_none() {
            flush_deadline = Some(now + flush_timeout);
            // The last heartbeat says the writer stopped cleanly.
            if w.next_heartbeat.is_some() {
                w.heartbeat("stopping");
            }
        }
        if !stopping && w.next_heartbeat.is_some_and(|t| now >= t) {
            w.heartbeat("running");
        }
        w.expire(now);
        if let Err(e) = w.dead.sync(now) {
            tracing::error!("kinesis: {e}");
        }
        work += w.start_requests(now, stopping, &mut sending);
        let held = w.orders.held() + w.dests.iter().map(Destination::len).sum::<usize>();
        w.stats
            .queue_depth
            .set((ring_depth(&rings) + held + w.spill.len()) as u64);
        // A listing still out does not hold the shutdown up.
        let idle = w.dests.iter().all(Destination::is_empty)
            && w.spill.is_empty()
            && sending.len() == w.listings;
        if stopping && idle && rings.iter().all(|r| r.is_empty()) {
            break;
        }
        if flush_deadline.is_some_and(|d| now >= d) {
            w.abandon("the shutdown flush deadline passed");
            break;
        }
        // Woken by the rings' producers, a request's reply or the stop; the linger, retries
        // and heartbeats wait for the park's timeout.
        let has_work = || {
            (!stopping && stop.load(Ordering::Acquire))
                || rings.iter().any(|r| !r.is_empty())
                || repairs.as_ref().is_some_and(|r| !r.is_empty())
        };
        match idler.step(work) {
            None => {
                while let Some(Some(done)) = futures_util::FutureExt::now_or_never(sending.next()) {
                    w.done(done);
                }
            }
            Some(step) if sending.is_empty() => idler.wait(step, has_work).await,
            Some(step) => {
                tokio::select! {
                    Some(done) = sending.next() => w.done(done),
                    () = idler.wait(step, has_work) => {}
                }
            }
        }
    }
    drop(sending);
    w.spill.finish();
    w.dead.finish().map_err(|reason| SinkError::DeadLetter {
        sink: "kinesis",
        reason,
    })?;
    let mut summary = w.stats.summary();
    summary.receipt_to_ack_ns = Percentiles::of(&w.latency);
    // `flushed` as every sink means it (`SinkSummary::flushed`): every record landed or
    // dead-lettered, none held, none dropped.
    summary.flushed = summary.received + summary.repaired
        == summary.written + summary.dead_lettered + summary.dropped + summary.duplicates
        && summary.dropped == 0
        && w.orders.held() == 0;
    summary.reconnects = w.breaker.opened();
    Ok(summary)
}

impl Writer {
    fn new(
        config: KinesisConfig,
        client: Client,
        names: [String; DESTINATIONS],
        stats: Arc<SinkStats>,
        hold_max: Duration,
    ) -> Writer {
        Writer {
            avro: (config.payload == Payload::Avro)
                .then(AvroEncoder::new)
                .and_then(Result::ok),
            next_heartbeat: None,
            breaker: Breaker::new(config.breaker_failures, config.breaker_open),
            dead: Spool::new(&config.dead_letter_path),
            spill: Spill::new(&config.spill_path(), config.spill_bytes_max),
            config,
            client,
            dests: names.map(Destination::new),
            listings: 0,
            stats,
            latency: latency_histogram(),
            rng: crate::rng::Rng::new(monotonic_ns() | 1),
            heartbeat_seq: 0,
            json: String::new(),
            avro_out: Vec::new(),
            trimmed: Vec::new(),
            keys: Vec::new(),
            errors_logged: 0,
            orders: TradeOrders::new(
                u64::try_from(hold_max.as_nanos()).unwrap_or(u64::MAX),
                crate::constants::TRADE_EVENTS_HELD_MAX,
            ),
            released: Vec::new(),
            gaps_logged: 0,
            klines: KlinesConfig::default(),
            candles: Vec::new(),
            closed: Vec::new(),
            held: 0,
        }
    }

    /// Checks (or creates) the streams and tells `ready` the outcome, then lists their shards
    /// so that each gets its lanes before the first request, draining the rings meanwhile. Only
    /// the check can fail; the listings run at once, so an unreachable endpoint delays the first
    /// request by one request timeout at most (a failed listing leaves one lane and is tried
    /// again later).
    async fn start_up(
        &mut self,
        rings: &mut [rtrb::Consumer<FeedEvent>],
        repairs: &mut Option<rtrb::Consumer<Repair>>,
        ready: std::sync::mpsc::Sender<Result<(), SinkError>>,
    ) -> Result<(), SinkError> {
        let heartbeats = self.config.heartbeat_interval.is_some();
        let single = self.config.layout == Layout::Single;
        let used: Vec<(usize, String)> = (0..DESTINATIONS)
            .filter(|&d| d != HEARTBEAT || heartbeats)
            .filter(|&d| d != KLINES || self.klines.enabled())
            .filter(|&d| !single || d == 0 || d == HEARTBEAT || d == KLINES)
            .map(|d| (d, self.dests[d].name.clone()))
            .collect();
        let mut wanted: Vec<String> = used.iter().map(|(_, name)| name.clone()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let client = self.client.clone();
        let check = check_streams(&client, &wanted, self.config.create_streams);
        let checked = self.drain_while(rings, repairs, check).await;
        let _ = ready.send(checked.clone());
        checked?;
        let listings = used.iter().map(|(_, stream)| shards::list(&client, stream));
        let maps = self.drain_while(rings, repairs, join_all(listings)).await;
        for ((d, _), map) in used.iter().zip(maps) {
            self.listed(*d, map, Instant::now());
        }
        Ok(())
    }

    /// Drains the rings into the lanes until `work` (the start-up stream check, the listings)
    /// is done, so that no reader's ring fills meanwhile; returns its result.
    async fn drain_while<T>(
        &mut self,
        rings: &mut [rtrb::Consumer<FeedEvent>],
        repairs: &mut Option<rtrb::Consumer<Repair>>,
        work: impl Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            self.drain(rings, repairs);
            let held = ring_depth(rings) + self.dests.iter().map(Destination::len).sum::<usize>();
            self.stats.queue_depth.set(held as u64);
            tokio::select! {
                done = &mut work => return done,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Takes everything waiting in the event rings and the repair ring, and gives up on gaps
    /// held too long.
    fn drain(
        &mut self,
        rings: &mut [rtrb::Consumer<FeedEvent>],
        repairs: &mut Option<rtrb::Consumer<Repair>>,
    ) {
        // Requests and expiry took records out since the last drain; only enqueues add to the
        // lanes from here to its end.
        self.held = self.held_bytes();
        self.refill();
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

    /// Takes records back from the overflow file, oldest first, while they fit in
    /// `kinesis.buffer_bytes_max` (before the rings' new records, which queue behind them).
    fn refill(&mut self) {
        if self.spill.is_empty() || self.held >= self.config.buffer_bytes_max {
            return;
        }
        if let Err(e) = self.spill.flush() {
            // What could not be written is found missing by the reads below, and counted.
            self.log_error(&format!("cannot write the overflow file: {e}"));
        }
        while self.held < self.config.buffer_bytes_max {
            match self.spill.pop() {
                Ok(Some((dest, _, _))) if dest >= DESTINATIONS => self.spill_corrupt(dest),
                Ok(Some((dest, hash, entry))) => {
                    self.held += entry.held_bytes();
                    self.dests[dest].push(hash, entry);
                }
                Ok(None) => break,
                Err((lost, why)) => {
                    self.stats.dropped.add(lost as u64);
                    self.log_error(&format!("{why}: {lost} records lost"));
                    break;
                }
            }
        }
    }

    /// A record read back from the overflow file naming no destination (the file was changed
    /// under the writer): counted dropped.
    fn spill_corrupt(&mut self, dest: usize) {
        self.stats.dropped.add(1);
        self.log_error(&format!(
            "the overflow file holds a record of destination {dest}: dropped"
        ));
    }

    /// Takes everything waiting in the event rings.
    fn drain_events(&mut self, rings: &mut [rtrb::Consumer<FeedEvent>]) {
        for ring in rings.iter_mut() {
            while let Ok(event) = ring.pop() {
                if event.is_announcement() {
                    // Trade ids lost at this ring before any of the symbol's reached it: the
                    // order starts at them and waits for their repair.
                    self.orders
                        .announce(event.symbol, event.first_id, event.last_id);
                    continue;
                }
                self.stats.received.add(1);
                self.route(event);
            }
        }
    }

    /// A live event: trades through their symbol's order, the rest straight on.
    fn route(&mut self, event: FeedEvent) {
        if event.kind != StreamKind::Trade {
            return self.accept(event, i64::MIN);
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

    /// What the sidecar sent: fetched trades (ordered like live ones) or ids it gave up on.
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
            // A removed (or halted) symbol's trade order is forgotten: added again, it starts
            // afresh.
            Repair::Stream { symbol, change, .. } if change.is_removal() => {
                let mut released = std::mem::take(&mut self.released);
                self.orders.forget(symbol, &mut released);
                self.deliver(released);
                self.stats.tally.forget(symbol);
                if let Some(candles) = self.candles.get_mut(usize::from(symbol)) {
                    candles.forget();
                }
            }
            Repair::Stream { symbol, change, .. } => {
                if let Some(candles) = self.candles.get_mut(usize::from(symbol)) {
                    match change {
                        StreamChange::Disconnected => candles.connection_lost(),
                        StreamChange::Reconnected => candles.reconnected(),
                        _ => {}
                    }
                }
            }
            // Books are the Redis writer's.
            Repair::Book(_) | Repair::BookUnavailable { .. } => {}
        }
    }

    /// Accepts the events the orders released, each from its first id to deliver; hands the
    /// (emptied) buffer back for reuse.
    fn deliver(&mut self, mut released: Vec<(FeedEvent, i64)>) {
        for (event, from) in released.drain(..) {
            self.stats.tally.add(event.symbol, &event.frame, from);
            self.accept(event, from);
        }
        self.released = released;
    }

    /// At shutdown: every held trade event is delivered, the ids still missing counted.
    fn finish_orders(&mut self) {
        let mut released = std::mem::take(&mut self.released);
        self.orders.finish(&mut released);
        self.deliver(released);
        self.note_orders();
    }

    /// Copies the orders' counts to the live counters and logs each gap given up on, once.
    fn note_orders(&mut self) {
        crate::sink::order::note(
            "kinesis",
            &mut self.orders,
            &self.stats,
            &mut self.gaps_logged,
        );
    }

    /// Enqueues `event`; a trades event only from trade id `from` on (earlier ones were
    /// delivered already).
    fn accept(&mut self, event: FeedEvent, from: i64) {
        // The partition key, decoded once per symbol and shared by its records.
        let index = usize::from(event.symbol);
        if self.keys.len() <= index {
            self.keys.resize(index + 1, None);
        }
        if self.keys[index].is_none() {
            self.keys[index] = symbol_of(&event.frame).map(|key| {
                let hash = hash_key(&key);
                (key, hash)
            });
        }
        let Some((key, hash)) = self.keys[index].clone() else {
            self.stats.dropped.add(1);
            return;
        };
        if self.klines.enabled() {
            self.candles_of(&event, from, &key, hash);
        }
        // A trades event partly overlapping trades already delivered: only the new ones go.
        let frame = if event.kind == StreamKind::Trade && from > event.first_id {
            match super::trim::trades_from(&event.frame, from, &mut self.trimmed) {
                Ok(()) => Bytes::copy_from_slice(&self.trimmed),
                Err(e) => {
                    self.stats.dropped.add(1);
                    self.log_error(&format!(
                        "cannot re-encode an overlapping trades event: {e}"
                    ));
                    return;
                }
            }
        } else {
            event.frame
        };
        let data = match self.payload(frame) {
            Ok(data) => data,
            Err(e) => {
                self.stats.dropped.add(1);
                self.log_error(&e);
                return;
            }
        };
        let entry = Entry {
            key,
            data,
            recv_time_ns: event.recv_time_ns,
            enqueued: Instant::now(),
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        };
        self.enqueue(destination_of(self.config.layout, event.kind), hash, entry);
    }

    /// The record data of an event's frame, as `kinesis.payload` says.
    fn payload(&mut self, frame: Bytes) -> Result<Bytes, String> {
        match self.config.payload {
            Payload::Sbe => Ok(frame),
            Payload::Json => {
                self.json.clear();
                crate::decode::frame_to_json(&frame, &mut self.json);
                Ok(Bytes::copy_from_slice(self.json.as_bytes()))
            }
            Payload::Avro => {
                self.avro_out.clear();
                let Some(avro) = &self.avro else {
                    return Err("cannot write Avro: the schema did not load".into());
                };
                avro.encode(&frame, &mut self.avro_out)
                    .map_err(|e| format!("cannot write an event as Avro: {e}"))?;
                Ok(Bytes::copy_from_slice(&self.avro_out))
            }
        }
    }

    /// Feeds the symbol's candles with a delivered event (its trades, its exchange time) and
    /// queues each candle that closes as a kline stream event (JSON, Binance's form, `x`
    /// true, with `missing_trades` beside it: [`Candle::record_json`]) to the klines stream.
    fn candles_of(&mut self, event: &FeedEvent, from: i64, key: &Arc<str>, hash: u128) {
        let index = usize::from(event.symbol);
        if self.candles.len() <= index {
            self.candles.resize_with(index + 1, SymbolKlines::default);
        }
        let candles = &mut self.candles[index];
        if candles.series.is_empty() {
            *candles = SymbolKlines::new(&self.klines.intervals);
        }
        let mut closed = std::mem::take(&mut self.closed);
        if event.kind == StreamKind::Trade
            && let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(&event.frame)
        {
            let late = candles.late();
            candles.on_trades(&m, from, &mut closed);
            self.stats.klines_late.add(candles.late() - late);
        }
        let now_ms = event.event_time_us.div_euclid(1000);
        if let Some(exchange_ms) = event.exchange_time_ms() {
            let held = self.orders.holds(event.symbol);
            candles.advance(exchange_ms, self.klines.close_after_ms, held, &mut closed);
        }
        for (i, candle) in closed.drain(..) {
            let interval = self.klines.intervals.get(i).map_or("", |i| i.name);
            let data = candle.record_json(key, interval, now_ms);
            let entry = Entry {
                key: key.clone(),
                data: Bytes::from(data),
                recv_time_ns: event.recv_time_ns,
                enqueued: Instant::now(),
                first_attempt_ms: 0,
                attempts: 0,
                error: None,
                maybe_landed: false,
            };
            self.enqueue(KLINES, hash, entry);
        }
        self.closed = closed;
    }

    fn enqueue(&mut self, dest: usize, hash: u128, entry: Entry) {
        // An aggregate adds its framing (magic, table, field tags, MD5) around a record.
        let framing = if self.config.aggregate != Aggregate::Off {
            AGGREGATE_FRAMING
        } else {
            0
        };
        if entry.cost() + framing > RECORD_MAX {
            self.dead_letter(dest, entry, "record larger than Kinesis' 1 MiB limit");
        } else if !self.spill.is_empty()
            || self.held + entry.held_bytes() > self.config.buffer_bytes_max
        {
            // Behind the records already in the overflow, or beyond the memory budget.
            if let Err(why) = self.spill.push(dest, hash, &entry) {
                self.dead_letter(dest, entry, &why);
            }
        } else {
            self.held += entry.held_bytes();
            self.dests[dest].push(hash, entry);
        }
    }

    /// Memory the records queued in the lanes and in flight hold.
    fn held_bytes(&self) -> usize {
        self.dests.iter().map(Destination::held_bytes).sum()
    }

    fn heartbeat(&mut self, state: &str) {
        self.heartbeat_seq += 1;
        let now = Instant::now();
        self.next_heartbeat = self.config.heartbeat_interval.map(|i| now + i);
        let body = serde_json::json!({
            "source": "hotpath",
            "state": state,
            "host": hostname(),
            "pid": std::process::id(),
            "seq": self.heartbeat_seq,
            "time_ms": unix_ms(),
            "received": self.stats.received.get(),
            "written": self.stats.written.get(),
            "dead_lettered": self.stats.dead_lettered.get(),
        });
        let key: Arc<str> = "hotpath".into();
        let hash = hash_key(&key);
        let entry = Entry {
            key,
            data: Bytes::from(body.to_string()),
            recv_time_ns: monotonic_ns(),
            enqueued: now,
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        };
        // Heartbeats are not events: they do not count as received or written.
        self.dests[HEARTBEAT].push(hash, entry);
    }

    fn expire(&mut self, now: Instant) {
        for dest in 0..DESTINATIONS {
            for lane in 0..self.dests[dest].lanes.len() {
                let expired = self.dests[dest].lanes[lane]
                    .lane
                    .expire(now, self.config.deliver_within);
                for entry in expired {
                    let why = entry
                        .error
                        .clone()
                        .unwrap_or_else(|| "not delivered within kinesis.deliver_within_ms".into());
                    self.dead_letter(dest, entry, &why);
                }
            }
        }
    }

    /// Writes `entry` to the dead-letter file, `outcome` `unknown` when an attempt of it got no
    /// answer, `failed` otherwise; counted as dead-lettered (heartbeats are not counted).
    fn dead_letter(&mut self, dest: usize, entry: Entry, why: &str) {
        let counted = counted(dest);
        let record = DeadRecord {
            target: Target::Kinesis {
                stream: self.dests[dest].name.clone(),
                partition_key: entry.key.to_string(),
                data: entry.data.to_vec(),
            },
            attempts: entry.attempts,
            first_attempt_ms: entry.first_attempt_ms,
            dead_at_ms: unix_ms(),
            outcome: if entry.maybe_landed {
                Outcome::Unknown
            } else {
                Outcome::Failed
            },
            error: why.to_string(),
        };
        match self.dead.append(&record) {
            Ok(()) => {
                if counted {
                    self.stats.dead_lettered.add(1);
                }
            }
            // A record that could be neither delivered nor dead-lettered: counted as dropped.
            Err(e) => {
                if counted {
                    self.stats.dropped.add(1);
                }
                let path = self.dead.path().display().to_string();
                self.log_error(&format!("{e} ({path})"));
            }
        }
    }

    fn log_error(&mut self, message: &str) {
        if self.errors_logged < 10 {
            self.errors_logged += 1;
            tracing::error!("kinesis: {message}");
        }
    }

    /// Everything still held (queued or in flight) goes to the dead-letter file; the in-flight
    /// requests got no answer, so their records may have landed (`outcome` `unknown`).
    fn abandon(&mut self, why: &str) {
        for dest in 0..DESTINATIONS {
            let mut entries = Vec::new();
            for lane in &mut self.dests[dest].lanes {
                lane.in_flight_bytes = 0;
                for outgoing in std::mem::take(&mut lane.in_flight) {
                    for mut entry in outgoing.entries {
                        entry.maybe_landed = true;
                        entries.push(entry);
                    }
                }
                entries.extend(lane.lane.take_all());
            }
            for entry in entries {
                self.dead_letter(dest, entry, why);
            }
        }
        // The overflow's records are newer than every queued one.
        let _ = self.spill.flush();
        loop {
            match self.spill.pop() {
                Ok(Some((dest, _, _))) if dest >= DESTINATIONS => self.spill_corrupt(dest),
                Ok(Some((dest, _, entry))) => self.dead_letter(dest, entry, why),
                Ok(None) => break,
                Err((lost, e)) => {
                    self.stats.dropped.add(lost as u64);
                    self.log_error(&format!("{e}: {lost} records lost"));
                    break;
                }
            }
        }
    }

    /// After a failed start-up stream check: everything taken from the rings (and what is
    /// still in them) goes to the dead-letter file as `failed` (nothing was sent); returns the
    /// check's error, saying how many records were kept.
    fn dead_letter_unchecked(
        &mut self,
        rings: &mut [rtrb::Consumer<FeedEvent>],
        repairs: &mut Option<rtrb::Consumer<Repair>>,
        error: SinkError,
    ) -> SinkError {
        self.drain(rings, repairs);
        self.finish_orders();
        let why = format!("not sent: the start-up stream check failed: {error}");
        self.abandon(&why);
        self.spill.finish();
        let kept = self.stats.dead_lettered.get();
        let dropped = self.stats.dropped.get();
        if let Err(reason) = self.dead.finish() {
            return SinkError::DeadLetter {
                sink: "kinesis",
                reason: format!("{reason} (after {error})"),
            };
        }
        if kept + dropped == 0 {
            return error;
        }
        let path = self.dead.path().display().to_string();
        tracing::error!(
            "kinesis: {error}; {kept} records taken meanwhile were dead-lettered to {path} \
             ({dropped} could not be)"
        );
        error
    }

    /// Starts the listings that are due and a request on every lane that is ready; returns
    /// how many it started.
    fn start_requests(
        &mut self,
        now: Instant,
        stopping: bool,
        sending: &mut FuturesUnordered<Pending>,
    ) -> usize {
        let mut started = 0;
        for d in 0..DESTINATIONS {
            let due = self.dests[d].relist_at.is_some_and(|t| now >= t);
            if due && !stopping && !self.dests[d].listing {
                self.dests[d].relist_at = None;
                self.dests[d].listing = true;
                self.listings += 1;
                let (client, stream) = (self.client.clone(), self.dests[d].name.clone());
                sending.push(Box::pin(async move {
                    Done::Listed(d, shards::list(&client, &stream).await)
                }));
                started += 1;
            }
            for lane in 0..self.dests[d].lanes.len() {
                let route = Route {
                    destination: d,
                    lane,
                };
                if let Some(fut) = self.next_request(route, now, stopping) {
                    sending.push(fut);
                    started += 1;
                }
            }
        }
        started
    }

    fn done(&mut self, done: Done) {
        match done {
            Done::Sent(route, result) => self.settle(route, result),
            Done::Listed(d, map) => {
                self.listings -= 1;
                self.listed(d, map, Instant::now());
            }
        }
    }

    /// A listing of destination `d` came back: a new map is offered to it (adopted once its
    /// requests in flight are answered); the next listing is scheduled.
    fn listed(&mut self, d: usize, map: Result<ShardMap, ListError>, now: Instant) {
        let dest = &mut self.dests[d];
        dest.listed_at = Some(now);
        dest.listing = false;
        match map {
            Ok(map) => {
                let shards = map.len();
                if dest.offer(map) {
                    tracing::info!(stream = %dest.name, shards, "kinesis: one lane per open shard");
                }
                dest.relist_at = self.config.shard_refresh.map(|r| now + r);
            }
            Err(e) => {
                // Requests keep flowing on the lanes there are (Kinesis places records by their
                // hash key whatever the lanes); the listing is tried again.
                dest.relist_at = Some(now + self.config.retry_max);
                let message = format!("{e}; keeping {} lane(s)", dest.lanes.len());
                self.log_error(&message);
            }
        }
    }

    fn next_request(&mut self, route: Route, now: Instant, flush: bool) -> Option<Pending> {
        let in_flight: usize = self
            .dests
            .iter()
            .flat_map(|d| &d.lanes)
            .map(|l| l.in_flight_bytes)
            .sum();
        let c = &self.config;
        let dest = &mut self.dests[route.destination];
        if dest.pending() {
            // A new shard map waits for the stream's requests in flight: none starts.
            return None;
        }
        let lane = &mut dest.lanes[route.lane].lane;
        if !lane.ready(now, c.linger, c.batch_records_max, c.batch_bytes_max, flush) {
            return None;
        }
        if !self.breaker.allow(now) {
            return None;
        }
        let heartbeat = route.destination == HEARTBEAT;
        let aggregate = if heartbeat {
            Aggregate::Off
        } else {
            c.aggregate
        };
        let bytes_max = request_bytes_max(c, in_flight);
        let lane = &mut self.dests[route.destination].lanes[route.lane].lane;
        let mut batch = lane.take(aggregate, now, c.batch_records_max, bytes_max);
        if batch.is_empty() {
            self.breaker.release();
            return None;
        }
        let ms = unix_ms();
        for entry in batch.iter_mut().flat_map(|o| o.entries.iter_mut()) {
            if entry.attempts == 0 {
                entry.first_attempt_ms = ms;
            } else if !heartbeat {
                self.stats.retried.add(1);
            }
            entry.attempts += 1;
        }
        // The request owns the records' data; the batch (the user records) waits in the lane
        // for the answer, not copied (a backlog's requests are several MiB each).
        let body: usize = batch.iter().map(|o| o.key.len() + o.data.len()).sum();
        let records: usize = batch
            .iter()
            .flat_map(|o| &o.entries)
            .map(Entry::held_bytes)
            .sum();
        let entries = request_entries(&mut batch);
        let dest = &mut self.dests[route.destination];
        dest.lanes[route.lane].in_flight_bytes = records + body * REQUEST_COPIES;
        dest.lanes[route.lane].in_flight = batch;
        dest.lanes[route.lane].lane.in_flight = true;
        self.stats.requests.add(1);
        let client = self.client.clone();
        let (stream, shard) = (
            dest.name.clone(),
            Arc::from(dest.map().shard_id(route.lane)),
        );
        Some(Box::pin(async move {
            let result = match entries {
                Ok(entries) => call(client, stream, shard, entries).await,
                Err(failure) => Err(failure),
            };
            Done::Sent(route, result)
        }))
    }

    /// Holds `lane` back for a full-jitter delay growing with its failures in a row.
    fn back_off(&mut self, route: Route, now: Instant) {
        let lane = &mut self.dests[route.destination].lanes[route.lane].lane;
        let attempt = lane.failures;
        lane.failures = attempt.saturating_add(1);
        let (initial, max) = (self.config.retry_initial, self.config.retry_max);
        lane.not_before = Some(now + jittered(&mut self.rng, initial, max, attempt));
    }

    fn settle(&mut self, route: Route, result: Result<Answer, Failure>) {
        let now = Instant::now();
        let shard_lane = &mut self.dests[route.destination].lanes[route.lane];
        shard_lane.lane.in_flight = false;
        shard_lane.in_flight_bytes = 0;
        let batch = std::mem::take(&mut shard_lane.in_flight);
        match result {
            Ok(answer) => self.settle_answer(route, batch, answer, now),
            Err(failure) => {
                self.stats.failed_requests.add(1);
                self.breaker.failure(now);
                let mut batch = batch;
                for e in batch.iter_mut().flat_map(|o| o.entries.iter_mut()) {
                    e.error = Some(failure.message.clone());
                    e.maybe_landed |= failure.unanswered;
                }
                let dest = &mut self.dests[route.destination];
                dest.lanes[route.lane].lane.requeue_all(batch);
                tracing::debug!(stream = %dest.name, "kinesis: PutRecords failed: {}", failure.message);
                self.back_off(route, now);
            }
        }
        // A new shard map may have waited for this request.
        self.dests[route.destination].adopt_pending();
    }

    /// An answered request: delivered entries are counted, failed ones go back to the front
    /// of their lane; records stored on another shard than the lane's ask for a listing.
    fn settle_answer(
        &mut self,
        route: Route,
        mut batch: Vec<super::lane::Outgoing>,
        answer: Answer,
        now: Instant,
    ) {
        self.breaker.success();
        let Answer { failed, misplaced } = answer;
        let mut done = Vec::new();
        let any_failed = failed.iter().any(|&f| f);
        let error: Option<Arc<str>> =
            any_failed.then(|| "PutRecords entries failed (throttled)".into());
        if let Some(error) = &error {
            for (o, _) in batch.iter_mut().zip(&failed).filter(|(_, f)| **f) {
                for e in o.entries.iter_mut() {
                    e.error = Some(error.clone());
                }
            }
        }
        let dest = &mut self.dests[route.destination];
        let verdict = dest.lanes[route.lane]
            .lane
            .settle(batch, &failed, &mut done);
        if verdict.overtaken > 0 {
            tracing::warn!(
                stream = %dest.name,
                "kinesis: a failed record was overtaken by a later one of its key \
                 (enable kinesis.aggregate for strict order under partial failures)"
            );
        }
        if misplaced > 0 {
            // The stream was resharded: list its shards again, soon but not in a loop.
            dest.relist_soon(now, RELIST_MIN);
        }
        if counted(route.destination) {
            self.count_delivered(&done, verdict.delivered);
        }
        if any_failed {
            self.back_off(route, now);
        } else {
            let lane = &mut self.dests[route.destination].lanes[route.lane].lane;
            lane.failures = 0;
            lane.not_before = None;
        }
    }

    /// Counts delivered records and their receipt-to-ack latencies.
    fn count_delivered(&mut self, done: &[Entry], delivered: usize) {
        let acked = monotonic_ns();
        if let Some(newest) = done.iter().map(|e| e.recv_time_ns).max() {
            self.stats.ack_latency_ns.set(acked.saturating_sub(newest));
        }
        for entry in done {
            let _ = self.latency.record(
                acked
                    .saturating_sub(entry.recv_time_ns)
                    .clamp(1, self.latency.high()),
            );
        }
        self.stats
            .ack_latency
            .record_all(done.iter().map(|e| acked.saturating_sub(e.recv_time_ns)));
        self.stats.written.add(delivered as u64);
    }
}

/// The symbol of an SBE frame, the partition key.
fn symbol_of(frame: &[u8]) -> Option<Arc<str>> {
    let message = crate::sbe::decode(frame).ok()?;
    std::str::from_utf8(crate::sbe::symbol(&message))
        .ok()
        .map(Arc::from)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbe::spot_stream::{BoolEnum, Message, TradesStreamEventEncoder};
    use crate::sim::encode::encode_sbe;
    use crate::sim::exchange::{Event, Payload, StreamKey};
    use crate::sim::market::Trade as SimTrade;

    fn writer() -> Writer {
        let config = KinesisConfig {
            dead_letter_path: std::env::temp_dir().join("hotpath-kinesis-writer-unused.jsonl"),
            ..KinesisConfig::default()
        };
        let client = Client::from_conf(
            aws_sdk_kinesis::Config::builder()
                .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
                .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
                .build(),
        );
        let names = Default::default();
        let stats = Arc::new(SinkStats::default());
        Writer::new(config, client, names, stats, Duration::from_secs(1))
    }

    fn trades(ids: std::ops::RangeInclusive<i64>) -> FeedEvent {
        let mut out = vec![0u8; 1024];
        let length = {
            let mut e = TradesStreamEventEncoder::wrap(&mut out).expect("room");
            e.event_time(1_763_700_000_000_000)
                .transact_time(1_763_700_000_000_000)
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
            event_time_us: 1_763_700_000_000_000,
            frame: Bytes::from(out),
        }
    }

    /// The trade ids of each record queued in the trade lane, in order.
    fn queued(w: &mut Writer) -> Vec<Vec<i64>> {
        w.dests[0].lanes[0]
            .lane
            .take_plain(usize::MAX, usize::MAX)
            .iter()
            .map(|o| match crate::sbe::decode(&o.data) {
                Ok(Message::TradesStreamEvent(m)) => m.trades().map(|t| t.id()).collect(),
                _ => panic!("a trades frame"),
            })
            .collect()
    }

    /// Live trades with a gap wait for the sidecar's repair; the repair and the held event
    /// are trimmed to what was not delivered, so the stream gets each id once, in order.
    #[test]
    fn a_repair_fills_the_gap_and_overlaps_are_trimmed() {
        let mut w = writer();
        w.stats.received.add(2);
        w.route(trades(1..=2));
        w.route(trades(5..=7));
        assert_eq!(queued(&mut w), vec![vec![1, 2]], "5..=7 waits for 3..=4");
        w.repair(Repair::Event(trades(2..=5)));
        assert_eq!(queued(&mut w), vec![vec![3, 4, 5], vec![6, 7]]);
        // A late live copy of repaired trades is dropped.
        w.route(trades(3..=4));
        assert!(queued(&mut w).is_empty());
        w.note_orders();
        assert_eq!(w.stats.duplicates.get(), 1);
        assert_eq!(w.stats.repaired.get(), 1);
    }

    /// `kinesis.buffer_bytes_max` bounds the queued records' memory: without an overflow
    /// (`kinesis.spill_bytes_max = 0`) a record past it is dead-lettered, and the room a
    /// request frees counts again from the next drain.
    #[test]
    fn the_buffer_bound_dead_letters_past_it_and_frees_room_as_requests_leave() {
        let dir = std::env::temp_dir().join(format!("hotpath-kinesis-held-{}", std::process::id()));
        let mut w = writer();
        w.config.dead_letter_path = dir.join("dead.jsonl");
        w.dead = Spool::new(&w.config.dead_letter_path);
        w.spill = Spill::new(&dir.join("spill"), 0);
        w.route(trades(1..=1));
        let one = w.held_bytes();
        assert!(one > 0);
        w.config.buffer_bytes_max = 2 * one;
        w.route(trades(2..=2));
        w.route(trades(3..=3));
        assert_eq!(w.dests[0].len(), 2, "the third is past the bound");
        assert_eq!(w.stats.dead_lettered.get(), 1);
        assert_eq!(w.held, w.held_bytes());
        // A request takes the queued records: the next drain sees the room.
        assert_eq!(queued(&mut w).len(), 2);
        let (_, consumer) = rtrb::RingBuffer::<FeedEvent>::new(4);
        w.drain(&mut [consumer], &mut None);
        assert_eq!(w.held, 0);
        w.route(trades(4..=4));
        w.route(trades(5..=5));
        assert_eq!(w.dests[0].len(), 2);
        assert_eq!(w.stats.dead_lettered.get(), 1);
        let _ = w.dead.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer whose memory holds two one-trade records, with its dead-letter and overflow
    /// files in `dir` (the overflow bounded by `spill_max` bytes).
    fn tight_writer(dir: &std::path::Path, spill_max: u64) -> Writer {
        let mut w = writer();
        w.config.dead_letter_path = dir.join("dead.jsonl");
        w.dead = Spool::new(&w.config.dead_letter_path);
        w.spill = Spill::new(&dir.join("spill"), spill_max);
        w.route(trades(1..=1));
        w.config.buffer_bytes_max = 2 * w.held_bytes();
        w
    }

    /// Past `kinesis.buffer_bytes_max` records wait in the overflow file, not memory, and every
    /// later one waits behind them; as requests take the queued ones, drains bring them back:
    /// every record leaves once, in order, none dead-lettered or dropped, memory never past the
    /// bound, and the file is emptied.
    #[test]
    fn past_the_buffer_bound_records_wait_on_disk_and_leave_in_order() {
        let dir =
            std::env::temp_dir().join(format!("hotpath-kinesis-spill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut w = tight_writer(&dir, 1 << 20);
        for id in 2..=10 {
            w.route(trades(id..=id));
        }
        assert_eq!(w.dests[0].len(), 2);
        assert_eq!(w.spill.len(), 8, "past the bound, on disk");
        assert!(w.spill.bytes() > 0);
        let (_, consumer) = rtrb::RingBuffer::<FeedEvent>::new(4);
        let mut rings = [consumer];
        let mut sent = Vec::new();
        let mut next = 11;
        while !w.dests[0].is_empty() {
            sent.extend(queued(&mut w));
            w.drain(&mut rings, &mut None);
            assert!(w.held <= w.config.buffer_bytes_max);
            if next <= 14 {
                // New records queue behind the overflow's.
                w.route(trades(next..=next));
                next += 1;
            }
        }
        let ids: Vec<i64> = sent.into_iter().flatten().collect();
        assert_eq!(ids, (1..=14).collect::<Vec<_>>());
        assert_eq!(w.stats.dead_lettered.get(), 0);
        assert_eq!(w.stats.dropped.get(), 0);
        assert!(w.spill.is_empty());
        assert_eq!(w.spill.bytes(), 0);
        assert_eq!(
            std::fs::metadata(dir.join("spill")).map(|m| m.len()).ok(),
            Some(0)
        );
        w.spill.finish();
        assert!(!dir.join("spill").exists(), "removed at the end");
        let _ = w.dead.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Past both bounds a record goes to the dead-letter file, counted, with the reason; at
    /// shutdown (`abandon`) the overflow's records are dead-lettered too, after the queued
    /// ones: nothing taken is dropped.
    #[test]
    fn past_the_overflow_bound_and_at_abandon_records_are_dead_lettered() {
        let dir =
            std::env::temp_dir().join(format!("hotpath-kinesis-spillmax-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut w = tight_writer(&dir, 200);
        for id in 2..=6 {
            w.route(trades(id..=id));
        }
        let spilled = w.spill.len();
        assert!((1..4).contains(&spilled), "200 bytes hold a few: {spilled}");
        assert_eq!(w.stats.dead_lettered.get(), 4 - spilled as u64);
        w.abandon("stopping");
        assert_eq!(w.stats.dead_lettered.get(), 6);
        assert_eq!(w.stats.dropped.get(), 0);
        assert!(w.spill.is_empty());
        w.dead.finish().expect("dead letters written");
        let dead = crate::sink::dlq::read(&dir.join("dead.jsonl")).expect("readable");
        let reasons: Vec<&str> = dead.records.iter().map(|r| r.error.as_str()).collect();
        assert!(
            reasons.contains(&"kinesis.buffer_bytes_max and kinesis.spill_bytes_max reached"),
            "{reasons:?}"
        );
        assert_eq!(
            reasons.iter().filter(|r| **r == "stopping").count(),
            2 + spilled
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An overflow file changed under the writer (a record naming a destination there is
    /// not) does not panic it: the record is counted dropped, the others still leave.
    #[test]
    fn a_corrupt_overflow_record_is_counted_not_a_panic() {
        use std::io::{Seek, Write};
        let dir =
            std::env::temp_dir().join(format!("hotpath-kinesis-spillbent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut w = tight_writer(&dir, 1 << 20);
        for id in 2..=4 {
            w.route(trades(id..=id));
        }
        assert_eq!(w.spill.len(), 2);
        w.spill.flush().expect("flushed");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("spill"))
            .expect("the overflow file");
        file.seek(std::io::SeekFrom::Start(0)).expect("seek");
        file.write_all(&[200]).expect("a destination byte changed");
        let _ = queued(&mut w);
        let (_, consumer) = rtrb::RingBuffer::<FeedEvent>::new(4);
        w.drain(&mut [consumer], &mut None);
        assert_eq!(w.stats.dropped.get(), 1);
        assert_eq!(queued(&mut w), vec![vec![4]]);
        let _ = w.dead.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An overflow file that cannot be created: the record is dead-lettered, saying why.
    #[test]
    fn an_overflow_that_cannot_be_written_dead_letters() {
        let dir =
            std::env::temp_dir().join(format!("hotpath-kinesis-spillbad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut w = tight_writer(&dir, 1 << 20);
        w.spill = Spill::new(&dir.join("missing").join("spill"), 1 << 20);
        w.route(trades(2..=2));
        w.route(trades(3..=3));
        assert_eq!(w.stats.dead_lettered.get(), 1);
        assert!(w.spill.is_empty());
        w.dead.finish().expect("dead letters written");
        let dead = crate::sink::dlq::read(&dir.join("dead.jsonl")).expect("readable");
        assert!(
            dead.records[0].error.starts_with("cannot open"),
            "{:?}",
            dead.records[0].error
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Requests in flight share about half the memory budget: the first of a backlog gets a
    /// quarter of that half's room (its copies count three times more), later ones what is left,
    /// never less than [`REQUEST_BYTES_MIN`] nor more than `kinesis.batch_bytes_max`.
    #[test]
    fn requests_in_flight_share_half_the_budget() {
        let mut c = KinesisConfig {
            buffer_bytes_max: 8 << 20,
            ..KinesisConfig::default()
        };
        assert_eq!(request_bytes_max(&c, 0), 1 << 20);
        assert_eq!(request_bytes_max(&c, 2 << 20), 512 << 10);
        assert_eq!(request_bytes_max(&c, 8 << 20), REQUEST_BYTES_MIN);
        c.buffer_bytes_max = 256 << 20;
        assert_eq!(request_bytes_max(&c, 0), c.batch_bytes_max);
    }

    /// A record larger than a request's share of the budget (here 256 KiB, the least, with
    /// the other requests in flight holding the budget) still leaves, aggregated as a backlog
    /// sends: alone in its request, not left waiting for room that never comes.
    #[test]
    fn a_record_larger_than_the_request_share_still_leaves_aggregated() {
        let mut w = writer();
        w.config.aggregate = Aggregate::On;
        w.config.linger = Duration::ZERO;
        w.dests[1].lanes[0].in_flight_bytes = w.config.buffer_bytes_max;
        assert_eq!(
            request_bytes_max(&w.config, w.held_bytes()),
            REQUEST_BYTES_MIN
        );
        let key: Arc<str> = "BTCUSDT".into();
        let big = Entry {
            key: key.clone(),
            data: Bytes::from(vec![7u8; 600 << 10]),
            recv_time_ns: 1,
            enqueued: Instant::now(),
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        };
        w.enqueue(0, hash_key(&key), big);
        assert_eq!(w.dests[0].len(), 1);
        let route = Route {
            destination: 0,
            lane: 0,
        };
        let request = w.next_request(route, Instant::now(), false);
        assert!(request.is_some(), "the record leaves");
        assert!(w.dests[0].is_empty());
    }

    /// A request in flight counts in the budget with its copies, until its answer.
    #[test]
    fn a_request_in_flight_counts_until_answered() {
        let mut w = writer();
        w.route(trades(1..=1));
        let queued = w.held_bytes();
        let route = Route {
            destination: 0,
            lane: 0,
        };
        let request = w.next_request(route, Instant::now(), true);
        assert!(request.is_some());
        assert!(w.dests[0].is_empty());
        let in_flight = w.held_bytes();
        assert!(in_flight > queued, "{in_flight} > {queued}");
        w.settle(
            route,
            Ok(Answer {
                failed: vec![false],
                misplaced: 0,
            }),
        );
        assert_eq!(w.held_bytes(), 0);
        assert_eq!(w.stats.written.get(), 1);
    }

    /// A simulator event of symbol 0 as the reader hands it on.
    fn sim_event(kind: StreamKind, time_us: i64, payload: Payload) -> FeedEvent {
        let ids = match &payload {
            Payload::Trades { trades, .. } => (trades[0].id, trades[trades.len() - 1].id),
            _ => (0, 0),
        };
        let event = Event {
            key: StreamKey { symbol: 0, kind },
            event_time_us: time_us,
            payload,
        };
        let mut frame = Vec::new();
        encode_sbe("BTCUSDT", &event, &mut frame);
        FeedEvent {
            recv_time_ns: 1,
            symbol: 0,
            kind,
            first_id: ids.0,
            last_id: ids.1,
            first_new_id: ids.0,
            event_time_us: time_us,
            frame: Bytes::from(frame),
        }
    }

    fn trades_at(ids: std::ops::RangeInclusive<i64>, time_us: i64) -> FeedEvent {
        let trades = ids
            .map(|id| SimTrade {
                id,
                price: 6_976_988,
                qty: 1,
                buyer_maker: true,
                time_us,
            })
            .collect();
        let payload = Payload::Trades {
            transact_time_us: time_us,
            trades,
        };
        sim_event(StreamKind::Trade, time_us, payload)
    }

    fn bbo_at(time_us: i64) -> FeedEvent {
        let payload = Payload::BestBidAsk {
            update_id: 1,
            bid: (6_976_900, 1),
            ask: (6_977_000, 1),
        };
        sim_event(StreamKind::BestBidAsk, time_us, payload)
    }

    /// A depth diff at `time_us`: it moves the symbol's exchange clock.
    fn diff_at(time_us: i64) -> FeedEvent {
        let payload = Payload::DepthDiff(crate::sim::market::Diff {
            first_update_id: 1,
            last_update_id: 1,
            bids: vec![(6_976_900, 1)],
            asks: vec![],
        });
        sim_event(StreamKind::Depth, time_us, payload)
    }

    /// `(open time, trade count)` of each kline record queued, in order.
    fn candles(w: &mut Writer) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        for lane in &mut w.dests[KLINES].lanes {
            for o in lane.lane.take_plain(usize::MAX, usize::MAX) {
                let v: serde_json::Value = serde_json::from_slice(&o.data).expect("JSON");
                let k = &v["k"];
                out.push((k["t"].as_i64().expect("t"), k["n"].as_u64().expect("n")));
            }
        }
        out
    }

    /// While the symbol's connection is lost, its other streams' clock must not close a
    /// candle: trades of it may be missing, not yet seen as a gap (the first trade after the
    /// reconnect shows it). The candle closes once the repair delivered them.
    #[test]
    fn a_candle_does_not_close_while_the_connection_is_lost_and_its_trades_unknown() {
        let mut w = writer();
        w.klines = KlinesConfig {
            intervals: vec![crate::kline::Interval::of("1s").expect("1s")],
            close_after_ms: 0,
        };
        let t0 = 1_763_700_000_000_000;
        let second = 1_000_000;
        // The first candle is partial (never published); the second holds 2..=3 so far.
        w.route(trades_at(1..=1, t0 + 100_000));
        w.route(trades_at(2..=3, t0 + second + 100_000));
        let lost = |change| Repair::Stream {
            symbol: 0,
            change,
            last_update_id: 0,
        };
        w.repair(lost(StreamChange::Disconnected));
        // Trades 4..=5 of that second were sent while the connection was down.
        w.route(diff_at(t0 + 5 * second));
        assert_eq!(candles(&mut w), vec![], "closed without trades 4..=5");
        w.repair(lost(StreamChange::Reconnected));
        w.route(diff_at(t0 + 5 * second + 1));
        assert_eq!(candles(&mut w), vec![], "no trade since the reconnect yet");
        w.route(trades_at(6..=6, t0 + 5 * second + 500_000));
        w.repair(Repair::Event(trades_at(4..=5, t0 + second + 900_000)));
        let got = candles(&mut w);
        assert_eq!(got[0], (t0 / 1000 + 1000, 4), "{got:?}");
        let flats: Vec<(i64, u64)> = (2..5).map(|s| (t0 / 1000 + s * 1000, 0)).collect();
        assert_eq!(got[1..], flats[..]);
    }

    /// A trade arriving after a later candle of its interval closed is left out of its candle
    /// (which went out without it): counted, so the summary shows the candle is short.
    #[test]
    fn trades_left_out_of_closed_candles_are_counted() {
        let mut w = writer();
        w.klines = KlinesConfig {
            intervals: vec![crate::kline::Interval::of("1s").expect("1s")],
            close_after_ms: 0,
        };
        let t0 = 1_763_700_000_000_000;
        let second = 1_000_000;
        w.route(trades_at(1..=1, t0 + 100_000));
        w.route(trades_at(2..=3, t0 + second + 100_000));
        // A bookTicker's time may be the local receive time (JSON): it closes nothing.
        w.route(bbo_at(t0 + 5 * second));
        assert_eq!(candles(&mut w), vec![]);
        // A silent loss: no disconnect, so the clock closes second 1 and fills to second 4.
        w.route(diff_at(t0 + 5 * second));
        assert_eq!(candles(&mut w)[0], (t0 / 1000 + 1000, 2));
        w.route(trades_at(4..=5, t0 + second + 900_000));
        assert_eq!(w.stats.klines_late.get(), 2);
        assert_eq!(w.stats.summary().klines_late, 2);
    }

    /// Given-up ids release what waited behind them; at shutdown everything held goes out.
    #[test]
    fn given_up_ids_and_shutdown_release_held_trades() {
        let mut w = writer();
        w.route(trades(1..=1));
        w.route(trades(3..=3));
        w.route(trades(6..=6));
        w.repair(Repair::GaveUp {
            symbol: 0,
            from: 2,
            to: 2,
        });
        assert_eq!(queued(&mut w), vec![vec![1], vec![3]]);
        w.finish_orders();
        assert_eq!(queued(&mut w), vec![vec![6]]);
        assert_eq!(w.stats.unrepaired.get(), 1 + 2);
        assert_eq!(w.orders.held(), 0);
    }
}
