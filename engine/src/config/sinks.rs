//! The sinks' settings: the `[kinesis]` and `[redis]` tables of the run configuration. Both
//! are off unless `enabled = true` (or the `--kinesis-endpoint` / `--redis` flags). Every value
//! is checked, and errors name the key (`kinesis.linger_ms: ...`).
//!
//! ```toml
//! [kinesis]
//! enabled = true
//! # region = "eu-west-1"          # default: the standard AWS chain (AWS_REGION, profile, IMDS)
//! # endpoint_url = "http://127.0.0.1:4567"   # an emulator; default: AWS
//! stream_trade = "market-sbe-trade"
//! stream_best_bid_ask = "market-sbe-bestbidask"
//! stream_depth = "market-sbe-depth"      # depth diffs and depth20 snapshots
//! stream_kline = "market-kline"   # closed candles ([klines]), Binance's kline event JSON
//! layout = "per-type"             # "per-type": the three streams above; "single": every
//!                                 # market record to stream_market (seed 003's layout)
//! stream_market = "bitcoin-market-data"  # with layout = "single"
//! payload = "sbe"                 # "sbe": the raw frame; "json": normalized JSON; "avro":
//!                                 # seed 003's MarketData, single-object encoded
//! aggregate = "auto"              # KPL-aggregated records: "auto" (per shard, only when its plain
//!                                 # records would pass 1000/s; consumers de-aggregate), true, false
//! shard_refresh_s = 60            # the streams' shards are listed again this often; 0: at start
//!                                 # and when a record lands on another shard than its lane's
//! linger_ms = 100                 # a record never waits longer for its batch to fill
//! batch_records_max = 500         # PutRecords limits: 500 records, 5 MiB
//! batch_bytes_max = 5242880
//! deliver_within_ms = 60000       # not delivered this long after it arrived: dead-letter file
//! dead_letter_path = "hotpath-dead-letters.jsonl"
//! retry_initial_ms = 100          # full-jitter backoff between retries
//! retry_max_ms = 5000
//! breaker_failures = 5            # consecutive failed requests that open the breaker
//! breaker_open_ms = 5000          # how long it stays open before one probe request
//! buffer_bytes_max = 268435456    # records held in memory at most (queued and in flight);
//!                                 # beyond, they wait in spill_path (with spill_bytes_max > 0;
//!                                 # 8388608 with the overflow bounds RSS during a stall)
//! # spill_path = "overflow.bin"  # the overflow file, first in first out; default:
//!                                 # dead_letter_path with ".spill" added
//! spill_bytes_max = 0             # the overflow's bound (e.g. 1073741824); beyond, the
//!                                 # dead-letter file; 0: no overflow. One file, first in first
//!                                 # out for every stream: a stream stuck behind its bound
//!                                 # delays the others' records behind it
//! heartbeat_stream = "hotpath-heartbeat"   # default with layout = "single": "ingestor-heartbeat"
//! heartbeat_interval_s = 30       # 0: no heartbeat
//! create_streams = false          # create missing streams (emulators, dev accounts)
//! idle = "backoff"                # when idle: "backoff", "blocking" or "busy_spin"
//!
//! [redis]
//! enabled = true
//! url = "redis://127.0.0.1:6379/0"   # or rediss://; a list in cluster_urls enables Cluster mode
//! # cluster_urls = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
//! trades_maxlen = 10000           # XADD MAXLEN ~ per trades stream
//! book_levels = 20                # top N levels per side written to ob:{SYMBOL}
//! snapshot_limit = 5000           # deepest REST /api/v3/depth limit used to sync the book
//! snapshot_concurrency = 4        # depth snapshots the sidecar fetches at once
//! sync_buffer_bytes_max = 67108864   # diffs held while books sync, across all symbols
//! consistency_check_s = 60        # each book checked against REST this often; 0: never
//! rest_endpoint = "https://api.binance.com"   # depth snapshots; default: derived from binance.endpoint
//! buffer_trades_max = 1000000     # trades held while Redis is down; beyond, the dead-letter file
//! dead_letter_path = "hotpath-redis-dead-letters.jsonl"   # its own file, not Kinesis'
//! reconnect_initial_ms = 100
//! reconnect_max_ms = 5000
//! connections = 2                 # pipelines in flight, one per connection; symbols sharded over them
//! keys = "hash-tag"               # "hash-tag": trades:{BTCUSDT}; "plain": trades:BTCUSDT (the
//!                                 # old services' names; not with cluster_urls)
//! raw_json = false                # add `raw_json` (Binance's <s>@trade JSON) to each trade entry
//! idle = "backoff"                # when idle: "backoff", "blocking" or "busy_spin"
//! linger_us = 0                   # µs new frames wait while no pipeline is in flight, so one
//!                                 # pipeline takes several; 0: at once; at most 10000
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::idle::IdleStrategy;

