//! Reader threads: each an OS thread pinned to a configured core, running its WebSocket
//! connections on its own single-threaded tokio runtime. Per binary frame it decodes in place,
//! checks the sequence, drops duplicates, and pushes one [`FeedEvent`] into each consumer's
//! lock-free SPSC ring. A full ring never blocks it: the event is counted as dropped for that
//! consumer and a repair notice goes to the sidecar's ring.
//!
//! Architecture invariants: nothing here logs per message or allocates per message (the frame's
//! `Bytes` comes from the WebSocket layer and is shared with consumers by reference count); a
//! connection is replaced make-before-break (the old one is read until the new one has
//! delivered and the overlap window has passed, and the sequencer drops the overlap's
//! duplicates), so a lifetime end or `serverShutdown` loses nothing.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::event::{Cause, FeedEvent, Notice};
use super::sequence::{Sequencer, Verdict};
use super::stats::ReaderStats;
use crate::backoff::{AttemptBudget, Backoff};
use crate::clock::monotonic_ns;
use crate::config::{ApiKey, ReaderSettings};
use crate::metrics::{LATENCY_MAX_NS, latency_histogram};
use crate::sbe::{self, DecodeError, Limits, spot_stream::Message as Sbe};
use crate::stream::StreamKind;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages processed back to back before the connection task selects again.
const DRAIN_MAX: usize = 256;
/// What every reader shares: where to connect, with which key and trust, and the settings.
pub struct FeedContext {
    /// `ws://` or `wss://` base; connections go to `<endpoint>/stream?streams=...`.
    pub endpoint: String,
    /// Sent as `X-MBX-APIKEY`; never logged.
    pub api_key: ApiKey,
    /// A TLS client configuration (a trusted simulator certificate); `None` uses webpki roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Configured symbols, upper case; an event's `symbol` is an index into this list.
    pub symbols: Vec<String>,
    /// Reader settings.
    pub settings: ReaderSettings,
    /// Connection attempts left in Binance's per-IP window, shared by every connection.
    pub budget: Mutex<AttemptBudget>,
    /// Flips to `true` to stop every reader.
    pub stop: watch::Receiver<bool>,
}

/// A change of a connection's streams at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Add a symbol's streams.
    Subscribe {
        /// Upper-case symbol.
        symbol: String,
        /// Its index in the feed's symbol registry.
        index: u16,
        /// Its stream names.
        streams: Vec<String>,
    },
    /// Remove a symbol's streams.
    Unsubscribe {
        /// Its index in the feed's symbol registry.
        index: u16,
        /// Its stream names.
        streams: Vec<String>,
    },
}

/// How often a connection may send a SUBSCRIBE or UNSUBSCRIBE: under three per second, so with
/// pongs it stays within Binance's five incoming messages per second.
const CONTROL_INTERVAL: Duration = Duration::from_millis(350);

/// The connections one reader runs and the rings it fills.
pub struct ReaderSetup {
    /// Reader index, for names and seeds.
    pub index: usize,
    /// Core to pin to.
    pub core: usize,
    /// Stream names per connection, and the connection's command channel.
    pub connections: Vec<(Vec<String>, tokio::sync::mpsc::UnboundedReceiver<Command>)>,
    /// One ring per consumer.
    pub producers: Vec<rtrb::Producer<FeedEvent>>,
    /// Repair notices for the sidecar.
    pub notices: rtrb::Producer<Notice>,
    /// This reader's counters.
    pub stats: Arc<ReaderStats>,
}

/// What a reader thread reports when it ends.
pub struct ReaderReport {
    /// Reader index.
    pub index: usize,
    /// The core it asked for.
    pub core: usize,
    /// Whether pinning succeeded.
    pub pinned: bool,
    /// The CPUs the thread was allowed to run on, as the kernel reported (`Cpus_allowed_list`).
    pub cpus_allowed: String,
    /// Receive-to-enqueue latency of every accepted event, nanoseconds.
    pub wire_to_queue: Histogram<u64>,
}

/// Starts a reader thread.
pub fn spawn(
    setup: ReaderSetup,
    ctx: Arc<FeedContext>,
) -> std::io::Result<std::thread::JoinHandle<ReaderReport>> {
    std::thread::Builder::new()
        .name(format!("hotpath-reader-{}", setup.index))
        .spawn(move || run_reader(setup, ctx))
}

fn run_reader(setup: ReaderSetup, ctx: Arc<FeedContext>) -> ReaderReport {
    let ReaderSetup {
        index,
        core,
        connections,
        producers,
        notices,
        stats,
    } = setup;
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    let cpus_allowed = cpus_allowed();
    tracing::info!(reader = index, core, pinned, %cpus_allowed, connections = connections.len(), "reader started");
    let state = Rc::new(RefCell::new(FramePath::new(
        producers, notices, stats, &ctx,
    )));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(reader = index, error = %e, "cannot build the reader runtime");
            return report(index, core, pinned, cpus_allowed, state);
        }
    };
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(i, (streams, commands))| {
            let seed = (index as u64) << 32 | i as u64;
            local.spawn_local(connection_task(
                streams,
                commands,
                ctx.clone(),
                state.clone(),
                seed,
            ))
        })
        .collect();
    local.block_on(&runtime, async {
        for task in tasks {
            let _ = task.await;
        }
    });
    drop(local);
    report(index, core, pinned, cpus_allowed, state)
}

