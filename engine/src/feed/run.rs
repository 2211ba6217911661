//! Starting and stopping the feed, wiring the sinks and the reliability sidecar to the rings,
//! the counting consumer that drains the rings when no sink runs, and the one-line JSON summary
//! `hotpath run` prints on exit.
//!
//! With sinks, the data path is: each reader pushes every event into one ring per sink and
//! every gap or full-ring drop into its notice ring; the sidecar drains the notice rings,
//! fetches the missing trades from REST and pushes them into one repair ring per sink; each
//! sink drains its event rings and its repair ring and delivers each trade id once, in order.
//! The Redis writer also asks the sidecar for depth snapshots through a request ring; they come
//! back through its repair ring with the readers' stream notices (connection lost or back,
//! symbol removed).
//! Shutdown keeps that order: the readers stop first, then the sidecar finishes its repairs
//! (within the flush timeout) and stops, then the sinks drain everything and flush.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;

use super::event::{BookRequest, FeedEvent, Notice, Repair, StreamKline};
use super::reader::{self, Command, FeedContext, NewConnection, ReaderReport, ReaderSetup};
use super::stats::{ConnectionStats, ReaderStats};
use crate::backoff::AttemptBudget;
use crate::binance::rest::{RestClient, RestError};
use crate::clock::monotonic_ns;
use crate::config::{ApiKey, FeedFormat, RunConfig};
use crate::cores::CorePlan;
pub use crate::gaps::GapRange;
use crate::gaps::{GapLog, GapReport};
use crate::idle::{Bell, IdleStrategy, ThreadIdle};
use crate::metrics::{Percentiles, latency_histogram};
use crate::sidecar::detect::DetectSetup;
use crate::sidecar::silence::StreamClock;
use crate::sidecar::thread::{SidecarReport, SidecarSetup, SidecarStats, SidecarSummary};
use crate::sink::{SinkStats, SinkSummary};
use crate::stream::StreamKind;
use crate::tally::TradeTally;

/// Notices the sidecar ring of each reader holds.
const NOTICE_RING_CAPACITY: usize = 4096;
/// Closed stream klines a reader's ring holds for the sidecar (it drains them every round;
/// one per symbol and interval closes at a time).
const KLINE_RING_CAPACITY: usize = 4096;
/// Symbols added at run time whose streams the silence check still watches (beyond them, added
/// symbols are covered by the sequence and kline checks only).
const CLOCK_SYMBOLS_ADDED_MAX: usize = 1024;

/// A running feed: reader threads and their counters.
pub struct Feed {
    stop: watch::Sender<bool>,
    readers: Vec<JoinHandle<ReaderReport>>,
    /// Counters, one per reader.
    pub stats: Vec<Arc<ReaderStats>>,
    /// Each connection's figures, in connection (slot) order; grows as connections open at
    /// run time.
    pub connection_stats: Arc<RwLock<Vec<Arc<ConnectionStats>>>>,
    /// The sidecar's counters, when it runs.
    pub sidecar: Option<Arc<SidecarStats>>,
    /// Every symbol ever subscribed; an event's `symbol` indexes it. Shared with the sidecar,
    /// which names symbols in its REST requests.
    symbols: Arc<RwLock<Vec<String>>>,
    slots: Vec<SlotInfo>,
    kinds: Vec<StreamKind>,
    /// Streams per symbol on a connection, kline streams included ([`RunConfig::streams_per_symbol`]).
    streams_per_symbol: usize,
    symbols_per_connection: usize,
    /// Per reader: where connections opened at run time go.
    openers: Vec<tokio::sync::mpsc::UnboundedSender<NewConnection>>,
    /// Each stream's last receive time, stamped by the readers for the sidecar.
    clock: Arc<StreamClock>,
    /// The connection (slot) carrying each configured symbol.
    connections: Vec<u32>,
}

/// A connection slot as the feed sees it: its command channel and the symbols it carries.
struct SlotInfo {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    symbols: Vec<String>,
}

/// The consumer ends of the rings: `events[consumer][reader]` and `notices[reader]`.
pub struct Rings {
    /// Event rings, per consumer, per reader.
    pub events: Vec<Vec<rtrb::Consumer<FeedEvent>>>,
    /// Repair notices, per reader.
    pub notices: Vec<rtrb::Consumer<Notice>>,
    /// Closed stream klines, per reader (JSON or dual mode with `[klines] intervals`; else
    /// empty).
    pub klines: Vec<rtrb::Consumer<StreamKline>>,
}

/// Says at start which of the subscribed stream kline intervals (JSON and dual mode, `[klines]
/// intervals`) the sidecar can never judge against its tally of `tally_ms` intervals
/// (`sidecar.kline_check`): they are subscribed for nothing but are counted
/// (`stream_klines_unjudged`), not silently passed over.
fn warn_unjudged_stream_klines(config: &RunConfig, tally_ms: i64) {
    if config.format == FeedFormat::Sbe || !config.sidecar_runs() {
        return;
    }
    for interval in &config.klines.intervals {
        if !crate::sidecar::klines::judgeable(interval.ms, tally_ms) {
            tracing::warn!(
                "klines.intervals: {} stream klines cannot be judged against the sidecar's tally \
                 of {tally_ms} ms intervals (sidecar.kline_check): not a whole number of them, or \
                 more than the {} it keeps; they are counted in stream_klines_unjudged",
                interval.name,
                crate::tally::INTERVALS_KEPT
            );
        }
    }
}

/// The bells of the rings' consumers, which the readers ring after a batch pushed into their
/// rings: one per event consumer (in consumer order) and the notice rings' consumer.
pub struct Bells {
    /// Per event consumer.
    pub events: Vec<Bell>,
    /// The consumer of every notice ring.
    pub notices: Bell,
}

/// Starts the readers for `config` with `consumers` rings per reader, whose consumers poll
/// (nobody is woken).
pub fn start(
    config: &RunConfig,
    api_key: ApiKey,
    consumers: usize,
) -> Result<(Feed, Rings), String> {
    let bells = Bells {
        events: vec![Bell::silent(); consumers],
        notices: Bell::silent(),
    };
    start_with(config, api_key, bells)
}

