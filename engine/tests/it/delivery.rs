//! Regressions of the sinks' loss and duplication paths (found in review), each on real
//! servers: a real `redis-server`, kinesalite, the fault proxy and the simulator. A trade must
//! never be counted as written without proof, never be dropped silently (beyond a buffer, at
//! shutdown: the dead-letter file), and `hotpath dlq resend` must not duplicate what may have
//! landed; the Kinesis rings are drained while the start-up stream check runs, and a partly
//! overlapping trades event reaches Kinesis without its already-delivered trades.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use hotpath::config::Payload;
use hotpath::config::RunConfig;
use hotpath::feed::event::FeedEvent;
use hotpath::feed::run::{self, RunOptions, SinkHandle, Summary};
use hotpath::sbe::spot_stream::{BoolEnum, TradesStreamEventEncoder};
use hotpath::sink::SinkStats;
use hotpath::sink::dlq::{self, DeadRecord, Outcome, Target};
use hotpath::stream::StreamKind;
use serde_json::Value;

use crate::fault_proxy::FaultProxy;
use crate::feed::{frames_sent, key};
use crate::servers::{KinesisEmulator, RedisServer, TempDir};
use crate::sinks::{
    FLUSH_PATIENCE, SYMBOLS, TRADE_STREAM, assert_exactly_once, kinesis_settings, kinesis_trades,
    read_kinesis_trades, redis_connection, redis_settings, redis_trades, run_config, runtime, sim,
    test_client, wait_for, written,
};

/// A run with a chosen shutdown flush deadline.
fn run_flushing_within(
    config: &RunConfig,
    client: Option<aws_sdk_kinesis::Client>,
    flush: Duration,
    wait: impl FnOnce(&[SinkHandle]),
) -> Summary {
    run::run_with(
        config,
        key(config),
        RunOptions {
            kinesis_client: client,
            sink_flush_timeout: Some(flush),
        },
        |_, sinks| wait(sinks),
    )
    .expect("the run succeeds")
}

fn stat(sinks: &[SinkHandle], name: &str, read: impl Fn(&SinkStats) -> u64) -> u64 {
    sinks
        .iter()
        .find(|s| s.name == name)
        .map_or(0, |s| read(&s.stats))
}

