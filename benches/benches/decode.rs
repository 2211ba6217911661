//! Decode benches: one frame through `hotpath::sbe::decode` (header, template dispatch, full
//! validation of the root block, every group's count x block length and the symbol), then a read
//! of every field as a consumer would: root fields, every group entry, the symbol's length. One
//! element is one message, so criterion's `elem/s` is messages per second and the time is the
//! cost per message.
//!
//! Frames come from `hotpath_benches` and are built before measuring. See BENCHMARKING.md.
//!
//! The same events as Binance's JSON combined streams (`feed.format = "json"`), rendered from
//! those frames, in the same run: `json_parse/<crate>` parses one event's text with the
//! transcoder's borrowed serde visitors through serde_json, sonic-rs or simd-json (which
//! parses in place, so its time includes copying the text into a reused buffer), and
//! `json_transcode` is the reader's whole JSON cost: parse (serde_json), encode the SBE frame
//! into the frame pool, then the same decode and read as `decode`. An element is one event: the
//! 10 trades of `trades_10` are one SBE frame but 10 JSON messages.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hotpath::feed::json::{Transcoded, Transcoder};
use hotpath::feed::pool::FramePool;
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

/// `mantissa x 10^exponent` as Binance writes it: exactly `-exponent` decimals.
fn dec(mantissa: i64, exponent: i8) -> String {
    let decimals = usize::from(exponent.unsigned_abs());
    let digits = format!("{:0>width$}", mantissa.unsigned_abs(), width = decimals + 1);
    let (int, frac) = digits.split_at(digits.len() - decimals);
    let sign = if mantissa < 0 { "-" } else { "" };
    if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

fn levels(levels: impl Iterator<Item = (i64, i64)>, pe: i8, qe: i8) -> String {
    let items: Vec<String> = levels
        .map(|(p, q)| format!(r#"["{}","{}"]"#, dec(p, pe), dec(q, qe)))
        .collect();
    format!("[{}]", items.join(","))
}

/// The JSON combined-stream messages of the event in `frame` (one per trade).
fn json_of(frame: &[u8]) -> Vec<String> {
    let Ok(message) = sbe::decode(frame) else {
        panic!("a bench frame decodes");
    };
    let wrap =
        |stream: &str, data: String| format!(r#"{{"stream":"btcusdt@{stream}","data":{data}}}"#);
    match message {
        Message::BestBidAskStreamEvent(m) => {
            let (pe, qe) = (m.price_exponent(), m.qty_exponent());
            let data = format!(
                r#"{{"u":{},"s":"BTCUSDT","b":"{}","B":"{}","a":"{}","A":"{}"}}"#,
                m.book_update_id(),
                dec(m.bid_price(), pe),
                dec(m.bid_qty(), qe),
                dec(m.ask_price(), pe),
                dec(m.ask_qty(), qe)
            );
            vec![wrap("bookTicker", data)]
        }
        Message::TradesStreamEvent(m) => {
            let (pe, qe) = (m.price_exponent(), m.qty_exponent());
            let ms = m.event_time() / 1000;
            m.trades()
                .map(|t| {
                    let data = format!(
                        r#"{{"e":"trade","E":{ms},"s":"BTCUSDT","t":{},"p":"{}","q":"{}","T":{},"m":{},"M":true}}"#,
                        t.id(),
                        dec(t.price(), pe),
                        dec(t.qty(), qe),
                        m.transact_time() / 1000,
                        t.is_buyer_maker_raw() == 1
                    );
                    wrap("trade", data)
                })
                .collect()
        }
        Message::DepthSnapshotStreamEvent(m) => {
            let (pe, qe) = (m.price_exponent(), m.qty_exponent());
            let data = format!(
                r#"{{"lastUpdateId":{},"bids":{},"asks":{}}}"#,
                m.book_update_id(),
                levels(m.bids().map(|l| (l.price(), l.qty())), pe, qe),
                levels(m.asks().map(|l| (l.price(), l.qty())), pe, qe)
            );
            vec![wrap("depth20@100ms", data)]
        }
        Message::DepthDiffStreamEvent(m) => {
            let (pe, qe) = (m.price_exponent(), m.qty_exponent());
            let data = format!(
                r#"{{"e":"depthUpdate","E":{},"s":"BTCUSDT","U":{},"u":{},"b":{},"a":{}}}"#,
                m.event_time() / 1000,
                m.first_book_update_id(),
                m.last_book_update_id(),
                levels(m.bids().map(|l| (l.price(), l.qty())), pe, qe),
                levels(m.asks().map(|l| (l.price(), l.qty())), pe, qe)
            );
            vec![wrap("depth@100ms", data)]
        }
    }
}

/// Parses every message with `parse`, which returns whether it was market data.
#[inline]
fn parse_all(messages: &[String], mut parse: impl FnMut(&str) -> bool) -> usize {
    messages.iter().filter(|m| parse(m)).count()
}

fn parse_serde_json(t: &mut Transcoder, text: &str) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    matches!(t.parse(&mut de), Ok(Some(_))) && de.end().is_ok()
}

fn parse_sonic_rs(t: &mut Transcoder, text: &str) -> bool {
    let mut de = sonic_rs::Deserializer::from_str(text);
    matches!(t.parse(&mut de), Ok(Some(_))) && de.end().is_ok()
}

/// simd-json parses in place: the text is copied into `buf` first (the reader's text frames
/// are shared, immutable bytes).
fn parse_simd_json(
    t: &mut Transcoder,
    text: &str,
    buf: &mut Vec<u8>,
    buffers: &mut simd_json::Buffers,
) -> bool {
    buf.clear();
    buf.extend_from_slice(text.as_bytes());
    match simd_json::Deserializer::from_slice_with_buffers(buf, buffers) {
        Ok(mut de) => matches!(t.parse(&mut de), Ok(Some(_))),
        Err(_) => false,
    }
}

fn transcode_and_read(t: &mut Transcoder, pool: &mut FramePool, text: &str) -> i64 {
    match t.transcode(text, 1, pool) {
        Transcoded::Frame(frame) => decode_and_read(&frame),
        _ => i64::MIN,
    }
}

fn json(c: &mut Criterion) {
    let events: Vec<(&str, Vec<String>)> = [
        ("best_bid_ask", hotpath_benches::best_bid_ask()),
        ("trades_1", hotpath_benches::trades(1)),
        ("trades_10", hotpath_benches::trades(10)),
        ("depth20", hotpath_benches::depth_snapshot(20)),
        ("depth_diff_10x10", hotpath_benches::depth_diff(10, 10)),
        ("depth_diff_100x100", hotpath_benches::depth_diff(100, 100)),
    ]
    .into_iter()
    .map(|(name, frame)| (name, json_of(&frame)))
    .collect();
    let mut t = Transcoder::new();
    // The reader's pool, which the transcoder writes into.
    let mut pool = FramePool::default();
    let (mut buf, mut buffers) = (Vec::new(), simd_json::Buffers::default());
    for (name, messages) in &events {
        let n = messages.len();
        assert_eq!(
            parse_all(messages, |m| parse_serde_json(&mut t, m)),
            n,
            "{name}"
        );
        assert_eq!(
            parse_all(messages, |m| parse_sonic_rs(&mut t, m)),
            n,
            "{name}"
        );
        let simd = parse_all(messages, |m| {
            parse_simd_json(&mut t, m, &mut buf, &mut buffers)
        });
        assert_eq!(simd, n, "{name}");
        for m in messages {
            assert!(
                transcode_and_read(&mut t, &mut pool, m) != i64::MIN,
                "{name}"
            );
        }
    }
    let mut group = c.benchmark_group("json_parse");
    group.throughput(Throughput::Elements(1));
    for (name, messages) in &events {
        group.bench_function(format!("serde_json/{name}"), |b| {
            b.iter(|| {
                black_box(parse_all(black_box(messages), |m| {
                    parse_serde_json(&mut t, m)
                }))
            });
        });
        group.bench_function(format!("sonic_rs/{name}"), |b| {
            b.iter(|| {
                black_box(parse_all(black_box(messages), |m| {
                    parse_sonic_rs(&mut t, m)
                }))
            });
        });
        group.bench_function(format!("simd_json/{name}"), |b| {
            b.iter(|| {
                black_box(parse_all(black_box(messages), |m| {
                    parse_simd_json(&mut t, m, &mut buf, &mut buffers)
                }))
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("json_transcode");
    group.throughput(Throughput::Elements(1));
    for (name, messages) in &events {
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(black_box(messages).iter().fold(0i64, |s, m| {
                    s.wrapping_add(transcode_and_read(&mut t, &mut pool, m))
                }))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode, json);
criterion_main!(benches);
