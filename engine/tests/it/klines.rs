//! Klines end to end, against the simulator's journal as ground truth (candles computed here,
//! independently of `hotpath::kline`): the candles `hotpath run` builds from the trades it
//! delivers, in SBE and JSON mode, in the Redis `kl:` hash and the Kinesis klines stream
//! (kinesalite); the simulator's own `<symbol>@kline_<interval>` stream; and
//! `hotpath backfill klines` paging `GET /api/v3/klines` over more than 1000 candles into
//! Kinesis and Redis, with no duplicate and no hole, replacing a Redis candle marked as missing
//! trades; a candle built across trades given up on
//! (lost on the wire while REST fails) is marked with their count, candles without a gap are not.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use hotpath::config::{FeedFormat, KlinesConfig, RunConfig};
use hotpath::feed::run::{self, RunOptions};
use hotpath::kline::Interval;
use tokio_tungstenite::tungstenite::Message;

use crate::feed::{Sim, key, sim_get};
use crate::servers::{KinesisEmulator, RedisServer, TempDir};
use crate::sinks::{
    FLUSH_PATIENCE, PATIENCE, hash, kinesis_settings, redis_settings, run_config, runtime, sim,
    test_client, wait_for,
};

const KLINE_STREAM: &str = "market-kline";

/// One candle as the tests compare it: open time, open, high, low, close, volume (decimal
/// text with 8 decimals, as Binance prints), trades.
type Ohlcv = (i64, String, String, String, String, String, u64);

/// A mantissa at -8 as Binance prints it.
fn text8(m: i128) -> String {
    format!("{}.{:08}", m / 100_000_000, m % 100_000_000)
}

/// The candle of the trades the simulator journaled for `symbol` in `[open_ms, open_ms +
/// interval_ms)`; `None` without trades.
fn ground_truth(sim: &Sim, symbol: &str, open_ms: i64, interval_ms: i64) -> Option<Ohlcv> {
    let index = sim.handle().shared.symbol_index(symbol).expect("a symbol");
    let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
    let trades: Vec<_> = exchange
        .market(index)
        .trades_from(i64::MIN)
        .filter(|t| (open_ms..open_ms + interval_ms).contains(&t.time_us.div_euclid(1000)))
        .copied()
        .collect();
    let first = trades.first()?;
    let last = trades.last()?;
    Some((
        open_ms,
        text8(first.price.into()),
        text8(trades.iter().map(|t| t.price).max()?.into()),
        text8(trades.iter().map(|t| t.price).min()?.into()),
        text8(last.price.into()),
        text8(trades.iter().map(|t| i128::from(t.qty)).sum()),
        trades.len() as u64,
    ))
}

/// A kline as `GET /api/v3/klines` (and the `kl:` hash) writes it, as compared.
fn from_rest_array(v: &serde_json::Value) -> Ohlcv {
    let s = |i: usize| v[i].as_str().expect("a decimal string").to_string();
    (
        v[0].as_i64().expect("an open time"),
        s(1),
        s(2),
        s(3),
        s(4),
        s(5),
        v[8].as_u64().expect("a trade count"),
    )
}

/// A kline stream event's candle, as compared.
fn from_event(v: &serde_json::Value) -> Ohlcv {
    let k = &v["k"];
    let s = |f: &str| k[f].as_str().expect("a decimal string").to_string();
    (
        k["t"].as_i64().expect("an open time"),
        s("o"),
        s("h"),
        s("l"),
        s("c"),
        s("v"),
        k["n"].as_u64().expect("a trade count"),
    )
}

/// Asserts a candle equals the ground truth (a candle without trades is flat at a price and
/// has no volume).
fn assert_truth(sim: &Sim, symbol: &str, interval_ms: i64, candle: &Ohlcv, what: &str) {
    match ground_truth(sim, symbol, candle.0, interval_ms) {
        Some(truth) => assert_eq!(candle, &truth, "{what}: {symbol} candle at {}", candle.0),
        None => {
            assert_eq!((candle.5.as_str(), candle.6), ("0.00000000", 0), "{what}");
            assert!(candle.1 == candle.2 && candle.2 == candle.3 && candle.3 == candle.4);
        }
    }
}

/// The closed candle in `kl:{symbol}:1s`, if any.
fn redis_closed(url: &str, symbol: &str) -> Option<Ohlcv> {
    let fields = hash(url, &format!("kl:{{{symbol}}}:1s"));
    let closed: serde_json::Value = serde_json::from_str(fields.get("closed")?).ok()?;
    Some(from_rest_array(&closed))
}