fn report(
    index: usize,
    core: usize,
    pinned: bool,
    cpus_allowed: String,
    state: Rc<RefCell<FramePath>>,
) -> ReaderReport {
    let wire_to_queue = match Rc::try_unwrap(state) {
        Ok(state) => state.into_inner().histogram,
        Err(shared) => shared.borrow().histogram.clone(),
    };
    ReaderReport {
        index,
        core,
        pinned,
        cpus_allowed,
        wire_to_queue,
    }
}

/// The kernel's view of where this thread may run (Linux), for tests and logs.
fn cpus_allowed() -> String {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_default()
}

/// The frame path: everything a reader does with one binary frame (decode, sequence check,
/// enqueue to every consumer, notices), owned by the reader thread. Public so tests and benches
/// can drive it without sockets.
pub struct FramePath {
    producers: Vec<rtrb::Producer<FeedEvent>>,
    notices: rtrb::Producer<Notice>,
    sequencer: Sequencer,
    /// Configured symbols (bytes) and their indexes, sorted for binary search.
    symbols: Vec<(Box<[u8]>, u16)>,
    stats: Arc<ReaderStats>,
    histogram: Histogram<u64>,
    limits: Limits,
    reported_unknown: bool,
}

impl FramePath {
    fn new(
        producers: Vec<rtrb::Producer<FeedEvent>>,
        notices: rtrb::Producer<Notice>,
        stats: Arc<ReaderStats>,
        ctx: &FeedContext,
    ) -> Self {
        Self::with(
            &ctx.symbols,
            ctx.settings.group_count_max,
            producers,
            notices,
            stats,
        )
    }

    /// A frame path for `symbols`, filling `producers` (one per consumer) and `notices`.
    pub fn with(
        symbols: &[String],
        group_count_max: u32,
        producers: Vec<rtrb::Producer<FeedEvent>>,
        notices: rtrb::Producer<Notice>,
        stats: Arc<ReaderStats>,
    ) -> Self {
        FramePath {
            producers,
            notices,
            sequencer: Sequencer::new(symbols.len()),
            symbols: {
                let mut symbols: Vec<(Box<[u8]>, u16)> = symbols
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.as_bytes().to_vec().into_boxed_slice(), i as u16))
                    .collect();
                symbols.sort();
                symbols
            },
            stats,
            histogram: latency_histogram(),
            limits: Limits { group_count_max },
            reported_unknown: false,
        }
    }

    /// Starts accepting frames of `symbol` as index `index` (a symbol added at run time).
    fn add_symbol(&mut self, symbol: &str, index: u16) {
        if self.symbol_index(symbol.as_bytes()).is_none() {
            let at = self
                .symbols
                .partition_point(|(s, _)| **s < *symbol.as_bytes());
            self.symbols
                .insert(at, (symbol.as_bytes().to_vec().into_boxed_slice(), index));
        }
        self.sequencer.grow(index as usize + 1);
        // A symbol subscribed again starts afresh: its absence is not a gap.
        for kind in StreamKind::ALL {
            self.sequencer.reset(index, kind);
        }
    }

    /// Stops accepting frames of symbol `index` (frames still in flight before the
    /// UNSUBSCRIBE takes effect are counted as unknown symbols and dropped), and tells the
    /// sidecar ([`Cause::Removed`]).
    fn forget_symbol(&mut self, index: u16) {
        self.notify_stopped(index, Cause::Removed);
        self.symbols.retain(|&(_, i)| i != index);
        for kind in StreamKind::ALL {
            self.sequencer.reset(index, kind);
        }
    }

    /// Tells the sidecar that the symbols of `streams` stopped arriving (their connection was
    /// lost: [`Cause::Disconnected`]) or arrive again (a new connection carries them after a
    /// loss: [`Cause::Reconnected`]). Cold: once per lost or new connection.
    fn connection_changed(&mut self, streams: &[String], cause: Cause) {
        let mut told: Vec<u16> = Vec::new();
        for stream in streams {
            let Some((symbol, _)) = crate::stream::parse_stream_name(stream) else {
                continue;
            };
            let Some(index) = self.symbol_index(symbol.as_bytes()) else {
                continue;
            };
            if !told.contains(&index) {
                told.push(index);
                self.notify_stopped(index, cause);
            }
        }
    }

    /// A notice that `symbol`'s streams stopped or came back (nothing missing yet), named by
    /// its depth stream.
    fn notify_stopped(&mut self, symbol: u16, cause: Cause) {
        let last_good = self.sequencer.last(symbol, StreamKind::Depth).unwrap_or(0);
        let gap = super::sequence::GapNotice {
            symbol,
            kind: StreamKind::Depth,
            last_good,
            first_seen: last_good.saturating_add(1),
        };
        self.notify(Notice { gap, cause });
    }

    /// The index of a configured symbol.
    #[inline]
    fn symbol_index(&self, symbol: &[u8]) -> Option<u16> {
        self.symbols
            .binary_search_by(|(s, _)| (**s).cmp(symbol))
            .ok()
            .map(|at| self.symbols[at].1)
    }

    /// The hot path: one binary frame, received at `recv_time_ns` ([`monotonic_ns`]).
    #[inline]
    pub fn on_frame(&mut self, frame: Bytes, recv_time_ns: u64) {
        self.stats.frames.bump();
        let message = match sbe::spot_stream::decode_with(&frame, &self.limits) {
            Ok(message) => message,
            Err(e) => return self.on_decode_error(e),
        };
        let Some((symbol_bytes, kind, first_id, last_id, event_time_us)) = summarize(&message)
        else {
            return;
        };
        let Some(symbol) = self.symbol_index(symbol_bytes) else {
            self.stats.unknown_symbols.bump();
            return;
        };
        let mut first_new_id = first_id;
        match self.sequencer.check(symbol, kind, first_id, last_id) {
            Verdict::Duplicate => {
                self.stats.duplicates.bump();
                return;
            }
            Verdict::Overlap { first_new } => first_new_id = first_new,
            Verdict::Gap(gap) => {
                self.stats.gaps.bump();
                self.stats.missing_ids.add(gap.missing().max(0) as u64);
                self.notify(Notice {
                    gap,
                    cause: Cause::Wire,
                });
            }
            Verdict::Accept => {}
        }
        let event = FeedEvent {
            recv_time_ns,
            symbol,
            kind,
            first_id,
            last_id,
            first_new_id,
            event_time_us,
            frame,
        };
        self.enqueue(event);
    }

    fn enqueue(&mut self, event: FeedEvent) {
        // The ids a full ring loses: those not delivered before.
        let (symbol, kind, first_id, last_id, recv) = (
            event.symbol,
            event.kind,
            event.first_new_id,
            event.last_id,
            event.recv_time_ns,
        );
        let last = self.producers.len().saturating_sub(1);
        let mut event = Some(event);
        for consumer in 0..self.producers.len() {
            let item = if consumer == last {
                event.take()
            } else {
                event.clone()
            };
            let Some(item) = item else { break };
            if self.producers[consumer].push(item).is_err() {
                self.stats.queue_drops.bump();
                let gap = super::sequence::GapNotice {
                    symbol,
                    kind,
                    last_good: first_id.saturating_sub(1),
                    first_seen: last_id.saturating_add(1),
                };
                self.notify(Notice {
                    gap,
                    cause: Cause::QueueFull { consumer },
                });
            }
        }
        self.stats.events[kind as usize].bump();
        let _ = self
            .histogram
            .record(monotonic_ns().saturating_sub(recv).clamp(1, LATENCY_MAX_NS));
    }

    fn notify(&mut self, notice: Notice) {
        if self.notices.push(notice).is_err() {
            self.stats.notice_drops.bump();
        }
    }

    #[cold]
    fn on_decode_error(&mut self, error: DecodeError) {
        let counter = match error {
            DecodeError::UnknownTemplate(_) => &self.stats.unknown_templates,
            DecodeError::WrongSchema { .. } => &self.stats.schema_mismatches,
            _ => &self.stats.decode_errors,
        };
        counter.bump();
        if !self.reported_unknown
            && matches!(
                error,
                DecodeError::UnknownTemplate(_) | DecodeError::WrongSchema { .. }
            )
        {
            self.reported_unknown = true;
            tracing::warn!(%error, "a frame of an unknown message or schema (counted; further ones are counted silently)");
        }
    }
}

