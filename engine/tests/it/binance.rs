//! The generated Binance decoders against real values and hostile bytes.
//! - the re-encoded bestBidAsk frames in `../shared/binance/samples/` decode to the values in
//!   the `.jsonl` Binance published through a third-party client, and our encoder rebuilds them;
//! - the truncated live prefixes are rejected as truncated, and their headers read as the
//!   samples README says;
//! - every message type round-trips through encoder and decoder (property tests);
//! - arbitrary and mutated bytes never panic.

use hotpath::sbe::{self, Decimal, DecodeError, spot_stream::*};
use proptest::prelude::*;
use serde_json::Value;

use super::{shared_binance, unhex};

fn decimal_text_matches(decimal: Decimal, published: &str) {
    // The samples print trimmed decimals ("0.01301"); ours print exactly -exponent decimals.
    let ours = decimal.to_string();
    let trimmed = ours.trim_end_matches('0').trim_end_matches('.');
    assert_eq!(trimmed, published, "{ours}");
}

#[test]
fn reencoded_best_bid_ask_frames_decode_to_the_published_values() {
    let hex = shared_binance("samples/bestbidask_btcusdt_reencoded.hex");
    let values = shared_binance("samples/bestbidask_btcusdt_live_decoded.jsonl");
    let pairs: Vec<_> = hex.lines().zip(values.lines()).collect();
    assert_eq!(pairs.len(), 10);
    for (line, json) in pairs {
        let frame = unhex(line);
        let v: Value = serde_json::from_str(json).expect("valid JSON");
        let Ok(Message::BestBidAskStreamEvent(m)) = sbe::decode(&frame) else {
            panic!("not a bestBidAsk frame: {line}");
        };
        assert_eq!(m.encoded_length(), 66);
        assert_eq!(m.event_time(), v["event_time_us"].as_i64().expect("number"));
        assert_eq!(
            m.book_update_id(),
            v["book_update_id"].as_i64().expect("number")
        );
        assert_eq!(
            i64::from(m.price_exponent()),
            v["price_exponent"].as_i64().expect("number")
        );
        assert_eq!(
            i64::from(m.qty_exponent()),
            v["qty_exponent"].as_i64().expect("number")
        );
        assert_eq!(
            m.bid_price(),
            v["bid_price_mantissa"].as_i64().expect("number")
        );
        assert_eq!(m.bid_qty(), v["bid_qty_mantissa"].as_i64().expect("number"));
        assert_eq!(
            m.ask_price(),
            v["ask_price_mantissa"].as_i64().expect("number")
        );
        assert_eq!(m.ask_qty(), v["ask_qty_mantissa"].as_i64().expect("number"));
        assert_eq!(m.symbol(), v["symbol"].as_str().expect("text").as_bytes());
        let price = |m: i64| Decimal::new(m, -8);
        decimal_text_matches(price(m.bid_price()), v["bid_price"].as_str().expect("text"));
        decimal_text_matches(price(m.bid_qty()), v["bid_qty"].as_str().expect("text"));
        decimal_text_matches(price(m.ask_price()), v["ask_price"].as_str().expect("text"));
        decimal_text_matches(price(m.ask_qty()), v["ask_qty"].as_str().expect("text"));

        let mut buf = [0u8; 128];
        let len = encode_best_bid_ask(&mut buf, &BestBidAsk::from(&m)).expect("fits");
        assert_eq!(&buf[..len], &frame[..], "our encoder rebuilds the frame");
    }
}

#[test]
fn truncated_live_prefixes_are_rejected_as_truncated() {
    let prefixes = shared_binance("samples/live_frame_prefixes.hex");
    let lines: Vec<Vec<u8>> = prefixes.lines().map(unhex).collect();
    assert_eq!(lines.len(), 3);

    let bba = decode_header(&lines[0]).expect("a full header");
    assert_eq!(
        (
            bba.block_length,
            bba.template_id,
            bba.schema_id,
            bba.version
        ),
        (50, 10001, 1, 0)
    );
    assert_eq!(
        sbe::decode(&lines[0]).err(),
        Some(DecodeError::Truncated {
            needed: 58,
            got: 32
        })
    );

    let diff = decode_header(&lines[2]).expect("a full header");
    assert_eq!(
        (
            diff.block_length,
            diff.template_id,
            diff.schema_id,
            diff.version
        ),
        (26, 10003, 1, 0)
    );
    assert_eq!(
        sbe::decode(&lines[2]).err(),
        Some(DecodeError::Truncated {
            needed: 34,
            got: 32
        })
    );

    // Line 2 is a trades body without its header; with the header put back it is a frame cut
    // inside its first trade.
    let mut trades = vec![18, 0, 0x10, 0x27, 1, 0, 0, 0];
    trades.extend_from_slice(&lines[1]);
    assert_eq!(
        sbe::decode(&trades).err(),
        Some(DecodeError::Truncated {
            needed: 32 + 25,
            got: 32
        })
    );
    assert_eq!(&lines[1][16..18], &[0xf8, 0xf8], "both exponents are -8");
}

