//! The simulator's network shell: one port serving Binance's WebSocket market streams (SBE, and
//! JSON under `/json/...`) and its REST API, over plain TCP or TLS with a self-signed
//! certificate, with an admin API for ground truth and fault injection.
//!
//! Paths:
//! - `/ws/<stream>[/<stream>...]`, `/ws` (then SUBSCRIBE), `/stream?streams=a/b/c`: SBE frames,
//!   as `stream-sbe.binance.com`; the `X-MBX-APIKEY` header is required (HTTP 400 without).
//! - `/json/ws/...`, `/json/stream?streams=...`: Binance's regular JSON streams of the same
//!   market (`/json/stream` wraps each payload in `{"stream":..,"data":..}`).
//! - `/api/v3/...`: REST (see [`super::rest`]); `/admin/trades`, `/admin/book`,
//!   `/admin/symbols`: ground truth (see [`super::rest`]).
//! - `/admin/connections`: live connections (id, peer, target, streams, `framesSent`,
//!   `pongsReceived`, faults); `/admin/faults?conn=<id>|all|next&key=value...`:
//!   set faults ([`Faults`] keys) for one connection, for all (and every new one), or for the
//!   next one to connect; `/admin/rate?actions_per_second=N`: change the order-flow rate;
//!   `/admin/listing?symbol=S[&status=HALT][&quoteVolume=N]`: change what exchangeInfo and
//!   ticker/24hr report of a symbol (answers `{"symbol", "status", "quoteVolume"}`).
//!
//! HTTP/1.1 is hyper's (keep-alive, pipelining, sized bodies, HTTP 400 for a request it cannot
//! parse), behind the tokio-rustls acceptor when serving TLS. A WebSocket upgrade is answered
//! here (HTTP 101 with `Sec-WebSocket-Accept`, or HTTP 400 with a JSON message and a close), and
//! the connection hyper hands over becomes a tungstenite stream without a second handshake. On
//! shutdown, idle HTTP connections are closed gracefully.
//!
//! One ticker task advances the [`Exchange`] every `tick_ms`, encodes each event's SBE frame
//! once, and broadcasts it; each connection's task filters what it subscribed to.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::config::{Faults, SimConfig};
use super::encode;
use super::exchange::{Event, Exchange, StreamKey};
use super::rest::{self, WeightLimiter};
use super::rng::Rng;
use super::session;

/// How long a client may take for the TLS handshake, and hyper to hand over a connection it
/// answered 101: idle sockets do not hold tasks for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to send a whole request head, counted from its start or, on a
/// keep-alive connection, from the previous response (hyper's header read timeout).
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// The header Binance's SBE streams take the API key in.
const API_KEY_HEADER: &str = "x-mbx-apikey";

/// Response bodies: whole, with a `Content-Length`.
type Body = Full<Bytes>;

/// Frames the broadcast keeps for slow connections before they lag.
const BROADCAST_CAPACITY: usize = 1 << 16;

/// One published event: its SBE frame, encoded once, and its JSON payloads, encoded on first
/// use by a JSON connection.
pub struct Published {
    /// The stream.
    pub key: StreamKey,
    /// The event.
    pub event: Event,
    /// The SBE frame.
    pub sbe: Bytes,
    json: OnceLock<Vec<String>>,
}

impl Published {
    /// The event's JSON payloads (a trades event has one per trade).
    pub fn json(&self, symbol: &str) -> &[String] {
        self.json.get_or_init(|| {
            let mut out = Vec::new();
            encode::encode_json_each(symbol, &self.event, |payload| out.push(payload.to_string()));
            out
        })
    }
}

/// What the admin API can see and change of one live connection.
pub struct ConnControl {
    /// Connection id, in accept order.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The request path and query.
    pub target: String,
    /// Subscribed stream names.
    pub streams: Mutex<Vec<String>>,
    /// Frames sent.
    pub frames_sent: AtomicU64,
    /// Pongs received (answers to the server's pings, or unsolicited).
    pub pongs_received: AtomicU64,
    faults: Mutex<Faults>,
    faults_version: AtomicU64,
}

impl ConnControl {
    /// The connection's faults and their version (bumped on every change).
    pub fn faults(&self) -> (Faults, u64) {
        (
            lock(&self.faults).clone(),
            self.faults_version.load(Ordering::Acquire),
        )
    }

