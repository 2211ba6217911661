//! The S3 bronze layer: the trades hotpath delivered (and the historical trades the backfill
//! fetched), the 1-minute candles built from them, and the depth snapshots the sidecar
//! fetched, as Parquet files under Hive-style partitions, one object per part, written whole.
//!
//! - [`keys`]: pure: the key of a part (`{prefix}/binance/trades/symbol=S/date=D/hour=H/
//!   part-F-L.parquet`), the UTC hour of a trade, the ids an hour's parts already cover.
//! - [`parquet`]: pure: trades <-> Parquet bytes (the low-level column writer, no Arrow); the
//!   schema is documented there and in the README.
//! - [`store`]: the shell: the S3 client (the AWS SDK, configured like the Kinesis writer's),
//!   whole-object writes (PutObject, or a multipart upload completed or aborted), listing an
//!   hour's parts, and [`store::Store::archive`], which writes a run of trades without the ids
//!   already in the bucket.
//! - [`candles`]: pure: the live writer's candles from the trades it delivers, each judged
//!   complete (no trade id missing around it) or not.
//! - [`klines`], [`snapshots`]: pure: candles and depth snapshots <-> Parquet bytes (their
//!   schemas documented there and in the README), under the same layout ([`keys::Dataset`]).
//! - [`backfill`]: `hotpath backfill trades`: historical trades from REST into the same layout
//!   (`hotpath backfill klines --s3` is in [`crate::backfill::klines`]).
//!
//! A leaf: the live writer (`sink::s3`) and the backfill command use it, it uses only leaves.

pub mod backfill;
pub mod candles;
pub mod keys;
pub mod klines;
pub mod parquet;
pub mod snapshots;
pub mod store;

use crate::binance::decimal::{parse_decimal, rescale};
use crate::binance::rest::RestTrade;
use crate::sbe::spot_stream::{BoolEnum, Message};

/// The scale of every price and quantity in the archive: Binance prints eight decimals, and
/// the columns are `DECIMAL(18, 8)`.
pub const DECIMAL_SCALE: i8 = 8;
/// The precision of the decimal columns (their mantissas fit an `INT64`).
pub const DECIMAL_PRECISION: u32 = 18;
/// The largest mantissa a `DECIMAL(18, 8)` holds.
const MANTISSA_MAX: i64 = 999_999_999_999_999_999;

/// One trade as archived: exact decimals as mantissas at 10^-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TradeRow {
    /// Binance's trade id (per symbol, increasing).
    pub trade_id: i64,
    /// Price x 10^8, exact.
    pub price: i64,
    /// Quantity x 10^8, exact.
    pub qty: i64,
    /// Trade (transaction) time, microseconds since the epoch.
    pub trade_time_us: i64,
    /// Event time, microseconds since the epoch (a backfilled trade's is its trade time).
    pub event_time_us: i64,
    /// Whether the buyer was the maker (the taker sold).
    pub is_buyer_maker: bool,
}

/// Why a trade cannot be archived: its price or quantity is not exact at 10^-8 within
/// `DECIMAL(18, 8)`. Never rounded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("trade {trade_id}: {field} {value} is not exact within DECIMAL(18, 8)")]
pub struct Inexact {
    /// The trade.
    pub trade_id: i64,
    /// `price` or `qty`.
    pub field: &'static str,
    /// The value as it came.
    pub value: String,
}

fn scaled(trade_id: i64, field: &'static str, mantissa: i64, exponent: i8) -> Result<i64, Inexact> {
    rescale(mantissa, exponent, -DECIMAL_SCALE)
        .filter(|m| (0..=MANTISSA_MAX).contains(m))
        .ok_or_else(|| Inexact {
            trade_id,
            field,
            value: sbe_runtime::Decimal::new(mantissa, exponent).to_string(),
        })
}

/// The symbol of a trades frame and its trades with id `from` or later, appended to `out`;
/// `None` when the frame is not a readable trades event. A trade that is not exact at 10^-8
/// goes to `inexact` instead.
pub fn frame_rows(
    frame: &[u8],
    from: i64,
    out: &mut Vec<TradeRow>,
    inexact: &mut Vec<Inexact>,
) -> Option<String> {
    let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(frame) else {
        return None;
    };
    let symbol = std::str::from_utf8(m.symbol()).ok()?.to_string();
    let (pe, qe) = (m.price_exponent(), m.qty_exponent());
    for t in m.trades().filter(|t| t.id() >= from) {
        let id = t.id();
        let row = scaled(id, "price", t.price(), pe).and_then(|price| {
            Ok(TradeRow {
                trade_id: id,
                price,
                qty: scaled(id, "qty", t.qty(), qe)?,
                trade_time_us: m.transact_time(),
                event_time_us: m.event_time(),
                is_buyer_maker: t.is_buyer_maker() == Some(BoolEnum::True),
            })
        });
        match row {
            Ok(row) => out.push(row),
            Err(e) => inexact.push(e),
        }
    }
    Some(symbol)
}

/// A `historicalTrades` trade as a row (its event time is its trade time).
pub fn rest_row(t: &RestTrade) -> Result<TradeRow, Inexact> {
    let exact = |field: &'static str, text: &str| {
        parse_decimal(text, -DECIMAL_SCALE)
            .filter(|m| (0..=MANTISSA_MAX).contains(m))
            .ok_or_else(|| Inexact {
                trade_id: t.id,
                field,
                value: text.to_string(),
            })
    };
    let time_us = t.time_ms.saturating_mul(1000);
    Ok(TradeRow {
        trade_id: t.id,
        price: exact("price", &t.price)?,
        qty: exact("qty", &t.qty)?,
        trade_time_us: time_us,
        event_time_us: time_us,
        is_buyer_maker: t.is_buyer_maker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_trades_become_exact_rows_and_inexact_ones_are_refused() {
        let t = RestTrade {
            id: 7,
            price: "69769.88000000".into(),
            qty: "0.00012000".into(),
            time_ms: 1_700_000_000_123,
            is_buyer_maker: true,
        };
        let row = rest_row(&t).expect("exact");
        assert_eq!((row.price, row.qty), (6_976_988_000_000, 12_000));
        assert_eq!(row.trade_time_us, 1_700_000_000_123_000);
        let bad = RestTrade {
            price: "1.000000001".into(),
            ..t
        };
        let e = rest_row(&bad).expect_err("nine decimals");
        assert_eq!((e.trade_id, e.field), (7, "price"));
    }

    #[test]
    fn mantissas_are_rescaled_exactly_or_refused() {
        assert_eq!(scaled(1, "price", 6_976_988, -2), Ok(6_976_988_000_000));
        assert_eq!(scaled(1, "qty", 5, 0), Ok(500_000_000));
        assert!(scaled(1, "qty", 1, -9).is_err(), "below 10^-8");
        assert!(
            scaled(1, "qty", 10_000_000_000, 0).is_err(),
            "over DECIMAL(18, 8)"
        );
        assert!(scaled(1, "qty", -1, 0).is_err(), "negative");
    }
}
