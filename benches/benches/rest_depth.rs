//! A 5000+5000-level depth snapshot (`GET /api/v3/depth?limit=5000`) from its body to the local
//! book, in both wire formats, same run: Binance's JSON (serde into decimal strings, exact
//! conversion to mantissas, `LocalBook::from_snapshot`) against SBE `DepthResponse` (schema 3:5,
//! decoded with the generated decoder: mantissas as they come, then the same book). The bodies
//! are one book rendered both ways (the simulator's SBE encoding of its JSON answer), so both
//! paths build the same book; one element is one snapshot.
//!
//! Run: `cargo bench -p hotpath-benches --bench rest_depth`. See BENCHMARKING.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hotpath::binance::decimal::mantissas;
use hotpath::binance::rest::DepthSnapshot;
use hotpath::binance::rest_sbe;
use hotpath::book::LocalBook;
use hotpath::sim::rest_sbe::{Answer, encode};
use serde_json::{Value, json};

const LEVELS: i64 = 5_000;

/// Binance's JSON for a BTCUSDT-like book: prices a cent apart around 69769.88, quantities
/// with 5 significant decimals, printed with 8 decimals as Binance prints them.
fn json_body() -> Value {
    let level = |price: i64, i: i64| {
        let qty = 100_000 + (i * 7_919) % 900_000_000;
        json!([decimal_text(price), decimal_text(qty)])
    };
    let mid = 6_976_988_000_000i64;
    let bids: Vec<Value> = (0..LEVELS).map(|i| level(mid - i * 1_000_000, i)).collect();
    let asks: Vec<Value> = (0..LEVELS)
        .map(|i| level(mid + 1_000_000 + i * 1_000_000, i + 1))
        .collect();
    json!({ "lastUpdateId": 72_651_234_567i64, "bids": bids, "asks": asks })
}

fn decimal_text(mantissa: i64) -> String {
    hotpath::sbe::Decimal::new(mantissa, -8).to_string()
}

fn book(snapshot: &DepthSnapshot) -> Option<LocalBook> {
    let bids = mantissas(&snapshot.bids, -8, -8).ok()?;
    let asks = mantissas(&snapshot.asks, -8, -8).ok()?;
    LocalBook::from_snapshot(snapshot.last_update_id, bids, asks).ok()
}

fn from_json(body: &[u8]) -> Option<LocalBook> {
    book(&serde_json::from_slice::<DepthSnapshot>(body).ok()?)
}

fn from_sbe(body: &[u8]) -> Option<LocalBook> {
    book(&rest_sbe::depth(body).ok()?)
}

fn depth_snapshot(c: &mut Criterion) {
    let value = json_body();
    let json = value.to_string().into_bytes();
    let sbe = encode(Answer::Depth, &value).expect("encodes");
    let (a, b) = (from_json(&json), from_sbe(&sbe));
    assert!(a.is_some() && a == b, "both formats build the same book");
    let top = a.map(|b| (b.bids(1), b.asks(1)));
    eprintln!(
        "depth 5000+5000: JSON {} bytes, SBE {} bytes; top {top:?}",
        json.len(),
        sbe.len()
    );
    let mut group = c.benchmark_group("depth_snapshot_5000");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_to_book", |b| {
        b.iter(|| from_json(black_box(&json)).map(|book| book.update_id()))
    });
    group.bench_function("sbe_to_book", |b| {
        b.iter(|| from_sbe(black_box(&sbe)).map(|book| book.update_id()))
    });
    group.bench_function("json_parse_only", |b| {
        b.iter(|| serde_json::from_slice::<DepthSnapshot>(black_box(&json)).map(|s| s.bids.len()))
    });
    group.bench_function("sbe_decode_only", |b| {
        b.iter(|| rest_sbe::depth(black_box(&sbe)).map(|s| s.bids.len()))
    });
    group.finish();
}

criterion_group!(benches, depth_snapshot);
criterion_main!(benches);
