//! `hotpath dlq resend FILE`: sends a dead-letter file's records to their streams again, per
//! stream in file order (so each partition key keeps its order), in PutRecords batches,
//! retrying failed entries with backoff. Records that still fail after the attempts are
//! written to `FILE.failed` (same format), so nothing is lost.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use bytes::Bytes;
use serde::Serialize;

use super::dlq::{self, DeadLetterWriter, DeadRecord};
use super::lane::{Entry, Lane};
use super::writer::{client_from_chain, put_records};
use crate::backoff::jittered;
use crate::clock::unix_ms;
use crate::config::KinesisConfig;

/// Attempts per record before it is written to `FILE.failed`.
pub const ATTEMPTS_MAX: u32 = 8;

/// What a resend did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ResendReport {
    /// Records in the file.
    pub records: usize,
    /// Records acknowledged by Kinesis.
    pub sent: usize,
    /// Records that still failed.
    pub failed: usize,
    /// Where the failed ones were written.
    pub failed_file: Option<String>,
    /// A torn last line that was skipped (its 1-based line number).
    pub torn_tail: Option<usize>,
}

/// Resends `path` with a client from the AWS chain (`endpoint`, `region` overrides).
pub async fn resend_file(
    path: &Path,
    endpoint: Option<String>,
    region: Option<String>,
) -> anyhow::Result<ResendReport> {
    crate::tls::install_crypto_provider();
    let letters = dlq::read(path).map_err(anyhow::Error::msg)?;
    let config = KinesisConfig {
        endpoint_url: endpoint,
        region,
        ..KinesisConfig::default()
    };
    config.check().map_err(anyhow::Error::msg)?;
    let client = client_from_chain(&config).await;
    let records = letters.records.len();
    let (sent, failed) = resend(&client, letters.records, ATTEMPTS_MAX).await;
    let mut report = ResendReport {
        records,
        sent,
        failed: failed.len(),
        failed_file: None,
        torn_tail: letters.torn_tail,
    };
    if !failed.is_empty() {
        let mut name = path.as_os_str().to_owned();
        name.push(".failed");
        let failed_path = std::path::PathBuf::from(name);
        let mut out = DeadLetterWriter::open(&failed_path)?;
        for record in &failed {
            out.append(record)?;
        }
        out.flush()?;
        report.failed_file = Some(failed_path.display().to_string());
    }
    Ok(report)
}

/// Sends `records`, each stream's in order; returns how many were acknowledged and the
/// records that failed `attempts` times.
pub async fn resend(
    client: &Client,
    records: Vec<DeadRecord>,
    attempts: u32,
) -> (usize, Vec<DeadRecord>) {
    let mut streams: Vec<(String, Lane)> = Vec::new();
    let now = Instant::now();
    for record in records {
        let lane = match streams.iter().position(|(s, _)| *s == record.stream) {
            Some(at) => at,
            None => {
                streams.push((record.stream.clone(), Lane::default()));
                streams.len() - 1
            }
        };
        streams[lane].1.push(Entry {
            key: Arc::from(record.partition_key.as_str()),
            data: Bytes::from(record.data),
            recv_time_ns: 0,
            enqueued: now,
            first_attempt_ms: record.first_attempt_ms,
            attempts: record.attempts,
            error: Some(Arc::from(record.error.as_str())),
        });
    }
    let mut rng = crate::rng::Rng::new(unix_ms() as u64 | 1);
    let mut sent = 0;
    let mut failed = Vec::new();
    for (stream, mut lane) in streams {
        let mut tries = 0u32;
        while !lane.is_empty() {
            let batch = lane.take_plain(500, 5 << 20);
            let (_, batch, result) = put_records(client.clone(), stream.clone(), 0, batch).await;
            let mut done = Vec::new();
            let ok = match result {
                Ok(flags) => {
                    let verdict = lane.settle(batch, &flags, &mut done);
                    sent += verdict.delivered;
                    // Progress (some delivered) resets the count: only a lane that makes no
                    // progress for `attempts` rounds gives up.
                    verdict.requeued == 0 || verdict.delivered > 0
                }
                Err(failure) => {
                    let mut batch = batch;
                    for e in batch.iter_mut().flat_map(|o| o.entries.iter_mut()) {
                        e.error = Some(failure.message.clone());
                    }
                    lane.requeue_all(batch);
                    false
                }
            };
            if ok {
                tries = 0;
                if !lane.is_empty() {
                    // Partial throttling: pause before the rest.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
            tries += 1;
            if tries >= attempts {
                for o in lane.take_plain(usize::MAX, usize::MAX) {
                    for e in o.entries {
                        failed.push(DeadRecord {
                            stream: stream.clone(),
                            partition_key: e.key.to_string(),
                            data: e.data.to_vec(),
                            attempts: e.attempts.saturating_add(tries),
                            first_attempt_ms: e.first_attempt_ms,
                            dead_at_ms: unix_ms(),
                            error: e.error.as_deref().unwrap_or("").to_string(),
                        });
                    }
                }
                break;
            }
            let delay = jittered(
                &mut rng,
                Duration::from_millis(100),
                Duration::from_secs(5),
                tries,
            );
            tokio::time::sleep(delay).await;
        }
    }
    (sent, failed)
}
