//! How the simulator's events look on the wire: SBE frames as Binance's SBE market-data streams
//! send them (`stream-sbe.binance.com`, schema `spot_stream` 1:0), JSON payloads as its regular
//! JSON market streams send them (`stream.binance.com`, web-socket-streams docs), stream names,
//! and the combined-stream wrapper. Pure: values in, bytes or text into caller-owned buffers
//! out; no I/O, no clocks.
//!
//! SBE frame sizes, with `L` the symbol's length in bytes (PROTOCOL.md 2.2):
//!
//! | event | message (template) | bytes |
//! |---|---|---|
//! | `Trades` with N trades | `TradesStreamEvent` (10000) | 33 + 25N + L |
//! | `BestBidAsk` | `BestBidAskStreamEvent` (10001) | 59 + L |
//! | `Depth20` with B bids, A asks | `DepthSnapshotStreamEvent` (10002) | 35 + 16(B + A) + L |
//! | `DepthDiff` with B bids, A asks | `DepthDiffStreamEvent` (10003) | 43 + 16(B + A) + L |
//!
//! The output buffer is sized from these formulas before encoding, so an encode cannot run out
//! of room. Two limits of the wire remain, both documented on [`encode_sbe`]: a symbol holds at
//! most [`SYMBOL_BYTES_MAX`] bytes, and a depth side at most [`DEPTH_LEVELS_MAX`] levels.
//!
//! JSON numbers follow Binance: times are milliseconds (the event's microseconds floored),
//! prices and quantities are exact decimal strings with 8 decimals (`"69769.88000000"`), ids
//! are integers.

use sbe_runtime::json::{self, Array, Object};
use sbe_runtime::{Decimal, EncodeError};

use super::exchange::{Event, Payload};
use super::market::{Diff, PRICE_EXPONENT, QTY_EXPONENT, Trade};
use crate::sbe::spot_stream::{
    BestBidAskStreamEventEncoder, BoolEnum, DepthDiffStreamEventBidsEncoder,
    DepthDiffStreamEventEncoder, DepthSnapshotStreamEventEncoder, HEADER_LENGTH,
    TradesStreamEventEncoder, TradesStreamEventTradesEncoder,
};

/// The most levels one side of a depth frame carries: the `groupSize16Encoding` count is a
/// `u16`. Longer sides are cut to their best [`DEPTH_LEVELS_MAX`] levels (see [`encode_sbe`]).
pub const DEPTH_LEVELS_MAX: usize = u16::MAX as usize;

/// The longest symbol, in UTF-8 bytes, a frame carries: `varString8` has a `u8` length.
pub const SYMBOL_BYTES_MAX: usize = u8::MAX as usize;

// A capped depth frame must still pass hotpath's own decoder.
const _: () = assert!(
    DEPTH_LEVELS_MAX as u64 <= crate::constants::GROUP_COUNT_MAX as u64,
    "an encoded depth side must not exceed the decoder's group cap"
);

/// Bytes of a `groupSizeEncoding` header (u16 blockLength, u32 numInGroup): the trades group.
const GROUP_SIZE_BYTES: usize = 6;
/// Bytes of a `groupSize16Encoding` header (u16 blockLength, u16 numInGroup): depth sides.
const GROUP_SIZE16_BYTES: usize = 4;
/// Bytes of the `varString8` length prefix of the symbol.
const SYMBOL_LENGTH_BYTES: usize = 1;
/// Bytes of one trades entry.
const TRADE_ENTRY_BYTES: usize = TradesStreamEventTradesEncoder::BLOCK_LENGTH;
/// Bytes of one depth level entry (price, qty); the same for bids and asks of both messages.
const LEVEL_ENTRY_BYTES: usize = DepthDiffStreamEventBidsEncoder::BLOCK_LENGTH;

/// The fixed part of each frame: header, root block, group headers, symbol length prefix.
const TRADES_FIXED_BYTES: usize =
    HEADER_LENGTH + TradesStreamEventEncoder::BLOCK_LENGTH + GROUP_SIZE_BYTES + SYMBOL_LENGTH_BYTES;
const BEST_BID_ASK_FIXED_BYTES: usize =
    HEADER_LENGTH + BestBidAskStreamEventEncoder::BLOCK_LENGTH + SYMBOL_LENGTH_BYTES;
const DEPTH_SNAPSHOT_FIXED_BYTES: usize = HEADER_LENGTH
    + DepthSnapshotStreamEventEncoder::BLOCK_LENGTH
    + 2 * GROUP_SIZE16_BYTES
    + SYMBOL_LENGTH_BYTES;
const DEPTH_DIFF_FIXED_BYTES: usize = HEADER_LENGTH
    + DepthDiffStreamEventEncoder::BLOCK_LENGTH
    + 2 * GROUP_SIZE16_BYTES
    + SYMBOL_LENGTH_BYTES;