/// Starts the readers for `config` with one ring per consumer in `bells` per reader; each
/// reader rings a consumer's bell after a batch pushed into its ring.
pub fn start_with(
    config: &RunConfig,
    api_key: ApiKey,
    bells: Bells,
) -> Result<(Feed, Rings), String> {
    let consumers = bells.events.len();
    let tls = Some(client_tls(config)?);
    let (stop, stop_rx) = watch::channel(false);
    let clock = Arc::new(StreamClock::new(
        config.symbols.len() + CLOCK_SYMBOLS_ADDED_MAX,
    ));
    let ctx = Arc::new(FeedContext {
        clock: Some(clock.clone()),
        endpoint: config.endpoint.clone(),
        format: config.format,
        json_endpoint: config.json_endpoint.clone(),
        dual: config.dual,
        api_key,
        tls,
        symbols: config.symbols.clone(),
        settings: config.readers.clone(),
        budget: std::sync::Mutex::new(AttemptBudget::new(
            crate::backoff::BINANCE_ATTEMPTS_MAX,
            crate::backoff::BINANCE_ATTEMPTS_WINDOW,
        )),
        stop: stop_rx,
        kline_intervals: match config.format {
            FeedFormat::Sbe => Vec::new(),
            FeedFormat::Json | FeedFormat::Dual => config.klines.intervals.clone(),
        },
    });
    let plan = config.connection_plan();
    let cores = &config.readers.cores;
    let mut rings = Rings {
        events: (0..consumers).map(|_| Vec::new()).collect(),
        notices: Vec::new(),
        klines: Vec::new(),
    };
    let mut feed = Feed {
        stop,
        readers: Vec::new(),
        stats: Vec::new(),
        connection_stats: Arc::default(),
        sidecar: None,
        symbols: Arc::new(RwLock::new(config.symbols.clone())),
        slots: Vec::new(),
        kinds: config.streams.clone(),
        streams_per_symbol: config.streams_per_symbol(),
        symbols_per_connection: config.symbols_per_connection,
        openers: Vec::new(),
        clock,
        connections: Vec::new(),
    };
    let mut receivers: Vec<Option<tokio::sync::mpsc::UnboundedReceiver<Command>>> = Vec::new();
    for streams in &plan {
        let (commands, receiver) = tokio::sync::mpsc::unbounded_channel();
        let symbols = config
            .symbols
            .iter()
            .filter(|s| {
                streams
                    .iter()
                    .any(|n| crate::stream::parse_stream_name(n).is_some_and(|(sym, _)| sym == **s))
            })
            .cloned()
            .collect();
        feed.slots.push(SlotInfo { commands, symbols });
        receivers.push(Some(receiver));
    }
    feed.connections = config
        .symbols
        .iter()
        .map(|s| {
            let slot = feed.slots.iter().position(|i| i.symbols.contains(s));
            slot.and_then(|at| u32::try_from(at).ok())
                .unwrap_or(u32::MAX)
        })
        .collect();
    let figures: Vec<Arc<ConnectionStats>> = (0..plan.len())
        .map(|c| Arc::new(ConnectionStats::on_reader(config.reader_of_connection(c))))
        .collect();
    *crate::sync::write(&feed.connection_stats) = figures.clone();
    for (index, &core) in cores.iter().enumerate() {
        let connections: Vec<_> = plan
            .iter()
            .enumerate()
            .filter(|(c, _)| config.reader_of_connection(*c) == index)
            .filter_map(|(c, streams)| Some((c, streams.clone(), receivers[c].take()?)))
            .map(|(c, streams, receiver)| (streams, receiver, figures[c].clone()))
            .collect();
        let mut producers = Vec::new();
        for consumer in rings.events.iter_mut() {
            let (producer, ring) = rtrb::RingBuffer::new(config.readers.ring_capacity);
            producers.push(producer);
            consumer.push(ring);
        }
        let (notices, notice_ring) = rtrb::RingBuffer::new(NOTICE_RING_CAPACITY);
        rings.notices.push(notice_ring);
        let klines = (!ctx.kline_intervals.is_empty()).then(|| {
            let (klines, kline_ring) = rtrb::RingBuffer::new(KLINE_RING_CAPACITY);
            rings.klines.push(kline_ring);
            klines
        });
        let stats = Arc::new(ReaderStats::default());
        feed.stats.push(stats.clone());
        let (opener, new_connections) = tokio::sync::mpsc::unbounded_channel();
        feed.openers.push(opener);
        let setup = ReaderSetup {
            index,
            core,
            connections,
            producers,
            notices,
            klines,
            stats,
            new_connections,
            event_bells: bells.events.clone(),
            notice_bell: bells.notices.clone(),
        };
        let handle = reader::spawn(setup, ctx.clone())
            .map_err(|e| format!("cannot start reader {index}: {e}"))?;
        feed.readers.push(handle);
    }
    Ok((feed, rings))
}

