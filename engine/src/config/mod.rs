//! The settings of `hotpath run`, the ingestion hot path: a TOML file (every key optional,
//! unknown keys rejected by name) plus command-line overrides, validated into [`RunConfig`].
//!
//! Two stages, as in the simulator's config: raw serde structs mirror the file, then
//! [`RunConfig::from_toml`] fills a validated [`RunConfig`] from them; [`RunConfig::apply`] lays
//! the command-line flags over it and [`RunConfig::validate`] checks the whole against this
//! machine (reader cores must exist). Errors name the key (`readers.cores: ...`) or the flag
//! (`--streams: ...`) at fault.
//!
//! The Binance API key is a secret: it never appears in the file (a key named `api_key` is
//! rejected), only in the environment variable named by `binance.api_key_env`, and the
//! [`ApiKey`] holding it prints as `ApiKey(<redacted>)`.
//!
//! ```toml
//! [binance]
//! endpoint = "wss://stream-sbe.binance.com:9443"  # hotpath adds /stream?streams=...
//! api_key_env = "BINANCE_API_KEY"                 # the variable's NAME, never the key
//! # trust_cert = "sim-cert.pem"                   # PEM trusted instead of the webpki roots
//! symbols = ["BTCUSDT", "ETHUSDT"]
//! streams = ["trade", "bestBidAsk", "depth", "depth20"]
//! symbols_per_connection = 50                     # x streams <= 1024 per connection
//! [readers]
//! cores = [1]                   # one reader thread per core id, pinned
//! ring_capacity = 65536         # per consumer ring, a power of two
//! silent_timeout_ms = 10000     # a connection silent this long is replaced
//! lifetime_ms = 86400000        # Binance: 24 h per connection
//! replace_before_ms = 600000    # open the replacement this long before the lifetime ends
//! overlap_max_ms = 2000         # old and new connections overlap at most this long
//! backoff_initial_ms = 250
//! backoff_max_ms = 30000
//! group_count_max = 65535
//! copy_frames = true            # copy accepted frames out of the socket buffer into pooled chunks
//! [run]
//! duration_s = 60               # omit to run until stopped
//! summary = true                # one JSON line on exit
//! ```
//!
//! The sinks' tables are documented in [`sinks`], the sidecar's in [`sidecar`], the control
//! plane's in [`http`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::binance::rest::RestFormat;
use crate::constants::GROUP_COUNT_MAX;
use crate::idle::IdleStrategy;
use crate::shard::Shard;

/// What is wrong with a configuration: the one error type of this boundary. Every variant names
/// the key (`readers.cores`), the flag (`--streams`) or the line at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML, or has a key of the wrong type or an unknown key.
    #[error("invalid run config{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Syntax {
        /// The 1-based line, when known.
        line: Option<usize>,
        /// What the parser said.
        message: String,
    },
    /// A key or flag has a value outside what hotpath accepts.
    #[error("{message}")]
    Invalid {
        /// The key or flag at fault (`kinesis.linger_ms`, `--redis`).
        key: String,
        /// The whole message, which starts with the key.
        message: String,
    },
}

impl ConfigError {
    /// An invalid value; `message` starts with the key or flag it names (`readers.cores: ...`,
    /// `kinesis.payload = "x": ...`), which becomes [`ConfigError::Invalid::key`].
    pub fn invalid(message: impl Into<String>) -> ConfigError {
        let message = message.into();
        let end = message.find([' ', ':', '=']).unwrap_or(message.len());
        ConfigError::Invalid {
            key: message[..end].to_string(),
            message,
        }
    }

    /// The same error under a flag that set the value (`--redis: redis.url = ...`).
    fn under(self, flag: &str) -> ConfigError {
        ConfigError::Invalid {
            key: flag.to_string(),
            message: format!("{flag}: {self}"),
        }
    }

    /// The key or flag at fault, if the error names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Syntax { .. } => None,
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }
}
pub mod discovery;
pub mod env;
pub mod http;
pub mod klines;
pub mod postgres;
pub mod s3;
pub mod sidecar;
pub mod sinks;

use crate::stream::{StreamKind, stream_name};
pub use discovery::DiscoveryConfig;
pub use http::HttpConfig;
pub use klines::KlinesConfig;
use klines::RawKlines;
use sidecar::RawSidecar;
pub use sidecar::SidecarConfig;
pub use sinks::{
    Aggregate, KeyLayout, KinesisConfig, Layout, Payload, RedisConfig, SINGLE_HEARTBEAT_STREAM,
};
use sinks::{RawKinesis, RawRedis};

/// Streams one Binance connection may carry ("A single connection can listen to a maximum of
/// 1024 streams").
pub const STREAMS_PER_CONNECTION_MAX: usize = 1024;

/// Bounds of `readers.ring_capacity` (slots per consumer ring).
const RING_CAPACITY_MIN: usize = 1024;
const RING_CAPACITY_MAX: usize = 16 << 20;

/// Levels per side of a `depth20` snapshot: a smaller `group_count_max` would reject them all.
const GROUP_COUNT_MIN: u32 = 20;

/// The longest symbol accepted (Binance's are far shorter).
const SYMBOL_LEN_MAX: usize = 20;

/// Where the key comes from, for the error that says it is missing.
const API_KEY_DOCS: &str =
    "https://developers.binance.com/docs/binance-spot-api-docs/sbe-market-data-streams";

/// The reader threads and the connection lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderSettings {
    /// One reader thread per entry, pinned to that core id. Non-empty, no duplicates, each
    /// below the machine's CPU count.
    pub cores: Vec<usize>,
    /// Slots in each consumer ring: a power of two within 1024..=16 Mi.
    pub ring_capacity: usize,
    /// A connection without any frame for this long is replaced. Above zero.
    pub silent_timeout: Duration,
    /// How long the server keeps a connection (Binance: 24 h). Above zero.
    pub lifetime: Duration,
    /// The replacement opens this long before `lifetime` ends. Below `lifetime`.
    pub replace_before: Duration,
    /// Old and new connections overlap at most this long during make-before-break. Above
    /// zero and at most `replace_before`, so the old one closes before the server ends it.
    pub overlap_max: Duration,
    /// The first reconnect delay. Above zero.
    pub backoff_initial: Duration,
    /// The longest reconnect delay. At least `backoff_initial`.
    pub backoff_max: Duration,
    /// The largest group count a frame may declare; within 20..=[`GROUP_COUNT_MAX`].
    pub group_count_max: u32,
    /// Copy each accepted frame out of the WebSocket receive buffer into the reader's
    /// [`crate::feed::pool::FramePool`] before queueing it, so a queued frame pins its own
    /// bytes, not a 128 KiB receive buffer. `false` queues slices of the receive buffer (no
    /// copy; memory held by lagging consumers is then unbounded by their byte budgets).
    pub copy_frames: bool,
}

impl Default for ReaderSettings {
    fn default() -> Self {
        ReaderSettings {
            cores: vec![0],
            ring_capacity: 65_536,
            silent_timeout: Duration::from_millis(10_000),
            lifetime: Duration::from_millis(86_400_000),
            replace_before: Duration::from_millis(600_000),
            overlap_max: Duration::from_millis(2_000),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_millis(30_000),
            group_count_max: GROUP_COUNT_MAX,
            copy_frames: true,
        }
    }
}

/// What the market-data connections carry (`[feed] format`, `--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedFormat {
    /// Binance's SBE market-data streams (`stream-sbe.binance.com`): needs an Ed25519 API key.
    #[default]
    Sbe,
    /// Binance's regular JSON streams (`stream.binance.com`), no API key: each text frame is
    /// transcoded into the SBE frame of the same event (`feed::json`), so everything
    /// downstream is the same.
    Json,
    /// SBE as the primary feed, the JSON streams (`feed.json_endpoint`) as the fallback when
    /// the SBE endpoint refuses the key or is down, and SBE again when it is back
    /// (`feed::dual`). Needs the API key.
    Dual,
}

impl FeedFormat {
    /// Parses `"sbe"`, `"json"` or `"dual"`; the error names `key`.
    pub fn parse(key: &str, value: &str) -> Result<FeedFormat, ConfigError> {
        match value {
            "sbe" => Ok(FeedFormat::Sbe),
            "json" => Ok(FeedFormat::Json),
            "dual" => Ok(FeedFormat::Dual),
            other => Err(ConfigError::invalid(format!(
                "{key} = {other:?}: expected \"sbe\", \"json\" or \"dual\""
            ))),
        }
    }
}

