//! Frame builders shared by the benches and usable by tests: realistic BTCUSDT frames of every
//! Binance Spot stream message, written with hotpath's generated encoders.
//!
//! The values are made up, not recorded, but shaped like the live stream: prices and quantities
//! are mantissas at exponent -8 (Binance's for BTCUSDT), the price tick is 0.01 and the lot
//! 0.00001, times are microseconds since the epoch, and ids are of live magnitude (book update ids
//! near 10^11, as in `shared/binance/samples`). Bids descend from the best bid and asks ascend
//! from the best ask, one tick apart; a depth diff sets every fifth level's quantity to zero (a
//! level removed), as live diffs do.
//!
//! Frame sizes with the 7-byte symbol `BTCUSDT`:
//! - [`best_bid_ask`]: 8 (header) + 50 (root) + 1 + 7 (symbol) = 66 bytes;
//! - [`trades`]: 8 + 18 + 6 (group header) + 25 per trade + 8 = 40 + 25n bytes;
//! - [`depth_snapshot`]: 8 + 18 + 2 x (4 + 16 per level) + 8 = 42 + 32n bytes (682 for depth20);
//! - [`depth_diff`]: 8 + 26 + 2 x 4 + 16 per level + 8 = 50 + 16(b + a) bytes.

pub mod servers;

use hotpath::sbe::EncodeError;
use hotpath::sbe::spot_stream::{
    BestBidAskStreamEventEncoder, BoolEnum, DepthDiffStreamEventEncoder,
    DepthSnapshotStreamEventEncoder, TradesStreamEventEncoder,
};

/// The symbol every frame carries.
pub const SYMBOL: &[u8] = b"BTCUSDT";
/// The price and quantity exponent every frame carries: mantissas are in units of 10^-8.
pub const EXPONENT: i8 = -8;
/// The best bid, 97,123.45 USDT, as a mantissa at [`EXPONENT`].
pub const BEST_BID_PRICE: i64 = 9_712_345_000_000;
/// The price tick, 0.01 USDT, as a mantissa at [`EXPONENT`].
pub const PRICE_TICK: i64 = 1_000_000;

/// The quantity lot, 0.00001 BTC, as a mantissa at [`EXPONENT`].
const QTY_LOT: i64 = 1_000;
/// Event time of every frame: 2025-11-21T14:23:20.123456Z, in microseconds.
const EVENT_TIME_US: i64 = 1_763_735_000_123_456;
/// The book update id of snapshots and best bid/ask; diffs end at it.
const BOOK_UPDATE_ID: i64 = 78_456_123_456;
/// The id of the first trade of a trades frame.
const FIRST_TRADE_ID: i64 = 5_412_345_678;
/// Bytes every builder's buffer holds beyond its groups' entries: header, the largest root
/// block (best bid/ask's 50 bytes), two group headers and the symbol all fit.
const FIXED_BYTES_MAX: usize = 128;

const _: () = assert!(8 + 50 + 2 * 6 + 1 + SYMBOL.len() <= FIXED_BYTES_MAX);

/// A `BestBidAskStreamEvent` frame (66 bytes): spread of one tick.
pub fn best_bid_ask() -> Vec<u8> {
    build(FIXED_BYTES_MAX, |buf| {
        let mut m = BestBidAskStreamEventEncoder::wrap(buf)?;
        m.event_time(EVENT_TIME_US)
            .book_update_id(BOOK_UPDATE_ID)
            .price_exponent(EXPONENT)
            .qty_exponent(EXPONENT)
            .bid_price(BEST_BID_PRICE)
            .bid_qty(level_qty(0))
            .ask_price(BEST_BID_PRICE + PRICE_TICK)
            .ask_qty(level_qty(1));
        m.symbol(SYMBOL)?;
        Ok(m.finish())
    })
}

