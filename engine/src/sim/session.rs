//! One simulated WebSocket connection: stream subscriptions (from the URL and live
//! SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS/SET_PROPERTY/GET_PROPERTY, with Binance's error
//! codes), delivery of SBE binary frames or JSON text frames, server pings and the pong
//! deadline, the incoming-message rate limit, the connection lifetime with `serverShutdown`,
//! and per-connection fault injection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::config::Faults;
use super::encode;
use super::exchange::{StreamKey, StreamKind};
use super::klines::{KlineSubs, kline_stream};
use super::rest::query_value;
use super::rng::Rng;
use super::server::{ConnControl, Published, Shared, lock, now_us, percent};

/// How long a closing server waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Events delivered before a flush, so a busy connection writes in large batches.
const BATCH_MAX: usize = 512;

/// Frame format of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// SBE binary frames (`stream-sbe.binance.com`).
    Sbe,
    /// Binance's JSON payloads in text frames.
    Json,
}

/// What a connection asked for in its URL.
#[derive(Clone, Debug)]
pub struct SessionRequest {
    /// SBE or JSON.
    pub format: Format,
    /// `/stream` (combined) rather than `/ws` (raw).
    pub combined: bool,
    /// Streams named in the URL.
    pub streams: Vec<(String, StreamKey)>,
    /// Kline streams named in the URL (JSON only): name, symbol index, interval.
    pub klines: Vec<(String, usize, crate::kline::Interval)>,
}