/// What a Kinesis record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The raw SBE frame, header included (decode with `hotpath decode` or this crate).
    Sbe,
    /// The normalized JSON object `hotpath decode` prints.
    Json,
    /// Seed 003's `MarketData` records (`schemas/avro/market_data.avsc`) in Avro single-object
    /// encoding, one or more per Kinesis record ([`crate::sink::kinesis::avro`]).
    Avro,
}

/// Which streams the market records go to (`kinesis.layout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// One stream per event type: `stream_trade`, `stream_best_bid_ask`, `stream_depth`.
    #[default]
    PerType,
    /// Every market record to `stream_market` (seed 003: `bitcoin-market-data`).
    Single,
}

/// The heartbeat stream's default with `layout = "single"` (seed 003's name).
pub const SINGLE_HEARTBEAT_STREAM: &str = "ingestor-heartbeat";

/// How the Redis keys of a symbol are named (`redis.keys`); the names themselves are made in
/// one place, `sink::redis::keys`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyLayout {
    /// `trades:{BTCUSDT}`, `ob:{BTCUSDT}`, ...: every key of a symbol in one Redis Cluster slot
    /// (`"hash-tag"`).
    #[default]
    HashTag,
    /// `trades:BTCUSDT`, `ob:BTCUSDT`, ...: the old services' names, so their consumers read
    /// hotpath unchanged (`"plain"`). Standalone Redis only: with Redis Cluster a symbol's keys
    /// would fall in different slots, and the atomic re-anchor's `MULTI`/`EXEC` needs one.
    Plain,
}

/// When the Kinesis writer aggregates (`kinesis.aggregate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Aggregate {
    /// Never: one Kinesis record per user record (`false`).
    Off,
    /// Always: one aggregated record per partition key per request (`true`).
    On,
    /// Per shard, only for a request whose plain records would take the shard past its 1000
    /// records/s (`"auto"`, the default: plain records past that are throttled by Kinesis, and
    /// the emulators take 10-20x fewer plain records per second than aggregated ones).
    #[default]
    Auto,
}

/// The Kinesis writer's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KinesisConfig {
    /// AWS region; `None` takes the standard chain's.
    pub region: Option<String>,
    /// Endpoint override (an emulator), `http://` or `https://`.
    pub endpoint_url: Option<String>,
    /// Stream of `trade` events.
    pub stream_trade: String,
    /// Stream of `bestBidAsk` events.
    pub stream_best_bid_ask: String,
    /// Stream of `depth` and `depth20` events.
    pub stream_depth: String,
    /// Stream of closed candles (`[klines]`), used only when klines are on.
    pub stream_kline: String,
    /// Which streams market records go to.
    pub layout: Layout,
    /// The one stream of every market record with [`Layout::Single`].
    pub stream_market: String,
    /// Record payload.
    pub payload: Payload,
    /// KPL aggregation.
    pub aggregate: Aggregate,
    /// Longest time a record waits for its batch.
    pub linger: Duration,
    /// Records per PutRecords, 1..=500.
    pub batch_records_max: usize,
    /// Bytes per PutRecords (data + partition keys), up to 5 MiB.
    pub batch_bytes_max: usize,
    /// A record not delivered this long after it entered the writer is dead-lettered.
    pub deliver_within: Duration,
    /// The dead-letter file (JSON Lines, see `sink::dlq`).
    pub dead_letter_path: PathBuf,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Consecutive failed requests that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_open: Duration,
    /// Bytes the records hold in memory at most, queued and in flight; beyond, new records
    /// wait in the spill file.
    pub buffer_bytes_max: usize,
    /// The overflow file (`sink::kinesis::spill`); `None`: [`KinesisConfig::spill_path`]'s
    /// default.
    pub spill_path: Option<PathBuf>,
    /// The overflow file's bound; beyond, records are dead-lettered. 0: no overflow.
    pub spill_bytes_max: u64,
    /// Heartbeat stream.
    pub heartbeat_stream: String,
    /// Heartbeat period; `None` disables it.
    pub heartbeat_interval: Option<Duration>,
    /// Create missing streams at start (one shard each).
    pub create_streams: bool,
    /// How often the streams' shards are listed again; `None`: only at start and when an
    /// answer shows a record on another shard than its lane's.
    pub shard_refresh: Option<Duration>,
    /// What the writer thread does when it has nothing to do.
    pub idle: IdleStrategy,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        KinesisConfig {
            region: None,
            endpoint_url: None,
            stream_trade: "market-sbe-trade".into(),
            stream_best_bid_ask: "market-sbe-bestbidask".into(),
            stream_depth: "market-sbe-depth".into(),
            stream_kline: "market-kline".into(),
            layout: Layout::PerType,
            stream_market: "bitcoin-market-data".into(),
            payload: Payload::Sbe,
            aggregate: Aggregate::Auto,
            linger: Duration::from_millis(100),
            batch_records_max: 500,
            batch_bytes_max: 5 << 20,
            deliver_within: Duration::from_secs(60),
            dead_letter_path: PathBuf::from("hotpath-dead-letters.jsonl"),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(5_000),
            breaker_failures: 5,
            breaker_open: Duration::from_millis(5_000),
            buffer_bytes_max: 256 << 20,
            spill_path: None,
            spill_bytes_max: 0,
            heartbeat_stream: "hotpath-heartbeat".into(),
            heartbeat_interval: Some(Duration::from_secs(30)),
            create_streams: false,
            shard_refresh: Some(Duration::from_secs(60)),
            idle: IdleStrategy::Backoff,
        }
    }
}

