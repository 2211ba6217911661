//! The sinks end to end, on real servers: a `redis-server` and the kinesalite Kinesis emulator
//! started by this bench (scripts/servers.sh installs them; `HOTPATH_REDIS_SERVER` and
//! `HOTPATH_KINESALITE` point at them).
//!
//! 1. Frame receipt to Redis write acknowledged (p50/p99/p99.9) at about 10k and 100k messages
//!    per second from the simulator (its order-flow rate set to reach them; the measured rate
//!    is printed), Redis sink alone.
//! 2. Records per second into the emulator (Kinesis sink alone, the 100k source).
//! 3. Reader throughput with and without both sinks attached: a recording of
//!    `SINKS_REPLAY_FRAMES` frames replayed as fast as possible.
//!
//! `cargo bench -p hotpath-benches --bench sinks` prints one JSON line per measurement.

use std::time::{Duration, Instant};

use hotpath::config::RunConfig;
use hotpath::config::{KinesisConfig, RedisConfig};
use hotpath::feed::run::{RunOptions, Summary};
use hotpath::sim::config::SimConfig;
use hotpath::sim::record::{Pace, RecordOptions, ReplayOptions, record, replay};
use hotpath_benches::servers::{kinesis_client, setting, start_kinesalite, start_redis};

fn feed_config(endpoint: String) -> RunConfig {
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let mut config = RunConfig {
        endpoint,
        symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
        ..RunConfig::default()
    };
    config.readers.cores = vec![cores - 1];
    config.readers.ring_capacity = 1 << 20;
    config
}

/// Runs `config` for `seconds` (or until `frames` arrived) and returns the summary and the
/// frames per second measured from the first frame.
fn run_for(
    config: &RunConfig,
    client: Option<aws_sdk_kinesis::Client>,
    seconds: u64,
    frames: Option<u64>,
) -> (Summary, f64) {
    config.validate().expect("a valid config");
    let key = config
        .api_key_from(|_| Some("bench".into()))
        .expect("a key");
    let mut measured = (0, Duration::ZERO);
    let summary = hotpath::feed::run::run_with(
        config,
        key,
        RunOptions {
            kinesis_client: client,
            ..RunOptions::default()
        },
        |feed, _| {
            let total = || feed.stats.iter().map(|s| s.frames.get()).sum::<u64>();
            let deadline = Instant::now() + Duration::from_secs(120);
            while total() == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(100));
            }
            let (start, at_start) = (Instant::now(), total());
            let end = start + Duration::from_secs(seconds);
            while Instant::now() < end && frames.is_none_or(|f| total() < f) {
                std::thread::sleep(Duration::from_millis(1));
            }
            measured = (total() - at_start, start.elapsed());
        },
    )
    .expect("the run succeeds");
    let rate = measured.0 as f64 / measured.1.as_secs_f64();
    (summary, rate)
}

fn redis_sink(url: &str, rest: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_string(),
        rest_endpoint: Some(rest.to_string()),
        ..RedisConfig::default()
    }
}

fn kinesis_sink(endpoint: &str, dir: &std::path::Path) -> KinesisConfig {
    KinesisConfig {
        endpoint_url: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        create_streams: true,
        dead_letter_path: dir.join("dead-letters.jsonl"),
        ..KinesisConfig::default()
    }
}

