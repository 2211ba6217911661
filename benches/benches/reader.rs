//! Reader throughput and latency: how many frames per second one pinned reader thread sustains
//! from the simulator over loopback (plain ws), and its wire-to-queue latency percentiles.
//!
//! 1. Starts the simulator in-process at a high order-flow rate and records `READER_FRAMES`
//!    frames of every stream of two symbols with `hotpath record`'s code (unique, consecutive
//!    ids, real SBE).
//! 2. Serves the recording with `hotpath replay`'s code as fast as possible.
//! 3. Runs the feed (one reader pinned to the last core, one counting consumer) against it and
//!    measures frames per second from the first frame to the last, and the reader's
//!    receive-to-enqueue latency (hdrhistogram).
//!
//! 4. Does it again in interleaved rounds (`READER_SCRAPE_ROUNDS`, default 2), each without
//!    and then with a thread GETting the control plane's `/metrics` every 100 ms, all against
//!    the same recording in one process: what scraping costs the reader.
//!
//! 5. Does it again in interleaved rounds (`READER_COPY_ROUNDS`, default 2), each with
//!    `readers.copy_frames = false` (frames queued as slices of the receive buffer) and then
//!    `true` (the default: copied into the reader's frame pool): what the copy costs.
//!
//! `cargo bench -p hotpath-benches --bench reader` prints one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hotpath::config::RunConfig;
use hotpath::sim::config::SimConfig;
use hotpath::sim::record::{Pace, RecordOptions, ReplayOptions, record, replay};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let frames = setting("READER_FRAMES", 1_000_000);
    let dir = std::env::temp_dir().join(format!("hotpath-reader-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let file = dir.join("frames.rec");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let symbols = vec!["BTCUSDT".to_string(), "ETHUSDT".to_string()];
    let streams: Vec<String> = symbols
        .iter()
        .flat_map(|s| {
            ["trade", "bestBidAsk", "depth", "depth20"].map(|k| format!("{}@{k}", s.to_lowercase()))
        })
        .collect();

    let replay_addr = runtime.block_on(async {
        let mut config = SimConfig::default();
        config.exchange.symbols = symbols.clone();
        config.exchange.actions_per_second = 300_000.0;
        config.exchange.journal_max = 10_000;
        let sim = hotpath::sim::server::start(config)
            .await
            .expect("the simulator starts");
        let recorded = record(RecordOptions {
            url: format!("ws://{}/stream?streams={}", sim.addr, streams.join("/")),
            api_key: Some("bench".into()),
            trust_pem: None,
            out: file.clone(),
            duration: Some(Duration::from_secs(120)),
            max_frames: Some(frames),
        })
        .await
        .expect("recorded");
        sim.shutdown();
        assert_eq!(
            recorded.frames, frames,
            "the recording holds every frame asked for"
        );
        let handle = replay(ReplayOptions {
            file: file.clone(),
            listen: "127.0.0.1:0".parse().expect("an address"),
            pace: Pace::AsFastAsPossible,
            repeat: false,
        })
        .await
        .expect("the replayer starts");
        let addr = handle.addr;
        std::mem::forget(handle);
        addr
    });

    let source_only = runtime.block_on(source_rate(replay_addr, frames));
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let mut config = RunConfig {
        endpoint: format!("ws://{replay_addr}"),
        symbols,
        ..RunConfig::default()
    };
    config.readers.cores = vec![cores - 1];
    config.readers.ring_capacity = 1 << 20;
    config.http.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    config.validate().expect("a valid config");
    // Everything but the reader stays off the reader's core (the control plane's thread and
    // the scraper inherit this), as deploy/hotpath.service's CPUAffinity arranges.
    if cores > 1 {
        core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    }
    // Interleaved rounds in one process against the same recording: without a scraper, then
    // with one GETting /metrics every 100 ms, and again.
    let rounds = setting("READER_SCRAPE_ROUNDS", 2);
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..rounds {
        without.push(measure(&config, frames, false));
        with.push(measure(&config, frames, true));
    }
    let mut shared = Vec::new();
    let mut copied = Vec::new();
    for _ in 0..setting("READER_COPY_ROUNDS", 2) {
        let mut config = config.clone();
        config.readers.copy_frames = false;
        shared.push(measure(&config, frames, false));
        config.readers.copy_frames = true;
        copied.push(measure(&config, frames, false));
    }
    std::fs::remove_dir_all(&dir).expect("cleaned up");
    let first = &without[0];
    println!(
        "{}",
        serde_json::json!({
            "bench": "reader",
            "frames": first.frames,
            "frames_per_second": first.frames_per_second.round(),
            "seconds": first.seconds,
            "wire_to_queue_ns": first.latency,
            "duplicates": first.duplicates,
            "gaps": first.gaps,
            "queue_drops": first.queue_drops,
            "reader_core": cores - 1,
            "source_alone_frames_per_second": source_only.round(),
            "metrics_scrape_every_100ms": {
                "without_frames_per_second": without.iter().map(|m| m.frames_per_second.round()).collect::<Vec<_>>(),
                "with_frames_per_second": with.iter().map(|m| m.frames_per_second.round()).collect::<Vec<_>>(),
                "without_p99_ns": without.iter().map(|m| m.latency["p99"].clone()).collect::<Vec<_>>(),
                "with_p99_ns": with.iter().map(|m| m.latency["p99"].clone()).collect::<Vec<_>>(),
                "scrapes": with.iter().map(|m| m.scrapes).collect::<Vec<_>>(),
            },
            "copy_frames": {
                "false_frames_per_second": shared.iter().map(|m| m.frames_per_second.round()).collect::<Vec<_>>(),
                "true_frames_per_second": copied.iter().map(|m| m.frames_per_second.round()).collect::<Vec<_>>(),
                "false_p50_ns": shared.iter().map(|m| m.latency["p50"].clone()).collect::<Vec<_>>(),
                "true_p50_ns": copied.iter().map(|m| m.latency["p50"].clone()).collect::<Vec<_>>(),
                "false_p99_ns": shared.iter().map(|m| m.latency["p99"].clone()).collect::<Vec<_>>(),
                "true_p99_ns": copied.iter().map(|m| m.latency["p99"].clone()).collect::<Vec<_>>(),
            },
        })
    );
}

/// One measured run of the feed.
struct Measured {
    frames: u64,
    frames_per_second: f64,
    seconds: f64,
    latency: serde_json::Value,
    duplicates: u64,
    gaps: u64,
    queue_drops: u64,
    /// Successful `/metrics` scrapes during the run.
    scrapes: u64,
}

/// Runs the feed (and its control plane) against the replayer until it has `frames` frames;
/// with `scrape`, a thread GETs `/metrics` every 100 ms meanwhile.
fn measure(config: &RunConfig, frames: u64, scrape: bool) -> Measured {
    let key = config
        .api_key_from(|_| Some("bench".into()))
        .expect("a key");
    let mut measured = None;
    let summary = hotpath::feed::run::run(config, key, |feed, sinks| {
        let control = hotpath::control::start(config, feed, sinks, None)
            .expect("the control plane starts")
            .expect("http is on");
        let addr = control.addr().expect("http is on");
        let stop = Arc::new(AtomicBool::new(false));
        let scraper = scrape.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || scrape_until(addr, &stop))
        });
        let stats = &feed.stats;
        let total = || stats.iter().map(|s| s.frames.get()).sum::<u64>();
        let deadline = Instant::now() + Duration::from_secs(120);
        while total() == 0 && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        let (start, at_start) = (Instant::now(), total());
        while total() < frames && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let scrapes = scraper.map_or(0, |s| s.join().expect("the scraper"));
        measured = Some((total() - at_start, elapsed, scrapes));
        control.stop();
    })
    .expect("the feed runs");
    let (counted, elapsed, scrapes) = measured.expect("measured");
    let latency = &summary.latency_ns["wire_to_queue"];
    Measured {
        frames: summary.frames,
        frames_per_second: counted as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
        latency: serde_json::json!({ "p50": latency.p50, "p99": latency.p99, "p999": latency.p999, "max": latency.max }),
        duplicates: summary.duplicates,
        gaps: summary.gaps.count,
        queue_drops: summary.queue_drops,
        scrapes,
    }
}

/// GETs `/metrics` every 100 ms (like a scraper at a 100 ms interval) until `stop`; returns how
/// many answered 200.
fn scrape_until(addr: std::net::SocketAddr, stop: &AtomicBool) -> u64 {
    use std::io::{Read, Write};
    let mut ok = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                ok += 1;
            }
        }
        next += Duration::from_millis(100);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    ok
}

/// Frames per second a bare tokio-tungstenite client receives from the replayer: the source's
/// own ceiling, so the reader's figure can be read against it.
async fn source_rate(addr: std::net::SocketAddr, frames: u64) -> f64 {
    use futures_util::StreamExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connects");
    let mut count = 0u64;
    let mut start = None;
    while let Some(Ok(message)) = ws.next().await {
        if message.is_binary() {
            start.get_or_insert_with(Instant::now);
            count += 1;
            if count == frames {
                break;
            }
        }
    }
    count as f64 / start.map_or(1.0, |s| s.elapsed().as_secs_f64())
}
