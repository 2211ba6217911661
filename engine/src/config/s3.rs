//! The S3 bronze archive's settings: the `[s3]` table of the run configuration (the live
//! archive writer, off unless `enabled = true`) and of `hotpath backfill trades` (which needs
//! only the bucket and its access). Every value is checked, and errors name the key
//! (`s3.bucket: ...`). The layout and the Parquet schema are in the README ("The cold path").
//!
//! ```toml
//! [s3]
//! enabled = true
//! bucket = "bitcoin-data-lake"
//! prefix = "bronze"               # keys: {prefix}/binance/trades/symbol=S/date=D/hour=H/part-F-L.parquet
//! # region = "eu-west-1"          # default: the standard AWS chain (AWS_REGION, profile, IMDS)
//! # endpoint_url = "http://127.0.0.1:5000"   # an emulator (moto) or S3-compatible store; default: AWS
//! force_path_style = false        # http://host/bucket/key instead of http://bucket.host/key (emulators)
//! part_rows_max = 1000000         # an hour's trades cut into parts of at most this many
//! buffer_trades_max = 5000000     # trades held while S3 is down; past it the oldest part is dropped
//! close_grace_ms = 10000          # an hour's part is written this long after the hour ends (late repairs)
//! multipart_threshold_bytes = 16777216   # objects this big or bigger go up as multipart uploads
//! multipart_part_bytes = 8388608  # multipart part size, at least 5 MiB (S3's minimum)
//! retry_initial_ms = 200          # full-jitter backoff between attempts of a failed part
//! retry_max_ms = 10000
//! request_timeout_ms = 60000      # one S3 request (list, put, part) at most this long
//! idle = "backoff"                # when idle: "backoff", "blocking" or "busy_spin"
//! kline_interval = "1m"           # candles built from the delivered trades, archived; "none": off
//! snapshot_queue = 64             # depth snapshots waiting for the archive; 0: not archived
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::idle::IdleStrategy;

/// S3's smallest multipart part (all parts but the last).
pub const MULTIPART_PART_MIN_BYTES: usize = 5 * 1024 * 1024;
/// S3's largest single PutObject (5 GiB).
pub const PUT_OBJECT_MAX_BYTES: usize = 5 * 1024 * 1024 * 1024;

/// The archive's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// Whether `hotpath run` archives live (the writer runs); the backfill needs only the
    /// bucket.
    pub enabled: bool,
    /// The bucket (3-63 of `a-z 0-9 . -`, S3's rules).
    pub bucket: String,
    /// The first path segment of every key, without slashes at either end.
    pub prefix: String,
    /// AWS region; `None` takes the standard chain's.
    pub region: Option<String>,
    /// Endpoint override (`http://` or `https://`); `None`: AWS.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (emulators on an IP address need it).
    pub force_path_style: bool,
    /// At most this many trades in one part.
    pub part_rows_max: usize,
    /// At most this many trades of closed parts wait in memory (S3 down or slow); past it the
    /// oldest part is dropped, counted and logged with the backfill that fetches it again.
    pub buffer_trades_max: usize,
    /// How long after an hour ends its trades wait for late repairs before their part is
    /// written.
    pub close_grace: Duration,
    /// Objects at least this big go up as multipart uploads.
    pub multipart_threshold_bytes: usize,
    /// Size of each multipart part (the last may be smaller).
    pub multipart_part_bytes: usize,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// One request's deadline.
    pub request_timeout: Duration,
    /// What the writer thread does when it has nothing to do.
    pub idle: IdleStrategy,
    /// The interval of the candles the live writer builds from the trades it archives and
    /// archives too (`klines/interval=...`); `None` (`"none"`): no candles.
    pub kline_interval: Option<crate::kline::Interval>,
    /// How many depth snapshots the sidecar may hand to the archive before it drops them
    /// (counted); 0: snapshots are not archived.
    pub snapshot_queue: usize,
}

/// The most snapshots `s3.snapshot_queue` may hold (each may be 5000 levels a side).
pub const SNAPSHOT_QUEUE_MAX: usize = 4096;

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            enabled: false,
            bucket: String::new(),
            prefix: "bronze".into(),
            region: None,
            endpoint_url: None,
            force_path_style: false,
            part_rows_max: 1_000_000,
            buffer_trades_max: 5_000_000,
            close_grace: Duration::from_secs(10),
            multipart_threshold_bytes: 16 * 1024 * 1024,
            multipart_part_bytes: 8 * 1024 * 1024,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle: IdleStrategy::Backoff,
            kline_interval: crate::kline::Interval::of("1m"),
            snapshot_queue: 64,
        }
    }
}

