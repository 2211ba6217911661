//! The simulator's protocol, checked with a plain WebSocket client (tokio-tungstenite directly,
//! not hotpath's reader) and a plain HTTP client: stream paths and the API-key rule, SBE frames
//! against ground truth, live subscription control and its error codes, pings and the pong
//! deadline, the incoming rate limit, the stream cap, the lifetime with `serverShutdown`, JSON
//! streams on the same market, REST weights, TLS, fault injection, and Binance's local order
//! book procedure against the simulator's own diffs and REST snapshot.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hotpath::sbe::{self, spot_stream::Message as Sbe};
use hotpath::sim::config::SimConfig;
use hotpath::sim::server::{self, SimHandle};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every wait in these tests is bounded: a hang fails loudly.
const PATIENCE: Duration = Duration::from_secs(20);

async fn sim(tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig::default();
    config.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
    config.exchange.seed = 42;
    config.exchange.actions_per_second = 3_000.0;
    tweak(&mut config);
    server::start(config).await.expect("the simulator starts")
}

fn request(url: &str, api_key: Option<&str>) -> tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().expect("a valid URL");
    if let Some(key) = api_key {
        request
            .headers_mut()
            .insert("X-MBX-APIKEY", key.parse().expect("header value"));
    }
    request
}

async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(request(&url, Some("test-key"))),
    )
    .await
    .expect("in time")
    .expect("connects");
    ws
}

/// The next message that is not a ping or pong.
async fn next_message(ws: &mut Ws) -> Message {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("a valid message");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match next_message(ws).await {
            Message::Binary(b) => return b.to_vec(),
            Message::Text(_) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        if let Message::Text(t) = next_message(ws).await {
            return serde_json::from_str(t.as_str()).expect("JSON text");
        }
    }
}

async fn control(ws: &mut Ws, request: &str) -> Value {
    ws.send(Message::text(request.to_string()))
        .await
        .expect("sent");
    next_text(ws).await
}

/// A plain HTTP/1.1 GET: status, headers (lower-case names), body.
async fn get(addr: SocketAddr, target: &str) -> (u16, Vec<(String, String)>, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connects");
    let head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("sent");
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut raw))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let (status, headers) = parse_head(head);
    (status, headers, body.to_string())
}

/// A response head's status and headers (lower-case names).
fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.lines();
    let status = lines
        .next()
        .expect("status line")
        .split(' ')
        .nth(1)
        .expect("code")
        .parse()
        .expect("number");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    (status, headers)
}

/// Reads more of `tcp` into `buf`; `false` at the end of the stream.
async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut chunk))
        .await
        .expect("in time")
        .expect("read");
    buf.extend_from_slice(&chunk[..n]);
    n > 0
}

/// Reads one response with a `Content-Length` body off a connection that stays open; bytes
/// past it stay in `buf`.
async fn read_response(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> (u16, Vec<(String, String)>, String) {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        assert!(
            read_more(tcp, buf).await,
            "the connection closed inside a head"
        );
    };
    let (status, headers) = parse_head(std::str::from_utf8(&buf[..head_end]).expect("UTF-8"));
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .expect("a sized body")
        .1
        .parse()
        .expect("a length");
    let end = head_end + 4 + length;
    while buf.len() < end {
        assert!(
            read_more(tcp, buf).await,
            "the connection closed inside a body"
        );
    }
    let body = String::from_utf8(buf[head_end + 4..end].to_vec()).expect("UTF-8 body");
    buf.drain(..end);
    (status, headers, body)
}

/// Sends `request` on a new connection and returns the response and whether the server closed
/// the connection after it.
async fn exchange_once(addr: SocketAddr, request: &str) -> (u16, String, bool) {
    let mut tcp = TcpStream::connect(addr).await.expect("connects");
    tcp.write_all(request.as_bytes()).await.expect("sent");
    let mut buf = Vec::new();
    let (status, _, body) = read_response(&mut tcp, &mut buf).await;
    let closed = buf.is_empty() && !read_more(&mut tcp, &mut buf).await;
    (status, body, closed)
}

