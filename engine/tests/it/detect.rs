//! Gap detection beyond the sequence check, end to end against the simulator and a real
//! `redis-server`: a stream silent while its symbol moves (the simulator's `mute_stream`
//! fault) is found and repaired (trades backfilled from the last id delivered; a book marked
//! stale and synced again), and trades lost where the sequence check cannot see them (the last
//! trades before the market goes quiet, dropped on the wire) are found by the kline check and
//! backfilled for each sink (Redis and a real Kinesis emulator), while intervals that agree
//! trigger nothing. In JSON mode the closed klines of the kline streams do the same check
//! without REST.

use std::sync::Arc;
use std::time::Duration;

use hotpath::config::{FeedFormat, KlinesConfig, RedisConfig, RunConfig};
use hotpath::feed::run::{self, RunOptions, Summary};
use hotpath::kline::Interval;
use hotpath::sidecar::thread::SidecarStats;

use crate::feed::{Sim, key, sim_get};
use crate::servers::{KinesisEmulator, RedisServer, TempDir};
use crate::sinks::{
    FLUSH_PATIENCE, SYMBOLS, assert_exactly_once, kinesis_settings, read_kinesis_trades,
    redis_connection, redis_settings, redis_trades, run_config, sim, test_client, wait_for,
    written,
};

/// Sets the simulator's faults (or rate) through its admin endpoint.
fn admin(sim: &Sim, path: &str) {
    let (status, body) = sim_get(sim.handle().addr, path);
    assert_eq!(status, 200, "{path}: {body}");
}

/// The last trade id the simulator published of `symbol`.
fn published_last(sim: &Sim, symbol: &str) -> i64 {
    *sim.trades(symbol, 0, i64::MAX)
        .last()
        .expect("the simulator traded")
}

