//! KPL aggregation bench: what the Kinesis writer does per batch and partition key, one
//! aggregated record of 500 user records (a mix of SBE frames as the reader queues them: best
//! bid/ask, one-trade trades, 10x10 depth diffs, about 167 bytes on average). Per iteration:
//! `size_with` and `push` for every record, then `finish` (encoding and MD5). One element is one
//! user record, so `thrpt` is user records per second.
//!
//! `sink/kinesis_take_aggregated/{before,after}`: a shard lane catching up, 20,000 queued records
//! of 50 symbols taken in aggregated requests until the queue is empty. `after` is
//! [`Lane::take_aggregated`]; `before` is the previous version, kept here verbatim but for the
//! queue it works on (it drained and rebuilt the whole queue per request and searched the keys
//! linearly).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use hotpath::sink::kinesis::aggregate::{Aggregator, RECORD_BYTES_MAX};
use hotpath::sink::kinesis::lane::{Entry, Lane, Outgoing};

/// User records per aggregate (one `PutRecords` worth of small records).
const RECORDS: usize = 500;
/// The partition key every record of the aggregate carries (the writer aggregates per key).
const KEY: &str = "BTCUSDT";

/// Aggregates `records` as the writer does and returns the aggregate's length.
fn aggregate(aggregator: &mut Aggregator, records: &[Bytes]) -> usize {
    for data in records {
        if aggregator.size_with(KEY, data) + KEY.len() > RECORD_BYTES_MAX {
            break;
        }
        aggregator.push(KEY, data.clone());
    }
    aggregator.finish().map_or(0, |(_, bytes)| bytes.len())
}

fn kinesis_aggregate(c: &mut Criterion) {
    let kinds = [
        hotpath_benches::best_bid_ask(),
        hotpath_benches::trades(1),
        hotpath_benches::depth_diff(10, 10),
    ];
    let records: Vec<Bytes> = (0..RECORDS)
        .map(|i| Bytes::copy_from_slice(&kinds[i % kinds.len()]))
        .collect();
    let mut aggregator = Aggregator::new();
    assert!(
        aggregate(&mut aggregator, &records) > RECORDS * 60,
        "every record fits"
    );

    let mut group = c.benchmark_group("sink");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("kinesis_aggregate", |b| {
        b.iter(|| black_box(aggregate(&mut aggregator, black_box(&records))));
    });
    group.finish();
}

/// The previous `Lane::take_aggregated`, on a bare queue.
fn take_aggregated_before(
    queue: &mut VecDeque<Entry>,
    records_max: usize,
    bytes_max: usize,
) -> Vec<Outgoing> {
    struct Building {
        key: Arc<str>,
        aggregator: Aggregator,
        entries: Vec<Entry>,
        closed: bool,
    }
    let mut building: Vec<Building> = Vec::new();
    let mut kept = VecDeque::with_capacity(queue.len());
    let mut total = 0usize;
    for entry in queue.drain(..) {
        let at = building.iter().position(|b| b.key == entry.key);
        let at = match at {
            Some(at) => at,
            None if building.len() < records_max => {
                building.push(Building {
                    key: entry.key.clone(),
                    aggregator: Aggregator::new(),
                    entries: Vec::new(),
                    closed: false,
                });
                building.len() - 1
            }
            None => {
                kept.push_back(entry);
                continue;
            }
        };
        let b = &mut building[at];
        let current = if b.entries.is_empty() {
            0
        } else {
            b.aggregator.size() + b.key.len()
        };
        let next = b.aggregator.size_with(&entry.key, &entry.data) + b.key.len();
        let fits = !b.closed && next <= RECORD_BYTES_MAX && total + next - current <= bytes_max;
        if fits {
            total += next - current;
            b.aggregator.push(&entry.key, entry.data.clone());
            b.entries.push(entry);
        } else {
            b.closed = true;
            kept.push_back(entry);
        }
    }
    *queue = kept;
    let _bytes: usize = queue.iter().map(Entry::cost).sum();
    building
        .into_iter()
        .filter(|b| !b.entries.is_empty())
        .filter_map(|mut b| {
            let (_, data) = b.aggregator.finish()?;
            Some(Outgoing {
                key: b.key,
                data: Bytes::from(data),
                entries: b.entries,
            })
        })
        .collect()
}

/// Catching-up records: 50 symbols round robin, the reader's frame mix.
fn backlog() -> Vec<Entry> {
    const QUEUED: usize = 20_000;
    let kinds = [
        hotpath_benches::best_bid_ask(),
        hotpath_benches::trades(1),
        hotpath_benches::depth_diff(10, 10),
    ];
    let keys: Vec<Arc<str>> = (0..50).map(|i| Arc::from(format!("SYM{i}USDT"))).collect();
    let now = Instant::now();
    (0..QUEUED)
        .map(|i| Entry {
            key: keys[i % keys.len()].clone(),
            data: Bytes::copy_from_slice(&kinds[i % kinds.len()]),
            recv_time_ns: 0,
            enqueued: now,
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        })
        .collect()
}

fn kinesis_take_aggregated(c: &mut Criterion) {
    let entries = backlog();
    // Requests of 256 KiB: a shard takes 1 MiB/s, so a catching-up lane sends small ones.
    let (records_max, bytes_max) = (500, 256 << 10);
    let mut group = c.benchmark_group("sink/kinesis_take_aggregated");
    group.throughput(Throughput::Elements(entries.len() as u64));
    group.sample_size(10);
    group.bench_function("before", |b| {
        b.iter_batched(
            || entries.iter().cloned().collect::<VecDeque<Entry>>(),
            |mut queue| {
                let mut requests = 0;
                while !queue.is_empty() {
                    black_box(take_aggregated_before(&mut queue, records_max, bytes_max));
                    requests += 1;
                }
                requests
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.bench_function("after", |b| {
        b.iter_batched(
            || {
                let mut lane = Lane::default();
                for e in &entries {
                    lane.push(e.clone());
                }
                lane
            },
            |mut lane| {
                let mut requests = 0;
                while !lane.is_empty() {
                    black_box(lane.take_aggregated(records_max, bytes_max));
                    requests += 1;
                }
                requests
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, kinesis_aggregate, kinesis_take_aggregated);
criterion_main!(benches);