fn main() {
    let seconds = setting("SINKS_SECONDS", 10);
    let replay_frames = setting("SINKS_REPLAY_FRAMES", 500_000);
    let dir = std::env::temp_dir().join(format!("hotpath-sinks-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let (_redis, redis_url) = start_redis();
    let (_kinesalite, kinesis_endpoint) = start_kinesalite();

    // 1 and 2: the simulator at two order-flow rates (messages ~ 1.3 x actions).
    for (target, actions) in [(10_000u64, 7_500.0), (100_000, 75_000.0)] {
        let sim = runtime.block_on(async {
            let mut config = SimConfig::default();
            config.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
            config.exchange.actions_per_second = actions;
            hotpath::sim::server::start(config)
                .await
                .expect("the simulator starts")
        });
        let rest = format!("http://{}", sim.addr);
        let mut config = feed_config(format!("ws://{}", sim.addr));
        config.redis = Some(redis_sink(&redis_url, &rest));
        let (summary, rate) = run_for(&config, None, seconds, None);
        let redis = &summary.sinks["redis"];
        let l = &redis.receipt_to_ack_ns;
        println!(
            "{}",
            serde_json::json!({
                "bench": "receipt_to_redis_ack",
                "target_msgs_per_s": target,
                "msgs_per_s": rate.round(),
                "receipt_to_redis_ack_us": {
                    "p50": l.p50 as f64 / 1e3, "p99": l.p99 as f64 / 1e3,
                    "p999": l.p999 as f64 / 1e3, "max": l.max as f64 / 1e3,
                },
                "trades_written": redis.written,
                "pipelines": redis.requests,
                "queue_drops": summary.queue_drops,
                "gaps": summary.gaps.count,
            })
        );
        if target == 100_000 {
            let mut config = feed_config(format!("ws://{}", sim.addr));
            config.kinesis = Some(kinesis_sink(&kinesis_endpoint, &dir));
            let client = kinesis_client(&kinesis_endpoint);
            let (summary, rate) = run_for(&config, Some(client), seconds, None);
            let k = &summary.sinks["kinesis"];
            println!(
                "{}",
                serde_json::json!({
                    "bench": "kinesis_emulator",
                    "msgs_per_s": rate.round(),
                    "records_per_s": (k.written as f64 / seconds as f64).round(),
                    "records_written": k.written,
                    "put_records_requests": k.requests,
                    "retried": k.retried,
                    "dead_lettered": k.dead_lettered,
                    "receipt_to_ack_ms_p99": k.receipt_to_ack_ns.p99 as f64 / 1e6,
                })
            );
        }
        sim.shutdown();
    }

    // 3: reader throughput with and without sinks, from a recording replayed flat out.
    let file = dir.join("frames.rec");
    let replay_addr = runtime.block_on(async {
        let mut config = SimConfig::default();
        config.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
        config.exchange.actions_per_second = 300_000.0;
        let sim = hotpath::sim::server::start(config)
            .await
            .expect("the simulator starts");
        let streams = ["btcusdt", "ethusdt"]
            .iter()
            .flat_map(|s| ["trade", "bestBidAsk", "depth", "depth20"].map(|k| format!("{s}@{k}")))
            .collect::<Vec<_>>()
            .join("/");
        record(RecordOptions {
            url: format!("ws://{}/stream?streams={streams}", sim.addr),
            api_key: Some("bench".into()),
            trust_pem: None,
            out: file.clone(),
            duration: Some(Duration::from_secs(120)),
            max_frames: Some(replay_frames),
        })
        .await
        .expect("recorded");
        sim.shutdown();
        let handle = replay(ReplayOptions {
            file: file.clone(),
            listen: "127.0.0.1:0".parse().expect("an address"),
            pace: Pace::AsFastAsPossible,
            repeat: true,
        })
        .await
        .expect("the replayer starts");
        let addr = handle.addr;
        std::mem::forget(handle);
        addr
    });
    let mut rates = Vec::new();
    for with_sinks in [false, true] {
        let mut config = feed_config(format!("ws://{replay_addr}"));
        let client = with_sinks.then(|| kinesis_client(&kinesis_endpoint));
        if with_sinks {
            config.redis = Some(redis_sink(&redis_url, &format!("http://{replay_addr}")));
            config.kinesis = Some(kinesis_sink(&kinesis_endpoint, &dir));
        }
        let (summary, rate) = run_for(&config, client, 120, Some(replay_frames));
        rates.push(rate);
        println!(
            "{}",
            serde_json::json!({
                "bench": "reader_throughput",
                "sinks": if with_sinks { "redis+kinesis" } else { "none" },
                "frames_per_s": rate.round(),
                "queue_drops": summary.queue_drops,
                "sinks_summary": summary.sinks,
            })
        );
    }
    println!(
        "{}",
        serde_json::json!({"bench": "reader_throughput_ratio", "with_over_without": rates[1] / rates[0]})
    );
    let _ = std::fs::remove_dir_all(&dir);
}
