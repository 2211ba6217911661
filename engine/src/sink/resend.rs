//! `hotpath dlq resend FILE`: sends a dead-letter file's records ([`crate::sink::dlq`]) to
//! where they were going, without duplicating what is already there as far as that can be
//! known:
//!
//! - **Kinesis records** of outcome `failed` (no attempt can have delivered them) are sent again,
//!   per stream in file order, retried with backoff. Records of outcome `unknown` (an attempt
//!   got no answer: they may be in the stream already) are not sent unless `include_unknown`
//!   (`--include-unknown`) is set, since Kinesis cannot be asked whether a record is there;
//!   they are written to `FILE.unknown` instead, so the operator can check a consumer and send
//!   that file with `--include-unknown` (consumers must then dedupe on symbol + trade id).
//! - **Redis records** are always sent: each goes back with its own entry id (`XADD
//!   trades:{S} <id> ...`), and a refusal as "equal or smaller than the target stream top item"
//!   is resolved with `XRANGE` for that exact id: present means already there (counted in
//!   `already_there`, not sent twice); absent means the stream already holds newer entries and
//!   a Redis stream only appends, so it cannot be placed (it fails, with that reason).
//!
//! - **PostgreSQL rows** are always sent (`--postgres URL`): each goes back into its table with
//!   `ON CONFLICT DO NOTHING` on the table's unique key, so a row that did land is counted in
//!   `already_there`, never written twice ([`super::postgres::resend`]).
//!
//! Records that still fail are written to `FILE.failed` (same format), so nothing is lost. The
//! input file is never changed. `FILE.unknown` and `FILE.failed` are written afresh by each run
//! (a temporary file renamed over them, never appended to an earlier run's): they hold what this
//! run left, and one this run has nothing for is removed (an earlier run's list is out of date).
//!
//! Every argument is checked before anything is sent (the Kinesis settings, the `--redis` URL,
//! a `--redis` needed by the file's Redis records): a mistake is reported with nothing sent.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::dlq::{self, DeadRecord, Outcome, Target};
use crate::config::KinesisConfig;

/// Attempts per record before it is written to `FILE.failed`.
pub const ATTEMPTS_MAX: u32 = 8;

/// Where to resend and how.
#[derive(Clone, Debug, Default)]
pub struct ResendOptions {
    /// Kinesis endpoint override (an emulator); `None`: AWS.
    pub kinesis_endpoint: Option<String>,
    /// AWS region; `None`: the chain's.
    pub region: Option<String>,
    /// The Redis server for Redis records (`redis://host:port/db`).
    pub redis_url: Option<String>,
    /// The PostgreSQL database for PostgreSQL rows (`postgres://...`).
    pub postgres_url: Option<String>,
    /// Also send Kinesis records of outcome `unknown`.
    pub include_unknown: bool,
}

/// What a resend did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ResendReport {
    /// Records in the file.
    pub records: usize,
    /// Records acknowledged (Kinesis) or added (Redis).
    pub sent: usize,
    /// Redis records found in their stream already (verified with `XRANGE`).
    pub already_there: usize,
    /// Kinesis records of outcome `unknown` not sent (without `--include-unknown`).
    pub skipped_unknown: usize,
    /// Where the skipped ones were written.
    pub unknown_file: Option<String>,
    /// Records that still failed.
    pub failed: usize,
    /// Where the failed ones were written.
    pub failed_file: Option<String>,
    /// A torn last line that was skipped (its 1-based line number).
    pub torn_tail: Option<usize>,
}