/// `[s3]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawS3 {
    enabled: Option<bool>,
    bucket: Option<String>,
    prefix: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    force_path_style: Option<bool>,
    part_rows_max: Option<usize>,
    buffer_trades_max: Option<usize>,
    close_grace_ms: Option<u64>,
    multipart_threshold_bytes: Option<usize>,
    multipart_part_bytes: Option<usize>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    idle: Option<String>,
    kline_interval: Option<String>,
    snapshot_queue: Option<usize>,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

impl RawS3 {
    /// Whether the live archive writer runs (`enabled = true`).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }

    /// The validated settings, whether enabled or not (the backfill uses them either way);
    /// `None` when the table names no bucket and is not enabled.
    pub(crate) fn into_settings(self) -> Result<Option<S3Config>, ConfigError> {
        if self.bucket.is_none() && !self.enabled() {
            return Ok(None);
        }
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        let mut c = S3Config {
            enabled: self.enabled(),
            ..S3Config::default()
        };
        set(&mut c.bucket, self.bucket);
        set(&mut c.prefix, self.prefix);
        c.region = self.region.or(c.region);
        c.endpoint_url = self.endpoint_url.or(c.endpoint_url);
        set(&mut c.force_path_style, self.force_path_style);
        set(&mut c.part_rows_max, self.part_rows_max);
        set(&mut c.buffer_trades_max, self.buffer_trades_max);
        set(&mut c.close_grace, ms(self.close_grace_ms));
        set(
            &mut c.multipart_threshold_bytes,
            self.multipart_threshold_bytes,
        );
        set(&mut c.multipart_part_bytes, self.multipart_part_bytes);
        set(&mut c.retry_initial, ms(self.retry_initial_ms));
        set(&mut c.retry_max, ms(self.retry_max_ms));
        set(&mut c.request_timeout, ms(self.request_timeout_ms));
        set(&mut c.idle, super::idle("s3.idle", self.idle)?);
        if let Some(name) = self.kline_interval {
            c.kline_interval = match name.as_str() {
                "none" => None,
                _ => Some(crate::kline::Interval::of(&name).ok_or_else(|| {
                    ConfigError::invalid(format!(
                        "s3.kline_interval = {name:?}: a kline interval (1s, 1m, ... 1w) or \"none\""
                    ))
                })?),
            };
        }
        set(&mut c.snapshot_queue, self.snapshot_queue);
        c.check()?;
        Ok(Some(c))
    }
}