/// Frames of a new connection held back while the connection it replaces has not yet
/// delivered the ids just before them. Without this, a new connection that runs ahead would
/// make the sequencer report a gap, and the old connection's late copies of the missing ids
/// would then be dropped as duplicates: data lost although it arrived.
#[derive(Default)]
struct Held {
    /// Held frames in arrival order, with their stream.
    frames: std::collections::VecDeque<(Bytes, u64, u16, StreamKind)>,
    /// Streams with held frames, and the id each needs seen before its first held frame.
    streams: Vec<(u16, StreamKind, i64)>,
}

/// Frames held at most before they are released whatever the old connection did.
const HELD_MAX: usize = 1 << 16;

impl Held {
    fn holds(&self, symbol: u16, kind: StreamKind) -> bool {
        self.streams
            .iter()
            .any(|&(s, k, _)| s == symbol && k == kind)
    }
}

impl FramePath {
    /// A frame of a connection that may run ahead of the one it replaces: held if its stream's
    /// previous ids have not arrived yet, processed otherwise.
    fn on_frame_holding(&mut self, frame: Bytes, recv_time_ns: u64, held: &mut Held) {
        if let Ok(message) = sbe::spot_stream::decode_with(&frame, &self.limits)
            && let Some((symbol_bytes, kind, first_id, _, _)) = summarize(&message)
            && matches!(kind, StreamKind::Trade | StreamKind::Depth)
            && let Some(symbol) = self.symbol_index(symbol_bytes)
        {
            let need = first_id.saturating_sub(1);
            let behind = self
                .sequencer
                .last(symbol, kind)
                .is_some_and(|last| last < need);
            if held.frames.len() >= HELD_MAX {
                self.release(held, true);
            } else if held.holds(symbol, kind) || behind {
                if !held.holds(symbol, kind) {
                    held.streams.push((symbol, kind, need));
                }
                held.frames.push_back((frame, recv_time_ns, symbol, kind));
                return;
            }
        }
        self.on_frame(frame, recv_time_ns);
    }

    /// Processes the held frames of every stream that has caught up, in arrival order (of all
    /// streams when `force`d: the old connection is gone, so what is still missing is a real
    /// gap).
    fn release(&mut self, held: &mut Held, force: bool) {
        if held.frames.is_empty() {
            return;
        }
        let sequencer = &self.sequencer;
        let ready: Vec<(u16, StreamKind)> = held
            .streams
            .iter()
            .filter(|&&(s, k, need)| force || sequencer.last(s, k).is_none_or(|last| last >= need))
            .map(|&(s, k, _)| (s, k))
            .collect();
        if ready.is_empty() {
            return;
        }
        held.streams.retain(|&(s, k, _)| !ready.contains(&(s, k)));
        for (frame, recv, symbol, kind) in std::mem::take(&mut held.frames) {
            if ready.contains(&(symbol, kind)) {
                self.on_frame(frame, recv);
            } else {
                held.frames.push_back((frame, recv, symbol, kind));
            }
        }
    }
}