/// The Redis writer's settings. `Debug` prints the URLs with their passwords as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Standalone server URL.
    pub url: String,
    /// Cluster seed URLs; non-empty selects Redis Cluster.
    pub cluster_urls: Vec<String>,
    /// `XADD MAXLEN ~` of each trades stream; at least 1.
    pub trades_maxlen: usize,
    /// Levels per side in `ob:{SYMBOL}`, 1..=5000.
    pub book_levels: usize,
    /// The deepest `limit` of the REST depth snapshots that sync a book, 1..=5000 and at
    /// least `book_levels` (the sidecar asks for less, never below `book_levels`, when many
    /// symbols sync at once and the weight budget is short).
    pub snapshot_limit: u32,
    /// Depth snapshots the sidecar fetches at once, 1..=64.
    pub snapshot_concurrency: usize,
    /// Bytes of depth diffs held across all symbols while their books sync (and while a
    /// consistency check waits for its snapshot); beyond, a symbol's oldest are dropped and
    /// its book stays stale until a newer snapshot.
    pub sync_buffer_bytes_max: usize,
    /// How often each book is compared with a REST snapshot; `None` (0 s): never.
    pub consistency_check: Option<Duration>,
    /// Binance REST base URL of the books' depth snapshots (the sidecar fetches them); `None`
    /// derives it from `binance.endpoint`.
    pub rest_endpoint: Option<String>,
    /// Trades held in memory while Redis is unreachable; beyond, the oldest go to the
    /// dead-letter file.
    pub buffer_trades_max: usize,
    /// The dead-letter file (JSON Lines, see `sink::dlq`): trades beyond the buffer, left at
    /// the shutdown deadline, or that cannot be placed in their stream.
    pub dead_letter_path: PathBuf,
    /// First reconnect delay.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Connections the writer writes over, 1..=64, each with one pipeline in flight: symbol
    /// `i` (in index order) always goes over connection `i % connections`, so a symbol's
    /// writes stay in order and one slow reply holds up only the symbols of its connection.
    pub connections: usize,
    /// How the keys are named: hash-tagged (the default) or the old services' plain names.
    pub keys: KeyLayout,
    /// Each `trades:` entry also carries `raw_json`: the trade as Binance's `<s>@trade` JSON
    /// event.
    pub raw_json: bool,
    /// What the writer thread does when it has nothing to do.
    pub idle: IdleStrategy,
    /// How long frames taken while no pipeline is in flight wait before they are written
    /// (until the oldest is this old), so that one wake-up and one pipeline carry several at
    /// low rates ([`crate::idle::Idler::with_linger`]); zero (the default): written at once,
    /// batches growing with the load while a pipeline is in flight. At most
    /// [`crate::constants::REDIS_LINGER_MAX`]. Ignored with `busy_spin`.
    pub linger: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            cluster_urls: Vec::new(),
            trades_maxlen: 10_000,
            book_levels: 20,
            snapshot_limit: 5000,
            snapshot_concurrency: 4,
            sync_buffer_bytes_max: 64 << 20,
            consistency_check: Some(Duration::from_secs(60)),
            rest_endpoint: None,
            buffer_trades_max: 1_000_000,
            dead_letter_path: PathBuf::from("hotpath-redis-dead-letters.jsonl"),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(5_000),
            connections: 2,
            keys: KeyLayout::HashTag,
            raw_json: false,
            idle: IdleStrategy::Backoff,
            linger: crate::constants::REDIS_LINGER_DEFAULT,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cluster: Vec<String> = self
            .cluster_urls
            .iter()
            .map(|u| super::redact_url(u))
            .collect();
        f.debug_struct("RedisConfig")
            .field("url", &super::redact_url(&self.url))
            .field("cluster_urls", &cluster)
            .field("trades_maxlen", &self.trades_maxlen)
            .field("book_levels", &self.book_levels)
            .field("snapshot_limit", &self.snapshot_limit)
            .field("snapshot_concurrency", &self.snapshot_concurrency)
            .field("sync_buffer_bytes_max", &self.sync_buffer_bytes_max)
            .field("consistency_check", &self.consistency_check)
            .field("rest_endpoint", &self.rest_endpoint)
            .field("buffer_trades_max", &self.buffer_trades_max)
            .field("dead_letter_path", &self.dead_letter_path)
            .field("reconnect_initial", &self.reconnect_initial)
            .field("reconnect_max", &self.reconnect_max)
            .field("connections", &self.connections)
            .field("keys", &self.keys)
            .field("raw_json", &self.raw_json)
            .field("idle", &self.idle)
            .field("linger", &self.linger)
            .finish()
    }
}