/// Parses a WebSocket request target (`path`, and `query` without `?`); `api_key` tells whether
/// the request carries a non-empty `X-MBX-APIKEY` header. The error is the HTTP 400 message.
pub fn parse_target(
    path: &str,
    query: &str,
    api_key: bool,
    shared: &Shared,
) -> Result<SessionRequest, String> {
    let (format, path) = match path.strip_prefix("/json") {
        Some(rest) => (Format::Json, rest),
        None => (Format::Sbe, path),
    };
    if format == Format::Sbe && !api_key {
        return Err("No X-MBX-APIKEY header".into());
    }
    let (combined, names): (bool, Vec<String>) = if path == "/stream" {
        let list = query_value(query, "streams").unwrap_or_default();
        (
            true,
            list.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    } else if path == "/ws" || path.starts_with("/ws/") {
        let list = path.trim_start_matches("/ws").trim_start_matches('/');
        (
            false,
            list.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    } else {
        return Err(format!("unknown path {path}"));
    };
    if names.len() > shared.config.websocket.max_streams {
        return Err(format!(
            "too many streams: {} (at most {} per connection)",
            names.len(),
            shared.config.websocket.max_streams
        ));
    }
    let mut streams = Vec::new();
    let mut klines = Vec::new();
    for name in names {
        if format == Format::Json
            && let Some((symbol, interval)) = kline_stream(&name, shared)
        {
            klines.push((name, symbol, interval));
            continue;
        }
        let key = stream_key(&name, format, shared)
            .ok_or_else(|| format!("Invalid stream name: {name}"))?;
        streams.push((name, key));
    }
    Ok(SessionRequest {
        format,
        combined,
        streams,
        klines,
    })
}

/// The stream a name designates: a lower-case known symbol, `@`, and a kind (JSON also
/// accepts Binance's names: `bookTicker` for the top of book, `depth@100ms`, `depth20@100ms`
/// and their 1000 ms forms).
fn stream_key(name: &str, format: Format, shared: &Shared) -> Option<StreamKey> {
    let (symbol, suffix) = name.split_once('@')?;
    if symbol.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let kind = match (StreamKind::from_suffix(suffix), format, suffix) {
        (Some(kind), _, _) => kind,
        (None, Format::Json, _) => crate::feed::json::json_kind(suffix)?,
        _ => return None,
    };
    Some(StreamKey {
        symbol: shared.symbol_index(symbol)?,
        kind,
    })
}

fn slot(key: StreamKey) -> usize {
    key.symbol * StreamKind::ALL.len() + key.kind as usize
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// The client closed, or the socket failed.
    Client,
    /// No pong within the deadline.
    PongTimeout,
    /// More incoming messages per second than allowed.
    TooManyMessages,
    /// The connection reached its lifetime.
    Lifetime,
    /// The connection could not keep up with the stream.
    Lagged(u64),
    /// A fault: the TCP connection was dropped without a close frame.
    AbruptClose,
    /// The simulator is shutting down.
    Shutdown,
}

/// Subscriptions and properties of a live connection.
struct Subscriptions {
    names: Vec<(String, StreamKey)>,
    /// For each (symbol, kind) slot, the index in `names` of its first subscription.
    by_slot: Vec<Option<usize>>,
    combined: bool,
    format: Format,
    /// Kline streams (JSON only), built from the published trades.
    klines: KlineSubs,
}

impl Subscriptions {
    fn new(symbols: usize, combined: bool, format: Format) -> Self {
        Subscriptions {
            names: Vec::new(),
            by_slot: vec![None; symbols * StreamKind::ALL.len()],
            combined,
            format,
            klines: KlineSubs::default(),
        }
    }

    /// Every subscribed name, kline streams last.
    fn all_names(&self) -> Vec<String> {
        let names = self.names.iter().map(|(n, _)| n.as_str());
        names
            .chain(self.klines.names())
            .map(str::to_string)
            .collect()
    }

    fn rebuild(&mut self) {
        self.by_slot.iter_mut().for_each(|s| *s = None);
        for (i, (_, key)) in self.names.iter().enumerate() {
            let s = &mut self.by_slot[slot(*key)];
            if s.is_none() {
                *s = Some(i);
            }
        }
    }

    fn add(&mut self, name: String, key: StreamKey) {
        if !self.names.iter().any(|(n, _)| *n == name) {
            self.names.push((name, key));
            self.rebuild();
        }
    }

    fn remove(&mut self, name: &str) {
        self.names.retain(|(n, _)| n != name);
        self.rebuild();
    }
}

/// Fault injection state of one connection: deterministic from the seed and connection id.
struct FaultState {
    faults: Faults,
    version: u64,
    rng: Rng,
}

/// Runs a connection until it ends.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    request: SessionRequest,
    control: Arc<ConnControl>,
    shared: Arc<Shared>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.config.websocket.clone();
    let (mut sink, mut source) = ws.split();
    let mut events = shared.events.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let mut subs = Subscriptions::new(shared.symbols.len(), request.combined, request.format);
    for (name, key) in request.streams {
        subs.add(name, key);
    }
    for (name, symbol, interval) in request.klines {
        subs.klines.add(name, symbol, interval);
    }
    publish_streams(&control, &subs);
    let (faults, version) = control.faults();
    let mut fault = FaultState {
        faults,
        version,
        rng: Rng::new(shared.config.exchange.seed ^ control.id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    };
    let opened = Instant::now();
    let notice_at =
        opened + Duration::from_millis(limits.max_lifetime_ms - limits.shutdown_notice_ms);
    let end_at = opened + Duration::from_millis(limits.max_lifetime_ms);
    let mut notice_sent = false;
    let mut ping = tokio::time::interval_at(
        opened + Duration::from_millis(limits.ping_interval_ms),
        Duration::from_millis(limits.ping_interval_ms),
    );
    // After a stall, one ping, not a burst of the missed ones.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_pong = opened;
    let mut incoming: VecDeque<Instant> = VecDeque::new();
    let mut text = String::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return End::Shutdown,
            message = source.next() => {
                let Some(Ok(message)) = message else { return End::Client };
                let now = Instant::now();
                incoming.push_back(now);
                while incoming.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1)) {
                    incoming.pop_front();
                }
                if incoming.len() > limits.max_incoming_per_second as usize {
                    close_gracefully(&mut sink, &mut source, CloseCode::Policy, "Too many requests").await;
                    return End::TooManyMessages;
                }
                match message {
                    Message::Text(request) => {
                        let reply = control_reply(request.as_str(), &mut subs, &shared);
                        publish_streams(&control, &subs);
                        if sink.send(Message::text(reply)).await.is_err() {
                            return End::Client;
                        }
                    }
                    Message::Pong(_) => {
                        last_pong = now;
                        control.pongs_received.fetch_add(1, Ordering::Relaxed);
                    }
                    Message::Close(_) => return End::Client,
                    _ => {}
                }
            }
            _ = ping.tick() => {
                if last_pong.elapsed() > Duration::from_millis(limits.pong_timeout_ms) {
                    close_gracefully(&mut sink, &mut source, CloseCode::Policy, "Pong timeout").await;
                    return End::PongTimeout;
                }
                let payload = (now_us() / 1000).to_string();
                if sink.send(Message::Ping(payload.into_bytes().into())).await.is_err() {
                    return End::Client;
                }
            }
            _ = tokio::time::sleep_until(notice_at), if !notice_sent => {
                notice_sent = true;
                let event = json!({"e": "serverShutdown", "E": now_us() / 1000}).to_string();
                if sink.send(Message::text(event)).await.is_err() {
                    return End::Client;
                }
            }
            _ = tokio::time::sleep_until(end_at) => {
                close_gracefully(&mut sink, &mut source, CloseCode::Away, "Connection lifetime reached").await;
                return End::Lifetime;
            }
            received = events.recv() => {
                let mut next = match received {
                    Ok(published) => Some(published),
                    Err(RecvError::Lagged(missed)) => {
                        close_gracefully(&mut sink, &mut source, CloseCode::Policy, "Slow consumer").await;
                        return End::Lagged(missed);
                    }
                    Err(RecvError::Closed) => return End::Shutdown,
                };
                let mut batch = 0;
                while let Some(published) = next.take() {
                    if let Err(end) = deliver_klines(&published, &mut subs, &shared, &mut text, &mut sink).await {
                        return end;
                    }
                    match deliver(&published, request.format, &subs, &mut fault, &control, &shared, &mut text, &mut sink).await {
                        Ok(()) => {}
                        Err(end) => return end,
                    }
                    batch += 1;
                    if batch < BATCH_MAX {
                        next = match events.try_recv() {
                            Ok(p) => Some(p),
                            Err(TryRecvError::Lagged(missed)) => {
                                close_gracefully(&mut sink, &mut source, CloseCode::Policy, "Slow consumer").await;
                                return End::Lagged(missed);
                            }
                            Err(_) => None,
                        };
                    }
                }
                if sink.flush().await.is_err() {
                    return End::Client;
                }
            }
        }
    }
}

