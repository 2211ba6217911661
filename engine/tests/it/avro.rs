//! The Kinesis `avro` payload end to end: the simulator's feed through `hotpath run` into
//! kinesalite, read back, decoded with apache-avro against `schemas/avro/market_data.avsc` and
//! compared with the simulator's journal (every trade exactly once, in order per symbol), in
//! the single-stream layout (seed 003's `bitcoin-market-data` + `ingestor-heartbeat`) and the
//! per-type one; and the README's Python consumer (`examples/python/kinesis_avro.py`, fastavro)
//! run on the records the test fetched, its output equal to apache-avro's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hotpath::config::{Layout, Payload};
use hotpath::sink::kinesis::aggregate::deaggregate;
use hotpath::sink::kinesis::avro::{MarketRecord, read_record};

use crate::feed::Sim;
use crate::servers::{KinesisEmulator, TempDir};
use crate::sinks::{
    SYMBOLS, kinesis_settings, run, run_config, runtime, sim, test_client, wait_for, written,
};

/// Kinesis records of `stream`: (partition key, data), de-aggregated.
fn records(emulator: &KinesisEmulator, stream: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (key, data, _) in runtime().block_on(emulator.read_all(stream)) {
        for user in deaggregate(&key, &data).expect("records de-aggregate") {
            out.push((user.partition_key, user.data));
        }
    }
    out
}

/// Every MarketData record of `records`, decoded with apache-avro; each record's symbol is its
/// partition key.
fn decode(records: &[(String, Vec<u8>)]) -> Vec<MarketRecord> {
    let mut out = Vec::new();
    for (key, data) in records {
        let decoded = read_record(data).unwrap_or_else(|e| panic!("an Avro record: {e}"));
        assert!(!decoded.is_empty(), "a record without messages");
        for r in decoded {
            assert_eq!(&r.symbol, key, "partition key = symbol");
            assert_eq!(r.source, "websocket");
            out.push(r);
        }
    }
    out
}

/// (timestamp ms, price, volume) of `symbol`'s trades in `records`, in order.
fn trades_of(records: &[MarketRecord], symbol: &str) -> Vec<(i64, f64, f64)> {
    records
        .iter()
        .filter(|r| r.symbol == symbol && r.event_type == "trade")
        .map(|r| {
            assert_eq!((r.bid_price, r.ask_price), (None, None), "{r:?}");
            (r.timestamp, r.price, r.volume)
        })
        .collect()
}

/// Asserts `got` is a run of consecutive trades of the simulator's journal: every trade from
/// the first written to the last exactly once, in order, at the nearest double of its price.
fn assert_journal_run(sim: &Sim, symbol: &str, got: &[(i64, f64, f64)]) {
    assert!(got.len() > 10, "{symbol}: only {} trades", got.len());
    let index = sim.handle().shared.symbol_index(symbol).expect("a symbol");
    let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
    let exponent = hotpath::sim::market::PRICE_EXPONENT;
    let qty_exponent = hotpath::sim::market::QTY_EXPONENT;
    let journal: Vec<(i64, f64, f64)> = exchange
        .market(index)
        .trades_from(i64::MIN)
        .map(|t| {
            (
                t.time_us.div_euclid(1000),
                hotpath::sink::kinesis::avro::decimal(t.price, exponent),
                hotpath::sink::kinesis::avro::decimal(t.qty, qty_exponent),
            )
        })
        .collect();
    let starts: Vec<usize> = (0..journal.len())
        .filter(|&i| journal[i..].starts_with(got))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "{symbol}: {} trades written, found at {starts:?} in a journal of {} (first written \
         {:?})",
        got.len(),
        journal.len(),
        got[0]
    );
}

/// Writes `records` as JSON lines (partition key, hex data) for the Python example.
fn write_records(path: &Path, records: &[(String, Vec<u8>)]) {
    let mut text = String::new();
    for (key, data) in records {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        let line = serde_json::json!({ "partition_key": key, "data": hex });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).expect("the records file");
}

