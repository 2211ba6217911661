//! Reader threads, the shell around the pure cores: each an OS thread pinned to a configured
//! core, running its connection slots on its own single-threaded tokio runtime. A slot's task
//! owns the sockets (tungstenite), one timer and the slot's command channel; it tells the
//! slot's state machine ([`super::slot::Slot`]) what happened and carries out what it decides
//! (open, send, pong, close, release held frames), and hands every binary frame to the reader's
//! [`FramePath`] as the slot routes it (straight, or held behind an older connection).
//!
//! Architecture invariants: nothing here logs per message or allocates per message (the frame's
//! `Bytes` comes from the WebSocket layer; an accepted one is copied into the reader's
//! [`FramePool`], so the receive buffer is reused at once, and shared with consumers by
//! reference count); in
//! the steady state a slot's task drains every message already buffered on its connection
//! (up to [`DRAIN_MAX`]) before it selects again; one clock read on receipt serves both the slot's
//! silence tracking and the frame's receive timestamp. Before each wait for the sockets the task
//! rings the bells of the consumers its batch pushed to ([`FramePath::wake_consumers`]): once per
//! read batch, and a system call only for a consumer that announced it is parked.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use super::slot::Command;

use super::dual::{Attempt, Choice, DualSettings, Switch, Wire};
use super::event::{Cause, FeedEvent, Notice, StreamKline};
use super::frame_path::{FramePath, Held, Origin};
use super::json::{Transcoded, Transcoder};
use super::pool::FramePool;
use super::slot::{Action, ConnId, Input, Route, Slot};
use super::stats::{ConnectionStats, ReaderStats};
use crate::backoff::AttemptBudget;
use crate::clock::monotonic_ns_at;
use crate::config::{ApiKey, FeedFormat, ReaderSettings};
use crate::constants::{CLOSE_TIMEOUT, CONNECT_TIMEOUT, DRAIN_MAX, FRAME_BYTES_MAX};
use crate::idle::Bell;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What every reader shares: where to connect, with which key and trust, and the settings.
pub struct FeedContext {
    /// `ws://` or `wss://` base; connections go to `<endpoint>/stream?streams=...`.
    pub endpoint: String,
    /// SBE binary frames, or JSON text frames transcoded into SBE frames ([`super::json`]),
    /// or SBE with JSON as the fallback ([`super::dual`]).
    pub format: FeedFormat,
    /// The JSON streams' base URL in dual mode.
    pub json_endpoint: String,
    /// When dual mode falls back and tries SBE again.
    pub dual: DualSettings,
    /// Sent as `X-MBX-APIKEY` (SBE only); never logged.
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
    /// Each stream's last receive time, for the sidecar's silence check.
    pub clock: Option<Arc<crate::sidecar::silence::StreamClock>>,
    /// Kline streams subscribed beside each symbol's trade stream on the JSON wire
    /// (`[klines] intervals`); empty: none.
    pub kline_intervals: Vec<crate::kline::Interval>,
}

/// The connections one reader runs and the rings it fills.
pub struct ReaderSetup {
    /// Reader index, for names and seeds.
    pub index: usize,
    /// Core to pin to.
    pub core: usize,
    /// Stream names per connection, the connection's command channel and its figures.
    pub connections: Vec<(
        Vec<String>,
        tokio::sync::mpsc::UnboundedReceiver<Command>,
        Arc<ConnectionStats>,
    )>,
    /// One ring per consumer.
    pub producers: Vec<rtrb::Producer<FeedEvent>>,
    /// Repair notices for the sidecar.
    pub notices: rtrb::Producer<Notice>,
    /// Closed stream klines for the sidecar (JSON streams with klines); `None`: not consumed.
    pub klines: Option<rtrb::Producer<StreamKline>>,
    /// This reader's counters.
    pub stats: Arc<ReaderStats>,
    /// Connections opened at run time on this reader (a symbol added when every connection
    /// is full).
    pub new_connections: tokio::sync::mpsc::UnboundedReceiver<NewConnection>,
    /// Each consumer's bell (as `producers`), rung after a batch pushed into its ring.
    pub event_bells: Vec<Bell>,
    /// The notice ring's consumer's bell.
    pub notice_bell: Bell,
}

