//! A fault-injecting HTTP/1.1 proxy in front of the Kinesis emulator. No emulator throttles, so
//! the Kinesis writer's retry paths are tested through this proxy: it throttles or fails whole
//! PutRecords requests, fails chosen entries of a PutRecords (forwarding the rest and answering
//! in the original order), answers 503 to everything, closes every connection, answers one
//! operation slowly or only once the test opens its gate, or forwards PutRecords and then never
//! answers (the records land, the client cannot know); and it counts what it saw. It runs on a
//! thread of its own (a current-thread tokio runtime), so sync and async tests can use it alike.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::servers::{KinesisEmulator, kinesis_client, sdk_error};

/// How long the proxy waits for the upstream emulator before answering 502 itself.
const UPSTREAM_PATIENCE: Duration = Duration::from_secs(30);
/// The largest request or response head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;
/// The error every entry failed by injection carries.
const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// Which entries of a PutRecords request to fail (see [`Faults::fail_entries`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailPattern {
    /// Entry indices `i` with `i % n == n - 1` (every n-th entry; `n == 0` fails none).
    EveryNth(usize),
    /// Every entry of partition key `key` from its second occurrence in the request onward, as
    /// when one shard is throttled in the middle of a request.
    SuffixOfKey {
        /// The partition key whose later entries fail.
        key: String,
    },
    /// Each entry independently with probability `per_mille / 1000`, from a generator seeded
    /// with `seed` when the pattern is set (it continues across requests).
    Random {
        /// Failure probability in thousandths.
        per_mille: u32,
        /// The generator's seed.
        seed: u64,
    },
}

impl FailPattern {
    /// For each partition key of a request, whether that entry fails.
    fn choose(&self, keys: &[Option<&str>], rng: &mut u64) -> Vec<bool> {
        match self {
            FailPattern::EveryNth(n) => (0..keys.len()).map(|i| *n > 0 && i % n == n - 1).collect(),
            FailPattern::SuffixOfKey { key } => {
                let mut seen = false;
                keys.iter()
                    .map(|k| {
                        if *k != Some(key.as_str()) {
                            return false;
                        }
                        let fail = seen;
                        seen = true;
                        fail
                    })
                    .collect()
            }
            FailPattern::Random { per_mille, .. } => keys
                .iter()
                .map(|_| splitmix64(rng) % 1000 < u64::from(*per_mille))
                .collect(),
        }
    }
}

/// SplitMix64: a small, good, seedable generator.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the proxy counted so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests seen, by operation (the part of `X-Amz-Target` after the dot), whatever was
    /// done with them.
    pub requests: BTreeMap<String, u64>,
    /// PutRecords entries forwarded to the emulator.
    pub entries_forwarded: u64,
    /// PutRecords entries failed by injection (`fail_entries`).
    pub entries_failed: u64,
    /// Requests the proxy answered itself with an injected error (throttle, 500, 503).
    pub injected_errors: u64,
    /// Connections closed by `refuse`, at accept or at a request.
    pub refused: u64,
    /// PutRecords requests forwarded (their records landed) and then left unanswered.
    pub answers_held: u64,
    /// The same, by stream.
    pub answers_held_by_stream: BTreeMap<String, u64>,
}

/// A `fail_entries` pattern with the requests it still applies to.
struct ActiveFail {
    pattern: FailPattern,
    requests_left: u32,
    rng: u64,
}

#[derive(Default)]
struct State {
    throttle: u32,
    server_error: u32,
    fail: Option<ActiveFail>,
    down: bool,
    refuse: bool,
    hold_answers: bool,
    delays: Vec<(String, Duration)>,
    /// Operations whose requests wait until the gate opens.
    gated: Vec<String>,
    counters: Counters,
}