/// The dual feed's settings (`[feed] fallback_after_failures`, `sbe_probe_s`; `feed::dual`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DualSettings {
    /// SBE attempts failing in a row before the slot moves to JSON (a refused key moves it at
    /// once).
    pub fallback_after: u32,
    /// How often a slot on JSON tries SBE again.
    pub probe_every: Duration,
}

impl Default for DualSettings {
    fn default() -> Self {
        DualSettings {
            fallback_after: 3,
            probe_every: Duration::from_secs(60),
        }
    }
}

/// The validated `hotpath run` configuration. It holds no secret: the API key is read from
/// the environment by [`RunConfig::api_key`] when connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// `ws://host[:port][/path]` or `wss://...`, no query and no trailing `/`; hotpath
    /// connects to `<endpoint>/stream?streams=...` (a path is kept: `ws://host:port/json`
    /// reaches the simulator's `/json/stream?streams=...`).
    pub endpoint: String,
    /// SBE or JSON streams, or both (`[feed] format`).
    pub format: FeedFormat,
    /// The JSON streams' base URL in dual mode (`[feed] json_endpoint`; Binance's
    /// `wss://stream.binance.com:9443`), normalized like `endpoint`.
    pub json_endpoint: String,
    /// When dual mode falls back to JSON and tries SBE again (`[feed] fallback_after_failures`,
    /// `sbe_probe_s`).
    pub dual: DualSettings,
    /// The NAME of the environment variable holding the Ed25519 API key (A-Z, 0-9, `_`).
    pub api_key_env: String,
    /// PEM certificates trusted instead of the webpki roots, for the simulator's self-signed
    /// TLS; a relative path is taken from the working directory. Only used by `wss://`.
    pub trust_cert: Option<PathBuf>,
    /// Upper-case symbols (A-Z, 0-9, 1 to 20 characters), non-empty, no duplicates.
    pub symbols: Vec<String>,
    /// The stream kinds subscribed for every symbol, non-empty, no duplicates.
    pub streams: Vec<StreamKind>,
    /// Symbols per connection: at least 1, and times `streams.len()` at most
    /// [`STREAMS_PER_CONNECTION_MAX`].
    pub symbols_per_connection: usize,
    /// Reader threads and the connection lifecycle.
    pub readers: ReaderSettings,
    /// Exit cleanly after this long; `None` runs until stopped. Above zero when set.
    pub duration: Option<Duration>,
    /// Print the one-line JSON summary on exit.
    pub summary: bool,
    /// Write every gap range (wire gaps and queue drops) to this JSON-lines file as it is
    /// seen; the summary lists only counts and the first few ([`crate::gaps`]).
    pub gaps_file: Option<PathBuf>,
    /// This instance's share of the symbols when several run (`i/n`, [`crate::shard`]): it
    /// carries only the symbols whose shard is `i`, whatever the list or discovery offers.
    pub shard: Option<Shard>,
    /// The Kinesis writer, when enabled.
    pub kinesis: Option<KinesisConfig>,
    /// The Redis writer, when enabled.
    pub redis: Option<RedisConfig>,
    /// The file's `[kinesis]` and `[redis]` settings whether or not the section enables its
    /// writer: `--kinesis-endpoint` and `--redis` enable a writer with them.
    pub file_sinks: (Option<KinesisConfig>, Option<RedisConfig>),
    /// The PostgreSQL / TimescaleDB writer, when enabled.
    pub postgres: Option<postgres::PostgresConfig>,
    /// The S3 bronze archive, when `[s3]` names a bucket; its writer runs when `enabled`
    /// ([`RunConfig::s3_archives`]); `hotpath backfill trades` needs only the bucket.
    pub s3: Option<s3::S3Config>,
    /// The reliability sidecar (it runs when a sink does and `sidecar.enabled`).
    pub sidecar: SidecarConfig,
    /// Candles built from the delivered trades (`[klines]`), for Redis and Kinesis.
    pub klines: KlinesConfig,
    /// What the counting consumer does when idle (it drains the rings when no sink runs, and
    /// the notices when no sidecar does).
    pub idle: IdleStrategy,
    /// The control plane (HTTP: metrics, health, pairs).
    pub http: HttpConfig,
    /// Pair discovery (the symbols from Binance's 24 h volumes instead of `symbols`).
    pub discovery: DiscoveryConfig,
    /// The wire format of the REST answers the sidecar, the books and discovery read
    /// (`[rest] format`, SBE by default, falling back to JSON on its own).
    pub rest_format: RestFormat,
}

impl Default for RunConfig {
    /// Binance production: one symbol, every stream, one reader on core 0.
    fn default() -> Self {
        RunConfig {
            endpoint: "wss://stream-sbe.binance.com:9443".into(),
            format: FeedFormat::Sbe,
            json_endpoint: "wss://stream.binance.com:9443".into(),
            dual: DualSettings::default(),
            api_key_env: "BINANCE_API_KEY".into(),
            trust_cert: None,
            symbols: vec!["BTCUSDT".into()],
            streams: StreamKind::ALL.to_vec(),
            symbols_per_connection: 50,
            readers: ReaderSettings::default(),
            duration: None,
            summary: true,
            gaps_file: None,
            shard: None,
            kinesis: None,
            redis: None,
            file_sinks: (None, None),
            postgres: None,
            s3: None,
            sidecar: SidecarConfig::default(),
            klines: KlinesConfig::default(),
            idle: IdleStrategy::Backoff,
            http: HttpConfig::default(),
            discovery: DiscoveryConfig::default(),
            rest_format: RestFormat::Sbe,
        }
    }
}

/// The command-line flags that override the file (`--endpoint`, `--symbols`, `--streams`,
/// `--duration`); `None` leaves the file's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--endpoint`.
    pub endpoint: Option<String>,
    /// `--format` (`sbe` or `json`).
    pub format: Option<String>,
    /// `--symbols`, already split into symbols.
    pub symbols: Option<Vec<String>>,
    /// `--streams`, already split into suffixes such as `depth`.
    pub streams: Option<Vec<String>>,
    /// `--duration`.
    pub duration: Option<Duration>,
    /// `--redis URL`: enables the Redis writer (with the file's `[redis]` settings or the
    /// defaults) against this URL.
    pub redis_url: Option<String>,
    /// `--kinesis-endpoint URL`: enables the Kinesis writer against this endpoint (an
    /// emulator); `aws` keeps AWS's own endpoint.
    pub kinesis_endpoint: Option<String>,
    /// `--gaps-file PATH`: every gap range into this file.
    pub gaps_file: Option<PathBuf>,
    /// `--shard i/n`: this instance's share of the symbols.
    pub shard: Option<String>,
}

/// The Binance API key, sent as the `X-MBX-APIKEY` header. `Debug` prints
/// `ApiKey(<redacted>)` and there is no `Display`, so it cannot reach a log by accident.
/// Invariant: visible ASCII, so it is a valid header value; empty only for the JSON streams
/// ([`ApiKey::none`]), where no header is sent.
pub struct ApiKey(String);

impl ApiKey {
    /// No key: the JSON streams need none, and none is sent.
    pub fn none() -> ApiKey {
        ApiKey(String::new())
    }

