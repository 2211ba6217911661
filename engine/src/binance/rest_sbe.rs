//! Binance REST answers in SBE (PROTOCOL.md 4.5 and 4.6: schema `spot_sbe` 3:5, asked for with
//! `Accept: application/sbe` and `X-MBX-SBE: 3:5`) decoded into the same values the JSON
//! answers give: [`super::rest`] asks for SBE and falls back to JSON, and both paths end in these
//! types. Pure: bytes in, values or a reason out.
//!
//! - depth: the levels stay mantissas at the answer's exponents ([`Levels::Exact`]), so a
//!   5000-level snapshot reaches the book without any text;
//! - trades, aggTrades, klines: SBE times are microseconds, JSON's milliseconds: they are
//!   divided (floor) to the JSON values; prices and quantities are rendered as Binance prints
//!   them (exactly `-exponent` decimals), which is what the JSON answer holds;
//! - exchangeInfo: the symbol status enum becomes Binance's JSON name (`TRADING`, `HALT`, ...).

use sbe_runtime::{Decimal, Decimal128};

use super::rest::{DepthSnapshot, Levels, RestAggTrade, RestKline, RestTrade, SymbolListing};
use crate::sbe::spot_rest::{
    self, BoolEnum, DepthResponseDecoder, ErrorResponseDecoder, ExchangeInfoResponseDecoder,
    KlinesResponseDecoder, SymbolStatus, TradesResponseDecoder,
};

/// `Accept` for an SBE answer.
pub const ACCEPT_SBE: &str = "application/sbe";
/// The header naming the schema id and version asked for.
pub const SBE_HEADER: &str = "X-MBX-SBE";
/// The header Binance adds when the schema asked for is deprecated.
pub const DEPRECATED_HEADER: &str = "X-MBX-SBE-DEPRECATED";
/// `X-MBX-SBE`'s value: the schema the codecs were generated from (3:5).
pub fn schema_header_value() -> String {
    format!("{}:{}", spot_rest::SCHEMA_ID, spot_rest::SCHEMA_VERSION)
}

/// Group counts allowed when decoding a REST answer: a 5000-level side, 1000 trades, every
/// symbol of exchangeInfo.
const LIMITS: sbe_runtime::Limits = sbe_runtime::Limits {
    group_count_max: crate::constants::GROUP_COUNT_MAX,
};
const US_PER_MS: i64 = 1_000;