/// Runs hotpath in `format` with 1 s klines into Redis and Kinesis until Redis shows three
/// closed candles after the first; checks the hash and every Kinesis kline against the
/// journal.
fn klines_match_the_journal(format: FeedFormat) {
    let sim = sim();
    let redis = RedisServer::start();
    let emulator = KinesisEmulator::start();
    let dir = TempDir::new("klines");
    let one_second = Interval::of("1s").expect("1s");
    let config: RunConfig = run_config(&sim, |c| {
        if format == FeedFormat::Json {
            c.endpoint = format!("{}/json", sim.endpoint());
            c.format = FeedFormat::Json;
        }
        c.kinesis = Some(kinesis_settings(&emulator.endpoint(), dir.path()));
        c.redis = Some(redis_settings(redis.url()));
        c.klines = KlinesConfig {
            intervals: vec![one_second],
            close_after_ms: 500,
        };
    });
    let api_key = match format {
        FeedFormat::Json => config.api_key().expect("no key needed"),
        FeedFormat::Sbe | FeedFormat::Dual => key(&config),
    };
    let summary = run::run_with(
        &config,
        api_key,
        RunOptions {
            kinesis_client: Some(test_client(&emulator.endpoint())),
            sink_flush_timeout: Some(FLUSH_PATIENCE),
        },
        |_, _| {
            let mut first = None;
            wait_for("three closed candles in Redis", || {
                let Some(closed) = redis_closed(&redis.url(), "BTCUSDT") else {
                    return false;
                };
                let first = *first.get_or_insert(closed.0);
                closed.0 >= first + 3_000
            });
        },
    )
    .expect("the run succeeds");
    assert_eq!(summary.gaps.count, 0, "{summary:?}");
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let fields = hash(&redis.url(), &format!("kl:{{{symbol}}}:1s"));
        let closed = redis_closed(&redis.url(), symbol).expect("a closed candle");
        assert_truth(&sim, symbol, 1_000, &closed, "redis closed");
        let open: serde_json::Value = serde_json::from_str(&fields["open"]).expect("an open one");
        assert!(from_rest_array(&open).0 > closed.0, "{fields:?}");
        assert!(fields["as_of_ms"].parse::<i64>().expect("a time") >= closed.0);
    }
    let records = runtime().block_on(emulator.read_all(KLINE_STREAM));
    let mut by_symbol: BTreeMap<String, Vec<Ohlcv>> = BTreeMap::new();
    for (key, data, _) in &records {
        let v: serde_json::Value = serde_json::from_slice(data).expect("kline JSON");
        assert_eq!(
            (v["e"].as_str(), v["k"]["x"].as_bool()),
            (Some("kline"), Some(true))
        );
        assert_eq!(
            v["s"].as_str(),
            Some(key.as_str()),
            "partition key = symbol"
        );
        by_symbol
            .entry(key.clone())
            .or_default()
            .push(from_event(&v));
    }
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let candles = &by_symbol[symbol];
        assert!(candles.len() >= 3, "{symbol}: {candles:?}");
        for pair in candles.windows(2) {
            assert_eq!(
                pair[1].0,
                pair[0].0 + 1_000,
                "{symbol}: no duplicate, no hole"
            );
        }
        for candle in candles {
            assert_truth(&sim, symbol, 1_000, candle, "kinesis");
        }
    }
}

#[test]
fn sbe_mode_candles_equal_the_journals_trades_in_redis_and_kinesis() {
    klines_match_the_journal(FeedFormat::Sbe);
}

#[test]
fn json_mode_candles_equal_the_journals_trades_in_redis_and_kinesis() {
    klines_match_the_journal(FeedFormat::Json);
}