fn redis_command<T: redis::FromRedisValue>(url: &str, cmd: &mut redis::Cmd) -> T {
    cmd.query(&mut redis_connection(url))
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// The trade id of a Redis dead record (`<ms>-<trade id>`).
fn redis_trade_id(record: &DeadRecord) -> (String, i64) {
    let Target::Redis { key, id, fields } = &record.target else {
        panic!("a Redis record: {record:?}");
    };
    let trade_id: i64 = id
        .rsplit('-')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("an entry id <ms>-<trade id>");
    let field = fields
        .iter()
        .find(|(n, _)| n == "trade_id")
        .expect("trade_id");
    assert_eq!(field.1, trade_id.to_string());
    let symbol = key
        .strip_prefix("trades:{")
        .and_then(|k| k.strip_suffix('}'))
        .expect("trades:{SYMBOL}");
    (symbol.to_string(), trade_id)
}

/// Dead Redis trades per symbol, in file order.
fn dead_trades(records: &[DeadRecord]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for record in records {
        let (symbol, id) = redis_trade_id(record);
        out.entry(symbol).or_default().push(id);
    }
    out
}

/// `hotpath dlq resend ARGS` as a user runs it; its JSON report.
pub(crate) fn resend_cli(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .arg("dlq")
        .arg("resend")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .expect("hotpath runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "a JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Regression: an `XADD` refused as "equal or smaller than the target stream top item" was
/// counted as written, even when the earlier attempt had been refused explicitly (OOM) or the
/// stream held newer ids from another source. Now an `XRANGE` of the exact id decides: not
/// there, the trade cannot be placed and goes to the dead-letter file, counted.
#[test]
fn an_equal_or_smaller_refusal_is_checked_not_counted_as_written() {
    let sim = sim();
    let redis = RedisServer::start();
    let url = redis.url();
    // Another source holds a far newer entry in BTCUSDT's stream.
    let foreign: String = redis_command(
        &url,
        redis::cmd("XADD")
            .arg("trades:{BTCUSDT}")
            .arg("99999999999999-0")
            .arg("source")
            .arg("another writer"),
    );
    assert_eq!(foreign, "99999999999999-0");
    // And Redis refuses every write at first: out of memory.
    let _: String = redis_command(
        &url,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1),
    );
    let dir = TempDir::new("delivery-refused");
    let dead_path = dir.path().join("redis-dead.jsonl");
    let config = run_config(&sim, |c| {
        c.streams = vec![StreamKind::Trade];
        let mut r = redis_settings(url.clone());
        r.dead_letter_path = dead_path.clone();
        c.redis = Some(r);
    });
    let summary = run_flushing_within(&config, None, FLUSH_PATIENCE, |sinks| {
        wait_for("an OOM refusal", || {
            stat(sinks, "redis", |s| s.failed_requests.get()) >= 1
        });
        let _: String = redis_command(
            &url,
            redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0),
        );
        wait_for("trades written and trades that cannot be placed", || {
            written(sinks, "redis") >= 300 && stat(sinks, "redis", |s| s.dead_lettered.get()) >= 300
        });
    });
    let r = &summary.sinks["redis"];
    assert_eq!(r.dropped, 0, "{r:?}");
    assert!(r.flushed, "{r:?}");
    let letters = dlq::read(&dead_path).expect("the dead-letter file");
    assert_eq!(letters.records.len() as u64, r.dead_lettered, "{r:?}");
    assert!(
        letters
            .records
            .iter()
            .all(|d| d.outcome == Outcome::Failed && d.error.contains("cannot be placed"))
    );
    let dead = dead_trades(&letters.records);
    assert_eq!(
        dead.keys().collect::<Vec<_>>(),
        ["BTCUSDT"],
        "only BTCUSDT is blocked"
    );
    assert_exactly_once(&sim, "BTCUSDT", &dead["BTCUSDT"], "the dead-letter file");
    // BTCUSDT's stream holds the foreign entry alone; ETHUSDT's holds its trades once each,
    // and they are all that was counted as written.
    let btc: Vec<(String, BTreeMap<String, String>)> = redis_command(
        &url,
        redis::cmd("XRANGE")
            .arg("trades:{BTCUSDT}")
            .arg("-")
            .arg("+"),
    );
    assert_eq!(btc.len(), 1);
    assert_eq!(btc[0].0, "99999999999999-0");
    let eth = redis_trades(&url, "ETHUSDT");
    assert_exactly_once(&sim, "ETHUSDT", &eth, "redis");
    assert_eq!(r.written, eth.len() as u64, "{r:?}");
}

/// Regression: trades beyond `redis.buffer_trades_max` during an outage, and trades left when
/// the shutdown deadline passed, were dropped. They now go to the dead-letter file, and
/// `hotpath dlq resend` puts them back with their true ids, idempotently.
#[test]
fn trades_beyond_the_outage_buffer_or_left_at_shutdown_are_dead_lettered_and_resent() {
    let sim = sim();
    let mut redis = RedisServer::start();
    let url = redis.url();
    let dir = TempDir::new("delivery-outage");
    let dead_path = dir.path().join("redis-dead.jsonl");
    let config = run_config(&sim, |c| {
        c.streams = vec![StreamKind::Trade];
        let mut r = redis_settings(url.clone());
        r.buffer_trades_max = 100;
        r.dead_letter_path = dead_path.clone();
        c.redis = Some(r);
    });
    let mut before_outage = BTreeMap::new();
    let summary = run_flushing_within(&config, None, Duration::from_millis(500), |sinks| {
        wait_for("first trades in Redis", || written(sinks, "redis") >= 200);
        // What Redis holds when it dies: its writes paused, read, then it is killed. (On a
        // loaded machine the writer can fall a buffer behind while Redis is up, so trades
        // written and trades dead-lettered can alternate before the outage.)
        let _: String = redis_command(
            &url,
            redis::cmd("CLIENT").arg("PAUSE").arg(600_000).arg("WRITE"),
        );
        for symbol in SYMBOLS {
            before_outage.insert(symbol, redis_trades(&url, symbol));
        }
        let failed = stat(sinks, "redis", |s| s.failed_requests.get());
        redis.kill();
        wait_for("the writer to see the outage", || {
            stat(sinks, "redis", |s| s.failed_requests.get()) > failed
        });
        let dead = stat(sinks, "redis", |s| s.dead_lettered.get());
        wait_for("trades beyond the buffer dead-lettered", || {
            stat(sinks, "redis", |s| s.dead_lettered.get()) >= dead + 300
        });
    });
    let r = &summary.sinks["redis"];
    assert_eq!(r.dropped, 0, "nothing dropped: {r:?}");
    assert!(!r.flushed, "Redis was down at the end: {r:?}");
    let letters = dlq::read(&dead_path).expect("the dead-letter file");
    assert_eq!(letters.records.len() as u64, r.dead_lettered, "{r:?}");
    let dead = dead_trades(&letters.records);
    for symbol in SYMBOLS {
        // The dead-letter file holds trades in order: the ones beyond the buffer, then the
        // ones left at the shutdown deadline. With what Redis held, it is every trade once;
        // only a trade dropped from the buffer while its XADD was in flight, and that landed,
        // is in both, marked unknown.
        let in_file = &dead[symbol];
        assert!(in_file.windows(2).all(|w| w[0] < w[1]), "{symbol} in order");
        let unknown = dead_trades_of(&letters.records, Outcome::Unknown);
        let both: Vec<i64> = before_outage[symbol]
            .iter()
            .filter(|id| in_file.binary_search(id).is_ok())
            .copied()
            .collect();
        let unknown = unknown.get(symbol).map(Vec::as_slice).unwrap_or_default();
        assert!(
            both.iter().all(|id| unknown.binary_search(id).is_ok()),
            "{symbol}: in Redis and dead-lettered as failed: {both:?}"
        );
        let mut all: Vec<i64> = before_outage[symbol]
            .iter()
            .chain(in_file)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_exactly_once(&sim, symbol, &all, "Redis before the outage and the file");
    }
    assert!(
        letters
            .records
            .iter()
            .any(|d| d.error.contains("buffer_trades_max"))
    );
    assert!(letters.records.iter().any(|d| d.error.contains("shutdown")));

    // Redis comes back empty; the resend puts every dead trade in its stream.
    redis.restart();
    let report = resend_cli(&[path_str(&dead_path), "--redis", &url]);
    assert_eq!(report["records"], letters.records.len());
    assert_eq!(report["sent"], letters.records.len(), "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    for symbol in SYMBOLS {
        assert_eq!(redis_trades(&url, symbol), dead[symbol], "{symbol}");
    }
    // Again: everything is there already, proven by XRANGE, and nothing is added twice.
    let report = resend_cli(&[path_str(&dead_path), "--redis", &url]);
    assert_eq!(report["sent"], 0, "{report}");
    assert_eq!(report["already_there"], letters.records.len(), "{report}");
    for symbol in SYMBOLS {
        assert_eq!(redis_trades(&url, symbol), dead[symbol], "{symbol}");
    }
}

/// Dead Redis trades of `outcome` per symbol, in file order.
fn dead_trades_of(records: &[DeadRecord], outcome: Outcome) -> BTreeMap<String, Vec<i64>> {
    let of: Vec<DeadRecord> = records
        .iter()
        .filter(|d| d.outcome == outcome)
        .cloned()
        .collect();
    dead_trades(&of)
}

/// Regression: batches in flight at the flush deadline were dead-lettered as if they had
/// failed although they may have landed, and a resend duplicated them. They are now marked
/// `"outcome":"unknown"` and only sent with `--include-unknown`; records never attempted are
/// `failed` and sent.
#[test]
fn batches_in_flight_at_the_flush_deadline_are_unknown_and_not_resent_blindly() {
    let sim = sim();
    let emulator = KinesisEmulator::start();
    let proxy = FaultProxy::start(emulator.addr());
    let dir = TempDir::new("delivery-in-flight");
    let dead_path = dir.path().join("dead-letters.jsonl");
    let config = run_config(&sim, |c| {
        let mut k = kinesis_settings(&proxy.endpoint(), dir.path());
        k.heartbeat_interval = None;
        c.kinesis = Some(k);
    });
    let summary = run_flushing_within(
        &config,
        Some(test_client(&proxy.endpoint())),
        Duration::from_millis(500),
        |sinks| {
            wait_for("first writes", || written(sinks, "kinesis") >= 500);
            proxy.faults().hold_answers(true);
            // Each stream's request in flight landed and waits for an answer that never comes
            // (trades, bestBidAsk, depth: three), and records queue behind them.
            wait_for("held requests", || proxy.faults().answers_held() >= 3);
            let queued = stat(sinks, "kinesis", |s| s.received.get());
            wait_for("records queued behind them", || {
                stat(sinks, "kinesis", |s| s.received.get()) >= queued + 500
            });
        },
    );
    let k = &summary.sinks["kinesis"];
    assert_eq!(k.dropped, 0, "{k:?}");
    // Every record taken (live, or repaired after a gap on a loaded machine, less events
    // dropped whole as duplicates) was written or dead-lettered.
    assert_eq!(
        k.received + k.repaired,
        k.written + k.dead_lettered + k.duplicates,
        "{k:?}"
    );
    let letters = dlq::read(&dead_path).expect("the dead-letter file");
    assert_eq!(letters.records.len() as u64, k.dead_lettered);
    let unknown = kinesis_trades(&trade_records(&letters.records, Outcome::Unknown));
    let failed = kinesis_trades(&trade_records(&letters.records, Outcome::Failed));
    assert!(!unknown.is_empty() && !failed.is_empty(), "{k:?}");
    // The unknown ones did land.
    let landed = read_kinesis_trades(&emulator);
    for (symbol, ids) in &unknown {
        assert!(ids.iter().all(|id| landed[symbol].contains(id)), "{symbol}");
    }
    // The resend sends the failed ones only, and sets the unknown ones aside.
    let report = resend_cli(&[
        path_str(&dead_path),
        "--kinesis-endpoint",
        &emulator.endpoint(),
    ]);
    let unknown_count = letters
        .records
        .iter()
        .filter(|d| d.outcome == Outcome::Unknown)
        .count();
    assert_eq!(report["skipped_unknown"], unknown_count, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(
        report["sent"],
        letters.records.len() - unknown_count,
        "{report}"
    );
    let set_aside = dlq::read(Path::new(
        report["unknown_file"].as_str().expect("the unknown file"),
    ))
    .expect("readable");
    assert_eq!(set_aside.records.len(), unknown_count);
    let trades = read_kinesis_trades(&emulator);
    for symbol in SYMBOLS {
        assert_exactly_once(&sim, symbol, &trades[symbol], "kinesis after resend");
    }
}

/// Regression: a request that timed out was requeued whole, and when its records finally went
/// to the dead-letter file nothing said they may have landed. They are retried (at least
/// once: a consumer may see one twice) and, dead-lettered, marked `"outcome":"unknown"`.
#[test]
fn records_of_a_timed_out_request_are_marked_unknown() {
    let sim = sim();
    let emulator = KinesisEmulator::start();
    // Created here: the writer's client times out after 300 ms, which a loaded machine can
    // reach while waiting for a new stream to become ACTIVE (a failed start, not this test).
    let rt = runtime();
    for stream in [TRADE_STREAM, "market-sbe-bestbidask", "market-sbe-depth"] {
        rt.block_on(emulator.create_stream(stream, 1));
    }
    let proxy = FaultProxy::start(emulator.addr());
    let dir = TempDir::new("delivery-timeout");
    let dead_path = dir.path().join("dead-letters.jsonl");
    let config = run_config(&sim, |c| {
        let mut k = kinesis_settings(&proxy.endpoint(), dir.path());
        k.create_streams = false;
        k.heartbeat_interval = None;
        k.deliver_within = Duration::from_millis(1500);
        c.kinesis = Some(k);
    });
    let client = {
        let sdk = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "hotpath-tests",
            ))
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .endpoint_url(proxy.endpoint())
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_millis(300))
                    .build(),
            )
            .build();
        aws_sdk_kinesis::Client::from_conf(sdk)
    };
    let summary = run_flushing_within(&config, Some(client), Duration::from_secs(10), |sinks| {
        wait_for("first writes", || written(sinks, "kinesis") >= 300);
        proxy.faults().hold_answers(true);
        // From now on nothing of the trades lane is delivered, so the first trades request
        // held carries its oldest records, which stay the oldest: retried (held again, or timed
        // out on the way) until their deadline, they are the first trades dead-lettered, and
        // they did land.
        wait_for("a trades request held", || {
            proxy.faults().answers_held_of(TRADE_STREAM) >= 1
        });
        wait_for(
            "timed-out records, trades among them, dead-lettered",
            || {
                let letters = letters_so_far(&dead_path);
                let unknown = letters.iter().filter(|d| d.outcome == Outcome::Unknown);
                unknown.count() >= 300 && !trade_records(&letters, Outcome::Unknown).is_empty()
            },
        );
        proxy.faults().hold_answers(false);
        let dead = stat(sinks, "kinesis", |s| s.dead_lettered.get());
        wait_for("writes again", || {
            written(sinks, "kinesis") >= 600 && stat(sinks, "kinesis", |s| s.retried.get()) > 0
        });
        assert!(stat(sinks, "kinesis", |s| s.dead_lettered.get()) >= dead);
    });
    let k = &summary.sinks["kinesis"];
    assert_eq!(k.dropped, 0, "{k:?}");
    let letters = dlq::read(&dead_path).expect("the dead-letter file");
    let unknown: Vec<&DeadRecord> = letters
        .records
        .iter()
        .filter(|d| d.outcome == Outcome::Unknown)
        .collect();
    assert!(
        unknown.len() >= 300,
        "{} unknown of {}",
        unknown.len(),
        letters.records.len()
    );
    assert!(unknown.iter().all(|d| d.attempts >= 1));
    // "Unknown" is the truth: some did land (the proxy forwarded them before holding the
    // answer), so calling them failed and resending them would duplicate them; others may not
    // have (a request that timed out before the proxy had it).
    let landed = read_kinesis_trades(&emulator);
    let unknown_trades = kinesis_trades(&trade_records(&letters.records, Outcome::Unknown));
    let landed_unknown = unknown_trades
        .iter()
        .flat_map(|(symbol, ids)| ids.iter().filter(|id| landed[symbol].contains(id)))
        .count();
    let span = |ids: &Vec<i64>| (ids.len(), ids.first().copied(), ids.last().copied());
    assert!(
        landed_unknown > 0,
        "unknown trades {:?}, landed {:?}, {:?}",
        unknown_trades.values().map(span).collect::<Vec<_>>(),
        landed.values().map(span).collect::<Vec<_>>(),
        proxy.faults().counters()
    );
}

