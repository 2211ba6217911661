//! KPL aggregation bench: what the Kinesis writer does per batch and partition key, one
//! aggregated record of 500 user records (a mix of SBE frames as the reader queues them: best
//! bid/ask, one-trade trades, 10x10 depth diffs, about 167 bytes on average). Per iteration:
//! `size_with` and `push` for every record, then `finish` (encoding and MD5). One element is one
//! user record, so `thrpt` is user records per second.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hotpath::sink::kinesis::aggregate::{Aggregator, RECORD_BYTES_MAX};

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

criterion_group!(benches, kinesis_aggregate);
criterion_main!(benches);
