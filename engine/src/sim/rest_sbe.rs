//! The simulator's REST answers in SBE (schema `spot_sbe` 3:5, PROTOCOL.md 4.5 and 4.6), written
//! with the generated encoders (`crate::sbe::spot_rest`).
//!
//! Each SBE answer is encoded from the JSON answer the same request gets ([`super::rest`]), so
//! the two formats cannot disagree: decimals are read back exactly at exponent -8 (the
//! simulator's prices and quantities), and times in milliseconds become the microseconds SBE
//! carries (`ms x 1000`). Pure: a JSON value in, bytes or a reason out.

use serde_json::Value;

use super::market::{PRICE_EXPONENT, QTY_EXPONENT};
use crate::binance::decimal::parse_decimal;
use crate::binance::rest_sbe::status_of;
use crate::sbe::spot_rest::{
    AggTradesResponseEncoder, AllowedSelfTradePreventionModes, BoolEnum, DepthResponseEncoder,
    ErrorResponseEncoder, ExchangeInfoResponseEncoder, KlinesResponseEncoder, OrderTypes,
    RateLimitInterval, RateLimitType, SelfTradePreventionMode, TradesResponseEncoder,
};

/// Which SBE message an endpoint answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `/api/v3/exchangeInfo`: `ExchangeInfoResponse`.
    ExchangeInfo,
    /// `/api/v3/depth`: `DepthResponse`.
    Depth,
    /// `/api/v3/trades`, `/api/v3/historicalTrades`: `TradesResponse`.
    Trades,
    /// `/api/v3/aggTrades`: `AggTradesResponse`.
    AggTrades,
    /// `/api/v3/klines`: `KlinesResponse`.
    Klines,
}

const US_PER_MS: i64 = 1_000;
/// Room beyond the JSON text's length: SBE is never longer than the JSON it is made from,
/// but for a fixed header and group headers of empty answers.
const SLACK: usize = 1_024;

/// The SBE body of `answer` for the JSON answer `json`.
pub fn encode(answer: Answer, json: &Value) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; json.to_string().len() + SLACK];
    let len = match answer {
        Answer::ExchangeInfo => exchange_info(&mut buf, json),
        Answer::Depth => depth(&mut buf, json),
        Answer::Trades => trades(&mut buf, json),
        Answer::AggTrades => agg_trades(&mut buf, json),
        Answer::Klines => klines(&mut buf, json),
    }?;
    buf.truncate(len);
    Ok(buf)
}

/// An SBE `ErrorResponse` with Binance's code and message.
pub fn error(code: i64, msg: &str) -> Vec<u8> {
    let mut buf = vec![0u8; msg.len() + SLACK];
    let code = i16::try_from(code).unwrap_or(i16::MIN);
    let len = ErrorResponseEncoder::wrap(&mut buf)
        .and_then(|mut e| {
            e.code(code).server_time(None).retry_after(None);
            e.msg(msg.as_bytes())?;
            e.data(&[])?;
            Ok(e.finish())
        })
        .unwrap_or(0);
    buf.truncate(len);
    buf
}

fn fail(e: impl std::fmt::Display) -> String {
    format!("SBE encoding: {e}")
}

fn items(json: &Value) -> Result<&Vec<Value>, String> {
    json.as_array().ok_or_else(|| fail("not an array"))
}

fn count(items: &[Value]) -> Result<u32, String> {
    u32::try_from(items.len()).map_err(fail)
}

fn int(value: Option<&Value>) -> Result<i64, String> {
    value
        .and_then(Value::as_i64)
        .ok_or_else(|| fail("an integer is missing"))
}

fn us(value: Option<&Value>) -> Result<i64, String> {
    int(value)?
        .checked_mul(US_PER_MS)
        .ok_or_else(|| fail("a time out of range"))
}

fn text(value: Option<&Value>) -> Result<&str, String> {
    value
        .and_then(Value::as_str)
        .ok_or_else(|| fail("a string is missing"))
}

/// A decimal string as a mantissa at exponent -8.
fn mantissa(value: Option<&Value>) -> Result<i64, String> {
    let text = text(value)?;
    parse_decimal(text, PRICE_EXPONENT).ok_or_else(|| fail(format!("{text:?} at -8")))
}