/// A `TradesStreamEvent` frame with `n` trades (40 + 25n bytes): consecutive ids, prices
/// walking down from the best bid, buyer and seller makers alternating.
///
/// # Panics
/// If `n` exceeds `u32::MAX`, which the wire format cannot carry.
pub fn trades(n: usize) -> Vec<u8> {
    let count = u32::try_from(n).expect("a trades group counts at most u32::MAX entries");
    build(FIXED_BYTES_MAX + 25 * n, |buf| {
        let mut m = TradesStreamEventEncoder::wrap(buf)?;
        m.event_time(EVENT_TIME_US)
            .transact_time(EVENT_TIME_US - 1_250)
            .price_exponent(EXPONENT)
            .qty_exponent(EXPONENT);
        let mut group = m.trades(count)?;
        for (i, id) in (FIRST_TRADE_ID..).take(n).enumerate() {
            let maker = if i.is_multiple_of(2) {
                BoolEnum::True
            } else {
                BoolEnum::False
            };
            group
                .next_entry()?
                .id(id)
                .price(level_price(true, i / 3))
                .qty(level_qty(i))
                .is_buyer_maker(maker);
        }
        m.symbol(SYMBOL)?;
        Ok(m.finish())
    })
}

/// A `DepthSnapshotStreamEvent` frame with `levels` bids and `levels` asks (42 + 32 x levels
/// bytes; `depth_snapshot(20)` is the 682-byte depth20 frame).
///
/// # Panics
/// If `levels` exceeds `u16::MAX`, which the wire format cannot carry.
pub fn depth_snapshot(levels: usize) -> Vec<u8> {
    let count = u16::try_from(levels).expect("a depth group counts at most u16::MAX entries");
    build(FIXED_BYTES_MAX + 32 * levels, |buf| {
        let mut m = DepthSnapshotStreamEventEncoder::wrap(buf)?;
        m.event_time(EVENT_TIME_US)
            .book_update_id(BOOK_UPDATE_ID)
            .price_exponent(EXPONENT)
            .qty_exponent(EXPONENT);
        let mut bids = m.bids(count)?;
        for i in 0..levels {
            bids.next_entry()?
                .price(level_price(true, i))
                .qty(level_qty(i));
        }
        let mut asks = m.asks(count)?;
        for i in 0..levels {
            asks.next_entry()?
                .price(level_price(false, i))
                .qty(level_qty(i + 1));
        }
        m.symbol(SYMBOL)?;
        Ok(m.finish())
    })
}

/// A `DepthDiffStreamEvent` frame with `bids` and `asks` changed levels (50 + 16(b + a) bytes);
/// every fifth level is a removal (quantity zero).
///
/// # Panics
/// If `bids` or `asks` exceeds `u16::MAX`, which the wire format cannot carry.
pub fn depth_diff(bids: usize, asks: usize) -> Vec<u8> {
    let bid_count = u16::try_from(bids).expect("a depth group counts at most u16::MAX entries");
    let ask_count = u16::try_from(asks).expect("a depth group counts at most u16::MAX entries");
    build(FIXED_BYTES_MAX + 16 * (bids + asks), |buf| {
        let mut m = DepthDiffStreamEventEncoder::wrap(buf)?;
        m.event_time(EVENT_TIME_US)
            .first_book_update_id(BOOK_UPDATE_ID - 1_234)
            .last_book_update_id(BOOK_UPDATE_ID)
            .price_exponent(EXPONENT)
            .qty_exponent(EXPONENT);
        let mut group = m.bids(bid_count)?;
        for i in 0..bids {
            group
                .next_entry()?
                .price(level_price(true, i))
                .qty(diff_qty(i));
        }
        let mut group = m.asks(ask_count)?;
        for i in 0..asks {
            group
                .next_entry()?
                .price(level_price(false, i))
                .qty(diff_qty(i + 2));
        }
        m.symbol(SYMBOL)?;
        Ok(m.finish())
    })
}

/// Encodes one frame into a zeroed buffer of `capacity` bytes and trims it to the frame.
fn build(capacity: usize, encode: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>) -> Vec<u8> {
    let mut buf = vec![0; capacity];
    // Every caller sizes `capacity` as FIXED_BYTES_MAX plus its entries, which the frame fits.
    let len = encode(&mut buf).expect("the buffer is sized for the whole frame");
    buf.truncate(len);
    buf
}

