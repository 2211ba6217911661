//! The PostgreSQL / TimescaleDB writer's settings: the `[postgres]` table of the run
//! configuration, off unless `enabled = true`. Every value is checked, and errors name the key
//! (`postgres.batch_rows: ...`).
//!
//! ```toml
//! [postgres]
//! enabled = true
//! url = "postgres://hotpath@127.0.0.1:5432/hotpath"   # libpq-style URL (password redacted in logs)
//! batch_rows = 5000               # rows per COPY batch (one transaction)
//! linger_ms = 200                 # a row never waits longer for its batch to fill
//! book_levels = 10                # top N levels per side in each `books` row, 1..=20 (from depth20)
//! book_interval_ms = 1000         # one `books` row per symbol at most this often (event time)
//! buffer_rows_max = 1000000       # rows held while the database is down; beyond, the dead-letter file
//! dead_letter_path = "hotpath-postgres-dead-letters.jsonl"
//! retry_initial_ms = 100          # full-jitter backoff between attempts
//! retry_max_ms = 5000
//! request_timeout_ms = 30000      # a connect or batch unanswered this long: connection dropped, batch retried
//! retention_days = 0              # drop data older than this (TimescaleDB policy or partitions); 0: keep
//! idle = "backoff"                # when idle: "backoff", "blocking" or "busy_spin"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::idle::IdleStrategy;

/// The PostgreSQL writer's settings. `Debug` prints the URL with its password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://` or `postgresql://` URL.
    pub url: String,
    /// Rows per batch, 1..=1000000.
    pub batch_rows: usize,
    /// How long a row may wait for its batch to fill.
    pub linger: Duration,
    /// Levels per side in a `books` row, 1..=20 (the depth20 stream's depth).
    pub book_levels: usize,
    /// At most one `books` row per symbol per interval (by event time); at least 1 ms.
    pub book_interval: Duration,
    /// Rows held in memory while the database cannot be written; beyond, the oldest go to the
    /// dead-letter file. At least `batch_rows`.
    pub buffer_rows_max: usize,
    /// The dead-letter file (JSON Lines, `sink::dlq`).
    pub dead_letter_path: PathBuf,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long a connect (with its migrations) or a batch may go unanswered before the
    /// connection is dropped and the batch retried on a new one.
    pub request_timeout: Duration,
    /// Data older than this many days is dropped; `None` (0): kept.
    pub retention_days: Option<u32>,
    /// What the writer thread does when it has nothing to do.
    pub idle: IdleStrategy,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://hotpath@127.0.0.1:5432/hotpath".into(),
            batch_rows: 5000,
            linger: Duration::from_millis(200),
            book_levels: 10,
            book_interval: Duration::from_millis(1000),
            buffer_rows_max: 1_000_000,
            dead_letter_path: PathBuf::from("hotpath-postgres-dead-letters.jsonl"),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(5000),
            request_timeout: Duration::from_secs(30),
            retention_days: None,
            idle: IdleStrategy::Backoff,
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &super::redact_url(&self.url))
            .field("batch_rows", &self.batch_rows)
            .field("linger", &self.linger)
            .field("book_levels", &self.book_levels)
            .field("book_interval", &self.book_interval)
            .field("buffer_rows_max", &self.buffer_rows_max)
            .field("dead_letter_path", &self.dead_letter_path)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("request_timeout", &self.request_timeout)
            .field("retention_days", &self.retention_days)
            .field("idle", &self.idle)
            .finish()
    }
}

/// `[postgres]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPostgres {
    enabled: Option<bool>,
    url: Option<String>,
    batch_rows: Option<usize>,
    linger_ms: Option<u64>,
    book_levels: Option<usize>,
    book_interval_ms: Option<u64>,
    buffer_rows_max: Option<usize>,
    dead_letter_path: Option<PathBuf>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    retention_days: Option<u32>,
    idle: Option<String>,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

