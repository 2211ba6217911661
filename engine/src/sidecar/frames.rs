//! Trades fetched from REST as SBE trades frames, the same payload the live stream carries, so
//! each sink treats a backfilled trade exactly as a live one (Kinesis gets the frame as its
//! record; Redis decodes it like any other).
//!
//! Binance groups the trades of one match in one event with one `transactTime`; a REST page
//! spans many. The page is cut into one frame per run of trades with the same trade time, so
//! every trade keeps its exact time. Prices and quantities are parsed exactly at
//! [`REST_EXPONENT`] (Binance prints eight decimals); a trade whose text does not fit is
//! refused whole, never rounded.

use bytes::Bytes;

use crate::binance::decimal::parse_decimal;
use crate::binance::rest::RestTrade;
use crate::sbe::spot_stream::{
    BoolEnum, HEADER_LENGTH, TradesStreamEventEncoder, TradesStreamEventTradesEncoder,
};

/// The exponent of REST prices and quantities (Binance prints eight decimals).
pub const REST_EXPONENT: i8 = -8;

/// Bytes of a group header (u16 block length, u32 count).
const GROUP_HEADER_BYTES: usize = 6;

/// Why a page could not become frames.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A price or quantity is not an exact decimal at [`REST_EXPONENT`].
    #[error("trade {id}: {field} {text:?} is not exact at 10^{exponent}", exponent = REST_EXPONENT)]
    Inexact {
        /// The trade id.
        id: i64,
        /// `price` or `qty`.
        field: &'static str,
        /// The text Binance sent.
        text: String,
    },
    /// The page's ids are not contiguous and increasing.
    #[error("trade ids not contiguous: {after} then {id}")]
    NotContiguous {
        /// The id before.
        after: i64,
        /// The id that does not follow it.
        id: i64,
    },
    /// The encoder refused (a symbol over 255 bytes).
    #[error("cannot encode: {0:?}")]
    Encode(sbe_runtime::EncodeError),
}

/// One frame of a page: its ids and time, and the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradesFrame {
    /// First trade id.
    pub first_id: i64,
    /// Last trade id.
    pub last_id: i64,
    /// The trades' time, microseconds since the epoch.
    pub time_us: i64,
    /// The SBE frame.
    pub frame: Bytes,
}