/// The records of the dead-letter file at `path` so far (none before it exists).
fn letters_so_far(path: &Path) -> Vec<DeadRecord> {
    dlq::read(path).map(|l| l.records).unwrap_or_default()
}

/// The trades-stream records of `records` with `outcome`, as [`kinesis_trades`] takes them.
fn trade_records(records: &[DeadRecord], outcome: Outcome) -> Vec<(String, Vec<u8>, String)> {
    records
        .iter()
        .filter(|d| d.outcome == outcome)
        .filter_map(|d| match &d.target {
            Target::Kinesis {
                stream,
                partition_key,
                data,
            } if stream == TRADE_STREAM => {
                Some((partition_key.clone(), data.clone(), String::new()))
            }
            _ => None,
        })
        .collect()
}

/// Regression: the Kinesis writer's rings were not drained while the start-up stream check ran
/// (up to 60 s), so they overflowed. A slow endpoint at start now costs no event.
#[test]
fn rings_are_drained_while_a_slow_start_up_stream_check_runs() {
    // Small rings: once it sends, the writer must still never fall a ring behind, also on a
    // loaded machine.
    const RING: usize = 2048;
    let sim = sim();
    let emulator = KinesisEmulator::start();
    let rt = runtime();
    for stream in [TRADE_STREAM, "market-sbe-bestbidask", "market-sbe-depth"] {
        rt.block_on(emulator.create_stream(stream, 1));
    }
    let proxy = FaultProxy::start(emulator.addr());
    // The stream check is answered only once the simulator has sent three times what a ring
    // holds (the reader may be some way behind it): the old code overflowed the rings.
    proxy.faults().gate("DescribeStreamSummary", true);
    let dir = TempDir::new("delivery-slow-check");
    let config = run_config(&sim, |c| {
        c.readers.ring_capacity = RING;
        let mut k = kinesis_settings(&proxy.endpoint(), dir.path());
        k.create_streams = false;
        k.heartbeat_interval = None;
        c.kinesis = Some(k);
    });
    let mut received_at_ready = 0;
    let summary = std::thread::scope(|scope| {
        scope.spawn(|| {
            wait_for("frames sent during the check", || {
                frames_sent(sim.handle().addr) >= 3 * RING as u64
            });
            proxy.faults().gate("DescribeStreamSummary", false);
        });
        run_flushing_within(
            &config,
            Some(test_client(&proxy.endpoint())),
            FLUSH_PATIENCE,
            |sinks| {
                received_at_ready = stat(sinks, "kinesis", |s| s.received.get());
                wait_for("writes", || written(sinks, "kinesis") >= 2000);
            },
        )
    });
    assert!(proxy.faults().requests("DescribeStreamSummary") >= 3);
    assert!(
        received_at_ready > RING as u64,
        "{received_at_ready} events drained during the check"
    );
    assert_eq!(summary.queue_drops, 0, "{summary:?}");
    assert_eq!(summary.gaps.count, 0, "{summary:?}");
    let k = &summary.sinks["kinesis"];
    assert_eq!(k.received, summary.frames, "{k:?}");
    assert!(k.flushed && k.written == k.received, "{k:?}");
    let trades = read_kinesis_trades(&emulator);
    for symbol in SYMBOLS {
        assert_exactly_once(&sim, symbol, &trades[symbol], "kinesis");
    }
}

