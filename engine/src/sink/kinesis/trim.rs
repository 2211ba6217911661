//! Re-encoding a trades event without the trades already delivered: when two connections frame
//! the same trades differently (a make-before-break switch), an event can start with trade ids
//! an earlier event carried. The reader's sequencer tells from which id the event is new
//! ([`crate::feed::event::FeedEvent::first_new_id`]); the Kinesis writer sends a frame of only
//! those trades, built here with the generated SBE encoder. Runs on the sink thread, never the
//! reader's.
//!
//! The new frame is what Binance would have sent for those trades alone: the same event time,
//! transact time, exponents and symbol, the kept trades' entries unchanged (an `isBuyerMaker`
//! value the schema does not know is copied as it is), written with this schema's block lengths
//! (fields a newer schema version appended to a block are not carried over).

use std::fmt;

use crate::sbe::spot_stream::{
    HEADER_LENGTH, Message, TradesStreamEventEncoder, TradesStreamEventTradesEncoder,
};

/// Bytes of the trades group header (u16 block length, u32 count).
const GROUP_HEADER_BYTES: usize = 6;
/// Offset of `isBuyerMaker` in a trades entry.
const BUYER_MAKER_OFFSET: usize = 24;

/// Why a trades event could not be re-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrimError {
    /// The frame does not decode.
    Decode(String),
    /// The frame is not a trades event.
    NotTrades,
    /// No trade of the event has an id at or above the first new id.
    NothingNew {
        /// The first new id.
        first_new_id: i64,
    },
    /// The encoder refused (a symbol longer than 255 bytes cannot have decoded).
    Encode(String),
}

impl fmt::Display for TrimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrimError::Decode(e) => write!(f, "the frame does not decode: {e}"),
            TrimError::NotTrades => f.write_str("the frame is not a trades event"),
            TrimError::NothingNew { first_new_id } => {
                write!(f, "no trade id at or above {first_new_id}")
            }
            TrimError::Encode(e) => write!(f, "cannot encode: {e}"),
        }
    }
}

impl std::error::Error for TrimError {}

