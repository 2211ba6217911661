//! Pair discovery and run-time connections end to end, against the simulator's exchangeInfo
//! and ticker/24hr (their figures set through its `/admin/listing` knob) with the Redis writer
//! on a real `redis-server`: the first ranking picks the right top N, a refresh that changes
//! the ranking adds and removes symbols live with Redis following, a symbol gone HALT is
//! unsubscribed and marked halted in Redis and in `/metrics`, and adding a symbol when every
//! connection is full opens another connection.

use std::net::SocketAddr;
use std::time::Duration;

use hotpath::config::RunConfig;
use hotpath::control::discovery;

use crate::control::{TOKEN, get_json, hget, http, until, with_control, xlen};
use crate::feed::Sim;
use crate::servers::RedisServer;
use crate::sinks::{redis_settings, run_config};

const SYMBOLS: [&str; 6] = [
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "ADAUSDT", "ETHBTC",
];

fn sim() -> Sim {
    Sim::start(|c| {
        c.exchange.actions_per_second = 300.0;
        c.exchange.symbols = SYMBOLS.map(String::from).to_vec();
    })
}

/// Sets what the simulator's REST reports of `symbol` (`/admin/listing`).
fn listing(sim: &Sim, symbol: &str, status: &str, volume: &str) {
    let addr = sim.handle().addr;
    let path = format!("/admin/listing?symbol={symbol}&status={status}&quoteVolume={volume}");
    let (status_code, _, body) = http(addr, "GET", &path, "", "");
    assert_eq!(status_code, 200, "{body}");
}