/// The faults to inject, changed by the test while the proxy runs, and the counters.
#[derive(Default)]
pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not hide the counters from the test.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` PutRecords requests are answered with HTTP 400
    /// `ProvisionedThroughputExceededException` without being forwarded.
    pub fn throttle_next(&self, n: u32) {
        self.lock().throttle = n;
    }

    /// The next `n` PutRecords requests are answered with HTTP 500 `InternalFailure` without
    /// being forwarded (after any pending `throttle_next`).
    pub fn server_error_next(&self, n: u32) {
        self.lock().server_error = n;
    }

    /// Fails the entries `pattern` picks in each of the next `requests` PutRecords requests,
    /// forwarding the others; then the pattern turns itself off. Replaces any earlier pattern.
    pub fn fail_entries(&self, pattern: FailPattern, requests: u32) {
        let rng = match &pattern {
            FailPattern::Random { seed, .. } => *seed,
            _ => 0,
        };
        self.lock().fail = (requests > 0).then_some(ActiveFail {
            pattern,
            requests_left: requests,
            rng,
        });
    }

    /// While on, every request is answered with HTTP 503 `ServiceUnavailable`.
    pub fn down(&self, on: bool) {
        self.lock().down = on;
    }

    /// While on, every incoming connection is closed at once, and so is an open connection at
    /// its next request (the endpoint is dead).
    pub fn refuse(&self, on: bool) {
        self.lock().refuse = on;
    }

    /// While on, PutRecords requests are forwarded to the emulator (their records land) and
    /// never answered: the client's request times out or is abandoned, its outcome unknown.
    pub fn hold_answers(&self, on: bool) {
        self.lock().hold_answers = on;
    }

    /// Requests of `operation` (e.g. `"DescribeStreamSummary"`) are handled only `delay` after
    /// they arrive: a slow endpoint. Replaces an earlier delay of the operation.
    pub fn delay(&self, operation: &str, delay: Duration) {
        let mut state = self.lock();
        state.delays.retain(|(o, _)| o != operation);
        state.delays.push((operation.to_string(), delay));
    }

    /// While `closed`, requests of `operation` wait (unanswered, not forwarded) until the test
    /// opens the gate: a slow endpoint whose slowness ends on an event, not after a time.
    pub fn gate(&self, operation: &str, closed: bool) {
        let mut state = self.lock();
        state.gated.retain(|o| o != operation);
        if closed {
            state.gated.push(operation.to_string());
        }
    }

    fn gated(&self, operation: &str) -> bool {
        self.lock().gated.iter().any(|o| o == operation)
    }

    fn delay_of(&self, operation: &str) -> Option<Duration> {
        let state = self.lock();
        state
            .delays
            .iter()
            .find(|(o, _)| o == operation)
            .map(|(_, d)| *d)
    }

    /// PutRecords requests forwarded and left unanswered so far.
    pub fn answers_held(&self) -> u64 {
        self.lock().counters.answers_held
    }

    /// PutRecords requests of `stream` forwarded and left unanswered so far.
    pub fn answers_held_of(&self, stream: &str) -> u64 {
        let state = self.lock();
        let held = &state.counters.answers_held_by_stream;
        held.get(stream).copied().unwrap_or(0)
    }

    fn held_one(&self, stream: &str) {
        let counters = &mut self.lock().counters;
        counters.answers_held += 1;
        *counters
            .answers_held_by_stream
            .entry(stream.to_string())
            .or_insert(0) += 1;
    }

    /// Turns every fault off (the counters stay).
    pub fn clear(&self) {
        let mut state = self.lock();
        let counters = std::mem::take(&mut state.counters);
        *state = State {
            counters,
            ..State::default()
        };
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Requests seen of `operation` (e.g. `"PutRecords"`).
    pub fn requests(&self, operation: &str) -> u64 {
        self.lock()
            .counters
            .requests
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// PutRecords entries forwarded to the emulator.
    pub fn entries_forwarded(&self) -> u64 {
        self.lock().counters.entries_forwarded
    }

    /// PutRecords entries failed by injection.
    pub fn entries_failed(&self) -> u64 {
        self.lock().counters.entries_failed
    }

    /// Requests answered with an injected error.
    pub fn injected_errors(&self) -> u64 {
        self.lock().counters.injected_errors
    }

    /// Whether a new connection is to be closed (and counts it).
    fn refuse_connection(&self) -> bool {
        let mut state = self.lock();
        if state.refuse {
            state.counters.refused += 1;
        }
        state.refuse
    }

    /// Counts a request and decides what to do with it.
    fn decide(&self, operation: &str, put_records: Option<&PutRecords>) -> Action {
        let mut state = self.lock();
        *state
            .counters
            .requests
            .entry(operation.to_string())
            .or_insert(0) += 1;
        if state.refuse {
            state.counters.refused += 1;
            return Action::Close;
        }
        if state.down {
            state.counters.injected_errors += 1;
            return Action::Respond(
                503,
                json!({"__type": "ServiceUnavailable", "message": "injected: the endpoint is down"}),
            );
        }
        if operation != "PutRecords" {
            return Action::Forward;
        }
        if state.hold_answers {
            if let Some(request) = put_records {
                state.counters.entries_forwarded += request.keys.len() as u64;
            }
            return Action::ForwardAndHold;
        }
        if state.throttle > 0 {
            state.throttle -= 1;
            state.counters.injected_errors += 1;
            return Action::Respond(
                400,
                json!({
                    "__type": THROTTLED,
                    "message": "Rate exceeded for shard shardId-000000000000",
                }),
            );
        }
        if state.server_error > 0 {
            state.server_error -= 1;
            state.counters.injected_errors += 1;
            return Action::Respond(
                500,
                json!({"__type": "InternalFailure", "message": "injected"}),
            );
        }
        let Some(request) = put_records else {
            // Not parseable: the emulator answers it.
            return Action::Forward;
        };
        let State { fail, counters, .. } = &mut *state;
        let Some(active) = fail else {
            counters.entries_forwarded += request.keys.len() as u64;
            return Action::Forward;
        };
        let keys: Vec<Option<&str>> = request.keys.iter().map(Option::as_deref).collect();
        let mask = active.pattern.choose(&keys, &mut active.rng);
        active.requests_left -= 1;
        if active.requests_left == 0 {
            *fail = None;
        }
        let failed = mask.iter().filter(|f| **f).count() as u64;
        counters.entries_failed += failed;
        counters.entries_forwarded += mask.len() as u64 - failed;
        Action::FailEntries(mask)
    }
}

/// What the proxy does with one request.
enum Action {
    /// Close the connection without an answer.
    Close,
    /// Answer with this status and awsJson body, forwarding nothing.
    Respond(u16, Value),
    /// Forward the request unchanged.
    Forward,
    /// Fail the entries marked true, forward the others.
    FailEntries(Vec<bool>),
    /// Forward the request, then never answer.
    ForwardAndHold,
}

/// The parts of a PutRecords request the proxy needs.
struct PutRecords {
    json: Value,
    keys: Vec<Option<String>>,
}

impl PutRecords {
    fn parse(body: &[u8]) -> Option<PutRecords> {
        let json: Value = serde_json::from_slice(body).ok()?;
        let keys = json
            .get("Records")?
            .as_array()?
            .iter()
            .map(|r| {
                r.get("PartitionKey")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        Some(PutRecords { json, keys })
    }

    /// The stream's name (error messages, counters).
    fn stream(&self) -> &str {
        if let Some(name) = self.json.get("StreamName").and_then(Value::as_str) {
            return name;
        }
        self.json
            .get("StreamARN")
            .and_then(Value::as_str)
            .and_then(|arn| arn.rsplit('/').next())
            .unwrap_or("unknown")
    }
}

/// A running proxy; stops (its thread and every connection) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port that forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("the fault proxy binds 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let faults = Arc::new(Faults::default());
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&faults);
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fault proxy's runtime");
                runtime.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("a tokio listener for the proxy");
                    tokio::select! {
                        _ = stop => {}
                        () = accept_loop(listener, upstream, shared) => {}
                    }
                });
                // Dropping the runtime here ends every connection task.
            })
            .expect("spawn the fault proxy thread");
        FaultProxy {
            addr,
            faults,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:P`, for the SDK's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault controls and counters, shared with the proxy.
    pub fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.faults)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, faults: Arc<Faults>) {
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(e) => {
                eprintln!("fault proxy: accept failed: {e}");
                continue;
            }
        };
        if faults.refuse_connection() {
            drop(socket);
            continue;
        }
        let _ = socket.set_nodelay(true);
        tokio::spawn(serve_connection(socket, upstream, Arc::clone(&faults)));
    }
}