#[test]
fn the_simulators_kline_stream_agrees_with_its_journal() {
    let sim = sim();
    let addr = sim.handle().addr;
    let closed = runtime().block_on(async {
        let url = format!("ws://{addr}/json/stream?streams=btcusdt@kline_1s");
        let (mut ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
            .await
            .expect("in time")
            .expect("connects");
        let mut closed: Vec<serde_json::Value> = Vec::new();
        let mut updates = 0;
        while closed.len() < 3 {
            let message = tokio::time::timeout(PATIENCE, ws.next())
                .await
                .expect("a message in time")
                .expect("open")
                .expect("a frame");
            let Message::Text(text) = message else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON");
            assert_eq!(v["stream"], "btcusdt@kline_1s");
            match v["data"]["k"]["x"].as_bool() {
                Some(true) => closed.push(v["data"].clone()),
                _ => updates += 1,
            }
        }
        assert!(updates > 0, "open candles are sent too");
        closed
    });
    for pair in closed.windows(2) {
        assert_eq!(from_event(&pair[1]).0, from_event(&pair[0]).0 + 1_000);
    }
    for v in &closed {
        assert_eq!(v["k"]["i"], "1s");
        assert_truth(&sim, "BTCUSDT", 1_000, &from_event(v), "sim stream");
    }
}

#[test]
fn backfill_pages_over_a_thousand_candles_without_duplicate_or_hole() {
    // 25 minutes of history, so 1 s klines need two pages of 1000.
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 100.0;
        c.exchange.history_s = 1_500;
    });
    let redis = RedisServer::start();
    let emulator = KinesisEmulator::start();
    let now = hotpath::clock::unix_ms();
    let (from, to) = (now - 1_400_000, now - 100_000);
    let args = hotpath::backfill::klines::KlinesArgs {
        symbol: "BTCUSDT".into(),
        interval: "1s".into(),
        from: from.to_string(),
        to: to.to_string(),
        rest: format!("http://{}", sim.handle().addr),
        trust_cert: None,
        weight_budget: 1200,
        kinesis_endpoint: Some(emulator.endpoint()),
        region: Some("us-east-1".into()),
        stream: KLINE_STREAM.into(),
        create_stream: true,
        redis: Some(redis.url()),
        keys: "hash-tag".into(),
        s3: false,
        config: None,
        s3_config: None,
    };
    let client = test_client(&emulator.endpoint());
    let report = runtime()
        .block_on(hotpath::backfill::klines::run_with(&args, Some(client)))
        .expect("the backfill runs");
    // Open times in [from, to]: every whole second of it.
    let expected = to.div_euclid(1000) - (from + 999).div_euclid(1000) + 1;
    assert_eq!(report.candles as i64, expected, "{report:?}");
    assert_eq!((report.holes, report.duplicates), (0, 0), "{report:?}");
    assert!(report.pages >= 2, "{report:?}");
    assert_eq!(report.kinesis_written, report.candles);
    assert!(report.redis_written);
    let records = runtime().block_on(emulator.read_all(KLINE_STREAM));
    let candles: Vec<Ohlcv> = records
        .iter()
        .map(|(_, data, _)| from_event(&serde_json::from_slice(data).expect("kline JSON")))
        .collect();
    assert_eq!(candles.len() as u64, report.candles);
    for pair in candles.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1_000,
            "in order, no duplicate, no hole"
        );
    }
    for candle in candles.iter().step_by(97) {
        assert_truth(&sim, "BTCUSDT", 1_000, candle, "backfill");
    }
    let last = candles.last().expect("candles");
    assert_eq!(redis_closed(&redis.url(), "BTCUSDT").as_ref(), Some(last));
    // A second backfill of an older range leaves Redis' newer candle alone.
    let older = hotpath::backfill::klines::KlinesArgs {
        to: (from + 10_000).to_string(),
        kinesis_endpoint: None,
        ..args.clone()
    };
    let report = runtime()
        .block_on(hotpath::backfill::klines::run(&older))
        .expect("the backfill runs");
    assert!(!report.redis_written && report.candles > 0, "{report:?}");
    assert_eq!(redis_closed(&redis.url(), "BTCUSDT").as_ref(), Some(last));
    // Backfilled records are whole.
    for (_, data, _) in &records {
        let v: serde_json::Value = serde_json::from_slice(data).expect("kline JSON");
        assert_eq!(v["missing_trades"], 0, "{v}");
    }
    // The same candle, whole in Redis: left alone. Marked as missing trades (the live writer
    // built it across a gap it gave up on): replaced by Binance's, whole.
    let kl = "kl:{BTCUSDT}:1s";
    let again = hotpath::backfill::klines::KlinesArgs {
        kinesis_endpoint: None,
        ..args
    };
    let mut con = crate::sinks::redis_connection(&redis.url());
    let _: () = redis::cmd("HSET")
        .arg(kl)
        .arg("closed_missing")
        .arg(0)
        .query(&mut con)
        .expect("HSET");
    let report = runtime()
        .block_on(hotpath::backfill::klines::run(&again))
        .expect("the backfill runs");
    assert!(!report.redis_written, "{report:?}");
    let short = format!(
        "[{},\"1.00000000\",\"1.00000000\",\"1.00000000\",\"1.00000000\",\"0.00000000\",{},\"0\",1,\"0\",\"0\",\"0\"]",
        last.0,
        last.0 + 999
    );
    let _: () = redis::cmd("HSET")
        .arg(kl)
        .arg("closed")
        .arg(&short)
        .arg("closed_missing")
        .arg(3)
        .query(&mut con)
        .expect("HSET");
    let report = runtime()
        .block_on(hotpath::backfill::klines::run(&again))
        .expect("the backfill runs");
    assert!(report.redis_written, "{report:?}");
    assert_eq!(redis_closed(&redis.url(), "BTCUSDT").as_ref(), Some(last));
    assert_eq!(hash(&redis.url(), kl)["closed_missing"], "0");
}