fn text(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn why(e: sbe_runtime::DecodeError) -> String {
    format!("SBE: {e}")
}

/// A `/api/v3/depth` answer.
pub fn depth(body: &[u8]) -> Result<DepthSnapshot, String> {
    let m = DepthResponseDecoder::decode_with(body, &LIMITS).map_err(why)?;
    let (price_exponent, qty_exponent) = (m.price_exponent(), m.qty_exponent());
    let side = |levels: Vec<(i64, i64)>| Levels::Exact {
        price_exponent,
        qty_exponent,
        levels,
    };
    Ok(DepthSnapshot {
        last_update_id: m.last_update_id(),
        bids: side(m.bids().map(|l| (l.price(), l.qty())).collect()),
        asks: side(m.asks().map(|l| (l.price(), l.qty())).collect()),
    })
}

/// A `/api/v3/trades` or `/api/v3/historicalTrades` answer.
pub fn trades(body: &[u8]) -> Result<Vec<RestTrade>, String> {
    let m = TradesResponseDecoder::decode_with(body, &LIMITS).map_err(why)?;
    let (pe, qe) = (m.price_exponent(), m.qty_exponent());
    m.trades()
        .map(|t| {
            Ok(RestTrade {
                id: t.id(),
                price: Decimal::new(t.price(), pe).to_string(),
                qty: Decimal::new(t.qty(), qe).to_string(),
                time_ms: t.time().div_euclid(US_PER_MS),
                is_buyer_maker: flag(t.is_buyer_maker(), "isBuyerMaker")?,
            })
        })
        .collect()
}

fn flag(value: Option<BoolEnum>, what: &str) -> Result<bool, String> {
    match value {
        Some(BoolEnum::True) => Ok(true),
        Some(BoolEnum::False) => Ok(false),
        None => Err(format!("{what} is neither true nor false")),
    }
}

/// A `/api/v3/aggTrades` answer.
pub fn agg_trades(body: &[u8]) -> Result<Vec<RestAggTrade>, String> {
    let m = spot_rest::AggTradesResponseDecoder::decode_with(body, &LIMITS).map_err(why)?;
    Ok(m.agg_trades()
        .map(|a| RestAggTrade {
            agg_id: a.agg_trade_id(),
            first_trade_id: a.first_trade_id(),
            last_trade_id: a.last_trade_id(),
            time_ms: a.time().div_euclid(US_PER_MS),
        })
        .collect())
}

/// A `/api/v3/klines` answer.
pub fn klines(body: &[u8]) -> Result<Vec<RestKline>, String> {
    let m = KlinesResponseDecoder::decode_with(body, &LIMITS).map_err(why)?;
    let (pe, qe) = (m.price_exponent(), m.qty_exponent());
    m.klines()
        .map(|k| {
            let volume = i128::from_le_bytes(*k.volume());
            if volume == i128::MIN {
                return Err("a kline without a volume".to_string());
            }
            let wide =
                |m: &[u8; 16], e: i8| Decimal128::new(i128::from_le_bytes(*m), e).to_string();
            let price = |m: i64| Decimal::new(m, pe).to_string();
            // Quote volumes are at the quantity exponent, as the simulator encodes them.
            let quote_exponent = qe;
            Ok(RestKline {
                open_ms: k.open_time().div_euclid(US_PER_MS),
                close_ms: k.close_time().div_euclid(US_PER_MS),
                open: price(k.open_price()),
                high: price(k.high_price()),
                low: price(k.low_price()),
                close: price(k.close_price()),
                volume: Decimal128::new(volume, qe).to_string(),
                quote_volume: wide(k.quote_volume(), quote_exponent),
                count: u64::try_from(k.num_trades())
                    .map_err(|_| "a negative number of trades".to_string())?,
                taker_buy_volume: wide(k.taker_buy_base_volume(), qe),
                taker_buy_quote_volume: wide(k.taker_buy_quote_volume(), quote_exponent),
            })
        })
        .collect()
}

/// Binance's JSON name of a symbol status.
pub fn status_name(status: SymbolStatus) -> &'static str {
    match status {
        SymbolStatus::Trading => "TRADING",
        SymbolStatus::EndOfDay => "END_OF_DAY",
        SymbolStatus::Halt => "HALT",
        SymbolStatus::Break => "BREAK",
        SymbolStatus::CancelOnly => "CANCEL_ONLY",
        SymbolStatus::NonRepresentable => "NON_REPRESENTABLE",
    }
}

/// The symbol status of a JSON name; names SBE cannot say are `NonRepresentable`, as Binance
/// sends them.
pub fn status_of(name: &str) -> SymbolStatus {
    [
        SymbolStatus::Trading,
        SymbolStatus::EndOfDay,
        SymbolStatus::Halt,
        SymbolStatus::Break,
        SymbolStatus::CancelOnly,
    ]
    .into_iter()
    .find(|s| status_name(*s) == name)
    .unwrap_or(SymbolStatus::NonRepresentable)
}

/// An `/api/v3/exchangeInfo` answer: each symbol's name, status and quote asset.
pub fn exchange_info(body: &[u8]) -> Result<Vec<SymbolListing>, String> {
    let m = ExchangeInfoResponseDecoder::decode_with(body, &LIMITS).map_err(why)?;
    m.symbols()
        .map(|s| {
            let status = s
                .status()
                .ok_or_else(|| format!("unknown symbol status {}", s.status_raw()))?;
            Ok(SymbolListing {
                symbol: text(s.symbol(), "a symbol")?,
                status: status_name(status).to_string(),
                quote_asset: text(s.quote_asset(), "a quote asset")?,
            })
        })
        .collect()
}

/// Binance's code and message out of an SBE `ErrorResponse`; `None` if the body is not one.
pub fn error(body: &[u8]) -> Option<(i64, String)> {
    let m = ErrorResponseDecoder::decode(body).ok()?;
    Some((
        i64::from(m.code()),
        String::from_utf8_lossy(m.msg()).into_owned(),
    ))
}
