//! Binance's Spot REST/WebSocket API schema (`../shared/binance/schemas/spot_3_5.xml`, id 3
//! version 5) as a real-world schema: it generates, compiles, and messages round-trip (encode,
//! decode, compare every field), including its 128-bit mantissas and decimal hints that name a
//! field of the same group entry.

use sbe_conformance::spot_3_5::*;
use sbe_runtime::{DecodeError, EncodeError};

#[test]
fn schema_identity() {
    assert_eq!((SCHEMA_ID, SCHEMA_VERSION, HEADER_LENGTH), (3, 5, 8));
}

fn depth(buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut m = DepthResponseEncoder::wrap(buf)?;
    m.last_update_id(1_027_024)
        .price_exponent(-8)
        .qty_exponent(-8);
    let mut bids = m.bids(2)?;
    bids.next_entry()?.price(400_000_000).qty(43_100_000_000);
    bids.next_entry()?.price(399_000_000).qty(1);
    let mut asks = m.asks(1)?;
    asks.next_entry()?.price(400_000_200).qty(1_200_000_000);
    Ok(m.finish())
}

#[test]
fn depth_round_trips() {
    let mut buf = [0u8; 256];
    let len = depth(&mut buf).expect("fits");
    let Ok(Message::DepthResponse(m)) = decode(&buf[..len]) else {
        panic!("not a DepthResponse");
    };
    assert_eq!(
        (m.last_update_id(), m.price_exponent(), m.qty_exponent()),
        (1_027_024, -8, -8)
    );
    let bids: Vec<_> = m.bids().map(|l| (l.price(), l.qty())).collect();
    assert_eq!(bids, [(400_000_000, 43_100_000_000), (399_000_000, 1)]);
    let asks: Vec<_> = m.asks().map(|l| (l.price(), l.qty())).collect();
    assert_eq!(asks, [(400_000_200, 1_200_000_000)]);
    let mut json = String::new();
    m.write_json(&mut json);
    assert_eq!(
        json,
        concat!(
            r#"{"message":"DepthResponse","lastUpdateId":1027024,"priceExponent":-8,"qtyExponent":-8,"#,
            r#""bids":[{"price":"4.00000000","qty":"431.00000000"},{"price":"3.99000000","qty":"0.00000001"}],"#,
            r#""asks":[{"price":"4.00000200","qty":"12.00000000"}]}"#
        )
    );
}

/// Each validation step also checks the header of the group after it (one comparison for a
/// valid frame), but a short frame still gets the error of the first element that does not
/// fit: the header, the root block, a group's header, a group's entries.
#[test]
fn a_truncated_depth_frame_names_the_first_element_that_does_not_fit() {
    let mut buf = [0u8; 256];
    let len = depth(&mut buf).expect("fits");
    let root_end = HEADER_LENGTH + DepthResponseDecoder::BLOCK_LENGTH;
    let entry = DepthResponseBidsGroup::BLOCK_LENGTH;
    // Two group headers of the same size, two bids and one ask.
    let dimension = (len - root_end - 3 * entry) / 2;
    let bids_end = root_end + dimension + 2 * entry;
    let ends = [
        HEADER_LENGTH,
        root_end,
        root_end + dimension,
        bids_end,
        bids_end + dimension,
        len,
    ];
    for cut in 0..len {
        let first_missing = ends.iter().copied().find(|&end| end > cut);
        match decode(&buf[..cut]) {
            Err(DecodeError::Truncated { needed, got }) => {
                assert_eq!((Some(needed), got), (first_missing, cut), "cut at {cut}");
            }
            other => panic!("cut at {cut}: expected a truncation error, got {other:?}"),
        }
    }
    assert!(decode(&buf[..len]).is_ok());
}

#[test]
fn trades_round_trip() {
    let mut buf = [0u8; 256];
    let mut m = TradesResponseEncoder::wrap(&mut buf).expect("fits");
    m.price_exponent(-2).qty_exponent(-5);
    let mut t = m.trades(1).expect("fits");
    t.next_entry()
        .expect("fits")
        .id(28_457)
        .price(410_000)
        .qty(1_200_000)
        .quote_qty(492_000)
        .time(1_499_865_549_590_000)
        .is_buyer_maker(BoolEnum::True)
        .is_best_match(BoolEnum::False);
    let len = m.finish();
    let m = TradesResponseDecoder::decode(&buf[..len]).expect("decodes");
    assert_eq!((m.price_exponent(), m.qty_exponent()), (-2, -5));
    let t = m.trades().next().expect("one trade");
    assert_eq!(
        (t.id(), t.price(), t.qty(), t.quote_qty(), t.time()),
        (28_457, 410_000, 1_200_000, 492_000, 1_499_865_549_590_000)
    );
    assert_eq!(t.is_buyer_maker(), Some(BoolEnum::True));
    assert_eq!(t.is_best_match(), Some(BoolEnum::False));
}