/// The price of level `i` (0 = best) on the bid or ask side.
fn level_price(bid: bool, i: usize) -> i64 {
    let ticks = i64::try_from(i).unwrap_or(i64::MAX / PRICE_TICK);
    if bid {
        BEST_BID_PRICE - ticks * PRICE_TICK
    } else {
        BEST_BID_PRICE + (ticks + 1) * PRICE_TICK
    }
}

/// A quantity between 0.00001 and 1.9 BTC that varies from level to level.
fn level_qty(i: usize) -> i64 {
    let lots = i64::try_from(i.wrapping_mul(7_919) % 190_000).unwrap_or(0);
    (1 + lots) * QTY_LOT
}

/// A diff level's quantity: zero (level removed) on every fifth level.
fn diff_qty(i: usize) -> i64 {
    if i % 5 == 4 { 0 } else { level_qty(i) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpath::sbe::{self, spot_stream::Message};

    #[test]
    fn frames() {
        let frame = best_bid_ask();
        assert_eq!(frame.len(), 66);
        let Ok(Message::BestBidAskStreamEvent(m)) = sbe::decode(&frame) else {
            panic!("best_bid_ask() must decode as BestBidAskStreamEvent");
        };
        assert_eq!((m.symbol(), m.price_exponent()), (SYMBOL, EXPONENT));
        assert_eq!(m.ask_price() - m.bid_price(), PRICE_TICK);

        for n in [0, 1, 10, 1_000] {
            let frame = trades(n);
            assert_eq!(frame.len(), 40 + 25 * n, "trades({n})");
            let Ok(Message::TradesStreamEvent(m)) = sbe::decode(&frame) else {
                panic!("trades({n}) must decode as TradesStreamEvent");
            };
            assert_eq!((m.symbol(), m.qty_exponent()), (SYMBOL, EXPONENT));
            assert_eq!(m.trades().count(), n);
            assert!(
                m.trades()
                    .all(|t| t.is_buyer_maker().is_some() && t.qty() > 0)
            );
        }
        assert_eq!(trades(1).len(), 65);

        for levels in [0, 1, 5, 20] {
            let frame = depth_snapshot(levels);
            assert_eq!(frame.len(), 42 + 32 * levels, "depth_snapshot({levels})");
            let Ok(Message::DepthSnapshotStreamEvent(m)) = sbe::decode(&frame) else {
                panic!("depth_snapshot({levels}) must decode as DepthSnapshotStreamEvent");
            };
            assert_eq!(m.symbol(), SYMBOL);
            assert_eq!((m.bids().count(), m.asks().count()), (levels, levels));
            let best_ask = m.asks().next().map(|level| level.price());
            let best_bid = m.bids().next().map(|level| level.price());
            assert!(
                levels == 0 || best_bid < best_ask,
                "the book is not crossed"
            );
        }
        assert_eq!(depth_snapshot(20).len(), 682);

        for (bids, asks) in [(0, 0), (0, 3), (10, 10), (100, 100)] {
            let frame = depth_diff(bids, asks);
            assert_eq!(
                frame.len(),
                50 + 16 * (bids + asks),
                "depth_diff({bids}, {asks})"
            );
            let Ok(Message::DepthDiffStreamEvent(m)) = sbe::decode(&frame) else {
                panic!("depth_diff({bids}, {asks}) must decode as DepthDiffStreamEvent");
            };
            assert_eq!(m.symbol(), SYMBOL);
            assert_eq!((m.bids().count(), m.asks().count()), (bids, asks));
            assert!(m.first_book_update_id() < m.last_book_update_id());
        }
        let frame = depth_diff(10, 0);
        let Ok(Message::DepthDiffStreamEvent(m)) = sbe::decode(&frame) else {
            panic!("depth_diff(10, 0) must decode as DepthDiffStreamEvent");
        };
        let removed = m.bids().filter(|level| level.qty() == 0).count();
        assert_eq!(removed, 2, "levels 4 and 9 are removals");
    }
}