// The generated layout must agree with PROTOCOL.md 2.2.
const _: () = assert!(TRADES_FIXED_BYTES == 33 && TRADE_ENTRY_BYTES == 25);
const _: () = assert!(BEST_BID_ASK_FIXED_BYTES == 59);
const _: () = assert!(DEPTH_SNAPSHOT_FIXED_BYTES == 35 && LEVEL_ENTRY_BYTES == 16);
const _: () = assert!(DEPTH_DIFF_FIXED_BYTES == 43);

/// The stream's name: the lowercase symbol, `@`, and the kind's suffix (`btcusdt@bestBidAsk`).
pub use crate::stream::stream_name;

/// Replaces `out` with the SBE frame of `event` for `symbol` (upper-case, as in frames).
///
/// Prices and quantities go out at [`PRICE_EXPONENT`] / [`QTY_EXPONENT`]; `eventTime` is
/// `event_time_us`, and a trades frame's `transactTime` is `transact_time_us`. A `Trades`
/// event with no trades still gives a frame (with an empty group).
///
/// Limits of the wire format:
/// - a depth side longer than [`DEPTH_LEVELS_MAX`] keeps only its first (best)
///   [`DEPTH_LEVELS_MAX`] levels, because the count is a `u16`. For a diff this loses changes;
///   the simulator never builds a side that long;
/// - `symbol` must be at most [`SYMBOL_BYTES_MAX`] bytes, and a trades event at most
///   2,147,483,647 trades (the group's `maxValue`). Breaking either is a caller bug: debug
///   builds panic, release builds leave `out` empty. No other encode can fail, since `out` is
///   sized exactly from the frame-size formulas first.
pub fn encode_sbe(symbol: &str, event: &Event, out: &mut Vec<u8>) {
    out.clear();
    out.resize(frame_bytes(symbol, &event.payload), 0);
    let written = match &event.payload {
        Payload::Trades {
            transact_time_us,
            trades,
        } => put_trades(out, symbol, event.event_time_us, *transact_time_us, trades),
        Payload::BestBidAsk {
            update_id,
            bid,
            ask,
        } => put_best_bid_ask(out, symbol, event.event_time_us, *update_id, *bid, *ask),
        Payload::DepthDiff(diff) => put_depth_diff(out, symbol, event.event_time_us, diff),
        Payload::Depth20 {
            update_id,
            bids,
            asks,
        } => put_depth_snapshot(out, symbol, event.event_time_us, *update_id, bids, asks),
    };
    match written {
        Ok(length) => {
            debug_assert_eq!(
                length,
                out.len(),
                "frame size formula disagrees with encoder"
            );
            out.truncate(length);
        }
        Err(error) => {
            debug_assert!(false, "cannot encode a simulator event: {error:?}");
            out.clear();
        }
    }
}

/// The frame's exact length (PROTOCOL.md 2.2), levels capped as [`encode_sbe`] caps them.
fn frame_bytes(symbol: &str, payload: &Payload) -> usize {
    let symbol_bytes = symbol.len();
    match payload {
        Payload::Trades { trades, .. } => {
            TRADES_FIXED_BYTES + TRADE_ENTRY_BYTES.saturating_mul(trades.len()) + symbol_bytes
        }
        Payload::BestBidAsk { .. } => BEST_BID_ASK_FIXED_BYTES + symbol_bytes,
        Payload::DepthDiff(diff) => {
            DEPTH_DIFF_FIXED_BYTES + levels_bytes(&diff.bids, &diff.asks) + symbol_bytes
        }
        Payload::Depth20 { bids, asks, .. } => {
            DEPTH_SNAPSHOT_FIXED_BYTES + levels_bytes(bids, asks) + symbol_bytes
        }
    }
}

fn levels_bytes(bids: &[(i64, i64)], asks: &[(i64, i64)]) -> usize {
    LEVEL_ENTRY_BYTES * (capped(bids).0.len() + capped(asks).0.len())
}

/// The levels one depth group carries and their count: at most [`DEPTH_LEVELS_MAX`], best first.
fn capped(levels: &[(i64, i64)]) -> (&[(i64, i64)], u16) {
    let count = u16::try_from(levels.len()).unwrap_or(u16::MAX);
    (&levels[..usize::from(count)], count)
}

/// Writes one depth side into a group encoder that was begun with the levels' count.
/// A macro because the four depth group encoders are distinct generated types.
macro_rules! put_levels {
    ($group:expr, $levels:expr) => {{
        let mut group = $group;
        for &(price, qty) in $levels {
            group.next_entry()?.price(price).qty(qty);
        }
    }};
}