#[test]
fn unknown_templates_and_other_schemas_are_typed_errors() {
    let mut frame = unhex(
        shared_binance("samples/bestbidask_btcusdt_reencoded.hex")
            .lines()
            .next()
            .expect("a line"),
    );
    frame[2..4].copy_from_slice(&10004u16.to_le_bytes());
    assert_eq!(
        sbe::decode(&frame).err(),
        Some(DecodeError::UnknownTemplate(10004))
    );
    frame[2..4].copy_from_slice(&10001u16.to_le_bytes());
    frame[4..6].copy_from_slice(&3u16.to_le_bytes());
    assert_eq!(
        sbe::decode(&frame).err(),
        Some(DecodeError::WrongSchema {
            expected: 1,
            got: 3
        })
    );
}

#[test]
fn an_oversize_group_is_rejected_before_it_is_read() {
    let event = Trades {
        event_time: 1,
        transact_time: 1,
        price_exponent: -8,
        qty_exponent: -8,
        trades: vec![],
        symbol: b"BTCUSDT".to_vec(),
    };
    let mut buf = [0u8; 64];
    let len = encode_trades(&mut buf, &event).expect("fits");
    buf[28..32].copy_from_slice(&(hotpath::constants::GROUP_COUNT_MAX + 1).to_le_bytes());
    assert_eq!(
        sbe::decode(&buf[..len]).err(),
        Some(DecodeError::GroupTooLarge {
            id: 100,
            count: 65_536,
            max: 65_535
        })
    );
    buf[28..32].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(
        sbe::decode(&buf[..len]).err(),
        Some(DecodeError::Truncated {
            needed: 32 + 25_000,
            got: len
        })
    );
}

#[test]
fn a_newer_schema_version_with_longer_blocks_still_decodes() {
    // A hypothetical stream_1_1 appending 8 bytes to the root block and 4 to each trade.
    let mut f = Vec::new();
    for v in [26u16, 10000, 1, 1] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&7i64.to_le_bytes());
    f.extend_from_slice(&6i64.to_le_bytes());
    f.extend_from_slice(&[0xf8, 0xf8]);
    f.extend_from_slice(&[0xaa; 8]);
    f.extend_from_slice(&29u16.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for v in [42i64, 5, 9] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.push(1);
    f.extend_from_slice(&[0xbb; 4]);
    f.push(3);
    f.extend_from_slice(b"ABC");
    let Ok(Message::TradesStreamEvent(m)) = sbe::decode(&f) else {
        panic!("a newer frame decodes");
    };
    assert_eq!(
        (m.event_time(), m.transact_time(), m.acting_version()),
        (7, 6, 1)
    );
    let t = m.trades().next().expect("one trade");
    assert_eq!(
        (t.id(), t.price(), t.qty(), t.is_buyer_maker()),
        (42, 5, 9, Some(BoolEnum::True))
    );
    assert_eq!(m.symbol(), b"ABC");
}

// Value models of the four messages, for round trips.