fn pairs(addr: SocketAddr) -> Vec<String> {
    let (status, body) = get_json(addr, "/pairs");
    assert_eq!(status, 200, "{body}");
    let mut pairs: Vec<String> = body["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| p.as_str().expect("a symbol").to_string())
        .collect();
    pairs.sort();
    pairs
}

fn metrics(addr: SocketAddr) -> String {
    http(addr, "GET", "/metrics", "", "").2
}

fn discovery_config(sim: &Sim, redis: &RedisServer) -> RunConfig {
    run_config(sim, |c| {
        c.redis = Some(redis_settings(redis.url()));
        c.http.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.discovery.enabled = true;
        c.discovery.pairs_limit = 3;
        c.discovery.quote_asset = "USDT".into();
        c.discovery.fallback_pairs = vec!["BTCUSDT".into()];
        c.discovery.refresh = Duration::from_secs(1);
        c.symbols_per_connection = 2;
    })
}

/// BNBUSDT's keys besides its book.
const OTHER_KEYS: [&str; 4] = [
    "bbo:{BNBUSDT}",
    "tr:{BNBUSDT}:1s",
    "tr:{BNBUSDT}:5s",
    "feat:{BNBUSDT}",
];

#[test]
fn discovery_ranks_the_simulator_and_a_refresh_changes_the_pairs_live() {
    let redis = RedisServer::start();
    let sim = sim();
    for (symbol, volume) in [
        ("BTCUSDT", "1"),
        ("ETHUSDT", "5000"),
        ("BNBUSDT", "4000"),
        ("SOLUSDT", "3000"),
        ("ADAUSDT", "2000"),
        ("ETHBTC", "9000"),
    ] {
        listing(&sim, symbol, "TRADING", volume);
    }
    let mut config = discovery_config(&sim, &redis);
    let first = discovery::initial(&config).expect("discovered");
    assert_eq!(
        first,
        ["BTCUSDT", "ETHUSDT", "BNBUSDT"],
        "the fallback pair, then the top USDT symbols by quote volume (ETHBTC is BTC-quoted)"
    );
    config.symbols = first;
    let url = redis.url();
    with_control(&config, None, move |addr| {
        assert_eq!(pairs(addr), ["BNBUSDT", "BTCUSDT", "ETHUSDT"]);
        until("BNBUSDT trades and book in Redis", || {
            xlen(&url, "trades:{BNBUSDT}") > 0
                && hget(&url, "ob:{BNBUSDT}", "stale").as_deref() == Some("0")
        });
        // ADAUSDT takes the lead and BNBUSDT halts: the next refresh follows.
        listing(&sim, "ADAUSDT", "TRADING", "10000");
        listing(&sim, "BNBUSDT", "HALT", "4000");
        until("the refresh swaps BNBUSDT for ADAUSDT", || {
            pairs(addr) == ["ADAUSDT", "BTCUSDT", "ETHUSDT"]
        });
        until("ADAUSDT trades in Redis", || {
            xlen(&url, "trades:{ADAUSDT}") > 0
        });
        until("BNBUSDT's book marked halted", || {
            hget(&url, "ob:{BNBUSDT}", "stale_reason").is_some_and(|r| r.starts_with("halted"))
        });
        assert_eq!(hget(&url, "ob:{BNBUSDT}", "stale").as_deref(), Some("1"));
        // Its other keys keep their last values, marked halted too (issue 11).
        for key in OTHER_KEYS {
            until(&format!("{key} marked halted"), || {
                hget(&url, key, "stale_reason").is_some_and(|r| r.starts_with("halted"))
            });
            assert_eq!(hget(&url, key, "stale").as_deref(), Some("1"), "{key}");
        }
        let text = metrics(addr);
        assert!(
            text.contains("hotpath_symbol_halted{symbol=\"BNBUSDT\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hotpath_discovery_pair_changes_total{change=\"added\"} 1"),
            "{text}"
        );
        // Trading again and first by volume: back in (ETHUSDT, now fourth, out), its halt
        // mark gone from the metrics.
        listing(&sim, "BNBUSDT", "TRADING", "20000");
        until("BNBUSDT back and ETHUSDT out", || {
            pairs(addr) == ["ADAUSDT", "BNBUSDT", "BTCUSDT"]
        });
        until("ETHUSDT's book marked removed", || {
            hget(&url, "ob:{ETHUSDT}", "stale_reason").is_some_and(|r| r.starts_with("removed"))
        });
        until("the halt mark cleared", || {
            !metrics(addr).contains("hotpath_symbol_halted{symbol=\"BNBUSDT\"}")
        });
        until("BNBUSDT's book live again", || {
            hget(&url, "ob:{BNBUSDT}", "stale").as_deref() == Some("0")
        });
        for key in OTHER_KEYS {
            until(&format!("{key}'s halt mark gone"), || {
                hget(&url, key, "stale").is_none()
            });
        }
    });
}

#[test]
fn adding_a_symbol_when_every_connection_is_full_opens_another() {
    let redis = RedisServer::start();
    let sim = sim();
    let config = run_config(&sim, |c| {
        c.redis = Some(redis_settings(redis.url()));
        c.http.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.http.allow_pair_changes = true;
        c.symbols = vec!["BTCUSDT".into()];
        c.symbols_per_connection = 1;
    });
    let url = redis.url();
    with_control(&config, Some(TOKEN.into()), move |addr| {
        let auth = format!("Authorization: Bearer {TOKEN}\r\n");
        for symbol in ["ETHUSDT", "SOLUSDT"] {
            let body = format!(r#"{{"symbol":"{symbol}"}}"#);
            let (status, _, answer) = http(addr, "POST", "/pairs", &auth, &body);
            assert_eq!(status, 200, "{answer}");
        }
        for symbol in ["BTCUSDT", "ETHUSDT", "SOLUSDT"] {
            until(&format!("{symbol} trades in Redis"), || {
                xlen(&url, &format!("trades:{{{symbol}}}")) > 0
            });
        }
        until("three connections opened", || {
            let text = metrics(addr);
            let opened: f64 = text
                .lines()
                .filter(|l| l.starts_with("hotpath_connects_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            opened >= 3.0
        });
        let (status, _, answer) = http(addr, "DELETE", "/pairs/ETHUSDT", &auth, "");
        assert_eq!(status, 200, "{answer}");
        let body = r#"{"symbol":"ADAUSDT"}"#;
        let (status, _, answer) = http(addr, "POST", "/pairs", &auth, body);
        assert_eq!(status, 200, "the freed slot takes it: {answer}");
        until("ADAUSDT trades in Redis", || {
            xlen(&url, "trades:{ADAUSDT}") > 0
        });
    });
}