/// Review 14: `--to` reaching the current interval fetched the candle still open (Binance
/// answers it, partial): it went to Kinesis as closed (`x` true, `"missing_trades":0`) and
/// into Redis' `closed` (with `closed_missing` 0), a candle published as whole that was not.
/// Only candles closed when fetched are written, as `--s3` already did.
#[test]
fn backfill_leaves_out_the_candle_still_open() {
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 100.0;
        c.exchange.history_s = 900;
    });
    let redis = RedisServer::start();
    let emulator = KinesisEmulator::start();
    let now = hotpath::clock::unix_ms();
    let args = hotpath::backfill::klines::KlinesArgs {
        symbol: "BTCUSDT".into(),
        interval: "1m".into(),
        from: (now - 600_000).to_string(),
        to: (now + 60_000).to_string(),
        rest: format!("http://{}", sim.handle().addr),
        trust_cert: None,
        weight_budget: 1200,
        kinesis_endpoint: Some(emulator.endpoint()),
        region: Some("us-east-1".into()),
        stream: KLINE_STREAM.into(),
        create_stream: true,
        redis: Some(redis.url()),
        keys: "hash-tag".into(),
        s3: false,
        config: None,
        s3_config: None,
    };
    let client = test_client(&emulator.endpoint());
    let report = runtime()
        .block_on(hotpath::backfill::klines::run_with(&args, Some(client)))
        .expect("the backfill runs");
    let ended = hotpath::clock::unix_ms();
    assert!(report.candles >= 9, "{report:?}");
    assert_eq!(report.kinesis_written, report.candles, "{report:?}");
    let records = runtime().block_on(emulator.read_all(KLINE_STREAM));
    assert_eq!(records.len() as u64, report.candles);
    for (_, data, _) in &records {
        let v: serde_json::Value = serde_json::from_slice(data).expect("kline JSON");
        let close_ms = v["k"]["T"].as_i64().expect("a close time");
        assert!(close_ms < ended, "a candle not closed yet: {v}");
    }
    let fields = hash(&redis.url(), "kl:{BTCUSDT}:1m");
    let closed: serde_json::Value =
        serde_json::from_str(&fields["closed"]).expect("a REST kline array");
    let close_ms = closed[6].as_i64().expect("a close time");
    assert!(
        close_ms < ended,
        "Redis' closed candle not closed yet: {closed}"
    );
}

/// Sets the simulator's faults through its admin endpoint.
fn admin(sim: &Sim, path: &str) {
    let (status, body) = sim_get(sim.handle().addr, path);
    assert_eq!(status, 200, "{path}: {body}");
}

/// The last trade id the simulator published of `symbol`.
fn published_last(sim: &Sim, symbol: &str) -> i64 {
    sim.trades(symbol, 0, i64::MAX).last().copied().unwrap_or(0)
}

/// The time (ms) of the newest trade the simulator journaled of `symbol`.
fn newest_trade_ms(sim: &Sim, symbol: &str) -> i64 {
    let index = sim.handle().shared.symbol_index(symbol).expect("a symbol");
    let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
    let newest = exchange.market(index).trades_from(i64::MIN).last().copied();
    newest.map_or(0, |t| t.time_us.div_euclid(1000))
}

/// Notes `kl:{BTCUSDT}:1s`'s closed candle and its `closed_missing` in `seen` (open time ->
/// count); the count must be there beside the candle, in the same write.
fn note_redis_closed(url: &str, seen: &mut BTreeMap<i64, u64>) {
    let fields = hash(url, "kl:{BTCUSDT}:1s");
    let Some(closed) = fields.get("closed") else {
        return;
    };
    let closed: serde_json::Value = serde_json::from_str(closed).expect("a REST kline array");
    assert_eq!(closed.as_array().map(Vec::len), Some(12), "Binance's form");
    let missing = fields
        .get("closed_missing")
        .expect("closed_missing beside closed");
    let open_ms = closed[0].as_i64().expect("an open time");
    seen.insert(open_ms, missing.parse().expect("a count"));
}