async fn get_json(addr: SocketAddr, target: &str) -> Value {
    let (status, _, body) = get(addr, target).await;
    assert_eq!(status, 200, "{target}: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbe_streams_need_the_api_key_header() {
    let sim = sim(|_| {}).await;
    let url = format!("ws://{}/ws/btcusdt@trade", sim.addr);
    match tokio_tungstenite::connect_async(request(&url, None)).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body =
                String::from_utf8(response.body().clone().unwrap_or_default()).expect("text");
            assert!(body.contains("No X-MBX-APIKEY header"), "{body}");
        }
        other => panic!("expected HTTP 400, got {:?}", other.map(|_| ())),
    }
    // JSON streams do not need it.
    let url = format!("ws://{}/json/ws/btcusdt@trade", sim.addr);
    assert!(
        tokio_tungstenite::connect_async(request(&url, None))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_arrive_in_order_and_match_ground_truth() {
    let sim = sim(|_| {}).await;
    let mut ws = connect(sim.addr, "/ws/btcusdt@trade").await;
    let mut received = Vec::new();
    while received.len() < 200 {
        let frame = next_binary(&mut ws).await;
        let Ok(Sbe::TradesStreamEvent(m)) = sbe::decode(&frame) else {
            panic!("a trades frame")
        };
        assert_eq!(m.symbol(), b"BTCUSDT");
        assert_eq!((m.price_exponent(), m.qty_exponent()), (-8, -8));
        for t in m.trades() {
            received.push((t.id(), t.price(), t.qty()));
        }
    }
    assert!(
        received.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "consecutive trade ids"
    );
    let first = received[0].0;
    let truth = get_json(
        sim.addr,
        &format!("/admin/trades?symbol=BTCUSDT&fromId={first}"),
    )
    .await;
    let truth = truth.as_array().expect("an array");
    for (i, (id, price, qty)) in received.iter().enumerate() {
        assert_eq!(truth[i]["id"].as_i64(), Some(*id));
        assert_eq!(truth[i]["priceMantissa"].as_i64(), Some(*price));
        assert_eq!(truth[i]["qtyMantissa"].as_i64(), Some(*qty));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_streams_carry_all_four_kinds_with_contiguous_diffs() {
    let sim = sim(|_| {}).await;
    let mut ws = connect(
        sim.addr,
        "/stream?streams=ethusdt@depth/ethusdt@bestBidAsk/ethusdt@depth20/ethusdt@trade",
    )
    .await;
    let (mut diffs, mut snapshots, mut tops, mut trades) = (0, 0, 0, 0);
    let mut last_u = None;
    while diffs < 20 || snapshots < 5 {
        let frame = next_binary(&mut ws).await;
        match sbe::decode(&frame).expect("valid frames") {
            Sbe::DepthDiffStreamEvent(m) => {
                if let Some(u) = last_u {
                    assert_eq!(m.first_book_update_id(), u + 1, "U = previous u + 1");
                }
                assert!(m.first_book_update_id() <= m.last_book_update_id());
                last_u = Some(m.last_book_update_id());
                diffs += 1;
            }
            Sbe::DepthSnapshotStreamEvent(m) => {
                assert_eq!((m.bids().len(), m.asks().len()), (20, 20));
                let bids: Vec<i64> = m.bids().map(|l| l.price()).collect();
                assert!(bids.windows(2).all(|w| w[0] > w[1]));
                snapshots += 1;
            }
            Sbe::BestBidAskStreamEvent(m) => {
                assert!(m.bid_price() < m.ask_price());
                tops += 1;
            }
            Sbe::TradesStreamEvent(m) => {
                assert_eq!(m.symbol(), b"ETHUSDT");
                trades += 1;
            }
        }
    }
    assert!(tops > 0 && trades > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscription_control_and_error_codes() {
    let sim = sim(|_| {}).await;
    let mut ws = connect(sim.addr, "/ws").await;
    let reply = control(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@depth"],"id":1}"#,
    )
    .await;
    assert_eq!(reply, serde_json::json!({"result": null, "id": 1}));
    let reply = control(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":"a2"}"#).await;
    assert_eq!(
        reply,
        serde_json::json!({"result": ["btcusdt@trade", "btcusdt@depth"], "id": "a2"})
    );
    let reply = control(
        &mut ws,
        r#"{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":3}"#,
    )
    .await;
    assert_eq!(reply["result"], Value::Null);
    // Past Binance's 5 messages per second the connection would close: pace the rest.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = control(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":4}"#).await;
    assert_eq!(reply["result"], serde_json::json!(["btcusdt@trade"]));
    assert_eq!(control(&mut ws, "not json").await["code"], 3);
    assert_eq!(
        control(&mut ws, r#"{"method":"NOPE","id":5}"#).await["code"],
        2
    );
    assert_eq!(
        control(
            &mut ws,
            r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":6}"#
        )
        .await["code"],
        1
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        control(
            &mut ws,
            r#"{"method":"GET_PROPERTY","params":["other"],"id":7}"#
        )
        .await["code"],
        0
    );
    let reply = control(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["xxxusdt@trade"],"id":8}"#,
    )
    .await;
    assert_eq!(reply["code"], 2);
    // Frames of the remaining subscription still flow.
    let frame = next_binary(&mut ws).await;
    assert!(matches!(sbe::decode(&frame), Ok(Sbe::TradesStreamEvent(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_five_incoming_messages_a_second_close_the_connection() {
    let sim = sim(|_| {}).await;
    let mut ws = connect(sim.addr, "/ws").await;
    for id in 0..6 {
        ws.send(Message::text(format!(
            r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#
        )))
        .await
        .expect("sent");
    }
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_1024_streams_per_connection() {
    let sim = sim(|c| c.exchange.symbols = vec!["BTCUSDT".into()]).await;
    let names: Vec<String> = (0..1025).map(|i| format!("btcusdt@trade{i}")).collect();
    let url = format!("ws://{}/stream?streams={}", sim.addr, names.join("/"));
    match tokio_tungstenite::connect_async(request(&url, Some("k"))).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_come_and_a_silent_client_is_dropped() {
    // A deadline of several ping intervals: an answering client stalled by a loaded machine
    // for a ping or two is not the silent one. (Pongs count against the 5 incoming messages
    // per second.)
    let sim = sim(|c| {
        c.websocket.ping_interval_ms = 250;
        c.websocket.pong_timeout_ms = 1000;
    })
    .await;
    // An answering client gets pings and stays connected past the pong deadline.
    let mut ws = connect(sim.addr, "/ws").await;
    let mut pings = 0;
    while pings < 6 {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Pong(_) | Message::Text(_))) => {}
            other => panic!("the answering client was closed after {pings} pings: {other:?}"),
        }
    }
    drop(ws);
    // A client that never answers (a WebSocket client would answer the pings as it reads
    // them): after the deadline it is closed. Nothing is read until the simulator let it go.
    let mut silent = silent_client(sim.addr, "/ws").await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while get_json(sim.addr, "/admin/connections").await != serde_json::json!([]) {
        assert!(std::time::Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, silent.read_to_end(&mut raw))
        .await
        .expect("in time")
        .expect("read");
    // The pings, then a close frame (opcode 0x8, FIN) with the reason.
    let close = raw
        .windows(2)
        .rposition(|w| w[0] == 0x88 && usize::from(w[1]) == 2 + "Pong timeout".len())
        .expect("a close frame");
    assert_eq!(&raw[close + 4..], b"Pong timeout");
}

/// A WebSocket connection that never answers: the upgrade by hand on a TCP stream, then nothing
/// read or written by it (the caller reads the raw frames when it wants).
async fn silent_client(addr: SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connects");
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         X-MBX-APIKEY: test-key\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("sent");
    // The answer's head, byte by byte: what follows it is the connection's first frames.
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, tcp.read_u8())
            .await
            .expect("in time")
            .expect("an upgrade answer");
        answer.push(byte);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_ends_with_server_shutdown_then_close() {
    let sim = sim(|c| {
        c.websocket.max_lifetime_ms = 800;
        c.websocket.shutdown_notice_ms = 300;
    })
    .await;
    let mut ws = connect(sim.addr, "/ws/btcusdt@depth").await;
    let mut shutdown_seen = false;
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                assert_eq!(v["e"], "serverShutdown");
                assert!(v["E"].as_i64().is_some());
                shutdown_seen = true;
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
        }
    }
    assert!(shutdown_seen, "serverShutdown precedes the close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_streams_carry_the_same_trades_as_sbe() {
    let sim = sim(|_| {}).await;
    let mut sbe_ws = connect(sim.addr, "/ws/btcusdt@trade").await;
    let mut json_ws = connect(sim.addr, "/json/stream?streams=btcusdt@trade").await;
    let mut sbe_trades = std::collections::BTreeMap::new();
    while sbe_trades.len() < 100 {
        let frame = next_binary(&mut sbe_ws).await;
        if let Ok(Sbe::TradesStreamEvent(m)) = sbe::decode(&frame) {
            for t in m.trades() {
                sbe_trades.insert(
                    t.id(),
                    hotpath::sbe::Decimal::new(t.price(), -8).to_string(),
                );
            }
        }
    }
    let last_sbe = *sbe_trades.keys().next_back().expect("trades");
    let mut json_trades = std::collections::BTreeMap::new();
    while json_trades
        .keys()
        .next_back()
        .is_none_or(|&last| last < last_sbe)
    {
        let v = next_text(&mut json_ws).await;
        assert_eq!(v["stream"], "btcusdt@trade");
        let data = &v["data"];
        assert_eq!(data["e"], "trade");
        assert_eq!(data["s"], "BTCUSDT");
        json_trades.insert(
            data["t"].as_i64().expect("id"),
            data["p"].as_str().expect("price").to_string(),
        );
    }
    // Both connections were open from the first JSON trade to the last SBE one: same trades.
    let first_json = *json_trades.keys().next().expect("trades");
    let overlap: Vec<_> = sbe_trades.range(first_json..=last_sbe).collect();
    assert!(overlap.len() > 10, "the two connections overlap");
    for (id, price) in overlap {
        assert_eq!(json_trades.get(id), Some(price), "trade {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_depth_weights_and_rate_limit() {
    let sim = sim(|c| c.rest_weight_per_minute = 60).await;
    assert_eq!(get(sim.addr, "/api/v3/depth?symbol=NOPE").await.0, 400);
    let (status, headers, body) = get(sim.addr, "/api/v3/depth?symbol=BTCUSDT&limit=5").await;
    assert_eq!(status, 200, "{body}");
    let weight = headers
        .iter()
        .find(|(n, _)| n == "x-mbx-used-weight-1m")
        .expect("the weight header");
    assert_eq!(weight.1, "10", "the rejected request is charged too");
    let depth: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(depth["bids"].as_array().expect("bids").len(), 5);
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(
            get(sim.addr, "/api/v3/depth?symbol=BTCUSDT&limit=5")
                .await
                .0,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let (_, headers, _) = get(sim.addr, "/api/v3/depth?symbol=BTCUSDT&limit=5").await;
    assert!(headers.iter().any(|(n, _)| n == "retry-after"));
    assert_eq!(
        statuses.last(),
        Some(&418),
        "a client that keeps going is banned: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_keeps_alive_and_answers_bad_requests_cleanly() {
    let sim = sim(|_| {}).await;
    // Two pipelined requests and a third after them, all on one connection.
    let mut tcp = TcpStream::connect(sim.addr).await.expect("connects");
    let ping = format!("GET /api/v3/ping HTTP/1.1\r\nHost: {}\r\n\r\n", sim.addr);
    tcp.write_all(format!("{ping}{ping}").as_bytes())
        .await
        .expect("sent");
    let mut buf = Vec::new();
    for used in ["1", "2"] {
        let (status, headers, body) = read_response(&mut tcp, &mut buf).await;
        assert_eq!((status, body.as_str()), (200, "{}"));
        let weight = headers.iter().find(|(n, _)| n == "x-mbx-used-weight-1m");
        assert_eq!(weight.map(|(_, v)| v.as_str()), Some(used));
    }
    let time = format!("GET /api/v3/time HTTP/1.1\r\nHost: {}\r\n\r\n", sim.addr);
    tcp.write_all(time.as_bytes()).await.expect("sent");
    let (status, _, body) = read_response(&mut tcp, &mut buf).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("serverTime"), "{body}");

    // Shutting down closes the idle keep-alive connection.
    sim.shutdown();
    assert!(
        buf.is_empty() && !read_more(&mut tcp, &mut buf).await,
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_and_handshakes_get_400_and_a_close() {
    let sim = sim(|_| {}).await;
    let (status, _, closed) = exchange_once(sim.addr, "NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(status, 400);
    assert!(closed);

    let upgrade = |path: &str, headers: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             {headers}\r\n"
        )
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let version = "Sec-WebSocket-Version: 13\r\n";
    let api_key = "X-MBX-APIKEY: k\r\n";
    let cases = [
        (
            "/ws/btcusdt@trade",
            format!("{key}{version}"),
            "No X-MBX-APIKEY header",
        ),
        (
            "/json/ws/btcusdt@trade",
            version.to_string(),
            "Sec-WebSocket-Key",
        ),
        (
            "/json/ws/btcusdt@trade",
            key.to_string(),
            "Sec-WebSocket-Version",
        ),
        (
            "/ws/nope@trade",
            format!("{key}{version}{api_key}"),
            "Invalid stream name",
        ),
        (
            "/elsewhere",
            format!("{key}{version}{api_key}"),
            "unknown path",
        ),
    ];
    for (path, headers, message) in cases {
        let (status, body, closed) = exchange_once(sim.addr, &upgrade(path, &headers)).await;
        assert_eq!(status, 400, "{path} {headers}: {body}");
        assert!(body.contains(message), "{path} {headers}: {body}");
        assert!(closed, "{path} {headers}");
    }

    // The same handshake, complete, is switched with RFC 6455's accept value.
    let mut tcp = TcpStream::connect(sim.addr).await.expect("connects");
    let complete = upgrade("/json/ws/btcusdt@trade", &format!("{key}{version}"));
    tcp.write_all(complete.as_bytes()).await.expect("sent");
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(read_more(&mut tcp, &mut buf).await, "a response");
    }
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("found");
    let (status, headers) = parse_head(std::str::from_utf8(&buf[..head_end]).expect("UTF-8"));
    assert_eq!(status, 101);
    let accept = headers.iter().find(|(n, _)| n == "sec-websocket-accept");
    assert_eq!(
        accept.map(|(_, v)| v.as_str()),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_self_signed_certificate_trusted() {
    let sim = sim(|c| c.tls = true).await;
    let pem = sim.cert_pem.clone().expect("a certificate");
    let config = hotpath::tls::client_config_trusting(&pem).expect("a client config");
    let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config));
    let url = format!("wss://localhost:{}/ws/btcusdt@bestBidAsk", sim.addr.port());
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        request(&url, Some("k")),
        None,
        true,
        Some(connector),
    )
    .await
    .expect("a TLS handshake with the trusted certificate");
    let frame = next_binary(&mut ws).await;
    assert!(matches!(
        sbe::decode(&frame),
        Ok(Sbe::BestBidAskStreamEvent(_))
    ));
    // Without trusting it, the handshake fails.
    assert!(
        tokio_tungstenite::connect_async(request(&url, Some("k")))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_drop_duplicate_corrupt_and_close() {
    let sim = sim(|_| {}).await;
    let set = get_json(sim.addr, "/admin/faults?conn=next&drop_depth_pct=30&duplicate_pct=20&corrupt_pct=10&close_after_frames=300").await;
    assert_eq!(set["faults"]["drop_depth_pct"], 30.0);
    let mut ws = connect(sim.addr, "/stream?streams=btcusdt@depth/btcusdt@trade").await;
    let (mut gaps, mut duplicates, mut corrupt, mut frames) = (0, 0, 0, 0);
    let mut last_u = None;
    let mut last_frame = Vec::new();
    let ended_abruptly = loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Binary(frame))) => {
                frames += 1;
                if frame.to_vec() == last_frame {
                    duplicates += 1;
                    continue;
                }
                last_frame = frame.to_vec();
                match sbe::decode(&frame) {
                    Ok(Sbe::DepthDiffStreamEvent(m)) => {
                        if let Some(u) = last_u
                            && m.first_book_update_id() > u + 1
                        {
                            gaps += 1;
                        }
                        last_u = Some(m.last_book_update_id());
                    }
                    Ok(_) => {}
                    Err(_) => corrupt += 1,
                }
            }
            Some(Ok(Message::Close(_))) => break false,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break true,
        }
    };
    assert!(
        ended_abruptly,
        "the connection was dropped without a close frame"
    );
    assert!(frames >= 300);
    assert!(
        gaps > 0 && duplicates > 0 && corrupt > 0,
        "gaps {gaps}, duplicates {duplicates}, corrupt {corrupt}"
    );
    // Another connection, not targeted, is clean.
    let clean = get_json(sim.addr, "/admin/connections").await;
    assert!(
        clean
            .as_array()
            .expect("array")
            .iter()
            .all(|c| c["faults"]["drop_depth_pct"] == 0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_order_book_procedure_yields_the_ground_truth_book() {
    let sim = sim(|_| {}).await;
    let mut ws = connect(sim.addr, "/ws/btcusdt@depth").await;
    // 1-2: buffer diffs.
    let mut buffered = Vec::new();
    while buffered.len() < 5 {
        buffered.push(next_binary(&mut ws).await);
    }
    // 3-4: a snapshot no older than the first buffered diff.
    let snapshot = loop {
        let depth = get_json(sim.addr, "/api/v3/depth?symbol=BTCUSDT&limit=5000").await;
        let first_u = match sbe::decode(&buffered[0]) {
            Ok(Sbe::DepthDiffStreamEvent(m)) => m.first_book_update_id(),
            _ => panic!("a diff"),
        };
        if depth["lastUpdateId"].as_i64().expect("id") >= first_u {
            break depth;
        }
    };
    let levels = |side: &Value| -> Vec<(i64, i64)> {
        side.as_array()
            .expect("levels")
            .iter()
            .map(|l| (mantissa(&l[0]), mantissa(&l[1])))
            .collect()
    };
    let last_update_id = snapshot["lastUpdateId"].as_i64().expect("id");
    let mut book = hotpath::book::LocalBook::from_snapshot(
        last_update_id,
        levels(&snapshot["bids"]),
        levels(&snapshot["asks"]),
    )
    .expect("a valid snapshot");
    // 5-7: apply buffered diffs past the snapshot, then live ones, until well past it.
    let mut applied_past = 0;
    let mut frames = buffered.into_iter();
    while applied_past < 20 {
        let frame = match frames.next() {
            Some(frame) => frame,
            None => next_binary(&mut ws).await,
        };
        let Ok(Sbe::DepthDiffStreamEvent(m)) = sbe::decode(&frame) else {
            panic!("a diff")
        };
        let bids: Vec<(i64, i64)> = m.bids().map(|l| (l.price(), l.qty())).collect();
        let asks: Vec<(i64, i64)> = m.asks().map(|l| (l.price(), l.qty())).collect();
        let outcome = book.apply_diff(
            m.first_book_update_id(),
            m.last_book_update_id(),
            bids,
            asks,
        );
        assert!(
            !matches!(outcome, hotpath::book::DiffOutcome::Gap { .. }),
            "{outcome:?}"
        );
        if outcome == hotpath::book::DiffOutcome::Applied {
            applied_past += 1;
        }
    }
    let truth = get_json(
        sim.addr,
        &format!("/admin/book?symbol=BTCUSDT&updateId={}", book.update_id()),
    )
    .await;
    let pairs = |side: &Value| -> Vec<(i64, i64)> {
        side.as_array()
            .expect("levels")
            .iter()
            .map(|l| (l[0].as_i64().expect("p"), l[1].as_i64().expect("q")))
            .collect()
    };
    assert_eq!(book.bids(usize::MAX), pairs(&truth["bids"]));
    assert_eq!(book.asks(usize::MAX), pairs(&truth["asks"]));
}

/// A REST decimal string ("69769.88000000") as a mantissa at exponent -8.
fn mantissa(value: &Value) -> i64 {
    let text = value.as_str().expect("a decimal string");
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = format!("{frac:0<8}");
    int.parse::<i64>().expect("integer part") * 100_000_000
        + frac[..8].parse::<i64>().expect("fraction")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_goes_quiet_and_truncated_frames_are_rejected() {
    let sim = sim(|_| {}).await;
    get_json(
        sim.addr,
        "/admin/faults?conn=next&stall_after_frames=10&stall_ms=600&truncate_pct=20",
    )
    .await;
    let mut ws = connect(sim.addr, "/ws/btcusdt@bestBidAsk").await;
    let mut arrivals = Vec::new();
    let mut truncated = 0;
    while arrivals.len() < 60 {
        let frame = next_binary(&mut ws).await;
        arrivals.push(tokio::time::Instant::now());
        if let Err(sbe::DecodeError::Truncated { .. }) = sbe::decode(&frame) {
            truncated += 1;
        }
    }
    let longest = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .expect("gaps");
    assert!(
        longest >= Duration::from_millis(500),
        "the stall shows as a quiet period: {longest:?}"
    );
    assert!(
        truncated > 0,
        "truncated frames fail to decode as truncated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_failing_rest_is_injected() {
    let sim = sim(|_| {}).await;
    get_json(sim.addr, "/admin/faults?conn=all&rest_error_pct=100").await;
    let (status, _, body) = get(sim.addr, "/api/v3/depth?symbol=BTCUSDT").await;
    assert_eq!(status, 500, "{body}");
    get_json(
        sim.addr,
        "/admin/faults?conn=all&rest_error_pct=0&rest_throttle_pct=100",
    )
    .await;
    let (status, headers, _) = get(sim.addr, "/api/v3/ping").await;
    assert_eq!(status, 429);
    assert!(headers.iter().any(|(n, _)| n == "retry-after"));
    get_json(
        sim.addr,
        "/admin/faults?conn=all&rest_throttle_pct=0&rest_delay_ms=300",
    )
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(get(sim.addr, "/api/v3/ping").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (status, _, body) = get(sim.addr, "/admin/faults?conn=all&drop_depth_pct=101").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("faults.drop_depth_pct"), "{body}");
}