/// `[kinesis]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawKinesis {
    enabled: Option<bool>,
    region: Option<String>,
    endpoint_url: Option<String>,
    stream_trade: Option<String>,
    stream_best_bid_ask: Option<String>,
    stream_depth: Option<String>,
    stream_kline: Option<String>,
    layout: Option<String>,
    stream_market: Option<String>,
    payload: Option<String>,
    aggregate: Option<RawAggregate>,
    linger_ms: Option<u64>,
    batch_records_max: Option<usize>,
    batch_bytes_max: Option<usize>,
    deliver_within_ms: Option<u64>,
    dead_letter_path: Option<PathBuf>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    breaker_failures: Option<u32>,
    breaker_open_ms: Option<u64>,
    buffer_bytes_max: Option<usize>,
    spill_path: Option<PathBuf>,
    spill_bytes_max: Option<u64>,
    heartbeat_stream: Option<String>,
    heartbeat_interval_s: Option<u64>,
    create_streams: Option<bool>,
    shard_refresh_s: Option<u64>,
    idle: Option<String>,
}

/// `kinesis.aggregate` as written: a boolean or a word.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawAggregate {
    Flag(bool),
    Word(String),
}

/// `[redis]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRedis {
    enabled: Option<bool>,
    url: Option<String>,
    cluster_urls: Option<Vec<String>>,
    trades_maxlen: Option<usize>,
    book_levels: Option<usize>,
    snapshot_limit: Option<u32>,
    snapshot_concurrency: Option<usize>,
    sync_buffer_bytes_max: Option<usize>,
    consistency_check_s: Option<u64>,
    rest_endpoint: Option<String>,
    buffer_trades_max: Option<usize>,
    dead_letter_path: Option<PathBuf>,
    reconnect_initial_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    connections: Option<usize>,
    keys: Option<String>,
    raw_json: Option<bool>,
    idle: Option<String>,
    linger_us: Option<u64>,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

fn ms(value: Option<u64>) -> Option<Duration> {
    value.map(Duration::from_millis)
}