impl Feed {
    /// Adds `symbol`'s streams at run time: a SUBSCRIBE on the live connection with the most
    /// room, paced within Binance's five messages per second; when every connection is full
    /// (`symbols_per_connection`, or 1024 streams), a new connection carrying it opens on the
    /// next reader in turn.
    pub fn add_symbol(&mut self, symbol: &str) -> Result<(), String> {
        if symbol.is_empty()
            || symbol.len() > 20
            || !symbol
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "{symbol:?} is not an upper-case symbol such as BTCUSDT"
            ));
        }
        if self
            .slots
            .iter()
            .any(|s| s.symbols.iter().any(|x| x == symbol))
        {
            return Err(format!("{symbol} is already subscribed"));
        }
        let streams: Vec<String> = self
            .kinds
            .iter()
            .map(|&k| crate::stream::stream_name(symbol, k))
            .collect();
        let index = self.register(symbol)?;
        let limit = self.symbols_per_connection;
        let per_symbol = self.streams_per_symbol.max(1);
        let room = |s: &&mut SlotInfo| {
            s.symbols.len() < limit
                && (s.symbols.len() + 1) * per_symbol <= crate::config::STREAMS_PER_CONNECTION_MAX
        };
        let Some(slot) = self
            .slots
            .iter_mut()
            .filter(room)
            .min_by_key(|s| s.symbols.len())
        else {
            return self.open_connection(symbol, index, streams);
        };
        slot.commands
            .send(Command::Subscribe {
                symbol: symbol.to_string(),
                index,
                streams,
            })
            .map_err(|_| "the connection has stopped".to_string())?;
        slot.symbols.push(symbol.to_string());
        Ok(())
    }

    /// `symbol`'s index in the registry, added at the end if new.
    fn register(&mut self, symbol: &str) -> Result<u16, String> {
        let mut symbols = crate::sync::write(&self.symbols);
        let index = match symbols.iter().position(|s| s == symbol) {
            Some(at) => at,
            None => {
                symbols.push(symbol.to_string());
                symbols.len() - 1
            }
        };
        u16::try_from(index).map_err(|_| "too many symbols".to_string())
    }

    /// Opens a connection for `symbol` alone on the next reader in turn (every slot is full).
    fn open_connection(
        &mut self,
        symbol: &str,
        index: u16,
        streams: Vec<String>,
    ) -> Result<(), String> {
        if self.openers.is_empty() {
            return Err("no reader runs".into());
        }
        let reader = self.slots.len() % self.openers.len();
        let (commands, receiver) = tokio::sync::mpsc::unbounded_channel();
        let stats = Arc::new(ConnectionStats::on_reader(reader));
        self.openers[reader]
            .send(NewConnection {
                streams,
                commands: receiver,
                symbols: vec![(symbol.to_string(), index)],
                stats: stats.clone(),
            })
            .map_err(|_| "the reader has stopped".to_string())?;
        crate::sync::write(&self.connection_stats).push(stats);
        tracing::info!(
            symbol,
            reader,
            connection = self.slots.len(),
            "every connection is full: opening another"
        );
        self.slots.push(SlotInfo {
            commands,
            symbols: vec![symbol.to_string()],
        });
        Ok(())
    }

    /// Removes `symbol`'s streams at run time with an UNSUBSCRIBE.
    pub fn remove_symbol(&mut self, symbol: &str) -> Result<(), String> {
        self.unsubscribe(symbol, false)
    }

    /// Removes `symbol`'s streams because its trading stopped (exchangeInfo status HALT or
    /// BREAK): as [`Feed::remove_symbol`], and the consumers mark its book halted.
    pub fn halt_symbol(&mut self, symbol: &str) -> Result<(), String> {
        self.unsubscribe(symbol, true)
    }

    fn unsubscribe(&mut self, symbol: &str, halted: bool) -> Result<(), String> {
        let index = crate::sync::read(&self.symbols)
            .iter()
            .position(|s| s == symbol)
            .ok_or_else(|| format!("{symbol} is not subscribed"))?;
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.symbols.iter().any(|x| x == symbol))
            .ok_or_else(|| format!("{symbol} is not subscribed"))?;
        let streams = self
            .kinds
            .iter()
            .map(|&k| crate::stream::stream_name(symbol, k))
            .collect();
        slot.commands
            .send(Command::Unsubscribe {
                index: index as u16,
                streams,
                halted,
            })
            .map_err(|_| "the connection has stopped".to_string())?;
        slot.symbols.retain(|x| x != symbol);
        Ok(())
    }

    /// Connections the feed runs (slots), those opened at run time included.
    pub fn connection_count(&self) -> usize {
        self.slots.len()
    }

    /// Every symbol subscribed so far, in index order.
    pub fn symbols(&self) -> Vec<String> {
        crate::sync::read(&self.symbols).clone()
    }

    /// The registry of every symbol subscribed so far, in index order (shared: it grows as
    /// symbols are added).
    pub fn registry(&self) -> Arc<RwLock<Vec<String>>> {
        self.symbols.clone()
    }

    /// Stops every reader (connections closed) and returns their reports.
    pub fn stop(self) -> Vec<ReaderReport> {
        let _ = self.stop.send(true);
        self.readers
            .into_iter()
            .filter_map(|r| r.join().ok())
            .collect()
    }
}

/// What the counting consumer saw.
pub struct Tally {
    /// Events per stream kind.
    pub events: [u64; 4],
    /// Enqueue-to-dequeue latency, nanoseconds.
    pub queue_to_consumer: Histogram<u64>,
    /// The gap notices' ranges (bounded: counts, the first few, the file if asked).
    pub gaps: GapReport,
    /// Notices received.
    pub notice_count: u64,
}

impl Tally {
    /// Nothing counted: the tally of a run whose rings all have another consumer.
    fn empty(gaps: GapLog) -> Tally {
        Tally {
            events: [0; 4],
            queue_to_consumer: latency_histogram(),
            gaps: gaps.finish(),
            notice_count: 0,
        }
    }
}

/// The counting consumer of a run: its thread, or no thread when it would have no ring.
enum Counter {
    Thread(JoinHandle<Tally>),
    Unneeded(Box<Tally>),
}

/// Starts the counting consumer: it drains `events` (one ring per reader) and `notices` until
/// `done` is set and everything is drained, idling with `idle` (whose bell the readers and the
/// stop ring). Stands in for the sinks: it measures and counts. The gap notices' ranges go
/// into `gaps`, named from `symbols` (the feed's registry).
pub fn spawn_counter(
    (events, notices): (Vec<rtrb::Consumer<FeedEvent>>, Vec<rtrb::Consumer<Notice>>),
    (symbols, gaps): (Arc<RwLock<Vec<String>>>, GapLog),
    done: Arc<AtomicBool>,
    idle: ThreadIdle,
) -> std::io::Result<JoinHandle<Tally>> {
    std::thread::Builder::new()
        .name("hotpath-counter".into())
        .spawn(move || count((events, notices), (symbols, gaps), done, idle))
}