    /// Whether there is no key ([`ApiKey::none`]).
    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }

    /// The key itself, for the handshake header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    binance: RawBinance,
    feed: RawFeed,
    readers: RawReaders,
    run: RawRun,
    kinesis: RawKinesis,
    redis: RawRedis,
    postgres: postgres::RawPostgres,
    s3: s3::RawS3,
    sidecar: RawSidecar,
    klines: RawKlines,
    http: http::RawHttp,
    discovery: discovery::RawDiscovery,
    rest: RawRest,
    /// Read only to reject it with a clear message; its value is never kept.
    api_key: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBinance {
    endpoint: Option<String>,
    api_key_env: Option<String>,
    /// Read only to reject it with a clear message; its value is never kept.
    api_key: Option<IgnoredAny>,
    trust_cert: Option<PathBuf>,
    symbols: Option<Vec<String>>,
    streams: Option<Vec<String>>,
    symbols_per_connection: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFeed {
    format: Option<String>,
    json_endpoint: Option<String>,
    fallback_after_failures: Option<u32>,
    sbe_probe_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReaders {
    cores: Option<Vec<usize>>,
    ring_capacity: Option<usize>,
    silent_timeout_ms: Option<u64>,
    lifetime_ms: Option<u64>,
    replace_before_ms: Option<u64>,
    overlap_max_ms: Option<u64>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    group_count_max: Option<u32>,
    copy_frames: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRest {
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRun {
    duration_s: Option<u64>,
    summary: Option<bool>,
    idle: Option<String>,
    gaps_file: Option<PathBuf>,
    shard: Option<String>,
}

impl RunConfig {
    /// Parses a TOML configuration and checks every value, naming the key at fault. Whether
    /// `readers.cores` exist on this machine is left to [`RunConfig::validate`], which runs
    /// once the command-line flags are applied.
    pub fn from_toml(text: &str) -> Result<RunConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        for (key, value) in [
            ("api_key", &raw.api_key),
            ("binance.api_key", &raw.binance.api_key),
        ] {
            if value.is_some() {
                return Err(ConfigError::invalid(format!(
                    "{key}: API keys come only from the environment, never from a file; remove \
                     it and set the variable named by binance.api_key_env (default {})",
                    RunConfig::default().api_key_env
                )));
            }
        }
        let mut config = RunConfig::default();
        let binance_per_connection = raw.binance.symbols_per_connection;
        config.set_binance(raw.binance)?;
        config.set_feed(raw.feed)?;
        config.readers.set(raw.readers);
        config.duration = raw.run.duration_s.map(Duration::from_secs);
        set(&mut config.summary, raw.run.summary);
        config.gaps_file = raw.run.gaps_file;
        if let Some(text) = raw.run.shard {
            config.shard = Some(
                Shard::parse(&text).map_err(|e| ConfigError::invalid(format!("run.shard: {e}")))?,
            );
        }
        set(&mut config.idle, idle("run.idle", raw.run.idle)?);
        let (kinesis, enabled) = raw.kinesis.into_parts()?;
        config.kinesis = enabled;
        config.file_sinks.0 = (kinesis != KinesisConfig::default()).then_some(kinesis);
        let (redis, enabled) = raw.redis.into_parts()?;
        config.redis = enabled;
        config.file_sinks.1 = (redis != RedisConfig::default()).then_some(redis);
        config.postgres = raw.postgres.into_config()?;
        config.s3 = raw.s3.into_settings()?;
        config.sidecar = raw.sidecar.into_config()?;
        config.klines = raw.klines.into_config()?;
        config.http = raw.http.into_config()?;
        if let Some(per) = raw.discovery.pairs_per_connection {
            if binance_per_connection.is_some_and(|s| s != per) {
                return Err(ConfigError::invalid(
                    "discovery.pairs_per_connection: differs from binance.symbols_per_connection; \
                     set one of the two",
                ));
            }
            config.symbols_per_connection = per;
        }
        config.discovery = raw.discovery.into_config()?;
        if let Some(format) = raw.rest.format {
            config.rest_format = RestFormat::parse(&format).ok_or_else(|| {
                ConfigError::invalid(format!(
                    "rest.format = {format:?}: must be \"sbe\" or \"json\""
                ))
            })?;
        }
        config.check(None)?;
        Ok(config)
    }

    fn set_binance(&mut self, raw: RawBinance) -> Result<(), ConfigError> {
        if let Some(endpoint) = raw.endpoint {
            self.endpoint = normalize_endpoint("binance.endpoint", &endpoint)?;
        }
        if let Some(names) = raw.streams {
            self.streams = parse_streams("binance.streams", &names)?;
        }
        set(&mut self.api_key_env, raw.api_key_env);
        set(&mut self.symbols, raw.symbols);
        set(&mut self.symbols_per_connection, raw.symbols_per_connection);
        self.trust_cert = raw.trust_cert;
        Ok(())
    }

    /// Lays the command-line flags over the file's values; errors name the flag. Call
    /// [`RunConfig::validate`] afterwards.
    pub fn apply(&mut self, overrides: Overrides) -> Result<(), ConfigError> {
        if let Some(endpoint) = overrides.endpoint {
            self.endpoint = normalize_endpoint("--endpoint", &endpoint)?;
        }
        if let Some(format) = overrides.format {
            self.format = FeedFormat::parse("--format", &format)?;
        }
        if let Some(symbols) = overrides.symbols {
            check_symbols("--symbols", &symbols)?;
            self.symbols = symbols;
        }
        if let Some(names) = overrides.streams {
            self.streams = parse_streams("--streams", &names)?;
            check_streams_per_connection(
                "--streams",
                self.symbols_per_connection,
                self.streams.len(),
            )?;
        }
        if let Some(duration) = overrides.duration {
            if duration.is_zero() {
                return Err(ConfigError::invalid(
                    "--duration: must be above 0 (omit it to run until stopped)",
                ));
            }
            self.duration = Some(duration);
        }
        if let Some(url) = overrides.redis_url {
            let mut redis = self
                .redis
                .take()
                .or_else(|| self.file_sinks.1.clone())
                .unwrap_or_default();
            redis.url = url;
            redis.check().map_err(|e| e.under("--redis"))?;
            self.redis = Some(redis);
        }
        if let Some(path) = overrides.gaps_file {
            self.gaps_file = Some(path);
        }
        if let Some(text) = overrides.shard {
            self.shard = Some(
                Shard::parse(&text).map_err(|e| ConfigError::invalid(format!("--shard: {e}")))?,
            );
        }
        if let Some(url) = overrides.kinesis_endpoint {
            let mut kinesis = self
                .kinesis
                .take()
                .or_else(|| self.file_sinks.0.clone())
                .unwrap_or_default();
            kinesis.endpoint_url = (url != "aws").then_some(url);
            kinesis.check().map_err(|e| e.under("--kinesis-endpoint"))?;
            self.kinesis = Some(kinesis);
        }
        Ok(())
    }

    /// Checks the whole configuration against this machine: every value, and that each
    /// reader core is below the CPU count `std::thread::available_parallelism` reports.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.validate_with_cpus(cpus)
    }

    /// [`RunConfig::validate`] for a machine with `cpus` CPUs (core ids `0..cpus`).
    pub fn validate_with_cpus(&self, cpus: usize) -> Result<(), ConfigError> {
        self.check(Some(cpus))
    }

    /// Every check; `cpus` of `None` skips the one that depends on the machine.
    fn check(&self, cpus: Option<usize>) -> Result<(), ConfigError> {
        normalize_endpoint("binance.endpoint", &self.endpoint)?;
        check_api_key_env(&self.api_key_env)?;
        if self
            .trust_cert
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "binance.trust_cert: an empty path (omit the key instead)",
            ));
        }
        if self
            .gaps_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "run.gaps_file: an empty path (omit the key instead)",
            ));
        }
        check_symbols("binance.symbols", &self.symbols)?;
        let names: Vec<&str> = self.streams.iter().map(|k| k.suffix()).collect();
        parse_streams("binance.streams", &names)?;
        check_streams_per_connection(
            "binance.symbols_per_connection",
            self.symbols_per_connection,
            self.streams_per_symbol(),
        )?;
        self.readers.check(cpus)?;
        self.sidecar.check()?;
        self.http.check()?;
        self.discovery.check()?;
        if let (Some(k), Some(r)) = (&self.kinesis, &self.redis)
            && k.dead_letter_path == r.dead_letter_path
        {
            return Err(ConfigError::invalid(format!(
                "redis.dead_letter_path = {:?}: the same file as kinesis.dead_letter_path; each \
                 sink needs its own",
                r.dead_letter_path
            )));
        }
        if let Some(p) = &self.postgres {
            let others = [
                self.kinesis
                    .as_ref()
                    .map(|k| ("kinesis", &k.dead_letter_path)),
                self.redis.as_ref().map(|r| ("redis", &r.dead_letter_path)),
            ];
            if let Some((sink, _)) = others
                .into_iter()
                .flatten()
                .find(|(_, path)| **path == p.dead_letter_path)
            {
                return Err(ConfigError::invalid(format!(
                    "postgres.dead_letter_path = {:?}: the same file as {sink}.dead_letter_path; \
                     each sink needs its own",
                    p.dead_letter_path
                )));
            }
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                "run.duration_s: must be above 0 (omit it to run until stopped)",
            ));
        }
        Ok(())
    }

    /// The stream names of each connection: the symbols in order, split into connections of
    /// at most `symbols_per_connection` symbols, each symbol with every configured stream.
    pub fn connection_plan(&self) -> Vec<Vec<String>> {
        assert!(
            self.symbols_per_connection > 0,
            "validated: symbols_per_connection >= 1"
        );
        self.symbols
            .chunks(self.symbols_per_connection)
            .map(|chunk| {
                chunk
                    .iter()
                    .flat_map(|symbol| self.streams.iter().map(|&kind| stream_name(symbol, kind)))
                    .collect()
            })
            .collect()
    }

    /// The streams a connection carries per symbol: `binance.streams`, and on the JSON wire
    /// (`feed.format` json or dual) one kline stream per `[klines] intervals` beside the trade
    /// stream.
    pub fn streams_per_symbol(&self) -> usize {
        let klines = match self.format {
            FeedFormat::Sbe => 0,
            FeedFormat::Json | FeedFormat::Dual if self.streams.contains(&StreamKind::Trade) => {
                self.klines.intervals.len()
            }
            FeedFormat::Json | FeedFormat::Dual => 0,
        };
        self.streams.len() + klines
    }

    /// Whether the sidecar runs: a sink does and `sidecar.enabled` (trade repair), or the
    /// Redis writer does (its books' depth snapshots come from the sidecar whatever
    /// `sidecar.enabled` says).
    pub fn sidecar_runs(&self) -> bool {
        (self.sidecar.enabled
            && (self.kinesis.is_some() || self.postgres.is_some() || self.s3_archives()))
            || self.redis.is_some()
    }

    /// Whether the S3 archive writer runs (`[s3] enabled = true`).
    pub fn s3_archives(&self) -> bool {
        self.s3.as_ref().is_some_and(|s| s.enabled)
    }

    /// Keeps only the symbols this instance's shard owns (nothing without `run.shard`). An
    /// error when none is left and discovery is off (it would run with nothing to carry).
    pub fn select_shard(&mut self) -> Result<(), ConfigError> {
        let Some(shard) = self.shard else {
            return Ok(());
        };
        let listed = self.symbols.len();
        self.symbols.retain(|s| shard.owns(s));
        if self.symbols.is_empty() && !self.discovery.enabled {
            return Err(ConfigError::invalid(format!(
                "run.shard: shard {shard} owns none of the {listed} symbols listed \
                 (a symbol's shard is a stable hash of its name mod {}); list more symbols \
                 or run fewer shards",
                shard.count()
            )));
        }
        tracing::info!(%shard, kept = self.symbols.len(), listed, "shard: symbols selected");
        Ok(())
    }

    /// Where the threads other than the readers are pinned on this machine
    /// ([`crate::cores::CorePlan`]): cores no reader uses, one per sink when there are enough.
    pub fn core_plan(&self) -> crate::cores::CorePlan {
        crate::cores::CorePlan::on_this_machine(
            &self.readers.cores,
            self.redis.is_some(),
            self.kinesis.is_some(),
        )
    }

    /// The reader (an index into `readers.cores`) that runs `connection`: round robin.
    pub fn reader_of_connection(&self, connection: usize) -> usize {
        assert!(
            !self.readers.cores.is_empty(),
            "validated: at least one reader core"
        );
        connection % self.readers.cores.len()
    }

    fn set_feed(&mut self, raw: RawFeed) -> Result<(), ConfigError> {
        if let Some(format) = raw.format {
            self.format = FeedFormat::parse("feed.format", &format)?;
        }
        if let Some(endpoint) = raw.json_endpoint {
            self.json_endpoint = normalize_endpoint("feed.json_endpoint", &endpoint)?;
        }
        if let Some(n) = raw.fallback_after_failures {
            if n == 0 {
                return Err(ConfigError::invalid(
                    "feed.fallback_after_failures: must be at least 1",
                ));
            }
            self.dual.fallback_after = n;
        }
        if let Some(s) = raw.sbe_probe_s {
            if s == 0 {
                return Err(ConfigError::invalid("feed.sbe_probe_s: must be at least 1"));
            }
            self.dual.probe_every = Duration::from_secs(s);
        }
        Ok(())
    }

    /// The URL of one connection of [`RunConfig::connection_plan`]:
    /// `<endpoint>/stream?streams=a/b/c`.
    pub fn stream_url(&self, streams: &[String]) -> String {
        format!("{}/stream?streams={}", self.endpoint, streams.join("/"))
    }

    /// Reads the API key from the environment variable named by `api_key_env`; the JSON
    /// streams need none, so with `feed.format = "json"` this is [`ApiKey::none`] and the
    /// variable is not read.
    pub fn api_key(&self) -> Result<ApiKey, ConfigError> {
        if self.format == FeedFormat::Json {
            return Ok(ApiKey::none());
        }
        self.api_key_from(|name| std::env::var(name).ok())
    }

    /// [`RunConfig::api_key`] with the environment replaced by `lookup` (for tests). The error
    /// never contains the key.
    pub fn api_key_from(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ApiKey, ConfigError> {
        let name = &self.api_key_env;
        let key = lookup(name).unwrap_or_default();
        if key.is_empty() {
            return Err(ConfigError::invalid(format!(
                "the Binance API key is missing: set {name} (an Ed25519 API key, no permissions \
                 needed; see {API_KEY_DOCS}; the simulator accepts any value)"
            )));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::invalid(format!(
                "{name}: the Binance API key holds spaces, control or non-ASCII characters \
                 (a trailing newline?)"
            )));
        }
        Ok(ApiKey(key))
    }
}

