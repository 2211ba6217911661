//! The Redis writer thread: drains its rings into per-symbol [`SymbolState`], and whenever
//! something changed and no pipeline is in flight, writes one coalesced pipeline (standalone:
//! one for all symbols; Cluster: one per symbol, all of whose keys share a slot). Book syncs
//! fetch REST depth snapshots in background tasks, so neither REST nor Redis ever holds up the
//! draining (a reader never waits for this thread: a full ring is its `queue_full` notice).
//!
//! Outages: a failed pipeline drops the connection; the writer reconnects with full-jitter
//! backoff while it keeps draining and applying events in memory (trades held up to
//! `redis.buffer_trades_max`, then the oldest are dropped and counted). After a reconnect
//! every symbol's state is written again, so a restarted (empty) Redis is rebuilt. Trade
//! entries carry fixed ids (`<ms>-<trade id>`): a retried `XADD` that already landed is
//! refused by Redis, so no trade is written twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redis::Value;

use super::state::{SymbolState, Wants};
use crate::backoff::jittered;
use crate::clock::monotonic_ns;
use crate::config::RedisConfig;
use crate::feed::event::FeedEvent;
use crate::metrics::{Percentiles, latency_histogram};
use crate::rest::{RestClient, mantissas};
use crate::sink::{SinkStats, SinkSummary, ring_depth};

/// Trades per pipeline at most (a long outage's backlog goes out in several).
const TRADES_PER_PIPELINE: usize = 20_000;
/// Connect and response deadline.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// Receipt times kept for the latency histogram between two acknowledgements.
const LATENCY_SAMPLES_MAX: usize = 1 << 20;

/// What the writer thread is given.
pub struct RedisSink {
    /// Settings.
    pub config: RedisConfig,
    /// Binance REST base URL (for depth snapshots).
    pub rest_base: String,
    /// TLS for an `https://` REST base (`None`: the system's roots).
    pub rest_tls: Option<Arc<rustls::ClientConfig>>,
    /// One ring per reader.
    pub rings: Vec<rtrb::Consumer<FeedEvent>>,
    /// Live counters.
    pub stats: Arc<SinkStats>,
    /// Set once the readers have stopped: drain, flush, return.
    pub stop: Arc<AtomicBool>,
    /// The readers' cores: the writer thread runs on another core if there is one.
    pub reader_cores: Vec<usize>,
    /// How long the final flush may take.
    pub flush_timeout: Duration,
}

/// Starts the writer thread.
pub fn spawn(
    sink: RedisSink,
) -> std::io::Result<std::thread::JoinHandle<Result<SinkSummary, String>>> {
    std::thread::Builder::new()
        .name("hotpath-redis".into())
        .spawn(move || {
            crate::sink::pin_away_from(&sink.reader_cores);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("redis: cannot start a runtime: {e}"))?;
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
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
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
            .build()
            .map_err(|e| format!("redis.cluster_urls: {e}"))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Conn::Cluster(conn))
    }
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

/// One pipeline's commands for a symbol: which symbol, how many trades it covers, and how
/// many commands it holds.
struct Section {
    symbol: usize,
    trades: usize,
    commands: usize,
}

struct Writer {
    config: RedisConfig,
    states: Vec<Option<SymbolState>>,
    stats: Arc<SinkStats>,
    latency: Histogram<u64>,
    samples: Vec<u64>,
    rng: crate::rng::Rng,
    snapshots: tokio::sync::mpsc::UnboundedSender<(usize, crate::rest::DepthSnapshot)>,
    rest: Arc<tokio::sync::Mutex<RestClient>>,
    stop: Arc<AtomicBool>,
    errors_logged: u32,
}