fn count(
    (mut events, mut notices): (Vec<rtrb::Consumer<FeedEvent>>, Vec<rtrb::Consumer<Notice>>),
    (symbols, mut gaps): (Arc<RwLock<Vec<String>>>, GapLog),
    done: Arc<AtomicBool>,
    mut idle: ThreadIdle,
) -> Tally {
    let mut tally = Tally {
        events: [0; 4],
        queue_to_consumer: latency_histogram(),
        gaps: GapReport::default(),
        notice_count: 0,
    };
    loop {
        let finishing = done.load(Ordering::Acquire);
        let mut work = 0;
        for ring in events.iter_mut() {
            while let Ok(event) = ring.pop() {
                if event.is_announcement() {
                    // Not an event: ids this consumer lost (counted as queue drops).
                    continue;
                }
                tally.events[event.kind as usize] += 1;
                let latency = monotonic_ns().saturating_sub(event.recv_time_ns).max(1);
                let _ = tally
                    .queue_to_consumer
                    .record(latency.min(tally.queue_to_consumer.high()));
                work += 1;
            }
        }
        for ring in notices.iter_mut() {
            while let Ok(notice) = ring.pop() {
                tally.notice_count += 1;
                if notice.cause.is_gap() {
                    let name = crate::sync::read(&symbols)
                        .get(usize::from(notice.gap.symbol))
                        .cloned()
                        .unwrap_or_default();
                    if let Some(range) = notice.range(name) {
                        gaps.record(range);
                    }
                }
                work += 1;
            }
        }
        if finishing && work == 0 {
            tally.gaps = gaps.finish();
            return tally;
        }
        idle.idle(work, || {
            (!finishing && done.load(Ordering::Acquire))
                || events.iter().any(|r| !r.is_empty())
                || notices.iter().any(|r| !r.is_empty())
        });
    }
}

/// Gaps seen.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Gaps {
    /// Gaps on the wire.
    pub count: u64,
    /// Ids missing in them.
    pub missing_ids: u64,
    /// The ranges (wire gaps and queue drops): counted per symbol, stream and cause, the
    /// first few listed, every one in `run.gaps_file` when set ([`crate::gaps`]).
    #[serde(flatten)]
    pub ranges: GapReport,
}

/// Per-reader facts.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReaderSummary {
    /// The core asked for.
    pub core: usize,
    /// Whether pinning succeeded.
    pub pinned: bool,
    /// The CPUs the kernel let the thread run on.
    pub cpus_allowed: String,
}

/// The one-line JSON summary of a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Binary frames received.
    pub frames: u64,
    /// Events accepted per stream.
    pub events: std::collections::BTreeMap<&'static str, u64>,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Gaps.
    pub gaps: Gaps,
    /// Frames that failed to decode.
    pub decode_errors: u64,
    /// JSON market-data frames that did not parse or convert (`feed.format = "json"`).
    pub json_malformed: u64,
    /// Closed klines received on the JSON kline streams (handed to the sidecar's check).
    pub stream_klines: u64,
    /// Closed stream klines the sidecar's kline ring had no room for.
    pub stream_klines_dropped: u64,
    /// Frames of unknown templates.
    pub unknown_templates: u64,
    /// Frames of another schema.
    pub schema_mismatches: u64,
    /// Frames of symbols not configured.
    pub unknown_symbols: u64,
    /// Events dropped because a consumer's ring was full.
    pub queue_drops: u64,
    /// Gap notices that found the sidecar's notice ring full and were merged into a waiting
    /// one of their stream (nothing is dropped: the merged notice names their ids).
    pub notice_drops: u64,
    /// Connections opened.
    pub connects: u64,
    /// Connections replaced or lost.
    pub reconnects: u64,
    /// Make-before-break switches.
    pub switches: u64,
    /// Dual mode: connections moved to the JSON streams.
    pub fallbacks_to_json: u64,
    /// Dual mode: connections moved back to SBE.
    pub returns_to_sbe: u64,
    /// SUBSCRIBE/UNSUBSCRIBE requests Binance refused (error reply); each was retried.
    pub control_errors: u64,
    /// SUBSCRIBE/UNSUBSCRIBE requests left without a reply in time; each was retried.
    pub control_timeouts: u64,
    /// Latencies.
    pub latency_ns: std::collections::BTreeMap<&'static str, Percentiles>,
    /// Readers.
    pub readers: Vec<ReaderSummary>,
    /// Where the other threads were pinned ([`CorePlan`]; `null`: not pinned).
    pub cores: CorePlan,
    /// Per sink (`kinesis`, `redis`): written, retried, dead-lettered, latency.
    pub sinks: std::collections::BTreeMap<&'static str, SinkSummary>,
    /// The sidecar, when it ran: notices, trade gaps, ids requested, repaired and given up
    /// (per sink), REST pages, time from gap notice to repair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarSummary>,
}

