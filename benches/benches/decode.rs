//! Decode benches: one frame through `hotpath::sbe::decode` (header, template dispatch, full
//! validation of the root block, every group's count x block length and the symbol), then a read
//! of every field as a consumer would: root fields, every group entry, the symbol's length. One
//! element is one message, so criterion's `elem/s` is messages per second and the time is the
//! cost per message.
//!
//! Frames come from `hotpath_benches` and are built before measuring. See BENCHMARKING.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hotpath::sbe::{self, spot_stream::Message};

/// Decodes `frame` and folds every field into one number, so that no load can be optimised
/// away. A frame that fails to decode yields `i64::MIN` (the benches' frames never do).
#[inline]
fn decode_and_read(frame: &[u8]) -> i64 {
    match sbe::decode(frame) {
        Ok(message) => read_every_field(&message),
        Err(_) => i64::MIN,
    }
}

/// The wrapping sum of every integer field, group entry and the symbol's length.
#[inline]
fn read_every_field(message: &Message<'_>) -> i64 {
    match message {
        Message::BestBidAskStreamEvent(m) => [
            m.event_time(),
            m.book_update_id(),
            i64::from(m.price_exponent()),
            i64::from(m.qty_exponent()),
            m.bid_price(),
            m.bid_qty(),
            m.ask_price(),
            m.ask_qty(),
            m.symbol().len() as i64,
        ]
        .into_iter()
        .fold(0, i64::wrapping_add),
        Message::TradesStreamEvent(m) => {
            let mut sum = m
                .event_time()
                .wrapping_add(m.transact_time())
                .wrapping_add(i64::from(m.price_exponent()))
                .wrapping_add(i64::from(m.qty_exponent()))
                .wrapping_add(m.symbol().len() as i64);
            for trade in m.trades() {
                sum = sum
                    .wrapping_add(trade.id())
                    .wrapping_add(trade.price())
                    .wrapping_add(trade.qty())
                    .wrapping_add(i64::from(trade.is_buyer_maker_raw()));
            }
            sum
        }
        Message::DepthSnapshotStreamEvent(m) => {
            let mut sum = m
                .event_time()
                .wrapping_add(m.book_update_id())
                .wrapping_add(i64::from(m.price_exponent()))
                .wrapping_add(i64::from(m.qty_exponent()))
                .wrapping_add(m.symbol().len() as i64);
            for level in m.bids() {
                sum = sum.wrapping_add(level.price()).wrapping_add(level.qty());
            }
            for level in m.asks() {
                sum = sum.wrapping_add(level.price()).wrapping_add(level.qty());
            }
            sum
        }
        Message::DepthDiffStreamEvent(m) => {
            let mut sum = m
                .event_time()
                .wrapping_add(m.first_book_update_id())
                .wrapping_add(m.last_book_update_id())
                .wrapping_add(i64::from(m.price_exponent()))
                .wrapping_add(i64::from(m.qty_exponent()))
                .wrapping_add(m.symbol().len() as i64);
            for level in m.bids() {
                sum = sum.wrapping_add(level.price()).wrapping_add(level.qty());
            }
            for level in m.asks() {
                sum = sum.wrapping_add(level.price()).wrapping_add(level.qty());
            }
            sum
        }
    }
}

fn decode(c: &mut Criterion) {
    let frames = [
        ("best_bid_ask", hotpath_benches::best_bid_ask()),
        ("trades_1", hotpath_benches::trades(1)),
        ("trades_10", hotpath_benches::trades(10)),
        ("depth20", hotpath_benches::depth_snapshot(20)),
        ("depth_diff_10x10", hotpath_benches::depth_diff(10, 10)),
        ("depth_diff_100x100", hotpath_benches::depth_diff(100, 100)),
    ];
    for (name, frame) in &frames {
        assert!(
            decode_and_read(frame) != i64::MIN,
            "the {name} frame must decode before it is measured"
        );
    }

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in &frames {
        let frame = frame.as_slice();
        group.bench_function(*name, |b| {
            b.iter(|| black_box(decode_and_read(black_box(frame))));
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