fn put_trades(
    out: &mut [u8],
    symbol: &str,
    event_time_us: i64,
    transact_time_us: i64,
    trades: &[Trade],
) -> Result<usize, EncodeError> {
    let too_many = EncodeError::TooLong {
        id: TradesStreamEventTradesEncoder::ID,
        len: trades.len() as u64,
        max: i32::MAX as u64,
    };
    let count = u32::try_from(trades.len()).map_err(|_| too_many)?;
    let mut encoder = TradesStreamEventEncoder::wrap(out)?;
    encoder
        .event_time(event_time_us)
        .transact_time(transact_time_us)
        .price_exponent(PRICE_EXPONENT)
        .qty_exponent(QTY_EXPONENT);
    let mut group = encoder.trades(count)?;
    for trade in trades {
        let buyer_maker = if trade.buyer_maker {
            BoolEnum::True
        } else {
            BoolEnum::False
        };
        group
            .next_entry()?
            .id(trade.id)
            .price(trade.price)
            .qty(trade.qty)
            .is_buyer_maker(buyer_maker);
    }
    encoder.symbol(symbol.as_bytes())?;
    Ok(encoder.finish())
}

fn put_best_bid_ask(
    out: &mut [u8],
    symbol: &str,
    event_time_us: i64,
    update_id: i64,
    bid: (i64, i64),
    ask: (i64, i64),
) -> Result<usize, EncodeError> {
    let mut encoder = BestBidAskStreamEventEncoder::wrap(out)?;
    encoder
        .event_time(event_time_us)
        .book_update_id(update_id)
        .price_exponent(PRICE_EXPONENT)
        .qty_exponent(QTY_EXPONENT)
        .bid_price(bid.0)
        .bid_qty(bid.1)
        .ask_price(ask.0)
        .ask_qty(ask.1);
    encoder.symbol(symbol.as_bytes())?;
    Ok(encoder.finish())
}

fn put_depth_diff(
    out: &mut [u8],
    symbol: &str,
    event_time_us: i64,
    diff: &Diff,
) -> Result<usize, EncodeError> {
    let (bids, bid_count) = capped(&diff.bids);
    let (asks, ask_count) = capped(&diff.asks);
    let mut encoder = DepthDiffStreamEventEncoder::wrap(out)?;
    encoder
        .event_time(event_time_us)
        .first_book_update_id(diff.first_update_id)
        .last_book_update_id(diff.last_update_id)
        .price_exponent(PRICE_EXPONENT)
        .qty_exponent(QTY_EXPONENT);
    put_levels!(encoder.bids(bid_count)?, bids);
    put_levels!(encoder.asks(ask_count)?, asks);
    encoder.symbol(symbol.as_bytes())?;
    Ok(encoder.finish())
}

fn put_depth_snapshot(
    out: &mut [u8],
    symbol: &str,
    event_time_us: i64,
    update_id: i64,
    bids: &[(i64, i64)],
    asks: &[(i64, i64)],
) -> Result<usize, EncodeError> {
    let (bids, bid_count) = capped(bids);
    let (asks, ask_count) = capped(asks);
    let mut encoder = DepthSnapshotStreamEventEncoder::wrap(out)?;
    encoder
        .event_time(event_time_us)
        .book_update_id(update_id)
        .price_exponent(PRICE_EXPONENT)
        .qty_exponent(QTY_EXPONENT);
    put_levels!(encoder.bids(bid_count)?, bids);
    put_levels!(encoder.asks(ask_count)?, asks);
    encoder.symbol(symbol.as_bytes())?;
    Ok(encoder.finish())
}

/// Appends the raw (unwrapped) Binance JSON payload(s) of `event` for `symbol` to `out`.
///
/// Binance's JSON `<symbol>@trade` stream sends one message per trade, so a `Trades` event
/// with N trades appends N objects separated by `'\n'` (no leading or trailing newline; none
/// at all for zero trades). Every other event appends exactly one object. To send each message
/// as its own frame, use [`encode_json_each`].
pub fn encode_json(symbol: &str, event: &Event, out: &mut String) {
    let mut first = true;
    encode_json_each(symbol, event, |message| {
        if !first {
            out.push('\n');
        }
        first = false;
        out.push_str(message);
    });
}