impl Summary {
    /// Builds the summary from the counters, the reader reports and the consumer's tally.
    pub fn new(stats: &[Arc<ReaderStats>], reports: &[ReaderReport], tally: &Tally) -> Summary {
        let sum = |f: &dyn Fn(&ReaderStats) -> u64| stats.iter().map(|s| f(s)).sum::<u64>();
        let mut wire_to_queue = latency_histogram();
        for report in reports {
            let _ = wire_to_queue.add(&report.wire_to_queue);
        }
        let ranges = tally.gaps.clone();
        Summary {
            frames: sum(&|s| s.frames.get()),
            events: StreamKind::ALL
                .iter()
                .map(|k| (k.suffix(), sum(&|s| s.events_of(*k))))
                .collect(),
            duplicates: sum(&|s| s.duplicates.get()),
            gaps: Gaps {
                count: sum(&|s| s.gaps.get()),
                missing_ids: sum(&|s| s.missing_ids.get()),
                ranges,
            },
            decode_errors: sum(&|s| s.decode_errors.get()),
            json_malformed: sum(&|s| s.json_malformed.get()),
            stream_klines: sum(&|s| s.stream_klines.get()),
            stream_klines_dropped: sum(&|s| s.stream_klines_dropped.get()),
            unknown_templates: sum(&|s| s.unknown_templates.get()),
            schema_mismatches: sum(&|s| s.schema_mismatches.get()),
            unknown_symbols: sum(&|s| s.unknown_symbols.get()),
            queue_drops: sum(&|s| s.queue_drops.get()),
            notice_drops: sum(&|s| s.notice_drops.get()),
            connects: sum(&|s| s.connects.get()),
            reconnects: sum(&|s| s.reconnects.get()),
            switches: sum(&|s| s.switches.get()),
            fallbacks_to_json: sum(&|s| s.fallbacks_to_json.get()),
            returns_to_sbe: sum(&|s| s.returns_to_sbe.get()),
            control_errors: sum(&|s| s.control_errors.get()),
            control_timeouts: sum(&|s| s.control_timeouts.get()),
            latency_ns: [
                ("wire_to_queue", Percentiles::of(&wire_to_queue)),
                (
                    "queue_to_consumer",
                    Percentiles::of(&tally.queue_to_consumer),
                ),
            ]
            .into_iter()
            .collect(),
            readers: reports
                .iter()
                .map(|r| ReaderSummary {
                    core: r.core,
                    pinned: r.pinned,
                    cpus_allowed: r.cpus_allowed.clone(),
                })
                .collect(),
            sinks: std::collections::BTreeMap::new(),
            sidecar: None,
            cores: CorePlan::default(),
        }
    }
}

/// How long the sinks may take to flush once the readers stopped; the records left then are
/// dead-lettered (both sinks), and Redis state keys left unwritten make `flushed` false.
pub const SINK_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the Kinesis writer may take to check (or create) its streams at start.
const KINESIS_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The rustls client configuration of the feed's WebSocket and the REST client: trusting
/// `binance.trust_cert` if set, else [`crate::tls::default_client_config`].
pub fn client_tls(config: &RunConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    match &config.trust_cert {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("binance.trust_cert: cannot read {}: {e}", path.display()))?;
            Ok(Arc::new(
                crate::tls::client_config_trusting(&pem)
                    .map_err(|e| format!("binance.trust_cert: {e}"))?,
            ))
        }
        None => crate::tls::default_client_config().map_err(|e| format!("TLS: {e}")),
    }
}

/// A sink's thread and its live counters.
pub struct SinkHandle {
    /// `kinesis` or `redis`.
    pub name: &'static str,
    /// Live counters.
    pub stats: Arc<SinkStats>,
    thread: JoinHandle<Result<SinkSummary, crate::sink::SinkError>>,
}

/// Options of [`run_with`] beyond the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// A ready Kinesis client (tests, emulators); `None` builds one from the AWS chain.
    pub kinesis_client: Option<aws_sdk_kinesis::Client>,
    /// How long each sink's final flush may take; `None`: [`SINK_FLUSH_TIMEOUT`].
    pub sink_flush_timeout: Option<Duration>,
}

/// Runs the feed until `wait` returns, then stops, drains and summarizes. With sinks
/// configured, each drains its own rings; without any, the counting consumer does.
pub fn run(
    config: &RunConfig,
    api_key: ApiKey,
    wait: impl FnOnce(&mut Feed, &[SinkHandle]),
) -> Result<Summary, String> {
    run_with(config, api_key, RunOptions::default(), wait)
}