impl S3Config {
    /// Checks every value, naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        let b = &self.bucket;
        let charset = b
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
        let ends = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !(3..=63).contains(&b.len())
            || !charset
            || !ends(b.bytes().next())
            || !ends(b.bytes().last())
        {
            return Err(ConfigError::invalid(format!(
                "s3.bucket = {b:?}: must be 3 to 63 of a-z, 0-9, '.' and '-', starting and \
                 ending with a letter or digit"
            )));
        }
        let p = &self.prefix;
        if p.is_empty() || p.starts_with('/') || p.ends_with('/') || p.contains("//") {
            return Err(ConfigError::invalid(format!(
                "s3.prefix = {p:?}: must be a non-empty path without a leading or trailing '/'"
            )));
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(format!(
                "s3.endpoint_url = {url:?}: must start with http:// or https://"
            )));
        }
        if self.region.as_ref().is_some_and(|r| r.is_empty()) {
            return Err(ConfigError::invalid(
                "s3.region: empty (omit it to use the AWS chain)",
            ));
        }
        self.check_sizes()?;
        if self.retry_initial.is_zero() {
            return Err(ConfigError::invalid("s3.retry_initial_ms: must be above 0"));
        }
        if self.retry_max < self.retry_initial {
            return Err(ConfigError::invalid(
                "s3.retry_max_ms: must be at least s3.retry_initial_ms",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "s3.request_timeout_ms: must be above 0",
            ));
        }
        Ok(())
    }

    fn check_sizes(&self) -> Result<(), ConfigError> {
        if !(1..=100_000_000).contains(&self.part_rows_max) {
            return Err(ConfigError::invalid(format!(
                "s3.part_rows_max = {}: must be within 1..=100000000",
                self.part_rows_max
            )));
        }
        if self.buffer_trades_max == 0 {
            return Err(ConfigError::invalid(
                "s3.buffer_trades_max: must be above 0",
            ));
        }
        if self.snapshot_queue > SNAPSHOT_QUEUE_MAX {
            return Err(ConfigError::invalid(format!(
                "s3.snapshot_queue = {}: must be within 0..={SNAPSHOT_QUEUE_MAX}",
                self.snapshot_queue
            )));
        }
        if !(MULTIPART_PART_MIN_BYTES..=PUT_OBJECT_MAX_BYTES).contains(&self.multipart_part_bytes) {
            return Err(ConfigError::invalid(format!(
                "s3.multipart_part_bytes = {}: must be within 5 MiB ({MULTIPART_PART_MIN_BYTES}) \
                 and 5 GiB",
                self.multipart_part_bytes
            )));
        }
        if !(1..=PUT_OBJECT_MAX_BYTES).contains(&self.multipart_threshold_bytes) {
            return Err(ConfigError::invalid(format!(
                "s3.multipart_threshold_bytes = {}: must be within 1 and 5 GiB (S3's largest \
                 PutObject)",
                self.multipart_threshold_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(text: &str) -> Result<Option<S3Config>, ConfigError> {
        toml::from_str::<RawS3>(text)
            .map_err(|e| ConfigError::invalid(e.to_string()))?
            .into_settings()
    }

    #[test]
    fn absent_without_a_bucket_and_defaults_otherwise() {
        assert_eq!(s3("prefix = \"x\"").expect("valid"), None);
        let c = s3("bucket = \"lake\"").expect("valid").expect("set");
        assert_eq!(
            c,
            S3Config {
                bucket: "lake".into(),
                ..S3Config::default()
            }
        );
        let c =
            s3("bucket = \"lake\"\nprefix = \"a/b\"\nclose_grace_ms = 5\nforce_path_style = true")
                .expect("valid")
                .expect("set");
        assert_eq!(
            (c.prefix.as_str(), c.close_grace, c.force_path_style),
            ("a/b", Duration::from_millis(5), true)
        );
        let c = s3("bucket = \"lake\"\nkline_interval = \"none\"\nsnapshot_queue = 0")
            .expect("valid")
            .expect("set");
        assert_eq!((c.kline_interval, c.snapshot_queue), (None, 0));
        let c = s3("bucket = \"lake\"\nkline_interval = \"1s\"")
            .expect("valid")
            .expect("set");
        assert_eq!(c.kline_interval.map(|i| i.ms), Some(1000));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("enabled = true", "s3.bucket"),
            ("bucket = \"UPPER\"", "s3.bucket"),
            ("bucket = \"ab\"", "s3.bucket"),
            ("bucket = \"-lake\"", "s3.bucket"),
            ("bucket = \"lake\"\nprefix = \"\"", "s3.prefix"),
            ("bucket = \"lake\"\nprefix = \"/bronze\"", "s3.prefix"),
            ("bucket = \"lake\"\nprefix = \"bronze/\"", "s3.prefix"),
            (
                "bucket = \"lake\"\nendpoint_url = \"localhost:5000\"",
                "s3.endpoint_url",
            ),
            ("bucket = \"lake\"\nregion = \"\"", "s3.region"),
            ("bucket = \"lake\"\npart_rows_max = 0", "s3.part_rows_max"),
            (
                "bucket = \"lake\"\nbuffer_trades_max = 0",
                "s3.buffer_trades_max",
            ),
            (
                "bucket = \"lake\"\nmultipart_part_bytes = 1024",
                "s3.multipart_part_bytes",
            ),
            (
                "bucket = \"lake\"\nmultipart_threshold_bytes = 0",
                "s3.multipart_threshold_bytes",
            ),
            (
                "bucket = \"lake\"\nretry_initial_ms = 0",
                "s3.retry_initial_ms",
            ),
            ("bucket = \"lake\"\nretry_max_ms = 1", "s3.retry_max_ms"),
            (
                "bucket = \"lake\"\nrequest_timeout_ms = 0",
                "s3.request_timeout_ms",
            ),
            ("bucket = \"lake\"\nidle = \"nap\"", "s3.idle"),
            (
                "bucket = \"lake\"\nkline_interval = \"1M\"",
                "s3.kline_interval",
            ),
            (
                "bucket = \"lake\"\nsnapshot_queue = 100000",
                "s3.snapshot_queue",
            ),
        ] {
            let e = s3(text).expect_err(text);
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }
}