/// Cuts `trades` (one REST page, ids contiguous) into frames of `symbol`, one per run of equal
/// trade times, appended to `out`. On error nothing is appended.
pub fn page_frames(
    symbol: &str,
    trades: &[RestTrade],
    out: &mut Vec<TradesFrame>,
) -> Result<(), FrameError> {
    let mut parsed = Vec::with_capacity(trades.len());
    for (i, t) in trades.iter().enumerate() {
        if i > 0 && trades[i - 1].id.checked_add(1) != Some(t.id) {
            return Err(FrameError::NotContiguous {
                after: trades[i - 1].id,
                id: t.id,
            });
        }
        let exact = |field: &'static str, text: &str| {
            parse_decimal(text, REST_EXPONENT).ok_or_else(|| FrameError::Inexact {
                id: t.id,
                field,
                text: text.to_string(),
            })
        };
        parsed.push((t, exact("price", &t.price)?, exact("qty", &t.qty)?));
    }
    let start = out.len();
    for run in parsed.chunk_by(|a, b| a.0.time_ms == b.0.time_ms) {
        match encode_run(symbol, run) {
            Ok(frame) => out.push(frame),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn encode_run(symbol: &str, run: &[(&RestTrade, i64, i64)]) -> Result<TradesFrame, FrameError> {
    let time_us = run[0].0.time_ms.saturating_mul(1000);
    let entries = run.len();
    let mut buf = vec![
        0u8;
        HEADER_LENGTH
            + TradesStreamEventEncoder::BLOCK_LENGTH
            + GROUP_HEADER_BYTES
            + TradesStreamEventTradesEncoder::BLOCK_LENGTH * entries
            + 1
            + symbol.len()
    ];
    let length = {
        let mut encoder = TradesStreamEventEncoder::wrap(&mut buf).map_err(FrameError::Encode)?;
        encoder
            .event_time(time_us)
            .transact_time(time_us)
            .price_exponent(REST_EXPONENT)
            .qty_exponent(REST_EXPONENT);
        let count = u32::try_from(entries).unwrap_or(u32::MAX);
        let mut group = encoder.trades(count).map_err(FrameError::Encode)?;
        for &(trade, price, qty) in run {
            let maker = if trade.is_buyer_maker {
                BoolEnum::True
            } else {
                BoolEnum::False
            };
            group
                .next_entry()
                .map_err(FrameError::Encode)?
                .id(trade.id)
                .price(price)
                .qty(qty)
                .is_buyer_maker(maker);
        }
        encoder
            .symbol(symbol.as_bytes())
            .map_err(FrameError::Encode)?;
        encoder.finish()
    };
    buf.truncate(length);
    Ok(TradesFrame {
        first_id: run[0].0.id,
        last_id: run[entries - 1].0.id,
        time_us,
        frame: Bytes::from(buf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbe::spot_stream::Message;

    fn trade(id: i64, time_ms: i64, price: &str) -> RestTrade {
        RestTrade {
            id,
            price: price.into(),
            qty: "0.00100000".into(),
            time_ms,
            is_buyer_maker: id % 2 == 0,
        }
    }

    #[test]
    fn a_page_becomes_one_frame_per_trade_time_and_decodes_back_exactly() {
        let page = [
            trade(10, 1_000, "69769.91000000"),
            trade(11, 1_000, "69769.92000000"),
            trade(12, 1_001, "69770.00000000"),
        ];
        let mut out = Vec::new();
        page_frames("BTCUSDT", &page, &mut out).expect("frames");
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].first_id, out[0].last_id, out[0].time_us),
            (10, 11, 1_000_000)
        );
        assert_eq!((out[1].first_id, out[1].last_id), (12, 12));
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(&out[0].frame) else {
            panic!("a trades frame");
        };
        assert_eq!(m.symbol(), b"BTCUSDT");
        assert_eq!(m.transact_time(), 1_000_000);
        let trades: Vec<_> = m.trades().map(|t| (t.id(), t.price(), t.qty())).collect();
        assert_eq!(
            trades,
            vec![
                (10, 6_976_991_000_000, 100_000),
                (11, 6_976_992_000_000, 100_000)
            ]
        );
        let makers: Vec<_> = m.trades().map(|t| t.is_buyer_maker()).collect();
        assert_eq!(makers, vec![Some(BoolEnum::True), Some(BoolEnum::False)]);
    }

    /// A repaired frame is at -8 whatever the live frames use: a Kinesis consumer decodes
    /// each record at its own exponents (SBE) or reads its decimals (JSON), so a repaired
    /// trade has the value of the live one; only JSON's trailing zeros may differ.
    #[test]
    fn a_repaired_frame_reads_as_the_same_values_in_either_payload() {
        let mut out = Vec::new();
        page_frames("BTCUSDT", &[trade(10, 1_000, "69769.91000000")], &mut out).expect("frames");
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(&out[0].frame) else {
            panic!("a trades frame");
        };
        let t = m.trades().next().expect("a trade");
        let price = sbe_runtime::Decimal::new(t.price(), m.price_exponent());
        let live = sbe_runtime::Decimal::new(6_976_991, -2);
        assert_eq!(
            i128::from(price.mantissa),
            i128::from(live.mantissa) * 1_000_000,
            "{price} is {live}"
        );
        let mut json = String::new();
        assert!(crate::decode::frame_to_json(&out[0].frame, &mut json));
        let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let text = v["trades"][0]["price"].as_str().expect("a decimal string");
        assert_eq!(text.trim_end_matches('0'), live.to_string(), "{json}");
    }

    #[test]
    fn inexact_or_broken_pages_are_refused_whole() {
        let mut out = Vec::new();
        let finer = [trade(1, 5, "1.000000001")];
        assert!(matches!(
            page_frames("X", &finer, &mut out),
            Err(FrameError::Inexact {
                id: 1,
                field: "price",
                ..
            })
        ));
        let holes = [trade(1, 5, "1"), trade(3, 5, "1")];
        assert_eq!(
            page_frames("X", &holes, &mut out),
            Err(FrameError::NotContiguous { after: 1, id: 3 })
        );
        assert!(out.is_empty());
    }
}