/// One parsed HTTP/1.1 message (request or response).
struct Message {
    /// The request line or status line, without CRLF.
    start: String,
    /// Status code (responses only).
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"close"))
    }

    /// The message with `body`, hop-by-hop headers replaced by a fresh Content-Length (and
    /// `Connection: close` when asked).
    fn serialize(&self, body: &[u8], close: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(self.start.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            let hop = [
                "content-length",
                "connection",
                "keep-alive",
                "transfer-encoding",
            ]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h));
            if !hop {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

/// Reads one message from `stream` (bytes after it stay in `buf`). `Ok(None)`: the peer closed
/// the connection between messages. A response without Content-Length ends at EOF.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    response: bool,
) -> std::io::Result<Option<Message>> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let (head_len, start, status, headers) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let parsed = if response {
            let mut r = httparse::Response::new(&mut slots);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let code = r.code.unwrap_or(0);
                    let reason = r.reason.unwrap_or("");
                    Some((
                        n,
                        format!("HTTP/1.1 {code} {reason}"),
                        code,
                        copy(r.headers),
                    ))
                }
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(bad(format!("bad response head: {e}"))),
            }
        } else {
            let mut r = httparse::Request::new(&mut slots);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let method = r.method.unwrap_or("GET");
                    let path = r.path.unwrap_or("/");
                    Some((n, format!("{method} {path} HTTP/1.1"), 0, copy(r.headers)))
                }
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(bad(format!("bad request head: {e}"))),
            }
        };
        if let Some(parsed) = parsed {
            break parsed;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("head too large".into()));
        }
        if read_more(stream, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(bad("connection closed inside a head".into()));
        }
    };
    let mut message = Message {
        start,
        status,
        headers,
        body: Vec::new(),
    };
    if message
        .header("transfer-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case(b"identity"))
    {
        return Err(bad(
            "chunked bodies are not supported by the fault proxy".into()
        ));
    }
    buf.drain(..head_len);
    let length = match message.header("content-length") {
        Some(v) => Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| bad("bad Content-Length".into()))?,
        ),
        None => None,
    };
    match length {
        Some(n) => {
            while buf.len() < n {
                if read_more(stream, buf).await? == 0 {
                    return Err(bad("connection closed inside a body".into()));
                }
            }
            message.body = buf.drain(..n).collect();
        }
        // A response without a length ends at EOF; a request without one has no body.
        None if response => {
            while read_more(stream, buf).await? > 0 {}
            message.body = std::mem::take(buf);
        }
        None => {}
    }
    Ok(Some(message))
}