impl ReaderSettings {
    fn set(&mut self, raw: RawReaders) {
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        set(&mut self.cores, raw.cores);
        set(&mut self.ring_capacity, raw.ring_capacity);
        set(&mut self.silent_timeout, ms(raw.silent_timeout_ms));
        set(&mut self.lifetime, ms(raw.lifetime_ms));
        set(&mut self.replace_before, ms(raw.replace_before_ms));
        set(&mut self.overlap_max, ms(raw.overlap_max_ms));
        set(&mut self.backoff_initial, ms(raw.backoff_initial_ms));
        set(&mut self.backoff_max, ms(raw.backoff_max_ms));
        set(&mut self.group_count_max, raw.group_count_max);
        set(&mut self.copy_frames, raw.copy_frames);
    }

    fn check(&self, cpus: Option<usize>) -> Result<(), ConfigError> {
        check_cores(&self.cores, cpus)?;
        let ring = self.ring_capacity;
        if !ring.is_power_of_two() || !(RING_CAPACITY_MIN..=RING_CAPACITY_MAX).contains(&ring) {
            return Err(ConfigError::invalid(format!(
                "readers.ring_capacity = {ring}: must be a power of two within \
                 {RING_CAPACITY_MIN}..={RING_CAPACITY_MAX}"
            )));
        }
        for (key, value) in [
            ("silent_timeout_ms", self.silent_timeout),
            ("lifetime_ms", self.lifetime),
            ("overlap_max_ms", self.overlap_max),
            ("backoff_initial_ms", self.backoff_initial),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(format!(
                    "readers.{key}: must be above 0"
                )));
            }
        }
        self.check_relations()
    }

    fn check_relations(&self) -> Result<(), ConfigError> {
        if self.replace_before >= self.lifetime {
            return Err(ConfigError::invalid(format!(
                "readers.replace_before_ms = {}: must be below readers.lifetime_ms = {}",
                self.replace_before.as_millis(),
                self.lifetime.as_millis()
            )));
        }
        if self.overlap_max > self.replace_before {
            return Err(ConfigError::invalid(format!(
                "readers.overlap_max_ms = {}: must be at most readers.replace_before_ms = {}, \
                 so the old connection closes before its lifetime ends",
                self.overlap_max.as_millis(),
                self.replace_before.as_millis()
            )));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(ConfigError::invalid(format!(
                "readers.backoff_max_ms = {}: must be at least readers.backoff_initial_ms = {}",
                self.backoff_max.as_millis(),
                self.backoff_initial.as_millis()
            )));
        }
        if !(GROUP_COUNT_MIN..=GROUP_COUNT_MAX).contains(&self.group_count_max) {
            return Err(ConfigError::invalid(format!(
                "readers.group_count_max = {}: must be within {GROUP_COUNT_MIN}..={GROUP_COUNT_MAX} \
                 (a depth20 snapshot has 20 levels per side)",
                self.group_count_max
            )));
        }
        Ok(())
    }
}

fn check_cores(cores: &[usize], cpus: Option<usize>) -> Result<(), ConfigError> {
    if cores.is_empty() {
        return Err(ConfigError::invalid(
            "readers.cores: at least one core is needed (one reader thread each)",
        ));
    }
    for (i, core) in cores.iter().enumerate() {
        if cores[..i].contains(core) {
            return Err(ConfigError::invalid(format!(
                "readers.cores: core {core} is listed twice"
            )));
        }
        if let Some(cpus) = cpus.filter(|&cpus| *core >= cpus) {
            return Err(ConfigError::invalid(format!(
                "readers.cores: core {core} does not exist; this machine has {cpus} CPUs \
                 (cores 0..={})",
                cpus.saturating_sub(1)
            )));
        }
    }
    Ok(())
}

