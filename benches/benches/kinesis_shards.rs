//! Records per second the Kinesis writer moves into streams of 1 and of 4 shards, against the
//! kinesalite emulator (scripts/servers.sh's `ensure_kinesalite`; `HOTPATH_KINESALITE` points at
//! its cli.js), the simulator feeding 8 symbols (two in each quarter of the hash key space) far
//! faster than one lane can send, so the writer is the bottleneck.
//!
//! kinesalite answers in about a millisecond and has no per-shard limit, unlike Kinesis (tens of
//! milliseconds away, 1000 records/s and 1 MiB/s per shard). So each shard count also runs
//! behind a proxy that delays every byte by `SHARDS_LATENCY_MS` (default 20) each way, which is
//! where one request in flight per shard, rather than per stream, pays.
//!
//! `cargo bench -p hotpath-benches --bench kinesis_shards` prints one JSON line per run and
//! the 4-over-1 ratios. `SHARDS_SECONDS` (10) is each run's window; `SHARDS_REPEAT` (2) how many
//! times the 1- and 4-shard runs alternate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hotpath::config::{KinesisConfig, RunConfig};
use hotpath::feed::run::RunOptions;
use hotpath::sim::config::SimConfig;
use hotpath_benches::servers::{Server, kinesalite, kinesis_client as client, setting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SYMBOLS: [&str; 8] = [
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "TRXUSDT",
];
const STREAMS: [&str; 3] = ["bench-trade", "bench-bbo", "bench-depth"];

fn start_kinesalite() -> (Server, SocketAddr) {
    // Three streams of 4 shards pass kinesalite's default account limit of 10.
    let (server, port) = kinesalite(&["--shardLimit", "100"]);
    (server, SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn create_streams(client: &aws_sdk_kinesis::Client, shards: i32) {
    for name in STREAMS {
        // A just-started kinesalite may take a moment to answer: retried, bounded.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
        {
            assert!(Instant::now() < deadline, "CreateStream {name}: {e:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            // A transient error is one more round, like a stream not ACTIVE yet.
            let summary = client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await;
            let active = summary.is_ok_and(|summary| {
                summary
                    .stream_description_summary()
                    .is_some_and(|s| s.stream_status().as_str() == "ACTIVE")
            });
            if active {
                break;
            }
            assert!(Instant::now() < deadline, "{name} not ACTIVE");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Copies `from` to `to`, each chunk leaving `delay` after it arrived (a fixed latency, not a
/// bandwidth limit).
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until((at + delay).into()).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A proxy to `upstream` adding `delay` each way; returns its endpoint.
async fn latency_proxy(upstream: SocketAddr, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = (down.set_nodelay(true), up.set_nodelay(true));
            let (down_read, down_write) = down.into_split();
            let (up_read, up_write) = up.into_split();
            tokio::spawn(delayed_copy(down_read, up_write, delay));
            tokio::spawn(delayed_copy(up_read, down_write, delay));
        }
    });
    format!("http://{addr}")
}

/// One run: records the writer delivered per second over `seconds`, once it is busy.
fn measure(sim: SocketAddr, endpoint: &str, seconds: u64, dir: &std::path::Path) -> (f64, u64) {
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let mut config = RunConfig {
        endpoint: format!("ws://{sim}"),
        symbols: SYMBOLS.iter().map(|s| s.to_string()).collect(),
        ..RunConfig::default()
    };
    config.readers.cores = vec![cores - 1];
    config.readers.ring_capacity = 1 << 20;
    config.kinesis = Some(KinesisConfig {
        endpoint_url: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        stream_trade: STREAMS[0].into(),
        stream_best_bid_ask: STREAMS[1].into(),
        stream_depth: STREAMS[2].into(),
        heartbeat_interval: None,
        dead_letter_path: dir.join("dead-letters.jsonl"),
        ..KinesisConfig::default()
    });
    config.validate().expect("a valid config");
    let key = config
        .api_key_from(|_| Some("bench".into()))
        .expect("a key");
    let mut measured = (0.0, 0);
    hotpath::feed::run::run_with(
        &config,
        key,
        RunOptions {
            kinesis_client: Some(client(endpoint)),
            // The backlog left at the end is not measured: dead-lettered quickly.
            sink_flush_timeout: Some(Duration::from_secs(1)),
        },
        |_, sinks| {
            let written = || sinks[0].stats.written.get();
            let requests = || sinks[0].stats.requests.get();
            let deadline = Instant::now() + Duration::from_secs(60);
            while written() == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            // A second to fill the lanes, then the window.
            std::thread::sleep(Duration::from_secs(1));
            let (start, at_start, req_start) = (Instant::now(), written(), requests());
            std::thread::sleep(Duration::from_secs(seconds));
            let rate = (written() - at_start) as f64 / start.elapsed().as_secs_f64();
            measured = (rate, requests() - req_start);
        },
    )
    .expect("the run succeeds");
    measured
}

fn main() {
    let seconds = setting("SHARDS_SECONDS", 10);
    let repeat = setting("SHARDS_REPEAT", 2);
    let latency = Duration::from_millis(setting("SHARDS_LATENCY_MS", 20));
    let dir = std::env::temp_dir().join(format!("hotpath-shards-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let sim = runtime.block_on(async {
        let mut config = SimConfig::default();
        config.exchange.symbols = SYMBOLS.iter().map(|s| s.to_string()).collect();
        config.exchange.actions_per_second = 5_000.0;
        hotpath::sim::server::start(config)
            .await
            .expect("the simulator starts")
    });
    for delay in [Duration::ZERO, latency] {
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..repeat {
            for (i, shards) in [1, 4].into_iter().enumerate() {
                // A fresh emulator each run: kinesalite slows down as it fills.
                let (_kinesalite, addr) = start_kinesalite();
                let direct = format!("http://{addr}");
                runtime.block_on(create_streams(&client(&direct), shards));
                let endpoint = if delay.is_zero() {
                    direct
                } else {
                    runtime.block_on(latency_proxy(addr, delay))
                };
                let (rate, requests) = measure(sim.addr, &endpoint, seconds, &dir);
                rates[i].push(rate);
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "kinesis_shards",
                        "shards": shards,
                        "added_latency_ms": delay.as_millis() as u64,
                        "records_per_s": rate.round(),
                        "put_records_per_s": (requests as f64 / seconds as f64).round(),
                    })
                );
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "{}",
            serde_json::json!({
                "bench": "kinesis_shards_ratio",
                "added_latency_ms": delay.as_millis() as u64,
                "four_over_one": mean(&rates[1]) / mean(&rates[0]),
            })
        );
    }
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