#[derive(Clone, Debug, PartialEq)]
struct Trade {
    id: i64,
    price: i64,
    qty: i64,
    buyer_maker: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Trades {
    event_time: i64,
    transact_time: i64,
    price_exponent: i8,
    qty_exponent: i8,
    trades: Vec<Trade>,
    symbol: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
struct BestBidAsk {
    event_time: i64,
    book_update_id: i64,
    price_exponent: i8,
    qty_exponent: i8,
    bid: (i64, i64),
    ask: (i64, i64),
    symbol: Vec<u8>,
}

impl From<&BestBidAskStreamEventDecoder<'_>> for BestBidAsk {
    fn from(m: &BestBidAskStreamEventDecoder<'_>) -> Self {
        BestBidAsk {
            event_time: m.event_time(),
            book_update_id: m.book_update_id(),
            price_exponent: m.price_exponent(),
            qty_exponent: m.qty_exponent(),
            bid: (m.bid_price(), m.bid_qty()),
            ask: (m.ask_price(), m.ask_qty()),
            symbol: m.symbol().to_vec(),
        }
    }
}

/// A depth snapshot (`first_update_id` unused) or diff.
#[derive(Clone, Debug, PartialEq)]
struct Depth {
    event_time: i64,
    first_update_id: i64,
    last_update_id: i64,
    price_exponent: i8,
    qty_exponent: i8,
    bids: Vec<(i64, i64)>,
    asks: Vec<(i64, i64)>,
    symbol: Vec<u8>,
}

fn encode_trades(buf: &mut [u8], e: &Trades) -> Result<usize, sbe::EncodeError> {
    let mut m = TradesStreamEventEncoder::wrap(buf)?;
    m.event_time(e.event_time)
        .transact_time(e.transact_time)
        .price_exponent(e.price_exponent)
        .qty_exponent(e.qty_exponent);
    let mut group = m.trades(e.trades.len() as u32)?;
    for t in &e.trades {
        let maker = if t.buyer_maker {
            BoolEnum::True
        } else {
            BoolEnum::False
        };
        group
            .next_entry()?
            .id(t.id)
            .price(t.price)
            .qty(t.qty)
            .is_buyer_maker(maker);
    }
    m.symbol(&e.symbol)?;
    Ok(m.finish())
}

fn encode_best_bid_ask(buf: &mut [u8], e: &BestBidAsk) -> Result<usize, sbe::EncodeError> {
    let mut m = BestBidAskStreamEventEncoder::wrap(buf)?;
    m.event_time(e.event_time)
        .book_update_id(e.book_update_id)
        .price_exponent(e.price_exponent)
        .qty_exponent(e.qty_exponent)
        .bid_price(e.bid.0)
        .bid_qty(e.bid.1)
        .ask_price(e.ask.0)
        .ask_qty(e.ask.1)
        .symbol(&e.symbol)?;
    Ok(m.finish())
}

macro_rules! encode_levels {
    ($m:expr, $e:expr) => {{
        let mut bids = $m.bids($e.bids.len() as u16)?;
        for &(price, qty) in &$e.bids {
            bids.next_entry()?.price(price).qty(qty);
        }
        let mut asks = $m.asks($e.asks.len() as u16)?;
        for &(price, qty) in &$e.asks {
            asks.next_entry()?.price(price).qty(qty);
        }
        $m.symbol(&$e.symbol)?;
    }};
}

fn encode_snapshot(buf: &mut [u8], e: &Depth) -> Result<usize, sbe::EncodeError> {
    let mut m = DepthSnapshotStreamEventEncoder::wrap(buf)?;
    m.event_time(e.event_time)
        .book_update_id(e.last_update_id)
        .price_exponent(e.price_exponent)
        .qty_exponent(e.qty_exponent);
    encode_levels!(m, e);
    Ok(m.finish())
}

fn encode_diff(buf: &mut [u8], e: &Depth) -> Result<usize, sbe::EncodeError> {
    let mut m = DepthDiffStreamEventEncoder::wrap(buf)?;
    m.event_time(e.event_time)
        .first_book_update_id(e.first_update_id)
        .last_book_update_id(e.last_update_id)
        .price_exponent(e.price_exponent)
        .qty_exponent(e.qty_exponent);
    encode_levels!(m, e);
    Ok(m.finish())
}

fn trade() -> impl Strategy<Value = Trade> {
    (any::<i64>(), any::<i64>(), any::<i64>(), any::<bool>()).prop_map(
        |(id, price, qty, buyer_maker)| Trade {
            id,
            price,
            qty,
            buyer_maker,
        },
    )
}

fn symbol() -> impl Strategy<Value = Vec<u8>> {
    "[A-Z0-9\u{4e00}-\u{4e10}]{0,20}".prop_map(String::into_bytes)
}

fn levels() -> impl Strategy<Value = Vec<(i64, i64)>> {
    proptest::collection::vec((any::<i64>(), any::<i64>()), 0..60)
}

fn depth() -> impl Strategy<Value = Depth> {
    (
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        any::<i8>(),
        any::<i8>(),
        levels(),
        levels(),
        symbol(),
    )
        .prop_map(
            |(
                event_time,
                first_update_id,
                last_update_id,
                price_exponent,
                qty_exponent,
                bids,
                asks,
                symbol,
            )| Depth {
                event_time,
                first_update_id,
                last_update_id,
                price_exponent,
                qty_exponent,
                bids,
                asks,
                symbol,
            },
        )
}

fn levels_of<'a>(entries: impl Iterator<Item = (i64, i64)> + 'a) -> Vec<(i64, i64)> {
    entries.collect()
}