/// The last trade id in `trades:{symbol}`.
fn redis_last(url: &str, symbol: &str) -> i64 {
    let mut con = redis_connection(url);
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(format!("trades:{{{symbol}}}"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .expect("XREVRANGE");
    last.first()
        .and_then(|(_, fields)| fields.iter().find(|(k, _)| k == "trade_id"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn ob_field(url: &str, symbol: &str, field: &str) -> String {
    let value: Option<String> = redis::cmd("HGET")
        .arg(format!("ob:{{{symbol}}}"))
        .arg(field)
        .query(&mut redis_connection(url))
        .expect("HGET");
    value.unwrap_or_default()
}

/// Runs `config` (with `client` for Kinesis, if it runs); `wait` drives the scenario.
fn run_redis(
    config: &RunConfig,
    client: Option<aws_sdk_kinesis::Client>,
    wait: impl FnOnce(&Arc<SidecarStats>, &[run::SinkHandle]),
) -> Summary {
    run::run_with(
        config,
        key(config),
        RunOptions {
            kinesis_client: client,
            sink_flush_timeout: Some(FLUSH_PATIENCE),
        },
        |feed, sinks| {
            let stats = feed
                .sidecar
                .clone()
                .expect("the sidecar runs beside the sink");
            wait(&stats, sinks);
        },
    )
    .expect("the run succeeds")
}

#[test]
fn a_trade_stream_silent_while_its_symbol_moves_is_found_and_backfilled() {
    let sim = sim();
    let redis = RedisServer::start();
    let config = run_config(&sim, |c| {
        c.redis = Some(redis_settings(redis.url()));
        c.sidecar.stream_silence = Some(Duration::from_millis(1_000));
        c.sidecar.kline_interval_ms = None;
    });
    let mut muted_at = 0;
    let summary = run_redis(&config, None, |stats, sinks| {
        wait_for("trades written", || written(sinks, "redis") >= 300);
        admin(&sim, "/admin/faults?conn=all&mute_stream=ethusdt@trade");
        muted_at = published_last(&sim, "ETHUSDT");
        // Trades published well after the mute reach Redis only through the silence probes.
        wait_for("trades of the silent stream backfilled", || {
            stats.silence_repairs.get() >= 2 && redis_last(&redis.url(), "ETHUSDT") > muted_at + 50
        });
    });
    let sidecar = summary.sidecar.as_ref().expect("a sidecar summary");
    assert!(sidecar.silent_streams >= 2, "{sidecar:?}");
    assert!(sidecar.silence_repairs >= 2, "{sidecar:?}");
    assert_eq!(sidecar.unrepaired_ids, 0, "{sidecar:?}");
    let json = serde_json::to_value(&summary).expect("the summary serializes");
    for field in [
        "silent_streams",
        "silence_repairs",
        "kline_checks",
        "kline_mismatches",
        "detect_failures",
    ] {
        assert!(json["sidecar"][field].is_u64(), "sidecar.{field} in {json}");
    }
    for symbol in SYMBOLS {
        assert_exactly_once(&sim, symbol, &redis_trades(&redis.url(), symbol), "redis");
    }
    assert!(redis_last(&redis.url(), "ETHUSDT") > muted_at + 50);
}

#[test]
fn a_depth_stream_silent_while_its_symbol_moves_marks_the_book_stale_and_resyncs_it() {
    let sim = sim();
    let redis = RedisServer::start();
    let config = run_config(&sim, |c| {
        c.redis = Some(redis_settings(redis.url()));
        c.sidecar.stream_silence = Some(Duration::from_millis(1_000));
        c.sidecar.kline_interval_ms = None;
    });
    let url = redis.url();
    let summary = run_redis(&config, None, |stats, sinks| {
        wait_for("the book live", || {
            ob_field(&url, "BTCUSDT", "stale") == "0"
        });
        let resyncs = || {
            sinks
                .iter()
                .find(|s| s.name == "redis")
                .map_or(0, |s| s.stats.book.resyncs.get())
        };
        let before = resyncs();
        admin(&sim, "/admin/faults?conn=all&mute_stream=btcusdt@depth");
        wait_for("the silent depth stream found and the book stale", || {
            stats.silence_repairs.get() >= 1
                && ob_field(&url, "BTCUSDT", "stale") == "1"
                && ob_field(&url, "BTCUSDT", "stale_reason").starts_with("silent")
        });
        assert!(resyncs() > before, "the book is synced again");
        // While the stream stays silent the book stays marked stale: the snapshot taken for
        // the sync is not published as a current book (no diff follows it).
        let found = stats.silent_streams.get();
        wait_for("the depth stream found silent again", || {
            stats.silent_streams.get() >= found + 2
        });
        assert_eq!(ob_field(&url, "BTCUSDT", "stale"), "1");
        assert!(ob_field(&url, "BTCUSDT", "stale_reason").starts_with("silent"));
        admin(&sim, "/admin/faults?conn=all&mute_stream=");
        wait_for("the book live again", || {
            ob_field(&url, "BTCUSDT", "stale") == "0"
        });
    });
    let sidecar = summary.sidecar.as_ref().expect("a sidecar summary");
    assert!(sidecar.silent_streams >= 1, "{sidecar:?}");
    assert!(sidecar.silence_repairs >= 1, "{sidecar:?}");
}

#[test]
fn trades_lost_before_the_market_goes_quiet_are_found_by_the_kline_check() {
    let sim = sim();
    let redis = RedisServer::start();
    let emulator = KinesisEmulator::start();
    let dir = TempDir::new("detect-klines");
    let config = run_config(&sim, |c| {
        c.kinesis = Some(kinesis_settings(&emulator.endpoint(), dir.path()));
        c.redis = Some(RedisConfig {
            consistency_check: Some(Duration::from_secs(1)),
            ..redis_settings(redis.url())
        });
        c.sidecar.stream_silence = None;
        c.sidecar.kline_interval_ms = Some(1_000);
        c.sidecar.kline_lateness = Duration::from_millis(3_000);
    });
    let url = redis.url();
    let mut last = Vec::new();
    let client = test_client(&emulator.endpoint());
    let summary = run_redis(&config, Some(client), |stats, sinks| {
        wait_for("trades written", || {
            written(sinks, "redis") >= 300 && written(sinks, "kinesis") >= 300
        });
        // Intervals that agree with their klines trigger nothing (the simulator's klines
        // match its trades, count and exact volume).
        wait_for("kline checks", || stats.kline_checks.get() >= 6);
        assert_eq!(stats.kline_mismatches.get(), 0, "consistent intervals");
        assert_eq!(stats.requested_ids.get(), 0, "nothing backfilled");
        assert_eq!(stats.detect_failures.get(), 0);
        // The last trades before the market stops are dropped on the wire: no later trade
        // shows a sequence gap.
        let before: Vec<i64> = SYMBOLS.iter().map(|s| published_last(&sim, s)).collect();
        admin(&sim, "/admin/faults?conn=all&drop_trades_pct=100");
        wait_for("trades lost on the wire", || {
            SYMBOLS
                .iter()
                .zip(&before)
                .all(|(s, b)| published_last(&sim, s) >= b + 30)
        });
        admin(&sim, "/admin/rate?actions_per_second=0");
        admin(&sim, "/admin/faults?conn=all&drop_trades_pct=0");
        last = SYMBOLS.iter().map(|s| published_last(&sim, s)).collect();
        wait_for("the lost trades backfilled", || {
            SYMBOLS
                .iter()
                .zip(&last)
                .all(|(s, l)| redis_last(&url, s) == *l)
        });
        // Kinesis gets the same backfill (each sink's tally is judged on its own); the run's
        // shutdown flush writes whatever it still holds.
    });
    let sidecar = summary.sidecar.as_ref().expect("a sidecar summary");
    assert!(sidecar.kline_mismatches >= 2, "both symbols: {sidecar:?}");
    assert_eq!(
        sidecar.trade_gaps, 0,
        "the sequence check saw nothing: {sidecar:?}"
    );
    assert!(sidecar.repaired_ids >= 60, "{sidecar:?}");
    assert_eq!(sidecar.unrepaired_ids, 0, "{sidecar:?}");
    let kinesis = read_kinesis_trades(&emulator);
    for (symbol, last) in SYMBOLS.iter().zip(&last) {
        let ids = redis_trades(&url, symbol);
        assert_eq!(ids.last(), Some(last), "{symbol}");
        assert_exactly_once(&sim, symbol, &ids, "redis");
        assert_eq!(kinesis[*symbol].last(), Some(last), "{symbol}");
        assert_exactly_once(&sim, symbol, &kinesis[*symbol], "kinesis");
    }
}

/// Stream klines the tally cannot judge (1 s klines on the default 1 m tally: not a whole
/// number of its intervals) are counted as unjudged, never as checked, instead of being
/// passed over without a trace.
#[test]
fn json_mode_stream_klines_the_tally_cannot_judge_are_counted_unjudged() {
    let sim = sim();
    let redis = RedisServer::start();
    let config = run_config(&sim, |c| {
        c.endpoint = format!("{}/json", sim.endpoint());
        c.format = FeedFormat::Json;
        c.redis = Some(redis_settings(redis.url()));
        c.klines = KlinesConfig {
            intervals: vec![Interval::of("1s").expect("1s")],
            close_after_ms: 500,
        };
        c.sidecar.stream_silence = None;
        c.sidecar.kline_interval_ms = Some(60_000);
        c.sidecar.kline_lateness = Duration::from_millis(500);
    });
    let summary = run_redis(&config, None, |stats, _sinks| {
        wait_for("unjudged stream klines", || {
            stats.stream_klines_unjudged.get() >= 3
        });
    });
    let sidecar = summary.sidecar.as_ref().expect("a sidecar summary");
    assert!(sidecar.stream_klines_unjudged >= 3, "{sidecar:?}");
    assert_eq!(
        (sidecar.stream_kline_checks, sidecar.stream_kline_mismatches),
        (0, 0),
        "a 1 s kline is never judged on a 1 m tally: {sidecar:?}"
    );
    assert!(summary.stream_klines >= 3, "{summary:?}");
}

/// JSON mode with 1 s klines: the closed klines of Binance's kline streams check what the sink
/// delivered without REST (and the REST kline checks they cover are skipped). While trades
/// flow every check agrees; trades dropped on the wire before the market goes quiet (no later
/// trade shows a sequence gap) are found by the stream kline check, `f ..= L` backfilled, and
/// every trade is in Redis exactly once.
#[test]
fn json_mode_stream_klines_check_the_delivered_trades_and_find_the_lost_ones() {
    let sim = sim();
    let redis = RedisServer::start();
    let config = run_config(&sim, |c| {
        c.endpoint = format!("{}/json", sim.endpoint());
        c.format = FeedFormat::Json;
        c.redis = Some(RedisConfig {
            consistency_check: Some(Duration::from_secs(1)),
            ..redis_settings(redis.url())
        });
        c.klines = KlinesConfig {
            intervals: vec![Interval::of("1s").expect("1s")],
            close_after_ms: 500,
        };
        c.sidecar.stream_silence = None;
        c.sidecar.kline_interval_ms = Some(1_000);
        c.sidecar.kline_lateness = Duration::from_millis(3_000);
    });
    let url = redis.url();
    let mut last = Vec::new();
    let summary = run_redis(&config, None, |stats, sinks| {
        wait_for("trades written", || written(sinks, "redis") >= 300);
        // The simulator's stream klines match its trades: count, exact volume, f and L.
        wait_for("stream kline checks", || {
            stats.stream_kline_checks.get() >= 6 && stats.kline_checks_skipped.get() >= 2
        });
        assert_eq!(
            stats.stream_kline_mismatches.get(),
            0,
            "consistent intervals"
        );
        assert_eq!(stats.requested_ids.get(), 0, "nothing backfilled");
        let before: Vec<i64> = SYMBOLS.iter().map(|s| published_last(&sim, s)).collect();
        admin(&sim, "/admin/faults?conn=all&drop_trades_pct=100");
        wait_for("trades lost on the wire", || {
            SYMBOLS
                .iter()
                .zip(&before)
                .all(|(s, b)| published_last(&sim, s) >= b + 30)
        });
        admin(&sim, "/admin/rate?actions_per_second=0");
        admin(&sim, "/admin/faults?conn=all&drop_trades_pct=0");
        last = SYMBOLS.iter().map(|s| published_last(&sim, s)).collect();
        wait_for("the lost trades backfilled", || {
            SYMBOLS
                .iter()
                .zip(&last)
                .all(|(s, l)| redis_last(&url, s) == *l)
        });
    });
    let sidecar = summary.sidecar.as_ref().expect("a sidecar summary");
    assert!(
        sidecar.stream_kline_mismatches >= 2,
        "both symbols: {sidecar:?}"
    );
    assert_eq!(
        (sidecar.trade_gaps, sidecar.kline_mismatches),
        (0, 0),
        "neither the sequence check nor a REST kline check found them: {sidecar:?}"
    );
    assert!(sidecar.repaired_ids >= 60, "{sidecar:?}");
    assert_eq!(sidecar.unrepaired_ids, 0, "{sidecar:?}");
    assert!(summary.stream_klines >= 6, "{summary:?}");
    assert_eq!(summary.json_malformed, 0, "{summary:?}");
    let json = serde_json::to_value(&summary).expect("the summary serializes");
    for field in [
        "kline_checks_skipped",
        "stream_kline_checks",
        "stream_kline_mismatches",
        "stream_klines_unjudged",
    ] {
        assert!(json["sidecar"][field].is_u64(), "sidecar.{field} in {json}");
    }
    for (symbol, last) in SYMBOLS.iter().zip(&last) {
        let ids = redis_trades(&url, symbol);
        assert_eq!(ids.last(), Some(last), "{symbol}");
        assert_exactly_once(&sim, symbol, &ids, "redis");
    }
}
