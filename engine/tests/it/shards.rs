//! Scaling beyond one machine: two `hotpath run` processes with `--shard 0/2` and
//! `--shard 1/2` against one simulator, writing to one real `redis-server` and one kinesalite.
//! Together they carry every symbol exactly once (each instance's `/pairs` is its shard's
//! share), every trade reaches Redis and Kinesis exactly once (a symbol written by both would
//! show as duplicate ids in Kinesis, which has no dedupe), and an instance refuses a symbol of
//! the other shard over `POST /pairs`, naming the owner.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotpath::shard::Shard;
use serde_json::Value;

use crate::control::{get_json, http};
use crate::feed::Sim;
use crate::servers::{KinesisEmulator, RedisServer, TempDir, free_port};
use crate::sinks::{TRADE_STREAM, assert_exactly_once, read_kinesis_trades, redis_trades, runtime};

const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"];
const TOKEN: &str = "shard-test-token";
/// How long each instance runs.
const RUN_SECONDS: u64 = 8;
/// A bound on the whole run (start, run, flush), not a pace.
const PATIENCE: Duration = Duration::from_secs(120);

/// One instance's configuration file: the whole symbol list (the shard picks its share), the
/// trade stream, both sinks, the control plane on its own port with pair changes on.
fn instance_config(dir: &Path, name: &str, sim: &Sim, redis: &str, kinesis: &str, port: u16) {
    let symbols: Vec<String> = SYMBOLS.iter().map(|s| format!("{s:?}")).collect();
    let text = format!(
        r#"[binance]
endpoint = "{endpoint}"
symbols = [{symbols}]
streams = ["trade"]
[readers]
cores = [0]
[kinesis]
enabled = true
endpoint_url = "{kinesis}"
region = "us-east-1"
linger_ms = 50
heartbeat_interval_s = 0
dead_letter_path = "{dir}/{name}-kinesis-dead.jsonl"
[redis]
enabled = true
url = "{redis}"
trades_maxlen = 1000000
dead_letter_path = "{dir}/{name}-redis-dead.jsonl"
[http]
listen = "127.0.0.1:{port}"
allow_pair_changes = true
token_env = "SHARD_TEST_TOKEN"
"#,
        endpoint = sim.endpoint(),
        symbols = symbols.join(", "),
        dir = dir.display(),
    );
    std::fs::write(dir.join(format!("{name}.toml")), text).expect("write the config");
}

fn start_instance(dir: &Path, name: &str, shard: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("a log file");
    Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args(["run", "--config"])
        .arg(dir.join(format!("{name}.toml")))
        .args(["--shard", shard, "--duration", &RUN_SECONDS.to_string()])
        .env("BINANCE_API_KEY", "shard-test-key")
        .env("SHARD_TEST_TOKEN", TOKEN)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("hotpath runs")
}

/// The instance's `/pairs`, once its control plane answers (bounded).
fn pairs_of(addr: SocketAddr) -> BTreeSet<String> {
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, pairs) = get_json(addr, "/pairs");
    assert_eq!(status, 200, "{pairs}");
    pairs["pairs"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p.as_str().expect("a symbol").to_string())
        .collect()
}

/// Waits for the instance to exit (bounded) and returns its summary line.
fn summary_of(mut child: Child, dir: &Path, name: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    assert!(status.success(), "{name} failed: {log}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read stdout");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}\n{log}"))
}

#[test]
fn two_shards_on_one_simulator_write_every_trade_once_and_no_symbol_twice() {
    let owners: Vec<u16> = SYMBOLS.iter().map(|s| Shard::of(s, 2)).collect();
    assert!(
        owners.contains(&0) && owners.contains(&1),
        "each shard owns some of {SYMBOLS:?}: {owners:?}"
    );
    let sim = Sim::start(|c| {
        c.exchange.symbols = SYMBOLS.iter().map(|s| s.to_string()).collect();
        c.exchange.actions_per_second = 300.0;
    });
    let redis = RedisServer::start();
    let emulator = KinesisEmulator::start();
    runtime().block_on(async {
        for stream in [TRADE_STREAM, "market-sbe-bestbidask", "market-sbe-depth"] {
            emulator.create_stream(stream, 2).await;
        }
    });
    let dir = TempDir::new("shards");
    let ports = [free_port(), free_port()];
    let names = ["shard0", "shard1"];
    for (name, port) in names.iter().zip(ports) {
        instance_config(
            dir.path(),
            name,
            &sim,
            &redis.url(),
            &emulator.endpoint(),
            port,
        );
    }
    let children: Vec<Child> = names
        .iter()
        .zip(["0/2", "1/2"])
        .map(|(name, shard)| start_instance(dir.path(), name, shard))
        .collect();
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();

    // Each carries its shard's share; together every symbol, none twice.
    let pairs: Vec<BTreeSet<String>> = addrs.iter().map(|&a| pairs_of(a)).collect();
    for (index, carried) in pairs.iter().enumerate() {
        let want: BTreeSet<String> = SYMBOLS
            .iter()
            .filter(|s| Shard::of(s, 2) == index as u16)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(*carried, want, "shard {index}/2");
    }
    assert!(pairs[0].is_disjoint(&pairs[1]));
    // A symbol of the other shard is refused, naming its owner; the pairs stay as they were.
    let theirs = pairs[1].iter().next().expect("shard 1 owns a symbol");
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let body = format!(r#"{{"symbol":"{theirs}"}}"#);
    let (status, _, answer) = http(addrs[0], "POST", "/pairs", &auth, &body);
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer.contains(&format!("{theirs} belongs to shard 1/2")),
        "{answer}"
    );
    assert_eq!(pairs_of(addrs[0]), pairs[0]);

    let summaries: Vec<Value> = children
        .into_iter()
        .zip(names)
        .map(|(child, name)| summary_of(child, dir.path(), name))
        .collect();
    for (summary, name) in summaries.iter().zip(names) {
        for sink in ["kinesis", "redis"] {
            let s = &summary["sinks"][sink];
            assert!(s["written"].as_u64() > Some(0), "{name} {sink}: {s}");
            assert_eq!(s["dead_lettered"], 0, "{name} {sink}: {s}");
            assert_eq!(s["dropped"], 0, "{name} {sink}: {s}");
        }
    }
    // Every trade of every symbol exactly once in both sinks, from the first id written to
    // the last: a symbol written by both instances would repeat its ids in Kinesis.
    let kinesis = read_kinesis_trades(&emulator);
    let in_kinesis: Vec<&str> = kinesis.keys().map(String::as_str).collect();
    let mut all = SYMBOLS.to_vec();
    all.sort_unstable();
    assert_eq!(in_kinesis, all);
    for symbol in SYMBOLS {
        assert_exactly_once(&sim, symbol, &kinesis[symbol], "kinesis");
        assert_exactly_once(&sim, symbol, &redis_trades(&redis.url(), symbol), "redis");
    }
}
