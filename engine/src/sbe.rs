//! The Binance Spot stream codecs, generated at build time (`engine/build.rs`) from our schema
//! `schemas/binance_spot_stream_1_0.xml`, which a test proves wire-identical to Binance's
//! `stream_1_0.xml`. Generated code lives in OUT_DIR, is never committed, and has no `unsafe`.
//!
//! [`decode`] is the entry point every frame goes through: it validates the frame once (header,
//! root block, each group's count x block length, the symbol's length) and returns a zero-copy
//! view whose getters are plain loads.

pub use sbe_runtime::{Decimal, DecodeError, EncodeError, Limits};

/// Binance schema `spot_stream` 1:0, generated.
#[forbid(unsafe_code)]
pub mod spot_stream {
    include!(concat!(env!("OUT_DIR"), "/binance_spot_stream.rs"));
}

/// The limits hotpath decodes Binance frames with.
pub const LIMITS: Limits = Limits {
    group_count_max: crate::constants::GROUP_COUNT_MAX,
};

/// Decodes and validates one Binance SBE frame. Never panics and never reads out of bounds,
/// whatever the bytes.
#[inline]
pub fn decode(frame: &[u8]) -> Result<spot_stream::Message<'_>, DecodeError> {
    spot_stream::decode_with(frame, &LIMITS)
}

/// The symbol of a decoded message (every Binance stream message ends with it): the one place
/// that knows each message carries one.
#[inline]
pub fn symbol<'a>(message: &spot_stream::Message<'a>) -> &'a [u8] {
    use spot_stream::Message;
    match message {
        Message::TradesStreamEvent(m) => m.symbol(),
        Message::BestBidAskStreamEvent(m) => m.symbol(),
        Message::DepthSnapshotStreamEvent(m) => m.symbol(),
        Message::DepthDiffStreamEvent(m) => m.symbol(),
    }
}

/// Binance schema `spot_sbe` 3:5, the REST API's (`schemas/binance_spot_3_5.xml`, a verbatim
/// copy of Binance's `spot_3_5.xml`), generated for the messages `engine/build.rs` names only:
/// errors, exchangeInfo, depth, trades, aggTrades and klines.
#[forbid(unsafe_code)]
pub mod spot_rest {
    include!(concat!(env!("OUT_DIR"), "/binance_spot_rest.rs"));
}

#[cfg(test)]
mod tests {
    use super::spot_stream::{BoolEnum, TradesStreamEventDecoder, TradesStreamEventEncoder};
    use super::*;

    /// Validation checks each element together with the fixed prefix of the next one (a group's
    /// header, the symbol's length), but a short frame still gets the error of the first element
    /// that does not fit, at every length.
    #[test]
    fn a_truncated_trades_frame_names_the_first_element_that_does_not_fit() {
        let mut buf = [0u8; 128];
        let mut e = TradesStreamEventEncoder::wrap(&mut buf).expect("room");
        e.event_time(1)
            .transact_time(2)
            .price_exponent(-8)
            .qty_exponent(-8);
        let mut trades = e.trades(2).expect("room");
        for id in [7, 8] {
            let entry = trades.next_entry().expect("room");
            entry.id(id).price(3).qty(4).is_buyer_maker(BoolEnum::True);
        }
        e.symbol(b"BTCUSDT").expect("room");
        let len = e.finish();
        let root_end = spot_stream::HEADER_LENGTH + TradesStreamEventDecoder::BLOCK_LENGTH;
        let entries_end = root_end + 6 + 2 * 25;
        let ends = [
            spot_stream::HEADER_LENGTH,
            root_end,
            root_end + 6,
            entries_end,
            entries_end + 1,
            len,
        ];
        assert_eq!(len, entries_end + 1 + 7);
        for cut in 0..len {
            let first_missing = ends.iter().copied().find(|&end| end > cut);
            match decode(&buf[..cut]) {
                Err(DecodeError::Truncated { needed, got }) => {
                    assert_eq!((Some(needed), got), (first_missing, cut), "cut at {cut}");
                }
                other => panic!("cut at {cut}: expected a truncation error, got {other:?}"),
            }
        }
        let Ok(spot_stream::Message::TradesStreamEvent(m)) = decode(&buf[..len]) else {
            panic!("the whole frame decodes");
        };
        let ids: Vec<i64> = m.trades().map(|t| t.id()).collect();
        assert_eq!((ids, m.symbol()), (vec![7, 8], &b"BTCUSDT"[..]));
    }
}