/// Sends a close frame and waits (briefly) for the client's, so the close handshake completes
/// and unread client data does not turn the close into a reset.
async fn close_gracefully<K, R>(sink: &mut K, source: &mut R, code: CloseCode, reason: &str)
where
    K: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    if sink.send(close(code, reason)).await.is_err() {
        return;
    }
    let drain = async {
        while let Some(Ok(message)) = source.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
}

fn close(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}

fn publish_streams(control: &ConnControl, subs: &Subscriptions) {
    *lock(&control.streams) = subs.all_names();
}

/// Sends the kline messages `published` makes due (no faults: they are the trade stream's).
async fn deliver_klines<K>(
    published: &Published,
    subs: &mut Subscriptions,
    shared: &Shared,
    text: &mut String,
    sink: &mut K,
) -> Result<(), End>
where
    K: futures_util::Sink<Message> + Unpin,
{
    if subs.klines.is_empty() {
        return Ok(());
    }
    let mut out: Vec<String> = Vec::new();
    let combined = subs.combined;
    subs.klines.on_event(published, shared, |name, payload| {
        text.clear();
        if combined {
            encode::wrap_combined(name, payload, text);
        } else {
            text.push_str(payload);
        }
        out.push(text.clone());
    });
    for message in out {
        sink.feed(Message::text(message))
            .await
            .map_err(|_| End::Client)?;
    }
    Ok(())
}