/// A connection opened at run time: its streams, its command channel, and the symbols it
/// carries with their registry indices (accepted before it connects, so no frame of theirs
/// is dropped as unknown).
pub struct NewConnection {
    /// The stream names it subscribes when it connects.
    pub streams: Vec<String>,
    /// Its command channel.
    pub commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    /// `(symbol, index)` of each symbol it carries.
    pub symbols: Vec<(String, u16)>,
    /// Its figures, for the control plane.
    pub stats: Arc<ConnectionStats>,
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
        klines,
        stats,
        new_connections,
        event_bells,
        notice_bell,
    } = setup;
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    let cpus_allowed = cpus_allowed();
    let live = stats.clone();
    tracing::info!(reader = index, core, pinned, %cpus_allowed, connections = connections.len(), "reader started");
    let state = Rc::new(RefCell::new(
        FramePath::with(
            &ctx.symbols,
            ctx.settings.group_count_max,
            producers,
            notices,
            stats,
        )
        .with_bells(event_bells, notice_bell)
        .with_clock(ctx.clock.clone())
        .with_pool(ctx.settings.copy_frames.then(FramePool::default))
        .with_klines(klines),
    ));
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
        .map(|(i, (streams, commands, figures))| {
            let seed = (index as u64) << 32 | i as u64;
            local.spawn_local(connection_task(
                (streams, figures),
                commands,
                ctx.clone(),
                state.clone(),
                seed,
            ))
        })
        .collect();
    // The control plane reads the latency histogram live: a copy once a second, off the frames
    // (skipped, never waited for, while a scrape holds it). The same tick sends the control
    // notices still waiting for room in the notice ring when no frame comes to send them.
    let published = state.clone();
    local.spawn_local(async move {
        let mut tick = tokio::time::interval(crate::constants::LIVE_HISTOGRAM_PUBLISH);
        loop {
            tick.tick().await;
            live.wire_to_queue.publish(published.borrow().histogram());
            published.borrow_mut().wake_consumers();
        }
    });
    let opened = local.spawn_local(open_at_run_time(
        new_connections,
        ctx.clone(),
        state.clone(),
        (index as u64) << 32 | 1 << 31,
    ));
    local.block_on(&runtime, async {
        for task in tasks {
            let _ = task.await;
        }
        if let Ok(later) = opened.await {
            for task in later {
                let _ = task.await;
            }
        }
    });
    drop(local);
    report(index, core, pinned, cpus_allowed, state)
}

/// Starts the connections the feed opens at run time, until the feed stops; returns their
/// tasks so the reader waits for them to close.
async fn open_at_run_time(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<NewConnection>,
    ctx: Arc<FeedContext>,
    path: Rc<RefCell<FramePath>>,
    seed: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut stop = ctx.stop.clone();
    let mut tasks = Vec::new();
    loop {
        let request = tokio::select! {
            _ = stop.wait_for(|&s| s) => return tasks,
            request = requests.recv() => request,
        };
        let Some(request) = request else {
            let _ = stop.wait_for(|&s| s).await;
            return tasks;
        };
        for (symbol, index) in &request.symbols {
            path.borrow_mut().add_symbol(symbol, *index);
        }
        tracing::info!(
            streams = request.streams.len(),
            "opening a connection at run time"
        );
        tasks.push(tokio::task::spawn_local(connection_task(
            (request.streams, request.stats),
            request.commands,
            ctx.clone(),
            path.clone(),
            seed + tasks.len() as u64,
        )));
    }
}