impl RawKinesis {
    /// The validated settings (checked whether or not the section enables the writer), and
    /// the same settings again when it does.
    pub(crate) fn into_parts(self) -> Result<(KinesisConfig, Option<KinesisConfig>), ConfigError> {
        let enabled = self.enabled.unwrap_or(false);
        let mut c = KinesisConfig {
            region: self.region,
            endpoint_url: self.endpoint_url,
            ..KinesisConfig::default()
        };
        set(&mut c.stream_trade, self.stream_trade);
        set(&mut c.stream_best_bid_ask, self.stream_best_bid_ask);
        set(&mut c.stream_depth, self.stream_depth);
        set(&mut c.stream_kline, self.stream_kline);
        if let Some(payload) = self.payload {
            c.payload = match payload.as_str() {
                "sbe" => Payload::Sbe,
                "json" => Payload::Json,
                "avro" => Payload::Avro,
                other => {
                    return Err(ConfigError::invalid(format!(
                        "kinesis.payload = {other:?}: must be \"sbe\", \"json\" or \"avro\""
                    )));
                }
            };
        }
        if let Some(layout) = self.layout {
            c.layout = match layout.as_str() {
                "per-type" => Layout::PerType,
                "single" => Layout::Single,
                other => {
                    return Err(ConfigError::invalid(format!(
                        "kinesis.layout = {other:?}: must be \"per-type\" or \"single\""
                    )));
                }
            };
            if c.layout == Layout::Single {
                c.heartbeat_stream = SINGLE_HEARTBEAT_STREAM.into();
            }
        }
        set(&mut c.stream_market, self.stream_market);
        if let Some(aggregate) = self.aggregate {
            c.aggregate = match aggregate {
                RawAggregate::Flag(false) => Aggregate::Off,
                RawAggregate::Flag(true) => Aggregate::On,
                RawAggregate::Word(w) if w == "auto" => Aggregate::Auto,
                RawAggregate::Word(other) => {
                    return Err(ConfigError::invalid(format!(
                        "kinesis.aggregate = {other:?}: must be true, false or \"auto\""
                    )));
                }
            };
        }
        set(&mut c.linger, ms(self.linger_ms));
        set(&mut c.batch_records_max, self.batch_records_max);
        set(&mut c.batch_bytes_max, self.batch_bytes_max);
        set(&mut c.deliver_within, ms(self.deliver_within_ms));
        set(&mut c.dead_letter_path, self.dead_letter_path);
        set(&mut c.retry_initial, ms(self.retry_initial_ms));
        set(&mut c.retry_max, ms(self.retry_max_ms));
        set(&mut c.breaker_failures, self.breaker_failures);
        set(&mut c.breaker_open, ms(self.breaker_open_ms));
        set(&mut c.buffer_bytes_max, self.buffer_bytes_max);
        if self.spill_path.is_some() {
            c.spill_path = self.spill_path;
        }
        set(&mut c.spill_bytes_max, self.spill_bytes_max);
        set(&mut c.heartbeat_stream, self.heartbeat_stream);
        if let Some(s) = self.heartbeat_interval_s {
            c.heartbeat_interval = (s > 0).then(|| Duration::from_secs(s));
        }
        set(&mut c.create_streams, self.create_streams);
        if let Some(s) = self.shard_refresh_s {
            c.shard_refresh = (s > 0).then(|| Duration::from_secs(s));
        }
        set(&mut c.idle, super::idle("kinesis.idle", self.idle)?);
        c.check()?;
        Ok((c.clone(), enabled.then_some(c)))
    }
}

impl KinesisConfig {
    /// The overflow file: `spill_path`, else `dead_letter_path` with `.spill` added.
    pub fn spill_path(&self) -> PathBuf {
        self.spill_path.clone().unwrap_or_else(|| {
            let mut path = self.dead_letter_path.clone().into_os_string();
            path.push(".spill");
            PathBuf::from(path)
        })
    }

    /// Checks every value, naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (key, name) in [
            ("stream_trade", &self.stream_trade),
            ("stream_best_bid_ask", &self.stream_best_bid_ask),
            ("stream_depth", &self.stream_depth),
            ("stream_kline", &self.stream_kline),
            ("stream_market", &self.stream_market),
            ("heartbeat_stream", &self.heartbeat_stream),
        ] {
            check_stream_name(key, name)?;
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(format!(
                "kinesis.endpoint_url = {url:?}: must start with http:// or https://"
            )));
        }
        if self.region.as_ref().is_some_and(|r| r.is_empty()) {
            return Err(ConfigError::invalid(
                "kinesis.region: empty (omit it to use the AWS chain)",
            ));
        }
        if !(1..=500).contains(&self.batch_records_max) {
            return Err(ConfigError::invalid(format!(
                "kinesis.batch_records_max = {}: must be within 1..=500 (the PutRecords limit)",
                self.batch_records_max
            )));
        }
        if !((1 << 20) + 256..=5 << 20).contains(&self.batch_bytes_max) {
            return Err(ConfigError::invalid(format!(
                "kinesis.batch_bytes_max = {}: must be within 1048832..=5242880 (one full \
                 record up to the PutRecords limit of 5 MiB)",
                self.batch_bytes_max
            )));
        }
        for (key, value) in [
            ("linger_ms", self.linger),
            ("deliver_within_ms", self.deliver_within),
            ("retry_initial_ms", self.retry_initial),
            ("breaker_open_ms", self.breaker_open),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(format!(
                    "kinesis.{key}: must be above 0"
                )));
            }
        }
        if self.retry_max < self.retry_initial {
            return Err(ConfigError::invalid(
                "kinesis.retry_max_ms: must be at least kinesis.retry_initial_ms",
            ));
        }
        if self.breaker_failures == 0 {
            return Err(ConfigError::invalid(
                "kinesis.breaker_failures: must be above 0",
            ));
        }
        if self.buffer_bytes_max < self.batch_bytes_max {
            return Err(ConfigError::invalid(
                "kinesis.buffer_bytes_max: must be at least kinesis.batch_bytes_max",
            ));
        }
        if self.dead_letter_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("kinesis.dead_letter_path: empty"));
        }
        if self
            .spill_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "kinesis.spill_path: empty (remove it for the default path; kinesis.spill_bytes_max = 0 turns the overflow off)",
            ));
        }
        if self.spill_path() == self.dead_letter_path {
            return Err(ConfigError::invalid(
                "kinesis.spill_path: must not be kinesis.dead_letter_path",
            ));
        }
        Ok(())
    }
}