    /// The version of the connection's faults, cheap to poll per frame.
    pub fn faults_version(&self) -> u64 {
        self.faults_version.load(Ordering::Acquire)
    }

    fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = faults;
        self.faults_version.fetch_add(1, Ordering::AcqRel);
    }
}

/// State shared by the ticker, the acceptor and every connection.
pub struct Shared {
    /// The configuration.
    pub config: SimConfig,
    /// Upper-case symbols, in index order.
    pub symbols: Vec<String>,
    /// The market.
    pub exchange: Mutex<Exchange>,
    /// Published events.
    pub events: broadcast::Sender<Arc<Published>>,
    /// Flips to `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    next_conn_id: AtomicU64,
    /// Trade and depth frames the wire faults dropped, all connections together.
    pub dropped_frames: DroppedFrames,
    connections: Mutex<BTreeMap<u64, Arc<ConnControl>>>,
    default_faults: Mutex<Faults>,
    next_faults: Mutex<Option<Faults>>,
    limiters: Mutex<HashMap<IpAddr, WeightLimiter>>,
    rest_rng: Mutex<Rng>,
    /// The SBE streams' state (`/admin/sbe`): [`SBE_UP`], [`SBE_DOWN`] or [`SBE_REFUSE`].
    pub sbe_state: AtomicU8,
}

/// SBE streams served (the default).
pub const SBE_UP: u8 = 0;
/// SBE streams down: upgrades answered 503 and open SBE connections dropped; JSON stays up.
pub const SBE_DOWN: u8 = 1;
/// The API key refused: SBE upgrades answered 401 (Binance's -2015); open ones dropped.
pub const SBE_REFUSE: u8 = 2;

/// Frames the `drop_trades_pct` and `drop_depth_pct` faults dropped (what a test injected).
#[derive(Debug, Default)]
pub struct DroppedFrames {
    /// Trade frames dropped.
    pub trades: AtomicU64,
    /// Depth diff frames dropped.
    pub depth: AtomicU64,
}

impl Shared {
    /// The index of a lower- or upper-case symbol.
    pub fn symbol_index(&self, symbol: &str) -> Option<usize> {
        let upper = symbol.to_ascii_uppercase();
        self.symbols.iter().position(|s| *s == upper)
    }
}

/// Locks a mutex, recovering the data if poisoned (see [`crate::sync::lock`]).
pub use crate::sync::lock;

/// Microseconds since the Unix epoch.
pub use crate::clock::unix_us as now_us;

/// A running simulator.
pub struct SimHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The self-signed certificate (PEM) when serving TLS.
    pub cert_pem: Option<String>,
    /// The shared state, for in-process inspection.
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl SimHandle {
    /// Stops accepting, ends every connection and the ticker.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the simulator on the current tokio runtime.
pub async fn start(config: SimConfig) -> io::Result<SimHandle> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (tls, cert_pem) = if config.tls {
        let (acceptor, pem) = super::tls::self_signed_acceptor()?;
        if let Some(path) = &config.cert_out {
            std::fs::write(path, &pem)?;
        }
        (Some(acceptor), Some(pem))
    } else {
        (None, None)
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
    let mut exchange = Exchange::new(config.exchange.clone());
    exchange.run_history(now_us());
    let shared = Arc::new(Shared {
        symbols: config.exchange.symbols.clone(),
        exchange: Mutex::new(exchange),
        events,
        shutdown: shutdown_rx,
        next_conn_id: AtomicU64::new(1),
        sbe_state: AtomicU8::new(SBE_UP),
        dropped_frames: DroppedFrames::default(),
        connections: Mutex::new(BTreeMap::new()),
        default_faults: Mutex::new(config.faults.clone()),
        next_faults: Mutex::new(None),
        limiters: Mutex::new(HashMap::new()),
        rest_rng: Mutex::new(Rng::new(config.exchange.seed ^ 0x5e57)),
        config,
    });
    tokio::spawn(ticker(shared.clone()));
    tokio::spawn(acceptor(listener, tls, shared.clone()));
    tracing::info!(%addr, tls = cert_pem.is_some(), symbols = ?shared.symbols, "simulator listening");
    Ok(SimHandle {
        addr,
        cert_pem,
        shared,
        shutdown: shutdown_tx,
    })
}

async fn ticker(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_millis(shared.config.tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut shutdown = shared.shutdown.clone();
    let mut events = Vec::new();
    let mut frame = Vec::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        lock(&shared.exchange).advance(now_us(), &mut events);
        for event in events.drain(..) {
            encode::encode_sbe(&shared.symbols[event.key.symbol], &event, &mut frame);
            let published = Published {
                key: event.key,
                sbe: Bytes::copy_from_slice(&frame),
                event,
                json: OnceLock::new(),
            };
            // No receiver is fine: nobody is connected.
            let _ = shared.events.send(Arc::new(published));
        }
    }
}

async fn acceptor(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve(stream, peer, shared).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        )),
                    }
                }
                None => serve(tcp, peer, shared).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection with hyper until it closes, upgrades to WebSocket (the
/// session then runs in a task of its own) or the simulator stops.
async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_shared = shared.clone();
    let service = service_fn(move |request| handle(request, peer, service_shared.clone()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(KEEP_ALIVE_TIMEOUT);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        served = connection.as_mut() => return served.map_err(io::Error::other),
        _ = shutdown.wait_for(|&stop| stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await.map_err(io::Error::other)
}

/// One request: a WebSocket upgrade, an admin call or REST.
async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    if is_websocket(request.headers()) {
        return Ok(upgrade(request, peer, shared));
    }
    let uri = request.uri();
    let text = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let api = rest::Request {
        method: request.method().as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        accept: text(header::ACCEPT.as_str()),
        sbe_schema: text(crate::binance::rest_sbe::SBE_HEADER),
    };
    let response = route(api, peer, &shared).await;
    Ok(into_hyper(response))
}

/// Whether the request asks for a WebSocket upgrade.
fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// A handler's response as hyper's, with a sized body.
fn into_hyper(response: rest::Response) -> Response<Body> {
    let mut builder = Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(response.body)))
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unrepresentable response");
            let mut error = Response::new(Full::default());
            *error.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            error
        })
}