async fn run(sink: RedisSink) -> Result<SinkSummary, String> {
    let RedisSink {
        config,
        rest_base,
        rest_tls,
        mut rings,
        stats,
        stop,
        flush_timeout,
        reader_cores: _,
    } = sink;
    let rest = RestClient::new(&rest_base, rest_tls).map_err(|e| format!("redis: REST: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut w = Writer {
        config,
        states: Vec::new(),
        stats,
        latency: latency_histogram(),
        samples: Vec::new(),
        rng: crate::rng::Rng::new(monotonic_ns() | 1),
        snapshots: tx,
        rest: Arc::new(tokio::sync::Mutex::new(rest)),
        stop: stop.clone(),
        errors_logged: 0,
    };
    let mut conn: Option<Conn> = None;
    // Connecting and writing run as tasks beside this loop, so draining never waits on Redis.
    let mut connecting: Option<tokio::task::JoinHandle<Result<Conn, String>>> = None;
    let mut writing: Option<(Replies, Batch)> = None;
    let mut next_connect = Instant::now();
    let mut attempt = 0u32;
    let mut connected_once = false;
    let mut flush_deadline: Option<Instant> = None;
    let mut idle = 0u32;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut work = 0usize;
        for ring in rings.iter_mut() {
            while let Ok(event) = ring.pop() {
                w.accept(event);
                work += 1;
            }
        }
        while let Ok((symbol, snapshot)) = rx.try_recv() {
            w.on_snapshot(symbol, snapshot);
            work += 1;
        }
        let now = Instant::now();
        if stopping && flush_deadline.is_none() {
            flush_deadline = Some(now + flush_timeout);
        }
        if conn.is_none() && connecting.is_none() && now >= next_connect {
            let config = w.config.clone();
            connecting = Some(tokio::spawn(async move { connect(&config).await }));
        }
        if let Some(task) = connecting.take_if(|t| t.is_finished()) {
            work += 1;
            match task.await.unwrap_or_else(|e| Err(e.to_string())) {
                Ok(c) => {
                    conn = Some(c);
                    attempt = 0;
                    if connected_once {
                        w.stats.reconnects.add(1);
                        tracing::info!("redis: reconnected; writing every symbol's state again");
                    }
                    connected_once = true;
                    for state in w.states.iter_mut().flatten() {
                        state.mark_all_dirty();
                    }
                }
                Err(e) => {
                    w.stats.failed_requests.add(1);
                    next_connect = w.backoff(attempt);
                    if attempt == 0 {
                        tracing::warn!("redis: cannot connect: {e}; retrying with backoff");
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        if let Some((task, batch)) = writing.take_if(|(t, _)| t.is_finished()) {
            work += 1;
            let outcome = match task.await.unwrap_or_else(|e| Err(e.to_string())) {
                Ok(replies) => w.settle(batch, &replies),
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                w.stats.failed_requests.add(1);
                tracing::warn!("redis: write failed: {e}; reconnecting");
                conn = None;
                for state in w.states.iter_mut().flatten() {
                    state.mark_all_dirty();
                }
                next_connect = w.backoff(attempt);
                attempt = attempt.saturating_add(1);
            }
        }
        let pending: usize = w.states.iter().flatten().map(|s| s.pending.len()).sum();
        w.stats
            .queue_depth
            .set((ring_depth(&rings) + pending) as u64);
        let dirty = w.states.iter().flatten().any(SymbolState::dirty);
        if writing.is_none()
            && dirty
            && let Some(c) = conn.as_ref()
        {
            let (pipes, batch) = w.prepare(matches!(c, Conn::Cluster(_)));
            let c = c.clone();
            writing = Some((tokio::spawn(execute(c, pipes)), batch));
            work += 1;
        }
        if stopping && writing.is_none() && rings.iter().all(|r| r.is_empty()) {
            let dirty = w.states.iter().flatten().any(SymbolState::dirty);
            // Book syncs still fetching are not waited for: what is known has been written.
            if !dirty {
                break;
            }
        }
        if flush_deadline.is_some_and(|d| Instant::now() >= d) {
            let pending: usize = w.states.iter().flatten().map(|s| s.pending.len()).sum();
            w.stats.dropped.add(pending as u64);
            tracing::warn!(
                "redis: the shutdown flush deadline passed; {pending} trades not written \
                 (counted as dropped)"
            );
            break;
        }
        idle = if work > 0 { 0 } else { idle.saturating_add(1) };
        match idle {
            0 => {}
            1..=64 => std::hint::spin_loop(),
            65..=20_000 => tokio::task::yield_now().await,
            _ => tokio::time::sleep(Duration::from_micros(200)).await,
        }
    }
    let pending: usize = w.states.iter().flatten().map(|s| s.pending.len()).sum();
    let mut summary = w.stats.summary();
    summary.receipt_to_ack_ns = Percentiles::of(&w.latency);
    summary.flushed = pending == 0 && !w.states.iter().flatten().any(SymbolState::dirty);
    Ok(summary)
}

impl Writer {
    /// When to try again after `attempt` failures in a row.
    fn backoff(&mut self, attempt: u32) -> Instant {
        let (initial, max) = (self.config.reconnect_initial, self.config.reconnect_max);
        Instant::now() + jittered(&mut self.rng, initial, max, attempt)
    }

    fn accept(&mut self, event: FeedEvent) {
        self.stats.received.add(1);
        let Ok(message) = crate::sbe::decode(&event.frame) else {
            self.stats.dropped.add(1);
            return;
        };
        let index = usize::from(event.symbol);
        if self.states.len() <= index {
            self.states.resize_with(index + 1, || None);
        }
        let state = self.states[index].get_or_insert_with(|| {
            let name = symbol_name(&message);
            SymbolState::new(&name)
        });
        let before = state.dropped;
        let wants = state.on_frame(&message, event.recv_time_ns, self.config.buffer_trades_max);
        self.stats.dropped.add(state.dropped - before);
        if self.samples.len() < LATENCY_SAMPLES_MAX {
            self.samples.push(event.recv_time_ns);
        }
        if wants == Wants::Snapshot && !state.fetching {
            state.fetching = true;
            self.fetch_snapshot(index);
        }
    }

    /// Fetches a depth snapshot in the background, retrying (with backoff, honouring 429/418
    /// Retry-After) until it succeeds or the writer stops.
    fn fetch_snapshot(&mut self, index: usize) {
        let Some(state) = self.states[index].as_ref() else {
            return;
        };
        let symbol = state.name.clone();
        let limit = self.config.snapshot_limit;
        let rest = self.rest.clone();
        let tx = self.snapshots.clone();
        let stop = self.stop.clone();
        let (initial, max) = (self.config.reconnect_initial, self.config.reconnect_max);
        let mut rng = crate::rng::Rng::new(self.rng.next_u64() | 1);
        tokio::spawn(async move {
            let mut attempt = 0;
            while !stop.load(Ordering::Acquire) {
                let result = rest.lock().await.depth(&symbol, limit).await;
                match result {
                    Ok(snapshot) => {
                        let _ = tx.send((index, snapshot));
                        return;
                    }
                    Err(e) => {
                        let delay = e
                            .retry_after()
                            .unwrap_or_else(|| jittered(&mut rng, initial, max, attempt));
                        if attempt == 0 {
                            tracing::warn!(%symbol, "redis: depth snapshot failed: {e}; retrying");
                        }
                        attempt += 1;
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
    }

    fn on_snapshot(&mut self, index: usize, snapshot: crate::rest::DepthSnapshot) {
        let Some(state) = self.states.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let (pe, qe) = state.exponents();
        let levels = mantissas(&snapshot.bids, pe, qe)
            .and_then(|b| Ok((b, mantissas(&snapshot.asks, pe, qe)?)));
        let live = match levels {
            Ok((bids, asks)) => state.on_snapshot(snapshot.last_update_id, bids, asks),
            Err(e) => {
                tracing::warn!(symbol = %state.name, "redis: depth snapshot unusable: {e}");
                state.fetching = false;
                false
            }
        };
        if !live && !state.fetching {
            state.fetching = true;
            self.fetch_snapshot(index);
        }
    }

    /// Builds the pipelines of every dirty symbol (standalone: one; Cluster: one per symbol,
    /// its keys sharing a slot).
    fn prepare(&mut self, cluster: bool) -> (Vec<redis::Pipeline>, Batch) {
        let samples = std::mem::take(&mut self.samples);
        let mut budget = TRADES_PER_PIPELINE;
        let mut sections = Vec::new();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let maxlen = self.config.trades_maxlen;
        let levels = self.config.book_levels;
        let mut pipes = Vec::new();
        for (symbol, state) in self.states.iter_mut().enumerate() {
            let Some(state) = state.as_mut().filter(|s| s.dirty()) else {
                continue;
            };
            let before = pipe.len();
            let trades = state.write(&mut pipe, maxlen, levels, budget);
            budget -= trades;
            sections.push(Section {
                symbol,
                trades,
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

    /// Applies Redis' replies: trades are acknowledged up to the first one refused for another
    /// reason than "already there" (that one and the later ones stay pending); any such
    /// refusal fails the batch, so the state is written again after a backoff.
    fn settle(&mut self, batch: Batch, replies: &[Value]) -> Result<(), String> {
        let acked = monotonic_ns();
        if let Some(newest) = batch.samples.iter().max() {
            self.stats.ack_latency_ns.set(acked.saturating_sub(*newest));
        }
        for recv in &batch.samples {
            let _ = self
                .latency
                .record(acked.saturating_sub(*recv).clamp(1, self.latency.high()));
        }
        let mut at = 0;
        let mut refused = None;
        for section in batch.sections {
            let replies =
                &replies[at.min(replies.len())..(at + section.commands).min(replies.len())];
            at += section.commands;
            let mut landed = 0usize;
            for reply in replies.iter().take(section.trades) {
                match reply {
                    Value::ServerError(e)
                        if e.details().is_some_and(|d| d.contains("equal or smaller")) =>
                    {
                        // Landed before an earlier failure: already in the stream.
                        landed += 1;
                    }
                    Value::ServerError(e) => {
                        refused.get_or_insert_with(|| format!("XADD refused: {e:?}"));
                        break;
                    }
                    _ => landed += 1,
                }
            }
            if let Some(e) = replies.iter().skip(section.trades).find_map(|r| match r {
                Value::ServerError(e) => Some(e),
                _ => None,
            }) {
                refused.get_or_insert_with(|| format!("write refused: {e:?}"));
            }
            self.stats.written.add(landed as u64);
            if let Some(state) = self.states[section.symbol].as_mut() {
                state.acknowledge(landed);
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

    fn log_error(&mut self, message: &str) {
        if self.errors_logged < 10 {
            self.errors_logged += 1;
            tracing::error!("redis: {message}");
        }
    }
}

fn symbol_name(message: &crate::sbe::spot_stream::Message<'_>) -> String {
    use crate::sbe::spot_stream::Message;
    let bytes = match message {
        Message::TradesStreamEvent(m) => m.symbol(),
        Message::BestBidAskStreamEvent(m) => m.symbol(),
        Message::DepthSnapshotStreamEvent(m) => m.symbol(),
        Message::DepthDiffStreamEvent(m) => m.symbol(),
    };
    String::from_utf8_lossy(bytes).into_owned()
}
