//! Kinesis payload encoders, what the writer does per event besides queueing it: `json`
//! (`hotpath decode`'s object, `kinesis.payload = "json"`) and `avro` (seed 003's MarketData in
//! single-object encoding, apache-avro's serde serializer, `kinesis.payload = "avro"`), each into
//! a reused buffer. `sbe` sends the frame as it is (no work). One element is one event.
//!
//! Events: a best bid/ask, a trades event of 1 and of 5 trades, a 10x10 depth diff, a depth20
//! snapshot. README, "Kinesis Avro payload", has the figures.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use hotpath::sink::kinesis::avro::AvroEncoder;

fn payload(c: &mut Criterion) {
    let events = [
        ("best_bid_ask", hotpath_benches::best_bid_ask()),
        ("trades_1", hotpath_benches::trades(1)),
        ("trades_5", hotpath_benches::trades(5)),
        ("depth_diff_10x10", hotpath_benches::depth_diff(10, 10)),
        ("depth20", hotpath_benches::depth_snapshot(20)),
    ];
    let avro = AvroEncoder::new().expect("the compiled-in schema parses");
    let mut group = c.benchmark_group("kinesis_payload");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in &events {
        let mut json = String::new();
        group.bench_function(format!("json/{name}"), |b| {
            b.iter(|| {
                json.clear();
                hotpath::decode::frame_to_json(black_box(frame), &mut json);
                black_box(json.len())
            });
        });
        let mut out = Vec::new();
        assert!(avro.encode(frame, &mut out).expect("encodes") > 0);
        group.bench_function(format!("avro/{name}"), |b| {
            b.iter(|| {
                out.clear();
                let n = avro.encode(black_box(frame), &mut out).unwrap_or(0);
                black_box((n, out.len()))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, payload);
criterion_main!(benches);