fn copy(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Serves one client connection: request after request (keep-alive) until the client closes.
async fn serve_connection(mut client: TcpStream, upstream: SocketAddr, faults: Arc<Faults>) {
    let mut buf = Vec::new();
    loop {
        let request = match read_message(&mut client, &mut buf, false).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                eprintln!("fault proxy: dropping a connection: {e}");
                return;
            }
        };
        let close = request.wants_close();
        let Some(response) = handle(&request, upstream, &faults).await else {
            return;
        };
        if client.write_all(&response).await.is_err() || close {
            return;
        }
    }
}

/// The response bytes for one request, or `None` to close the connection unanswered.
async fn handle(request: &Message, upstream: SocketAddr, faults: &Faults) -> Option<Vec<u8>> {
    let close = request.wants_close();
    let operation = request
        .header("x-amz-target")
        .and_then(|t| std::str::from_utf8(t).ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_string())
        .unwrap_or_default();
    let put_records = if operation == "PutRecords" {
        PutRecords::parse(&request.body)
    } else {
        None
    };
    if let Some(delay) = faults.delay_of(&operation) {
        tokio::time::sleep(delay).await;
    }
    let action = faults.decide(&operation, put_records.as_ref());
    // Counted, then held at the gate.
    while faults.gated(&operation) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let response = match action {
        Action::Close => return None,
        Action::ForwardAndHold => {
            if forward(request, &request.body, upstream).await.is_ok() {
                faults.held_one(put_records.as_ref().map_or("unknown", PutRecords::stream));
            }
            // The client never gets an answer; the proxy's shutdown ends this task.
            std::future::pending::<()>().await;
            return None;
        }
        Action::Respond(status, body) => own_response(status, &body, close),
        Action::Forward => match forward(request, &request.body, upstream).await {
            Ok(upstream_response) => upstream_response.serialize(&upstream_response.body, close),
            Err(e) => bad_gateway(&e, close),
        },
        Action::FailEntries(mask) => {
            let request_json = put_records
                .as_ref()
                .expect("FailEntries is decided only for a parsed PutRecords");
            match fail_entries(request, request_json, &mask, upstream).await {
                Ok(response) => response.serialize(&response.body, close),
                Err(e) => bad_gateway(&e, close),
            }
        }
    };
    Some(response)
}

/// Forwards `request` with `body` to the emulator on a new connection and reads its answer.
async fn forward(request: &Message, body: &[u8], upstream: SocketAddr) -> std::io::Result<Message> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        let _ = stream.set_nodelay(true);
        stream.write_all(&request.serialize(body, true)).await?;
        let mut buf = Vec::new();
        read_message(&mut stream, &mut buf, true)
            .await?
            .ok_or_else(|| std::io::Error::other("the emulator closed without answering"))
    };
    tokio::time::timeout(UPSTREAM_PATIENCE, exchange)
        .await
        .map_err(|_| std::io::Error::other("the emulator did not answer in time"))?
}

