//! Simulator load: how many frames per second `hotpath sim` pushes over loopback.
//!
//! Starts the simulator in-process (plain ws), connects `SIM_LOAD_CLIENTS` plain
//! tokio-tungstenite clients to every stream of every symbol, counts the frames they receive
//! over `SIM_LOAD_SECONDS` after a one-second warm-up, and prints one JSON line with the total
//! frames per second. The order-flow rate (`SIM_LOAD_RATE` actions per second per symbol) and
//! symbol count (`SIM_LOAD_SYMBOLS`) set how much the market produces; every client receives
//! every frame, so the server pushes clients x frames produced.
//!
//! `cargo bench -p hotpath-benches --bench sim_load`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hotpath::sim::config::SimConfig;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = setting("SIM_LOAD_SECONDS", 5.0);
    let clients = setting("SIM_LOAD_CLIENTS", 2.0) as usize;
    let rate = setting("SIM_LOAD_RATE", 150_000.0);
    let symbols = setting("SIM_LOAD_SYMBOLS", 2.0) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let mut config = SimConfig::default();
        let names = [
            "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT",
        ];
        config.exchange.symbols = names
            .iter()
            .take(symbols.clamp(1, names.len()))
            .map(|s| s.to_string())
            .collect();
        config.exchange.actions_per_second = rate;
        config.exchange.journal_max = 100_000;
        let streams: Vec<String> = config
            .exchange
            .symbols
            .iter()
            .flat_map(|s| {
                ["trade", "bestBidAsk", "depth", "depth20"]
                    .map(|k| format!("{}@{k}", s.to_lowercase()))
            })
            .collect();
        let sim = hotpath::sim::server::start(config)
            .await
            .expect("the simulator starts");
        let counted = Arc::new(AtomicU64::new(0));
        let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..clients {
            let url = format!("ws://{}/stream?streams={}", sim.addr, streams.join("/"));
            let mut request = url.into_client_request().expect("a URL");
            request
                .headers_mut()
                .insert("X-MBX-APIKEY", "load".parse().expect("a header"));
            let (mut ws, _) = tokio_tungstenite::connect_async(request)
                .await
                .expect("connects");
            let (counted, counting) = (counted.clone(), counting.clone());
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_binary() && counting.load(Ordering::Relaxed) {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        counting.store(true, Ordering::Relaxed);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let frames = counted.load(Ordering::Relaxed);
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "bench": "sim_load",
                "clients": clients,
                "symbols": symbols,
                "actions_per_second_per_symbol": rate,
                "seconds": elapsed,
                "frames": frames,
                "frames_per_second": (frames as f64 / elapsed).round(),
            })
        );
        sim.shutdown();
    });
}