/// Sends one event if subscribed, applying the connection's faults.
#[allow(clippy::too_many_arguments)]
async fn deliver<K>(
    published: &Published,
    format: Format,
    subs: &Subscriptions,
    fault: &mut FaultState,
    control: &ConnControl,
    shared: &Shared,
    text: &mut String,
    sink: &mut K,
) -> Result<(), End>
where
    K: futures_util::Sink<Message> + Unpin,
{
    let Some(name_index) = subs.by_slot[slot(published.key)] else {
        return Ok(());
    };
    if control.faults_version() != fault.version {
        (fault.faults, fault.version) = control.faults();
    }
    let f = &fault.faults;
    if !f.mute_stream.is_empty() && subs.names[name_index].0 == f.mute_stream {
        return Ok(());
    }
    let dropped = match published.key.kind {
        StreamKind::Trade => percent(&mut fault.rng, f.drop_trades_pct),
        StreamKind::Depth => percent(&mut fault.rng, f.drop_depth_pct),
        _ => false,
    };
    if dropped {
        let counter = match published.key.kind {
            StreamKind::Trade => &shared.dropped_frames.trades,
            _ => &shared.dropped_frames.depth,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    if format == Format::Sbe && shared.sbe_state.load(Ordering::Relaxed) != super::server::SBE_UP {
        return Err(End::AbruptClose);
    }
    let sent = control.frames_sent.fetch_add(1, Ordering::Relaxed) + 1;
    if f.close_after_frames > 0 && sent > f.close_after_frames {
        return Err(End::AbruptClose);
    }
    if f.stall_after_frames > 0 && sent == f.stall_after_frames {
        tokio::time::sleep(Duration::from_millis(f.stall_ms)).await;
    }
    let copies = if percent(&mut fault.rng, f.duplicate_pct) {
        2
    } else {
        1
    };
    match format {
        Format::Sbe => {
            let frame = damaged(published.sbe.clone(), f, &mut fault.rng);
            for _ in 0..copies {
                sink.feed(Message::Binary(frame.clone()))
                    .await
                    .map_err(|_| End::Client)?;
            }
        }
        Format::Json => {
            let symbol = &shared.symbols[published.key.symbol];
            let name = &subs.names[name_index].0;
            for payload in published.json(symbol) {
                text.clear();
                if subs.combined {
                    encode::wrap_combined(name, payload, text);
                } else {
                    text.push_str(payload);
                }
                damage_text(text, f, &mut fault.rng);
                for _ in 0..copies {
                    sink.feed(Message::text(text.clone()))
                        .await
                        .map_err(|_| End::Client)?;
                }
            }
        }
    }
    Ok(())
}

/// A frame as the corrupt and truncate faults leave it.
fn damaged(frame: bytes::Bytes, f: &Faults, rng: &mut Rng) -> bytes::Bytes {
    if frame.is_empty() {
        return frame;
    }
    if percent(rng, f.truncate_pct) {
        let len = rng.below(frame.len() as u64) as usize;
        return frame.slice(..len);
    }
    if percent(rng, f.corrupt_pct) {
        let mut bytes = frame.to_vec();
        let at = rng.below(bytes.len().min(16) as u64) as usize;
        bytes[at] ^= 0xff;
        return bytes.into();
    }
    frame
}

/// A JSON text frame as the truncate and corrupt faults leave it: cut short (at a character
/// boundary), or its closing brace replaced. Either way it is no longer JSON, so a reader
/// must count it malformed.
fn damage_text(text: &mut String, f: &Faults, rng: &mut Rng) {
    if text.is_empty() {
        return;
    }
    if percent(rng, f.truncate_pct) {
        let len = text.floor_char_boundary(rng.below(text.len() as u64) as usize);
        text.truncate(len);
    } else if percent(rng, f.corrupt_pct) {
        text.pop();
        text.push('!');
    }
}

/// Answers one JSON control request (PROTOCOL.md 3.5).
fn control_reply(request: &str, subs: &mut Subscriptions, shared: &Shared) -> String {
    let value: Value = match serde_json::from_str(request) {
        Ok(v) => v,
        Err(e) => return json!({"code": 3, "msg": format!("Invalid JSON: {e}")}).to_string(),
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let id_ok = match &id {
        Value::Null => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => s.len() <= 36 && s.bytes().all(|b| b.is_ascii_alphanumeric()),
        _ => false,
    };
    if !id_ok {
        return json!({"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}).to_string();
    }
    let Some(method) = value.get("method").and_then(Value::as_str) else {
        return json!({"code": 2, "msg": "Invalid request: missing field `method`", "id": id})
            .to_string();
    };
    let params = value
        .get("params")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    match control_result(method, &params, subs, shared) {
        Ok(result) => json!({"result": result, "id": id}).to_string(),
        Err((code, msg)) => json!({"code": code, "msg": msg, "id": id}).to_string(),
    }
}

fn control_result(
    method: &str,
    params: &Value,
    subs: &mut Subscriptions,
    shared: &Shared,
) -> Result<Value, (i32, String)> {
    let names = || -> Result<Vec<String>, (i32, String)> {
        params
            .as_array()
            .ok_or((2, "Invalid request: params must be an array".to_string()))?
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or((
                    2,
                    "Invalid request: stream names must be strings".to_string(),
                ))
            })
            .collect()
    };
    let format = subs.format;
    match method {
        "SUBSCRIBE" => {
            let mut names = names()?;
            let mut klines = Vec::new();
            names.retain(|name| {
                let kline = (format == Format::Json)
                    .then(|| kline_stream(name, shared))
                    .flatten();
                if let Some((symbol, interval)) = kline {
                    klines.push((name.clone(), symbol, interval));
                }
                kline.is_none()
            });
            let mut keys = Vec::new();
            for name in &names {
                let key = stream_key(name, format, shared)
                    .ok_or((2, format!("Invalid request: invalid stream name {name}")))?;
                keys.push(key);
            }
            let new = names
                .iter()
                .filter(|n| !subs.names.iter().any(|(m, _)| m == *n))
                .count();
            if subs.names.len() + subs.klines.len() + new + klines.len()
                > shared.config.websocket.max_streams
            {
                return Err((
                    2,
                    format!(
                        "Invalid request: too many streams (at most {})",
                        shared.config.websocket.max_streams
                    ),
                ));
            }
            for (name, key) in names.into_iter().zip(keys) {
                subs.add(name, key);
            }
            for (name, symbol, interval) in klines {
                subs.klines.add(name, symbol, interval);
            }
            Ok(Value::Null)
        }
        "UNSUBSCRIBE" => {
            for name in names()? {
                subs.remove(&name);
                subs.klines.remove(&name);
            }
            Ok(Value::Null)
        }
        "LIST_SUBSCRIPTIONS" => Ok(subs.all_names().into_iter().map(Value::from).collect()),
        "SET_PROPERTY" => match params.as_array().map(Vec::as_slice) {
            Some([Value::String(p), Value::Bool(on)]) if p == "combined" => {
                subs.combined = *on;
                Ok(Value::Null)
            }
            Some([Value::String(p), _]) if p == "combined" => {
                Err((1, "Invalid value type: expected Boolean".into()))
            }
            _ => Err((0, "Unknown property".into())),
        },
        "GET_PROPERTY" => match params.as_array().map(Vec::as_slice) {
            Some([Value::String(p)]) if p == "combined" => Ok(Value::Bool(subs.combined)),
            _ => Err((0, "Unknown property".into())),
        },
        other => Err((
            2,
            format!(
                "Invalid request: unknown variant `{other}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
            ),
        )),
    }
}
