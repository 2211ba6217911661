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
use crate::feed::event::{FeedEvent, monotonic_ns};
use crate::feed::reader::latency_histogram;
use crate::feed::run::Percentiles;
use crate::rest::{RestClient, mantissas};
use crate::sink::config::RedisConfig;
use crate::sink::{SinkStats, SinkSummary, jittered, ring_depth};

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
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("redis: cannot start a runtime: {e}"))?;
            runtime.block_on(run(sink))
        })
}

/// A standalone or cluster connection.
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
        if conn.is_none() && now >= next_connect {
            match connect(&w.config).await {
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
                    next_connect = Instant::now()
                        + jittered(
                            &mut w.rng,
                            w.config.reconnect_initial,
                            w.config.reconnect_max,
                            attempt,
                        );
                    if attempt == 0 {
                        tracing::warn!("redis: cannot connect: {e}; retrying with backoff");
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        let pending: usize = w.states.iter().flatten().map(|s| s.pending.len()).sum();
        w.stats
            .queue_depth
            .set((ring_depth(&rings) + pending) as u64);
        let dirty = w.states.iter().flatten().any(SymbolState::dirty);
        if let Some(c) = conn.as_mut()
            && dirty
        {
            if let Err(e) = w.write(c).await {
                w.stats.failed_requests.add(1);
                tracing::warn!("redis: write failed: {e}; reconnecting");
                conn = None;
                for state in w.states.iter_mut().flatten() {
                    state.mark_all_dirty();
                }
                next_connect = Instant::now()
                    + jittered(
                        &mut w.rng,
                        w.config.reconnect_initial,
                        w.config.reconnect_max,
                        attempt,
                    );
                attempt = attempt.saturating_add(1);
            }
            work += 1;
        }
        if stopping && rings.iter().all(|r| r.is_empty()) {
            let dirty = w.states.iter().flatten().any(SymbolState::dirty);
            // Book syncs still fetching are not waited for: what is known has been written.
            if !dirty {
                break;
            }
            if flush_deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!("redis: the shutdown flush deadline passed with writes pending");
                break;
            }
        }
        idle = if work > 0 { 0 } else { idle.saturating_add(1) };
        match (idle, conn.is_some()) {
            (0, _) => {}
            (_, false) => tokio::time::sleep(Duration::from_millis(1)).await,
            (1..=64, true) => std::hint::spin_loop(),
            (65..=20_000, true) => tokio::task::yield_now().await,
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

    /// Writes every dirty symbol; trades are acknowledged only when Redis answered.
    async fn write(&mut self, conn: &mut Conn) -> Result<(), String> {
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
            if matches!(conn, Conn::Cluster(_)) {
                pipes.push((
                    std::mem::replace(&mut pipe, redis::pipe()),
                    sections.len() - 1,
                ));
                pipe.ignore_errors();
            }
            if budget == 0 {
                break;
            }
        }
        if matches!(conn, Conn::Single(_)) {
            pipes.push((pipe, 0));
        }
        self.stats.requests.add(pipes.len() as u64);
        let mut replies: Vec<Value> = Vec::new();
        match conn {
            Conn::Single(c) => {
                for (p, _) in &pipes {
                    let values: Vec<Value> = p.query_async(c).await.map_err(|e| e.to_string())?;
                    replies.extend(values);
                }
            }
            Conn::Cluster(c) => {
                let futures = pipes.iter().map(|(p, _)| {
                    let mut c = c.clone();
                    async move { p.query_async::<Vec<Value>>(&mut c).await }
                });
                for values in futures_util::future::join_all(futures).await {
                    replies.extend(values.map_err(|e| e.to_string())?);
                }
            }
        }
        let acked = monotonic_ns();
        if let Some(newest) = samples.iter().max() {
            self.stats.ack_latency_ns.set(acked.saturating_sub(*newest));
        }
        for recv in samples {
            let _ = self
                .latency
                .record(acked.saturating_sub(recv).clamp(1, self.latency.high()));
        }
        let mut at = 0;
        for section in sections {
            let replies = &replies[at..(at + section.commands).min(replies.len())];
            at += section.commands;
            let mut written = 0u64;
            for reply in replies.iter().take(section.trades) {
                match reply {
                    Value::ServerError(e)
                        if e.details().is_some_and(|d| d.contains("equal or smaller")) =>
                    {
                        // Landed before an earlier failure: already in the stream.
                        written += 1;
                    }
                    Value::ServerError(e) => {
                        self.stats.dropped.add(1);
                        self.log_error(&format!("XADD refused: {e:?}"));
                    }
                    _ => written += 1,
                }
            }
            for reply in replies.iter().skip(section.trades) {
                if let Value::ServerError(e) = reply {
                    self.log_error(&format!("write refused: {e:?}"));
                }
            }
            self.stats.written.add(written);
            if let Some(state) = self.states[section.symbol].as_mut() {
                state.acknowledge(section.trades);
            }
        }
        Ok(())
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