/// The README's Python consumer over `input`: its records, one JSON object per line.
fn python_reads(input: &Path) -> Vec<MarketRecord> {
    let python = std::env::var_os("HOTPATH_PYTHON").unwrap_or_else(|| {
        panic!("HOTPATH_PYTHON is not set: run `source scripts/servers.sh; ensure_venv` first")
    });
    assert!(
        Path::new(&python).exists(),
        "HOTPATH_PYTHON = {python:?} does not exist (scripts/servers.sh ensure_venv)"
    );
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python/kinesis_avro.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(input)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn the_single_stream_holds_every_trade_once_in_avro_and_python_reads_the_same_records() {
    let sim = sim();
    let emulator = KinesisEmulator::start();
    let dir = TempDir::new("avro-single");
    let mut settings = kinesis_settings(&emulator.endpoint(), dir.path());
    settings.payload = Payload::Avro;
    settings.layout = Layout::Single;
    settings.heartbeat_stream = hotpath::config::SINGLE_HEARTBEAT_STREAM.into();
    let config = run_config(&sim, |c| c.kinesis = Some(settings));
    let summary = run(&config, Some(test_client(&emulator.endpoint())), |sinks| {
        wait_for("1500 events in Kinesis", || {
            written(sinks, "kinesis") >= 1500
        });
    });
    let k = &summary.sinks["kinesis"];
    assert!(k.flushed, "{k:?}");
    assert_eq!((k.dead_lettered, k.dropped), (0, 0), "{k:?}");
    assert_eq!(summary.gaps.count, 0, "{summary:?}");

    let market = records(&emulator, "bitcoin-market-data");
    assert_eq!(
        market.len() as u64,
        k.written,
        "one Kinesis record per event"
    );
    let decoded = decode(&market);
    // `hotpath kinesis count` counts the Avro trades too (a client with the SDK's retries: a
    // loaded kinesalite sometimes closes a connection mid-answer).
    let retrying = crate::servers::kinesis_client(
        &emulator.endpoint(),
        aws_sdk_kinesis::config::retry::RetryConfig::standard().with_max_attempts(5),
    );
    let counted = runtime()
        .block_on(hotpath::sink::kinesis::inspect::count(
            &retrying,
            "bitcoin-market-data",
            crate::sinks::PATIENCE,
        ))
        .expect("the stream counts");
    let trades = decoded.iter().filter(|r| r.event_type == "trade").count();
    assert_eq!(counted.trades, trades as u64);
    for symbol in SYMBOLS {
        assert_journal_run(&sim, symbol, &trades_of(&decoded, symbol));
        // Best bid/asks carry both sides (below the ask, the mid between), book levels one.
        let quotes = decoded
            .iter()
            .filter(|r| r.symbol == symbol && r.bid_price.is_some() && r.ask_price.is_some());
        let mut count = 0;
        for q in quotes {
            let (bid, ask) = (q.bid_price.unwrap_or(0.0), q.ask_price.unwrap_or(0.0));
            assert!(bid < ask && bid < q.price && q.price < ask, "{q:?}");
            count += 1;
        }
        assert!(count > 0, "{symbol}: no best bid/ask");
        let levels = decoded.iter().filter(|r| {
            r.symbol == symbol
                && r.event_type == "depth"
                && r.bid_price.is_some() != r.ask_price.is_some()
        });
        assert!(levels.count() > 0, "{symbol}: no book level");
    }
    // Heartbeats reached seed 003's heartbeat stream.
    let beats = records(&emulator, "ingestor-heartbeat");
    let last: serde_json::Value = serde_json::from_slice(&beats[beats.len() - 1].1).expect("JSON");
    assert_eq!(last["state"], "stopping");

    // The README's Python consumer reads exactly what apache-avro reads.
    let input = dir.path().join("records.jsonl");
    write_records(&input, &market);
    let python = python_reads(&input);
    assert_eq!(python.len(), decoded.len());
    for (p, r) in python.iter().zip(&decoded) {
        let same = p.symbol == r.symbol
            && p.timestamp == r.timestamp
            && (p.source.as_str(), p.event_type.as_str())
                == (r.source.as_str(), r.event_type.as_str())
            && near(p.price, r.price)
            && near(p.volume, r.volume)
            && near_opt(p.bid_price, r.bid_price)
            && near_opt(p.ask_price, r.ask_price);
        assert!(same, "fastavro read {p:?}, apache-avro {r:?}");
    }
}

/// Equal, or one ULP apart: Python prints the shortest representation, which serde_json
/// (without its `float_roundtrip` feature) may parse to a neighbouring double.
fn near(a: f64, b: f64) -> bool {
    a.to_bits().abs_diff(b.to_bits()) <= 1
}

fn near_opt(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => near(a, b),
        (a, b) => a == b,
    }
}

#[test]
fn per_type_streams_keep_avro_trades_apart_from_the_book() {
    let sim = sim();
    let emulator = KinesisEmulator::start();
    let dir = TempDir::new("avro-per-type");
    let mut settings = kinesis_settings(&emulator.endpoint(), dir.path());
    settings.payload = Payload::Avro;
    let config = run_config(&sim, |c| c.kinesis = Some(settings));
    let summary = run(&config, Some(test_client(&emulator.endpoint())), |sinks| {
        wait_for("500 events in Kinesis", || written(sinks, "kinesis") >= 500);
    });
    let k = &summary.sinks["kinesis"];
    assert!(k.flushed && k.dropped == 0, "{k:?}");
    let trades = decode(&records(&emulator, "market-sbe-trade"));
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &trades {
        *kinds.entry(r.event_type.as_str()).or_default() += 1;
    }
    assert_eq!(kinds.keys().copied().collect::<Vec<_>>(), ["trade"]);
    for symbol in SYMBOLS {
        assert_journal_run(&sim, symbol, &trades_of(&trades, symbol));
    }
    let book = decode(&records(&emulator, "market-sbe-depth"));
    assert!(!book.is_empty() && book.iter().all(|r| r.event_type == "depth"));
}