/// Symbol, stream, first and last id and event time of a decoded message.
#[inline]
fn summarize<'a>(message: &Sbe<'a>) -> Option<(&'a [u8], StreamKind, i64, i64, i64)> {
    Some(match message {
        Sbe::TradesStreamEvent(m) => {
            let mut trades = m.trades();
            let first = trades.next()?.id();
            let last = trades.last().map_or(first, |t| t.id());
            (m.symbol(), StreamKind::Trade, first, last, m.event_time())
        }
        Sbe::BestBidAskStreamEvent(m) => (
            m.symbol(),
            StreamKind::BestBidAsk,
            m.book_update_id(),
            m.book_update_id(),
            m.event_time(),
        ),
        Sbe::DepthSnapshotStreamEvent(m) => (
            m.symbol(),
            StreamKind::Depth20,
            m.book_update_id(),
            m.book_update_id(),
            m.event_time(),
        ),
        Sbe::DepthDiffStreamEvent(m) => (
            m.symbol(),
            StreamKind::Depth,
            m.first_book_update_id(),
            m.last_book_update_id(),
            m.event_time(),
        ),
    })
}

/// A live connection.
struct Live {
    ws: Ws,
    opened: Instant,
    last_frame: Instant,
    delivered: bool,
    /// The streams this connection carries (its URL's, then its SUBSCRIBE/UNSUBSCRIBE).
    streams: Vec<String>,
}

impl Live {
    fn new(ws: Ws, streams: Vec<String>) -> Self {
        let now = Instant::now();
        Live {
            ws,
            opened: now,
            last_frame: now,
            delivered: false,
            streams,
        }
    }

    /// Sends at most one SUBSCRIBE or UNSUBSCRIBE bringing this connection to `wanted`;
    /// returns whether it sent one.
    async fn reconcile(&mut self, wanted: &[String], request_id: &mut u64) -> bool {
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|s| !self.streams.contains(s))
            .collect();
        let extra: Vec<String> = self
            .streams
            .iter()
            .filter(|s| !wanted.contains(s))
            .cloned()
            .collect();
        let (method, params): (&str, Vec<String>) = if !missing.is_empty() {
            ("SUBSCRIBE", missing.into_iter().cloned().collect())
        } else if !extra.is_empty() {
            ("UNSUBSCRIBE", extra)
        } else {
            return false;
        };
        *request_id += 1;
        let request =
            serde_json::json!({"method": method, "params": params, "id": *request_id}).to_string();
        if self.ws.send(Message::text(request)).await.is_ok() {
            if method == "SUBSCRIBE" {
                self.streams.extend(params.iter().cloned());
            } else {
                self.streams.retain(|s| !params.contains(s));
            }
            tracing::info!(method, "subscription changed");
        }
        true
    }
}

/// Opens a connection: waits for the attempt budget, then connects with the API key header.
/// Opens a connection carrying `streams` (see [`open`]) and returns it with them.
async fn open_streams(
    streams: Vec<String>,
    ctx: Arc<FeedContext>,
    stats: Arc<ReaderStats>,
) -> Result<(Ws, Vec<String>), String> {
    let url = format!(
        "{}/stream?streams={}",
        ctx.endpoint.trim_end_matches('/'),
        streams.join("/")
    );
    open(url, ctx, stats).await.map(|ws| (ws, streams))
}