/// [`run`] with [`RunOptions`].
pub fn run_with(
    config: &RunConfig,
    api_key: ApiKey,
    options: RunOptions,
    wait: impl FnOnce(&mut Feed, &[SinkHandle]),
) -> Result<Summary, String> {
    let sinks_wanted = usize::from(config.kinesis.is_some())
        + usize::from(config.postgres.is_some())
        + usize::from(config.s3_archives())
        + usize::from(config.redis.is_some());
    // Built before anything starts, so a bad REST base fails the run at once.
    let rest = if config.sidecar_runs() && config.sidecar.enabled {
        Some(sidecar_rest(config)?)
    } else {
        None
    };
    let books = book_clients(config)?;
    let cores = config.core_plan();
    let mut bells = RunBells::new();
    let (mut feed, mut rings) = start_with(config, api_key, bells.readers(config))?;
    let flush_timeout = options.sink_flush_timeout.unwrap_or(SINK_FLUSH_TIMEOUT);
    // The sinks' counters, made first: the sidecar reads their trade tallies.
    let interval_ms = config.sidecar.kline_interval_ms.unwrap_or(60_000);
    warn_unjudged_stream_klines(config, interval_ms);
    let sink_stats: Vec<Arc<SinkStats>> = (0..sinks_wanted)
        .map(|_| {
            Arc::new(SinkStats {
                tally: Arc::new(TradeTally::new(interval_ms)),
                ..SinkStats::default()
            })
        })
        .collect();
    let (sidecar, mut repairs, book_requests) = if config.sidecar_runs() {
        let notices = std::mem::take(&mut rings.notices);
        let symbols = feed.symbols.clone();
        let mut detect = detect_setup(config, &feed, &sink_stats);
        detect.stream_klines = std::mem::take(&mut rings.klines);
        let (sidecar, repairs, book_requests) = start_sidecar(
            config,
            (rest, books),
            notices,
            (symbols, detect),
            &bells,
            (flush_timeout, cores.sidecar),
        )?;
        feed.sidecar = Some(sidecar.stats.clone());
        let repairs = repairs.into_iter().map(Some).collect();
        (Some(sidecar), repairs, book_requests)
    } else {
        (None, Vec::new(), BookRequests::default())
    };
    let done = Arc::new(AtomicBool::new(false));
    let sinks_stop = Arc::new(AtomicBool::new(false));
    // Without sinks the counting consumer drains the events; without the sidecar, the notices.
    let events = if sinks_wanted == 0 {
        rings.events.pop().unwrap_or_default()
    } else {
        Vec::new()
    };
    let counter_idle = bells.counter_idle(config.idle);
    // The file of every gap range belongs to whoever drains the notices.
    let counter_gaps = if config.sidecar_runs() {
        GapLog::new(None)
    } else {
        GapLog::new(config.gaps_file.as_deref())
    };
    let notices = std::mem::take(&mut rings.notices);
    // With sinks and the sidecar every ring has its consumer: a counting thread would only wake
    // on its idle timers (up to 100 times a second) to find nothing, so none is started.
    let counter = if events.is_empty() && notices.is_empty() {
        Counter::Unneeded(Box::new(Tally::empty(counter_gaps)))
    } else {
        Counter::Thread(
            spawn_counter(
                (events, notices),
                (feed.registry(), counter_gaps),
                done.clone(),
                counter_idle,
            )
            .map_err(|e| format!("cannot start the consumer: {e}"))?,
        )
    };
    let mut wiring = SinkWiring {
        events: rings.events.drain(..).collect(),
        repairs: repairs.drain(..).collect(),
        hold_max: match (&sidecar, config.sidecar.enabled) {
            (Some(_), true) => config.sidecar.hold_max,
            _ => Duration::ZERO,
        },
        book_requests,
        stop: sinks_stop.clone(),
        flush_timeout,
        kinesis_client: options.kinesis_client,
        kinesis_bell: bells.kinesis.clone(),
        postgres_bell: bells.postgres.clone(),
        s3_bell: bells.s3.clone(),
        redis_bell: bells.redis.clone(),
        sidecar_bell: bells.sidecar.clone(),
        stats: sink_stats.into_iter().collect(),
        cores,
    };
    let mut sinks = Vec::new();
    let outcome = start_sinks(config, &mut wiring, &mut sinks);
    if outcome.is_ok() {
        wait(&mut feed, &sinks);
    }
    let stats = feed.stats.clone();
    let reports = feed.stop();
    // The sidecar finishes the repairs of what the readers saw, then the sinks drain it all.
    let sidecar_report = join_sidecar(sidecar);
    sinks_stop.store(true, Ordering::Release);
    bells.kinesis.wake();
    bells.postgres.wake();
    bells.s3.wake();
    bells.redis.wake();
    let (sink_summaries, sink_failure) = join_sinks(sinks);
    let failure = outcome
        .err()
        .or(sidecar_report.as_ref().err().cloned())
        .or(sink_failure);
    let sidecar_report = sidecar_report.ok().flatten();
    done.store(true, Ordering::Release);
    bells.counter.wake();
    let mut tally = match counter {
        Counter::Thread(thread) => thread
            .join()
            .map_err(|_| "the consumer thread panicked".to_string())?,
        Counter::Unneeded(tally) => *tally,
    };
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(report) = &sidecar_report {
        tally.gaps = report.gaps.clone();
    }
    let mut summary = Summary::new(&stats, &reports, &tally);
    summary.sinks = sink_summaries;
    summary.sidecar = sidecar_report.map(|r| r.summary);
    summary.cores = cores;
    Ok(summary)
}

/// Every consumer's bell in a run (a bell nobody waits on costs nothing).
struct RunBells {
    /// The counting consumer's (a thread: it parks on `counter_parker`).
    counter: Bell,
    counter_parker: Option<crossbeam_utils::sync::Parker>,
    kinesis: Bell,
    postgres: Bell,
    s3: Bell,
    redis: Bell,
    sidecar: Bell,
}

impl RunBells {
    fn new() -> RunBells {
        let (counter, parker) = Bell::thread();
        RunBells {
            counter,
            counter_parker: Some(parker),
            kinesis: Bell::task(),
            postgres: Bell::task(),
            s3: Bell::task(),
            redis: Bell::task(),
            sidecar: Bell::task(),
        }
    }

    /// The sinks' bells, in sink order (Kinesis, PostgreSQL, S3, then Redis), as their rings.
    fn sinks(&self, config: &RunConfig) -> Vec<Bell> {
        let mut bells = Vec::new();
        if config.kinesis.is_some() {
            bells.push(self.kinesis.clone());
        }
        if config.postgres.is_some() {
            bells.push(self.postgres.clone());
        }
        if config.s3_archives() {
            bells.push(self.s3.clone());
        }
        if config.redis.is_some() {
            bells.push(self.redis.clone());
        }
        bells
    }

    /// What the readers ring: the sinks (or, without sinks, the counting consumer) for events;
    /// the sidecar (or, without it, the counting consumer) for notices.
    fn readers(&self, config: &RunConfig) -> Bells {
        let sinks = self.sinks(config);
        Bells {
            events: if sinks.is_empty() {
                vec![self.counter.clone()]
            } else {
                sinks
            },
            notices: if config.sidecar_runs() {
                self.sidecar.clone()
            } else {
                self.counter.clone()
            },
        }
    }

    /// The counting consumer's idle side (once).
    fn counter_idle(&mut self, strategy: IdleStrategy) -> ThreadIdle {
        let parker = self.counter_parker.take().unwrap_or_default();
        ThreadIdle::new(strategy, self.counter.clone(), parker)
    }
}

/// What the sidecar's detection needs: the readers' clock, the connection of each symbol, each
/// sink's tally, and the kline check (every `redis.consistency_check_s`, 60 s without Redis).
fn detect_setup(config: &RunConfig, feed: &Feed, sinks: &[Arc<SinkStats>]) -> DetectSetup {
    let every = config
        .redis
        .as_ref()
        .map_or(Some(Duration::from_secs(60)), |r| r.consistency_check);
    DetectSetup {
        clock: Some(feed.clock.clone()),
        silence: config.sidecar.stream_silence.unwrap_or(Duration::ZERO),
        connections: feed.connections.clone(),
        tallies: sinks.iter().map(|s| s.tally.clone()).collect(),
        klines: config
            .sidecar
            .kline_interval_ms
            .zip(every)
            .map(|(ms, every)| (ms, config.sidecar.kline_lateness, every)),
        stream_klines: Vec::new(),
        stream_lateness: config.sidecar.kline_lateness,
    }
}