/// A decimal string as a 128-bit mantissa at exponent -8, little-endian.
fn mantissa128(value: Option<&Value>) -> Result<[u8; 16], String> {
    let text = text(value)?;
    let (int_part, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = format!("{int_part}{frac:0<8}");
    let exact = frac.len() <= 8 && !int_part.starts_with('-');
    match digits.parse::<i128>() {
        Ok(m) if exact => Ok(m.to_le_bytes()),
        _ => Err(fail(format!("{text:?} as a volume at -8"))),
    }
}

fn boolean(value: Option<&Value>) -> Result<BoolEnum, String> {
    match value.and_then(Value::as_bool) {
        Some(true) => Ok(BoolEnum::True),
        Some(false) => Ok(BoolEnum::False),
        None => Err(fail("a boolean is missing")),
    }
}

fn depth(buf: &mut [u8], json: &Value) -> Result<usize, String> {
    let side = |name: &str| -> Result<Vec<(i64, i64)>, String> {
        items(&json[name])?
            .iter()
            .map(|level| Ok((mantissa(level.get(0))?, mantissa(level.get(1))?)))
            .collect()
    };
    let (bids, asks) = (side("bids")?, side("asks")?);
    let mut m = DepthResponseEncoder::wrap(buf).map_err(fail)?;
    m.last_update_id(int(json.get("lastUpdateId"))?)
        .price_exponent(PRICE_EXPONENT)
        .qty_exponent(QTY_EXPONENT);
    let mut g = m.bids(count_of(&bids)?).map_err(fail)?;
    for (price, qty) in bids {
        g.next_entry().map_err(fail)?.price(price).qty(qty);
    }
    let mut g = m.asks(count_of(&asks)?).map_err(fail)?;
    for (price, qty) in asks {
        g.next_entry().map_err(fail)?.price(price).qty(qty);
    }
    Ok(m.finish())
}

fn count_of<T>(items: &[T]) -> Result<u32, String> {
    u32::try_from(items.len()).map_err(fail)
}

fn trades(buf: &mut [u8], json: &Value) -> Result<usize, String> {
    let list = items(json)?;
    let mut m = TradesResponseEncoder::wrap(buf).map_err(fail)?;
    m.price_exponent(PRICE_EXPONENT).qty_exponent(QTY_EXPONENT);
    let mut g = m.trades(count(list)?).map_err(fail)?;
    for t in list {
        g.next_entry()
            .map_err(fail)?
            .id(int(t.get("id"))?)
            .price(mantissa(t.get("price"))?)
            .qty(mantissa(t.get("qty"))?)
            .quote_qty(mantissa(t.get("quoteQty"))?)
            .time(us(t.get("time"))?)
            .is_buyer_maker(boolean(t.get("isBuyerMaker"))?)
            .is_best_match(boolean(t.get("isBestMatch"))?);
    }
    Ok(m.finish())
}

fn agg_trades(buf: &mut [u8], json: &Value) -> Result<usize, String> {
    let list = items(json)?;
    let mut m = AggTradesResponseEncoder::wrap(buf).map_err(fail)?;
    m.price_exponent(PRICE_EXPONENT).qty_exponent(QTY_EXPONENT);
    let mut g = m.agg_trades(count(list)?).map_err(fail)?;
    for a in list {
        g.next_entry()
            .map_err(fail)?
            .agg_trade_id(int(a.get("a"))?)
            .price(mantissa(a.get("p"))?)
            .qty(mantissa(a.get("q"))?)
            .first_trade_id(int(a.get("f"))?)
            .last_trade_id(int(a.get("l"))?)
            .time(us(a.get("T"))?)
            .is_buyer_maker(boolean(a.get("m"))?)
            .is_best_match(boolean(a.get("M"))?);
    }
    Ok(m.finish())
}

fn klines(buf: &mut [u8], json: &Value) -> Result<usize, String> {
    let list = items(json)?;
    let mut m = KlinesResponseEncoder::wrap(buf).map_err(fail)?;
    m.price_exponent(PRICE_EXPONENT).qty_exponent(QTY_EXPONENT);
    let mut g = m.klines(count(list)?).map_err(fail)?;
    for k in list {
        g.next_entry()
            .map_err(fail)?
            .open_time(us(k.get(0))?)
            .open_price(mantissa(k.get(1))?)
            .high_price(mantissa(k.get(2))?)
            .low_price(mantissa(k.get(3))?)
            .close_price(mantissa(k.get(4))?)
            .volume(&mantissa128(k.get(5))?)
            .close_time(us(k.get(6))?)
            .quote_volume(&mantissa128(k.get(7))?)
            .num_trades(int(k.get(8))?)
            .taker_buy_base_volume(&mantissa128(k.get(9))?)
            .taker_buy_quote_volume(&mantissa128(k.get(10))?);
    }
    Ok(m.finish())
}

/// Rate limits, then each symbol's status, precisions and assets (no filters, permissions or
/// smart order routing: the simulator takes no orders).
fn exchange_info(buf: &mut [u8], json: &Value) -> Result<usize, String> {
    let limits = items(&json["rateLimits"])?;
    let symbols = items(&json["symbols"])?;
    let mut m = ExchangeInfoResponseEncoder::wrap(buf).map_err(fail)?;
    let mut g = m.rate_limits(count(limits)?).map_err(fail)?;
    for limit in limits {
        let interval_num = u8::try_from(int(limit.get("intervalNum"))?).map_err(fail)?;
        g.next_entry()
            .map_err(fail)?
            .rate_limit_type(RateLimitType::RequestWeight)
            .interval(RateLimitInterval::Minute)
            .interval_num(interval_num)
            .rate_limit(int(limit.get("limit"))?);
    }
    m.exchange_filters(0).map_err(fail)?;
    let mut g = m.symbols(count(symbols)?).map_err(fail)?;
    for s in symbols {
        let precision = u8::try_from(int(s.get("baseAssetPrecision"))?).map_err(fail)?;
        let entry = g.next_entry().map_err(fail)?;
        entry
            .status(status_of(text(s.get("status"))?))
            .base_asset_precision(precision)
            .quote_asset_precision(precision)
            .base_commission_precision(precision)
            .quote_commission_precision(precision)
            .order_types(OrderTypes::from_raw(0))
            .iceberg_allowed(BoolEnum::False)
            .oco_allowed(BoolEnum::False)
            .oto_allowed(BoolEnum::False)
            .quote_order_qty_market_allowed(BoolEnum::False)
            .allow_trailing_stop(BoolEnum::False)
            .cancel_replace_allowed(BoolEnum::False)
            .amend_allowed(BoolEnum::False)
            .is_spot_trading_allowed(boolean(s.get("isSpotTradingAllowed"))?)
            .is_margin_trading_allowed(BoolEnum::False)
            .default_self_trade_prevention_mode(SelfTradePreventionMode::None)
            .allowed_self_trade_prevention_modes(AllowedSelfTradePreventionModes::from_raw(0))
            .peg_instructions_allowed(None);
        entry.filters(0).map_err(fail)?;
        entry.permission_sets(0).map_err(fail)?;
        entry
            .symbol(text(s.get("symbol"))?.as_bytes())
            .map_err(fail)?
            .base_asset(text(s.get("baseAsset"))?.as_bytes())
            .map_err(fail)?
            .quote_asset(text(s.get("quoteAsset"))?.as_bytes())
            .map_err(fail)?;
    }
    m.sors(0).map_err(fail)?;
    Ok(m.finish())
}

#[cfg(test)]
mod tests {
    use super::super::exchange::{Exchange, ExchangeConfig};
    use super::super::rest::{Request, Response, SbeMode, WeightLimiter, handle};
    use crate::binance::rest::{DepthSnapshot, RestAggTrade, RestKline, RestTrade, SymbolListing};
    use crate::binance::rest_sbe as decode;

    const T0_MS: i64 = 1_700_000_000_000;
    const RUN_MS: i64 = 3_000;
    const NOW_MS: i64 = T0_MS + RUN_MS + 1;

    fn exchange() -> Exchange {
        let mut exchange = Exchange::new(ExchangeConfig {
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            ..Default::default()
        });
        let mut events = Vec::new();
        for ms in 0..=RUN_MS {
            exchange.advance((T0_MS + ms) * 1_000, &mut events);
            events.clear();
        }
        exchange
    }

    fn get(
        ex: &Exchange,
        target: &str,
        accept: &str,
        schema: Option<&str>,
        mode: SbeMode,
    ) -> Response {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method: "GET",
            path,
            query,
            accept: Some(accept),
            sbe_schema: schema,
        };
        handle(ex, &request, NOW_MS, &mut WeightLimiter::new(6_000), mode)
    }

    /// The same request in JSON and in SBE: (JSON body, SBE body).
    fn both(ex: &Exchange, target: &str) -> (Vec<u8>, Vec<u8>) {
        let json = get(ex, target, "application/json", None, SbeMode::Serve);
        let sbe = get(ex, target, "application/sbe", Some("3:5"), SbeMode::Serve);
        assert_eq!((json.status, sbe.status), (200, 200), "{target}");
        assert_eq!(sbe.header("Content-Type"), Some("application/sbe"));
        (json.body, sbe.body)
    }

    #[test]
    fn every_sbe_answer_decodes_to_the_json_answer() {
        let ex = exchange();
        let (json, sbe) = both(&ex, "/api/v3/depth?symbol=BTCUSDT&limit=5000");
        let (json, sbe): (DepthSnapshot, _) = (
            serde_json::from_slice(&json).expect("JSON"),
            decode::depth(&sbe).expect("SBE"),
        );
        assert!(json.bids.len() > 10 && json.asks.len() > 10);
        use crate::binance::decimal::mantissas;
        assert_eq!(json.last_update_id, sbe.last_update_id);
        assert_eq!(mantissas(&json.bids, -8, -8), mantissas(&sbe.bids, -8, -8));
        assert_eq!(mantissas(&json.asks, -8, -8), mantissas(&sbe.asks, -8, -8));

        for target in [
            "/api/v3/trades?symbol=BTCUSDT&limit=1000",
            "/api/v3/historicalTrades?symbol=ETHUSDT&fromId=3&limit=50",
        ] {
            let (json, sbe) = both(&ex, target);
            let json: Vec<RestTrade> = serde_json::from_slice(&json).expect("JSON");
            assert!(!json.is_empty());
            assert_eq!(json, decode::trades(&sbe).expect("SBE"), "{target}");
        }
        let (json, sbe) = both(&ex, "/api/v3/klines?symbol=BTCUSDT&interval=1s&limit=1000");
        let json: Vec<RestKline> = serde_json::from_slice(&json).expect("JSON");
        assert!(json.len() > 1 && json.iter().any(|k| k.count > 0));
        assert_eq!(json, decode::klines(&sbe).expect("SBE"));
        let (json, sbe) = both(&ex, "/api/v3/aggTrades?symbol=BTCUSDT&limit=1000");
        let json: Vec<RestAggTrade> = serde_json::from_slice(&json).expect("JSON");
        assert!(!json.is_empty());
        assert_eq!(json, decode::agg_trades(&sbe).expect("SBE"));
        let (json, sbe) = both(&ex, "/api/v3/exchangeInfo");
        #[derive(serde::Deserialize)]
        struct Info {
            symbols: Vec<SymbolListing>,
        }
        let json: Info = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(json.symbols.len(), 2);
        assert_eq!(json.symbols, decode::exchange_info(&sbe).expect("SBE"));
    }

    #[test]
    fn sbe_is_refused_asked_wrongly_or_marked_deprecated_as_binance_does() {
        let ex = exchange();
        let depth = "/api/v3/depth?symbol=BTCUSDT&limit=5";
        let refused = get(&ex, depth, "application/sbe", Some("3:5"), SbeMode::Refuse);
        assert_eq!(refused.status, 406);
        // JSON accepted too: JSON, whatever the mode.
        let both = get(
            &ex,
            depth,
            "application/sbe, application/json",
            Some("3:5"),
            SbeMode::Serve,
        );
        assert_eq!(both.status, 200);
        assert!(
            both.header("Content-Type")
                .is_some_and(|t| t.starts_with("application/json"))
        );
        for schema in [None, Some("3:9"), Some("1:0")] {
            let bad = get(&ex, depth, "application/sbe", schema, SbeMode::Serve);
            assert_eq!(bad.status, 400, "{schema:?}");
            let (code, msg) = decode::error(&bad.body).expect("an SBE error");
            assert_eq!(code, -1_177);
            assert!(msg.contains("X-MBX-SBE"), "{msg}");
        }
        let unknown = get(
            &ex,
            "/api/v3/depth?symbol=NOPE",
            "application/sbe",
            Some("3:5"),
            SbeMode::Serve,
        );
        assert_eq!(unknown.status, 400);
        assert_eq!(
            decode::error(&unknown.body),
            Some((-1_121, "Invalid symbol.".into()))
        );
        let deprecated = get(
            &ex,
            depth,
            "application/sbe",
            Some("3:5"),
            SbeMode::Deprecated,
        );
        assert_eq!(deprecated.status, 200);
        assert_eq!(deprecated.header(decode::DEPRECATED_HEADER), Some("true"));
        assert!(decode::depth(&deprecated.body).is_ok());
        // Endpoints without an SBE encoding here answer JSON.
        let time = get(
            &ex,
            "/api/v3/time",
            "application/sbe",
            Some("3:5"),
            SbeMode::Serve,
        );
        assert!(
            time.header("Content-Type")
                .is_some_and(|t| t.starts_with("application/json"))
        );
    }

    #[test]
    fn volumes_wider_than_i64_and_statuses_round_trip() {
        let volume = serde_json::json!("123456789012.34567890");
        let bytes = super::mantissa128(Some(&volume)).expect("a volume");
        assert_eq!(i128::from_le_bytes(bytes), 12_345_678_901_234_567_890);
        for bad in ["1.000000001", "-1", "x"] {
            assert!(
                super::mantissa128(Some(&serde_json::json!(bad))).is_err(),
                "{bad}"
            );
        }
        for name in ["TRADING", "HALT", "BREAK", "END_OF_DAY", "CANCEL_ONLY"] {
            assert_eq!(decode::status_name(decode::status_of(name)), name);
        }
        assert_eq!(
            decode::status_name(decode::status_of("AUCTION_MATCH")),
            "NON_REPRESENTABLE"
        );
    }
}