/// Forwards the entries not marked in `mask` and merges the emulator's answer with the injected
/// failures, in the request's order.
async fn fail_entries(
    request: &Message,
    put_records: &PutRecords,
    mask: &[bool],
    upstream: SocketAddr,
) -> std::io::Result<Message> {
    let entries = put_records
        .json
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| std::io::Error::other("PutRecords without Records"))?;
    let kept: Vec<Value> = entries
        .iter()
        .zip(mask)
        .filter(|(_, failed)| !**failed)
        .map(|(e, _)| e.clone())
        .collect();
    let mut forwarded: Vec<Value> = Vec::new();
    let mut upstream_failed = 0u64;
    let mut template = None;
    if !kept.is_empty() {
        let mut body = put_records.json.clone();
        body["Records"] = Value::Array(kept.clone());
        let body = serde_json::to_vec(&body).map_err(std::io::Error::other)?;
        let response = forward(request, &body, upstream).await?;
        if response.status != 200 {
            // The emulator refused the whole request (no such stream, ...): pass that on.
            return Ok(response);
        }
        let json: Value = serde_json::from_slice(&response.body).map_err(std::io::Error::other)?;
        forwarded = json
            .get("Records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if forwarded.len() != kept.len() {
            return Err(std::io::Error::other(format!(
                "the emulator answered {} entries for {}",
                forwarded.len(),
                kept.len()
            )));
        }
        upstream_failed = forwarded
            .iter()
            .filter(|e| e.get("ErrorCode").is_some())
            .count() as u64;
        template = Some(response);
    }
    let injected = json!({
        "ErrorCode": THROTTLED,
        "ErrorMessage": format!(
            "Rate exceeded for shard shardId-000000000000 in stream {} under account \
             000000000000.",
            put_records.stream()
        ),
    });
    let mut upstream_entries = forwarded.into_iter();
    let records: Vec<Value> = mask
        .iter()
        .map(|failed| {
            if *failed {
                injected.clone()
            } else {
                upstream_entries.next().unwrap_or(Value::Null)
            }
        })
        .collect();
    let failed_count = mask.iter().filter(|f| **f).count() as u64 + upstream_failed;
    let body = serde_json::to_vec(&json!({
        "FailedRecordCount": failed_count,
        "Records": records,
    }))
    .map_err(std::io::Error::other)?;
    let mut response = template.unwrap_or_else(|| own_message(200));
    response.body = body;
    Ok(response)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response head as the proxy itself writes it (awsJson 1.1).
fn own_message(status: u16) -> Message {
    Message {
        start: format!("HTTP/1.1 {status} {}", reason(status)),
        status,
        headers: vec![
            ("x-amzn-RequestId".into(), b"fault-proxy-injected".to_vec()),
            (
                "Content-Type".into(),
                b"application/x-amz-json-1.1".to_vec(),
            ),
        ],
        body: Vec::new(),
    }
}

fn own_response(status: u16, body: &Value, close: bool) -> Vec<u8> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    own_message(status).serialize(&body, close)
}

fn bad_gateway(e: &std::io::Error, close: bool) -> Vec<u8> {
    eprintln!("fault proxy: upstream failed: {e}");
    own_response(
        502,
        &json!({"__type": "InternalFailure", "message": format!("fault proxy: upstream: {e}")}),
        close,
    )
}

// ---------------------------------------------------------------------------------------------
// The proxy, proven against the emulator with the SDK.

fn entries(keys_and_data: &[(&str, String)]) -> Vec<PutRecordsRequestEntry> {
    keys_and_data
        .iter()
        .map(|(key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(*key)
                .data(Blob::new(data.as_bytes()))
                .build()
                .expect("a complete entry")
        })
        .collect()
}

async fn emulator_and_proxy(
    stream: &str,
) -> (KinesisEmulator, FaultProxy, aws_sdk_kinesis::Client) {
    let kinesis = KinesisEmulator::start();
    kinesis.create_stream(stream, 1).await;
    let proxy = FaultProxy::start(kinesis.addr());
    assert_eq!(proxy.addr().ip(), Ipv4Addr::LOCALHOST);
    let client = kinesis_client(&proxy.endpoint(), RetryConfig::disabled());
    (kinesis, proxy, client)
}

async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: Vec<PutRecordsRequestEntry>,
) -> Result<
    aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
    SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError>,
> {
    client
        .put_records()
        .stream_name(stream)
        .set_records(Some(records))
        .send()
        .await
}

#[test]
fn patterns_pick_the_documented_entries() {
    let keys = [
        Some("a"),
        Some("b"),
        Some("a"),
        Some("a"),
        Some("b"),
        Some("c"),
    ];
    let mut rng = 0;
    assert_eq!(
        FailPattern::EveryNth(2).choose(&keys, &mut rng),
        [false, true, false, true, false, true]
    );
    assert_eq!(
        FailPattern::EveryNth(3).choose(&keys, &mut rng),
        [false, false, true, false, false, true]
    );
    assert_eq!(FailPattern::EveryNth(0).choose(&keys, &mut rng), [false; 6]);
    let suffix = FailPattern::SuffixOfKey { key: "a".into() };
    assert_eq!(
        suffix.choose(&keys, &mut rng),
        [false, false, true, true, false, false]
    );
    let keys = vec![Some("k"); 10_000];
    let random = FailPattern::Random {
        per_mille: 250,
        seed: 7,
    };
    let mut rng = 7;
    let failed = random
        .choose(&keys, &mut rng)
        .iter()
        .filter(|f| **f)
        .count();
    assert!(
        (2_200..2_800).contains(&failed),
        "about a quarter: {failed}"
    );
    let (mut first, mut second) = (7, 7);
    assert_eq!(
        random.choose(&keys, &mut first),
        random.choose(&keys, &mut second),
        "the same seed fails the same entries"
    );
}