impl RawPostgres {
    /// The validated settings, `None` when not enabled.
    pub(crate) fn into_config(self) -> Result<Option<PostgresConfig>, ConfigError> {
        if !self.enabled.unwrap_or(false) {
            return Ok(None);
        }
        let mut c = PostgresConfig::default();
        set(&mut c.url, self.url);
        set(&mut c.batch_rows, self.batch_rows);
        set(&mut c.linger, self.linger_ms.map(Duration::from_millis));
        set(&mut c.book_levels, self.book_levels);
        set(
            &mut c.book_interval,
            self.book_interval_ms.map(Duration::from_millis),
        );
        set(&mut c.buffer_rows_max, self.buffer_rows_max);
        set(&mut c.dead_letter_path, self.dead_letter_path);
        set(
            &mut c.retry_initial,
            self.retry_initial_ms.map(Duration::from_millis),
        );
        set(
            &mut c.retry_max,
            self.retry_max_ms.map(Duration::from_millis),
        );
        set(
            &mut c.request_timeout,
            self.request_timeout_ms.map(Duration::from_millis),
        );
        if let Some(days) = self.retention_days {
            c.retention_days = (days > 0).then_some(days);
        }
        set(&mut c.idle, super::idle("postgres.idle", self.idle)?);
        c.check()?;
        Ok(Some(c))
    }
}

impl PostgresConfig {
    /// Checks every value, naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(ConfigError::invalid(format!(
                "postgres.url = {:?}: must start with postgres:// or postgresql://",
                super::redact_url(&self.url)
            )));
        }
        if let Err(e) = self.url.parse::<tokio_postgres::Config>() {
            return Err(ConfigError::invalid(format!(
                "postgres.url = {:?}: {e}",
                super::redact_url(&self.url)
            )));
        }
        if !(1..=1_000_000).contains(&self.batch_rows) {
            return Err(ConfigError::invalid(format!(
                "postgres.batch_rows = {}: must be within 1..=1000000",
                self.batch_rows
            )));
        }
        if !(1..=20).contains(&self.book_levels) {
            return Err(ConfigError::invalid(format!(
                "postgres.book_levels = {}: must be within 1..=20 (the depth20 stream's depth)",
                self.book_levels
            )));
        }
        if self.book_interval.is_zero() {
            return Err(ConfigError::invalid(
                "postgres.book_interval_ms: must be above 0",
            ));
        }
        if self.buffer_rows_max < self.batch_rows {
            return Err(ConfigError::invalid(format!(
                "postgres.buffer_rows_max = {}: must be at least postgres.batch_rows = {}",
                self.buffer_rows_max, self.batch_rows
            )));
        }
        if self.dead_letter_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("postgres.dead_letter_path: empty"));
        }
        if self.retry_initial.is_zero() {
            return Err(ConfigError::invalid(
                "postgres.retry_initial_ms: must be above 0",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "postgres.request_timeout_ms: must be above 0",
            ));
        }
        if self.retry_max < self.retry_initial {
            return Err(ConfigError::invalid(
                "postgres.retry_max_ms: must be at least postgres.retry_initial_ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres(text: &str) -> Result<Option<PostgresConfig>, ConfigError> {
        toml::from_str::<RawPostgres>(text)
            .map_err(|e| ConfigError::invalid(e.to_string()))?
            .into_config()
    }

    #[test]
    fn off_unless_enabled_and_defaults() {
        assert_eq!(postgres("batch_rows = 5").expect("valid"), None);
        let c = postgres("enabled = true").expect("valid").expect("on");
        assert_eq!(c, PostgresConfig::default());
        let c = postgres("enabled = true\nbatch_rows = 10\nlinger_ms = 5\nretention_days = 7")
            .expect("valid")
            .expect("on");
        assert_eq!(c.batch_rows, 10);
        assert_eq!(c.linger, Duration::from_millis(5));
        assert_eq!(c.retention_days, Some(7));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("url = \"mysql://x\"", "postgres.url"),
            ("url = \"postgres://h:notaport/db\"", "postgres.url"),
            ("batch_rows = 0", "postgres.batch_rows"),
            ("book_levels = 21", "postgres.book_levels"),
            ("book_interval_ms = 0", "postgres.book_interval_ms"),
            ("buffer_rows_max = 10", "postgres.buffer_rows_max"),
            ("dead_letter_path = \"\"", "postgres.dead_letter_path"),
            ("retry_initial_ms = 0", "postgres.retry_initial_ms"),
            ("retry_max_ms = 1", "postgres.retry_max_ms"),
            ("request_timeout_ms = 0", "postgres.request_timeout_ms"),
            ("idle = \"nap\"", "postgres.idle"),
        ] {
            let e = postgres(&format!("enabled = true\n{text}")).expect_err(text);
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = PostgresConfig {
            url: "postgres://u:secret@127.0.0.1/db".into(),
            ..PostgresConfig::default()
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