/// `KlinesResponse` was rejected: its volumes are 128-bit mantissas (`mantissa128`, 16 bytes).
#[test]
fn klines_with_128_bit_mantissas_round_trip() {
    let big: i128 = 123_456_789_012_345_678_901_234_567_890;
    let mut buf = [0u8; 256];
    let mut m = KlinesResponseEncoder::wrap(&mut buf).expect("fits");
    m.price_exponent(-2).qty_exponent(-8);
    let mut k = m.klines(1).expect("fits");
    k.next_entry()
        .expect("fits")
        .open_time(1_000)
        .open_price(100)
        .high_price(200)
        .low_price(50)
        .close_price(150)
        .volume(&big.to_le_bytes())
        .close_time(2_000)
        .quote_volume(&(-1i128).to_le_bytes())
        .num_trades(308)
        .taker_buy_base_volume(&0i128.to_le_bytes())
        .taker_buy_quote_volume(&i128::MIN.to_le_bytes());
    let len = m.finish();
    let m = KlinesResponseDecoder::decode(&buf[..len]).expect("decodes");
    let k = m.klines().next().expect("one kline");
    assert_eq!(
        (k.open_time(), k.open_price(), k.high_price(), k.low_price()),
        (1_000, 100, 200, 50)
    );
    assert_eq!(
        (k.close_price(), k.close_time(), k.num_trades()),
        (150, 2_000, 308)
    );
    assert_eq!(i128::from_le_bytes(*k.volume()), big);
    assert_eq!(i128::from_le_bytes(*k.quote_volume()), -1);
    assert_eq!(i128::from_le_bytes(*k.taker_buy_base_volume()), 0);
    assert_eq!(i128::from_le_bytes(*k.taker_buy_quote_volume()), i128::MIN);
    let mut json = String::new();
    m.write_json(&mut json);
    assert!(
        json.contains(
            r#""volume":"1234567890123456789012.34567890","closeTime":2000,"quoteVolume":"-0.01","#
        ),
        "{json}"
    );
    assert!(
        json.ends_with(r#""takerBuyBaseVolume":"0.00000000","takerBuyQuoteVolume":null}]}"#),
        "{json}"
    );
}

/// `AccountAllocationsResponse`: exponents in the same group entry, one of them optional.
#[test]
fn allocations_with_exponents_in_the_entry_round_trip() {
    let mut buf = [0u8; 512];
    let mut m = AccountAllocationsResponseEncoder::wrap(&mut buf).expect("fits");
    let mut a = m.allocations(2).expect("fits");
    a.next_entry()
        .expect("fits")
        .price_exponent(-2)
        .qty_exponent(-3)
        .commission_exponent(Some(-4))
        .allocation_id(1)
        .allocation_type(AllocationType::Sor)
        .order_id(12)
        .order_list_id(None)
        .source_trade_id(Some(99))
        .source_allocation_id(None)
        .price(12_345)
        .qty(1_500)
        .quote_qty(18_517)
        .commission(Some(7))
        .time(1_700_000_000_000_000)
        .is_buyer(BoolEnum::True)
        .is_maker(BoolEnum::False)
        .is_allocator(BoolEnum::False);
    a.symbol(b"BTCUSDT")
        .and_then(|a| a.commission_asset(b"BNB"))
        .and_then(|a| a.source_symbol(b""))
        .expect("fits");
    a.next_entry()
        .expect("fits")
        .price_exponent(0)
        .qty_exponent(0)
        .commission_exponent(None)
        .price(5)
        .qty(6)
        .quote_qty(30)
        .commission(Some(8));
    a.symbol(b"ETHBTC")
        .and_then(|a| a.commission_asset(b""))
        .and_then(|a| a.source_symbol(b"ETHUSDT"))
        .expect("fits");
    let len = m.finish();
    let m = AccountAllocationsResponseDecoder::decode(&buf[..len]).expect("decodes");
    let entries: Vec<_> = m.allocations().collect();
    let e = entries[0];
    assert_eq!(
        (
            e.price_exponent(),
            e.qty_exponent(),
            e.commission_exponent()
        ),
        (-2, -3, Some(-4))
    );
    assert_eq!((e.allocation_id(), e.order_id()), (1, 12));
    assert_eq!(e.allocation_type(), Some(AllocationType::Sor));
    assert_eq!(
        (
            e.order_list_id(),
            e.source_trade_id(),
            e.source_allocation_id()
        ),
        (None, Some(99), None)
    );
    assert_eq!(
        (e.price(), e.qty(), e.quote_qty(), e.commission(), e.time()),
        (12_345, 1_500, 18_517, Some(7), 1_700_000_000_000_000)
    );
    assert_eq!(
        (e.is_buyer(), e.is_maker(), e.is_allocator()),
        (
            Some(BoolEnum::True),
            Some(BoolEnum::False),
            Some(BoolEnum::False)
        )
    );
    assert_eq!(
        (e.symbol(), e.commission_asset(), e.source_symbol()),
        (&b"BTCUSDT"[..], &b"BNB"[..], &b""[..])
    );
    let f = entries[1];
    assert_eq!((f.commission_exponent(), f.commission()), (None, Some(8)));
    assert_eq!(
        (f.symbol(), f.source_symbol()),
        (&b"ETHBTC"[..], &b"ETHUSDT"[..])
    );
    let mut json = String::new();
    m.write_json(&mut json);
    assert!(
        json.contains(
            r#""price":"123.45","qty":"1.500","quoteQty":"185.17","commission":"0.0007","#
        ),
        "{json}"
    );
    assert!(
        json.contains(r#""commission":8,"#),
        "an absent exponent prints the mantissa: {json}"
    );
}