/// Tells the sidecar the readers have stopped and waits for it to finish its repairs.
fn join_sidecar(sidecar: Option<SidecarRun>) -> Result<Option<SidecarReport>, String> {
    let Some(sidecar) = sidecar else {
        return Ok(None);
    };
    sidecar.done.store(true, Ordering::Release);
    sidecar.bell.wake();
    sidecar
        .thread
        .join()
        .map(Some)
        .map_err(|_| "the sidecar panicked".to_string())
}

/// Waits for every sink (told to stop); their summaries by name, and the first failure.
fn join_sinks(
    sinks: Vec<SinkHandle>,
) -> (
    std::collections::BTreeMap<&'static str, SinkSummary>,
    Option<String>,
) {
    let mut summaries = std::collections::BTreeMap::new();
    let mut failure = None;
    for sink in sinks {
        match sink.thread.join() {
            Ok(Ok(summary)) => {
                summaries.insert(sink.name, summary);
            }
            Ok(Err(e)) => failure = failure.or(Some(e.to_string())),
            Err(_) => failure = failure.or(Some(format!("the {} writer panicked", sink.name))),
        }
    }
    (summaries, failure)
}

/// The sidecar's REST client, for `sidecar.rest_endpoint` or the base derived from the feed.
fn sidecar_rest(config: &RunConfig) -> Result<RestClient, String> {
    let base = config.sidecar.rest_base(&config.endpoint);
    let mut client = RestClient::new(&base, Some(client_tls(config)?))
        .map_err(|e| format!("sidecar: REST {base}: {e}"))?;
    client.set_format(config.rest_format);
    Ok(client)
}

