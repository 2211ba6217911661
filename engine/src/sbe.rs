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