#[tokio::test]
async fn every_nth_fails_half_and_the_emulator_holds_the_rest() {
    let (kinesis, proxy, client) = emulator_and_proxy("partial").await;
    let faults = proxy.faults();
    faults.fail_entries(FailPattern::EveryNth(2), 1);
    let data: Vec<(&str, String)> = (0..10)
        .map(|i| {
            (
                if i % 3 == 0 { "BTCUSDT" } else { "ETHUSDT" },
                format!("r{i}"),
            )
        })
        .collect();
    let out = put(&client, "partial", entries(&data))
        .await
        .unwrap_or_else(|e| panic!("PutRecords through the proxy: {}", sdk_error(&e)));
    assert_eq!(out.failed_record_count(), Some(5));
    assert_eq!(out.records().len(), 10);
    for (i, record) in out.records().iter().enumerate() {
        if i % 2 == 1 {
            assert_eq!(record.error_code(), Some(THROTTLED), "entry {i}");
            assert_eq!(
                record.error_message(),
                Some(
                    "Rate exceeded for shard shardId-000000000000 in stream partial under \
                     account 000000000000."
                )
            );
            assert_eq!(record.sequence_number(), None);
        } else {
            assert_eq!(record.error_code(), None, "entry {i}");
            assert_eq!(record.shard_id(), Some("shardId-000000000000"));
            assert!(record.sequence_number().is_some(), "entry {i}");
        }
    }
    let stored = kinesis.read_all("partial").await;
    let expected: Vec<(String, Vec<u8>, String)> = out
        .records()
        .iter()
        .zip(&data)
        .filter(|(r, _)| r.error_code().is_none())
        .map(|(r, (k, d))| {
            (
                k.to_string(),
                d.as_bytes().to_vec(),
                r.sequence_number().expect("a sequence number").to_string(),
            )
        })
        .collect();
    assert_eq!(stored, expected);
    assert_eq!(faults.requests("PutRecords"), 1);
    assert_eq!(faults.entries_forwarded(), 5);
    assert_eq!(faults.entries_failed(), 5);
    assert_eq!(faults.injected_errors(), 0);

    // The pattern applied to one request only.
    let out = put(&client, "partial", entries(&data))
        .await
        .unwrap_or_else(|e| panic!("PutRecords after the pattern: {}", sdk_error(&e)));
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(faults.entries_forwarded(), 15);
    assert_eq!(kinesis.read_all("partial").await.len(), 15);
}

#[tokio::test]
async fn suffix_of_key_fails_one_key_from_its_second_entry_for_n_requests() {
    let (kinesis, proxy, client) = emulator_and_proxy("suffix").await;
    let faults = proxy.faults();
    faults.fail_entries(
        FailPattern::SuffixOfKey {
            key: "BTCUSDT".into(),
        },
        2,
    );
    let data: Vec<(&str, String)> = ["BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT", "BTCUSDT"]
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, format!("{i}")))
        .collect();
    for round in 0..3 {
        let out = put(&client, "suffix", entries(&data))
            .await
            .unwrap_or_else(|e| panic!("PutRecords: {}", sdk_error(&e)));
        let failed: Vec<bool> = out
            .records()
            .iter()
            .map(|r| r.error_code().is_some())
            .collect();
        if round < 2 {
            assert_eq!(failed, [false, false, true, false, true], "round {round}");
            assert_eq!(out.failed_record_count(), Some(2));
        } else {
            assert_eq!(failed, [false; 5], "the pattern is off after 2 requests");
        }
    }
    assert_eq!(faults.entries_failed(), 4);
    assert_eq!(faults.entries_forwarded(), 11);
    assert_eq!(kinesis.read_all("suffix").await.len(), 11);
}

#[tokio::test]
async fn random_failures_are_reproducible_and_all_failed_is_not_forwarded() {
    let (kinesis, proxy, client) = emulator_and_proxy("random").await;
    let faults = proxy.faults();
    let data: Vec<(&str, String)> = (0..50).map(|i| ("k", format!("{i}"))).collect();
    let mut runs = Vec::new();
    for _ in 0..2 {
        faults.fail_entries(
            FailPattern::Random {
                per_mille: 500,
                seed: 99,
            },
            1,
        );
        let out = put(&client, "random", entries(&data))
            .await
            .unwrap_or_else(|e| panic!("PutRecords: {}", sdk_error(&e)));
        let failed: Vec<bool> = out
            .records()
            .iter()
            .map(|r| r.error_code().is_some())
            .collect();
        let count = failed.iter().filter(|f| **f).count();
        assert_eq!(out.failed_record_count(), Some(count as i32));
        assert!((10..40).contains(&count), "about half: {count}");
        runs.push(failed);
    }
    assert_eq!(runs[0], runs[1], "the same seed fails the same entries");

    // Every entry failed: nothing reaches the emulator, the answer is still complete.
    faults.fail_entries(
        FailPattern::Random {
            per_mille: 1000,
            seed: 1,
        },
        1,
    );
    let before = kinesis.read_all("random").await.len();
    let out = put(&client, "random", entries(&data[..3]))
        .await
        .unwrap_or_else(|e| panic!("PutRecords: {}", sdk_error(&e)));
    assert_eq!(out.failed_record_count(), Some(3));
    assert_eq!(out.records().len(), 3);
    assert_eq!(kinesis.read_all("random").await.len(), before);
}