/// The REST clients the sidecar fetches the Redis writer's depth snapshots with
/// (`redis.snapshot_concurrency` of them, on `redis.rest_endpoint` or the base derived from the
/// feed), when Redis runs.
fn book_clients(config: &RunConfig) -> Result<Vec<RestClient>, String> {
    let Some(redis) = &config.redis else {
        return Ok(Vec::new());
    };
    let base = redis.rest_base(&config.endpoint);
    let tls = client_tls(config)?;
    (0..redis.snapshot_concurrency)
        .map(|_| {
            let mut client = RestClient::new(&base, Some(tls.clone()))?;
            client.set_format(config.rest_format);
            Ok::<_, RestError>(client)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("redis.rest_endpoint: REST {base}: {e}"))
}

/// The running sidecar thread, its stop flag and counters.
struct SidecarRun {
    thread: JoinHandle<SidecarReport>,
    done: Arc<AtomicBool>,
    stats: Arc<SidecarStats>,
    bell: Bell,
}

/// The Redis writer's end of its snapshot request ring, and the S3 writer's end of the ring
/// of the snapshots fetched for it (when `s3.snapshot_queue` > 0).
#[derive(Default)]
struct BookRequests {
    requests: Option<rtrb::Producer<BookRequest>>,
    archive: Option<rtrb::Consumer<Box<crate::archive::snapshots::FetchedSnapshot>>>,
}

/// Starts the sidecar on the readers' notice rings with one repair ring per sink, trade repair
/// with `rest` (when `sidecar.enabled`), and, with `book_clients` (when Redis runs), the Redis
/// writer's depth snapshots; returns it, the sinks' ends of the repair rings, in sink order,
/// and the Redis writer's end of its request ring.
fn start_sidecar(
    config: &RunConfig,
    (rest, book_clients): (Option<RestClient>, Vec<RestClient>),
    notices: Vec<rtrb::Consumer<Notice>>,
    (symbols, detect): (Arc<RwLock<Vec<String>>>, DetectSetup),
    bells: &RunBells,
    (flush_timeout, core): (Duration, Option<usize>),
) -> Result<(SidecarRun, Vec<rtrb::Consumer<Repair>>, BookRequests), String> {
    let repair_bells = bells.sinks(config);
    let sinks = repair_bells.len();
    let (producers, consumers) = (0..sinks)
        .map(|_| rtrb::RingBuffer::new(crate::constants::REPAIR_RING_CAPACITY))
        .unzip();
    let (book_requests, books) = if book_clients.is_empty() {
        (BookRequests::default(), None)
    } else {
        let (requests, ring) = rtrb::RingBuffer::new(crate::constants::BOOK_REQUEST_RING_CAPACITY);
        let queue = config
            .s3
            .as_ref()
            .filter(|s| s.enabled)
            .map_or(0, |s| s.snapshot_queue);
        let (archive, archived) = match queue {
            0 => (None, None),
            n => {
                let (producer, consumer) = rtrb::RingBuffer::new(n);
                (Some((producer, bells.s3.clone())), Some(consumer))
            }
        };
        let books = crate::sidecar::books::BookSetup {
            // Redis is the last sink.
            requests: vec![(sinks.saturating_sub(1), ring)],
            clients: book_clients,
            weight_budget: crate::binance::rest::DEFAULT_WEIGHT_BUDGET,
            archive,
        };
        let rings = BookRequests {
            requests: Some(requests),
            archive: archived,
        };
        (rings, Some(books))
    };
    let stats = Arc::new(SidecarStats::default());
    let done = Arc::new(AtomicBool::new(false));
    let thread = crate::sidecar::thread::spawn(SidecarSetup {
        notices,
        repairs: producers,
        symbols,
        rest,
        give_up_after: config.sidecar.give_up_after,
        stats: stats.clone(),
        done: done.clone(),
        flush_timeout,
        books,
        idle: config.sidecar.idle,
        bell: bells.sidecar.clone(),
        repair_bells,
        detect,
        core,
        gaps_file: config.gaps_file.clone(),
    })
    .map_err(|e| format!("cannot start the sidecar: {e}"))?;
    let run = SidecarRun {
        thread,
        done,
        stats,
        bell: bells.sidecar.clone(),
    };
    Ok((run, consumers, book_requests))
}

/// What the sinks are started with: their rings, in sink order (Kinesis, PostgreSQL, S3, then
/// Redis: Redis stays last, the sidecar's book requests assume it).
struct SinkWiring {
    events: std::collections::VecDeque<Vec<rtrb::Consumer<FeedEvent>>>,
    repairs: std::collections::VecDeque<Option<rtrb::Consumer<Repair>>>,
    hold_max: Duration,
    /// The Redis writer's snapshot requests to the sidecar.
    book_requests: BookRequests,
    stop: Arc<AtomicBool>,
    flush_timeout: Duration,
    kinesis_client: Option<aws_sdk_kinesis::Client>,
    kinesis_bell: Bell,
    postgres_bell: Bell,
    s3_bell: Bell,
    redis_bell: Bell,
    sidecar_bell: Bell,
    /// Each sink's counters, in sink order.
    stats: std::collections::VecDeque<Arc<SinkStats>>,
    /// Where the writers are pinned.
    cores: CorePlan,
}

/// Starts the configured sinks into `sinks`. The Kinesis writer's streams are checked before
/// the run counts as started (its rings are drained meanwhile).
fn start_sinks(
    config: &RunConfig,
    wiring: &mut SinkWiring,
    sinks: &mut Vec<SinkHandle>,
) -> Result<(), String> {
    let mut kinesis_checked = None;
    if let Some(kinesis) = &config.kinesis {
        let (ready, checked) = std::sync::mpsc::channel();
        let stats = wiring.stats.pop_front().unwrap_or_default();
        let thread =
            crate::sink::kinesis::writer::spawn(crate::sink::kinesis::writer::KinesisSink {
                config: kinesis.clone(),
                client: wiring.kinesis_client.take(),
                rings: wiring.events.pop_front().unwrap_or_default(),
                repairs: wiring.repairs.pop_front().flatten(),
                hold_max: wiring.hold_max,
                stats: stats.clone(),
                stop: wiring.stop.clone(),
                flush_timeout: wiring.flush_timeout,
                core: wiring.cores.kinesis,
                ready,
                bell: wiring.kinesis_bell.clone(),
                klines: config.klines.clone(),
            })
            .map_err(|e| format!("cannot start the Kinesis writer: {e}"))?;
        sinks.push(SinkHandle {
            name: "kinesis",
            stats,
            thread,
        });
        kinesis_checked = Some(checked);
    }
    if let Some(postgres) = &config.postgres {
        sinks.push(start_postgres(postgres, wiring)?);
    }
    if let Some(s3) = config.s3.as_ref().filter(|s| s.enabled) {
        sinks.push(start_s3(s3, wiring)?);
    }
    if let Some(redis) = &config.redis {
        let stats = wiring.stats.pop_front().unwrap_or_default();
        let thread = crate::sink::redis::writer::spawn(crate::sink::redis::writer::RedisSink {
            config: redis.clone(),
            symbols: config.symbols.clone(),
            rings: wiring.events.pop_front().unwrap_or_default(),
            repairs: wiring.repairs.pop_front().flatten(),
            book_requests: wiring.book_requests.requests.take(),
            hold_max: wiring.hold_max,
            stats: stats.clone(),
            stop: wiring.stop.clone(),
            flush_timeout: wiring.flush_timeout,
            core: wiring.cores.redis,
            bell: wiring.redis_bell.clone(),
            sidecar_bell: wiring.sidecar_bell.clone(),
            klines: config.klines.clone(),
        })
        .map_err(|e| format!("cannot start the Redis writer: {e}"))?;
        sinks.push(SinkHandle {
            name: "redis",
            stats,
            thread,
        });
    }
    match kinesis_checked {
        Some(checked) => checked
            .recv_timeout(KINESIS_CHECK_TIMEOUT)
            .map_err(|_| "kinesis: the stream check did not finish in 60 s".to_string())
            .and_then(|checked| checked.map_err(|e| e.to_string())),
        None => Ok(()),
    }
}

/// Starts the PostgreSQL writer on its rings (the next in sink order).
fn start_postgres(
    postgres: &crate::config::postgres::PostgresConfig,
    wiring: &mut SinkWiring,
) -> Result<SinkHandle, String> {
    use crate::sink::postgres::writer::{PostgresSink, spawn};
    let stats = wiring.stats.pop_front().unwrap_or_default();
    let thread = spawn(PostgresSink {
        config: postgres.clone(),
        rings: wiring.events.pop_front().unwrap_or_default(),
        repairs: wiring.repairs.pop_front().flatten(),
        hold_max: wiring.hold_max,
        stats: stats.clone(),
        stop: wiring.stop.clone(),
        // A cold path: beside the sidecar, off the readers' cores.
        core: wiring.cores.sidecar,
        flush_timeout: wiring.flush_timeout,
        bell: wiring.postgres_bell.clone(),
    })
    .map_err(|e| format!("cannot start the PostgreSQL writer: {e}"))?;
    Ok(SinkHandle {
        name: "postgres",
        stats,
        thread,
    })
}

/// Starts the S3 archive writer on its rings (the next in sink order).
fn start_s3(
    s3: &crate::config::s3::S3Config,
    wiring: &mut SinkWiring,
) -> Result<SinkHandle, String> {
    use crate::sink::s3::{S3Sink, spawn};
    let stats = wiring.stats.pop_front().unwrap_or_default();
    let thread = spawn(S3Sink {
        config: s3.clone(),
        rings: wiring.events.pop_front().unwrap_or_default(),
        repairs: wiring.repairs.pop_front().flatten(),
        snapshots: wiring.book_requests.archive.take(),
        hold_max: wiring.hold_max,
        stats: stats.clone(),
        stop: wiring.stop.clone(),
        // A cold path: beside the sidecar, off the readers' cores.
        core: wiring.cores.sidecar,
        flush_timeout: wiring.flush_timeout,
        bell: wiring.s3_bell.clone(),
    })
    .map_err(|e| format!("cannot start the S3 archive writer: {e}"))?;
    Ok(SinkHandle {
        name: "s3",
        stats,
        thread,
    })
}
