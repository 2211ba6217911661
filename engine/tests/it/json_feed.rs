//! `[feed] format = "json"` end to end: hotpath reads the simulator's JSON combined streams
//! (`/json/stream?streams=...`, no API key) and transcodes them into SBE frames, so the same
//! sequencer, rings, sinks and sidecar run. Against a real `redis-server` and kinesalite: every
//! trade exactly once and equal, field by field, to what an SBE run beside it wrote; the book
//! equal to the exchange's; malformed JSON frames counted, skipped and their trades repaired.

use std::collections::{BTreeMap, HashMap};

use hotpath::config::{FeedFormat, RunConfig};
use hotpath::feed::run::{self, RunOptions, Summary};

use crate::feed::{Sim, key};
use crate::repairs::{assert_repaired_exactly_once, run_until};
use crate::servers::{KinesisEmulator, RedisServer, TempDir};
use crate::sinks::{
    FLUSH_PATIENCE, SYMBOLS, assert_book_matches, assert_exactly_once, hash, kinesis_settings,
    read_kinesis_trades, redis_connection, redis_settings, redis_trades, run_config, sim,
    test_client, wait_for, written,
};

/// A run of the simulator's JSON streams: the endpoint's `/json` path is kept.
fn json_config(sim: &Sim, tweak: impl FnOnce(&mut RunConfig)) -> RunConfig {
    run_config(sim, |c| {
        c.endpoint = format!("{}/json", sim.endpoint());
        c.format = FeedFormat::Json;
        tweak(c);
    })
}

/// Runs `config` until its Redis writer wrote `trades` trades.
fn run_until_written(
    config: &RunConfig,
    client: Option<aws_sdk_kinesis::Client>,
    trades: u64,
) -> Summary {
    // JSON needs no key: none is read or sent (the simulator refuses SBE without one).
    let api_key = match config.format {
        FeedFormat::Json => config.api_key().expect("no key needed"),
        FeedFormat::Sbe | FeedFormat::Dual => key(config),
    };
    run::run_with(
        config,
        api_key,
        RunOptions {
            kinesis_client: client,
            sink_flush_timeout: Some(FLUSH_PATIENCE),
        },
        |_, sinks| {
            wait_for("trades written", || {
                written(sinks, "redis") >= trades
                    && (written(sinks, "kinesis") >= trades
                        || !sinks.iter().any(|s| s.name == "kinesis"))
            })
        },
    )
    .expect("the run succeeds")
}

/// `trades:{S}` entries by trade id.
fn trade_fields(url: &str, symbol: &str) -> BTreeMap<i64, HashMap<String, String>> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(format!("trades:{{{symbol}}}"))
        .arg("-")
        .arg("+")
        .query(&mut redis_connection(url))
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| (fields["trade_id"].parse().expect("an id"), fields))
        .collect()
}

/// An ISO 8601 time cut to milliseconds (JSON times are whole milliseconds).
fn to_ms(ts: &str) -> &str {
    ts.find('.')
        .map_or(ts, |dot| &ts[..(dot + 4).min(ts.len())])
}

#[test]
fn json_streams_deliver_the_same_trades_as_sbe_into_redis_and_kinesis() {
    let sim = sim();
    let (sbe_redis, json_redis) = (RedisServer::start(), RedisServer::start());
    let emulator = KinesisEmulator::start();
    let dir = TempDir::new("json-feed");
    let sbe_config = run_config(&sim, |c| c.redis = Some(redis_settings(sbe_redis.url())));
    let json_config = json_config(&sim, |c| {
        c.redis = Some(redis_settings(json_redis.url()));
        c.kinesis = Some(kinesis_settings(&emulator.endpoint(), dir.path()));
    });
    let (sbe, json) = std::thread::scope(|scope| {
        let sbe = scope.spawn(|| run_until_written(&sbe_config, None, 1500));
        let json = run_until_written(&json_config, Some(test_client(&emulator.endpoint())), 1500);
        (sbe.join().expect("the SBE run"), json)
    });
    for summary in [&sbe, &json] {
        assert_eq!(summary.gaps.count, 0, "{summary:?}");
        assert_eq!(
            (summary.json_malformed, summary.decode_errors),
            (0, 0),
            "{summary:?}"
        );
    }
    let kinesis = read_kinesis_trades(&emulator);
    for symbol in SYMBOLS {
        let in_redis = redis_trades(&json_redis.url(), symbol);
        assert_exactly_once(&sim, symbol, &in_redis, "json redis");
        assert_exactly_once(&sim, symbol, &kinesis[symbol], "json kinesis");
        assert_eq!(in_redis, kinesis[symbol], "both sinks hold the same trades");
        assert_book_matches(&sim, &json_redis.url(), symbol, 20);
        let bbo = hash(&json_redis.url(), &format!("bbo:{{{symbol}}}"));
        assert!(bbo["bid_price"] < bbo["ask_price"], "{bbo:?}");

        // The same trades, field by field, as the SBE run wrote them.
        let from_sbe = trade_fields(&sbe_redis.url(), symbol);
        let from_json = trade_fields(&json_redis.url(), symbol);
        assert_exactly_once(&sim, symbol, &redis_trades(&sbe_redis.url(), symbol), "sbe");
        let mut common = 0;
        for (id, json_fields) in &from_json {
            let Some(sbe_fields) = from_sbe.get(id) else {
                continue;
            };
            common += 1;
            for field in ["exchange", "pair", "price", "qty", "side", "trade_id"] {
                assert_eq!(
                    json_fields[field], sbe_fields[field],
                    "{symbol} {id} {field}"
                );
            }
            assert_eq!(
                to_ms(&json_fields["ts"]),
                to_ms(&sbe_fields["ts"]),
                "{symbol} {id}"
            );
        }
        assert!(common >= 100, "{symbol}: only {common} trades in both runs");
    }
}

#[test]
fn malformed_json_frames_are_counted_skipped_and_their_trades_repaired() {
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 1_000.0;
        c.faults.truncate_pct = 1.0;
        c.faults.corrupt_pct = 1.0;
    });
    let redis = RedisServer::start();
    let emulator = KinesisEmulator::start();
    let dir = TempDir::new("json-malformed");
    let config = json_config(&sim, |c| {
        c.redis = Some(redis_settings(redis.url()));
        c.kinesis = Some(kinesis_settings(&emulator.endpoint(), dir.path()));
    });
    let summary = run_until(&config, &emulator, 2000, 10);
    assert!(summary.json_malformed > 0, "{summary:?}");
    assert_eq!(summary.decode_errors, 0, "{summary:?}");
    assert!(summary.gaps.count > 0, "lost trades are gaps: {summary:?}");
    assert_repaired_exactly_once(&sim, &redis, &emulator, &summary);
}