async fn open(url: String, ctx: Arc<FeedContext>, stats: Arc<ReaderStats>) -> Result<Ws, String> {
    loop {
        let wait = crate::sync::lock(&ctx.budget).try_acquire(std::time::Instant::now());
        match wait {
            Ok(()) => break,
            Err(wait) => tokio::time::sleep(wait).await,
        }
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let mut key = tungstenite::http::HeaderValue::from_str(ctx.api_key.expose())
        .map_err(|_| "the API key is not a valid header value".to_string())?;
    key.set_sensitive(true);
    request.headers_mut().insert("X-MBX-APIKEY", key);
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(crate::constants::FRAME_BYTES_MAX);
    config.max_frame_size = Some(crate::constants::FRAME_BYTES_MAX);
    let connector = ctx.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    stats.connects.bump();
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Err(format!("HTTP {}: {}", response.status(), body.trim()))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<(Ws, Vec<String>), String>>>>;

/// What one wait of a connection task produced.
enum Step {
    Stop,
    Current(Option<Result<Message, tungstenite::Error>>, u64),
    Old(Option<Result<Message, tungstenite::Error>>, u64),
    Replacement(Option<Result<Message, tungstenite::Error>>, u64),
    Connected(Box<Result<(Ws, Vec<String>), String>>),
    Command(Option<Command>),
    ReplaceDue,
    OverlapOver,
    Silent,
    /// The timer fired for a deadline that has since moved.
    Rearm,
}

async fn next_of(live: Option<&mut Live>) -> (Option<Result<Message, tungstenite::Error>>, u64) {
    match live {
        Some(live) => {
            let message = live.ws.next().await;
            (message, monotonic_ns())
        }
        None => std::future::pending().await,
    }
}

/// Runs one connection slot for the life of the feed: connect, read, replace, reconnect.
async fn connection_task(
    streams: Vec<String>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    ctx: Arc<FeedContext>,
    state: Rc<RefCell<FramePath>>,
    seed: u64,
) {
    let stats = state.borrow().stats.clone();
    let settings = ctx.settings.clone();
    let mut backoff = Backoff::new(settings.backoff_initial, settings.backoff_max, seed);
    let mut stop = ctx.stop.clone();
    // The streams this slot should carry; commands change it, every (re)connection uses it.
    let wanted = Rc::new(RefCell::new(streams));
    // A connection was lost and none carries the streams yet.
    let mut lost = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let carried = wanted.borrow().clone();
        let opened = tokio::select! {
            _ = stop.changed() => return,
            opened = open_streams(carried, ctx.clone(), stats.clone()) => opened,
        };
        match opened {
            Ok((ws, carried)) => {
                tracing::info!(streams = carried.len(), "connected");
                if std::mem::take(&mut lost) {
                    state
                        .borrow_mut()
                        .connection_changed(&carried, Cause::Reconnected);
                }
                let slot = Slot {
                    ctx: &ctx,
                    state: &state,
                    wanted: &wanted,
                };
                let ended = drive(
                    Live::new(ws, carried),
                    slot,
                    &mut backoff,
                    &mut stop,
                    &mut commands,
                )
                .await;
                let Ended::Lost { delivered } = ended else {
                    return;
                };
                stats.reconnects.bump();
                state
                    .borrow_mut()
                    .connection_changed(&wanted.borrow(), Cause::Disconnected);
                lost = true;
                if !delivered {
                    // A server that accepts and drops us must not burn the attempt budget.
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "connection failed");
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// What a connection slot's driver works with.
struct Slot<'a> {
    ctx: &'a Arc<FeedContext>,
    state: &'a Rc<RefCell<FramePath>>,
    wanted: &'a Rc<RefCell<Vec<String>>>,
}

impl Slot<'_> {
    fn open(&self) -> Connecting {
        self.open_after(Duration::ZERO)
    }

    /// Opens a connection after `delay` (a backoff when the connection being replaced never
    /// delivered: a server that announces shutdowns at once must not be hammered).
    fn open_after(&self, delay: Duration) -> Connecting {
        let stats = self.state.borrow().stats.clone();
        let opening = open_streams(self.wanted.borrow().clone(), self.ctx.clone(), stats);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            opening.await
        })
    }

    /// Applies a command to the wanted streams and the frame path.
    fn apply(&self, command: Command) {
        let mut wanted = self.wanted.borrow_mut();
        match command {
            Command::Subscribe {
                symbol,
                index,
                streams,
            } => {
                self.state.borrow_mut().add_symbol(&symbol, index);
                for stream in streams {
                    if !wanted.contains(&stream) {
                        wanted.push(stream);
                    }
                }
            }
            Command::Unsubscribe { index, streams } => {
                wanted.retain(|s| !streams.contains(s));
                self.state.borrow_mut().forget_symbol(index);
            }
        }
    }
}

async fn next_command(
    commands: &mut tokio::sync::mpsc::UnboundedReceiver<Command>,
    open: bool,
) -> Option<Command> {
    if open {
        commands.recv().await
    } else {
        std::future::pending().await
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Stop,
    /// The connection is gone; `delivered` tells whether it ever delivered data (if not, the
    /// next attempt waits a backoff delay).
    Lost {
        delivered: bool,
    },
}

/// Reads a connection until it ends, replacing it make-before-break when its lifetime nears or
/// the server announces a shutdown.
async fn drive(
    first: Live,
    slot: Slot<'_>,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
    commands: &mut tokio::sync::mpsc::UnboundedReceiver<Command>,
) -> Ended {
    let (ctx, state) = (slot.ctx, slot.state);
    let settings = &ctx.settings;
    let lifetime_left = settings.lifetime.saturating_sub(settings.replace_before);
    let mut commands_open = true;
    let mut control_pending = *first.streams != *slot.wanted.borrow();
    let mut next_control = Instant::now();
    let mut request_id = 0u64;
    let stats = state.borrow().stats.clone();
    let mut current = first;
    let mut old: Option<Live> = None;
    let mut held = Held::default();
    let mut old_until: Option<Instant> = None;
    let mut replacement: Option<Live> = None;
    let mut connecting: Option<Connecting> = None;
    let mut replace_due = current.opened + lifetime_left;
    // One timer for every deadline (replacement due, overlap over, silence, control pacing),
    // re-armed only when the earliest one moves earlier: a timer per message would cost more
    // than the message.
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        if control_pending && Instant::now() >= next_control {
            // One SUBSCRIBE or UNSUBSCRIBE per connection per interval, until all carry the
            // wanted streams.
            let wanted = slot.wanted.borrow().clone();
            let mut sent = current.reconcile(&wanted, &mut request_id).await;
            if let Some(next) = replacement.as_mut() {
                sent |= next.reconcile(&wanted, &mut request_id).await;
            }
            control_pending = sent;
            next_control = Instant::now() + CONTROL_INTERVAL;
        }
        let replacing = connecting.is_some() || replacement.is_some();
        // A connection with no streams is quiet by design, not silent.
        let silent_at = if slot.wanted.borrow().is_empty() {
            current.last_frame + QUIET_IS_FINE
        } else {
            current.last_frame + settings.silent_timeout
        };
        let deadline = [
            (!replacing).then_some(replace_due),
            old_until,
            Some(silent_at),
            control_pending.then_some(next_control),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(silent_at);
        if armed.is_none_or(|at| deadline < at || Instant::now() >= at) {
            timer.as_mut().reset(deadline);
            armed = Some(deadline);
        }
        let step = tokio::select! {
            _ = stop.changed() => Step::Stop,
            (m, t) = next_of(Some(&mut current)) => Step::Current(m, t),
            (m, t) = next_of(old.as_mut()) => Step::Old(m, t),
            (m, t) = next_of(replacement.as_mut()) => Step::Replacement(m, t),
            connected = async { match connecting.as_mut() { Some(c) => c.await, None => std::future::pending().await } } => Step::Connected(Box::new(connected)),
            command = next_command(commands, commands_open) => Step::Command(command),
            _ = &mut timer => {
                armed = None;
                let now = Instant::now();
                if !replacing && now >= replace_due {
                    Step::ReplaceDue
                } else if old_until.is_some_and(|at| now >= at) {
                    Step::OverlapOver
                } else if now >= silent_at {
                    Step::Silent
                } else {
                    // A deadline that moved, or control pacing: the loop's top handles it.
                    Step::Rearm
                }
            }
        };
        match step {
            Step::Stop => {
                state.borrow_mut().release(&mut held, true);
                for live in [Some(&mut current), old.as_mut(), replacement.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    close(live).await;
                }
                return Ended::Stop;
            }
            Step::Current(message, t) if old.is_none() && replacement.is_none() => {
                // The steady state: drain what is already buffered before selecting again.
                match drain(message, t, &mut current, state, backoff).await {
                    Seen::ServerShutdown if connecting.is_none() => {
                        connecting = Some(slot.open_after(pause(&current, backoff)))
                    }
                    Seen::Closed => match connecting.take() {
                        // A replacement is already on its way (serverShutdown): adopt it.
                        Some(pending) => match pending.await {
                            Ok((ws, carried)) => {
                                control_pending |= carried != *slot.wanted.borrow();
                                current = Live::new(ws, carried);
                                replace_due = current.opened + lifetime_left;
                            }
                            Err(_) => {
                                return Ended::Lost {
                                    delivered: current.delivered,
                                };
                            }
                        },
                        None => {
                            return Ended::Lost {
                                delivered: current.delivered,
                            };
                        }
                    },
                    _ => {}
                }
            }
            Step::Current(message, t) => {
                let hold = old.is_some().then_some(&mut held);
                match on_message(message, t, &mut current, state, hold).await {
                    Seen::Data if !current.delivered => {
                        current.delivered = true;
                        backoff.reset();
                    }
                    Seen::ServerShutdown if !replacing => {
                        connecting = Some(slot.open_after(pause(&current, backoff)))
                    }
                    Seen::Closed => {
                        // The current connection is gone: a replacement in flight takes over,
                        // else the older one still being read does.
                        state.borrow_mut().release(&mut held, true);
                        let delivered = current.delivered;
                        match replacement.take().or_else(|| old.take()) {
                            Some(next) => {
                                current = next;
                                old_until = old.as_ref().and(old_until);
                                replace_due = current.opened + lifetime_left;
                            }
                            None => return Ended::Lost { delivered },
                        }
                    }
                    _ => {}
                }
            }
            Step::Old(message, t) => {
                if let Some(live) = old.as_mut() {
                    let closed = on_message(message, t, live, state, None).await == Seen::Closed;
                    if closed {
                        old = None;
                        old_until = None;
                    }
                    state.borrow_mut().release(&mut held, closed);
                }
            }
            Step::Replacement(message, t) => {
                let Some(live) = replacement.as_mut() else {
                    continue;
                };
                match on_message(message, t, live, state, Some(&mut held)).await {
                    Seen::Data => {
                        // The replacement delivers: it becomes current; the old one is read
                        // until the overlap window ends, so nothing in flight is lost.
                        let Some(mut next) = replacement.take() else {
                            continue;
                        };
                        next.delivered = true;
                        let previous = std::mem::replace(&mut current, next);
                        if let Some(mut older) = old.replace(previous) {
                            // A second switch inside the overlap: what was held for the oldest
                            // connection is released before it goes.
                            state.borrow_mut().release(&mut held, true);
                            close(&mut older).await;
                        }
                        old_until = Some(Instant::now() + settings.overlap_max);
                        replace_due = current.opened + lifetime_left;
                        stats.switches.bump();
                    }
                    Seen::Closed => {
                        replacement = None;
                        replace_due = Instant::now() + backoff.next_delay();
                    }
                    _ => {}
                }
            }
            Step::Connected(result) => {
                connecting = None;
                match *result {
                    Ok((ws, carried)) => {
                        control_pending |= carried != *slot.wanted.borrow();
                        replacement = Some(Live::new(ws, carried));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "replacement connection failed; the current one stays");
                        replace_due = Instant::now() + backoff.next_delay();
                    }
                }
            }
            Step::ReplaceDue => connecting = Some(slot.open()),
            Step::OverlapOver => {
                if let Some(mut live) = old.take() {
                    close(&mut live).await;
                }
                old_until = None;
                state.borrow_mut().release(&mut held, true);
            }
            Step::Rearm => {}
            Step::Command(Some(command)) => {
                slot.apply(command);
                control_pending = true;
            }
            Step::Command(None) => commands_open = false,
            Step::Silent => {
                tracing::warn!(silent_for = ?settings.silent_timeout, "connection silent; replacing it");
                state.borrow_mut().release(&mut held, true);
                return Ended::Lost {
                    delivered: current.delivered,
                };
            }
        }
    }
}

/// No delay for replacing a connection that delivered; a backoff delay for one that did not.
fn pause(current: &Live, backoff: &mut Backoff) -> Duration {
    if current.delivered {
        Duration::ZERO
    } else {
        backoff.next_delay()
    }
}

/// How long a connection without streams may stay quiet before it is replaced anyway.
const QUIET_IS_FINE: Duration = Duration::from_secs(3600);
/// How long a close handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

async fn close(live: &mut Live) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, live.ws.close(None)).await;
}