async fn route(request: rest::Request<'_>, peer: SocketAddr, shared: &Shared) -> rest::Response {
    let query = request.query;
    match request.path {
        "/admin/connections" => connections_json(shared),
        "/admin/faults" => set_faults(query, shared),
        "/admin/rate" => set_rate(query, shared),
        "/admin/listing" => set_listing(query, shared),
        "/admin/sbe" => set_sbe(query, shared),
        _ => {
            let is_api = request.path.starts_with("/api/");
            let faults = lock(&shared.default_faults).clone();
            if is_api && faults.rest_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(faults.rest_delay_ms)).await;
            }
            if is_api && let Some(injected) = rest_fault(&faults, shared) {
                return injected;
            }
            let now_ms = now_us() / 1000;
            let exchange = lock(&shared.exchange);
            let mut limiters = lock(&shared.limiters);
            let limiter = limiters
                .entry(peer.ip())
                .or_insert_with(|| WeightLimiter::new(shared.config.rest_weight_per_minute));
            rest::handle(&exchange, &request, now_ms, limiter, shared.config.rest_sbe)
        }
    }
}

fn json_response(status: u16, body: String) -> rest::Response {
    rest::Response {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.into_bytes(),
    }
}

fn rest_fault(faults: &Faults, shared: &Shared) -> Option<rest::Response> {
    let mut rng = lock(&shared.rest_rng);
    if percent(&mut rng, faults.rest_error_pct) {
        return Some(json_response(
            500,
            r#"{"code":-1000,"msg":"An unknown error occurred while processing the request."}"#
                .into(),
        ));
    }
    if percent(&mut rng, faults.rest_throttle_pct) {
        let mut response = json_response(
            429,
            r#"{"code":-1003,"msg":"Too much request weight used; current limit is 6000 request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."}"#.into(),
        );
        response.headers.push(("Retry-After".into(), "1".into()));
        return Some(response);
    }
    None
}

/// `true` with probability `pct` percent, in steps of 0.01 %.
pub fn percent(rng: &mut Rng, pct: f64) -> bool {
    pct > 0.0 && (rng.below(10_000) as f64) < pct * 100.0
}

fn connections_json(shared: &Shared) -> rest::Response {
    let connections = lock(&shared.connections);
    let list: Vec<serde_json::Value> = connections
        .values()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "peer": c.peer.to_string(),
                "target": c.target,
                "streams": *lock(&c.streams),
                "framesSent": c.frames_sent.load(Ordering::Relaxed),
                "pongsReceived": c.pongs_received.load(Ordering::Relaxed),
                "faults": c.faults().0,
            })
        })
        .collect();
    json_response(200, serde_json::Value::from(list).to_string())
}