/// Calls `f` once per Binance JSON message of `event`, in order: once per trade for a
/// `Trades` event (zero times if it has none), once for any other event. Each message is
/// raw, as sent on `/ws/<stream>`; wrap it with [`wrap_combined`] for `/stream`. One buffer
/// is reused for all messages of the call.
///
/// Formats (Binance web-socket-streams, keys in this order; `T` is the trade's own time):
///
/// ```text
/// trade:        {"e":"trade","E":ms,"s":"BTCUSDT","t":id,"p":"price","q":"qty",
///                "T":ms,"m":bool,"M":true}
/// bookTicker:   {"u":updateId,"s":"BTCUSDT","b":"bid","B":"bidQty","a":"ask","A":"askQty"}
/// depthUpdate:  {"e":"depthUpdate","E":ms,"s":"BTCUSDT","U":first,"u":last,
///                "b":[["price","qty"],...],"a":[...]}
/// partial book: {"lastUpdateId":id,"bids":[["price","qty"],...],"asks":[...]}
/// ```
///
/// JSON has no group-count limit, so unlike [`encode_sbe`] every depth level is written.
pub fn encode_json_each(symbol: &str, event: &Event, mut f: impl FnMut(&str)) {
    let mut message = String::with_capacity(256);
    let event_time_ms = millis(event.event_time_us);
    match &event.payload {
        Payload::Trades { trades, .. } => {
            for trade in trades {
                message.clear();
                put_trade_json(symbol, event_time_ms, trade, &mut message);
                f(&message);
            }
        }
        Payload::BestBidAsk {
            update_id,
            bid,
            ask,
        } => {
            put_book_ticker_json(symbol, *update_id, *bid, *ask, &mut message);
            f(&message);
        }
        Payload::DepthDiff(diff) => {
            put_depth_update_json(symbol, event_time_ms, diff, &mut message);
            f(&message);
        }
        Payload::Depth20 {
            update_id,
            bids,
            asks,
        } => {
            put_partial_depth_json(*update_id, bids, asks, &mut message);
            f(&message);
        }
    }
}

/// Appends the combined-stream envelope `{"stream":"<stream>","data":<payload>}`; `payload`
/// must already be JSON and is copied verbatim.
pub fn wrap_combined(stream: &str, payload: &str, out: &mut String) {
    let mut object = Object::begin(out);
    json::write_str(object.key("stream"), stream.as_bytes());
    object.key("data").push_str(payload);
    object.end();
}

/// Microseconds to Binance's JSON milliseconds, floored.
fn millis(time_us: i64) -> i64 {
    time_us.div_euclid(1000)
}

fn put_trade_json(symbol: &str, event_time_ms: i64, trade: &Trade, out: &mut String) {
    let mut object = Object::begin(out);
    json::write_str(object.key("e"), b"trade");
    json::write_number(object.key("E"), event_time_ms);
    json::write_str(object.key("s"), symbol.as_bytes());
    json::write_number(object.key("t"), trade.id);
    json::write_display_str(object.key("p"), price(trade.price));
    json::write_display_str(object.key("q"), qty(trade.qty));
    json::write_number(object.key("T"), millis(trade.time_us));
    json::write_number(object.key("m"), trade.buyer_maker);
    // Binance documents `M` as "Ignore"; it is always true (SBE's constant isBestMatch).
    json::write_number(object.key("M"), true);
    object.end();
}

fn put_book_ticker_json(
    symbol: &str,
    update_id: i64,
    bid: (i64, i64),
    ask: (i64, i64),
    out: &mut String,
) {
    let mut object = Object::begin(out);
    json::write_number(object.key("u"), update_id);
    json::write_str(object.key("s"), symbol.as_bytes());
    json::write_display_str(object.key("b"), price(bid.0));
    json::write_display_str(object.key("B"), qty(bid.1));
    json::write_display_str(object.key("a"), price(ask.0));
    json::write_display_str(object.key("A"), qty(ask.1));
    object.end();
}

fn put_depth_update_json(symbol: &str, event_time_ms: i64, diff: &Diff, out: &mut String) {
    let mut object = Object::begin(out);
    json::write_str(object.key("e"), b"depthUpdate");
    json::write_number(object.key("E"), event_time_ms);
    json::write_str(object.key("s"), symbol.as_bytes());
    json::write_number(object.key("U"), diff.first_update_id);
    json::write_number(object.key("u"), diff.last_update_id);
    put_levels_json(&diff.bids, object.key("b"));
    put_levels_json(&diff.asks, object.key("a"));
    object.end();
}

fn put_partial_depth_json(
    update_id: i64,
    bids: &[(i64, i64)],
    asks: &[(i64, i64)],
    out: &mut String,
) {
    let mut object = Object::begin(out);
    json::write_number(object.key("lastUpdateId"), update_id);
    put_levels_json(bids, object.key("bids"));
    put_levels_json(asks, object.key("asks"));
    object.end();
}

/// Writes `[["price","qty"],...]`.
fn put_levels_json(levels: &[(i64, i64)], out: &mut String) {
    let mut array = Array::begin(out);
    for &(level_price, level_qty) in levels {
        let mut pair = Array::begin(array.item());
        json::write_display_str(pair.item(), price(level_price));
        json::write_display_str(pair.item(), qty(level_qty));
        pair.end();
    }
    array.end();
}

fn price(mantissa: i64) -> Decimal {
    Decimal::new(mantissa, PRICE_EXPONENT)
}