/// Processes a message and then every message already buffered on the same connection (up to
/// [`DRAIN_MAX`]); returns the first non-data outcome, or `Seen::Data`.
async fn drain(
    message: Option<Result<Message, tungstenite::Error>>,
    recv_time_ns: u64,
    current: &mut Live,
    state: &Rc<RefCell<FramePath>>,
    backoff: &mut Backoff,
) -> Seen {
    let mut next = Some((message, recv_time_ns));
    let mut budget = DRAIN_MAX;
    while let Some((message, t)) = next.take() {
        match on_message(message, t, current, state, None).await {
            Seen::Data => {
                if !current.delivered {
                    current.delivered = true;
                    backoff.reset();
                }
            }
            Seen::Control => {}
            other => return other,
        }
        budget -= 1;
        if budget > 0
            && let Some(message) = current.ws.next().now_or_never()
        {
            next = Some((message, monotonic_ns()));
        }
    }
    Seen::Data
}

/// What a message meant to the connection.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Data,
    ServerShutdown,
    Control,
    Closed,
}

async fn on_message(
    message: Option<Result<Message, tungstenite::Error>>,
    recv_time_ns: u64,
    live: &mut Live,
    state: &Rc<RefCell<FramePath>>,
    hold: Option<&mut Held>,
) -> Seen {
    let Some(Ok(message)) = message else {
        return Seen::Closed;
    };
    live.last_frame = Instant::now();
    match message {
        Message::Binary(frame) => {
            match hold {
                Some(held) => state
                    .borrow_mut()
                    .on_frame_holding(frame, recv_time_ns, held),
                None => state.borrow_mut().on_frame(frame, recv_time_ns),
            }
            Seen::Data
        }
        Message::Text(text) => {
            state.borrow().stats.text_frames.bump();
            if text.as_str().contains("serverShutdown") {
                tracing::info!("serverShutdown received; replacing the connection");
                Seen::ServerShutdown
            } else {
                Seen::Control
            }
        }
        Message::Ping(_) => {
            // tungstenite queued the pong with the same payload; send it now.
            let _ = live.ws.flush().await;
            Seen::Control
        }
        Message::Close(_) => Seen::Closed,
        _ => Seen::Control,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::sbe::spot_stream::{BoolEnum, TradesStreamEventEncoder};

    fn trades(ids: std::ops::RangeInclusive<i64>) -> Bytes {
        let mut buf = vec![0u8; 4096];
        let mut m = TradesStreamEventEncoder::wrap(&mut buf).expect("fits");
        m.event_time(1)
            .transact_time(1)
            .price_exponent(-8)
            .qty_exponent(-8);
        let count = (ids.end() - ids.start() + 1) as u32;
        let mut group = m.trades(count).expect("fits");
        for id in ids {
            group
                .next_entry()
                .expect("fits")
                .id(id)
                .price(1)
                .qty(1)
                .is_buyer_maker(BoolEnum::False);
        }
        m.symbol(b"BTCUSDT").expect("fits");
        let len = m.finish();
        buf.truncate(len);
        buf.into()
    }

    fn state() -> (FramePath, rtrb::Consumer<FeedEvent>, rtrb::Consumer<Notice>) {
        let config = RunConfig::default();
        let (stop_tx, stop) = watch::channel(false);
        drop(stop_tx);
        let ctx = FeedContext {
            endpoint: config.endpoint.clone(),
            api_key: config.api_key_from(|_| Some("k".into())).expect("a key"),
            tls: None,
            symbols: vec!["BTCUSDT".into()],
            settings: config.readers.clone(),
            budget: Mutex::new(AttemptBudget::new(10, Duration::from_secs(1))),
            stop,
        };
        let (producer, events) = rtrb::RingBuffer::new(64);
        let (notices_in, notices) = rtrb::RingBuffer::new(64);
        (
            FramePath::new(
                vec![producer],
                notices_in,
                Arc::new(ReaderStats::default()),
                &ctx,
            ),
            events,
            notices,
        )
    }

    fn accepted(events: &mut rtrb::Consumer<FeedEvent>) -> Vec<(i64, i64)> {
        std::iter::from_fn(|| events.pop().ok())
            .map(|e| (e.first_id, e.last_id))
            .collect()
    }

    /// A lost connection, a new one after it and a removed symbol are told to the sidecar (the
    /// books kept from the streams need to know): once per symbol, named by the depth stream,
    /// nothing missing yet.
    #[test]
    fn a_lost_connection_and_a_removed_symbol_are_noticed() {
        let (mut state, _events, mut notices) = state();
        let streams = [
            "btcusdt@trade".to_string(),
            "btcusdt@depth".to_string(),
            "ethusdt@depth".to_string(),
        ];
        state.connection_changed(&streams, Cause::Disconnected);
        let notice = notices.pop().expect("a notice");
        assert_eq!(notice.cause, Cause::Disconnected);
        assert_eq!((notice.gap.symbol, notice.gap.kind), (0, StreamKind::Depth));
        assert_eq!(notice.gap.missing(), 0);
        assert!(
            notices.pop().is_err(),
            "once per symbol; ETHUSDT is not configured here"
        );
        state.forget_symbol(0);
        let notice = notices.pop().expect("a notice");
        assert_eq!((notice.cause, notice.gap.symbol), (Cause::Removed, 0));
        assert!(!notice.cause.is_gap());
    }

    /// Regression (found in review): a replacement connection running ahead of the old one made
    /// the sequencer report a false gap and drop the old connection's late ids as duplicates.
    #[test]
    fn a_replacement_running_ahead_is_held_until_the_old_connection_catches_up() {
        let (mut state, mut events, mut notices) = state();
        let mut held = Held::default();
        state.on_frame(trades(1..=5), 1);
        // The new connection delivers 8..=9 and 10 before the old one delivered 6..=7.
        state.on_frame_holding(trades(8..=9), 2, &mut held);
        state.on_frame_holding(trades(10..=10), 3, &mut held);
        state.release(&mut held, false);
        assert_eq!(accepted(&mut events), [(1, 5)], "held, not yet accepted");
        // The old connection catches up; its copy of 8..=9 is then a duplicate.
        state.on_frame(trades(6..=7), 4);
        state.release(&mut held, false);
        state.on_frame(trades(8..=9), 5);
        assert_eq!(accepted(&mut events), [(6, 7), (8, 9), (10, 10)]);
        assert!(notices.pop().is_err(), "no gap reported");
        assert_eq!(state.stats.duplicates.get(), 1);
    }

    /// Regression (found in review): a trades event partly overlapping what was delivered went
    /// on without saying so, and the Kinesis writer forwarded the already-seen ids again. The
    /// event now carries its first new id (and a full ring reports only the new ids lost).
    #[test]
    fn a_partly_overlapping_event_carries_its_first_new_id() {
        let (mut state, mut events, _notices) = state();
        state.on_frame(trades(1..=5), 1);
        state.on_frame(trades(4..=8), 2);
        state.on_frame(trades(9..=9), 3);
        let got: Vec<(i64, i64, i64)> = std::iter::from_fn(|| events.pop().ok())
            .map(|e| (e.first_id, e.first_new_id, e.last_id))
            .collect();
        assert_eq!(got, [(1, 1, 5), (4, 6, 8), (9, 9, 9)]);
    }

    /// Held frames are released per stream as soon as that stream catches up.
    #[test]
    fn held_streams_are_released_one_by_one() {
        let (mut state, mut events, _notices) = state();
        let mut held = Held::default();
        state.on_frame(trades(1..=5), 1);
        state.on_frame(diff(10, 20), 2);
        state.on_frame_holding(trades(8..=8), 3, &mut held);
        state.on_frame_holding(diff(25, 30), 4, &mut held);
        assert_eq!(accepted(&mut events), [(1, 5), (10, 20)]);
        // The depth stream catches up; the trades stream does not yet.
        state.on_frame(diff(21, 24), 5);
        state.release(&mut held, false);
        assert_eq!(accepted(&mut events), [(21, 24), (25, 30)]);
        state.on_frame(trades(6..=7), 6);
        state.release(&mut held, false);
        assert_eq!(accepted(&mut events), [(6, 7), (8, 8)]);
        assert!(held.frames.is_empty() && held.streams.is_empty());
    }

    fn diff(first: i64, last: i64) -> Bytes {
        use crate::sbe::spot_stream::DepthDiffStreamEventEncoder;
        let mut buf = vec![0u8; 256];
        let mut m = DepthDiffStreamEventEncoder::wrap(&mut buf).expect("fits");
        m.event_time(1)
            .first_book_update_id(first)
            .last_book_update_id(last)
            .price_exponent(-8)
            .qty_exponent(-8);
        m.bids(0).expect("fits");
        m.asks(0).expect("fits");
        m.symbol(b"BTCUSDT").expect("fits");
        let len = m.finish();
        buf.truncate(len);
        buf.into()
    }

    /// A full consumer ring never blocks the reader: the event is counted as dropped for that
    /// consumer, a repair notice names the ids, and the other consumer still gets it.
    #[test]
    fn a_full_ring_drops_for_that_consumer_only_and_asks_for_repair() {
        let (full, _full_ring) = rtrb::RingBuffer::new(1);
        let (roomy, mut roomy_ring) = rtrb::RingBuffer::new(16);
        let (notices_in, mut notices) = rtrb::RingBuffer::new(16);
        let stats = Arc::new(ReaderStats::default());
        let mut path = FramePath::with(
            &["BTCUSDT".to_string()],
            65_535,
            vec![full, roomy],
            notices_in,
            stats.clone(),
        );
        for (i, ids) in [1..=2, 3..=3, 4..=6].into_iter().enumerate() {
            path.on_frame(trades(ids), i as u64);
        }
        assert_eq!(accepted(&mut roomy_ring), [(1, 2), (3, 3), (4, 6)]);
        assert_eq!(stats.queue_drops.get(), 2);
        let dropped: Vec<_> = std::iter::from_fn(|| notices.pop().ok()).collect();
        assert_eq!(dropped.len(), 2);
        assert!(
            dropped
                .iter()
                .all(|n| n.cause == Cause::QueueFull { consumer: 0 })
        );
        assert_eq!(
            (dropped[1].gap.last_good, dropped[1].gap.first_seen),
            (3, 7),
            "ids 4..=6 need repair"
        );
    }

    #[test]
    fn a_real_gap_is_reported_when_the_old_connection_ends_without_the_ids() {
        let (mut state, mut events, mut notices) = state();
        let mut held = Held::default();
        state.on_frame(trades(1..=5), 1);
        state.on_frame_holding(trades(9..=9), 2, &mut held);
        state.release(&mut held, true);
        assert_eq!(accepted(&mut events), [(1, 5), (9, 9)]);
        let notice = notices.pop().expect("a gap");
        assert_eq!((notice.gap.last_good, notice.gap.first_seen), (5, 9));
        assert_eq!(notice.cause, Cause::Wire);
    }
}