fn report(
    index: usize,
    core: usize,
    pinned: bool,
    cpus_allowed: String,
    state: Rc<RefCell<FramePath>>,
) -> ReaderReport {
    // The last chance for control notices still waiting for room (the sidecar drains on).
    state.borrow_mut().wake_consumers();
    let wire_to_queue = match Rc::try_unwrap(state) {
        Ok(state) => state.into_inner().into_histogram(),
        Err(shared) => shared.borrow().histogram().clone(),
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

/// Opens a connection carrying `streams` on `wire`, with the API key header (SBE; the JSON
/// streams get their JSON names and no key), within [`CONNECT_TIMEOUT`]. In dual mode the
/// JSON streams are at `json_endpoint`. The attempt budget was taken by the slot.
async fn open(streams: Vec<String>, ctx: Arc<FeedContext>, wire: Wire) -> Result<Ws, String> {
    let json = wire == Wire::Json;
    let names: Vec<String> = match json {
        true => super::json::json_names(&streams, &ctx.kline_intervals),
        false => streams,
    };
    let endpoint = match (json, ctx.format) {
        (true, FeedFormat::Dual) => &ctx.json_endpoint,
        _ => &ctx.endpoint,
    };
    let url = format!(
        "{}/stream?streams={}",
        endpoint.trim_end_matches('/'),
        names.join("/")
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if !json && !ctx.api_key.is_none() {
        let mut key = tungstenite::http::HeaderValue::from_str(ctx.api_key.expose())
            .map_err(|_| "the API key is not a valid header value".to_string())?;
        key.set_sensitive(true);
        request.headers_mut().insert("X-MBX-APIKEY", key);
    }
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(FRAME_BYTES_MAX);
    config.max_frame_size = Some(FRAME_BYTES_MAX);
    config.read_buffer_size = crate::constants::WS_READ_BUFFER_BYTES;
    let connector = ctx.tls.clone().map(tokio_tungstenite::Connector::Rustls);
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

type Connecting = Pin<Box<dyn Future<Output = Result<Ws, String>>>>;

type Received = Option<Result<Message, tungstenite::Error>>;

/// An open connection, as the slot names it, and its wire.
struct Socket {
    id: ConnId,
    ws: Ws,
    wire: Wire,
}

/// Connections a slot has open at once: at most two carry data (current and replacement, or
/// old and current); a third covers the moment a replacement opens as another closes.
const SOCKETS: usize = 3;

/// The I/O a slot's task owns.
struct Io {
    ctx: Arc<FeedContext>,
    path: Rc<RefCell<FramePath>>,
    held: Held,
    sockets: [Option<Socket>; SOCKETS],
    connecting: Option<(ConnId, Wire, Connecting)>,
    /// JSON streams: the text frames' transcoder (it writes into the frame path's pool).
    json: Option<Transcoder>,
    /// Dual mode: the slot's choice of wire.
    choice: Option<Choice>,
}

/// A received message, as the frame path sees it.
enum Incoming {
    /// A data frame (SBE from the wire, or transcoded from JSON into the path's pool).
    Frame(Bytes, Origin),
    /// A malformed JSON data frame: counted, skipped.
    Skip,
    /// Anything else: the slot's.
    Other(Received),
}

/// Sorts a received message: binary frames are data; with JSON streams so are text frames
/// that carry market data, transcoded here straight into the frame path's pool (one
/// allocation-free parse and encode; the frame path queues it without another copy).
#[inline]
fn incoming(received: Received, json: Option<&mut Transcoder>, path: &mut FramePath) -> Incoming {
    match (received, json) {
        (Some(Ok(Message::Binary(frame))), _) => Incoming::Frame(frame, Origin::Wire),
        (Some(Ok(Message::Text(text))), Some(transcoder)) => {
            match transcoder.transcode(text.as_str(), crate::clock::unix_us(), path.pool()) {
                Transcoded::Frame(frame) => Incoming::Frame(frame, Origin::Pooled),
                Transcoded::Malformed => {
                    malformed(path.stats(), transcoder);
                    Incoming::Skip
                }
                Transcoded::Kline => {
                    path.on_kline(transcoder.kline());
                    Incoming::Skip
                }
                Transcoded::Control => Incoming::Other(Some(Ok(Message::Text(text)))),
            }
        }
        (other, _) => Incoming::Other(other),
    }
}

/// A malformed JSON data frame: counted; the reader's first one is logged with the reason.
#[cold]
fn malformed(stats: &ReaderStats, transcoder: &Transcoder) {
    if stats.json_malformed.get() == 0
        && let Some(why) = transcoder.malformed()
    {
        tracing::warn!(%why, "a JSON market-data frame does not parse or convert: skipped (further ones are counted in json_malformed, not logged)");
    }
    stats.json_malformed.bump();
}

/// What one wait of a slot's task produced.
enum Event {
    Stop,
    Received(usize, Received),
    Connected(Box<Result<Ws, String>>),
    Command(Option<Command>),
    Timer,
}

/// Runs one connection slot for the life of the feed: the slot decides, this carries it out.
/// Once per read batch it publishes the slot's figures into `figures` for the control plane.
async fn connection_task(
    (streams, figures): (Vec<String>, Arc<ConnectionStats>),
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    ctx: Arc<FeedContext>,
    path: Rc<RefCell<FramePath>>,
    seed: u64,
) {
    let stats = path.borrow().stats().clone();
    let mut slot = Slot::new(&ctx.settings, streams, seed, stats, Instant::now());
    let mut stop = ctx.stop.clone();
    let mut io = Io {
        ctx,
        path,
        held: Held::default(),
        sockets: [None, None, None],
        connecting: None,
        json: None,
        choice: None,
    };
    if io.ctx.format != FeedFormat::Sbe {
        io.json = Some(Transcoder::new());
    }
    if io.ctx.format == FeedFormat::Dual {
        io.choice = Some(Choice::new(io.ctx.dual));
    }
    if *stop.borrow() {
        return;
    }
    let mut commands_open = true;
    // One timer for every deadline the slot has, re-armed only when the earliest moves
    // earlier or it fired: a timer reset per message would cost more than the message.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        // The batch just handled wakes its consumers before anything here can wait (a send
        // under TCP backpressure); a no-op when it pushed nothing.
        io.path.borrow_mut().wake_consumers();
        io.carry_out(&mut slot).await;
        if slot.is_stopped() {
            return;
        }
        let probe_at = io.choice.as_ref().and_then(Choice::deadline);
        let due = match (slot.deadline(), probe_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = due
            && armed.is_none_or(|at| deadline < at)
        {
            timer.as_mut().reset(deadline.into());
            armed = Some(deadline);
        }
        // Once per batch (the messages handled since the last wait): wake parked consumers,
        // publish the connection's figures (a few relaxed stores).
        io.path.borrow_mut().wake_consumers();
        figures.publish(slot.figures());
        let [s0, s1, s2] = &mut io.sockets;
        let connecting = &mut io.connecting;
        let event = tokio::select! {
            _ = stop.changed() => Event::Stop,
            m = next_of(s0.as_mut()) => Event::Received(0, m),
            m = next_of(s1.as_mut()) => Event::Received(1, m),
            m = next_of(s2.as_mut()) => Event::Received(2, m),
            r = async {
                match connecting.as_mut() {
                    Some((_, _, c)) => c.await,
                    None => std::future::pending().await,
                }
            } => Event::Connected(Box::new(r)),
            c = next_command(&mut commands, commands_open) => Event::Command(c),
            _ = &mut timer, if armed.is_some() => Event::Timer,
        };
        match event {
            Event::Stop => slot.handle(Input::Stop, Instant::now()),
            Event::Received(i, received) => io.on_received(&mut slot, i, received),
            Event::Connected(result) => io.on_connected(&mut slot, *result),
            Event::Command(Some(command)) => slot.handle(Input::Command(command), Instant::now()),
            Event::Command(None) => commands_open = false,
            Event::Timer => {
                armed = None;
                let now = Instant::now();
                slot.handle_timeout(now, &mut crate::sync::lock(&io.ctx.budget));
                io.probe_sbe(&mut slot, now);
            }
        }
    }
}

async fn next_of(socket: Option<&mut Socket>) -> Received {
    match socket {
        Some(socket) => socket.ws.next().await,
        None => std::future::pending().await,
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

impl Io {
    /// Carries out the slot's actions in order.
    async fn carry_out(&mut self, slot: &mut Slot) {
        let mut closing: Vec<Ws> = Vec::new();
        while let Some(action) = slot.poll_action() {
            match action {
                Action::Open { conn, streams } => {
                    let wire = match (&mut self.choice, self.ctx.format) {
                        (Some(choice), _) => choice.wire_for_open(Instant::now()),
                        (None, FeedFormat::Json) => Wire::Json,
                        (None, _) => Wire::Sbe,
                    };
                    let opening = open(streams, self.ctx.clone(), wire);
                    self.connecting = Some((conn, wire, Box::pin(opening)));
                }
                Action::Send { conn, text } => {
                    let ctx = self.ctx.clone();
                    if let Some(socket) = self.socket(conn)
                        && let text = match socket.wire {
                            Wire::Json => super::json::json_control(&text, &ctx.kline_intervals),
                            Wire::Sbe => text,
                        }
                        && let Err(error) = socket.ws.send(Message::text(text)).await
                    {
                        // The socket reports the failure on its next read: the slot hears then.
                        tracing::debug!(%error, "control request not sent");
                    }
                }
                Action::Pong { conn } => {
                    if let Some(socket) = self.socket(conn) {
                        // tungstenite queued the pong with the ping's payload; send it now.
                        let _ = socket.ws.flush().await;
                    }
                }
                Action::Close { conn } => {
                    if self.connecting.as_ref().is_some_and(|(c, _, _)| *c == conn) {
                        self.connecting = None;
                    }
                    if let Some(at) = self.position(conn)
                        && let Some(socket) = self.sockets[at].take()
                    {
                        closing.push(socket.ws);
                    }
                }
                Action::ReleaseHeld => self.path.borrow_mut().release(&mut self.held, true),
                Action::Accept { symbol, index } => {
                    self.path.borrow_mut().add_symbol(&symbol, index)
                }
                Action::Forget { index, halted } => {
                    let cause = if halted {
                        Cause::Halted
                    } else {
                        Cause::Removed
                    };
                    self.path.borrow_mut().forget_symbol(index, cause)
                }
                Action::StreamsLost { streams } => {
                    let cause = Cause::Disconnected;
                    self.path.borrow_mut().connection_changed(&streams, cause);
                }
                Action::StreamsBack { streams } => {
                    let cause = Cause::Reconnected;
                    self.path.borrow_mut().connection_changed(&streams, cause);
                }
            }
        }
        close_all(closing, slot.is_stopped()).await;
    }

    fn position(&self, conn: ConnId) -> Option<usize> {
        self.sockets
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == conn))
    }

    fn socket(&mut self, conn: ConnId) -> Option<&mut Socket> {
        let at = self.position(conn)?;
        self.sockets[at].as_mut()
    }

    fn on_connected(&mut self, slot: &mut Slot, result: Result<Ws, String>) {
        let Some((conn, wire, _)) = self.connecting.take() else {
            return;
        };
        let now = Instant::now();
        let attempt = match &result {
            Ok(_) => Attempt::Opened,
            Err(error) => Attempt::of_error(error),
        };
        if let Some(switch) = self
            .choice
            .as_mut()
            .and_then(|c| c.on_attempt(wire, attempt, now))
        {
            self.on_switch(switch, result.as_ref().err());
        }
        match result {
            Ok(ws) => match self.sockets.iter().position(Option::is_none) {
                Some(free) => {
                    tracing::info!(conn = ?conn, ?wire, "connected");
                    self.sockets[free] = Some(Socket { id: conn, ws, wire });
                    slot.handle(Input::Opened(conn), now);
                }
                None => {
                    // Not reached: the slot never has more connections than SOCKETS.
                    tracing::error!(conn = ?conn, "no room for another connection");
                    slot.handle(Input::Failed(conn), now);
                }
            },
            Err(error) => {
                tracing::warn!(conn = ?conn, %error, "connection failed");
                slot.handle(Input::Failed(conn), now);
            }
        }
    }

    /// Dual mode: the slot moved to JSON or back to SBE (cold: once per switch).
    #[cold]
    fn on_switch(&mut self, switch: Switch, error: Option<&String>) {
        let stats = self.path.borrow().stats().clone();
        match switch {
            Switch::ToJson => {
                stats.fallbacks_to_json.bump();
                let error = error.map_or("", String::as_str);
                tracing::warn!(%error, endpoint = %self.ctx.json_endpoint, "SBE refused or down: this connection moves to the JSON streams");
            }
            Switch::ToSbe => {
                stats.returns_to_sbe.bump();
                tracing::info!("SBE is back: this connection returns to it, make-before-break");
            }
        }
    }

    /// Dual mode, on JSON: when a probe of SBE is due and the slot carries its streams on one
    /// connection, asks the slot for a make-before-break replacement, opened as SBE.
    fn probe_sbe(&mut self, slot: &mut Slot, now: Instant) {
        if let Some(choice) = self.choice.as_mut()
            && choice.probe_due(now)
        {
            choice.ask_probe();
            slot.handle(Input::Replace, now);
        }
    }

    /// One message from socket `at`; in the steady state, then every message already buffered
    /// on it.
    fn on_received(&mut self, slot: &mut Slot, at: usize, received: Received) {
        let Some(conn) = self.sockets[at].as_ref().map(|s| s.id) else {
            return;
        };
        let mut path = self.path.borrow_mut();
        let received = match incoming(received, self.json.as_mut(), &mut path) {
            Incoming::Frame(frame, origin) => {
                let now = Instant::now();
                let route = slot.on_data(conn, now);
                dispatch(&mut path, &mut self.held, route, (frame, origin), now);
                if slot.steady() != Some(conn) {
                    return;
                }
                let Some(socket) = self.sockets[at].as_mut() else {
                    return;
                };
                match drain(slot, &mut path, &mut self.held, socket, self.json.as_mut()) {
                    Some(other) => other,
                    None => return,
                }
            }
            Incoming::Skip => return,
            Incoming::Other(other) => other,
        };
        drop(path);
        self.on_other(slot, at, conn, received);
    }

    /// A message other than a binary frame.
    fn on_other(&mut self, slot: &mut Slot, at: usize, conn: ConnId, received: Received) {
        let now = Instant::now();
        match received {
            Some(Ok(Message::Text(text))) => slot.handle(Input::Text(conn, text.as_str()), now),
            Some(Ok(Message::Ping(_))) => slot.handle(Input::Ping(conn), now),
            Some(Ok(Message::Binary(frame))) => {
                let route = slot.on_data(conn, now);
                dispatch(
                    &mut self.path.borrow_mut(),
                    &mut self.held,
                    route,
                    (frame, Origin::Wire),
                    now,
                );
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                self.sockets[at] = None;
                slot.handle(Input::Closed(conn), now);
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
        }
    }
}

/// The steady state's fast path: processes the messages already buffered on `socket` (up to
/// [`DRAIN_MAX`] in all) without selecting; returns the first one that is not a data frame
/// of the steady connection.
#[inline]
fn drain(
    slot: &mut Slot,
    path: &mut FramePath,
    held: &mut Held,
    socket: &mut Socket,
    mut json: Option<&mut Transcoder>,
) -> Option<Received> {
    for _ in 1..DRAIN_MAX {
        let received = socket.ws.next().now_or_never()?;
        match incoming(received, json.as_deref_mut(), path) {
            Incoming::Skip => {}
            Incoming::Frame(frame, origin) => {
                let now = Instant::now();
                let route = slot.on_data(socket.id, now);
                dispatch(path, held, route, (frame, origin), now);
                if slot.steady() != Some(socket.id) {
                    return None;
                }
            }
            Incoming::Other(other) => return Some(other),
        }
    }
    None
}

/// A data frame received at `now`, where the slot routed it.
#[inline]
fn dispatch(
    path: &mut FramePath,
    held: &mut Held,
    route: Route,
    (frame, origin): (Bytes, Origin),
    now: Instant,
) {
    let recv_time_ns = monotonic_ns_at(now);
    match route {
        Route::Direct => path.on_frame_from(frame, recv_time_ns, origin),
        Route::DirectThenRelease => {
            path.on_frame_from(frame, recv_time_ns, origin);
            path.release(held, false);
        }
        Route::Hold => path.on_frame_holding_from(frame, recv_time_ns, origin, held),
        Route::Drop => {}
    }
}

/// Closes sockets the slot let go: in the background while the feed runs (a close handshake
/// must not stall the other connections), at once (concurrently) when it stops.
async fn close_all(closing: Vec<Ws>, stopping: bool) {
    let closes = closing.into_iter().map(|mut ws| async move {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
    });
    if stopping {
        futures_util::future::join_all(closes).await;
    } else {
        for close in closes {
            tokio::task::spawn_local(close);
        }
    }
}
