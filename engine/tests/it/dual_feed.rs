//! `[feed] format = "dual"` end to end against the simulator: SBE is the primary feed and the
//! simulator's JSON streams the fallback. With the key refused from the start every trade
//! arrives over JSON; with the SBE streams taken down mid-run (`/admin/sbe?state=down`, which
//! also drops the open SBE connections) the connections move to JSON, and when SBE is back
//! they return to it make-before-break. Each time, every trade lands in a real `redis-server`
//! exactly once and in order (what the switch missed is repaired by the sidecar).

use std::sync::Arc;
use std::time::Duration;

use hotpath::config::{FeedFormat, RunConfig};
use hotpath::feed::run::{self, RunOptions, Summary};
use hotpath::feed::stats::ReaderStats;

use crate::feed::{Sim, key, sim_get};
use crate::servers::RedisServer;
use crate::sinks::{
    FLUSH_PATIENCE, SYMBOLS, assert_exactly_once, redis_settings, redis_trades, run_config, sim,
    wait_for, written,
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
        admin(&sim, "/admin/sbe?state=up");
        wait_for("the return to SBE", || {
            sum(stats, |s| s.returns_to_sbe.get()) >= 1
        });
        let back = written(sinks, "redis");
        wait_for("trades over SBE again", || {
            written(sinks, "redis") >= back + 300
        });
    });
    assert!(summary.fallbacks_to_json >= 1, "{summary:?}");
    assert!(summary.returns_to_sbe >= 1, "{summary:?}");
    assert_every_trade_once(&sim, &redis, &summary);
}