/// Kinesis stream names: 1-128 of `a-zA-Z0-9_.-`.
fn check_stream_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let valid = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(format!(
            "kinesis.{key} = {name:?}: a stream name is 1-128 characters of a-z, A-Z, 0-9, _ . -"
        )))
    }
}

impl RawRedis {
    /// The validated settings (checked whether or not the section enables the writer), and
    /// the same settings again when it does.
    pub(crate) fn into_parts(self) -> Result<(RedisConfig, Option<RedisConfig>), ConfigError> {
        let enabled = self.enabled.unwrap_or(false);
        let mut c = RedisConfig {
            rest_endpoint: self.rest_endpoint,
            ..RedisConfig::default()
        };
        set(&mut c.url, self.url);
        set(&mut c.cluster_urls, self.cluster_urls);
        set(&mut c.trades_maxlen, self.trades_maxlen);
        set(&mut c.book_levels, self.book_levels);
        set(&mut c.snapshot_limit, self.snapshot_limit);
        set(&mut c.snapshot_concurrency, self.snapshot_concurrency);
        set(&mut c.sync_buffer_bytes_max, self.sync_buffer_bytes_max);
        if let Some(seconds) = self.consistency_check_s {
            c.consistency_check = (seconds > 0).then(|| Duration::from_secs(seconds));
        }
        set(&mut c.buffer_trades_max, self.buffer_trades_max);
        set(&mut c.dead_letter_path, self.dead_letter_path);
        set(&mut c.reconnect_initial, ms(self.reconnect_initial_ms));
        set(&mut c.reconnect_max, ms(self.reconnect_max_ms));
        set(&mut c.connections, self.connections);
        if let Some(keys) = self.keys {
            c.keys = match keys.as_str() {
                "hash-tag" => KeyLayout::HashTag,
                "plain" => KeyLayout::Plain,
                other => {
                    return Err(ConfigError::invalid(format!(
                        "redis.keys = {other:?}: must be \"hash-tag\" or \"plain\""
                    )));
                }
            };
        }
        set(&mut c.raw_json, self.raw_json);
        set(&mut c.idle, super::idle("redis.idle", self.idle)?);
        set(&mut c.linger, self.linger_us.map(Duration::from_micros));
        c.check()?;
        Ok((c.clone(), enabled.then_some(c)))
    }
}