fn qty(mantissa: i64) -> Decimal {
    Decimal::new(mantissa, QTY_EXPONENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbe::spot_stream::Message;
    use crate::sim::exchange::StreamKey;
    use crate::stream::StreamKind;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const BTC: &str = "BTCUSDT";
    const EVENT_TIME_US: i64 = 1_759_750_000_123_456;

    fn event(kind: StreamKind, payload: Payload) -> Event {
        Event {
            key: StreamKey { symbol: 0, kind },
            event_time_us: EVENT_TIME_US,
            payload,
        }
    }

    fn trades_event(count: i64) -> Event {
        let trades = (0..count)
            .map(|i| Trade {
                id: 5_000_000_000 + i,
                price: 6_976_988_000_000 + i,
                qty: 1_301_000 * (i + 1),
                buyer_maker: i % 2 == 0,
                time_us: EVENT_TIME_US - 7,
            })
            .collect();
        let payload = Payload::Trades {
            transact_time_us: EVENT_TIME_US - 7,
            trades,
        };
        event(StreamKind::Trade, payload)
    }

    fn best_bid_ask_event() -> Event {
        let payload = Payload::BestBidAsk {
            update_id: 77_453_519_761,
            bid: (6_976_988_000_000, 286_360_000),
            ask: (6_976_989_000_000, 40_000),
        };
        event(StreamKind::BestBidAsk, payload)
    }

    fn levels(count: i64, first_price: i64, step: i64) -> Vec<(i64, i64)> {
        (0..count)
            .map(|i| (first_price + i * step, 1_000_000 * i))
            .collect()
    }

    fn depth_diff_event(bid_count: i64, ask_count: i64) -> Event {
        let payload = Payload::DepthDiff(Diff {
            first_update_id: 77_453_519_695,
            last_update_id: 77_453_519_761,
            bids: levels(bid_count, 6_976_988_000_000, -1_000_000),
            asks: levels(ask_count, 6_976_989_000_000, 1_000_000),
        });
        event(StreamKind::Depth, payload)
    }

    fn depth20_event(bid_count: i64, ask_count: i64) -> Event {
        let payload = Payload::Depth20 {
            update_id: 90_000_000_001,
            bids: levels(bid_count, 6_976_988_000_000, -1_000_000),
            asks: levels(ask_count, 6_976_989_000_000, 1_000_000),
        };
        event(StreamKind::Depth20, payload)
    }

    fn sbe(symbol: &str, event: &Event) -> Vec<u8> {
        let mut frame = vec![0xaa; 3]; // Stale bytes must be cleared.
        encode_sbe(symbol, event, &mut frame);
        frame
    }

    fn json_messages(symbol: &str, event: &Event) -> Vec<String> {
        let mut messages = Vec::new();
        encode_json_each(symbol, event, |m| messages.push(m.to_string()));
        messages
    }

    fn parse(message: &str) -> Value {
        serde_json::from_str(message).expect("encoder output is valid JSON")
    }

    fn keys(value: &Value) -> Vec<&str> {
        let object = value.as_object().expect("a JSON object");
        object.keys().map(String::as_str).collect()
    }

    fn assert_levels(decoded: impl ExactSizeIterator<Item = (i64, i64)>, expected: &[(i64, i64)]) {
        assert_eq!(decoded.len(), expected.len());
        assert_eq!(decoded.collect::<Vec<_>>(), expected);
    }

    #[test]
    fn stream_names_are_lowercase_symbol_at_suffix() {
        assert_eq!(stream_name(BTC, StreamKind::Trade), "btcusdt@trade");
        assert_eq!(
            stream_name(BTC, StreamKind::BestBidAsk),
            "btcusdt@bestBidAsk"
        );
        assert_eq!(stream_name(BTC, StreamKind::Depth), "btcusdt@depth");
        assert_eq!(stream_name(BTC, StreamKind::Depth20), "btcusdt@depth20");
    }

    #[test]
    fn trades_frame_decodes_to_the_event() {
        let event = trades_event(3);
        let frame = sbe(BTC, &event);
        assert_eq!(frame.len(), 33 + 25 * 3 + 7);
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("not a trades frame");
        };
        let Payload::Trades {
            transact_time_us,
            trades,
        } = &event.payload
        else {
            unreachable!()
        };
        assert_eq!(m.header().template_id, 10000);
        assert_eq!(m.encoded_length(), frame.len());
        assert_eq!(m.event_time(), EVENT_TIME_US);
        assert_eq!(m.transact_time(), *transact_time_us);
        assert_eq!((m.price_exponent(), m.qty_exponent()), (-8, -8));
        assert_eq!(m.symbol(), BTC.as_bytes());
        assert_eq!(m.trades().num_in_group(), 3);
        for (entry, trade) in m.trades().zip(trades) {
            assert_eq!(entry.id(), trade.id);
            assert_eq!(entry.price(), trade.price);
            assert_eq!(entry.qty(), trade.qty);
            let maker = entry.is_buyer_maker().map(|b| b == BoolEnum::True);
            assert_eq!(maker, Some(trade.buyer_maker));
        }
    }

    #[test]
    fn one_btcusdt_trade_is_65_bytes_and_none_is_33_plus_symbol() {
        assert_eq!(sbe(BTC, &trades_event(1)).len(), 65);
        let empty = sbe(BTC, &trades_event(0));
        assert_eq!(empty.len(), 40);
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(&empty) else {
            panic!("not a trades frame");
        };
        assert_eq!(m.trades().num_in_group(), 0);
        assert_eq!(m.symbol(), BTC.as_bytes());
    }

    #[test]
    fn best_bid_ask_frame_decodes_to_the_event() {
        let frame = sbe(BTC, &best_bid_ask_event());
        assert_eq!(frame.len(), 66);
        let Ok(Message::BestBidAskStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("not a bestBidAsk frame");
        };
        assert_eq!(m.header().template_id, 10001);
        assert_eq!(m.event_time(), EVENT_TIME_US);
        assert_eq!(m.book_update_id(), 77_453_519_761);
        assert_eq!((m.price_exponent(), m.qty_exponent()), (-8, -8));
        assert_eq!(
            (m.bid_price(), m.bid_qty()),
            (6_976_988_000_000, 286_360_000)
        );
        assert_eq!((m.ask_price(), m.ask_qty()), (6_976_989_000_000, 40_000));
        assert_eq!(m.symbol(), BTC.as_bytes());
    }

    #[test]
    fn depth_diff_frame_decodes_to_the_event() {
        let event = depth_diff_event(5, 4);
        let frame = sbe(BTC, &event);
        assert_eq!(frame.len(), 43 + 16 * 9 + 7);
        let Ok(Message::DepthDiffStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("not a depth diff frame");
        };
        let Payload::DepthDiff(diff) = &event.payload else {
            unreachable!()
        };
        assert_eq!(m.header().template_id, 10003);
        assert_eq!(m.event_time(), EVENT_TIME_US);
        assert_eq!(m.first_book_update_id(), diff.first_update_id);
        assert_eq!(m.last_book_update_id(), diff.last_update_id);
        assert_eq!((m.price_exponent(), m.qty_exponent()), (-8, -8));
        assert_levels(m.bids().map(|l| (l.price(), l.qty())), &diff.bids);
        assert_levels(m.asks().map(|l| (l.price(), l.qty())), &diff.asks);
        assert_eq!(m.symbol(), BTC.as_bytes());
        assert_eq!(sbe(BTC, &depth_diff_event(5, 5)).len(), 210);
        assert_eq!(sbe(BTC, &depth_diff_event(50, 50)).len(), 1650);
    }

    #[test]
    fn depth20_frame_decodes_to_the_event() {
        let event = depth20_event(20, 20);
        let frame = sbe(BTC, &event);
        assert_eq!(frame.len(), 682);
        let Ok(Message::DepthSnapshotStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("not a depth snapshot frame");
        };
        let Payload::Depth20 {
            update_id,
            bids,
            asks,
        } = &event.payload
        else {
            unreachable!()
        };
        assert_eq!(m.header().template_id, 10002);
        assert_eq!(m.event_time(), EVENT_TIME_US);
        assert_eq!(m.book_update_id(), *update_id);
        assert_eq!((m.price_exponent(), m.qty_exponent()), (-8, -8));
        assert_levels(m.bids().map(|l| (l.price(), l.qty())), bids);
        assert_levels(m.asks().map(|l| (l.price(), l.qty())), asks);
        assert_eq!(m.symbol(), BTC.as_bytes());
    }

    #[test]
    fn depth_with_no_levels() {
        let diff = sbe(BTC, &depth_diff_event(0, 0));
        assert_eq!(diff.len(), 50);
        let Ok(Message::DepthDiffStreamEvent(m)) = crate::sbe::decode(&diff) else {
            panic!("not a depth diff frame");
        };
        assert_eq!((m.bids().len(), m.asks().len()), (0, 0));
        let snapshot = sbe(BTC, &depth20_event(0, 0));
        assert_eq!(snapshot.len(), 42);
        let Ok(Message::DepthSnapshotStreamEvent(m)) = crate::sbe::decode(&snapshot) else {
            panic!("not a depth snapshot frame");
        };
        assert_eq!((m.bids().len(), m.asks().len()), (0, 0));

        let diff_json = json_messages(BTC, &depth_diff_event(0, 0));
        assert_eq!(diff_json.len(), 1);
        assert_eq!(
            diff_json[0],
            r#"{"e":"depthUpdate","E":1759750000123,"s":"BTCUSDT","U":77453519695,"u":77453519761,"b":[],"a":[]}"#
        );
        let snapshot_json = json_messages(BTC, &depth20_event(0, 0));
        assert_eq!(
            snapshot_json,
            [r#"{"lastUpdateId":90000000001,"bids":[],"asks":[]}"#]
        );
    }

    #[test]
    fn depth_sides_over_65535_levels_keep_the_best_65535() {
        let event = depth_diff_event(DEPTH_LEVELS_MAX as i64 + 1, 2);
        let frame = sbe(BTC, &event);
        assert_eq!(frame.len(), 43 + 16 * (DEPTH_LEVELS_MAX + 2) + 7);
        let Ok(Message::DepthDiffStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("not a depth diff frame");
        };
        let Payload::DepthDiff(diff) = &event.payload else {
            unreachable!()
        };
        assert_levels(
            m.bids().map(|l| (l.price(), l.qty())),
            &diff.bids[..DEPTH_LEVELS_MAX],
        );
        assert_eq!(m.asks().len(), 2);
    }

    #[test]
    fn trades_json_is_one_message_per_trade() {
        let event = trades_event(3);
        let messages = json_messages(BTC, &event);
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[0],
            r#"{"e":"trade","E":1759750000123,"s":"BTCUSDT","t":5000000000,"p":"69769.88000000","q":"0.01301000","T":1759750000123,"m":true,"M":true}"#
        );
        for (i, message) in messages.iter().enumerate() {
            let value = parse(message);
            let i = i as i64;
            let expected = json!({
                "e": "trade", "E": 1_759_750_000_123_i64, "s": "BTCUSDT",
                "t": 5_000_000_000 + i, "p": Decimal::new(6_976_988_000_000 + i, -8).to_string(),
                "q": Decimal::new(1_301_000 * (i + 1), -8).to_string(),
                "T": 1_759_750_000_123_i64, "m": i % 2 == 0, "M": true,
            });
            assert_eq!(value, expected);
        }
        assert!(messages[1].contains(r#""p":"69769.88000001","q":"0.02602000""#));
        assert!(messages[1].contains(r#""m":false,"M":true}"#));

        let mut joined = String::from("prefix:");
        encode_json(BTC, &event, &mut joined);
        assert_eq!(joined, format!("prefix:{}", messages.join("\n")));
        let mut none = String::new();
        encode_json(BTC, &trades_event(0), &mut none);
        assert_eq!(none, "");
    }

    #[test]
    fn book_ticker_json_has_binance_keys_in_order() {
        let messages = json_messages(BTC, &best_bid_ask_event());
        assert_eq!(
            messages,
            [
                r#"{"u":77453519761,"s":"BTCUSDT","b":"69769.88000000","B":"2.86360000","a":"69769.89000000","A":"0.00040000"}"#
            ]
        );
        let value = parse(&messages[0]);
        let mut expected_keys = vec!["u", "s", "b", "B", "a", "A"];
        expected_keys.sort_unstable();
        let mut got_keys = keys(&value);
        got_keys.sort_unstable();
        assert_eq!(got_keys, expected_keys);
    }

    #[test]
    fn depth_update_json_matches_the_diff() {
        let messages = json_messages(BTC, &depth_diff_event(2, 1));
        assert_eq!(
            messages,
            [concat!(
                r#"{"e":"depthUpdate","E":1759750000123,"s":"BTCUSDT","U":77453519695,"u":77453519761,"#,
                r#""b":[["69769.88000000","0.00000000"],["69769.87000000","0.01000000"]],"#,
                r#""a":[["69769.89000000","0.00000000"]]}"#
            )]
        );
        let value = parse(&messages[0]);
        assert_eq!(value["b"][1], json!(["69769.87000000", "0.01000000"]));
        assert_eq!(keys(&value).len(), 7);
    }

    #[test]
    fn partial_depth_json_matches_the_snapshot() {
        let messages = json_messages(BTC, &depth20_event(20, 20));
        assert_eq!(messages.len(), 1);
        assert!(messages[0].starts_with(
            r#"{"lastUpdateId":90000000001,"bids":[["69769.88000000","0.00000000"],"#
        ));
        let value = parse(&messages[0]);
        let mut got_keys = keys(&value);
        got_keys.sort_unstable();
        assert_eq!(got_keys, ["asks", "bids", "lastUpdateId"]);
        assert_eq!(value["lastUpdateId"], json!(90_000_000_001_i64));
        assert_eq!(value["bids"].as_array().map(Vec::len), Some(20));
        assert_eq!(value["asks"][19], json!(["69770.08000000", "0.19000000"]));
    }

    #[test]
    fn combined_wrapping() {
        let event = best_bid_ask_event();
        let stream = stream_name(BTC, StreamKind::BestBidAsk);
        let mut payload = String::new();
        encode_json(BTC, &event, &mut payload);
        let mut wrapped = String::new();
        wrap_combined(&stream, &payload, &mut wrapped);
        assert_eq!(
            wrapped,
            format!(r#"{{"stream":"btcusdt@bestBidAsk","data":{payload}}}"#)
        );
        let value = parse(&wrapped);
        assert_eq!(value["stream"], "btcusdt@bestBidAsk");
        assert_eq!(value["data"], parse(&payload));
    }

    #[test]
    fn non_ascii_symbol() {
        let symbol = "币安人生USDT";
        assert_eq!(symbol.len(), 16);
        assert_eq!(stream_name(symbol, StreamKind::Trade), "币安人生usdt@trade");

        let frame = sbe(symbol, &best_bid_ask_event());
        assert_eq!(frame.len(), 59 + 16);
        let Ok(Message::BestBidAskStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("not a bestBidAsk frame");
        };
        assert_eq!(m.symbol(), symbol.as_bytes());

        let frame = sbe(symbol, &trades_event(2));
        assert_eq!(frame.len(), 33 + 50 + 16);
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("not a trades frame");
        };
        assert_eq!(m.symbol(), symbol.as_bytes());

        for message in json_messages(symbol, &trades_event(2)) {
            assert_eq!(parse(&message)["s"], symbol);
        }
    }

    #[test]
    fn longest_symbol_fits() {
        let symbol = "A".repeat(SYMBOL_BYTES_MAX);
        let frame = sbe(&symbol, &depth20_event(1, 1));
        assert_eq!(frame.len(), 35 + 32 + SYMBOL_BYTES_MAX);
        let Ok(Message::DepthSnapshotStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("not a depth snapshot frame");
        };
        assert_eq!(m.symbol(), symbol.as_bytes());
    }

    #[test]
    fn json_escapes_the_symbol() {
        let messages = json_messages("A\"B\\", &best_bid_ask_event());
        assert_eq!(parse(&messages[0])["s"], "A\"B\\");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "cannot encode a simulator event")]
    fn a_symbol_over_255_bytes_is_a_caller_bug() {
        sbe(&"A".repeat(SYMBOL_BYTES_MAX + 1), &best_bid_ask_event());
    }

    #[test]
    fn every_simulated_event_encodes_and_decodes() {
        use crate::sim::exchange::{Exchange, ExchangeConfig};
        let mut exchange = Exchange::new(ExchangeConfig::default());
        let (mut events, mut frame, mut text) = (Vec::new(), Vec::new(), String::new());
        for step in 0..200 {
            exchange.advance(1_000_000_000_000 + step * 5_000, &mut events);
        }
        assert!(events.iter().any(|e| e.key.kind == StreamKind::Trade));
        for event in &events {
            encode_sbe(BTC, event, &mut frame);
            let message = crate::sbe::decode(&frame).expect("a valid frame");
            assert_eq!(message.encoded_length(), frame.len());
            text.clear();
            encode_json(BTC, event, &mut text);
            for line in text.lines() {
                parse(line);
            }
        }
    }

    fn arbitrary_levels() -> impl Strategy<Value = Vec<(i64, i64)>> {
        proptest::collection::vec((any::<i64>(), any::<i64>()), 0..40)
    }

    proptest! {
        #[test]
        fn depth_diff_round_trips(
            first in any::<i64>(), last in any::<i64>(), time in any::<i64>(),
            bids in arbitrary_levels(), asks in arbitrary_levels(), symbol in "\\PC{0,20}",
        ) {
            let diff = Diff { first_update_id: first, last_update_id: last, bids, asks };
            let event = Event { event_time_us: time, ..depth_diff_event(0, 0) };
            let event = Event { payload: Payload::DepthDiff(diff.clone()), ..event };
            let frame = sbe(&symbol, &event);
            let levels = diff.bids.len() + diff.asks.len();
            prop_assert_eq!(frame.len(), 43 + 16 * levels + symbol.len());
            let Ok(Message::DepthDiffStreamEvent(m)) = crate::sbe::decode(&frame) else {
                return Err(TestCaseError::fail("not a depth diff frame"));
            };
            prop_assert_eq!(m.event_time(), time);
            prop_assert_eq!((m.first_book_update_id(), m.last_book_update_id()), (first, last));
            let decoded_bids: Vec<_> = m.bids().map(|l| (l.price(), l.qty())).collect();
            let decoded_asks: Vec<_> = m.asks().map(|l| (l.price(), l.qty())).collect();
            prop_assert_eq!(&decoded_bids, &diff.bids);
            prop_assert_eq!(&decoded_asks, &diff.asks);
            prop_assert_eq!(m.symbol(), symbol.as_bytes());
            let messages = json_messages(&symbol, &event);
            prop_assert_eq!(messages.len(), 1);
            let value = parse(&messages[0]);
            prop_assert_eq!(&value["s"], &Value::from(symbol.as_str()));
            prop_assert_eq!(value["b"].as_array().map(Vec::len), Some(diff.bids.len()));
        }
    }
}