/// Trades lost on the wire while REST fails: the sidecar cannot fetch them and gives them up,
/// the sinks release what they held, and the candles built across the gap say so
/// (`closed_missing` in Redis, `missing_trades` in Kinesis) instead of passing for whole,
/// also those the clock closed before the gap showed (published again, marked), while every
/// candle without a gap says 0 and equals the journal.
#[test]
fn a_candle_across_a_given_up_gap_is_marked_and_the_others_are_not() {
    let sim = sim();
    let redis = RedisServer::start();
    let emulator = KinesisEmulator::start();
    let dir = TempDir::new("klines-gap");
    let config: RunConfig = run_config(&sim, |c| {
        c.kinesis = Some(kinesis_settings(&emulator.endpoint(), dir.path()));
        c.redis = Some(redis_settings(redis.url()));
        c.klines = KlinesConfig {
            intervals: vec![Interval::of("1s").expect("1s")],
            close_after_ms: 500,
        };
        c.sidecar.give_up_after = Duration::from_millis(500);
        c.sidecar.hold_max = Duration::from_millis(1_000);
        c.sidecar.stream_silence = None;
        c.sidecar.kline_interval_ms = None;
    });
    let url = redis.url();
    let mut seen = BTreeMap::new();
    let summary = run::run_with(
        &config,
        key(&config),
        RunOptions {
            kinesis_client: Some(test_client(&emulator.endpoint())),
            sink_flush_timeout: Some(FLUSH_PATIENCE),
        },
        |_, _| {
            wait_for("a whole closed candle in Redis", || {
                note_redis_closed(&url, &mut seen);
                seen.values().any(|&m| m == 0)
            });
            // REST fails from now on: the trades dropped below cannot be fetched.
            admin(&sim, "/admin/faults?conn=all&rest_error_pct=100");
            let before = published_last(&sim, "BTCUSDT");
            let since_ms = newest_trade_ms(&sim, "BTCUSDT");
            admin(&sim, "/admin/faults?conn=all&drop_trades_pct=100");
            // Longer than a candle and `close_after_ms`: the depth diffs' clock closes the
            // candle of the trade before the gap, and fills the next, before the gap shows.
            wait_for("trades lost on the wire for 2.5 s", || {
                published_last(&sim, "BTCUSDT") >= before + 20
                    && newest_trade_ms(&sim, "BTCUSDT") >= since_ms + 2_500
            });
            admin(&sim, "/admin/faults?conn=all&drop_trades_pct=0");
            wait_for("a closed candle marked in Redis", || {
                note_redis_closed(&url, &mut seen);
                seen.values().any(|&m| m > 0)
            });
            admin(&sim, "/admin/faults?conn=all&rest_error_pct=0");
            let marked = seen.iter().rev().find(|(_, m)| **m > 0).map(|(t, _)| *t);
            let marked = marked.expect("a marked candle");
            wait_for("a whole closed candle after it", || {
                note_redis_closed(&url, &mut seen);
                seen.range(marked + 1..).any(|(_, &m)| m == 0)
            });
        },
    )
    .expect("the run succeeds");
    for sink in ["redis", "kinesis"] {
        assert!(summary.sinks[sink].unrepaired >= 20, "{summary:?}");
    }
    // Kinesis: the last record per open time (a candle published again revises it).
    let mut by_symbol: BTreeMap<String, BTreeMap<i64, (Ohlcv, u64)>> = BTreeMap::new();
    for (key, data, _) in runtime().block_on(emulator.read_all(KLINE_STREAM)) {
        let v: serde_json::Value = serde_json::from_slice(&data).expect("kline JSON");
        let missing = v["missing_trades"]
            .as_u64()
            .expect("missing_trades in every record");
        let candle = from_event(&v);
        by_symbol
            .entry(key)
            .or_default()
            .insert(candle.0, (candle, missing));
    }
    let btc = &by_symbol["BTCUSDT"];
    assert!(btc.values().any(|(_, m)| *m > 0), "{btc:?}");
    assert!(btc.values().any(|(_, m)| *m == 0), "{btc:?}");
    let mut short = 0;
    for (symbol, candles) in &by_symbol {
        for (candle, missing) in candles.values() {
            let truth = ground_truth(&sim, symbol, candle.0, 1_000).map_or(0, |t| t.6);
            if *missing == 0 {
                assert_truth(&sim, symbol, 1_000, candle, "a candle said whole");
            } else {
                let lacking = truth
                    .checked_sub(candle.6)
                    .expect("not more than the journal");
                assert!(lacking <= *missing, "{symbol} {candle:?}: {missing}");
                short += lacking;
            }
        }
    }
    assert!(
        short >= 20,
        "the marked candles lack the lost trades: {short}"
    );
}