proptest! {
    #[test]
    fn trades_round_trip(
        event_time in any::<i64>(), transact_time in any::<i64>(),
        price_exponent in any::<i8>(), qty_exponent in any::<i8>(),
        trades in proptest::collection::vec(trade(), 0..40), symbol in symbol(),
    ) {
        let event = Trades { event_time, transact_time, price_exponent, qty_exponent, trades, symbol };
        let mut buf = vec![0u8; 4096];
        let len = encode_trades(&mut buf, &event).expect("fits");
        prop_assert_eq!(len, 33 + 25 * event.trades.len() + event.symbol.len());
        let Ok(Message::TradesStreamEvent(m)) = sbe::decode(&buf[..len]) else { panic!("decodes") };
        let decoded = Trades {
            event_time: m.event_time(),
            transact_time: m.transact_time(),
            price_exponent: m.price_exponent(),
            qty_exponent: m.qty_exponent(),
            trades: m.trades().map(|t| Trade {
                id: t.id(),
                price: t.price(),
                qty: t.qty(),
                buyer_maker: t.is_buyer_maker() == Some(BoolEnum::True),
            }).collect(),
            symbol: m.symbol().to_vec(),
        };
        prop_assert_eq!(decoded, event);
        prop_assert!(m.trades().all(|t| t.is_best_match() == BoolEnum::True));
    }

    #[test]
    fn best_bid_ask_round_trips(
        event_time in any::<i64>(), book_update_id in any::<i64>(),
        price_exponent in any::<i8>(), qty_exponent in any::<i8>(),
        bid in (any::<i64>(), any::<i64>()), ask in (any::<i64>(), any::<i64>()), symbol in symbol(),
    ) {
        let event = BestBidAsk { event_time, book_update_id, price_exponent, qty_exponent, bid, ask, symbol };
        let mut buf = [0u8; 128];
        let len = encode_best_bid_ask(&mut buf, &event).expect("fits");
        prop_assert_eq!(len, 59 + event.symbol.len());
        let Ok(Message::BestBidAskStreamEvent(m)) = sbe::decode(&buf[..len]) else { panic!("decodes") };
        prop_assert_eq!(BestBidAsk::from(&m), event);
    }

    #[test]
    fn depth_snapshots_round_trip(event in depth()) {
        let mut buf = vec![0u8; 4096];
        let len = encode_snapshot(&mut buf, &event).expect("fits");
        prop_assert_eq!(len, 35 + 16 * (event.bids.len() + event.asks.len()) + event.symbol.len());
        let Ok(Message::DepthSnapshotStreamEvent(m)) = sbe::decode(&buf[..len]) else { panic!("decodes") };
        let decoded = Depth {
            event_time: m.event_time(),
            first_update_id: event.first_update_id,
            last_update_id: m.book_update_id(),
            price_exponent: m.price_exponent(),
            qty_exponent: m.qty_exponent(),
            bids: levels_of(m.bids().map(|l| (l.price(), l.qty()))),
            asks: levels_of(m.asks().map(|l| (l.price(), l.qty()))),
            symbol: m.symbol().to_vec(),
        };
        prop_assert_eq!(decoded, event);
    }

    #[test]
    fn depth_diffs_round_trip(event in depth()) {
        let mut buf = vec![0u8; 4096];
        let len = encode_diff(&mut buf, &event).expect("fits");
        prop_assert_eq!(len, 43 + 16 * (event.bids.len() + event.asks.len()) + event.symbol.len());
        let Ok(Message::DepthDiffStreamEvent(m)) = sbe::decode(&buf[..len]) else { panic!("decodes") };
        let decoded = Depth {
            event_time: m.event_time(),
            first_update_id: m.first_book_update_id(),
            last_update_id: m.last_book_update_id(),
            price_exponent: m.price_exponent(),
            qty_exponent: m.qty_exponent(),
            bids: levels_of(m.bids().map(|l| (l.price(), l.qty()))),
            asks: levels_of(m.asks().map(|l| (l.price(), l.qty()))),
            symbol: m.symbol().to_vec(),
        };
        prop_assert_eq!(decoded, event);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        walk(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(event in depth(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut buf = vec![0u8; 4096];
        let len = encode_diff(&mut buf, &event).expect("fits");
        let frame = &mut buf[..len];
        for (at, value) in edits {
            frame[at % len] = value;
        }
        walk(frame);
        walk(&frame[..cut % (len + 1)]);
    }
}

/// Decodes `bytes` and, if they decode, reads every field of every entry.
fn walk(bytes: &[u8]) {
    if let Ok(m) = sbe::decode(bytes) {
        let mut out = String::new();
        m.write_json(&mut out);
        assert!(out.starts_with("{\"message\":"));
        assert!(m.encoded_length() <= bytes.len());
    }
}
