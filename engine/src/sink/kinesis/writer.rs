//! The Kinesis writer thread: drains its rings into one [`Lane`] per destination stream
//! (trade, bestBidAsk, depth, heartbeat), sends PutRecords batches (one in flight per lane, so
//! a partition key stays ordered), retries failed entries only, backs off with full jitter,
//! stops hammering a dead endpoint with a [`Breaker`], and writes what it cannot deliver in
//! time to the dead-letter file. It runs a current-thread tokio runtime of its own; nothing it
//! does can block a reader (a full ring is the reader's `queue_full` notice). The rings are
//! drained from the start, also while the start-up stream check runs (into the lanes, bounded
//! by `kinesis.buffer_bytes_max`, beyond which records go to the dead-letter file, counted).
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
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;

use super::breaker::Breaker;
use super::lane::{Entry, Lane, Outgoing};
use crate::backoff::jittered;
use crate::clock::{monotonic_ns, unix_ms};
use crate::config::{KinesisConfig, Payload};
use crate::feed::event::{FeedEvent, Repair};
use crate::idle::{Bell, TaskIdle};
use crate::metrics::{Percentiles, latency_histogram};
use crate::sink::dlq::{DeadRecord, Outcome, Spool, Target};
use crate::sink::order::TradeOrders;
use crate::sink::{SinkError, SinkStats, SinkSummary, ring_depth};
use crate::stream::StreamKind;

/// Lanes: trade, bestBidAsk, depth (+ depth20), heartbeat.
const LANES: usize = 4;
const HEARTBEAT_LANE: usize = 3;
/// How often the start-up drain looks at the rings while the stream check runs (the main
/// loop idles as `kinesis.idle` says, woken by its bell).
const TICK: Duration = Duration::from_millis(1);
/// The SDK's per-request deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An upper bound of the bytes KPL aggregation adds around one user record of one key: magic
/// (4), MD5 (16), the key table entry and the record's field tags and lengths.
const AGGREGATE_FRAMING: usize = 4 + 16 + 2 * 10 + 2 * 256 + 32;
/// Kinesis' limit on one record (data + partition key).
const RECORD_MAX: usize = super::aggregate::RECORD_BYTES_MAX;