/// Writes into `out` (cleared first) the trades event `frame` with only its trades whose id is
/// at least `first_new_id`, in their order.
pub fn trades_from(frame: &[u8], first_new_id: i64, out: &mut Vec<u8>) -> Result<(), TrimError> {
    out.clear();
    let message = crate::sbe::decode(frame).map_err(|e| TrimError::Decode(format!("{e:?}")))?;
    let Message::TradesStreamEvent(event) = message else {
        return Err(TrimError::NotTrades);
    };
    let kept = event.trades().filter(|t| t.id() >= first_new_id).count();
    if kept == 0 {
        return Err(TrimError::NothingNew { first_new_id });
    }
    let symbol = event.symbol();
    let entries_at = HEADER_LENGTH + TradesStreamEventEncoder::BLOCK_LENGTH + GROUP_HEADER_BYTES;
    let entry_bytes = TradesStreamEventTradesEncoder::BLOCK_LENGTH;
    out.resize(entries_at + entry_bytes * kept + 1 + symbol.len(), 0);
    let encode = |e: crate::sbe::EncodeError| TrimError::Encode(format!("{e:?}"));
    let mut unknown_flags = Vec::new();
    let length = {
        let mut encoder = TradesStreamEventEncoder::wrap(out).map_err(encode)?;
        encoder
            .event_time(event.event_time())
            .transact_time(event.transact_time())
            .price_exponent(event.price_exponent())
            .qty_exponent(event.qty_exponent());
        let count = u32::try_from(kept).map_err(|_| TrimError::Encode("too many trades".into()))?;
        let mut group = encoder.trades(count).map_err(encode)?;
        for (at, trade) in event
            .trades()
            .filter(|t| t.id() >= first_new_id)
            .enumerate()
        {
            let entry = group.next_entry().map_err(encode)?;
            entry.id(trade.id()).price(trade.price()).qty(trade.qty());
            match trade.is_buyer_maker() {
                Some(flag) => {
                    entry.is_buyer_maker(flag);
                }
                None => unknown_flags.push((at, trade.is_buyer_maker_raw())),
            }
        }
        encoder.symbol(symbol).map_err(encode)?;
        encoder.finish()
    };
    out.truncate(length);
    for (at, raw) in unknown_flags {
        if let Some(byte) = out.get_mut(entries_at + at * entry_bytes + BUYER_MAKER_OFFSET) {
            *byte = raw;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbe::spot_stream::BoolEnum;

    /// A trades frame with `(id, buyer maker raw)` entries; prices and quantities derive from
    /// the id.
    fn frame(symbol: &str, trades: &[(i64, u8)]) -> Vec<u8> {
        let mut out = vec![0u8; 1024];
        let length = {
            let mut encoder = TradesStreamEventEncoder::wrap(&mut out).expect("room");
            encoder
                .event_time(1_763_700_000_000_123)
                .transact_time(1_763_700_000_000_100)
                .price_exponent(-2)
                .qty_exponent(-5);
            let mut group = encoder.trades(trades.len() as u32).expect("a group");
            for &(id, _) in trades {
                group
                    .next_entry()
                    .expect("an entry")
                    .id(id)
                    .price(6_976_988 + id)
                    .qty(100 * id)
                    .is_buyer_maker(BoolEnum::True);
            }
            encoder.symbol(symbol.as_bytes()).expect("a symbol");
            encoder.finish()
        };
        out.truncate(length);
        for (at, &(_, raw)) in trades.iter().enumerate() {
            out[HEADER_LENGTH + 18 + 6 + at * 25 + 24] = raw;
        }
        out
    }

    fn ids(frame: &[u8]) -> Vec<(i64, i64, i64, u8)> {
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(frame) else {
            panic!("a trades event");
        };
        m.trades()
            .map(|t| (t.id(), t.price(), t.qty(), t.is_buyer_maker_raw()))
            .collect()
    }

    /// Regression (found in review): a partly overlapping trades event was forwarded whole, so
    /// Kinesis received the already-delivered ids a second time.
    #[test]
    fn a_partly_overlapping_frame_keeps_only_the_new_trades() {
        let original = frame("BTCUSDT", &[(10, 1), (11, 0), (12, 1), (13, 0)]);
        let mut out = Vec::new();
        trades_from(&original, 12, &mut out).expect("re-encoded");
        let kept = ids(&out);
        assert_eq!(kept, ids(&original)[2..].to_vec());
        let (Ok(Message::TradesStreamEvent(a)), Ok(Message::TradesStreamEvent(b))) =
            (crate::sbe::decode(&original), crate::sbe::decode(&out))
        else {
            panic!("trades events");
        };
        assert_eq!(
            (a.event_time(), a.transact_time(), a.price_exponent()),
            (b.event_time(), b.transact_time(), b.price_exponent())
        );
        assert_eq!(a.qty_exponent(), b.qty_exponent());
        assert_eq!(a.symbol(), b.symbol());
        assert_eq!(out.len(), original.len() - 2 * 25, "two entries fewer");
        // The same frame from the first id is the original, byte for byte.
        trades_from(&original, 10, &mut out).expect("re-encoded");
        assert_eq!(out, original);
    }

    #[test]
    fn unknown_buyer_maker_values_are_copied_as_they_are() {
        let original = frame("ETHUSDT", &[(1, 1), (2, 0xFF), (3, 7)]);
        let mut out = Vec::new();
        trades_from(&original, 2, &mut out).expect("re-encoded");
        assert_eq!(ids(&out), ids(&original)[1..].to_vec());
    }

    #[test]
    fn nothing_new_and_other_messages_are_errors() {
        let original = frame("BTCUSDT", &[(10, 1), (11, 0)]);
        let mut out = Vec::new();
        assert_eq!(
            trades_from(&original, 12, &mut out),
            Err(TrimError::NothingNew { first_new_id: 12 })
        );
        assert!(matches!(
            trades_from(&original[..10], 11, &mut out),
            Err(TrimError::Decode(_))
        ));
        let mut bbo = vec![0u8; 256];
        let length = {
            let mut e = crate::sbe::spot_stream::BestBidAskStreamEventEncoder::wrap(&mut bbo)
                .expect("room");
            e.symbol(b"BTCUSDT").expect("a symbol");
            e.finish()
        };
        bbo.truncate(length);
        assert_eq!(trades_from(&bbo, 1, &mut out), Err(TrimError::NotTrades));
        assert!(out.is_empty());
    }
}
