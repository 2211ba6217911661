//! The REST client (`hotpath::binance::rest`) against the simulator over real HTTP: depth snapshots equal
//! the simulator's ground truth at their update id, historical trades equal its journal, the
//! used weight follows `X-MBX-USED-WEIGHT-1M`, the local budget and a 429 stop requests before
//! they are sent, one connection is kept alive, and the https path works with the simulator's
//! certificate trusted.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hotpath::binance::decimal;
use hotpath::binance::rest::{RestClient, RestError};
use hotpath::sim::config::SimConfig;
use hotpath::sim::market::{PRICE_EXPONENT, QTY_EXPONENT};
use hotpath::sim::server::{self, SimHandle};

/// Every wait is bounded: a hang fails loudly.
const PATIENCE: Duration = Duration::from_secs(30);

/// A simulator on the test's runtime, two symbols, a busy market.
async fn start_sim(tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig::default();
    config.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
    config.exchange.seed = 11;
    config.exchange.actions_per_second = 2_000.0;
    tweak(&mut config);
    server::start(config).await.expect("the simulator starts")
}

fn client(sim: &SimHandle) -> RestClient {
    RestClient::new(&format!("http://{}", sim.addr), None).expect("a client")
}

/// The ids of the first journaled trade of `symbol` and of the next one, read in-process.
fn trade_ids(sim: &SimHandle, symbol: &str) -> (i64, i64) {
    let index = sim.shared.symbol_index(symbol).expect("a symbol");
    let exchange = server::lock(&sim.shared.exchange);
    let market = exchange.market(index);
    let next = market.next_trade_id();
    (market.trades_from(0).next().map_or(next, |t| t.id), next)
}

