//! The REST client in SBE (`Accept: application/sbe`, `X-MBX-SBE: 3:5`) against the simulator
//! over real HTTP: every endpoint the engine uses (depth, historicalTrades, klines, aggTrades,
//! exchangeInfo) gives exactly the values the JSON answer gives; a simulator with SBE off (406)
//! makes the client fall back to JSON, said once in the log; a deprecated schema is warned
//! about once and still decodes; an SBE-encoded error is read as Binance's code and message.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotpath::binance::decimal::mantissas;
use hotpath::binance::rest::{RestClient, RestError, RestFormat};
use hotpath::sim::config::SimConfig;
use hotpath::sim::rest::SbeMode;
use hotpath::sim::server::{self, SimHandle};

/// Every wait is bounded: a hang fails loudly.
const PATIENCE: Duration = Duration::from_secs(30);

async fn start_sim(sbe: SbeMode) -> SimHandle {
    let mut config = SimConfig::default();
    config.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
    config.exchange.seed = 5;
    config.exchange.actions_per_second = 2_000.0;
    config.rest_sbe = sbe;
    server::start(config).await.expect("the simulator starts")
}

fn client(sim: &SimHandle, format: RestFormat) -> RestClient {
    let mut client = RestClient::new(&format!("http://{}", sim.addr), None).expect("a client");
    client.set_format(format);
    client
}

/// Waits on the simulator's event broadcast until `symbol` has traded `count` times, then
/// stops the market, so that two requests see the same exchange. Returns the first trade id.
async fn traded_then_frozen(sim: &SimHandle, symbol: &str, count: i64) -> i64 {
    let index = sim.shared.symbol_index(symbol).expect("a symbol");
    let ids = || {
        let exchange = server::lock(&sim.shared.exchange);
        let market = exchange.market(index);
        let next = market.next_trade_id();
        (market.trades_from(0).next().map_or(next, |t| t.id), next)
    };
    let mut events = sim.shared.events.subscribe();
    let wait = async {
        while ids().1 - ids().0 < count {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                panic!("the simulator stopped");
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("the market trades");
    server::lock(&sim.shared.exchange).set_rate(0.0);
    ids().0
}

/// The log lines written while `capture` is the thread's subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let capture = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || capture.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn count(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned();
        text.matches(needle).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbe_and_json_give_the_same_values_for_every_endpoint_used() {
    let sim = start_sim(SbeMode::Serve).await;
    let first = traded_then_frozen(&sim, "BTCUSDT", 300).await;
    server::lock(&sim.shared.exchange)
        .set_listing("ETHUSDT", Some("HALT"), None)
        .expect("a listing");
    let (mut sbe, mut json) = (
        client(&sim, RestFormat::Sbe),
        client(&sim, RestFormat::Json),
    );

    let (a, b) = (
        sbe.depth("BTCUSDT", 5000).await,
        json.depth("BTCUSDT", 5000).await,
    );
    let (a, b) = (a.expect("SBE depth"), b.expect("JSON depth"));
    assert_eq!(a.last_update_id, b.last_update_id);
    assert!(a.bids.len() > 10 && a.asks.len() > 10, "a deep book");
    assert_eq!(mantissas(&a.bids, -8, -8), mantissas(&b.bids, -8, -8));
    assert_eq!(mantissas(&a.asks, -8, -8), mantissas(&b.asks, -8, -8));

    let (a, b) = (
        sbe.historical_trades("BTCUSDT", Some(first), 1000).await,
        json.historical_trades("BTCUSDT", Some(first), 1000).await,
    );
    let (a, b) = (a.expect("SBE trades"), b.expect("JSON trades"));
    assert!(a.len() >= 300);
    assert_eq!(a, b);

    // The second the first trade falls in: a candle opening then holds it, so the klines are
    // not empty even when every trade fell within one second.
    let start = b.first().expect("a trade").time_ms / 1000 * 1000;
    let (a, b) = (
        sbe.klines("BTCUSDT", "1s", start, 1000).await,
        json.klines("BTCUSDT", "1s", start, 1000).await,
    );
    let (a, b) = (a.expect("SBE klines"), b.expect("JSON klines"));
    assert!(a.iter().any(|k| k.count > 0), "{a:?}");
    assert_eq!(a, b);

    let (a, b) = (
        sbe.agg_trades("BTCUSDT", start, start + 3_600_000, 1000)
            .await,
        json.agg_trades("BTCUSDT", start, start + 3_600_000, 1000)
            .await,
    );
    let (a, b) = (a.expect("SBE aggTrades"), b.expect("JSON aggTrades"));
    assert_eq!(a.first().map(|x| x.first_trade_id), Some(first));
    assert_eq!(a, b);

    let (a, b) = (sbe.exchange_info().await, json.exchange_info().await);
    let (a, b) = (a.expect("SBE exchangeInfo"), b.expect("JSON exchangeInfo"));
    let statuses: Vec<(&str, &str)> = a.iter().map(|s| (&*s.symbol, &*s.status)).collect();
    assert_eq!(statuses, [("BTCUSDT", "TRADING"), ("ETHUSDT", "HALT")]);
    assert_eq!(a, b);

    assert_eq!((sbe.format(), sbe.fell_back()), (RestFormat::Sbe, false));
    assert_eq!(sbe.connects(), 1, "one kept-alive connection");
    // An SBE-encoded error is Binance's code and message, and no reason to leave SBE.
    let error = sbe.depth("NOSUCH", 5).await.expect_err("no such symbol");
    assert_eq!(
        error,
        RestError::Http {
            status: 400,
            code: Some(-1121),
            msg: "Invalid symbol.".into()
        }
    );
    assert_eq!(sbe.format(), RestFormat::Sbe);
}

#[tokio::test(flavor = "current_thread")]
async fn a_406_falls_back_to_json_said_once() {
    let logs = Capture::default();
    let _guard = logs.install();
    let sim = start_sim(SbeMode::Refuse).await;
    let first = traded_then_frozen(&sim, "BTCUSDT", 50).await;
    let mut client = client(&sim, RestFormat::Sbe);
    let depth = client.depth("BTCUSDT", 100).await.expect("depth in JSON");
    assert!(!depth.bids.is_empty());
    assert!(client.fell_back());
    assert_eq!(client.format(), RestFormat::Json);
    let trades = client
        .historical_trades("BTCUSDT", Some(first), 50)
        .await
        .expect("trades in JSON");
    assert_eq!(trades.len(), 50);
    let klines = client.klines("BTCUSDT", "1m", 0, 10).await.expect("klines");
    assert!(!klines.is_empty());
    assert!(client.exchange_info().await.is_ok());
    assert_eq!(logs.count("using JSON from now on"), 1, "said once");
    assert_eq!(logs.count("HTTP 406"), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_deprecated_schema_is_warned_about_once_and_still_decodes() {
    let logs = Capture::default();
    let _guard = logs.install();
    let sim = start_sim(SbeMode::Deprecated).await;
    let first = traded_then_frozen(&sim, "ETHUSDT", 20).await;
    let mut client = client(&sim, RestFormat::Sbe);
    for _ in 0..3 {
        client.depth("ETHUSDT", 20).await.expect("depth");
        let trades = client
            .historical_trades("ETHUSDT", Some(first), 20)
            .await
            .expect("trades");
        assert_eq!(trades.first().map(|t| t.id), Some(first));
    }
    assert!(client.sbe_deprecated());
    assert!(!client.fell_back());
    assert_eq!(logs.count("X-MBX-SBE-DEPRECATED"), 1, "warned once");
}