/// The lane of a stream kind.
fn lane_of(kind: StreamKind) -> usize {
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

pub(crate) type Sent = (usize, Vec<Outgoing>, Result<Vec<bool>, Failure>);

/// A request that failed as a whole.
pub(crate) struct Failure {
    pub(crate) message: Arc<str>,
    /// No answer came (timeout, lost connection, HTTP 500): the records may have landed.
    pub(crate) unanswered: bool,
}

struct Writer {
    config: KinesisConfig,
    client: Client,
    names: [String; LANES],
    lanes: [Lane; LANES],
    /// Copies of the in-flight batches, dead-lettered if the flush deadline abandons them.
    in_flight: [Vec<Entry>; LANES],
    stats: Arc<SinkStats>,
    breaker: Breaker,
    dead: Spool,
    latency: Histogram<u64>,
    rng: crate::rng::Rng,
    heartbeat_seq: u64,
    next_heartbeat: Option<Instant>,
    json: String,
    /// Scratch space for re-encoding partly overlapping trades events.
    trimmed: Vec<u8>,
    /// Partition keys by the feed's symbol index.
    keys: Vec<Option<Arc<str>>>,
    errors_logged: u32,
    /// Trade order per symbol (live and repaired trades, each id once, in order).
    orders: TradeOrders<FeedEvent>,
    /// Trade events the orders released, with the first id to deliver (reused).
    released: Vec<(FeedEvent, i64)>,
    /// Gaps given up on so far (the first [`crate::constants::GAPS_LOGGED_MAX`] are logged).
    gaps_logged: u32,
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
    } = sink;
    let mut idler = TaskIdle::new(config.idle, bell);
    let client = match client {
        Some(c) => c,
        None => client_from_chain(&config).await,
    };
    let names = [
        config.stream_trade.clone(),
        config.stream_best_bid_ask.clone(),
        config.stream_depth.clone(),
        config.heartbeat_stream.clone(),
    ];
    let mut wanted: Vec<String> = names[..3].to_vec();
    if config.heartbeat_interval.is_some() {
        wanted.push(names[HEARTBEAT_LANE].clone());
    }
    wanted.sort_unstable();
    wanted.dedup();
    let create = config.create_streams;
    let mut w = Writer::new(config, client.clone(), names, stats, hold_max);
    let checked = w
        .drain_while(
            &mut rings,
            &mut repairs,
            check_streams(&client, &wanted, create),
        )
        .await;
    let _ = ready.send(checked.clone());
    if let Err(e) = checked {
        // A failed check ends the run before it starts: what was drained meanwhile goes to the
        // dead-letter file, for `hotpath dlq resend` once the streams exist.
        return Err(w.dead_letter_unchecked(&mut rings, &mut repairs, e));
    }
    w.next_heartbeat = w.config.heartbeat_interval.map(|_| Instant::now());
    let mut sending: FuturesUnordered<Pin<Box<dyn Future<Output = Sent>>>> =
        FuturesUnordered::new();
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
        for lane in 0..LANES {
            if let Some(fut) = w.next_request(lane, now, stopping) {
                sending.push(fut);
                work += 1;
            }
        }
        let held = w.orders.held() + w.lanes.iter().map(Lane::len).sum::<usize>();
        w.stats.queue_depth.set((ring_depth(&rings) + held) as u64);
        let idle = w.lanes.iter().all(Lane::is_empty) && sending.is_empty();
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
                while let Some(Some(sent)) = futures_util::FutureExt::now_or_never(sending.next()) {
                    w.settle(sent);
                }
            }
            Some(step) if sending.is_empty() => idler.wait(step, has_work).await,
            Some(step) => {
                tokio::select! {
                    Some(sent) = sending.next() => w.settle(sent),
                    () = idler.wait(step, has_work) => {}
                }
            }
        }
    }
    drop(sending);
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
        names: [String; LANES],
        stats: Arc<SinkStats>,
        hold_max: Duration,
    ) -> Writer {
        Writer {
            next_heartbeat: None,
            breaker: Breaker::new(config.breaker_failures, config.breaker_open),
            dead: Spool::new(&config.dead_letter_path),
            config,
            client,
            names,
            lanes: Default::default(),
            in_flight: Default::default(),
            stats,
            latency: latency_histogram(),
            rng: crate::rng::Rng::new(monotonic_ns() | 1),
            heartbeat_seq: 0,
            json: String::new(),
            trimmed: Vec::new(),
            keys: Vec::new(),
            errors_logged: 0,
            orders: TradeOrders::new(
                u64::try_from(hold_max.as_nanos()).unwrap_or(u64::MAX),
                crate::constants::TRADE_EVENTS_HELD_MAX,
            ),
            released: Vec::new(),
            gaps_logged: 0,
        }
    }

    /// Drains the rings into the lanes until `work` (the start-up stream check) is done, so
    /// that no reader's ring fills meanwhile; returns its result.
    async fn drain_while<T>(
        &mut self,
        rings: &mut [rtrb::Consumer<FeedEvent>],
        repairs: &mut Option<rtrb::Consumer<Repair>>,
        work: impl Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            self.drain(rings, repairs);
            let held = ring_depth(rings) + self.lanes.iter().map(Lane::len).sum::<usize>();
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
            }
            // Books are the Redis writer's.
            Repair::Book(_) | Repair::BookUnavailable { .. } | Repair::Stream { .. } => {}
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
            self.keys[index] = symbol_of(&event.frame);
        }
        let Some(key) = self.keys[index].clone() else {
            self.stats.dropped.add(1);
            return;
        };
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
        let data = match self.config.payload {
            Payload::Sbe => frame,
            Payload::Json => {
                self.json.clear();
                crate::decode::frame_to_json(&frame, &mut self.json);
                Bytes::copy_from_slice(self.json.as_bytes())
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
        self.enqueue(lane_of(event.kind), entry);
    }

    fn enqueue(&mut self, lane: usize, entry: Entry) {
        // An aggregate adds its framing (magic, table, field tags, MD5) around a record.
        let framing = if self.config.aggregate {
            AGGREGATE_FRAMING
        } else {
            0
        };
        if entry.cost() + framing > RECORD_MAX {
            self.dead_letter(lane, entry, "record larger than Kinesis' 1 MiB limit");
        } else if self.held_bytes() + entry.held_bytes() > self.config.buffer_bytes_max {
            self.dead_letter(lane, entry, "kinesis.buffer_bytes_max reached");
        } else {
            self.lanes[lane].push(entry);
        }
    }

    /// Memory the records queued in the lanes hold (in-flight batches not included).
    fn held_bytes(&self) -> usize {
        self.lanes.iter().map(Lane::held_bytes).sum()
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
        let entry = Entry {
            key: "hotpath".into(),
            data: Bytes::from(body.to_string()),
            recv_time_ns: monotonic_ns(),
            enqueued: now,
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        };
        // Heartbeats are not events: they do not count as received or written.
        self.lanes[HEARTBEAT_LANE].push(entry);
    }

    fn expire(&mut self, now: Instant) {
        for lane in 0..LANES {
            for entry in self.lanes[lane].expire(now, self.config.deliver_within) {
                let why = entry
                    .error
                    .clone()
                    .unwrap_or_else(|| "not delivered within kinesis.deliver_within_ms".into());
                self.dead_letter(lane, entry, &why);
            }
        }
    }

    /// Writes `entry` to the dead-letter file, `outcome` `unknown` when an attempt of it got no
    /// answer, `failed` otherwise; counted as dead-lettered (heartbeats are not counted).
    fn dead_letter(&mut self, lane: usize, entry: Entry, why: &str) {
        let counted = lane != HEARTBEAT_LANE;
        let record = DeadRecord {
            target: Target::Kinesis {
                stream: self.names[lane].clone(),
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
        for lane in 0..LANES {
            let mut entries = std::mem::take(&mut self.in_flight[lane]);
            for entry in entries.iter_mut() {
                entry.maybe_landed = true;
            }
            entries.extend(
                self.lanes[lane]
                    .take_plain(usize::MAX, usize::MAX)
                    .into_iter()
                    .flat_map(|o| o.entries),
            );
            for entry in entries {
                self.dead_letter(lane, entry, why);
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

    fn next_request(
        &mut self,
        lane: usize,
        now: Instant,
        flush: bool,
    ) -> Option<Pin<Box<dyn Future<Output = Sent>>>> {
        let c = &self.config;
        if !self.lanes[lane].ready(now, c.linger, c.batch_records_max, c.batch_bytes_max, flush) {
            return None;
        }
        if !self.breaker.allow(now) {
            return None;
        }
        let mut batch = if c.aggregate && lane != HEARTBEAT_LANE {
            self.lanes[lane].take_aggregated(c.batch_records_max, c.batch_bytes_max)
        } else {
            self.lanes[lane].take_plain(c.batch_records_max, c.batch_bytes_max)
        };
        if batch.is_empty() {
            self.breaker.release();
            return None;
        }
        let ms = unix_ms();
        let mut copies = Vec::new();
        for entry in batch.iter_mut().flat_map(|o| o.entries.iter_mut()) {
            if entry.attempts == 0 {
                entry.first_attempt_ms = ms;
            } else if lane != HEARTBEAT_LANE {
                self.stats.retried.add(1);
            }
            entry.attempts += 1;
            copies.push(entry.clone());
        }
        self.in_flight[lane] = copies;
        self.lanes[lane].in_flight = true;
        self.stats.requests.add(1);
        let client = self.client.clone();
        let stream = self.names[lane].clone();
        Some(Box::pin(put_records(client, stream, lane, batch)))
    }

    /// Holds `lane` back for a full-jitter delay growing with its failures in a row.
    fn back_off(&mut self, lane: usize, now: Instant) {
        let attempt = self.lanes[lane].failures;
        self.lanes[lane].failures = attempt.saturating_add(1);
        let (initial, max) = (self.config.retry_initial, self.config.retry_max);
        self.lanes[lane].not_before = Some(now + jittered(&mut self.rng, initial, max, attempt));
    }

    fn settle(&mut self, (lane, batch, result): Sent) {
        let now = Instant::now();
        self.lanes[lane].in_flight = false;
        self.in_flight[lane].clear();
        match result {
            Ok(failed) => {
                self.breaker.success();
                let mut done = Vec::new();
                let any_failed = failed.iter().any(|&f| f);
                let error: Option<Arc<str>> =
                    any_failed.then(|| "PutRecords entries failed (throttled)".into());
                let mut batch = batch;
                if let Some(error) = &error {
                    for (o, _) in batch.iter_mut().zip(&failed).filter(|(_, f)| **f) {
                        for e in o.entries.iter_mut() {
                            e.error = Some(error.clone());
                        }
                    }
                }
                let verdict = self.lanes[lane].settle(batch, &failed, &mut done);
                if verdict.overtaken > 0 {
                    tracing::warn!(
                        stream = %self.names[lane],
                        "kinesis: a failed record was overtaken by a later one of its key \
                         (enable kinesis.aggregate for strict order under partial failures)"
                    );
                }
                let acked = monotonic_ns();
                if let Some(newest) = done.iter().map(|e| e.recv_time_ns).max()
                    && lane != HEARTBEAT_LANE
                {
                    self.stats.ack_latency_ns.set(acked.saturating_sub(newest));
                }
                for entry in done.iter().filter(|_| lane != HEARTBEAT_LANE) {
                    let _ = self.latency.record(
                        acked
                            .saturating_sub(entry.recv_time_ns)
                            .clamp(1, self.latency.high()),
                    );
                }
                if lane != HEARTBEAT_LANE {
                    self.stats
                        .ack_latency
                        .record_all(done.iter().map(|e| acked.saturating_sub(e.recv_time_ns)));
                }
                if lane != HEARTBEAT_LANE {
                    self.stats.written.add(verdict.delivered as u64);
                }
                if any_failed {
                    self.back_off(lane, now);
                } else {
                    self.lanes[lane].failures = 0;
                    self.lanes[lane].not_before = None;
                }
            }
            Err(failure) => {
                self.stats.failed_requests.add(1);
                self.breaker.failure(now);
                let mut batch = batch;
                for e in batch.iter_mut().flat_map(|o| o.entries.iter_mut()) {
                    e.error = Some(failure.message.clone());
                    e.maybe_landed |= failure.unanswered;
                }
                self.lanes[lane].requeue_all(batch);
                self.back_off(lane, now);
                tracing::debug!(stream = %self.names[lane], "kinesis: PutRecords failed: {}", failure.message);
            }
        }
    }
}

/// One PutRecords call; `Ok` holds which entries failed.
pub(crate) async fn put_records(
    client: Client,
    stream: String,
    lane: usize,
    batch: Vec<Outgoing>,
) -> Sent {
    let entries: Result<Vec<PutRecordsRequestEntry>, _> = batch
        .iter()
        .map(|o| {
            PutRecordsRequestEntry::builder()
                .partition_key(o.key.as_ref())
                .data(Blob::new(o.data.to_vec()))
                .build()
        })
        .collect();
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => {
            let message = format!("cannot build the request: {e}").into();
            let unanswered = false;
            return (
                lane,
                batch,
                Err(Failure {
                    message,
                    unanswered,
                }),
            );
        }
    };
    let result = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await;
    let result = match result {
        Ok(out) if out.records().len() == batch.len() => Ok(out
            .records()
            .iter()
            .map(|r| r.error_code().is_some())
            .collect()),
        // Some of the records may be in the stream: which ones cannot be told.
        Ok(out) => Err(Failure {
            message: format!(
                "PutRecords answered {} entries for {} sent",
                out.records().len(),
                batch.len()
            )
            .into(),
            unanswered: true,
        }),
        Err(e) => Err(Failure {
            unanswered: unanswered(&e),
            message: DisplayErrorContext(&e).to_string().into(),
        }),
    };
    (lane, batch, result)
}

/// Whether a failed request may have been processed all the same: no answer came (a timeout,
/// a connection lost after it was sent, an unreadable answer) or Kinesis answered HTTP 500
/// (`InternalFailure`: outcome unknown). An error answer otherwise (throttling, 4xx, 503), a
/// request that could not be built and a refused connection mean it was not.
fn unanswered<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + 'static,
{
    match error {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(e) => e.raw().status().as_u16() == 500,
        SdkError::DispatchFailure(_) => !refused_connection(error),
        _ => true,
    }
}

/// Whether `error`'s causes include a refused TCP connection (nothing was sent).
fn refused_connection(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        next = e.source();
    }
    false
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
        w.lanes[0]
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