/// Waits, on the simulator's own event broadcast, until `symbol` has traded `count` times;
/// returns the id of its first trade.
async fn until_traded(sim: &SimHandle, symbol: &str, count: i64) -> i64 {
    let mut events = sim.shared.events.subscribe();
    let traded = || {
        let (first, next) = trade_ids(sim, symbol);
        next - first >= count
    };
    let wait = async {
        while !traded() {
            match events.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    panic!("the simulator stopped")
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("the market trades");
    trade_ids(sim, symbol).0
}

/// The clock minute, as Binance's and the simulator's weight windows count them.
fn minute_now() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    i64::try_from(ms / 60_000).expect("fits")
}

fn levels(value: &serde_json::Value) -> Vec<(i64, i64)> {
    serde_json::from_value(value.clone()).expect("[[price, qty], ...] mantissas")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_snapshots_equal_the_ground_truth_at_their_update_id() {
    let sim = start_sim(|_| {}).await;
    until_traded(&sim, "ETHUSDT", 50).await;
    let mut client = client(&sim);
    for (symbol, limit) in [("BTCUSDT", 5), ("BTCUSDT", 1000), ("ETHUSDT", 100)] {
        let snapshot = client.depth(symbol, limit).await.expect("a snapshot");
        let id = snapshot.last_update_id;
        let truth = client
            .get_json(&format!("/admin/book?symbol={symbol}&updateId={id}"))
            .await
            .expect("the book at that id is journaled");
        assert_eq!(truth["updateId"], id);
        let bids = decimal::mantissas(&snapshot.bids, PRICE_EXPONENT, QTY_EXPONENT).expect("exact");
        let asks = decimal::mantissas(&snapshot.asks, PRICE_EXPONENT, QTY_EXPONENT).expect("exact");
        let limit = usize::try_from(limit).expect("small");
        let (true_bids, true_asks) = (levels(&truth["bids"]), levels(&truth["asks"]));
        assert!(!bids.is_empty() && !asks.is_empty(), "a two-sided book");
        assert_eq!(bids.len(), true_bids.len().min(limit));
        assert_eq!(asks.len(), true_asks.len().min(limit));
        assert_eq!(bids, true_bids[..bids.len()], "{symbol} bids at {id}");
        assert_eq!(asks, true_asks[..asks.len()], "{symbol} asks at {id}");
    }
    assert_eq!(client.connects(), 1, "one kept-alive connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_trades_equal_the_journal() {
    let sim = start_sim(|_| {}).await;
    let first = until_traded(&sim, "BTCUSDT", 40).await;
    let mut client = client(&sim);
    let from = first + 10;
    let trades = client
        .historical_trades("BTCUSDT", Some(from), 20)
        .await
        .expect("trades");
    let truth = client
        .get_json(&format!(
            "/admin/trades?symbol=BTCUSDT&fromId={from}&limit=20"
        ))
        .await
        .expect("the journal");
    let truth = truth.as_array().expect("an array");
    assert_eq!(trades.len(), 20);
    assert_eq!(trades.len(), truth.len());
    for (got, want) in trades.iter().zip(truth) {
        assert_eq!(got.id, want["id"]);
        assert_eq!(
            decimal::parse_decimal(&got.price, PRICE_EXPONENT),
            want["priceMantissa"].as_i64()
        );
        assert_eq!(
            decimal::parse_decimal(&got.qty, QTY_EXPONENT),
            want["qtyMantissa"].as_i64()
        );
        assert_eq!(got.is_buyer_maker, want["isBuyerMaker"]);
        let time_us = want["time"].as_i64().expect("microseconds");
        assert_eq!(got.time_ms, time_us.div_euclid(1000));
    }
    let ids: Vec<i64> = trades.iter().map(|t| t.id).collect();
    assert_eq!(ids, (from..from + 20).collect::<Vec<_>>());

    let recent = client
        .historical_trades("BTCUSDT", None, 5)
        .await
        .expect("recent trades");
    assert_eq!(recent.len(), 5);
    assert!(recent.windows(2).all(|w| w[1].id == w[0].id + 1));
    assert!(recent[0].id >= trades[19].id, "the most recent come last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_weight_follows_the_server_header() {
    let sim = start_sim(|_| {}).await;
    let mut client = client(&sim);
    // Two depth calls (weight 5 each) in one minute; a minute boundary between them starts the
    // server's count afresh, so such a pair is repeated.
    let mut checked = false;
    for _ in 0..3 {
        let minute = minute_now();
        let before = client.used_weight();
        client.depth("BTCUSDT", 100).await.expect("a snapshot");
        let first = client.used_weight();
        client.depth("BTCUSDT", 100).await.expect("a snapshot");
        let second = client.used_weight();
        if minute_now() != minute {
            continue;
        }
        assert_eq!(first, before + 5);
        assert_eq!(second, before + 10);
        assert!(second >= 10);
        checked = true;
        break;
    }
    assert!(checked, "two calls within one minute");
    // Ground truth is unweighted and leaves the count alone.
    let minute = minute_now();
    let before = client.used_weight();
    client.get_json("/admin/symbols").await.expect("symbols");
    client.ping().await.expect("pong");
    if minute_now() == minute {
        assert_eq!(client.used_weight(), before + 1);
    }
    assert_eq!(client.connects(), 1, "one kept-alive connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_budget_refuses_without_sending() {
    let sim = start_sim(|_| {}).await;
    let mut client = client(&sim);
    client.set_weight_budget(4);
    let refused = client.depth("BTCUSDT", 100).await;
    assert!(
        matches!(
            refused,
            Err(RestError::WouldExceed {
                weight: 5,
                used: 0,
                budget: 4,
                retry_after,
            }) if retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60)
        ),
        "{refused:?}"
    );
    assert_eq!(client.connects(), 0, "nothing was sent");
    // The server's count, the first it reports, holds only the ping: the refused depth call
    // never reached it (in any minute).
    let minute = minute_now();
    client.ping().await.expect("a ping fits the budget");
    let used = client.used_weight();
    if minute_now() == minute {
        assert_eq!(used, 1);
    }

    // With the budget nearly used up, the next call that would pass it is refused too.
    client.set_weight_budget(5);
    let minute = minute_now();
    let refused = client.depth("BTCUSDT", 100).await;
    if minute_now() == minute {
        assert!(
            matches!(refused, Err(RestError::WouldExceed { used: 1, .. })),
            "{refused:?}"
        );
        client.ping().await.expect("pong");
        let used = client.used_weight();
        if minute_now() == minute {
            assert_eq!(used, 2, "only the two pings were counted");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_reported_and_later_requests_are_refused_locally() {
    let sim = start_sim(|c| c.rest_weight_per_minute = 12).await;
    let mut client = client(&sim);
    // 5 + 5 fit the limit of 12, the third depth call does not (the loop allows for a new
    // minute starting in between).
    let mut limited = None;
    for _ in 0..8 {
        match client.depth("BTCUSDT", 100).await {
            Ok(_) => {}
            Err(RestError::RateLimited { retry_after }) => {
                limited = Some((retry_after, minute_now()));
                break;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    let (retry_after, minute) = limited.expect("a 429");
    let counted = client.used_weight();
    assert!(retry_after > Duration::ZERO, "{retry_after:?}");
    assert!(retry_after <= Duration::from_secs(60), "{retry_after:?}");

    let held = client.ping().await;
    assert!(
        matches!(held, Err(RestError::BackingOff { banned: false, retry_after: left })
            if left <= retry_after),
        "{held:?}"
    );
    assert!(client.backoff_remaining().is_some());

    // The server saw nothing of the held request: another client from the same address finds
    // the count where the 429 left it, plus its own ping.
    let mut other = RestClient::new(&format!("http://{}", sim.addr), None).expect("a client");
    let probe = other.ping().await;
    let probe_used = other.used_weight();
    // (A new minute in between would have reset the server's count.)
    if minute_now() == minute {
        assert!(
            counted > 12,
            "the header counts the refused request: {counted}"
        );
        assert!(
            matches!(probe, Err(RestError::RateLimited { .. })),
            "{probe:?}"
        );
        assert_eq!(probe_used, counted + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_works_with_the_simulator_certificate_trusted() {
    let sim = start_sim(|c| c.tls = true).await;
    let first = until_traded(&sim, "BTCUSDT", 10).await;
    let pem = sim.cert_pem.clone().expect("a certificate");
    let tls = Arc::new(hotpath::tls::client_config_trusting(&pem).expect("a TLS config"));
    let port = sim.addr.port();
    for host in ["localhost", "127.0.0.1"] {
        let mut client = RestClient::new(&format!("https://{host}:{port}"), Some(tls.clone()))
            .expect("a client");
        assert_eq!(client.base_url(), format!("https://{host}:{port}"));
        client.ping().await.expect("pong over TLS");
        let time = client.server_time_ms().await.expect("the time");
        assert!(time > 1_600_000_000_000, "{time}");
        let snapshot = client.depth("BTCUSDT", 10).await.expect("a snapshot");
        assert!(!snapshot.bids.is_empty());
        let trades = client
            .historical_trades("BTCUSDT", Some(first), 5)
            .await
            .expect("trades");
        assert_eq!(trades.len(), 5);
        assert_eq!(client.connects(), 1, "one kept-alive TLS connection");
    }

    // Plain HTTP to the TLS port, and TLS without trusting the certificate, both fail cleanly.
    let mut plain = client(&sim);
    plain.set_timeout(Duration::from_secs(5));
    assert!(plain.ping().await.is_err());
    // The default roots (webpki's, or SSL_CERT_FILE's) do not hold the simulator's certificate.
    let mut untrusting =
        RestClient::new(&format!("https://localhost:{port}"), None).expect("a client");
    let error = untrusting.ping().await.expect_err("an unknown certificate");
    assert!(
        matches!(error, RestError::Io(ref m) if m.contains("TLS handshake") && m.contains("certificate")),
        "{error:?}"
    );
    assert_eq!(untrusting.connects(), 0);
}
