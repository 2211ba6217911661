//! How many PutRecords the Kinesis emulators take, outside hotpath: records of our sizes sent
//! straight with the AWS SDK, so that a writer falling behind can be told apart from an
//! emulator at its ceiling.
//!
//! Emulators: kinesalite (Node, single-threaded; scripts/servers.sh's `ensure_kinesalite`,
//! `HOTPATH_KINESALITE`) and moto server (Python; `ensure_venv`, `HOTPATH_PYTHON`, its
//! `moto_server` beside it). `EMULATORS` (default `kinesalite,moto`) picks them; moto asked for
//! without `HOTPATH_PYTHON` is an error, not a skip.
//!
//! Cases, each with 200 partition keys (the scale bench's symbols) on a one-shard stream:
//! - `plain_bbo`: 500 records of 67 bytes (a bestBidAsk frame of an 8-letter symbol, the
//!   commonest);
//! - `plain_depth20`: 500 records of 683 bytes (a depth20 snapshot);
//! - `aggregated_25`: 200 KPL aggregates (one per key) of 25 bestBidAsk frames each, built by
//!   hotpath's own [`Aggregator`];
//! - `aggregated_100`: the same with 100 frames each.
//!
//! Each case runs with 1 and with 4 requests in flight (one per shard lane of a 4-shard stream,
//! the most hotpath's writer keeps per stream), `EMULATOR_SECONDS` (default 5) each, on a fresh
//! emulator. One JSON line per run: requests, Kinesis records, user records and MB per second,
//! and the CPU the emulator and this client used (a core's worth per second is 1.0: an emulator
//! near 1.0 is at its ceiling).
//!
//! `cargo bench -p hotpath-benches --bench kinesis_emulators`

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use hotpath::sink::kinesis::aggregate::Aggregator;
use hotpath_benches::servers::{
    Server, free_port, kinesalite_cli, kinesis_client as client, spawn_listening,
};

const KEYS: usize = 200;
const STREAM: &str = "bench-emulator";