impl RedisConfig {
    /// Checks every value, naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        let url_ok = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
        if !url_ok(&self.url) {
            return Err(ConfigError::invalid(format!(
                "redis.url = {:?}: must start with redis:// or rediss://",
                super::redact_url(&self.url)
            )));
        }
        if let Some(bad) = self.cluster_urls.iter().find(|u| !url_ok(u)) {
            return Err(ConfigError::invalid(format!(
                "redis.cluster_urls: {:?} must start with redis:// or rediss://",
                super::redact_url(bad)
            )));
        }
        if self.trades_maxlen == 0 {
            return Err(ConfigError::invalid("redis.trades_maxlen: must be above 0"));
        }
        if !(1..=5000).contains(&self.book_levels) {
            return Err(ConfigError::invalid(format!(
                "redis.book_levels = {}: must be within 1..=5000",
                self.book_levels
            )));
        }
        if !(1..=5000).contains(&self.snapshot_limit)
            || (self.snapshot_limit as usize) < self.book_levels
        {
            return Err(ConfigError::invalid(format!(
                "redis.snapshot_limit = {}: must be within 1..=5000 and at least \
                 redis.book_levels = {}",
                self.snapshot_limit, self.book_levels
            )));
        }
        if !(1..=64).contains(&self.snapshot_concurrency) {
            return Err(ConfigError::invalid(format!(
                "redis.snapshot_concurrency = {}: must be within 1..=64",
                self.snapshot_concurrency
            )));
        }
        if self.sync_buffer_bytes_max < 1 << 20 {
            return Err(ConfigError::invalid(format!(
                "redis.sync_buffer_bytes_max = {}: must be at least 1048576 (1 MiB)",
                self.sync_buffer_bytes_max
            )));
        }
        if let Some(url) = &self.rest_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(format!(
                "redis.rest_endpoint = {url:?}: must start with http:// or https://"
            )));
        }
        if self.buffer_trades_max == 0 {
            return Err(ConfigError::invalid(
                "redis.buffer_trades_max: must be above 0",
            ));
        }
        if self.dead_letter_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("redis.dead_letter_path: empty"));
        }
        if self.reconnect_initial.is_zero() {
            return Err(ConfigError::invalid(
                "redis.reconnect_initial_ms: must be above 0",
            ));
        }
        if self.reconnect_max < self.reconnect_initial {
            return Err(ConfigError::invalid(
                "redis.reconnect_max_ms: must be at least redis.reconnect_initial_ms",
            ));
        }
        if !(1..=64).contains(&self.connections) {
            return Err(ConfigError::invalid(format!(
                "redis.connections = {}: must be within 1..=64",
                self.connections
            )));
        }
        if self.linger > crate::constants::REDIS_LINGER_MAX {
            return Err(ConfigError::invalid(format!(
                "redis.linger_us = {}: must be within 0..={}",
                self.linger.as_micros(),
                crate::constants::REDIS_LINGER_MAX.as_micros()
            )));
        }
        if self.keys == KeyLayout::Plain && !self.cluster_urls.is_empty() {
            return Err(ConfigError::invalid(
                "redis.keys = \"plain\": not with Redis Cluster (redis.cluster_urls): a \
                 symbol's plain keys fall in different slots, and the atomic re-anchor swaps \
                 them in one MULTI/EXEC, which needs one slot; use \"hash-tag\"",
            ));
        }
        Ok(())
    }

    /// The REST base URL: `rest_endpoint`, or the feed's endpoint with `ws` -> `http`
    /// (`wss://stream-sbe.binance.com:9443` becomes `https://api.binance.com`; the simulator
    /// serves REST on its WebSocket port).
    pub fn rest_base(&self, feed_endpoint: &str) -> String {
        super::sidecar::rest_base(self.rest_endpoint.as_deref(), feed_endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinesis(text: &str) -> Result<Option<KinesisConfig>, ConfigError> {
        toml::from_str::<RawKinesis>(text)
            .map_err(|e| ConfigError::invalid(e.to_string()))?
            .into_parts()
            .map(|(_, enabled)| enabled)
    }

    fn redis(text: &str) -> Result<Option<RedisConfig>, ConfigError> {
        toml::from_str::<RawRedis>(text)
            .map_err(|e| ConfigError::invalid(e.to_string()))?
            .into_parts()
            .map(|(_, enabled)| enabled)
    }

    #[test]
    fn sinks_are_off_unless_enabled() {
        assert_eq!(kinesis("linger_ms = 5").expect("valid"), None);
        assert_eq!(redis("").expect("valid"), None);
        let k = kinesis("enabled = true").expect("valid").expect("on");
        assert_eq!(k, KinesisConfig::default());
        let r = redis("enabled = true\nbook_levels = 5")
            .expect("valid")
            .expect("on");
        assert_eq!(r.book_levels, 5);
        assert_eq!(r.consistency_check, Some(Duration::from_secs(60)));
        let r = redis("enabled = true\nconsistency_check_s = 0")
            .expect("valid")
            .expect("on");
        assert_eq!(r.consistency_check, None, "0 turns the checks off");
    }

    #[test]
    fn key_layout_and_raw_json_are_read_and_plain_keys_refuse_a_cluster() {
        let r = redis("enabled = true").expect("valid").expect("on");
        assert_eq!((r.keys, r.raw_json), (KeyLayout::HashTag, false));
        let r = redis("enabled = true\nkeys = \"plain\"\nraw_json = true")
            .expect("valid")
            .expect("on");
        assert_eq!((r.keys, r.raw_json), (KeyLayout::Plain, true));
        let r = redis("enabled = true\nkeys = \"hash-tag\"\ncluster_urls = [\"redis://a:7000\"]");
        assert_eq!(r.expect("valid").expect("on").keys, KeyLayout::HashTag);
        let bad = redis("enabled = true\nkeys = \"flat\"").expect_err("unknown layout");
        assert!(bad.to_string().contains("redis.keys"), "{bad}");
        let bad = redis("enabled = true\nkeys = \"plain\"\ncluster_urls = [\"redis://a:7000\"]")
            .expect_err("plain keys on a cluster");
        let text = bad.to_string();
        assert!(
            text.contains("redis.keys") && text.contains("cluster_urls") && text.contains("slot"),
            "{text}"
        );
    }

    #[test]
    fn aggregate_is_a_flag_or_auto_and_shard_refresh_zero_is_never() {
        let k = kinesis("enabled = true").expect("valid").expect("on");
        assert_eq!(k.aggregate, Aggregate::Auto, "the default");
        for (text, expected) in [
            ("false", Aggregate::Off),
            ("true", Aggregate::On),
            ("\"auto\"", Aggregate::Auto),
        ] {
            let k = kinesis(&format!("enabled = true\naggregate = {text}"))
                .expect("valid")
                .expect("on");
            assert_eq!(k.aggregate, expected, "{text}");
        }
        let k = kinesis("enabled = true\nshard_refresh_s = 0")
            .expect("valid")
            .expect("on");
        assert_eq!(k.shard_refresh, None);
        let k = kinesis("enabled = true\nshard_refresh_s = 5")
            .expect("valid")
            .expect("on");
        assert_eq!(k.shard_refresh, Some(Duration::from_secs(5)));
    }

    #[test]
    fn avro_and_the_single_layout_take_seed_003s_stream_names() {
        let k = kinesis("enabled = true\npayload = \"avro\"\nlayout = \"single\"")
            .expect("valid")
            .expect("on");
        assert_eq!((k.payload, k.layout), (Payload::Avro, Layout::Single));
        assert_eq!(k.stream_market, "bitcoin-market-data");
        assert_eq!(k.heartbeat_stream, "ingestor-heartbeat");
        let k = kinesis(
            "enabled = true\nlayout = \"single\"\nstream_market = \"m\"\nheartbeat_stream = \"h\"",
        )
        .expect("valid")
        .expect("on");
        assert_eq!(
            (k.stream_market.as_str(), k.heartbeat_stream.as_str()),
            ("m", "h")
        );
        let k = kinesis("enabled = true\nlayout = \"per-type\"")
            .expect("valid")
            .expect("on");
        assert_eq!(
            (k.layout, k.heartbeat_stream.as_str()),
            (Layout::PerType, "hotpath-heartbeat")
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            (
                "enabled = true\nbatch_records_max = 501",
                "kinesis.batch_records_max",
            ),
            ("enabled = true\npayload = \"protobuf\"", "kinesis.payload"),
            ("enabled = true\nlayout = \"one\"", "kinesis.layout"),
            (
                "enabled = true\nstream_market = \"\"",
                "kinesis.stream_market",
            ),
            (
                "enabled = true\naggregate = \"always\"",
                "kinesis.aggregate",
            ),
            (
                "enabled = true\nstream_trade = \"a b\"",
                "kinesis.stream_trade",
            ),
            ("enabled = true\nlinger_ms = 0", "kinesis.linger_ms"),
            (
                "enabled = true\nendpoint_url = \"localhost:4567\"",
                "kinesis.endpoint_url",
            ),
            (
                "enabled = true\nbatch_bytes_max = 6000000",
                "kinesis.batch_bytes_max",
            ),
            (
                "enabled = true\nbuffer_bytes_max = 1048576",
                "kinesis.buffer_bytes_max",
            ),
            ("enabled = true\nspill_path = \"\"", "kinesis.spill_path"),
            (
                "enabled = true\ndead_letter_path = \"d\"\nspill_path = \"d\"",
                "kinesis.spill_path",
            ),
        ] {
            let e = kinesis(text).expect_err(text);
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(e.to_string().starts_with(key), "{text}: {e}");
        }
        for (text, key) in [
            ("enabled = true\nurl = \"http://x\"", "redis.url"),
            ("enabled = true\nbook_levels = 0", "redis.book_levels"),
            ("enabled = true\nconnections = 0", "redis.connections"),
            ("enabled = true\nconnections = 65", "redis.connections"),
            ("enabled = true\nlinger_us = 10001", "redis.linger_us"),
            (
                "enabled = true\nbook_levels = 50\nsnapshot_limit = 20",
                "redis.snapshot_limit",
            ),
            ("enabled = true\ntrades_maxlen = 0", "redis.trades_maxlen"),
            (
                "enabled = true\nsnapshot_concurrency = 0",
                "redis.snapshot_concurrency",
            ),
            (
                "enabled = true\nsync_buffer_bytes_max = 1000",
                "redis.sync_buffer_bytes_max",
            ),
            (
                "enabled = true\ndead_letter_path = \"\"",
                "redis.dead_letter_path",
            ),
        ] {
            let e = redis(text).expect_err(text);
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(e.to_string().starts_with(key), "{text}: {e}");
        }
        assert!(
            kinesis("enabeld = true").is_err(),
            "unknown keys are rejected"
        );
    }

    #[test]
    fn rest_base_follows_the_feed() {
        let r = RedisConfig::default();
        assert_eq!(r.rest_base("ws://127.0.0.1:9443"), "http://127.0.0.1:9443");
        assert_eq!(
            r.rest_base("wss://127.0.0.1:9443"),
            "https://127.0.0.1:9443"
        );
        assert_eq!(
            r.rest_base("wss://stream-sbe.binance.com:9443"),
            "https://api.binance.com"
        );
        // The JSON streams' path is not REST's.
        assert_eq!(
            r.rest_base("ws://127.0.0.1:9443/json"),
            "http://127.0.0.1:9443"
        );
        assert_eq!(
            r.rest_base("wss://stream.binance.com:9443/x/y"),
            "https://api.binance.com"
        );
    }
}
