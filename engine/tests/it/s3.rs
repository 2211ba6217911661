//! The S3 bronze archive against a real S3 emulator: moto's server (`moto_server`, from the
//! test venv, `scripts/servers.sh ensure_moto`), started by each test on a free loopback port.
//! Parts are read back with the parquet crate and, as an outside reader, with pyarrow
//! (`HOTPATH_PYTHON`, the test venv's python), and compared with what was written or with the
//! simulator's ground truth: every trade exactly once and in order, prices and quantities
//! exact; a live run, a restart and a backfill over both never duplicate a trade.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use hotpath::archive::TradeRow;
use hotpath::archive::keys::{HOUR_US, hour_of, parse_part};
use hotpath::archive::parquet::decode;
use hotpath::archive::store::Store;
use hotpath::config::s3::S3Config;

use crate::feed::Sim;
use crate::servers::TempDir;
use crate::sinks::{SYMBOLS, assert_exactly_once, runtime};

/// How long moto may take to answer after it started (a loaded machine starts Python slowly).
const START_PATIENCE: Duration = Duration::from_secs(60);
const BUCKET: &str = "lake";

/// A `moto_server` process of this test on 127.0.0.1, killed on drop.
struct Moto {
    port: u16,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Moto {
    fn start() -> Moto {
        let binary = std::env::var("HOTPATH_MOTO_SERVER").unwrap_or_else(|_| {
            panic!(
                "HOTPATH_MOTO_SERVER is not set: run `source scripts/servers.sh; ensure_moto` \
                 (scripts/test.sh does), which installs moto[server] into the test venv"
            )
        });
        let dir = TempDir::new("moto");
        let log = dir.path().join("moto.log");
        let file = std::fs::File::create(&log).expect("a log file");
        // Port 0: moto binds a port of its own and names it in its log. A port picked here
        // and handed over could be taken by another test's server first, which then answers
        // in moto's place (seen: a 404 to CreateBucket).
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::from(file.try_clone().expect("clone")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut moto = Moto {
            port: 0,
            child,
            log,
            _dir: dir,
        };
        moto.await_ready();
        moto
    }

    /// Polls moto's log until it names the port it listens on, then the port until moto
    /// answers (bounded), failing with its log.
    fn await_ready(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited with {status}:\n{}", self.log());
            }
            if self.port == 0 {
                self.port = listening_port(&self.log()).unwrap_or(0);
            }
            if self.port != 0 && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer in {START_PATIENCE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn settings(&self) -> S3Config {
        S3Config {
            enabled: true,
            bucket: BUCKET.into(),
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.endpoint()),
            force_path_style: true,
            ..S3Config::default()
        }
    }

    /// A store on a client with static credentials (moto takes any), the bucket created.
    fn store(&self, settings: S3Config) -> Store {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        runtime().block_on(async {
            let made = client.create_bucket().bucket(BUCKET).send().await;
            if let Err(e) = made {
                let text = format!("{e:?}");
                assert!(text.contains("BucketAlready"), "create_bucket: {text}");
            }
        });
        Store::new(client, settings)
    }
}

/// The port in werkzeug's ` * Running on http://127.0.0.1:PORT` line, once logged.
fn listening_port(log: &str) -> Option<u16> {
    log.lines()
        .find_map(|line| line.split("Running on http://127.0.0.1:").nth(1))
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every part of `symbol` in the bucket: (key, rows), in trade-id order.
fn parts(store: &Store, symbol: &str) -> Vec<(String, Vec<TradeRow>)> {
    let prefix = format!("{}/binance/trades/symbol={symbol}/", store.config().prefix);
    runtime().block_on(async {
        let mut out = Vec::new();
        for key in store.list(&prefix).await.expect("list") {
            let bytes = store.get(&key).await.expect("get");
            let rows = decode(bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
            out.push((key, rows));
        }
        out.sort_by_key(|(key, _)| parse_part(key).map(|(first, _)| first));
        out
    })
}

/// Every trade of `symbol` in the bucket, in key order; each part's name matches its rows.
fn archived(store: &Store, symbol: &str) -> Vec<TradeRow> {
    let mut all = Vec::new();
    for (key, rows) in parts(store, symbol) {
        let ids = parse_part(&key).unwrap_or_else(|| panic!("{key}: not a part name"));
        let first = rows.first().map(|r| r.trade_id);
        let last = rows.last().map(|r| r.trade_id);
        assert_eq!((first, last), (Some(ids.0), Some(ids.1)), "{key}");
        for r in &rows {
            let hour = hour_of(r.trade_time_us);
            assert!(
                key.contains(&format!("hour={:02}/", hour.rem_euclid(24))),
                "{key}"
            );
        }
        all.extend(rows);
    }
    all
}

fn rows(ids: std::ops::RangeInclusive<i64>, start_us: i64) -> Vec<TradeRow> {
    ids.map(|id| TradeRow {
        trade_id: id,
        price: 6_976_988_000_000 + id % 13,
        qty: 100_000 + id,
        trade_time_us: start_us + id * 1_000_000,
        event_time_us: start_us + id * 1_000_000 + 7,
        is_buyer_maker: id % 2 == 0,
    })
    .collect()
}

/// Downloads every object under the store's prefix into `dir` (keys as paths) and has pyarrow
/// read it as a Hive-partitioned dataset; returns what it printed, one JSON line per trade.
fn pyarrow_rows(store: &Store, dir: &Path) -> Vec<serde_json::Value> {
    let python = std::env::var("HOTPATH_PYTHON").unwrap_or_else(|_| {
        panic!("HOTPATH_PYTHON is not set: run `source scripts/servers.sh; ensure_venv`")
    });
    assert!(
        Path::new(&python).exists(),
        "HOTPATH_PYTHON={python}: missing"
    );
    let root = dir.join("bucket");
    runtime().block_on(async {
        for key in store.list(&store.config().prefix).await.expect("list") {
            let bytes = store.get(&key).await.expect("get");
            let path = root.join(&key);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, &bytes).expect("write");
        }
    });
    let script = r#"
import json, sys
import pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
assert str(table.schema.field("price").type) == "decimal128(18, 8)", table.schema
assert str(table.schema.field("trade_time").type) == "timestamp[us, tz=UTC]", table.schema
for r in table.to_pylist():
    print(json.dumps({
        "symbol": r["symbol"], "date": str(r["date"]), "hour": int(r["hour"]),
        "trade_id": r["trade_id"], "price": str(r["price"]), "qty": str(r["qty"]),
        "trade_time_us": int(r["trade_time"].timestamp() * 1_000_000),
        "is_buyer_maker": r["is_buyer_maker"],
    }))
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(root.join(&store.config().prefix).join("binance/trades"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn parts_round_trip_through_s3_and_pyarrow_reads_them_exactly() {
    let moto = Moto::start();
    let store = moto.store(S3Config {
        part_rows_max: 1000,
        ..moto.settings()
    });
    // 2026-11-29T13:00:00Z: ids 1..=5000, one a second, span 13:00 to 14:23.
    let start_us = 1_795_957_200_000_000;
    let written = rows(1..=5000, start_us);
    let done = runtime()
        .block_on(store.archive("BTCUSDT", &written))
        .expect("archived");
    assert_eq!((done.written, done.skipped), (5000, 0));
    // Hour 13 holds ids 1..=3599 (4 parts of <= 1000), hour 14 the rest (2 parts).
    assert_eq!(done.parts, 6, "{done:?}");
    let keys: Vec<String> = parts(&store, "BTCUSDT").into_iter().map(|p| p.0).collect();
    assert!(
        keys.contains(
            &"bronze/binance/trades/symbol=BTCUSDT/date=2026-11-29/hour=13/part-1-1000.parquet"
                .to_string()
        ),
        "{keys:#?}"
    );
    assert_eq!(archived(&store, "BTCUSDT"), written);
    let dir = TempDir::new("pyarrow");
    let read = pyarrow_rows(&store, dir.path());
    assert_eq!(read.len(), written.len());
    let mut read = read;
    read.sort_by_key(|v| v["trade_id"].as_i64());
    for (got, want) in read.iter().zip(&written) {
        let decimal = |m: i64| sbe_runtime::Decimal::new(m, -8).to_string();
        let hour = hour_of(want.trade_time_us).rem_euclid(24);
        assert_eq!(got["symbol"], "BTCUSDT");
        assert_eq!(got["hour"].as_i64(), Some(hour));
        assert_eq!(got["trade_id"].as_i64(), Some(want.trade_id));
        assert_eq!(got["price"].as_str(), Some(decimal(want.price).as_str()));
        assert_eq!(got["qty"].as_str(), Some(decimal(want.qty).as_str()));
        assert_eq!(got["trade_time_us"].as_i64(), Some(want.trade_time_us));
        assert_eq!(got["is_buyer_maker"].as_bool(), Some(want.is_buyer_maker));
    }
    assert_eq!(read[0]["date"], "2026-11-29");
}

#[test]
fn archiving_again_skips_every_id_a_part_holds() {
    let moto = Moto::start();
    let store = moto.store(moto.settings());
    let start_us = 1_795_957_200_000_000;
    let run = |ids| runtime().block_on(store.archive("ETHUSDT", &rows(ids, start_us)));
    let first = run(100..=200).expect("archived");
    assert_eq!((first.written, first.parts), (101, 1));
    // Overlapping both sides: only 50..=99 and 201..=300 are new, as two parts (never one
    // across the existing part).
    let second = run(50..=300).expect("archived");
    assert_eq!(
        (second.written, second.skipped, second.parts),
        (150, 101, 2)
    );
    let third = run(50..=300).expect("archived");
    assert_eq!((third.written, third.skipped), (0, 251));
    let ids: Vec<i64> = archived(&store, "ETHUSDT")
        .iter()
        .map(|r| r.trade_id)
        .collect();
    assert_eq!(ids, (50..=300).collect::<Vec<_>>());
}

/// Review 11: a part is named by its first and last open time and claims every open time
/// between, so a candle left out in the middle (incomplete, not archived) was claimed by the
/// part around it, and `backfill klines --s3`, which jumps over what parts claim, never filled
/// it. Candles with a hole between them now go to separate parts.
#[test]
fn a_candle_left_out_between_archived_ones_stays_unclaimed_for_the_backfill() {
    let moto = Moto::start();
    let store = moto.store(moto.settings());
    let hour_ms = HOUR_US / 1000;
    let base = 499_000 * hour_ms;
    let interval = hotpath::kline::Interval::of("1m").expect("1m");
    let candle = |minute: i64| {
        let mut c = hotpath::kline::Candle::flat(base + minute * 60_000, interval, 5);
        c.trades = 0;
        c
    };
    let written = runtime()
        .block_on(store.archive_klines("BTCUSDT", "1m", &[candle(1), candle(2), candle(4)]))
        .expect("archived");
    assert_eq!((written.written, written.parts), (3, 2));
    let covered = runtime()
        .block_on(store.covered_klines("BTCUSDT", "1m", 499_000))
        .expect("listed");
    assert!(
        !covered.contains(base + 3 * 60_000),
        "{:?}",
        covered.ranges()
    );
    assert!(covered.contains(base + 2 * 60_000) && covered.contains(base + 4 * 60_000));
    let opens: Vec<i64> = archived_candles(&store, "1m", "BTCUSDT")
        .iter()
        .map(|c| (c.open_ms - base) / 60_000)
        .collect();
    assert_eq!(opens, [1, 2, 4]);
}

/// Ids a writer gave up on (a gap the sidecar could not repair) are not claimed by the part
/// around them: archiving them later (the backfill, a late repair) writes them, once.
#[test]
fn ids_missing_inside_a_run_stay_unclaimed_so_a_later_archive_fills_them() {
    let moto = Moto::start();
    let store = moto.store(moto.settings());
    let start_us = 1_795_957_200_000_000;
    let mut holed = rows(1..=10, start_us);
    holed.extend(rows(21..=30, start_us));
    let first = runtime()
        .block_on(store.archive("BNBUSDT", &holed))
        .expect("archived");
    assert_eq!(first.written, 20, "{first:?}");
    let filled = runtime()
        .block_on(store.archive("BNBUSDT", &rows(1..=30, start_us)))
        .expect("archived");
    assert_eq!((filled.written, filled.skipped), (10, 20), "{filled:?}");
    let ids: Vec<i64> = archived(&store, "BNBUSDT")
        .iter()
        .map(|r| r.trade_id)
        .collect();
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
}

#[test]
fn big_parts_go_up_as_multipart_uploads_whole() {
    let moto = Moto::start();
    let store = moto.store(S3Config {
        multipart_threshold_bytes: 6 * 1024 * 1024,
        multipart_part_bytes: 5 * 1024 * 1024,
        ..moto.settings()
    });
    // 12 MiB of bytes that do not repeat in a 5 MiB period: three parts, the last short.
    let bytes: Vec<u8> = (0..12 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    runtime().block_on(async {
        store
            .put("bronze/big.bin", bytes.clone())
            .await
            .expect("put");
        let back = store.get("bronze/big.bin").await.expect("get");
        assert!(back == bytes[..], "the object read back differs");
        let open = store
            .client()
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .expect("list uploads");
        assert!(open.uploads().is_empty(), "uploads left open: {open:?}");
    });
}

/// The run configuration of a child `hotpath run` against the simulator and moto.
fn run_toml(sim: &Sim, moto: &Moto, duration_s: u64) -> String {
    format!(
        "[binance]\nendpoint = \"{}\"\nsymbols = [\"BTCUSDT\", \"ETHUSDT\"]\n\
         streams = [\"trade\"]\n[readers]\ncores = [0]\nbackoff_initial_ms = 20\n\
         backoff_max_ms = 200\n[run]\nduration_s = {duration_s}\n\
         [s3]\nenabled = true\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\nforce_path_style = true\nclose_grace_ms = 500\n\
         [http]\nlisten = \"0\"\n",
        sim.endpoint(),
        moto.endpoint()
    )
}

/// Runs the `hotpath` binary with test AWS credentials and an API key; its stdout.
fn hotpath(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("BINANCE_API_KEY", "s3-test-key")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("hotpath runs");
    assert!(
        out.status.success(),
        "hotpath {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The archived trades of `symbol` equal the simulator's: ids once and in order (from the
/// first archived to the last), prices, quantities and sides exact, times to the millisecond
/// (REST's resolution, for repaired and backfilled trades).
fn assert_matches_ground_truth(sim: &Sim, store: &Store, symbol: &str) -> Vec<i64> {
    let rows = archived(store, symbol);
    let ids: Vec<i64> = rows.iter().map(|r| r.trade_id).collect();
    assert_exactly_once(sim, symbol, &ids, "s3");
    let index = sim.handle().shared.symbol_index(symbol).expect("a symbol");
    let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
    let truth = exchange.market(index).trades_from(ids[0]);
    for (row, t) in rows.iter().zip(truth) {
        assert_eq!(
            (row.trade_id, row.price, row.qty, row.is_buyer_maker),
            (t.id, t.price, t.qty, t.buyer_maker),
            "{symbol}"
        );
        assert_eq!(
            row.trade_time_us / 1000,
            t.time_us / 1000,
            "{symbol} {}",
            t.id
        );
    }
    ids
}

#[test]
fn live_archive_restart_and_backfill_hold_every_trade_exactly_once() {
    let sim = crate::sinks::sim();
    let moto = Moto::start();
    let store = moto.store(moto.settings());
    let dir = TempDir::new("s3-live");
    let config = dir.path().join("run.toml");
    std::fs::write(&config, run_toml(&sim, &moto, 3)).expect("write the config");
    let config = config.to_string_lossy().into_owned();
    let started_ms = hotpath::clock::unix_ms();
    for round in 0..2 {
        let summary: serde_json::Value =
            serde_json::from_str(hotpath(&["run", "--config", &config]).trim())
                .expect("a JSON summary");
        let s3 = &summary["sinks"]["s3"];
        assert_eq!(s3["flushed"], true, "round {round}: {s3}\n{}", moto.log());
        assert_eq!(s3["dropped"], 0, "round {round}: {s3}");
        assert!(s3["written"].as_u64() > Some(0), "round {round}: {s3}");
    }
    // Two runs with a pause between them: each symbol's parts hold the trades of both, once,
    // and not those traded while nothing ran.
    let mut lasts = BTreeMap::new();
    for symbol in SYMBOLS {
        let ids = archived(&store, symbol)
            .iter()
            .map(|r| r.trade_id)
            .collect::<Vec<_>>();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{symbol}: {ids:?}");
        lasts.insert(symbol, *ids.last().expect("trades"));
    }
    // The backfill fills the pause (and finds the rest archived): then every trade from the
    // start to the last archived one is there exactly once.
    let to_ms = hotpath::clock::unix_ms() + 1;
    let from = (started_ms - 1000).to_string();
    let to = to_ms.to_string();
    for symbol in SYMBOLS {
        let report: serde_json::Value = serde_json::from_str(
            hotpath(&[
                "backfill", "trades", "--config", &config, "--symbol", symbol, "--from", &from,
                "--to", &to,
            ])
            .trim(),
        )
        .expect("a JSON report");
        assert!(report["written"].as_u64() > Some(0), "{symbol}: {report}");
        assert!(report["skipped"].as_u64() > Some(0), "{symbol}: {report}");
        let ids = assert_matches_ground_truth(&sim, &store, symbol);
        assert!(ids.last() >= lasts.get(symbol), "{symbol}");
        let first_in_range = sim_first_at(&sim, symbol, started_ms - 1000);
        assert_eq!(ids.first(), first_in_range.as_ref(), "{symbol}");
        // Again: nothing new.
        let again: serde_json::Value = serde_json::from_str(
            hotpath(&[
                "backfill", "trades", "--config", &config, "--symbol", symbol, "--from", &from,
                "--to", &to,
            ])
            .trim(),
        )
        .expect("a JSON report");
        assert_eq!(again["written"], 0, "{symbol}: {again}");
    }
    let hours = (to_ms * 1000 - started_ms * 1000) / HOUR_US + 1;
    assert!(hours <= 2, "a test of minutes spans at most two hours");
}

/// The first trade of `symbol` at or after `from_ms`, by the simulator's journal.
fn sim_first_at(sim: &Sim, symbol: &str, from_ms: i64) -> Option<i64> {
    let index = sim.handle().shared.symbol_index(symbol).expect("a symbol");
    let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
    exchange
        .market(index)
        .trades_from(i64::MIN)
        .find(|t| t.time_us / 1000 >= from_ms)
        .map(|t| t.id)
}

/// Every object under `{prefix}/binance/{dataset}/symbol={symbol}/`, in key order.
fn objects(store: &Store, dataset: &str, symbol: &str) -> Vec<(String, bytes::Bytes)> {
    let prefix = format!(
        "{}/binance/{dataset}/symbol={symbol}/",
        store.config().prefix
    );
    runtime().block_on(async {
        let mut out = Vec::new();
        for key in store.list(&prefix).await.expect("list") {
            let bytes = store.get(&key).await.expect("get");
            out.push((key, bytes));
        }
        out
    })
}

/// Every candle of `symbol` in the bucket's `interval` parts, ordered by open time; each part's
/// name matches its first and last open time.
fn archived_candles(store: &Store, interval: &str, symbol: &str) -> Vec<hotpath::kline::Candle> {
    let mut all = Vec::new();
    for (key, bytes) in objects(store, &format!("klines/interval={interval}"), symbol) {
        let candles =
            hotpath::archive::klines::decode(bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
        let ends = (
            candles.first().map(|c| c.open_ms),
            candles.last().map(|c| c.open_ms),
        );
        let named = parse_part(&key).unwrap_or_else(|| panic!("{key}: not a part name"));
        assert_eq!(ends, (Some(named.0), Some(named.1)), "{key}");
        all.extend(candles);
    }
    all.sort_by_key(|c| c.open_ms);
    all
}

/// The candle of `symbol`'s journaled trades in `[open_ms, open_ms + interval_ms)`, computed
/// here from the simulator's journal (mantissas at 10^-18); `None` without trades.
fn truth_candle(
    sim: &Sim,
    symbol: &str,
    open_ms: i64,
    interval_ms: i64,
) -> Option<hotpath::kline::Candle> {
    let index = sim.handle().shared.symbol_index(symbol).expect("a symbol");
    let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
    let trades: Vec<_> = exchange
        .market(index)
        .trades_from(i64::MIN)
        .filter(|t| (open_ms..open_ms + interval_ms).contains(&t.time_us.div_euclid(1000)))
        .copied()
        .collect();
    let e10 = |m: i64| i128::from(m) * 10_000_000_000;
    let (first, last) = (trades.first()?, trades.last()?);
    let taker_buys = || trades.iter().filter(|t| !t.buyer_maker);
    let quote = |t: &&hotpath::sim::market::Trade| i128::from(t.price) * i128::from(t.qty) * 100;
    Some(hotpath::kline::Candle {
        open_ms,
        close_ms: open_ms + interval_ms - 1,
        open: e10(first.price),
        high: e10(trades.iter().map(|t| t.price).max()?),
        low: e10(trades.iter().map(|t| t.price).min()?),
        close: e10(last.price),
        volume: trades.iter().map(|t| e10(t.qty)).sum(),
        quote_volume: trades.iter().map(|t| quote(&t)).sum(),
        taker_buy_volume: taker_buys().map(|t| e10(t.qty)).sum(),
        taker_buy_quote_volume: taker_buys().map(|t| quote(&t)).sum(),
        trades: trades.len() as u64,
        first_id: first.id,
        last_id: last.id,
        inexact: false,
        missing_trades: 0,
    })
}

/// A live run with Redis (which keeps books, so the sidecar fetches depth snapshots) and the
/// S3 archive building 1-second candles (the 1m code path, at a test's pace), run twice: the
/// candles in the bucket equal the ones computed from the simulator's journal, each open time
/// once across both runs (a restart duplicates none); the snapshot parts equal the
/// simulator's book at their `lastUpdateId`; pyarrow reads the candles as exact decimals.
#[test]
fn live_candles_and_depth_snapshots_match_the_simulator_and_a_restart_duplicates_none() {
    let sim = crate::sinks::sim();
    let moto = Moto::start();
    let redis = crate::servers::RedisServer::start();
    let store = moto.store(moto.settings());
    let dir = TempDir::new("s3-candles");
    let config = dir.path().join("run.toml");
    let toml = run_toml(&sim, &moto, 4)
        .replace("streams = [\"trade\"]", "streams = [\"trade\", \"depth\"]")
        .replace(
            "close_grace_ms = 500\n",
            "close_grace_ms = 500\nkline_interval = \"1s\"\n",
        )
        + &format!("[redis]\nenabled = true\nurl = \"{}\"\n", redis.url());
    std::fs::write(&config, toml).expect("write the config");
    let config = config.to_string_lossy().into_owned();
    let mut written = 0;
    for round in 0..2 {
        let summary: serde_json::Value =
            serde_json::from_str(hotpath(&["run", "--config", &config]).trim())
                .expect("a JSON summary");
        let s3 = &summary["sinks"]["s3"];
        assert_eq!(s3["flushed"], true, "round {round}: {s3}\n{}", moto.log());
        let archive = &s3["archive"];
        assert!(archive["klines_written"].as_u64() > Some(0), "{archive}");
        assert_eq!(archive["klines_dropped"], 0, "{archive}");
        written += archive["klines_written"].as_u64().unwrap_or(0);
        assert!(
            summary["sidecar"]["snapshots_archived"].as_u64() > Some(0),
            "{}",
            summary["sidecar"]
        );
        assert_eq!(
            archive["snapshots_written"],
            summary["sidecar"]["snapshots_archived"]
        );
    }
    for symbol in SYMBOLS {
        let candles = archived_candles(&store, "1s", symbol);
        assert!(candles.len() >= 4, "{symbol}: {}", candles.len());
        assert!(
            candles.windows(2).all(|w| w[0].open_ms < w[1].open_ms),
            "{symbol}: an open time twice"
        );
        for c in &candles {
            match truth_candle(&sim, symbol, c.open_ms, 1000) {
                Some(truth) => assert_eq!(*c, truth, "{symbol}"),
                None => assert_eq!(
                    c.trades, 0,
                    "{symbol} {}: trades the journal lacks",
                    c.open_ms
                ),
            }
        }
        assert_snapshots_match(&sim, &store, symbol);
    }
    let total: usize = SYMBOLS
        .iter()
        .map(|s| archived_candles(&store, "1s", s).len())
        .sum();
    assert_eq!(total as u64, written, "each candle written once");
    let read = pyarrow_klines(&store, TempDir::new("pyarrow-klines").path());
    assert_eq!(read.len(), total);
    for v in &read {
        let symbol = v["symbol"].as_str().expect("a symbol");
        let open_ms = v["open_ms"].as_i64().expect("an open time");
        let c = archived_candles(&store, "1s", symbol)
            .into_iter()
            .find(|c| c.open_ms == open_ms)
            .expect("the candle");
        assert_eq!(v["close"].as_str(), Some(decimal18(c.close).as_str()));
        assert_eq!(
            v["quote_volume"].as_str(),
            Some(decimal18(c.quote_volume).as_str())
        );
        assert_eq!(v["trade_count"].as_u64(), Some(c.trades));
    }
}

/// A mantissa at 10^-18 as pyarrow prints a `decimal128(38, 18)`.
fn decimal18(m: i128) -> String {
    let unit = 10i128.pow(18);
    let sign = if m < 0 { "-" } else { "" };
    format!("{sign}{}.{:018}", (m / unit).abs(), (m % unit).abs())
}

/// Every snapshot part of `symbol` equals the simulator's book at its `lastUpdateId` (as many
/// levels as it holds); there is at least one.
fn assert_snapshots_match(sim: &Sim, store: &Store, symbol: &str) {
    let parts = objects(store, "depth_snapshots", symbol);
    assert!(!parts.is_empty(), "{symbol}: no snapshot archived");
    let index = sim.handle().shared.symbol_index(symbol).expect("a symbol");
    for (key, bytes) in parts {
        let rows =
            hotpath::archive::snapshots::decode(bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(
            key.ends_with(&format!("part-{}.parquet", rows.last_update_id)),
            "{key}"
        );
        let hour = hour_of(rows.fetch_time_us).rem_euclid(24);
        assert!(key.contains(&format!("hour={hour:02}/")), "{key}");
        let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
        let truth = exchange
            .market(index)
            .book_at(rows.last_update_id)
            .expect("in the journal");
        assert!(!rows.bids.is_empty() && !rows.asks.is_empty(), "{key}");
        let want = |side: &[(i64, i64)], n| side.iter().take(n).copied().collect::<Vec<_>>();
        assert_eq!(rows.bids, want(&truth.bids, rows.bids.len()), "{key}");
        assert_eq!(rows.asks, want(&truth.asks, rows.asks.len()), "{key}");
    }
}

/// pyarrow's reading of every klines part under the store's prefix (Hive partitions), one
/// JSON object per candle.
fn pyarrow_klines(store: &Store, dir: &Path) -> Vec<serde_json::Value> {
    let python = std::env::var("HOTPATH_PYTHON").unwrap_or_else(|_| {
        panic!("HOTPATH_PYTHON is not set: run `source scripts/servers.sh; ensure_venv`")
    });
    let root = dir.join("bucket");
    runtime().block_on(async {
        for key in store.list(&store.config().prefix).await.expect("list") {
            let bytes = store.get(&key).await.expect("get");
            let path = root.join(&key);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, &bytes).expect("write");
        }
    });
    let script = r#"
import json, sys
import pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
assert str(table.schema.field("close").type) == "decimal128(38, 18)", table.schema
assert str(table.schema.field("open_time").type) == "timestamp[ms, tz=UTC]", table.schema
for r in table.to_pylist():
    print(json.dumps({
        "symbol": r["symbol"], "interval": str(r["interval"]),
        "open_ms": int(r["open_time"].timestamp() * 1000),
        "close": str(r["close"]), "quote_volume": str(r["quote_volume"]),
        "trade_count": r["trade_count"],
    }))
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(root.join(&store.config().prefix).join("binance/klines"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// `hotpath backfill klines --s3` writes the simulator's REST klines (checked against the
/// journal) into the klines layout; run again it writes nothing; the live writer's and the
/// backfill's parts never overlap.
#[test]
fn backfill_klines_to_s3_matches_the_simulator_and_resumes_without_duplicates() {
    // 25 minutes of history, so 1 s klines need two pages of 1000.
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 100.0;
        c.exchange.history_s = 1_500;
    });
    let moto = Moto::start();
    let store = moto.store(moto.settings());
    let dir = TempDir::new("s3-kbackfill");
    let config = dir.path().join("run.toml");
    std::fs::write(&config, run_toml(&sim, &moto, 1)).expect("write the config");
    let config = config.to_string_lossy().into_owned();
    let now = hotpath::clock::unix_ms();
    let (from, to) = ((now - 1_300_000).to_string(), (now - 5_000).to_string());
    let rest = format!("http://{}", sim.handle().addr);
    let backfill = || -> serde_json::Value {
        serde_json::from_str(
            hotpath(&[
                "backfill",
                "klines",
                "--s3",
                "--config",
                &config,
                "--symbol",
                "BTCUSDT",
                "--interval",
                "1s",
                "--from",
                &from,
                "--to",
                &to,
                "--rest",
                &rest,
            ])
            .trim(),
        )
        .expect("a JSON report")
    };
    let first = backfill();
    assert!(first["s3_written"].as_u64() > Some(1000), "{first}");
    assert!(first["s3_pages"].as_u64() >= Some(2), "{first}");
    let again = backfill();
    assert_eq!(again["s3_written"], 0, "{again}");
    assert_eq!(again["s3_skipped"], first["s3_written"], "{again}");
    let candles = archived_candles(&store, "1s", "BTCUSDT");
    assert_eq!(
        candles.len() as u64,
        first["s3_written"].as_u64().unwrap_or(0)
    );
    assert!(
        candles
            .windows(2)
            .all(|w| w[1].open_ms == w[0].open_ms + 1000),
        "no hole, no duplicate"
    );
    for c in candles.iter().step_by(37) {
        let truth = truth_candle(&sim, "BTCUSDT", c.open_ms, 1000);
        match truth {
            // REST klines carry no trade ids: null in the part.
            Some(t) => assert_eq!(
                *c,
                hotpath::kline::Candle {
                    first_id: -1,
                    last_id: -1,
                    ..t
                }
            ),
            None => assert_eq!(c.trades, 0),
        }
    }
}