#[tokio::test]
async fn throttle_next_surfaces_provisioned_throughput_exceeded() {
    let (kinesis, proxy, client) = emulator_and_proxy("throttled").await;
    let faults = proxy.faults();
    faults.throttle_next(1);
    let err = put(&client, "throttled", entries(&[("k", "x".into())]))
        .await
        .expect_err("the proxy throttles the first request");
    let service = err
        .as_service_error()
        .unwrap_or_else(|| panic!("a service error, not {}", sdk_error(&err)));
    assert!(
        service.is_provisioned_throughput_exceeded_exception(),
        "{service:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    // The next request goes through.
    let out = put(&client, "throttled", entries(&[("k", "y".into())]))
        .await
        .unwrap_or_else(|e| panic!("PutRecords after the throttle: {}", sdk_error(&e)));
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(faults.injected_errors(), 1);
    assert_eq!(faults.requests("PutRecords"), 2);
    assert_eq!(kinesis.read_all("throttled").await.len(), 1);
}

#[tokio::test]
async fn the_sdk_retries_throttling_by_itself_unless_disabled() {
    let (kinesis, proxy, _) = emulator_and_proxy("sdk-retries").await;
    let faults = proxy.faults();
    let retrying = kinesis_client(
        &proxy.endpoint(),
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(5)),
    );
    faults.throttle_next(2);
    let out = put(&retrying, "sdk-retries", entries(&[("k", "x".into())]))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the SDK's own retries absorb 2 throttles: {}",
                sdk_error(&e)
            )
        });
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(
        faults.requests("PutRecords"),
        3,
        "3 attempts reached the proxy"
    );
    faults.server_error_next(1);
    put(&retrying, "sdk-retries", entries(&[("k", "y".into())]))
        .await
        .unwrap_or_else(|e| panic!("the SDK retries a 500 too: {}", sdk_error(&e)));
    assert_eq!(faults.requests("PutRecords"), 5);
    assert_eq!(kinesis.read_all("sdk-retries").await.len(), 2);
}

#[tokio::test]
async fn server_error_next_surfaces_a_500() {
    let (_kinesis, proxy, client) = emulator_and_proxy("failing").await;
    let faults = proxy.faults();
    faults.server_error_next(2);
    for _ in 0..2 {
        let err = put(&client, "failing", entries(&[("k", "x".into())]))
            .await
            .expect_err("the proxy answers 500");
        assert_eq!(err.code(), Some("InternalFailure"), "{}", sdk_error(&err));
        assert_eq!(err.message(), Some("injected"));
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    }
    put(&client, "failing", entries(&[("k", "x".into())]))
        .await
        .unwrap_or_else(|e| panic!("PutRecords after the errors: {}", sdk_error(&e)));
    assert_eq!(faults.injected_errors(), 2);
}