/// Checks `ws://host[:port][/path]` or `wss://...` and returns it without a trailing `/`.
fn normalize_endpoint(key: &str, endpoint: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        Err(ConfigError::invalid(format!(
            "{key} = {endpoint:?}: {why}; expected ws://host[:port][/path] or \
             wss://host[:port][/path] (hotpath adds /stream?streams=...)"
        )))
    };
    let trimmed = endpoint.strip_suffix('/').unwrap_or(endpoint);
    let Some(authority) = trimmed
        .strip_prefix("wss://")
        .or_else(|| trimmed.strip_prefix("ws://"))
    else {
        return bad("not a ws:// or wss:// URL");
    };
    if authority.contains(['?', '#']) {
        return bad("the query is chosen by hotpath");
    }
    // A path is kept: hotpath appends /stream?streams=... to it.
    let (authority, path) = authority.split_once('/').unwrap_or((authority, ""));
    if authority.contains('@') || trimmed.contains(char::is_whitespace) || path.contains('@') {
        return bad("no user information or spaces allowed");
    }
    if !authority_is_valid(authority) {
        return bad("not a host[:port]");
    }
    Ok(trimmed.to_string())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with a port in 1..=65535.
fn authority_is_valid(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or("x"))),
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    !host.is_empty() && port_ok
}

/// The variable's name: `[A-Z_][A-Z0-9_]*`. A mixed-case 64-character Binance key pasted
/// here by mistake fails this, and the message does not repeat the value.
pub(crate) fn check_api_key_env(name: &str) -> Result<(), ConfigError> {
    let valid = name.len() <= 128
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_uppercase() || b == b'_' || (i > 0 && b.is_ascii_digit()))
        && !name.is_empty();
    if valid {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "binance.api_key_env: must be the NAME of an environment variable (A-Z, 0-9, _) such \
         as BINANCE_API_KEY; the key itself goes in that variable, never in the file",
    ))
}

pub(crate) fn check_symbols(key: &str, symbols: &[String]) -> Result<(), ConfigError> {
    if symbols.is_empty() {
        return Err(ConfigError::invalid(format!(
            "{key}: at least one symbol is needed"
        )));
    }
    for (i, symbol) in symbols.iter().enumerate() {
        let valid = (1..=SYMBOL_LEN_MAX).contains(&symbol.len())
            && symbol
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !valid {
            return Err(ConfigError::invalid(format!(
                "{key}: {symbol:?} is not an upper-case symbol (A-Z, 0-9, 1 to \
                 {SYMBOL_LEN_MAX} characters) such as BTCUSDT"
            )));
        }
        if symbols[..i].contains(symbol) {
            return Err(ConfigError::invalid(format!(
                "{key}: {symbol} is listed twice"
            )));
        }
    }
    Ok(())
}