/// `/admin/faults?conn=<id>|all|next&<key>=<value>...`: unnamed keys keep their values.
fn set_faults(query: &str, shared: &Shared) -> rest::Response {
    let target = rest::query_value(query, "conn").unwrap_or_else(|| "all".into());
    let base = match target.as_str() {
        "all" | "next" => lock(&shared.default_faults).clone(),
        id => match id
            .parse::<u64>()
            .ok()
            .and_then(|id| lock(&shared.connections).get(&id).cloned())
        {
            Some(conn) => conn.faults().0,
            None => {
                return json_response(404, format!(r#"{{"code":-1,"msg":"no connection {id}"}}"#));
            }
        },
    };
    let faults = match apply_fault_params(base, query) {
        Ok(faults) => faults,
        Err(msg) => {
            return json_response(400, serde_json::json!({"code": -1, "msg": msg}).to_string());
        }
    };
    match target.as_str() {
        "all" => {
            *lock(&shared.default_faults) = faults.clone();
            for conn in lock(&shared.connections).values() {
                conn.set_faults(faults.clone());
            }
        }
        "next" => *lock(&shared.next_faults) = Some(faults.clone()),
        id => {
            if let Some(conn) = id
                .parse::<u64>()
                .ok()
                .and_then(|id| lock(&shared.connections).get(&id).cloned())
            {
                conn.set_faults(faults.clone());
            }
        }
    }
    json_response(
        200,
        serde_json::json!({"conn": target, "faults": faults}).to_string(),
    )
}

fn apply_fault_params(base: Faults, query: &str) -> Result<Faults, String> {
    let mut value = serde_json::to_value(base).map_err(|e| e.to_string())?;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "conn" {
            continue;
        }
        let Some(slot) = value.get_mut(key) else {
            return Err(format!("unknown fault '{key}'"));
        };
        let parsed: serde_json::Value = if slot.is_string() {
            rest::query_value(&format!("{key}={raw}"), key)
                .unwrap_or_default()
                .into()
        } else if slot.is_u64() {
            raw.parse::<u64>()
                .map(Into::into)
                .map_err(|_| format!("{key}={raw}: not a whole number"))?
        } else {
            raw.parse::<f64>()
                .map(Into::into)
                .map_err(|_| format!("{key}={raw}: not a number"))?
        };
        *slot = parsed;
    }
    let faults: Faults = serde_json::from_value(value).map_err(|e| e.to_string())?;
    faults.validate()?;
    Ok(faults)
}

fn set_rate(query: &str, shared: &Shared) -> rest::Response {
    match rest::query_value(query, "actions_per_second").and_then(|v| v.parse::<f64>().ok()) {
        Some(rate) if (0.0..=10_000_000.0).contains(&rate) => {
            lock(&shared.exchange).set_rate(rate);
            json_response(200, format!(r#"{{"actionsPerSecond":{rate}}}"#))
        }
        _ => json_response(
            400,
            r#"{"code":-1,"msg":"actions_per_second must be a number between 0 and 10000000"}"#
                .into(),
        ),
    }
}

/// `/admin/sbe?state=up|down|refuse`: the SBE streams served, down (HTTP 503), or refusing the
/// key (HTTP 401); `down` and `refuse` also drop the open SBE connections. JSON is untouched.
fn set_sbe(query: &str, shared: &Shared) -> rest::Response {
    let state = match rest::query_value(query, "state").as_deref() {
        Some("up") => SBE_UP,
        Some("down") => SBE_DOWN,
        Some("refuse") => SBE_REFUSE,
        _ => {
            return json_response(
                400,
                r#"{"code":-1,"msg":"state must be up, down or refuse"}"#.into(),
            );
        }
    };
    shared.sbe_state.store(state, Ordering::Relaxed);
    json_response(200, format!(r#"{{"sbeState":{state}}}"#))
}

/// `/admin/listing?symbol=S[&status=..][&quoteVolume=..]`: what REST reports of a symbol.
fn set_listing(query: &str, shared: &Shared) -> rest::Response {
    let symbol = rest::query_value(query, "symbol").unwrap_or_default();
    let status = rest::query_value(query, "status");
    let volume = rest::query_value(query, "quoteVolume");
    match lock(&shared.exchange).set_listing(&symbol, status.as_deref(), volume.as_deref()) {
        Ok(listing) => {
            let body = serde_json::json!({
                "symbol": symbol,
                "status": listing.status,
                "quoteVolume": listing.quote_volume,
            });
            json_response(200, body.to_string())
        }
        Err(msg) => json_response(400, serde_json::json!({"code": -1, "msg": msg}).to_string()),
    }
}

/// Registers a new connection, giving it the faults meant for it.
pub fn register(shared: &Shared, peer: SocketAddr, target: String) -> Arc<ConnControl> {
    let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let faults = lock(&shared.next_faults)
        .take()
        .unwrap_or_else(|| lock(&shared.default_faults).clone());
    let control = Arc::new(ConnControl {
        id,
        peer,
        target,
        streams: Mutex::new(Vec::new()),
        frames_sent: AtomicU64::new(0),
        pongs_received: AtomicU64::new(0),
        faults: Mutex::new(faults),
        faults_version: AtomicU64::new(1),
    });
    lock(&shared.connections).insert(id, control.clone());
    control
}

/// Forgets a closed connection.
pub fn unregister(shared: &Shared, id: u64) {
    lock(&shared.connections).remove(&id);
}

/// Answers a WebSocket upgrade: HTTP 400 for a target the simulator does not serve (an SBE
/// stream without `X-MBX-APIKEY` included) or a malformed handshake; otherwise HTTP 101, with the
/// session started on the upgraded connection once hyper hands it over.
fn upgrade(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Response<Body> {
    let uri = request.uri();
    let (path, query) = (uri.path(), uri.query().unwrap_or(""));
    if !path.starts_with("/json") {
        let refused = match shared.sbe_state.load(Ordering::Relaxed) {
            SBE_DOWN => Some((503, -1, "SBE streams are down")),
            SBE_REFUSE => Some((
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            )),
            _ => None,
        };
        if let Some((status, code, msg)) = refused {
            let body = serde_json::json!({"code": code, "msg": msg}).to_string();
            let mut response = json_response(status, body);
            response.headers.push(("Connection".into(), "close".into()));
            return into_hyper(response);
        }
    }
    let api_key = request
        .headers()
        .get(API_KEY_HEADER)
        .is_some_and(|v| !v.is_empty());
    let accepted = session::parse_target(path, query, api_key, &shared)
        .and_then(|session| Ok((session, websocket_accept(&request)?)));
    let (session, accept) = match accepted {
        Ok(accepted) => accepted,
        Err(message) => {
            let body = serde_json::json!({"code": -1, "msg": message}).to_string();
            let mut response = json_response(400, body);
            response.headers.push(("Connection".into(), "close".into()));
            return into_hyper(response);
        }
    };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(websocket(on_upgrade, session, target, peer, shared));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::default())
        .unwrap_or_else(|_| into_hyper(json_response(500, "{}".into())))
}

/// The `Sec-WebSocket-Accept` value for a well-formed RFC 6455 handshake request; the error is
/// the HTTP 400 message.
fn websocket_accept(request: &Request<Incoming>) -> Result<String, String> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if request.method() != Method::GET || request.version() != Version::HTTP_11 {
        return Err("a WebSocket handshake is an HTTP/1.1 GET".into());
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return Err("no 'Connection: upgrade' header".into());
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err("Sec-WebSocket-Version must be 13".into());
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(derive_accept_key(key.as_bytes())),
        _ => Err("no Sec-WebSocket-Key header".into()),
    }
}

/// Runs one WebSocket session on the connection hyper hands over after the 101.
async fn websocket(
    on_upgrade: OnUpgrade,
    request: session::SessionRequest,
    target: String,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let upgraded = match tokio::time::timeout(HANDSHAKE_TIMEOUT, on_upgrade).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "upgrade failed"),
        Err(_) => return tracing::debug!(%peer, "upgrade timed out"),
    };
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let control = register(&shared, peer, target);
    tracing::info!(conn = control.id, %peer, target = %control.target, streams = request.streams.len(), "websocket connected");
    let result = session::run(ws, request, control.clone(), shared.clone()).await;
    unregister(&shared, control.id);
    tracing::info!(conn = control.id, %peer, outcome = ?result, "websocket closed");
}