/// Resends the records of `path`.
pub async fn resend_file(path: &Path, options: &ResendOptions) -> anyhow::Result<ResendReport> {
    let letters = dlq::read(path).map_err(anyhow::Error::msg)?;
    let mut report = ResendReport {
        records: letters.records.len(),
        torn_tail: letters.torn_tail,
        ..ResendReport::default()
    };
    let (postgres, others): (Vec<DeadRecord>, Vec<DeadRecord>) = letters
        .records
        .into_iter()
        .partition(|r| matches!(r.target, Target::Postgres { .. }));
    let (redis, kinesis): (Vec<DeadRecord>, Vec<DeadRecord>) = others
        .into_iter()
        .partition(|r| matches!(r.target, Target::Redis { .. }));
    let (kinesis, unknown): (Vec<DeadRecord>, Vec<DeadRecord>) = kinesis
        .into_iter()
        .partition(|r| options.include_unknown || r.outcome == Outcome::Failed);
    let checked = check_arguments(path, options, redis.len(), postgres.len())?;
    let mut failed = Vec::new();
    if !kinesis.is_empty() {
        crate::tls::install_default_provider();
        let client = super::kinesis::writer::client_from_chain(&checked.kinesis).await;
        let (sent, left) = super::kinesis::resend::resend(&client, kinesis, ATTEMPTS_MAX).await;
        report.sent += sent;
        failed.extend(left);
    }
    if let Some(url) = checked.redis_url {
        let outcome = super::redis::resend::resend(&url, redis, ATTEMPTS_MAX).await?;
        report.sent += outcome.added;
        report.already_there += outcome.already_there;
        failed.extend(outcome.failed);
    }
    if let Some(url) = checked.postgres_url {
        let outcome = super::postgres::resend::resend(&url, postgres, ATTEMPTS_MAX).await;
        report.sent += outcome.added;
        report.already_there += outcome.already_there;
        failed.extend(outcome.failed);
    }
    report.skipped_unknown = unknown.len();
    report.unknown_file = write_beside(path, "unknown", &unknown)?;
    report.failed = failed.len();
    report.failed_file = write_beside(path, "failed", &failed)?;
    Ok(report)
}

/// The arguments of a resend, checked.
struct Checked {
    kinesis: KinesisConfig,
    redis_url: Option<String>,
    postgres_url: Option<String>,
}

/// Checks every argument before anything is sent: the Kinesis settings, the `--redis` and
/// `--postgres` URLs (each must parse, whether or not the file holds such records), and that
/// each is given when the file holds `redis_records` or `postgres_rows`.
fn check_arguments(
    path: &Path,
    options: &ResendOptions,
    redis_records: usize,
    postgres_rows: usize,
) -> anyhow::Result<Checked> {
    let kinesis = KinesisConfig {
        endpoint_url: options.kinesis_endpoint.clone(),
        region: options.region.clone(),
        ..KinesisConfig::default()
    };
    kinesis.check().map_err(anyhow::Error::msg)?;
    if let Some(url) = &options.redis_url {
        redis::Client::open(url.as_str()).map_err(|e| anyhow::anyhow!("--redis {url}: {e}"))?;
    } else if redis_records > 0 {
        anyhow::bail!(
            "{}: the file holds {redis_records} Redis records: give the server with --redis URL",
            path.display(),
        );
    }
    if let Some(url) = &options.postgres_url {
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| anyhow::anyhow!("--postgres {}: {e}", crate::config::redact_url(url)))?;
    } else if postgres_rows > 0 {
        anyhow::bail!(
            "{}: the file holds {postgres_rows} PostgreSQL rows: give the database with \
             --postgres URL",
            path.display(),
        );
    }
    Ok(Checked {
        kinesis,
        redis_url: options.redis_url.clone(),
        postgres_url: options.postgres_url.clone(),
    })
}

/// Writes `records` afresh to `PATH.suffix` (temporary file, then rename) and returns its
/// path; with no records, removes an earlier run's `PATH.suffix` and returns `None`.
fn write_beside(
    path: &Path,
    suffix: &str,
    records: &[DeadRecord],
) -> anyhow::Result<Option<String>> {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    let out_path = PathBuf::from(name);
    if records.is_empty() {
        match std::fs::remove_file(&out_path) {
            Ok(()) => tracing::info!(
                "removed {} of an earlier run: this run left nothing there",
                out_path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("{}: {e}", out_path.display()),
        }
        return Ok(None);
    }
    dlq::replace(&out_path, records).map_err(|e| anyhow::anyhow!("{}: {e}", out_path.display()))?;
    Ok(Some(out_path.display().to_string()))
}