/// A trades frame of `symbol` with `ids`.
fn trades_frame(symbol: &str, ids: std::ops::RangeInclusive<i64>) -> Bytes {
    let mut out = vec![0u8; 4096];
    let length = {
        let mut encoder = TradesStreamEventEncoder::wrap(&mut out).expect("room");
        encoder
            .event_time(1_763_700_000_000_000)
            .transact_time(1_763_700_000_000_000)
            .price_exponent(-8)
            .qty_exponent(-8);
        let count = u32::try_from(ids.clone().count()).expect("a few");
        let mut group = encoder.trades(count).expect("a group");
        for id in ids {
            group
                .next_entry()
                .expect("an entry")
                .id(id)
                .price(6_976_988_000_000)
                .qty(100_000)
                .is_buyer_maker(BoolEnum::False);
        }
        encoder.symbol(symbol.as_bytes()).expect("a symbol");
        encoder.finish()
    };
    out.truncate(length);
    Bytes::from(out)
}

fn event(frame: Bytes, first_id: i64, first_new_id: i64, last_id: i64) -> FeedEvent {
    FeedEvent {
        recv_time_ns: hotpath::clock::monotonic_ns(),
        symbol: 0,
        kind: StreamKind::Trade,
        first_id,
        last_id,
        first_new_id,
        event_time_us: 1_763_700_000_000_000,
        frame,
    }
}