fn parse_streams(key: &str, names: &[impl AsRef<str>]) -> Result<Vec<StreamKind>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::invalid(format!(
            "{key}: at least one stream is needed"
        )));
    }
    let mut kinds = Vec::with_capacity(names.len());
    for name in names.iter().map(AsRef::as_ref) {
        let Some(kind) = StreamKind::from_suffix(name) else {
            let known: Vec<&str> = StreamKind::ALL.iter().map(|k| k.suffix()).collect();
            return Err(ConfigError::invalid(format!(
                "{key}: unknown stream '{name}' (known: {})",
                known.join(", ")
            )));
        };
        if kinds.contains(&kind) {
            return Err(ConfigError::invalid(format!(
                "{key}: stream '{name}' is listed twice"
            )));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

fn check_streams_per_connection(
    key: &str,
    symbols_per_connection: usize,
    streams: usize,
) -> Result<(), ConfigError> {
    if symbols_per_connection == 0 {
        return Err(ConfigError::invalid(format!(
            "{key}: binance.symbols_per_connection must be at least 1"
        )));
    }
    let total = symbols_per_connection.saturating_mul(streams);
    if total > STREAMS_PER_CONNECTION_MAX {
        return Err(ConfigError::invalid(format!(
            "{key}: {symbols_per_connection} symbols per connection x {streams} streams per \
             symbol = {total} streams per connection; Binance allows at most \
             {STREAMS_PER_CONNECTION_MAX} (lower binance.symbols_per_connection)"
        )));
    }
    Ok(())
}

/// The parser's message and the line, without echoing the file's text (which could hold a
/// secret pasted in the wrong place).
fn describe_toml_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let line = error.span().map(|span| {
        1 + text.as_bytes()[..span.start.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    });
    ConfigError::Syntax {
        line,
        message: error.message().trim_end().to_string(),
    }
}

/// The idle strategy named at `key` (`None` when not set); an unknown name is an error naming
/// the key.
pub(crate) fn idle(key: &str, value: Option<String>) -> Result<Option<IdleStrategy>, ConfigError> {
    let Some(name) = value else {
        return Ok(None);
    };
    IdleStrategy::parse(&name).map(Some).ok_or_else(|| {
        ConfigError::invalid(format!(
            "{key} = {name:?}: must be one of {}",
            IdleStrategy::NAMES.map(|n| format!("\"{n}\"")).join(", ")
        ))
    })
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// `url` with the password of its user information replaced by `***`
/// (`redis://user:***@host:6379/0`, `redis://:***@host`); other URLs unchanged.
pub fn redact_url(url: &str) -> String {
    redact_urls(url)
}

/// `text` with the password of every `scheme://user:password@` in it replaced by `***`: for
/// messages and `Debug` output that may quote a Redis URL.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                let userinfo = &authority[..userinfo_end];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::Shard;

    fn err(text: &str) -> String {
        RunConfig::from_toml(text).expect_err(text).to_string()
    }

    fn assert_names(error: &dyn std::fmt::Display, key: &str) {
        let error = error.to_string();
        assert!(error.contains(key), "{key:?} not in {error:?}");
    }

    #[test]
    fn an_empty_file_gives_the_binance_production_defaults() {
        let config = RunConfig::from_toml("").expect("valid");
        assert_eq!(config, RunConfig::default());
        assert_eq!(config.endpoint, "wss://stream-sbe.binance.com:9443");
        assert_eq!(config.api_key_env, "BINANCE_API_KEY");
        assert_eq!(config.symbols, ["BTCUSDT"]);
        assert_eq!(config.streams, StreamKind::ALL);
        assert_eq!(config.symbols_per_connection, 50);
        let r = &config.readers;
        assert_eq!(r.cores, [0]);
        assert_eq!(r.ring_capacity, 65_536);
        assert_eq!(r.silent_timeout, Duration::from_secs(10));
        assert_eq!(r.lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(r.replace_before, Duration::from_secs(600));
        assert_eq!(r.overlap_max, Duration::from_secs(2));
        assert_eq!(r.backoff_initial, Duration::from_millis(250));
        assert_eq!(r.backoff_max, Duration::from_secs(30));
        assert_eq!(r.group_count_max, GROUP_COUNT_MAX);
        assert_eq!(config.duration, None);
        assert!(config.summary);
        config
            .validate_with_cpus(1)
            .expect("core 0 exists everywhere");
    }

    #[test]
    fn a_full_file_sets_every_key() {
        let config = RunConfig::from_toml(
            r#"
            [binance]
            endpoint = "wss://127.0.0.1:9443/"
            api_key_env = "SIM_KEY_2"
            trust_cert = "sim-cert.pem"
            symbols = ["ETHUSDT", "BNBUSDT"]
            streams = ["depth", "trade"]
            symbols_per_connection = 512
            [readers]
            cores = [2, 3]
            ring_capacity = 1024
            silent_timeout_ms = 500
            lifetime_ms = 60000
            replace_before_ms = 5000
            overlap_max_ms = 100
            backoff_initial_ms = 10
            backoff_max_ms = 10
            group_count_max = 1000
            [run]
            duration_s = 30
            summary = false
            "#,
        )
        .expect("valid");
        assert_eq!(config.endpoint, "wss://127.0.0.1:9443");
        assert_eq!(config.api_key_env, "SIM_KEY_2");
        assert_eq!(config.trust_cert, Some(PathBuf::from("sim-cert.pem")));
        assert_eq!(config.symbols, ["ETHUSDT", "BNBUSDT"]);
        assert_eq!(config.streams, [StreamKind::Depth, StreamKind::Trade]);
        assert_eq!(config.symbols_per_connection, 512);
        let r = &config.readers;
        assert_eq!(r.cores, [2, 3]);
        assert_eq!(r.ring_capacity, 1024);
        assert_eq!(r.silent_timeout, Duration::from_millis(500));
        assert_eq!(r.lifetime, Duration::from_secs(60));
        assert_eq!(r.replace_before, Duration::from_secs(5));
        assert_eq!(r.overlap_max, Duration::from_millis(100));
        assert_eq!(r.backoff_initial, Duration::from_millis(10));
        assert_eq!(r.backoff_max, Duration::from_millis(10));
        assert_eq!(r.group_count_max, 1000);
        assert_eq!(config.duration, Some(Duration::from_secs(30)));
        assert!(!config.summary);
        config.validate_with_cpus(4).expect("cores 2 and 3 exist");
        let cores = config.validate_with_cpus(3).expect_err("core 3 does not");
        assert_names(&cores, "readers.cores: core 3");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        assert_names(&err("[binance]\nsymbol = [\"BTCUSDT\"]\n"), "symbol");
        assert_names(&err("[readers]\ncore = [0]\n"), "core");
        assert_names(&err("[run]\nduration = 5\n"), "duration");
        assert_names(&err("[sinks]\n"), "sinks");
        assert_names(&err("[readers]\ncores = [-1]\n"), "line 2");
    }

    #[test]
    fn an_api_key_in_the_file_is_rejected_without_echoing_it() {
        for text in [
            "[binance]\napi_key = \"sEcReT123\"\n",
            "api_key = \"sEcReT123\"\n",
            "[readers]\napi_key = \"sEcReT123\"\n",
        ] {
            let error = err(text);
            assert!(!error.contains("sEcReT123"), "{error}");
            assert_names(&error, "api_key");
        }
        let error = err("[binance]\napi_key = \"sEcReT123\"\n");
        assert_names(
            &error,
            "binance.api_key: API keys come only from the environment",
        );
        let unquoted = err("[binance]\napi_key = sEcReT123\n");
        assert!(!unquoted.contains("sEcReT123"), "{unquoted}");
        assert_names(&unquoted, "line 2");
        let pasted = err(
            "[binance]\napi_key_env = \"vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A\"\n",
        );
        assert!(!pasted.contains("vmPUZE6mv9"), "{pasted}");
        assert_names(&pasted, "binance.api_key_env");
    }

    #[test]
    fn each_binance_error_names_its_key() {
        for (text, key) in [
            ("endpoint = \"https://x\"", "binance.endpoint"),
            ("endpoint = \"wss://x/a b\"", "binance.endpoint"),
            ("endpoint = \"wss://x/json#f\"", "binance.endpoint"),
            ("endpoint = \"wss://x?a=b\"", "binance.endpoint"),
            ("endpoint = \"wss://\"", "binance.endpoint"),
            ("endpoint = \"wss://x:0\"", "binance.endpoint"),
            ("endpoint = \"wss://x:99999\"", "binance.endpoint"),
            ("endpoint = \"wss://u:p@x\"", "binance.endpoint"),
            ("api_key_env = \"\"", "binance.api_key_env"),
            ("api_key_env = \"1KEY\"", "binance.api_key_env"),
            ("trust_cert = \"\"", "binance.trust_cert"),
            ("symbols = []", "binance.symbols"),
            ("symbols = [\"btcusdt\"]", "binance.symbols"),
            ("symbols = [\"\"]", "binance.symbols"),
            ("symbols = [\"ABCDEFGHIJKLMNOPQRSTU\"]", "binance.symbols"),
            (
                "symbols = [\"BTCUSDT\", \"BTCUSDT\"]",
                "binance.symbols: BTCUSDT is listed twice",
            ),
            ("streams = []", "binance.streams"),
            (
                "streams = [\"aggTrade\"]",
                "binance.streams: unknown stream 'aggTrade'",
            ),
            ("streams = [\"depth\", \"depth\"]", "binance.streams"),
            (
                "symbols_per_connection = 0",
                "binance.symbols_per_connection",
            ),
            (
                "symbols_per_connection = 257",
                "binance.symbols_per_connection",
            ),
            (
                "symbols_per_connection = 1025\nstreams = [\"trade\"]",
                "binance.symbols_per_connection",
            ),
        ] {
            assert_names(&err(&format!("[binance]\n{text}\n")), key);
        }
        let ok = "[binance]\nsymbols_per_connection = 1024\nstreams = [\"trade\"]\n";
        RunConfig::from_toml(ok).expect("1024 streams per connection is the cap");
        let v6 = RunConfig::from_toml("[binance]\nendpoint = \"ws://[::1]:9443\"\n");
        assert_eq!(v6.expect("IPv6").endpoint, "ws://[::1]:9443");
    }

    /// On the JSON wire each symbol's trade stream brings its kline streams along
    /// (`[klines] intervals`): they count against Binance's 1024 streams per connection.
    #[test]
    fn kline_streams_count_against_the_streams_per_connection_on_json() {
        let text = |format: &str, intervals: &str| {
            format!(
                "[feed]\nformat = \"{format}\"\n[binance]\nsymbols_per_connection = 512\n\
                 streams = [\"trade\"]\n[klines]\nintervals = [{intervals}]\n"
            )
        };
        let config = RunConfig::from_toml(&text("json", "\"1m\"")).expect("1024 streams");
        assert_eq!(config.streams_per_symbol(), 2);
        assert_names(
            &err(&text("json", "\"1m\", \"1s\"")),
            "binance.symbols_per_connection",
        );
        assert_names(
            &err(&text("dual", "\"1m\", \"1s\"")),
            "binance.symbols_per_connection",
        );
        let sbe = RunConfig::from_toml(&text("sbe", "\"1m\", \"1s\"")).expect("no kline streams");
        assert_eq!(sbe.streams_per_symbol(), 1);
        let no_trades = "[feed]\nformat = \"json\"\n[binance]\nstreams = [\"depth\"]\n\
                         [klines]\nintervals = [\"1m\"]\n";
        let config = RunConfig::from_toml(no_trades).expect("valid");
        assert_eq!(
            config.streams_per_symbol(),
            1,
            "klines ride beside the trade stream only"
        );
    }

    #[test]
    fn the_postgres_dead_letter_file_is_its_own() {
        let shared = "[redis]\nenabled = true\ndead_letter_path = \"d.jsonl\"\n\
                      [postgres]\nenabled = true\ndead_letter_path = \"d.jsonl\"\n";
        let e = RunConfig::from_toml(shared)
            .and_then(|c| c.validate_with_cpus(2))
            .expect_err("one file for two sinks");
        assert!(e.to_string().contains("postgres.dead_letter_path"), "{e}");
        let config = RunConfig::from_toml("[postgres]\nenabled = true\n").expect("valid");
        assert!(config.postgres.is_some());
        assert!(!config.sidecar_runs() || config.sidecar.enabled);
    }

    #[test]
    fn the_rest_format_is_sbe_unless_json_and_a_bad_one_names_its_key() {
        assert_eq!(RunConfig::default().rest_format, RestFormat::Sbe);
        let json = RunConfig::from_toml("[rest]\nformat = \"json\"\n").expect("valid");
        assert_eq!(json.rest_format, RestFormat::Json);
        let sbe = RunConfig::from_toml("[rest]\nformat = \"sbe\"\n").expect("valid");
        assert_eq!(sbe.rest_format, RestFormat::Sbe);
        let error = RunConfig::from_toml("[rest]\nformat = \"xml\"\n").expect_err("bad");
        assert!(error.to_string().contains("rest.format"), "{error}");
    }

    #[test]
    fn feed_format_and_an_endpoint_path() {
        let json = RunConfig::from_toml(
            "[binance]\nendpoint = \"ws://127.0.0.1:9/json/\"\n[feed]\nformat = \"json\"\n",
        )
        .expect("valid");
        assert_eq!(json.endpoint, "ws://127.0.0.1:9/json");
        assert_eq!(json.format, FeedFormat::Json);
        assert_eq!(
            json.stream_url(&["btcusdt@trade".into()]),
            "ws://127.0.0.1:9/json/stream?streams=btcusdt@trade"
        );
        // The JSON streams need no key: the variable is not even read.
        assert!(json.api_key().expect("no key needed").is_none());
        assert_eq!(RunConfig::default().format, FeedFormat::Sbe);
        assert_names(&err("[feed]\nformat = \"xml\"\n"), "feed.format");
        assert_names(&err("[feed]\nformats = \"json\"\n"), "formats");
        let mut config = RunConfig::default();
        let flag = Overrides {
            format: Some("JSON".into()),
            ..Overrides::default()
        };
        assert_names(&config.apply(flag).expect_err("case matters"), "--format");
        let flag = Overrides {
            format: Some("json".into()),
            ..Overrides::default()
        };
        config.apply(flag).expect("valid");
        assert_eq!(config.format, FeedFormat::Json);
    }

    #[test]
    fn dual_mode_reads_its_json_endpoint_and_bounds() {
        let dual = RunConfig::from_toml(
            "[feed]\nformat = \"dual\"\njson_endpoint = \"ws://127.0.0.1:9/json/\"\n\
             fallback_after_failures = 5\nsbe_probe_s = 30\n",
        )
        .expect("valid");
        assert_eq!(dual.format, FeedFormat::Dual);
        assert_eq!(dual.json_endpoint, "ws://127.0.0.1:9/json");
        assert_eq!(dual.dual.fallback_after, 5);
        assert_eq!(dual.dual.probe_every, Duration::from_secs(30));
        // SBE comes first: the key is needed.
        assert!(dual.api_key_from(|_| None).is_err());
        let defaults = RunConfig::default();
        assert_eq!(defaults.json_endpoint, "wss://stream.binance.com:9443");
        assert_eq!(defaults.dual, DualSettings::default());
        assert_names(
            &err("[feed]\nfallback_after_failures = 0\n"),
            "feed.fallback_after_failures",
        );
        assert_names(&err("[feed]\nsbe_probe_s = 0\n"), "feed.sbe_probe_s");
        assert_names(
            &err("[feed]\njson_endpoint = \"http://x\"\n"),
            "feed.json_endpoint",
        );
    }

    #[test]
    fn idle_strategies_are_read_per_thread_and_unknown_ones_name_their_key() {
        let text = "[run]\nidle = \"blocking\"\n[redis]\nenabled = true\nidle = \"busy_spin\"\n\
                    [kinesis]\nenabled = true\nidle = \"blocking\"\n[sidecar]\nidle = \"busy_spin\"\n";
        let config = RunConfig::from_toml(text).expect("valid idle strategies");
        assert_eq!(config.idle, IdleStrategy::Blocking);
        assert_eq!(config.redis.map(|r| r.idle), Some(IdleStrategy::BusySpin));
        assert_eq!(config.kinesis.map(|k| k.idle), Some(IdleStrategy::Blocking));
        assert_eq!(config.sidecar.idle, IdleStrategy::BusySpin);
        let defaults = RunConfig::from_toml("[redis]\nenabled = true\n").expect("defaults");
        assert_eq!(defaults.idle, IdleStrategy::Backoff);
        assert_eq!(defaults.sidecar.idle, IdleStrategy::Backoff);
        assert_eq!(defaults.redis.map(|r| r.idle), Some(IdleStrategy::Backoff));
        for (text, key) in [
            ("[run]\nidle = \"sleepy\"", "run.idle"),
            ("[redis]\nenabled = true\nidle = \"spin\"", "redis.idle"),
            ("[kinesis]\nenabled = true\nidle = \"\"", "kinesis.idle"),
            ("[sidecar]\nidle = \"Backoff\"", "sidecar.idle"),
        ] {
            let error = err(text);
            assert_names(&error, key);
            assert!(error.contains("busy_spin"), "{error}");
        }
    }

    #[test]
    fn each_reader_and_run_error_names_its_key() {
        for (text, key) in [
            ("[readers]\ncores = []", "readers.cores"),
            (
                "[readers]\ncores = [1, 1]",
                "readers.cores: core 1 is listed twice",
            ),
            ("[readers]\nring_capacity = 1000", "readers.ring_capacity"),
            ("[readers]\nring_capacity = 512", "readers.ring_capacity"),
            (
                "[readers]\nring_capacity = 33554432",
                "readers.ring_capacity",
            ),
            (
                "[readers]\nsilent_timeout_ms = 0",
                "readers.silent_timeout_ms",
            ),
            ("[readers]\nlifetime_ms = 0", "readers.lifetime_ms"),
            (
                "[readers]\nreplace_before_ms = 86400000",
                "readers.replace_before_ms",
            ),
            ("[readers]\noverlap_max_ms = 0", "readers.overlap_max_ms"),
            (
                "[readers]\nreplace_before_ms = 1000",
                "readers.overlap_max_ms",
            ),
            (
                "[readers]\nbackoff_initial_ms = 0",
                "readers.backoff_initial_ms",
            ),
            ("[readers]\nbackoff_max_ms = 100", "readers.backoff_max_ms"),
            ("[readers]\ngroup_count_max = 19", "readers.group_count_max"),
            (
                "[readers]\ngroup_count_max = 65536",
                "readers.group_count_max",
            ),
            ("[run]\nduration_s = 0", "run.duration_s"),
        ] {
            assert_names(&err(&format!("{text}\n")), key);
        }
        let cores = RunConfig::from_toml("[readers]\ncores = [7]\n").expect("CPU count unchecked");
        assert_names(
            &cores.validate_with_cpus(2).expect_err("7 >= 2"),
            "readers.cores",
        );
    }

    #[test]
    fn the_sinks_may_not_share_a_dead_letter_file() {
        let shared = "[kinesis]\nenabled = true\ndead_letter_path = \"dead.jsonl\"\n\
                      [redis]\nenabled = true\ndead_letter_path = \"dead.jsonl\"\n";
        let e = RunConfig::from_toml(shared).expect_err("one file for both");
        assert_eq!(e.key(), Some("redis.dead_letter_path"), "{e}");
        let both = RunConfig::from_toml("[kinesis]\nenabled = true\n[redis]\nenabled = true\n")
            .expect("the defaults differ");
        assert_ne!(
            both.kinesis.map(|k| k.dead_letter_path),
            both.redis.map(|r| r.dead_letter_path)
        );
    }

    #[test]
    fn overrides_replace_the_file_and_errors_name_the_flag() {
        let mut config = RunConfig::default();
        config
            .apply(Overrides {
                endpoint: Some("ws://127.0.0.1:9443".into()),
                symbols: Some(vec!["ETHUSDT".into(), "SOLUSDT".into()]),
                streams: Some(vec!["depth20".into()]),
                duration: Some(Duration::from_secs(5)),
                ..Overrides::default()
            })
            .expect("valid");
        assert_eq!(config.endpoint, "ws://127.0.0.1:9443");
        assert_eq!(config.symbols, ["ETHUSDT", "SOLUSDT"]);
        assert_eq!(config.streams, [StreamKind::Depth20]);
        assert_eq!(config.duration, Some(Duration::from_secs(5)));
        config.validate_with_cpus(1).expect("valid");

        let mut untouched = RunConfig::default();
        untouched.apply(Overrides::default()).expect("no flags");
        assert_eq!(untouched, RunConfig::default());

        for (overrides, flag) in [
            (
                Overrides {
                    endpoint: Some("http://x".into()),
                    ..Overrides::default()
                },
                "--endpoint",
            ),
            (
                Overrides {
                    symbols: Some(vec!["eth".into()]),
                    ..Overrides::default()
                },
                "--symbols",
            ),
            (
                Overrides {
                    symbols: Some(vec![]),
                    ..Overrides::default()
                },
                "--symbols",
            ),
            (
                Overrides {
                    streams: Some(vec!["aggTrade".into()]),
                    ..Overrides::default()
                },
                "--streams: unknown stream 'aggTrade'",
            ),
            (
                Overrides {
                    duration: Some(Duration::ZERO),
                    ..Overrides::default()
                },
                "--duration",
            ),
        ] {
            let error = RunConfig::default().apply(overrides).expect_err(flag);
            assert_names(&error, flag);
        }
        let mut wide = RunConfig {
            symbols_per_connection: 500,
            ..RunConfig::default()
        };
        wide.streams = vec![StreamKind::Trade, StreamKind::Depth];
        let all = Overrides {
            streams: Some(vec!["trade".into(), "depth".into(), "depth20".into()]),
            ..Overrides::default()
        };
        assert_names(&wide.apply(all).expect_err("1500 streams"), "--streams");
    }

    #[test]
    fn the_connection_plan_splits_symbols_and_readers_take_turns() {
        let symbols: Vec<String> = (0..120).map(|i| format!("SYM{i}USDT")).collect();
        let mut config = RunConfig {
            symbols,
            ..RunConfig::default()
        };
        config.readers.cores = vec![1, 2];
        config.validate_with_cpus(4).expect("valid");
        let plan = config.connection_plan();
        let sizes: Vec<usize> = plan.iter().map(Vec::len).collect();
        assert_eq!(sizes, [200, 200, 80]);
        assert_eq!(
            plan[0][..4],
            [
                "sym0usdt@trade",
                "sym0usdt@bestBidAsk",
                "sym0usdt@depth",
                "sym0usdt@depth20"
            ]
        );
        assert_eq!(plan[2][0], "sym100usdt@trade");
        assert_eq!(plan[2][79], "sym119usdt@depth20");
        let readers: Vec<usize> = (0..plan.len())
            .map(|c| config.reader_of_connection(c))
            .collect();
        assert_eq!(readers, [0, 1, 0]);

        let small = RunConfig::default();
        assert_eq!(
            small.connection_plan(),
            [StreamKind::ALL.map(|k| stream_name("BTCUSDT", k))]
        );
        let url = small.stream_url(&small.connection_plan()[0]);
        assert_eq!(
            url,
            "wss://stream-sbe.binance.com:9443/stream?streams=\
             btcusdt@trade/btcusdt@bestBidAsk/btcusdt@depth/btcusdt@depth20"
        );
    }

    #[test]
    fn the_api_key_comes_from_the_named_variable_and_never_shows() {
        let config = RunConfig {
            api_key_env: "HOTPATH_TEST_KEY_PRESENT".into(),
            ..RunConfig::default()
        };
        let key = config
            .api_key_from(|name| (name == "HOTPATH_TEST_KEY_PRESENT").then(|| "k3yV4lue".into()))
            .expect("present");
        assert_eq!(key.expose(), "k3yV4lue");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert!(!format!("{config:?}").contains("k3yV4lue"));
        assert!(!format!("{config:#?}").contains("k3yV4lue"));

        let missing = config.api_key_from(|_| None).expect_err("missing");
        assert_names(
            &missing,
            "the Binance API key is missing: set HOTPATH_TEST_KEY_PRESENT",
        );
        let empty = config
            .api_key_from(|_| Some(String::new()))
            .expect_err("empty");
        assert_names(&empty, "missing");
        let newline = config
            .api_key_from(|_| Some("k3yV4lue\n".into()))
            .expect_err("newline");
        assert!(!newline.to_string().contains("k3yV4lue"), "{newline}");
        assert_names(&newline, "HOTPATH_TEST_KEY_PRESENT");
    }

    #[test]
    fn api_key_reads_the_process_environment() {
        let config = RunConfig {
            api_key_env: "HOTPATH_TEST_KEY_NEVER_SET_9F3A".into(),
            ..RunConfig::default()
        };
        let error = config.api_key().expect_err("never set");
        assert_names(&error, "set HOTPATH_TEST_KEY_NEVER_SET_9F3A");
    }

    /// `run.shard` / `--shard` pick this instance's share of the list; bad values name the key
    /// or the flag, and a shard left with nothing to carry is refused.
    #[test]
    fn a_shard_keeps_its_share_of_the_symbols() {
        let file = "[binance]\nsymbols = [\"BTCUSDT\", \"ETHUSDT\", \"BNBUSDT\", \"SOLUSDT\"]\n\
                    [run]\nshard = \"1/2\"\ngaps_file = \"gaps.jsonl\"\n";
        let mut config = RunConfig::from_toml(file).expect("valid");
        assert_eq!(config.gaps_file, Some(PathBuf::from("gaps.jsonl")));
        config.select_shard().expect("shard 1 owns some");
        let mine: Vec<&str> = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]
            .into_iter()
            .filter(|s| Shard::of(s, 2) == 1)
            .collect();
        assert_eq!(config.symbols, mine);
        let mut flagged = RunConfig::from_toml(file).expect("valid");
        flagged
            .apply(Overrides {
                shard: Some("0/2".into()),
                ..Overrides::default()
            })
            .expect("valid");
        flagged.select_shard().expect("shard 0 owns some");
        assert!(flagged.symbols.iter().all(|s| Shard::of(s, 2) == 0));
        assert_eq!(flagged.symbols.len() + config.symbols.len(), 4);
        assert_names(
            &RunConfig::from_toml("[run]\nshard = \"2/2\"\n").expect_err("index too big"),
            "run.shard",
        );
        assert_names(
            &RunConfig::from_toml("[run]\ngaps_file = \"\"\n").expect_err("empty"),
            "run.gaps_file",
        );
        let bad = RunConfig::default().apply(Overrides {
            shard: Some("x".into()),
            ..Overrides::default()
        });
        assert_names(&bad.expect_err("not a shard"), "--shard");
        // BTCUSDT alone: the other shard has nothing to carry.
        let other = 1 - Shard::of("BTCUSDT", 2);
        let mut empty =
            RunConfig::from_toml(&format!("[run]\nshard = \"{other}/2\"\n")).expect("valid");
        assert_names(&empty.select_shard().expect_err("none left"), "run.shard");
    }

    /// `--redis URL` and `--kinesis-endpoint` enable their writer with the file's settings
    /// even when the file's section does not enable it; a disabled section is still checked.
    #[test]
    fn sink_flags_enable_the_writer_with_the_files_settings() {
        let text = "[redis]\nbook_levels = 7\n[kinesis]\nlinger_ms = 9\n";
        let mut config = RunConfig::from_toml(text).expect("valid");
        assert!(
            config.redis.is_none() && config.kinesis.is_none(),
            "not enabled"
        );
        config
            .apply(Overrides {
                redis_url: Some("redis://127.0.0.1:1/0".into()),
                kinesis_endpoint: Some("http://127.0.0.1:2".into()),
                ..Default::default()
            })
            .expect("valid flags");
        let redis = config.redis.expect("--redis enables it");
        assert_eq!(
            (redis.url.as_str(), redis.book_levels),
            ("redis://127.0.0.1:1/0", 7)
        );
        let kinesis = config.kinesis.expect("--kinesis-endpoint enables it");
        assert_eq!(kinesis.linger, Duration::from_millis(9));
        let e = RunConfig::from_toml("[redis]\nbook_levels = 0\n").expect_err("checked");
        assert!(e.to_string().contains("redis.book_levels"), "{e}");
    }
}

#[cfg(test)]
mod example {
    use super::{RedisConfig, RunConfig, redact_url, redact_urls};
    use crate::stream::StreamKind;

    #[test]
    fn urls_print_without_their_password() {
        for (url, want) in [
            (
                "redis://user:hunter2@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            ("rediss://:hunter2@host", "rediss://:***@host"),
            ("redis://host:6379/0", "redis://host:6379/0"),
            ("redis://user@host", "redis://user@host"),
        ] {
            assert_eq!(redact_url(url), want);
        }
        let text = "a \"redis://u:p4ss@h/0\" and rediss://:x@y:1 end";
        let clean = redact_urls(text);
        assert!(!clean.contains("p4ss") && !clean.contains(":x@"), "{clean}");
        let config = RunConfig {
            redis: Some(RedisConfig {
                url: "redis://u:hunter2@h/0".into(),
                cluster_urls: vec!["redis://:hunter3@c:7000".into()],
                ..RedisConfig::default()
            }),
            ..RunConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("hunter3"),
            "{debug}"
        );
        let bad = RedisConfig {
            url: "http://u:hunter2@h/0".into(),
            ..RedisConfig::default()
        };
        let e = bad.check().expect_err("not redis://").to_string();
        assert!(e.starts_with("redis.url") && !e.contains("hunter2"), "{e}");
    }

    fn load(name: &str) -> RunConfig {
        let path = format!("{}/../config/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("the example exists");
        let config = RunConfig::from_toml(&text).expect("valid");
        config.validate_with_cpus(2).expect("valid on two CPUs");
        config
    }

    /// `config/binance.toml`, the documented production example, is a valid configuration.
    #[test]
    fn the_binance_example_parses() {
        let config = load("binance.toml");
        assert!(config.endpoint.starts_with("wss://"));
        assert_eq!(config.symbols, ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]);
        assert_eq!(config.streams, StreamKind::ALL);
        assert_eq!(config.readers.cores, [1]);
        assert_eq!(config.trust_cert, None);
    }

    /// `config/sim-run.toml` points at the simulator `config/sim.toml` describes.
    #[test]
    fn the_simulator_example_parses_and_matches_the_simulator() {
        let config = load("sim-run.toml");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sim.toml");
        let sim_text = std::fs::read_to_string(path).expect("config/sim.toml exists");
        let sim = crate::sim::config::SimConfig::from_toml(&sim_text).expect("valid");
        assert_eq!(config.endpoint, format!("ws://{}", sim.listen));
        assert_eq!(config.symbols, sim.exchange.symbols);
        assert_eq!(config.readers.cores, [0]);
        assert_eq!(
            config.readers.lifetime.as_millis(),
            u128::from(sim.websocket.max_lifetime_ms)
        );
    }
}
