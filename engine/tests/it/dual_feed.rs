//! `[feed] format = "dual"` end to end against the simulator: SBE is the primary feed and the
//! simulator's JSON streams the fallback. With the key refused from the start every trade
//! arrives over JSON; with the SBE streams taken down mid-run (`/admin/sbe?state=down`, which
//! also drops the open SBE connections) the connections move to JSON, and when SBE is back
//! they return to it make-before-break. Each time, every trade lands in a real `redis-server`
//! exactly once and in order (what the switch missed is repaired by the sidecar). On JSON the
//! kline streams are subscribed too, and their closed klines check the delivered trades.

use std::sync::Arc;
use std::time::Duration;

use hotpath::config::{FeedFormat, KlinesConfig, RunConfig};
use hotpath::feed::run::{self, RunOptions, Summary};
use hotpath::feed::stats::ReaderStats;
use hotpath::kline::Interval;

use crate::feed::{Sim, key, sim_get};
use crate::servers::RedisServer;
use crate::sinks::{
    FLUSH_PATIENCE, SYMBOLS, assert_book_matches, assert_exactly_once, book_exact, hash,
    redis_settings, redis_trades, run_config, sim, wait_for, written,
};

fn admin(sim: &Sim, path: &str) {
    let (status, body) = sim_get(sim.handle().addr, path);
    assert_eq!(status, 200, "{path}: {body}");
}

fn dual_config(sim: &Sim, redis: &RedisServer) -> RunConfig {
    run_config(sim, |c| {
        c.format = FeedFormat::Dual;
        c.json_endpoint = format!("{}/json", sim.endpoint());
        c.dual.fallback_after = 2;
        c.dual.probe_every = Duration::from_secs(1);
        c.redis = Some(redis_settings(redis.url()));
    })
}

fn sum(stats: &[Arc<ReaderStats>], counter: impl Fn(&ReaderStats) -> u64) -> u64 {
    stats.iter().map(|s| counter(s)).sum()
}

/// Runs `config`, calling `script` with the readers' counters and the sinks once it runs.
fn run_dual(
    config: &RunConfig,
    script: impl FnOnce(&[Arc<ReaderStats>], &[run::SinkHandle]),
) -> Summary {
    run::run_with(
        config,
        key(config),
        RunOptions {
            kinesis_client: None,
            sink_flush_timeout: Some(FLUSH_PATIENCE),
        },
        |feed, sinks| script(&feed.stats, sinks),
    )
    .expect("the run succeeds")
}

/// Waits until every symbol's Redis book is live (`stale` 0) and equals the exchange's book
/// at its update id: a switch of wire lost no depth update unnoticed.
fn wait_for_books_exact(sim: &Sim, redis: &RedisServer, when: &str) {
    wait_for(&format!("the books fresh and exact {when}"), || {
        SYMBOLS.iter().all(|symbol| {
            let ob = hash(&redis.url(), &format!("ob:{{{symbol}}}"));
            ob.get("stale").map(String::as_str) == Some("0")
                && book_exact(sim, &ob, symbol, 20).is_ok()
        })
    });
}

fn assert_every_trade_once(sim: &Sim, redis: &RedisServer, summary: &Summary) {
    let s = &summary.sinks["redis"];
    assert!(s.flushed, "{s:?}");
    assert_eq!(
        (s.dead_lettered, s.dropped, s.unrepaired),
        (0, 0, 0),
        "{s:?}"
    );
    for symbol in SYMBOLS {
        assert_exactly_once(sim, symbol, &redis_trades(&redis.url(), symbol), "redis");
        assert_book_matches(sim, &redis.url(), symbol, 20);
    }
}

#[test]
fn a_refused_key_runs_on_json_and_every_trade_lands_once() {
    let sim = sim();
    admin(&sim, "/admin/sbe?state=refuse");
    let redis = RedisServer::start();
    let config = dual_config(&sim, &redis);
    let summary = run_dual(&config, |stats, sinks| {
        wait_for("trades over JSON", || written(sinks, "redis") >= 400);
        assert!(sum(stats, |s| s.fallbacks_to_json.get()) >= 1);
    });
    assert!(summary.fallbacks_to_json >= 1, "{summary:?}");
    assert_eq!(
        summary.returns_to_sbe, 0,
        "the key stays refused: {summary:?}"
    );
    assert_every_trade_once(&sim, &redis, &summary);
}

#[test]
fn sbe_down_mid_run_moves_to_json_and_back_without_losing_a_trade() {
    let sim = sim();
    let redis = RedisServer::start();
    let config = dual_config(&sim, &redis);
    let summary = run_dual(&config, |stats, sinks| {
        wait_for("trades over SBE", || written(sinks, "redis") >= 300);
        assert_eq!(sum(stats, |s| s.fallbacks_to_json.get()), 0);
        admin(&sim, "/admin/sbe?state=down");
        wait_for("the move to JSON", || {
            sum(stats, |s| s.fallbacks_to_json.get()) >= 1
        });
        let on_json = written(sinks, "redis");
        wait_for("trades over JSON", || {
            written(sinks, "redis") >= on_json + 300
        });
        wait_for_books_exact(&sim, &redis, "on JSON");
        admin(&sim, "/admin/sbe?state=up");
        wait_for("the return to SBE", || {
            sum(stats, |s| s.returns_to_sbe.get()) >= 1
        });
        let back = written(sinks, "redis");
        wait_for("trades over SBE again", || {
            written(sinks, "redis") >= back + 300
        });
        wait_for_books_exact(&sim, &redis, "back on SBE");
    });
    assert!(summary.fallbacks_to_json >= 1, "{summary:?}");
    assert!(summary.returns_to_sbe >= 1, "{summary:?}");
    assert_every_trade_once(&sim, &redis, &summary);
}

/// Dual mode on JSON (the key refused) with 1 s klines: the JSON connections subscribe the kline
/// streams too, and their closed klines check the delivered trades (all agree) in place of the
/// REST kline checks they cover.
#[test]
fn on_json_the_kline_streams_check_the_delivered_trades() {
    let sim = sim();
    admin(&sim, "/admin/sbe?state=refuse");
    let redis = RedisServer::start();
    let mut config = dual_config(&sim, &redis);
    config.klines = KlinesConfig {
        intervals: vec![Interval::of("1s").expect("1s")],
        close_after_ms: 500,
    };
    config.sidecar.kline_interval_ms = Some(1_000);
    config.sidecar.kline_lateness = Duration::from_millis(2_000);
    if let Some(redis) = config.redis.as_mut() {
        redis.consistency_check = Some(Duration::from_secs(1));
    }
    let summary = run::run_with(
        &config,
        key(&config),
        RunOptions {
            kinesis_client: None,
            sink_flush_timeout: Some(FLUSH_PATIENCE),
        },
        |feed, _| {
            let sidecar = feed.sidecar.clone().expect("the sidecar runs");
            wait_for("stream kline checks on JSON", || {
                sidecar.stream_kline_checks.get() >= 4
            });
        },
    )
    .expect("the run succeeds");
    let sidecar = summary.sidecar.as_ref().expect("a sidecar summary");
    assert!(summary.fallbacks_to_json >= 1, "{summary:?}");
    assert!(summary.stream_klines >= 4, "{summary:?}");
    assert_eq!(
        (sidecar.stream_kline_mismatches, sidecar.requested_ids),
        (0, 0),
        "{sidecar:?}"
    );
    assert!(sidecar.kline_checks_skipped >= 1, "{sidecar:?}");
    assert_every_trade_once(&sim, &redis, &summary);
}