/// Regression: a trades event partly overlapping trades already delivered (ids up to k
/// delivered, the frame carrying a..=b with a <= k < b) was forwarded whole, so Kinesis got
/// the ids a..=k twice. The writer now sends a re-encoded frame of the new trades only, in
/// both payloads.
#[test]
fn a_partly_overlapping_trades_event_reaches_kinesis_without_its_seen_trades() {
    let emulator = KinesisEmulator::start();
    for payload in [Payload::Sbe, Payload::Json] {
        let dir = TempDir::new("delivery-overlap");
        let mut config = kinesis_settings(&emulator.endpoint(), dir.path());
        config.heartbeat_interval = None;
        config.payload = payload;
        config.stream_trade = format!("overlap-{payload:?}").to_lowercase();
        let (mut producer, ring) = rtrb::RingBuffer::new(16);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, checked) = std::sync::mpsc::channel();
        let stats = Arc::new(SinkStats::default());
        let thread =
            hotpath::sink::kinesis::writer::spawn(hotpath::sink::kinesis::writer::KinesisSink {
                config: config.clone(),
                client: Some(test_client(&emulator.endpoint())),
                rings: vec![ring],
                repairs: None,
                hold_max: Duration::ZERO,
                stats: stats.clone(),
                stop: stop.clone(),
                core: None,
                flush_timeout: Duration::from_secs(10),
                ready,
                // Nobody rings it here: the writer finds the test's events at its park timeouts.
                bell: hotpath::idle::Bell::task(),
                klines: Default::default(),
            })
            .expect("the writer starts");
        checked
            .recv_timeout(Duration::from_secs(60))
            .expect("checked")
            .expect("the streams exist");
        for e in [
            event(trades_frame("BTCUSDT", 1..=5), 1, 1, 5),
            // Two connections framed differently: 3..=5 were delivered already.
            event(trades_frame("BTCUSDT", 3..=8), 3, 6, 8),
            event(trades_frame("BTCUSDT", 9..=9), 9, 9, 9),
        ] {
            producer.push(e).expect("room in the ring");
        }
        wait_for("three records written", || stats.written.get() == 3);
        stop.store(true, std::sync::atomic::Ordering::Release);
        let summary = thread
            .join()
            .expect("the writer does not panic")
            .expect("the writer succeeds");
        assert!(summary.flushed, "{summary:?}");
        let records = rt_read(&emulator, &config.stream_trade);
        let trades = kinesis_trades(&records);
        assert_eq!(
            trades["BTCUSDT"],
            (1..=9).collect::<Vec<i64>>(),
            "{payload:?}"
        );
    }
}

