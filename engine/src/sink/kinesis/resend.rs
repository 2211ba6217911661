//! Sending a dead-letter file's Kinesis records again (`hotpath dlq resend`, see
//! [`crate::sink::resend`]): per stream in file order (so each partition key keeps its order),
//! in PutRecords batches, retrying failed entries with backoff. Records that still fail after
//! the attempts are handed back, so nothing is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use bytes::Bytes;

use super::lane::{Entry, Lane};
use super::send::{Route, put_records};
use crate::backoff::jittered;
use crate::clock::unix_ms;
use crate::sink::dlq::{DeadRecord, Outcome, Target};

/// Sends `records` (Kinesis ones; others are handed back untouched), each stream's in order;
/// returns how many were acknowledged and the records that failed `attempts` rounds without
/// progress. A record whose resend got no answer comes back with outcome `unknown`.
pub async fn resend(
    client: &Client,
    records: Vec<DeadRecord>,
    attempts: u32,
) -> (usize, Vec<DeadRecord>) {
    let mut streams: Vec<(String, Lane)> = Vec::new();
    let mut failed = Vec::new();
    let now = Instant::now();
    for record in records {
        let Target::Kinesis {
            stream,
            partition_key,
            data,
        } = record.target
        else {
            failed.push(record);
            continue;
        };
        let lane = match streams.iter().position(|(s, _)| *s == stream) {
            Some(at) => at,
            None => {
                streams.push((stream, Lane::default()));
                streams.len() - 1
            }
        };
        streams[lane].1.push(Entry {
            key: Arc::from(partition_key.as_str()),
            data: Bytes::from(data),
            recv_time_ns: 0,
            enqueued: now,
            first_attempt_ms: record.first_attempt_ms,
            attempts: record.attempts,
            error: Some(Arc::from(record.error.as_str())),
            maybe_landed: record.outcome == Outcome::Unknown,
        });
    }
    let mut rng = crate::rng::Rng::new(unix_ms() as u64 | 1);
    let mut sent = 0;
    for (stream, lane) in streams {
        let (delivered, lane_failed) = send_lane(client, &stream, lane, attempts, &mut rng).await;
        sent += delivered;
        failed.extend(lane_failed);
    }
    (sent, failed)
}

/// Sends one stream's records until all are delivered or `attempts` rounds in a row made no
/// progress.
async fn send_lane(
    client: &Client,
    stream: &str,
    mut lane: Lane,
    attempts: u32,
    rng: &mut crate::rng::Rng,
) -> (usize, Vec<DeadRecord>) {
    let mut sent = 0;
    let mut tries = 0u32;
    while !lane.is_empty() {
        let batch = lane.take_plain(500, 5 << 20);
        let route = Route {
            destination: 0,
            lane: 0,
        };
        let (_, batch, result) = put_records(
            client.clone(),
            stream.to_string(),
            route,
            Arc::from(""),
            batch,
        )
        .await;
        let mut done = Vec::new();
        let ok = match result {
            Ok(answer) => {
                let verdict = lane.settle(batch, &answer.failed, &mut done);
                sent += verdict.delivered;
                // Progress (some delivered) resets the count: only a lane that makes no
                // progress for `attempts` rounds gives up.
                verdict.requeued == 0 || verdict.delivered > 0
            }
            Err(failure) => {
                let mut batch = batch;
                for e in batch.iter_mut().flat_map(|o| o.entries.iter_mut()) {
                    e.error = Some(failure.message.clone());
                    e.maybe_landed |= failure.unanswered;
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
            return (sent, give_up(stream, lane, tries));
        }
        let delay = jittered(
            rng,
            Duration::from_millis(100),
            Duration::from_secs(5),
            tries,
        );
        tokio::time::sleep(delay).await;
    }
    (sent, Vec::new())
}

/// The records left in `lane`, as dead records again.
fn give_up(stream: &str, mut lane: Lane, tries: u32) -> Vec<DeadRecord> {
    lane.take_plain(usize::MAX, usize::MAX)
        .into_iter()
        .flat_map(|o| o.entries)
        .map(|e| DeadRecord {
            target: Target::Kinesis {
                stream: stream.to_string(),
                partition_key: e.key.to_string(),
                data: e.data.to_vec(),
            },
            attempts: e.attempts.saturating_add(tries),
            first_attempt_ms: e.first_attempt_ms,
            dead_at_ms: unix_ms(),
            outcome: if e.maybe_landed {
                Outcome::Unknown
            } else {
                Outcome::Failed
            },
            error: e.error.as_deref().unwrap_or("").to_string(),
        })
        .collect()
}