#[tokio::test]
async fn down_answers_503_to_every_operation() {
    let (_kinesis, proxy, client) = emulator_and_proxy("down").await;
    let faults = proxy.faults();
    faults.down(true);
    let err = put(&client, "down", entries(&[("k", "x".into())]))
        .await
        .expect_err("down");
    assert_eq!(
        err.code(),
        Some("ServiceUnavailable"),
        "{}",
        sdk_error(&err)
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    let err = client
        .describe_stream_summary()
        .stream_name("down")
        .send()
        .await
        .expect_err("down for every operation");
    assert_eq!(
        err.code(),
        Some("ServiceUnavailable"),
        "{}",
        sdk_error(&err)
    );
    faults.down(false);
    put(&client, "down", entries(&[("k", "x".into())]))
        .await
        .unwrap_or_else(|e| panic!("PutRecords when up again: {}", sdk_error(&e)));
    let counters = faults.counters();
    assert_eq!(counters.injected_errors, 2);
    assert_eq!(counters.requests.get("DescribeStreamSummary"), Some(&1));
    assert_eq!(counters.requests.get("PutRecords"), Some(&2));
}

#[tokio::test]
async fn refuse_closes_connections_and_recovers() {
    let (_kinesis, proxy, client) = emulator_and_proxy("refused").await;
    let faults = proxy.faults();
    // A pooled keep-alive connection exists before the endpoint dies.
    put(&client, "refused", entries(&[("k", "x".into())]))
        .await
        .unwrap_or_else(|e| panic!("PutRecords before refuse: {}", sdk_error(&e)));
    faults.refuse(true);
    for attempt in 0..2 {
        let err = put(&client, "refused", entries(&[("k", "x".into())]))
            .await
            .expect_err("the endpoint is dead");
        assert!(
            matches!(
                err,
                SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
            ),
            "attempt {attempt}: a transport error, not {}",
            sdk_error(&err)
        );
        assert!(err.raw_response().is_none());
    }
    let refused = faults.counters().refused;
    assert!(refused >= 2, "{refused}");
    faults.clear();
    assert_eq!(
        faults.counters().refused,
        refused,
        "clear keeps the counters"
    );
    put(&client, "refused", entries(&[("k", "x".into())]))
        .await
        .unwrap_or_else(|e| panic!("PutRecords after refuse: {}", sdk_error(&e)));
}

#[tokio::test]
async fn hold_answers_forwards_the_records_and_never_answers() {
    let (kinesis, proxy, _client) = emulator_and_proxy("held").await;
    let faults = proxy.faults();
    faults.hold_answers(true);
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "hotpath-tests",
        ))
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(proxy.endpoint())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_millis(500))
                .build(),
        )
        .build();
    let client = aws_sdk_kinesis::Client::from_conf(config);
    let err = put(
        &client,
        "held",
        entries(&[("k", "x".into()), ("k", "y".into())]),
    )
    .await
    .expect_err("no answer comes");
    assert!(
        matches!(err, SdkError::TimeoutError(_)),
        "a timeout, not {}",
        sdk_error(&err)
    );
    // The proxy counts the request once the emulator took it, which on a loaded machine can be
    // after the client gave up.
    let deadline = std::time::Instant::now() + crate::sinks::PATIENCE;
    while faults.answers_held() == 0 {
        assert!(std::time::Instant::now() < deadline, "the request was held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(faults.answers_held(), 1);
    assert_eq!(faults.answers_held_of("held"), 1);
    assert_eq!(faults.counters().entries_forwarded, 2);
    assert_eq!(
        kinesis.read_all("held").await.len(),
        2,
        "the records landed"
    );
    faults.hold_answers(false);
    put(&client, "held", entries(&[("k", "z".into())]))
        .await
        .unwrap_or_else(|e| panic!("answered again: {}", sdk_error(&e)));
    assert_eq!(kinesis.read_all("held").await.len(), 3);
}

#[tokio::test]
async fn delay_answers_one_operation_slowly() {
    let (_kinesis, proxy, client) = emulator_and_proxy("slow").await;
    let faults = proxy.faults();
    faults.delay("DescribeStreamSummary", Duration::from_millis(400));
    let started = std::time::Instant::now();
    client
        .describe_stream_summary()
        .stream_name("slow")
        .send()
        .await
        .unwrap_or_else(|e| panic!("answered late: {}", sdk_error(&e)));
    assert!(started.elapsed() >= Duration::from_millis(400));
    put(&client, "slow", entries(&[("k", "x".into())]))
        .await
        .unwrap_or_else(|e| panic!("other operations are answered: {}", sdk_error(&e)));
    assert_eq!(faults.requests("DescribeStreamSummary"), 1);
}

#[tokio::test]
async fn a_gate_holds_one_operation_until_it_opens() {
    let (_kinesis, proxy, client) = emulator_and_proxy("gated").await;
    let faults = proxy.faults();
    faults.gate("DescribeStreamSummary", true);
    let describe = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .describe_stream_summary()
                .stream_name("gated")
                .send()
                .await
        }
    });
    // Other operations pass while the gate is closed.
    put(&client, "gated", entries(&[("k", "x".into())]))
        .await
        .unwrap_or_else(|e| panic!("other operations are answered: {}", sdk_error(&e)));
    let deadline = std::time::Instant::now() + crate::sinks::PATIENCE;
    while faults.requests("DescribeStreamSummary") == 0 {
        assert!(std::time::Instant::now() < deadline, "the request came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!describe.is_finished(), "held at the gate");
    faults.gate("DescribeStreamSummary", false);
    tokio::time::timeout(crate::sinks::PATIENCE, describe)
        .await
        .expect("answered once the gate opens")
        .expect("the task ran")
        .unwrap_or_else(|e| panic!("DescribeStreamSummary: {}", sdk_error(&e)));
}