fn rt_read(emulator: &KinesisEmulator, stream: &str) -> Vec<(String, Vec<u8>, String)> {
    runtime().block_on(emulator.read_all(stream))
}

/// A Kinesis dead-letter record of `outcome` carrying `data`.
fn kinesis_letter(data: &[u8], outcome: Outcome) -> DeadRecord {
    DeadRecord {
        target: Target::Kinesis {
            stream: TRADE_STREAM.to_string(),
            partition_key: "BTCUSDT".to_string(),
            data: data.to_vec(),
        },
        attempts: 1,
        first_attempt_ms: 1_763_700_000_000,
        dead_at_ms: 1_763_700_001_000,
        outcome,
        error: "test".to_string(),
    }
}

/// Writes `records` as a dead-letter file at `path`.
fn write_letters(path: &Path, records: &[DeadRecord]) {
    dlq::replace(path, records).expect("write the dead-letter file");
}

/// Regression: a bad `--redis` URL was noticed only after the file's Kinesis records were sent.
/// Every argument is checked first: the run fails, naming the URL, and Kinesis got nothing.
#[test]
fn a_bad_redis_url_is_refused_before_any_kinesis_record_is_sent() {
    let emulator = KinesisEmulator::start();
    runtime().block_on(emulator.create_stream(TRADE_STREAM, 1));
    let dir = TempDir::new("resend-bad-url");
    let file = dir.path().join("dead.jsonl");
    let redis_letter = DeadRecord {
        target: Target::Redis {
            key: "trades:{BTCUSDT}".to_string(),
            id: "1763700000000-7".to_string(),
            fields: vec![("trade_id".to_string(), "7".to_string())],
        },
        ..kinesis_letter(b"", Outcome::Failed)
    };
    write_letters(
        &file,
        &[kinesis_letter(b"one", Outcome::Failed), redis_letter],
    );
    let output = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args(["dlq", "resend", path_str(&file), "--kinesis-endpoint"])
        .arg(emulator.endpoint())
        .args(["--redis", "http://not-redis:6379"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("hotpath runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "refused: {stderr}");
    assert!(stderr.contains("--redis http://not-redis:6379"), "{stderr}");
    assert!(
        rt_read(&emulator, TRADE_STREAM).is_empty(),
        "nothing was sent to Kinesis"
    );
}

/// Regression: `FILE.unknown` and `FILE.failed` were appended to the files an earlier run left,
/// mixing that run's records with this one's. They are written afresh; one this run has nothing
/// for is removed.
#[test]
fn side_files_of_a_resend_are_written_afresh() {
    let dir = TempDir::new("resend-side-files");
    let file = dir.path().join("dead.jsonl");
    let old = kinesis_letter(b"earlier run", Outcome::Unknown);
    write_letters(
        &dir.path().join("dead.jsonl.unknown"),
        std::slice::from_ref(&old),
    );
    write_letters(&dir.path().join("dead.jsonl.failed"), &[old]);
    let now = [
        kinesis_letter(b"a", Outcome::Unknown),
        kinesis_letter(b"b", Outcome::Unknown),
    ];
    write_letters(&file, &now);
    // Nothing to send (unknown outcomes are set aside): no server is needed.
    let report = resend_cli(&[path_str(&file)]);
    assert_eq!(report["skipped_unknown"], 2, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let unknown = dlq::read(Path::new(
        report["unknown_file"].as_str().expect("the unknown file"),
    ))
    .expect("readable");
    assert_eq!(unknown.records, now.to_vec(), "this run's records only");
    assert!(
        !dir.path().join("dead.jsonl.failed").exists(),
        "an earlier run's failed list is out of date: removed"
    );
    assert!(!dir.path().join("dead.jsonl.unknown.tmp").exists());
}

/// Regression: when the start-up stream check failed (a stream missing), the events drained
/// from the rings while it ran were discarded. They go to the dead-letter file, `failed`.
#[test]
fn events_drained_during_a_failed_stream_check_are_dead_lettered() {
    const RING: usize = 2048;
    let sim = sim();
    let emulator = KinesisEmulator::start();
    // No stream exists: the check fails, once it is let through.
    let proxy = FaultProxy::start(emulator.addr());
    proxy.faults().gate("DescribeStreamSummary", true);
    let dir = TempDir::new("delivery-failed-check");
    let config = run_config(&sim, |c| {
        c.readers.ring_capacity = RING;
        let mut k = kinesis_settings(&proxy.endpoint(), dir.path());
        k.create_streams = false;
        k.heartbeat_interval = None;
        c.kinesis = Some(k);
    });
    let dead_path = config
        .kinesis
        .as_ref()
        .map(|k| k.dead_letter_path.clone())
        .expect("kinesis settings");
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            wait_for("frames sent during the check", || {
                frames_sent(sim.handle().addr) >= 2 * RING as u64
            });
            proxy.faults().gate("DescribeStreamSummary", false);
        });
        run::run_with(
            &config,
            key(&config),
            RunOptions {
                kinesis_client: Some(test_client(&proxy.endpoint())),
                sink_flush_timeout: Some(FLUSH_PATIENCE),
            },
            |_, _| {},
        )
    });
    let error = outcome.expect_err("the stream check fails");
    assert!(error.contains("does not exist"), "{error}");
    let letters = dlq::read(&dead_path).expect("the dead-letter file");
    assert_eq!(letters.torn_tail, None);
    assert!(
        letters.records.len() > RING,
        "the events drained during the check are kept: {}",
        letters.records.len()
    );
    for record in &letters.records {
        assert_eq!(record.outcome, Outcome::Failed, "{record:?}");
        assert!(record.error.contains("stream check failed"), "{record:?}");
    }
    assert_eq!(proxy.faults().entries_forwarded(), 0);
}