fn start(emulator: &str) -> (Server, String) {
    let port = free_port();
    let mut command = match emulator {
        "kinesalite" => {
            let mut c = Command::new("node");
            c.arg(kinesalite_cli()).args(["--port", &port.to_string()]);
            c
        }
        "moto" => {
            let python = std::env::var_os("HOTPATH_PYTHON")
                .map(PathBuf::from)
                .expect("HOTPATH_PYTHON unset: source scripts/servers.sh; ensure_venv");
            let bin = python.with_file_name("moto_server");
            assert!(bin.exists(), "{} missing: ensure_venv", bin.display());
            let mut c = Command::new(bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        }
        other => panic!("unknown emulator {other}: kinesalite or moto"),
    };
    let server = spawn_listening(&mut command, port, emulator);
    (server, format!("http://127.0.0.1:{port}"))
}

async fn create_stream(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = client
        .create_stream()
        .stream_name(STREAM)
        .shard_count(1)
        .send()
        .await
    {
        assert!(Instant::now() < deadline, "CreateStream: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(STREAM)
            .send()
            .await;
        let active = summary.is_ok_and(|s| {
            s.stream_description_summary()
                .is_some_and(|d| d.stream_status().as_str() == "ACTIVE")
        });
        if active {
            return;
        }
        assert!(Instant::now() < deadline, "{STREAM} not ACTIVE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key(i: usize) -> String {
    format!("S{:03}USDT", i % KEYS)
}

/// A frame of `len` bytes (the data is not looked at by the emulators).
fn frame(len: usize, seed: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i + seed) as u8).collect::<Vec<u8>>())
}

/// One request's records and how many user records they carry.
fn batch(case: &str) -> (Vec<PutRecordsRequestEntry>, usize) {
    let entry = |key: String, data: Vec<u8>| {
        PutRecordsRequestEntry::builder()
            .partition_key(key)
            .data(Blob::new(data))
            .build()
            .expect("key and data set")
    };
    match case {
        "plain_bbo" | "plain_depth20" => {
            let len = if case == "plain_bbo" { 67 } else { 683 };
            let records = (0..500).map(|i| entry(key(i), frame(len, i).to_vec()));
            (records.collect(), 500)
        }
        "aggregated_25" | "aggregated_100" => {
            let per_key = if case == "aggregated_25" { 25 } else { 100 };
            let mut aggregator = Aggregator::new();
            let mut records = Vec::new();
            for k in 0..KEYS {
                for n in 0..per_key {
                    aggregator.push(&key(k), frame(67, n));
                }
                let (key, data) = aggregator.finish().expect("records pushed");
                records.push(entry(key, data));
            }
            (records, KEYS * per_key)
        }
        other => panic!("unknown case {other}"),
    }
}

/// utime + stime of `pid` in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: u64 = stat
        .rfind(')')
        .map(|at| &stat[at + 2..])
        .map(|rest| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            get(11).unwrap_or(0) + get(12).unwrap_or(0)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

struct Measured {
    requests: u64,
    records: u64,
    users: u64,
    bytes: u64,
    failed: u64,
    seconds: f64,
}

/// Sends `case`'s batch over and over with `in_flight` requests outstanding for `seconds`.
async fn measure(client: &Client, case: &str, in_flight: usize, seconds: f64) -> Measured {
    let (entries, users) = batch(case);
    let bytes: usize = entries
        .iter()
        .map(|e| e.data().as_ref().len() + e.partition_key().map_or(0, str::len))
        .sum();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let lanes = (0..in_flight).map(|_| {
        let (client, entries) = (client.clone(), entries.clone());
        async move {
            let (mut requests, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let out = client
                    .put_records()
                    .stream_name(STREAM)
                    .set_records(Some(entries.clone()))
                    .send()
                    .await
                    .expect("PutRecords answers");
                failed += u64::try_from(out.failed_record_count().unwrap_or(0)).unwrap_or(0);
                requests += 1;
            }
            (requests, failed)
        }
    });
    let done = futures_util::future::join_all(lanes).await;
    let requests: u64 = done.iter().map(|d| d.0).sum();
    Measured {
        requests,
        records: requests * entries.len() as u64,
        users: requests * users as u64,
        bytes: requests * bytes as u64,
        failed: done.iter().map(|d| d.1).sum(),
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn main() {
    let emulators = std::env::var("EMULATORS").unwrap_or_else(|_| "kinesalite,moto".into());
    let seconds: f64 = std::env::var("EMULATOR_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let cases = [
        "plain_bbo",
        "plain_depth20",
        "aggregated_25",
        "aggregated_100",
    ];
    for emulator in emulators
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        for case in cases {
            for in_flight in [1, 4] {
                // A fresh emulator each run: kinesalite slows down as it fills.
                let (server, endpoint) = start(emulator);
                let client = client(&endpoint);
                runtime.block_on(create_stream(&client));
                let (cpu_emulator, cpu_self) = (cpu_s(server.0.id()), cpu_s(std::process::id()));
                let m = runtime.block_on(measure(&client, case, in_flight, seconds));
                let emulator_cpu = (cpu_s(server.0.id()) - cpu_emulator) / m.seconds;
                let client_cpu = (cpu_s(std::process::id()) - cpu_self) / m.seconds;
                let per_s = |n: u64| (n as f64 / m.seconds).round();
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "kinesis_emulators",
                        "emulator": emulator,
                        "case": case,
                        "in_flight": in_flight,
                        "put_records_per_s": (m.requests as f64 / m.seconds * 10.0).round() / 10.0,
                        "kinesis_records_per_s": per_s(m.records),
                        "user_records_per_s": per_s(m.users),
                        "mb_per_s": (m.bytes as f64 / m.seconds / 1e4).round() / 100.0,
                        "failed_entries": m.failed,
                        "emulator_cpu": (emulator_cpu * 100.0).round() / 100.0,
                        "client_cpu": (client_cpu * 100.0).round() / 100.0,
                    })
                );
            }
        }
    }
}
