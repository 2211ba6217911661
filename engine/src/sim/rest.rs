//! The REST API of the simulated exchange: Binance Spot's public market-data endpoints served
//! from the simulator's markets, Binance's request weights, 429s and IP bans, and unweighted
//! ground-truth endpoints for tests.
//!
//! Pure request handling (the quinn-proto split): [`handle`] takes a parsed [`Request`], the
//! [`Exchange`], the time and the client's [`WeightLimiter`], and returns a [`Response`]. The
//! network shell parses HTTP, keeps one [`WeightLimiter`] per client IP (Binance limits IPs,
//! not API keys) and writes the response. Bodies are JSON (`serde_json` without
//! `preserve_order`, so object keys come out sorted; values and array orders are Binance's).
//!
//! # Market-data endpoints (GET only)
//!
//! Weights ([`crate::binance::weights`], the table the engine's client budgets with), then
//! parameters (`?` optional; `limit` defaults to 500, max 1000, except `/depth`):
//! - `/api/v3/ping`, `/api/v3/time`: 1.
//! - `/api/v3/exchangeInfo`: 20; `symbol`?.
//! - `/api/v3/depth`: 5 for `limit` 1-100, 25 for 101-500, 50 for 501-1000, 250 for
//!   1001-5000; `symbol`, `limit` (default 100, max 5000).
//! - `/api/v3/trades`: 25; `symbol`, `limit`.
//! - `/api/v3/historicalTrades`: 25; `symbol`, `fromId`?, `limit`.
//! - `/api/v3/aggTrades`: 4; `symbol`, `fromId`?, `startTime`?, `endTime`?, `limit`.
//! - `/api/v3/klines`: 2; `symbol`, `interval`, `startTime`?, `endTime`?, `limit`.
//! - `/api/v3/ticker/24hr`: 2 with `symbol`, 80 without (every symbol).
//!
//! Everything is computed from the market's current book and its trade journal (the last
//! `journal_max` trades), so the answers are exact: `/depth` returns the top of the book at
//! `lastUpdateId = market.update_id()`, which is what `book_at(lastUpdateId)` rebuilds.
//!
//! Parameters and their errors (HTTP 400, Binance's codes):
//! - Query values are percent-decoded (`%XX`, `+`); the first occurrence of a name counts and an
//!   empty value counts as absent.
//! - `symbol`: missing -> -1102; not `^[A-Z0-9-_.]{1,20}$` -> -1100; unknown -> -1121.
//! - `limit`, `fromId`, `startTime`, `endTime`, `updateId`: decimal digits, else -1100. A
//!   `limit` of 0 is -1100; one above the endpoint's maximum is clamped to it (Binance documents
//!   this for `/depth`; the simulator does the same everywhere).
//! - `interval`: `1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d` (UTC-aligned); missing -> -1102,
//!   other values (including `3d 1w 1M`) -> -1120.
//! - Selection: with `fromId` or `startTime`, the first `limit` items from there; otherwise the
//!   last `limit` items (up to `endTime` if given). All given filters apply together.
//! - `aggTrades` aggregates consecutive trades with the same price, side and time. **An
//!   aggregate's id `a` is the id of its first trade `f`**, so aggregate ids grow but are not
//!   consecutive; `fromId` selects aggregates with `a >= fromId`. An aggregate cut by the start of
//!   the journal shows only its journaled trades.
//! - `klines`: `openTime` within `[startTime, endTime]`. Intervals without trades between two with
//!   trades appear flat at the previous close with zero volume, as Binance publishes them.
//! - `ticker/24hr`: the trades of `[now - 24 h, ...]`; with none, prices are 0 and
//!   `firstId`/`lastId` are -1. `prevClosePrice` is the last price before the window (0 if none).
//!
//! Unknown paths get HTTP 404 with `{}`, other methods than GET HTTP 405 with `{}` and `Allow`.
//!
//! # Request weight, 429 and bans
//!
//! Every market-data response, errors included, carries `X-MBX-USED-WEIGHT-1M`: the weight used
//! in the current window. Windows are fixed minutes aligned to the clock (`now_ms / 60000`), as
//! Binance's. Each request adds its weight, also when refused with 429, so the header can exceed
//! the limit. Past the limit (6000, or [`WeightLimiter::new`]'s):
//! - HTTP 429, code -1003, `Retry-After` = seconds to the next window (rounded up);
//! - **ban rule**: after its first 429 in a window, a client may send
//!   [`REQUESTS_AFTER_429_MAX`] (10) more requests in that window (all 429); the 11th is answered
//!   HTTP 418 and starts a ban. Bans last [`BAN_FIRST_MS`] (2 min), doubling with each later ban
//!   of the same limiter (it never forgets), capped at [`BAN_MAX_MS`] (3 days);
//! - while banned: HTTP 418, code -1003, "... IP banned until `<ms>` ...", `Retry-After` = seconds
//!   to the ban's end (rounded up). Banned requests add no weight and do not extend the ban.
//!
//! # Ground truth (unweighted, never limited; not part of Binance's API)
//!
//! - `/admin/trades?symbol=BTCUSDT&fromId=N&limit=M`: every journaled trade with `id >= N`
//!   (default: all), at most `M` (default 100000), oldest first, as `[{"id", "price", "qty",
//!   "priceMantissa", "qtyMantissa", "isBuyerMaker", "time"}]`, mantissas at exponent -8 and
//!   `time` in **microseconds**.
//! - `/admin/book?symbol=BTCUSDT&updateId=N` (default: the current id): `{"updateId", "bids":
//!   [[priceMantissa, qtyMantissa], ...], "asks": ...}`, full depth, exact; HTTP 404
//!   `{"code":-1,"msg":"update id not in the journal"}` when the journal cannot rebuild it.
//! - `/admin/symbols`: `[{"symbol", "updateId", "nextTradeId"}]`.
//!
//! The server's `/admin/listing?symbol=S&status=HALT&quoteVolume=123.5` changes what
//! exchangeInfo (`status`) and ticker/24hr (`quoteVolume`) report of a symbol
//! ([`super::exchange::Listing`]); the market itself goes on.

use std::collections::VecDeque;

use sbe_runtime::Decimal;
use serde_json::{Value, json};

use super::book::Side;
use super::exchange::{Exchange, Listing};
use super::market::{Market, PRICE_EXPONENT, QTY_EXPONENT, Trade};
use super::rest_sbe;
use crate::binance::rest_sbe::DEPRECATED_HEADER;

pub use crate::binance::rate_limit::{
    BAN_FIRST_MS, BAN_MAX_MS, REQUEST_WEIGHT_PER_MINUTE, REQUESTS_AFTER_429_MAX, USED_WEIGHT_HEADER,
};
use crate::binance::rate_limit::{
    RETRY_AFTER_HEADER, STATUS_BANNED, STATUS_RATE_LIMITED, WINDOW_MS,
};
use crate::binance::weights;

/// Doublings after which a ban is surely at the cap (keeps the shift in range).
const BAN_DOUBLINGS_MAX: u32 = 16;
const _: () = assert!(BAN_FIRST_MS << BAN_DOUBLINGS_MAX >= BAN_MAX_MS);

const DEPTH_LIMIT_DEFAULT: usize = weights::DEPTH_LIMIT_DEFAULT as usize;
const DEPTH_LIMIT_MAX: usize = weights::DEPTH_LIMIT_MAX as usize;
/// Default and maximum `limit` of trades, aggTrades and klines.
const LIST_LIMIT_DEFAULT: usize = weights::LIST_LIMIT_DEFAULT as usize;
const LIST_LIMIT_MAX: usize = weights::LIST_LIMIT_MAX as usize;
const ADMIN_TRADES_LIMIT_DEFAULT: usize = 100_000;
const TICKER_WINDOW_MS: i64 = 24 * 3_600_000;
const US_PER_MS: i64 = 1_000;

/// Kline intervals and their lengths.
const KLINE_INTERVALS: [(&str, i64); 13] = [
    ("1s", 1_000),
    ("1m", 60_000),
    ("3m", 3 * 60_000),
    ("5m", 5 * 60_000),
    ("15m", 15 * 60_000),
    ("30m", 30 * 60_000),
    ("1h", 3_600_000),
    ("2h", 2 * 3_600_000),
    ("4h", 4 * 3_600_000),
    ("6h", 6 * 3_600_000),
    ("8h", 8 * 3_600_000),
    ("12h", 12 * 3_600_000),
    ("1d", 24 * 3_600_000),
];

/// Quote assets recognised when splitting a symbol, longest first where one ends another.
const QUOTE_ASSETS: [&str; 6] = ["FDUSD", "USDT", "USDC", "BTC", "ETH", "BNB"];
/// exchangeInfo filter bounds (informational; the simulator does not take orders).
const FILTER_PRICE_MAX: i64 = 1_000_000 * UNIT as i64;
const FILTER_QTY_MAX: i64 = 9_000 * UNIT as i64;

// Quote quantities (price x qty) and averages assume both exponents are -8.
const _: () = assert!(PRICE_EXPONENT == -8 && QTY_EXPONENT == -8);
/// One unit at exponent -8.
const UNIT: i128 = 100_000_000;

const CONTENT_TYPE: (&str, &str) = ("Content-Type", "application/json;charset=UTF-8");
const SBE_CONTENT_TYPE: &str = "application/sbe";
const HTTP_NOT_ACCEPTABLE: u16 = 406;
const SYMBOL_RANGE: &str = "^[A-Z0-9-_.]{1,20}$";
const DIGITS_RANGE: &str = "^[0-9]{1,20}$";
const HTTP_OK: u16 = 200;
const HTTP_BAD_REQUEST: u16 = 400;
const HTTP_NOT_FOUND: u16 = 404;
const HTTP_METHOD_NOT_ALLOWED: u16 = 405;

/// A parsed HTTP request, as the network shell hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET`, `POST`, ... (only `GET` is served).
    pub method: &'a str,
    /// The path without the query, e.g. `/api/v3/depth`.
    pub path: &'a str,
    /// The query after `?` (without it), still percent-encoded: `k=v&k2=v2`.
    pub query: &'a str,
    /// The `Accept` header, if any.
    pub accept: Option<&'a str>,
    /// The `X-MBX-SBE` header (`<schema id>:<version>`), if any.
    pub sbe_schema: Option<&'a str>,
}

/// Whether the simulator answers SBE to requests that ask only for it (`[rest] sbe`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SbeMode {
    /// Serve SBE (`"on"`).
    #[default]
    Serve,
    /// SBE is disabled: HTTP 406, as Binance answers then (`"off"`).
    Refuse,
    /// Serve SBE, marking schema 3:5 deprecated with `X-MBX-SBE-DEPRECATED` (`"deprecated"`).
    Deprecated,
}

impl SbeMode {
    /// `"on"`, `"off"` or `"deprecated"`.
    pub fn parse(text: &str) -> Option<SbeMode> {
        match text {
            "on" => Some(SbeMode::Serve),
            "off" => Some(SbeMode::Refuse),
            "deprecated" => Some(SbeMode::Deprecated),
            _ => None,
        }
    }
}

/// An HTTP response with a JSON or SBE body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, `Content-Type` first.
    pub headers: Vec<(String, String)>,
    /// JSON text or SBE bytes, as `Content-Type` says.
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: &Value) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE.0.to_string(), CONTENT_TYPE.1.to_string())],
            body: body.to_string().into_bytes(),
        }
    }

    fn sbe(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE.0.to_string(), SBE_CONTENT_TYPE.to_string())],
            body,
        }
    }

    fn error(status: u16, code: i64, msg: &str) -> Response {
        Response::json(status, &json!({ "code": code, "msg": msg }))
    }

    fn with_header(mut self, name: &str, value: String) -> Response {
        self.headers.push((name.to_string(), value));
        self
    }

    /// The value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the limiter decided about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Serve it.
    Admitted,
    /// Over the weight limit: HTTP 429.
    Limited {
        /// Seconds to the next window.
        retry_after_s: i64,
    },
    /// Banned: HTTP 418.
    Banned {
        /// When the ban ends, ms since the epoch.
        until_ms: i64,
        /// Seconds to that.
        retry_after_s: i64,
    },
}

/// Binance's `REQUEST_WEIGHT` limit for one client IP (the shell keeps one per IP), with the
/// 429-then-418 escalation described in the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightLimiter {
    limit_per_minute: u32,
    /// Start of the current window, a multiple of `WINDOW_MS`; `i64::MIN` before any request.
    window_start_ms: i64,
    /// Weight of the requests in the current window, refused ones included (saturating).
    used_weight: u32,
    /// 429s sent in the current window.
    rejections: u32,
    /// End of the current or last ban; a ban is on while `now < banned_until_ms`.
    banned_until_ms: i64,
    /// Bans so far; the next lasts `BAN_FIRST_MS << bans` (capped).
    bans: u32,
}

impl WeightLimiter {
    /// A limiter allowing `limit_per_minute` weight per window ([`REQUEST_WEIGHT_PER_MINUTE`]
    /// on Binance; tests use small limits).
    pub fn new(limit_per_minute: u32) -> WeightLimiter {
        WeightLimiter {
            limit_per_minute,
            window_start_ms: i64::MIN,
            used_weight: 0,
            rejections: 0,
            banned_until_ms: i64::MIN,
            bans: 0,
        }
    }

    /// The weight allowed per minute.
    pub fn limit_per_minute(&self) -> u32 {
        self.limit_per_minute
    }

    /// The weight used in the window of the last [`WeightLimiter::admit`].
    pub fn used_weight(&self) -> u32 {
        self.used_weight
    }

    /// When the ban in force at `now_ms` ends, if any.
    pub fn banned_until_ms(&self, now_ms: i64) -> Option<i64> {
        (now_ms < self.banned_until_ms).then_some(self.banned_until_ms)
    }

    /// Counts a request of `weight` at `now_ms` and decides whether to serve it.
    pub fn admit(&mut self, weight: u32, now_ms: i64) -> Admission {
        let window_start_ms = now_ms - now_ms.rem_euclid(WINDOW_MS);
        if window_start_ms > self.window_start_ms {
            self.window_start_ms = window_start_ms;
            self.used_weight = 0;
            self.rejections = 0;
        }
        if let Some(until_ms) = self.banned_until_ms(now_ms) {
            return Admission::Banned {
                until_ms,
                retry_after_s: seconds_until(now_ms, until_ms),
            };
        }
        self.used_weight = self.used_weight.saturating_add(weight);
        if self.used_weight <= self.limit_per_minute {
            return Admission::Admitted;
        }
        if self.rejections > REQUESTS_AFTER_429_MAX {
            let ban_ms = (BAN_FIRST_MS << self.bans.min(BAN_DOUBLINGS_MAX)).min(BAN_MAX_MS);
            self.bans = self.bans.saturating_add(1);
            self.banned_until_ms = now_ms + ban_ms;
            return Admission::Banned {
                until_ms: self.banned_until_ms,
                retry_after_s: seconds_until(now_ms, self.banned_until_ms),
            };
        }
        self.rejections += 1;
        Admission::Limited {
            retry_after_s: seconds_until(now_ms, self.window_start_ms + WINDOW_MS),
        }
    }
}

/// Whole seconds from `now_ms` to `until_ms`, rounded up.
fn seconds_until(now_ms: i64, until_ms: i64) -> i64 {
    ((until_ms - now_ms).max(0) + 999) / 1_000
}

/// Answers one request at `now_ms`; market-data requests are counted by `limiter` (the
/// client IP's). A request whose `Accept` asks only for SBE gets SBE as `sbe` says.
pub fn handle(
    exchange: &Exchange,
    request: &Request,
    now_ms: i64,
    limiter: &mut WeightLimiter,
    sbe: SbeMode,
) -> Response {
    let Some(route) = Route::from_path(request.path) else {
        return Response::json(HTTP_NOT_FOUND, &json!({}));
    };
    if request.method != "GET" {
        return Response::json(HTTP_METHOD_NOT_ALLOWED, &json!({}))
            .with_header("Allow", "GET".to_string());
    }
    let params = Params::parse(request.query);
    let endpoint = match route {
        Route::Admin(admin) => return respond(ground_truth(exchange, admin, &params)),
        Route::Public(endpoint) => endpoint,
    };
    let wants_sbe = request.accept.is_some_and(asks_only_sbe);
    if wants_sbe && sbe == SbeMode::Refuse {
        return Response::json(HTTP_NOT_ACCEPTABLE, &json!({}));
    }
    let limit = limiter.limit_per_minute();
    let response = match limiter.admit(endpoint.weight(&params), now_ms) {
        Admission::Admitted if wants_sbe => {
            let answer = market_data(exchange, endpoint, &params, now_ms, limit);
            respond_sbe(endpoint, request.sbe_schema, answer, sbe)
        }
        Admission::Admitted => respond(market_data(exchange, endpoint, &params, now_ms, limit)),
        Admission::Limited { retry_after_s } => too_much_weight(limit, retry_after_s),
        Admission::Banned {
            until_ms,
            retry_after_s,
        } => banned(until_ms, retry_after_s),
    };
    response.with_header(USED_WEIGHT_HEADER, limiter.used_weight().to_string())
}

/// Whether `Accept` holds `application/sbe` and not `application/json` (with both, Binance
/// answers JSON).
fn asks_only_sbe(accept: &str) -> bool {
    let types = || {
        accept
            .split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim())
    };
    types().any(|t| t == SBE_CONTENT_TYPE) && !types().any(|t| t == "application/json")
}

/// An SBE answer: the JSON answer encoded (see [`super::rest_sbe`]), errors as SBE
/// `ErrorResponse`s; a missing or bad `X-MBX-SBE` is an SBE error (HTTP 400). Endpoints
/// without an SBE encoding here (ping, time, ticker) answer JSON.
fn respond_sbe(
    endpoint: Endpoint,
    schema: Option<&str>,
    answer: Result<Value, ApiError>,
    mode: SbeMode,
) -> Response {
    let sbe_error = |status, code, msg: &str| Response::sbe(status, rest_sbe::error(code, msg));
    let wanted = crate::binance::rest_sbe::schema_header_value();
    if schema != Some(wanted.as_str()) {
        let msg = format!("Invalid X-MBX-SBE header {schema:?}; this server speaks {wanted}.");
        return sbe_error(HTTP_BAD_REQUEST, -1_177, &msg);
    }
    let response = match (answer, endpoint.sbe_answer()) {
        (Err(error), _) => {
            let (status, code, msg) = error.parts();
            sbe_error(status, code, &msg)
        }
        (Ok(value), None) => Response::json(HTTP_OK, &value),
        (Ok(value), Some(kind)) => match rest_sbe::encode(kind, &value) {
            Ok(body) => Response::sbe(HTTP_OK, body),
            Err(why) => sbe_error(500, -1_000, &why),
        },
    };
    if mode == SbeMode::Deprecated {
        return response.with_header(DEPRECATED_HEADER, "true".to_string());
    }
    response
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => Response::json(HTTP_OK, &body),
        Err(error) => error.response(),
    }
}

fn too_much_weight(limit: u32, retry_after_s: i64) -> Response {
    let msg = format!(
        "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. \
         Please use WebSocket Streams for live updates to avoid polling the API."
    );
    Response::error(STATUS_RATE_LIMITED, -1003, &msg)
        .with_header(RETRY_AFTER_HEADER, retry_after_s.to_string())
}

fn banned(until_ms: i64, retry_after_s: i64) -> Response {
    let msg = format!(
        "Way too much request weight used; IP banned until {until_ms}. \
         Please use WebSocket Streams for live updates to avoid bans."
    );
    Response::error(STATUS_BANNED, -1003, &msg)
        .with_header(RETRY_AFTER_HEADER, retry_after_s.to_string())
}

/// A request the endpoint refuses, as Binance words it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ApiError {
    /// -1102: a mandatory parameter is missing or empty.
    Missing(&'static str),
    /// -1100: a parameter does not match its pattern.
    IllegalCharacters {
        name: &'static str,
        legal: &'static str,
    },
    /// -1100: `limit` is 0.
    LimitOutOfRange { max: usize },
    /// -1121.
    InvalidSymbol,
    /// -1120.
    InvalidInterval,
    /// Ground truth: `book_at` cannot rebuild that update id.
    NotInJournal,
}

impl ApiError {
    fn response(&self) -> Response {
        let (status, code, msg) = self.parts();
        Response::error(status, code, &msg)
    }

    /// HTTP status, Binance's code and message.
    fn parts(&self) -> (u16, i64, String) {
        match self {
            ApiError::Missing(name) => (
                HTTP_BAD_REQUEST,
                -1102,
                format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
            ),
            ApiError::IllegalCharacters { name, legal } => (
                HTTP_BAD_REQUEST,
                -1100,
                format!(
                    "Illegal characters found in parameter '{name}'; legal range is '{legal}'."
                ),
            ),
            ApiError::LimitOutOfRange { max } => (
                HTTP_BAD_REQUEST,
                -1100,
                format!("Illegal characters found in parameter 'limit'; legal range is '1-{max}'."),
            ),
            ApiError::InvalidSymbol => (HTTP_BAD_REQUEST, -1121, "Invalid symbol.".to_string()),
            ApiError::InvalidInterval => (HTTP_BAD_REQUEST, -1120, "Invalid interval.".to_string()),
            ApiError::NotInJournal => (
                HTTP_NOT_FOUND,
                -1,
                "update id not in the journal".to_string(),
            ),
        }
    }
}

/// A path the simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Public(Endpoint),
    Admin(Admin),
}

/// Binance's weighted market-data endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Ping,
    Time,
    ExchangeInfo,
    Depth,
    Trades,
    HistoricalTrades,
    AggTrades,
    Klines,
    Ticker24hr,
}

/// The unweighted ground-truth endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admin {
    Trades,
    Book,
    Symbols,
}

const ROUTES: [(&str, Route); 12] = [
    ("/api/v3/ping", Route::Public(Endpoint::Ping)),
    ("/api/v3/time", Route::Public(Endpoint::Time)),
    (
        "/api/v3/exchangeInfo",
        Route::Public(Endpoint::ExchangeInfo),
    ),
    ("/api/v3/depth", Route::Public(Endpoint::Depth)),
    ("/api/v3/trades", Route::Public(Endpoint::Trades)),
    (
        "/api/v3/historicalTrades",
        Route::Public(Endpoint::HistoricalTrades),
    ),
    ("/api/v3/aggTrades", Route::Public(Endpoint::AggTrades)),
    ("/api/v3/klines", Route::Public(Endpoint::Klines)),
    ("/api/v3/ticker/24hr", Route::Public(Endpoint::Ticker24hr)),
    ("/admin/trades", Route::Admin(Admin::Trades)),
    ("/admin/book", Route::Admin(Admin::Book)),
    ("/admin/symbols", Route::Admin(Admin::Symbols)),
];

impl Route {
    fn from_path(path: &str) -> Option<Route> {
        ROUTES.iter().find(|(p, _)| *p == path).map(|&(_, r)| r)
    }
}

impl Endpoint {
    /// The SBE message this endpoint answers with, if the simulator encodes it.
    fn sbe_answer(self) -> Option<rest_sbe::Answer> {
        match self {
            Endpoint::ExchangeInfo => Some(rest_sbe::Answer::ExchangeInfo),
            Endpoint::Depth => Some(rest_sbe::Answer::Depth),
            Endpoint::Trades | Endpoint::HistoricalTrades => Some(rest_sbe::Answer::Trades),
            Endpoint::AggTrades => Some(rest_sbe::Answer::AggTrades),
            Endpoint::Klines => Some(rest_sbe::Answer::Klines),
            Endpoint::Ping | Endpoint::Time | Endpoint::Ticker24hr => None,
        }
    }

    /// Binance's request weight ([`weights`]); known before the parameters are validated, so
    /// refused requests are charged too (an unparsable depth `limit` is charged as the
    /// default).
    fn weight(self, params: &Params) -> u32 {
        let endpoint = match self {
            Endpoint::Ping => weights::Endpoint::Ping,
            Endpoint::Time => weights::Endpoint::Time,
            Endpoint::ExchangeInfo => weights::Endpoint::ExchangeInfo,
            Endpoint::Depth => weights::Endpoint::Depth {
                limit: weights::charged_depth_limit(
                    number_param(params, "limit")
                        .ok()
                        .flatten()
                        .and_then(|l| u64::try_from(l).ok())
                        .filter(|&l| l != 0),
                ),
            },
            Endpoint::Trades => weights::Endpoint::Trades,
            Endpoint::HistoricalTrades => weights::Endpoint::HistoricalTrades,
            Endpoint::AggTrades => weights::Endpoint::AggTrades,
            Endpoint::Klines => weights::Endpoint::Klines,
            Endpoint::Ticker24hr => weights::Endpoint::Ticker24hr {
                one_symbol: params.get("symbol").is_some(),
            },
        };
        endpoint.weight()
    }
}

fn market_data(
    exchange: &Exchange,
    endpoint: Endpoint,
    params: &Params,
    now_ms: i64,
    weight_limit: u32,
) -> Result<Value, ApiError> {
    match endpoint {
        Endpoint::Ping => Ok(json!({})),
        Endpoint::Time => Ok(json!({ "serverTime": now_ms })),
        Endpoint::ExchangeInfo => exchange_info(exchange, params, now_ms, weight_limit),
        Endpoint::Depth => depth(exchange, params),
        Endpoint::Trades => recent_trades(exchange, params),
        Endpoint::HistoricalTrades => historical_trades(exchange, params),
        Endpoint::AggTrades => agg_trades(exchange, params),
        Endpoint::Klines => klines(exchange, params),
        Endpoint::Ticker24hr => ticker_24hr(exchange, params, now_ms),
    }
}

/// Decoded query parameters in request order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    fn parse(query: &str) -> Params {
        let pairs = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect();
        Params { pairs }
    }

    /// The first value of `name`, if present and not empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// The first value of `name` in a query string (without `?`), percent-decoded like every
/// parameter; `None` when the name is absent.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

/// Decodes `%XX` and `+`; a malformed escape stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits are at most 0xFF.
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The market of the mandatory `symbol`.
fn symbol_param<'e>(exchange: &'e Exchange, params: &Params) -> Result<&'e Market, ApiError> {
    let symbol = params.get("symbol").ok_or(ApiError::Missing("symbol"))?;
    let legal = symbol.len() <= 20
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !legal {
        return Err(ApiError::IllegalCharacters {
            name: "symbol",
            legal: SYMBOL_RANGE,
        });
    }
    let index = exchange
        .symbol_index(symbol)
        .ok_or(ApiError::InvalidSymbol)?;
    Ok(exchange.market(index))
}

/// An optional non-negative integer parameter.
fn number_param(params: &Params, name: &'static str) -> Result<Option<i64>, ApiError> {
    let Some(text) = params.get(name) else {
        return Ok(None);
    };
    let illegal = ApiError::IllegalCharacters {
        name,
        legal: DIGITS_RANGE,
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(illegal);
    }
    text.parse().map(Some).map_err(|_| illegal)
}

/// `limit`: `default` when absent, clamped to `max`, never 0.
fn limit_param(params: &Params, default: usize, max: usize) -> Result<usize, ApiError> {
    match number_param(params, "limit")? {
        None => Ok(default),
        Some(0) => Err(ApiError::LimitOutOfRange { max }),
        Some(limit) => Ok(usize::try_from(limit).unwrap_or(usize::MAX).min(max)),
    }
}

fn list_limit(params: &Params) -> Result<usize, ApiError> {
    limit_param(params, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
}

fn interval_param(params: &Params) -> Result<i64, ApiError> {
    let name = params
        .get("interval")
        .ok_or(ApiError::Missing("interval"))?;
    KLINE_INTERVALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, ms)| ms)
        .ok_or(ApiError::InvalidInterval)
}

/// A mantissa at exponent -8 as Binance prints it (`"69769.88000000"`).
fn decimal(mantissa: i64) -> String {
    Decimal::new(mantissa, PRICE_EXPONENT).to_string()
}

/// A wide mantissa (sums and products) at exponent -8.
fn decimal_wide(mantissa: i128) -> String {
    match i64::try_from(mantissa) {
        Ok(narrow) => decimal(narrow),
        Err(_) => {
            let sign = if mantissa < 0 { "-" } else { "" };
            let magnitude = mantissa.unsigned_abs();
            let unit = UNIT.unsigned_abs();
            format!("{sign}{}.{:08}", magnitude / unit, magnitude % unit)
        }
    }
}

/// `price x qty` at exponent -8, truncated (exact whenever tick x lot is a multiple of 1e-8,
/// which holds for every simulated symbol).
fn quote_qty(price: i64, qty: i64) -> i128 {
    i128::from(price) * i128::from(qty) / UNIT
}

fn time_ms(trade: &Trade) -> i64 {
    trade.time_us.div_euclid(US_PER_MS)
}

/// Keeps the last `limit` items.
fn keep_last<T>(items: impl Iterator<Item = T>, limit: usize) -> Vec<T> {
    let mut kept = VecDeque::with_capacity(limit.min(LIST_LIMIT_MAX));
    for item in items {
        if kept.len() == limit {
            kept.pop_front();
        }
        if limit > 0 {
            kept.push_back(item);
        }
    }
    kept.into()
}

/// Base and quote asset of a symbol (`ETHBTC` -> `ETH`, `BTC`); an unknown quote leaves the
/// whole symbol as the base and an empty quote.
fn split_symbol(symbol: &str) -> (&str, &str) {
    QUOTE_ASSETS
        .iter()
        .find_map(|quote| {
            let base = symbol.strip_suffix(quote)?;
            (!base.is_empty()).then_some((base, *quote))
        })
        .unwrap_or((symbol, ""))
}

fn exchange_info(
    exchange: &Exchange,
    params: &Params,
    now_ms: i64,
    weight_limit: u32,
) -> Result<Value, ApiError> {
    let symbols: Vec<Value> = if params.get("symbol").is_some() {
        let market = symbol_param(exchange, params)?;
        vec![symbol_info(
            market,
            &exchange.listing(&market.spec().symbol),
        )]
    } else {
        (0..exchange.symbols().len())
            .map(|i| {
                symbol_info(
                    exchange.market(i),
                    &exchange.listing(&exchange.symbols()[i]),
                )
            })
            .collect()
    };
    Ok(json!({
        "timezone": "UTC",
        "serverTime": now_ms,
        "rateLimits": [{
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": weight_limit,
        }],
        "exchangeFilters": [],
        "symbols": symbols,
    }))
}

fn symbol_info(market: &Market, listing: &Listing) -> Value {
    let spec = market.spec();
    let (base, quote) = split_symbol(&spec.symbol);
    let precision = -PRICE_EXPONENT;
    json!({
        "symbol": spec.symbol,
        "status": listing.status,
        "baseAsset": base,
        "baseAssetPrecision": precision,
        "quoteAsset": quote,
        "quotePrecision": precision,
        "quoteAssetPrecision": precision,
        "isSpotTradingAllowed": true,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": decimal(spec.tick),
                "maxPrice": decimal(FILTER_PRICE_MAX),
                "tickSize": decimal(spec.tick),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": decimal(spec.lot),
                "maxQty": decimal(FILTER_QTY_MAX),
                "stepSize": decimal(spec.lot),
            },
        ],
    })
}

/// The top `limit` levels and the update id they are at (the current book, so `book_at` of
/// that id rebuilds the same levels).
fn depth(exchange: &Exchange, params: &Params) -> Result<Value, ApiError> {
    let market = symbol_param(exchange, params)?;
    let limit = limit_param(params, DEPTH_LIMIT_DEFAULT, DEPTH_LIMIT_MAX)?;
    let levels = |side| -> Vec<Value> {
        let levels = market.book().levels(side, limit);
        levels
            .into_iter()
            .map(|(price, qty)| json!([decimal(price), decimal(qty)]))
            .collect()
    };
    Ok(json!({
        "lastUpdateId": market.update_id(),
        "bids": levels(Side::Bid),
        "asks": levels(Side::Ask),
    }))
}

fn trades_json<'a>(trades: impl Iterator<Item = &'a Trade>) -> Value {
    let trade_json = |t: &Trade| {
        json!({
            "id": t.id,
            "price": decimal(t.price),
            "qty": decimal(t.qty),
            "quoteQty": decimal_wide(quote_qty(t.price, t.qty)),
            "time": time_ms(t),
            "isBuyerMaker": t.buyer_maker,
            "isBestMatch": true,
        })
    };
    Value::Array(trades.map(trade_json).collect())
}

/// The last `limit` journaled trades, oldest first (trade ids are consecutive).
fn last_trades(market: &Market, limit: usize) -> impl Iterator<Item = &Trade> {
    let count = i64::try_from(limit).unwrap_or(i64::MAX);
    market.trades_from(market.next_trade_id().saturating_sub(count))
}

fn recent_trades(exchange: &Exchange, params: &Params) -> Result<Value, ApiError> {
    let market = symbol_param(exchange, params)?;
    let limit = list_limit(params)?;
    Ok(trades_json(last_trades(market, limit)))
}

fn historical_trades(exchange: &Exchange, params: &Params) -> Result<Value, ApiError> {
    let market = symbol_param(exchange, params)?;
    let limit = list_limit(params)?;
    Ok(match number_param(params, "fromId")? {
        Some(from_id) => trades_json(market.trades_from(from_id).take(limit)),
        None => trades_json(last_trades(market, limit)),
    })
}

/// Consecutive trades with the same price, side and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Aggregate {
    /// The first trade; its id is the aggregate's id.
    first: Trade,
    last_id: i64,
    /// Total quantity (a sum of a few trades of one matching event: fits an i64).
    qty: i64,
}

/// Groups consecutive trades into aggregates, oldest first.
fn aggregates<'a>(trades: impl Iterator<Item = &'a Trade>) -> impl Iterator<Item = Aggregate> {
    let mut trades = trades.peekable();
    std::iter::from_fn(move || {
        let first = *trades.next()?;
        let mut aggregate = Aggregate {
            first,
            last_id: first.id,
            qty: first.qty,
        };
        let same = |t: &&Trade| {
            (t.price, t.buyer_maker, t.time_us) == (first.price, first.buyer_maker, first.time_us)
        };
        while let Some(next) = trades.next_if(same) {
            aggregate.last_id = next.id;
            aggregate.qty = aggregate.qty.saturating_add(next.qty);
        }
        Some(aggregate)
    })
}

fn agg_trades(exchange: &Exchange, params: &Params) -> Result<Value, ApiError> {
    let market = symbol_param(exchange, params)?;
    let limit = list_limit(params)?;
    let from_id = number_param(params, "fromId")?;
    let start_ms = number_param(params, "startTime")?;
    let end_ms = number_param(params, "endTime")?;
    // Start one trade early: the aggregate holding trade `fromId - 1` has an id below `fromId`
    // and is dropped, so an aggregate that `fromId` falls inside is skipped whole.
    let trades = market
        .trades_from(from_id.map_or(i64::MIN, |id| id.saturating_sub(1)))
        .filter(|t| start_ms.is_none_or(|s| time_ms(t) >= s))
        .filter(|t| end_ms.is_none_or(|e| time_ms(t) <= e));
    let selected = aggregates(trades).filter(|a| from_id.is_none_or(|id| a.first.id >= id));
    let selected: Vec<Aggregate> = if from_id.is_some() || start_ms.is_some() {
        selected.take(limit).collect()
    } else {
        keep_last(selected, limit)
    };
    let agg_json = |a: &Aggregate| {
        json!({
            "a": a.first.id,
            "p": decimal(a.first.price),
            "q": decimal(a.qty),
            "f": a.first.id,
            "l": a.last_id,
            "T": time_ms(&a.first),
            "m": a.first.buyer_maker,
            "M": true,
        })
    };
    Ok(Value::Array(selected.iter().map(agg_json).collect()))
}

/// One kline, mantissas at exponent -8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candle {
    open_time_ms: i64,
    open: i64,
    high: i64,
    low: i64,
    close: i64,
    volume: i128,
    quote_volume: i128,
    trades: i64,
    taker_buy_volume: i128,
    taker_buy_quote_volume: i128,
}

impl Candle {
    /// A candle without trades, all prices at `price`.
    fn flat(open_time_ms: i64, price: i64) -> Candle {
        Candle {
            open_time_ms,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: 0,
            quote_volume: 0,
            trades: 0,
            taker_buy_volume: 0,
            taker_buy_quote_volume: 0,
        }
    }

    fn add(&mut self, trade: &Trade) {
        let quote = quote_qty(trade.price, trade.qty);
        self.high = self.high.max(trade.price);
        self.low = self.low.min(trade.price);
        self.close = trade.price;
        self.volume += i128::from(trade.qty);
        self.quote_volume += quote;
        self.trades += 1;
        if !trade.buyer_maker {
            self.taker_buy_volume += i128::from(trade.qty);
            self.taker_buy_quote_volume += quote;
        }
    }
}

/// Candles of `interval_ms` over time-ordered trades, oldest first; intervals without trades
/// between two with trades (or after `previous`, the candle before the first trade's) come
/// out flat at the previous close.
fn candles<'a>(
    trades: impl Iterator<Item = &'a Trade>,
    interval_ms: i64,
    mut previous: Option<Candle>,
) -> impl Iterator<Item = Candle> {
    let bucket = move |t: &Trade| time_ms(t) - time_ms(t).rem_euclid(interval_ms);
    let mut trades = trades.peekable();
    std::iter::from_fn(move || {
        let first = **trades.peek()?;
        let open_time_ms = bucket(&first);
        let candle = match previous {
            Some(p) if p.open_time_ms + interval_ms < open_time_ms => {
                Candle::flat(p.open_time_ms + interval_ms, p.close)
            }
            _ => {
                let mut candle = Candle::flat(open_time_ms, first.price);
                while let Some(t) = trades.next_if(|t| bucket(t) == open_time_ms) {
                    candle.add(t);
                }
                candle
            }
        };
        previous = Some(candle);
        Some(candle)
    })
}

fn klines(exchange: &Exchange, params: &Params) -> Result<Value, ApiError> {
    let market = symbol_param(exchange, params)?;
    let interval_ms = interval_param(params)?;
    let limit = list_limit(params)?;
    let start_ms = number_param(params, "startTime")?;
    let end_ms = number_param(params, "endTime")?;
    // A candle opening at or after the start holds only trades at or after it; intervals from
    // the start to the first trade come out flat at the last price before the start (Binance
    // answers every interval, traded or not).
    let trades = market
        .trades_from(i64::MIN)
        .filter(|t| start_ms.is_none_or(|s| time_ms(t) >= s));
    let before = start_ms.and_then(|s| {
        let last = market
            .trades_from(i64::MIN)
            .take_while(|t| time_ms(t) < s)
            .last()?;
        let open = s - s.rem_euclid(interval_ms) - interval_ms;
        Some(Candle::flat(open, last.price))
    });
    let selected = candles(trades, interval_ms, before)
        .filter(|c| start_ms.is_none_or(|s| c.open_time_ms >= s))
        .take_while(|c| end_ms.is_none_or(|e| c.open_time_ms <= e));
    let selected: Vec<Candle> = if start_ms.is_some() {
        selected.take(limit).collect()
    } else {
        keep_last(selected, limit)
    };
    let kline_json = |c: &Candle| {
        json!([
            c.open_time_ms,
            decimal(c.open),
            decimal(c.high),
            decimal(c.low),
            decimal(c.close),
            decimal_wide(c.volume),
            c.open_time_ms + interval_ms - 1,
            decimal_wide(c.quote_volume),
            c.trades,
            decimal_wide(c.taker_buy_volume),
            decimal_wide(c.taker_buy_quote_volume),
            "0",
        ])
    };
    Ok(Value::Array(selected.iter().map(kline_json).collect()))
}

/// Trades of one rolling 24-hour window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DayStats {
    first: Option<Trade>,
    last: Option<Trade>,
    /// The last price before the window.
    prev_close: i64,
    high: i64,
    low: i64,
    volume: i128,
    quote_volume: i128,
    count: i64,
}

impl DayStats {
    fn of(market: &Market, open_time_ms: i64) -> DayStats {
        let mut stats = DayStats::default();
        for t in market.trades_from(i64::MIN) {
            if time_ms(t) < open_time_ms {
                stats.prev_close = t.price;
                continue;
            }
            if stats.first.is_none() {
                (stats.high, stats.low) = (t.price, t.price);
            }
            stats.first.get_or_insert(*t);
            stats.last = Some(*t);
            stats.high = stats.high.max(t.price);
            stats.low = stats.low.min(t.price);
            stats.volume += i128::from(t.qty);
            stats.quote_volume += quote_qty(t.price, t.qty);
            stats.count += 1;
        }
        stats
    }
}

fn ticker_24hr(exchange: &Exchange, params: &Params, now_ms: i64) -> Result<Value, ApiError> {
    if params.get("symbol").is_some() {
        let market = symbol_param(exchange, params)?;
        return Ok(ticker(
            market,
            &exchange.listing(&market.spec().symbol),
            now_ms,
        ));
    }
    let all = (0..exchange.symbols().len()).map(|i| {
        ticker(
            exchange.market(i),
            &exchange.listing(&exchange.symbols()[i]),
            now_ms,
        )
    });
    Ok(Value::Array(all.collect()))
}

/// `listing.quote_volume`, when set, replaces the trades' quote volume (the admin API's knob).
fn ticker(market: &Market, listing: &Listing, now_ms: i64) -> Value {
    let open_time_ms = now_ms - TICKER_WINDOW_MS;
    let stats = DayStats::of(market, open_time_ms);
    let open = stats.first.map_or(0, |t| t.price);
    let (last_price, last_qty) = stats.last.map_or((0, 0), |t| (t.price, t.qty));
    let change = i128::from(last_price) - i128::from(open);
    // Percent with 3 decimals, as Binance prints it.
    let percent_milli = if open == 0 {
        0
    } else {
        change * 100_000 / i128::from(open)
    };
    let weighted_avg = if stats.volume == 0 {
        0
    } else {
        stats.quote_volume * UNIT / stats.volume
    };
    let (bid_price, bid_qty) = market.book().best(Side::Bid).unwrap_or((0, 0));
    let (ask_price, ask_qty) = market.book().best(Side::Ask).unwrap_or((0, 0));
    let percent = Decimal::new(i64::try_from(percent_milli).unwrap_or(0), -3);
    json!({
        "symbol": market.spec().symbol,
        "priceChange": decimal_wide(change),
        "priceChangePercent": percent.to_string(),
        "weightedAvgPrice": decimal_wide(weighted_avg),
        "prevClosePrice": decimal(stats.prev_close),
        "lastPrice": decimal(last_price),
        "lastQty": decimal(last_qty),
        "bidPrice": decimal(bid_price),
        "bidQty": decimal(bid_qty),
        "askPrice": decimal(ask_price),
        "askQty": decimal(ask_qty),
        "openPrice": decimal(open),
        "highPrice": decimal(stats.high),
        "lowPrice": decimal(stats.low),
        "volume": decimal_wide(stats.volume),
        "quoteVolume": listing.quote_volume.clone().unwrap_or_else(|| decimal_wide(stats.quote_volume)),
        "openTime": open_time_ms,
        "closeTime": now_ms,
        "firstId": stats.first.map_or(-1, |t| t.id),
        "lastId": stats.last.map_or(-1, |t| t.id),
        "count": stats.count,
    })
}

fn ground_truth(exchange: &Exchange, admin: Admin, params: &Params) -> Result<Value, ApiError> {
    match admin {
        Admin::Trades => admin_trades(exchange, params),
        Admin::Book => admin_book(exchange, params),
        Admin::Symbols => {
            let symbol_json = |i| {
                let market = exchange.market(i);
                json!({
                    "symbol": market.spec().symbol,
                    "updateId": market.update_id(),
                    "nextTradeId": market.next_trade_id(),
                })
            };
            Ok(Value::Array(
                (0..exchange.symbols().len()).map(symbol_json).collect(),
            ))
        }
    }
}

fn admin_trades(exchange: &Exchange, params: &Params) -> Result<Value, ApiError> {
    let market = symbol_param(exchange, params)?;
    let from_id = number_param(params, "fromId")?.unwrap_or(i64::MIN);
    let limit = limit_param(params, ADMIN_TRADES_LIMIT_DEFAULT, usize::MAX)?;
    let trade_json = |t: &Trade| {
        json!({
            "id": t.id,
            "price": decimal(t.price),
            "qty": decimal(t.qty),
            "priceMantissa": t.price,
            "qtyMantissa": t.qty,
            "isBuyerMaker": t.buyer_maker,
            "time": t.time_us,
        })
    };
    let trades = market.trades_from(from_id).take(limit).map(trade_json);
    Ok(Value::Array(trades.collect()))
}

fn admin_book(exchange: &Exchange, params: &Params) -> Result<Value, ApiError> {
    let market = symbol_param(exchange, params)?;
    let update_id = number_param(params, "updateId")?.unwrap_or(market.update_id());
    let book = market.book_at(update_id).ok_or(ApiError::NotInJournal)?;
    Ok(json!({
        "updateId": book.update_id,
        "bids": book.bids,
        "asks": book.asks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::exchange::ExchangeConfig;

    /// 2023-11-14T22:13:20Z; the simulation starts here.
    const T0_MS: i64 = 1_700_000_000_000;
    const RUN_MS: i64 = 4_000;
    /// A time after the simulated run.
    const NOW_MS: i64 = T0_MS + RUN_MS + 1;

    /// Two symbols after `RUN_MS` simulated milliseconds.
    fn exchange() -> Exchange {
        let mut exchange = Exchange::new(ExchangeConfig {
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            ..Default::default()
        });
        let mut events = Vec::new();
        for ms in 0..=RUN_MS {
            exchange.advance((T0_MS + ms) * US_PER_MS, &mut events);
            events.clear();
        }
        exchange
    }

    fn call(ex: &Exchange, limiter: &mut WeightLimiter, now_ms: i64, target: &str) -> Response {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method: "GET",
            path,
            query,
            accept: None,
            sbe_schema: None,
        };
        handle(ex, &request, now_ms, limiter, SbeMode::Serve)
    }

    /// One request from a fresh client.
    fn get(ex: &Exchange, target: &str) -> Response {
        call(
            ex,
            &mut WeightLimiter::new(REQUEST_WEIGHT_PER_MINUTE),
            NOW_MS,
            target,
        )
    }

    fn body(response: &Response) -> Value {
        serde_json::from_slice(&response.body).expect("JSON body")
    }

    fn used(response: &Response) -> Option<u32> {
        response
            .header(USED_WEIGHT_HEADER)
            .map(|v| v.parse().expect("a number"))
    }

    fn retry_after(response: &Response) -> Option<i64> {
        response
            .header("Retry-After")
            .map(|v| v.parse().expect("a number"))
    }

    /// An 8-decimal string back to its mantissa.
    fn mantissa(value: &Value) -> i64 {
        let text = value.as_str().expect("a decimal string");
        let (int, frac) = text.split_once('.').expect("a decimal point");
        assert_eq!(frac.len(), 8, "{text}");
        format!("{int}{frac}").parse().expect("digits")
    }

    fn number(value: &Value) -> i64 {
        value.as_i64().expect("an integer")
    }

    fn assert_error(response: &Response, status: u16, code: i64, msg: &str) {
        assert_eq!(
            response.status,
            status,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(body(response), json!({ "code": code, "msg": msg }));
    }

    fn journal(ex: &Exchange, symbol: usize) -> Vec<Trade> {
        ex.market(symbol).trades_from(i64::MIN).copied().collect()
    }

    #[test]
    fn ping_and_time() {
        let ex = exchange();
        let ping = get(&ex, "/api/v3/ping");
        assert_eq!((ping.status, body(&ping)), (200, json!({})));
        assert_eq!(used(&ping), Some(1));
        assert_eq!(ping.header("content-type"), Some(CONTENT_TYPE.1));
        let time = get(&ex, "/api/v3/time");
        assert_eq!(body(&time), json!({ "serverTime": NOW_MS }));
        assert_eq!(used(&time), Some(1));
    }

    #[test]
    fn exchange_info_lists_symbols_filters_and_the_weight_limit() {
        let ex = exchange();
        let all = get(&ex, "/api/v3/exchangeInfo");
        assert_eq!(used(&all), Some(20));
        let info = body(&all);
        assert_eq!(info["timezone"], "UTC");
        assert_eq!(info["serverTime"], NOW_MS);
        assert_eq!(
            info["rateLimits"],
            json!([{ "rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                     "intervalNum": 1, "limit": 6000 }])
        );
        let symbols = info["symbols"].as_array().expect("symbols");
        assert_eq!(symbols.len(), 2);
        let btc = &symbols[0];
        assert_eq!(
            (&btc["symbol"], &btc["status"]),
            (&json!("BTCUSDT"), &json!("TRADING"))
        );
        assert_eq!(
            (&btc["baseAsset"], &btc["quoteAsset"]),
            (&json!("BTC"), &json!("USDT"))
        );
        assert_eq!(btc["filters"][0]["filterType"], "PRICE_FILTER");
        assert_eq!(btc["filters"][0]["tickSize"], "0.01000000");
        assert_eq!(btc["filters"][1]["filterType"], "LOT_SIZE");
        assert_eq!(btc["filters"][1]["stepSize"], "0.00001000");

        let one = body(&get(&ex, "/api/v3/exchangeInfo?symbol=ETHUSDT"));
        assert_eq!(one["symbols"].as_array().map(Vec::len), Some(1));
        assert_eq!(one["symbols"][0]["baseAsset"], "ETH");
        let unknown = get(&ex, "/api/v3/exchangeInfo?symbol=DOGEUSDT");
        assert_error(&unknown, 400, -1121, "Invalid symbol.");
        assert_eq!(used(&unknown), Some(20), "errors are weighted too");
    }

    #[test]
    fn the_listing_knob_changes_status_and_quote_volume_only() {
        let mut ex = exchange();
        let before = body(&get(&ex, "/api/v3/ticker/24hr?symbol=ETHUSDT"));
        ex.set_listing("ETHUSDT", Some("HALT"), Some("123.5"))
            .expect("valid");
        let info = body(&get(&ex, "/api/v3/exchangeInfo"));
        assert_eq!(info["symbols"][0]["status"], "TRADING");
        assert_eq!(info["symbols"][1]["status"], "HALT");
        let all = body(&get(&ex, "/api/v3/ticker/24hr"));
        assert_eq!(all[1]["quoteVolume"], "123.5");
        assert_eq!(
            all[1]["volume"], before["volume"],
            "the market is unchanged"
        );
        ex.set_listing("ETHUSDT", Some("TRADING"), None)
            .expect("valid");
        assert_eq!(ex.listing("ETHUSDT").quote_volume.as_deref(), Some("123.5"));
        assert!(ex.set_listing("DOGEUSDT", Some("HALT"), None).is_err());
        assert!(ex.set_listing("ETHUSDT", Some("halt"), None).is_err());
        assert!(ex.set_listing("ETHUSDT", None, Some("lots")).is_err());
    }

    #[test]
    fn symbols_split_on_known_quote_assets() {
        assert_eq!(split_symbol("BTCUSDT"), ("BTC", "USDT"));
        assert_eq!(split_symbol("ETHBTC"), ("ETH", "BTC"));
        assert_eq!(split_symbol("BTCFDUSD"), ("BTC", "FDUSD"));
        assert_eq!(split_symbol("SOLUSDC"), ("SOL", "USDC"));
        assert_eq!(split_symbol("ADABNB"), ("ADA", "BNB"));
        assert_eq!(split_symbol("USDT"), ("USDT", ""));
        assert_eq!(split_symbol("XYZABC"), ("XYZABC", ""));
    }

    #[test]
    fn depth_weights_follow_the_limit() {
        let ex = exchange();
        let cases = [
            (1, 5),
            (100, 5),
            (101, 25),
            (500, 25),
            (501, 50),
            (1000, 50),
            (1001, 250),
            (5000, 250),
            (6000, 250),
        ];
        for (limit, weight) in cases {
            let response = get(&ex, &format!("/api/v3/depth?symbol=BTCUSDT&limit={limit}"));
            assert_eq!(response.status, 200);
            assert_eq!(used(&response), Some(weight), "limit {limit}");
        }
        assert_eq!(used(&get(&ex, "/api/v3/depth?symbol=BTCUSDT")), Some(5));
    }

    #[test]
    fn depth_is_the_book_at_its_last_update_id() {
        let ex = exchange();
        for (symbol, name) in ex.symbols().iter().enumerate() {
            let depth = body(&get(&ex, &format!("/api/v3/depth?symbol={name}&limit=7")));
            let update_id = number(&depth["lastUpdateId"]);
            assert_eq!(update_id, ex.market(symbol).update_id());
            let truth = ex.market(symbol).book_at(update_id).expect("current id");
            for (side, levels) in [("bids", &truth.bids), ("asks", &truth.asks)] {
                let got: Vec<(i64, i64)> = depth[side]
                    .as_array()
                    .expect("levels")
                    .iter()
                    .map(|l| (mantissa(&l[0]), mantissa(&l[1])))
                    .collect();
                assert_eq!(got, levels[..7], "{name} {side}");
            }
        }
        let default = body(&get(&ex, "/api/v3/depth?symbol=BTCUSDT"));
        let bids = ex
            .market(0)
            .book()
            .depth(Side::Bid)
            .min(DEPTH_LIMIT_DEFAULT);
        assert_eq!(default["bids"].as_array().map(Vec::len), Some(bids));
    }

    #[test]
    fn bad_parameters_get_binance_errors() {
        let ex = exchange();
        let missing = get(&ex, "/api/v3/depth");
        assert_error(
            &missing,
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );
        assert_eq!(used(&missing), Some(5));
        assert_eq!(get(&ex, "/api/v3/depth?symbol=").status, 400);
        assert_error(
            &get(&ex, "/api/v3/trades?symbol=btcusdt"),
            400,
            -1100,
            "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
        );
        assert_error(
            &get(&ex, "/api/v3/trades?symbol=XRPUSDT"),
            400,
            -1121,
            "Invalid symbol.",
        );
        let bad_limit = get(&ex, "/api/v3/depth?symbol=BTCUSDT&limit=ten");
        assert_error(
            &bad_limit,
            400,
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
        );
        assert_eq!(used(&bad_limit), Some(5), "charged as the default limit");
        assert_error(
            &get(&ex, "/api/v3/trades?symbol=BTCUSDT&limit=0"),
            400,
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '1-1000'.",
        );
        assert_eq!(
            get(&ex, "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=-3").status,
            400
        );
        assert_error(
            &get(&ex, "/api/v3/klines?symbol=BTCUSDT"),
            400,
            -1102,
            "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
        );
        assert_error(
            &get(&ex, "/api/v3/klines?symbol=BTCUSDT&interval=1w"),
            400,
            -1120,
            "Invalid interval.",
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        let ex = exchange();
        let mut limiter = WeightLimiter::new(REQUEST_WEIGHT_PER_MINUTE);
        let missing = call(&ex, &mut limiter, NOW_MS, "/api/v3/avgPrice?symbol=BTCUSDT");
        assert_eq!((missing.status, body(&missing)), (404, json!({})));
        assert_eq!(used(&missing), None);
        let post = Request {
            method: "POST",
            path: "/api/v3/depth",
            query: "symbol=BTCUSDT",
            accept: None,
            sbe_schema: None,
        };
        let response = handle(&ex, &post, NOW_MS, &mut limiter, SbeMode::Serve);
        assert_eq!(response.status, 405);
        assert_eq!(response.header("Allow"), Some("GET"));
        assert_eq!(limiter.used_weight(), 0);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("BTC%55SDT"), "BTCUSDT");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        let params = Params::parse("symbol=&symbol=X&limit=5&&flag");
        assert_eq!(params.get("symbol"), None, "the first occurrence counts");
        assert_eq!(params.get("limit"), Some("5"));
        assert_eq!(params.get("flag"), None);
        let ex = exchange();
        assert_eq!(get(&ex, "/api/v3/depth?symbol=BTC%55SDT").status, 200);
    }

    #[test]
    fn a_stream_list_in_a_query_is_percent_decoded() {
        assert_eq!(
            query_value("a=1&streams=x%40trade%2Fy%40depth", "streams").as_deref(),
            Some("x@trade/y@depth")
        );
        assert_eq!(
            query_value("streams=a&streams=b", "streams").as_deref(),
            Some("a")
        );
        assert_eq!(query_value("streams", "streams").as_deref(), Some(""));
        assert_eq!(query_value("a=1", "streams"), None);
    }

    #[test]
    fn trades_are_the_most_recent_oldest_first() {
        let ex = exchange();
        let all = journal(&ex, 0);
        assert!(all.len() > LIST_LIMIT_MAX, "the run trades: {}", all.len());
        let response = get(&ex, "/api/v3/trades?symbol=BTCUSDT");
        assert_eq!(used(&response), Some(25));
        let trades = body(&response);
        let trades = trades.as_array().expect("array");
        assert_eq!(trades.len(), LIST_LIMIT_DEFAULT);
        let expected = &all[all.len() - LIST_LIMIT_DEFAULT..];
        for (got, want) in trades.iter().zip(expected) {
            assert_eq!(number(&got["id"]), want.id);
            assert_eq!(mantissa(&got["price"]), want.price);
            assert_eq!(mantissa(&got["qty"]), want.qty);
            let quote = i128::from(want.price) * i128::from(want.qty);
            assert_eq!(
                i128::from(mantissa(&got["quoteQty"])) * UNIT,
                quote,
                "exact"
            );
            assert_eq!(number(&got["time"]), want.time_us / 1000);
            assert_eq!(got["isBuyerMaker"], want.buyer_maker);
            assert_eq!(got["isBestMatch"], true);
        }
        let capped = body(&get(&ex, "/api/v3/trades?symbol=BTCUSDT&limit=5000"));
        assert_eq!(capped.as_array().map(Vec::len), Some(LIST_LIMIT_MAX));
        let five = body(&get(&ex, "/api/v3/trades?symbol=ETHUSDT&limit=5"));
        let last = ex.market(1).next_trade_id() - 1;
        assert_eq!(number(&five[4]["id"]), last);
        assert_eq!(number(&five[0]["id"]), last - 4);
    }

    #[test]
    fn quote_quantities_are_exact() {
        // 69769.88 x 0.00123 = 85.8169524
        assert_eq!(
            decimal_wide(quote_qty(6_976_988_000_000, 123_000)),
            "85.81695240"
        );
        assert_eq!(
            decimal_wide(i128::from(i64::MAX) * 10 + 5),
            "922337203685.47758075"
        );
        assert_eq!(
            decimal_wide(-(i128::from(i64::MAX) * 10)),
            "-922337203685.47758070"
        );
    }

    #[test]
    fn historical_trades_start_at_from_id() {
        let ex = exchange();
        let all = journal(&ex, 0);
        let from = all[10].id;
        let response = get(
            &ex,
            &format!("/api/v3/historicalTrades?symbol=BTCUSDT&fromId={from}&limit=3"),
        );
        assert_eq!(used(&response), Some(25));
        let ids: Vec<i64> = body(&response)
            .as_array()
            .expect("array")
            .iter()
            .map(|t| number(&t["id"]))
            .collect();
        assert_eq!(ids, [from, from + 1, from + 2]);
        let recent = body(&get(&ex, "/api/v3/historicalTrades?symbol=BTCUSDT&limit=2"));
        assert_eq!(number(&recent[1]["id"]), all[all.len() - 1].id);
    }

    /// Checks aggregates against the journal: each covers `f..=l`, whose trades share price,
    /// side and time, and the quantities add up.
    fn check_aggregates(aggs: &[Value], all: &[Trade]) {
        let first_id = all[0].id;
        for agg in aggs {
            let (f, l) = (number(&agg["f"]), number(&agg["l"]));
            assert_eq!(number(&agg["a"]), f);
            let trades = &all[(f - first_id) as usize..=(l - first_id) as usize];
            assert!(trades.iter().all(|t| t.price == mantissa(&agg["p"])
                && t.buyer_maker == agg["m"]
                && t.time_us / 1000 == number(&agg["T"])));
            assert_eq!(
                trades.iter().map(|t| t.qty).sum::<i64>(),
                mantissa(&agg["q"])
            );
            assert_eq!(agg["M"], true);
        }
        for pair in aggs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert_eq!(number(&a["l"]) + 1, number(&b["f"]), "contiguous");
            let same = (&a["p"], &a["m"], &a["T"]) == (&b["p"], &b["m"], &b["T"]);
            assert!(!same, "maximal aggregates");
        }
    }

    #[test]
    fn agg_trades_group_same_price_side_and_time() {
        let ex = exchange();
        let all = journal(&ex, 0);
        let response = get(&ex, "/api/v3/aggTrades?symbol=BTCUSDT&limit=1000");
        assert_eq!(used(&response), Some(4));
        let recent = body(&response);
        let recent = recent.as_array().expect("array");
        assert_eq!(recent.len(), 1000);
        check_aggregates(recent, &all);
        assert!(
            recent.iter().any(|a| a["f"] != a["l"]),
            "some aggregate holds several trades"
        );
        assert_eq!(number(&recent[999]["l"]), all[all.len() - 1].id);

        // fromId inside a multi-trade aggregate skips it whole.
        let multi = recent.iter().find(|a| a["f"] != a["l"]).expect("multi");
        let inside = number(&multi["f"]) + 1;
        let from = body(&get(
            &ex,
            &format!("/api/v3/aggTrades?symbol=BTCUSDT&fromId={inside}&limit=3"),
        ));
        assert_eq!(number(&from[0]["f"]), number(&multi["l"]) + 1);
        let at = body(&get(
            &ex,
            &format!(
                "/api/v3/aggTrades?symbol=BTCUSDT&fromId={}&limit=1",
                multi["f"]
            ),
        ));
        assert_eq!(at[0], *multi);
    }

    #[test]
    fn agg_trades_by_time() {
        let ex = exchange();
        let all = journal(&ex, 1);
        let (start, end) = (T0_MS + 1_000, T0_MS + 1_499);
        let query = format!("/api/v3/aggTrades?symbol=ETHUSDT&startTime={start}&endTime={end}");
        let aggs = body(&get(&ex, &format!("{query}&limit=1000")));
        let aggs = aggs.as_array().expect("array");
        check_aggregates(aggs, &all);
        let in_window: Vec<&Trade> = all
            .iter()
            .filter(|t| (start..=end).contains(&(t.time_us / 1000)))
            .collect();
        assert_eq!(number(&aggs[0]["f"]), in_window[0].id);
        assert_eq!(
            number(&aggs[aggs.len() - 1]["l"]),
            in_window[in_window.len() - 1].id
        );
        let two = body(&get(&ex, &format!("{query}&limit=2")));
        assert_eq!(two.as_array().cloned(), Some(aggs[..2].to_vec()));
    }

    #[test]
    fn klines_summarise_the_journal() {
        let ex = exchange();
        let all = journal(&ex, 0);
        let response = get(&ex, "/api/v3/klines?symbol=BTCUSDT&interval=1s");
        assert_eq!(used(&response), Some(2));
        let klines = body(&response);
        let klines = klines.as_array().expect("array");
        assert!((4..=5).contains(&klines.len()), "seconds T0 ..= T0 + 4");
        assert_eq!(number(&klines[0][0]), T0_MS - T0_MS % 1000);
        let count: i64 = klines.iter().map(|k| number(&k[8])).sum();
        assert_eq!(count, all.len() as i64);
        let volume: i64 = klines.iter().map(|k| mantissa(&k[5])).sum();
        assert_eq!(volume, all.iter().map(|t| t.qty).sum::<i64>());
        let second: Vec<&Trade> = all
            .iter()
            .filter(|t| t.time_us / 1000 / 1000 == number(&klines[1][0]) / 1000)
            .collect();
        let k = &klines[1];
        assert_eq!(number(&k[6]), number(&k[0]) + 999);
        assert_eq!(mantissa(&k[1]), second[0].price);
        assert_eq!(mantissa(&k[4]), second[second.len() - 1].price);
        let high = second.iter().map(|t| t.price).max();
        assert_eq!(Some(mantissa(&k[2])), high);
        let taker_buy: i64 = second
            .iter()
            .filter(|t| !t.buyer_maker)
            .map(|t| t.qty)
            .sum();
        assert_eq!(mantissa(&k[9]), taker_buy);
        assert_eq!(k[11], "0");

        let start = number(&klines[1][0]);
        let query = format!("/api/v3/klines?symbol=BTCUSDT&interval=1s&startTime={start}");
        let from = body(&get(&ex, &format!("{query}&limit=2")));
        assert_eq!(from.as_array().cloned(), Some(klines[1..3].to_vec()));
        let one_minute = body(&get(&ex, "/api/v3/klines?symbol=BTCUSDT&interval=1m"));
        let minutes = one_minute.as_array().expect("array");
        assert!(minutes.iter().all(|k| number(&k[0]) % 60_000 == 0));
        assert_eq!(minutes.iter().map(|k| number(&k[8])).sum::<i64>(), count);
    }

    #[test]
    fn history_gives_klines_from_a_start_time_every_interval() {
        let mut ex = Exchange::new(ExchangeConfig {
            symbols: vec!["BTCUSDT".into()],
            actions_per_second: 100.0,
            history_s: 100,
            ..Default::default()
        });
        ex.run_history(NOW_MS * US_PER_MS);
        let start = NOW_MS - 90_000 + 1;
        let target =
            format!("/api/v3/klines?symbol=BTCUSDT&interval=1s&startTime={start}&limit=50");
        let klines = body(&get(&ex, &target));
        let klines = klines.as_array().expect("an array");
        assert_eq!(klines.len(), 50);
        let opens: Vec<i64> = klines.iter().map(|k| number(&k[0])).collect();
        let first = start - start.rem_euclid(1000) + 1000;
        assert_eq!(opens, (0..50).map(|i| first + i * 1000).collect::<Vec<_>>());
    }

    #[test]
    fn klines_fill_quiet_intervals_at_the_previous_close() {
        let trade = |id: i64, time_ms: i64, price: i64| Trade {
            id,
            price,
            qty: 1,
            buyer_maker: false,
            time_us: time_ms * 1000,
        };
        let trades = [trade(1, 1_000, 10), trade(2, 1_500, 12), trade(3, 4_200, 9)];
        let got: Vec<Candle> = candles(trades.iter(), 1_000, None).collect();
        let opens: Vec<i64> = got.iter().map(|c| c.open_time_ms).collect();
        assert_eq!(opens, [1_000, 2_000, 3_000, 4_000]);
        assert_eq!((got[0].open, got[0].close, got[0].trades), (10, 12, 2));
        assert_eq!(got[1], Candle::flat(2_000, 12));
        assert_eq!(got[3].open, 9);
    }

    #[test]
    fn ticker_covers_the_last_24_hours() {
        let ex = exchange();
        let all = journal(&ex, 0);
        let response = get(&ex, "/api/v3/ticker/24hr?symbol=BTCUSDT");
        assert_eq!(used(&response), Some(2));
        let t = body(&response);
        let (first, last) = (all[0], all[all.len() - 1]);
        assert_eq!(t["symbol"], "BTCUSDT");
        assert_eq!(number(&t["firstId"]), first.id);
        assert_eq!(number(&t["lastId"]), last.id);
        assert_eq!(number(&t["count"]), all.len() as i64);
        assert_eq!(mantissa(&t["openPrice"]), first.price);
        assert_eq!(mantissa(&t["lastPrice"]), last.price);
        assert_eq!(mantissa(&t["lastQty"]), last.qty);
        assert_eq!(mantissa(&t["priceChange"]), last.price - first.price);
        let high = all.iter().map(|t| t.price).max().expect("trades");
        assert_eq!(mantissa(&t["highPrice"]), high);
        assert_eq!(
            mantissa(&t["volume"]),
            all.iter().map(|t| t.qty).sum::<i64>()
        );
        let (bid, ask) = (
            ex.market(0).book().best(Side::Bid),
            ex.market(0).book().best(Side::Ask),
        );
        assert_eq!(
            Some((mantissa(&t["bidPrice"]), mantissa(&t["bidQty"]))),
            bid
        );
        assert_eq!(
            Some((mantissa(&t["askPrice"]), mantissa(&t["askQty"]))),
            ask
        );
        assert_eq!(mantissa(&t["prevClosePrice"]), 0);
        assert_eq!(number(&t["closeTime"]), NOW_MS);
        assert_eq!(number(&t["openTime"]), NOW_MS - TICKER_WINDOW_MS);
        let (low, avg) = (mantissa(&t["lowPrice"]), mantissa(&t["weightedAvgPrice"]));
        assert!(low <= avg && avg <= high, "{low} <= {avg} <= {high}");

        let all_symbols = get(&ex, "/api/v3/ticker/24hr");
        assert_eq!(used(&all_symbols), Some(80));
        assert_eq!(body(&all_symbols).as_array().map(Vec::len), Some(2));

        let mut limiter = WeightLimiter::new(REQUEST_WEIGHT_PER_MINUTE);
        let tomorrow = NOW_MS + TICKER_WINDOW_MS + 10_000;
        let quiet = body(&call(
            &ex,
            &mut limiter,
            tomorrow,
            "/api/v3/ticker/24hr?symbol=BTCUSDT",
        ));
        assert_eq!(
            (number(&quiet["firstId"]), number(&quiet["count"])),
            (-1, 0)
        );
        assert_eq!(mantissa(&quiet["prevClosePrice"]), last.price);
        assert_eq!(quiet["priceChangePercent"], "0.000");
    }

    #[test]
    fn percent_change_has_three_decimals() {
        let ex = exchange();
        let t = body(&get(&ex, "/api/v3/ticker/24hr?symbol=ETHUSDT"));
        let percent = t["priceChangePercent"].as_str().expect("string");
        assert_eq!(
            percent.split_once('.').map(|(_, f)| f.len()),
            Some(3),
            "{percent}"
        );
    }

    #[test]
    fn over_the_limit_429_then_418_with_doubling_bans() {
        let ex = exchange();
        let mut limiter = WeightLimiter::new(10);
        // 15.5 s into a minute.
        let minute = (NOW_MS / 60_000 + 1) * 60_000;
        let now = minute + 15_500;
        for i in 1..=10 {
            let ok = call(&ex, &mut limiter, now, "/api/v3/ping");
            assert_eq!((ok.status, used(&ok)), (200, Some(i)));
        }
        for i in 0..=REQUESTS_AFTER_429_MAX {
            let limited = call(&ex, &mut limiter, now + 100, "/api/v3/ping");
            assert_eq!(limited.status, 429, "request {i} after the first 429");
            assert_eq!(retry_after(&limited), Some(45), "to the next minute");
            assert_eq!(used(&limited), Some(11 + i));
            assert_eq!(body(&limited)["code"], -1003);
            assert_eq!(
                body(&limited)["msg"],
                "Too much request weight used; current limit is 10 request weight per 1 MINUTE. \
                 Please use WebSocket Streams for live updates to avoid polling the API."
            );
        }
        let ban_start = now + 200;
        let banned = call(&ex, &mut limiter, ban_start, "/api/v3/ping");
        assert_eq!(banned.status, 418);
        assert_eq!(retry_after(&banned), Some(120));
        let until = ban_start + 120_000;
        assert_eq!(body(&banned)["code"], -1003);
        let msg = body(&banned)["msg"].as_str().expect("msg").to_string();
        assert!(msg.contains(&format!("banned until {until}")), "{msg}");
        assert_eq!(limiter.banned_until_ms(ban_start), Some(until));

        // Still banned in the next window, on every endpoint; ground truth stays open.
        let later = call(
            &ex,
            &mut limiter,
            ban_start + 50_500,
            "/api/v3/depth?symbol=BTCUSDT",
        );
        assert_eq!((later.status, retry_after(&later)), (418, Some(70)));
        assert_eq!(used(&later), Some(0), "banned requests add no weight");
        let admin = call(&ex, &mut limiter, ban_start + 30_500, "/admin/symbols");
        assert_eq!((admin.status, used(&admin)), (200, None));

        // After the ban: served again; the next ban lasts twice as long.
        let after = until;
        assert_eq!(call(&ex, &mut limiter, after, "/api/v3/ping").status, 200);
        let mut statuses = Vec::new();
        for _ in 0..(9 + 1 + REQUESTS_AFTER_429_MAX + 1) {
            statuses.push(call(&ex, &mut limiter, after, "/api/v3/ping").status);
        }
        assert_eq!(statuses[..9], [200; 9]);
        assert_eq!(statuses[9..20], [429; 11]);
        assert_eq!(statuses[20], 418);
        let second = call(&ex, &mut limiter, after, "/api/v3/ping");
        assert_eq!(retry_after(&second), Some(240));
    }

    #[test]
    fn bans_cap_at_three_days() {
        let mut limiter = WeightLimiter::new(0);
        let mut now = 0;
        let mut last_ban_ms = 0;
        for _ in 0..20 {
            let admission = (0..=REQUESTS_AFTER_429_MAX + 1)
                .map(|_| limiter.admit(1, now))
                .last();
            let Some(Admission::Banned { until_ms, .. }) = admission else {
                panic!("banned: {admission:?}");
            };
            last_ban_ms = until_ms - now;
            now = until_ms;
        }
        assert_eq!(last_ban_ms, BAN_MAX_MS);
    }

    #[test]
    fn the_window_resets_at_the_minute() {
        let ex = exchange();
        let mut limiter = WeightLimiter::new(30);
        let minute = (NOW_MS / 60_000 + 1) * 60_000;
        let depth = "/api/v3/depth?symbol=BTCUSDT";
        for _ in 0..6 {
            assert_eq!(call(&ex, &mut limiter, minute + 59_000, depth).status, 200);
        }
        let limited = call(&ex, &mut limiter, minute + 59_999, depth);
        assert_eq!((limited.status, used(&limited)), (429, Some(35)));
        assert_eq!(retry_after(&limited), Some(1));
        let fresh = call(&ex, &mut limiter, minute + 60_000, depth);
        assert_eq!((fresh.status, used(&fresh)), (200, Some(5)));
        let heavy = call(
            &ex,
            &mut limiter,
            minute + 60_001,
            &format!("{depth}&limit=1000"),
        );
        assert_eq!((heavy.status, used(&heavy)), (429, Some(55)));
    }

    #[test]
    fn admin_trades_are_the_journal() {
        let ex = exchange();
        let all = journal(&ex, 0);
        let response = get(&ex, "/admin/trades?symbol=BTCUSDT");
        assert_eq!((response.status, used(&response)), (200, None));
        let trades = body(&response);
        let trades = trades.as_array().expect("array");
        assert_eq!(trades.len(), all.len());
        for (got, want) in trades.iter().zip(&all) {
            assert_eq!(number(&got["id"]), want.id);
            assert_eq!(number(&got["priceMantissa"]), want.price);
            assert_eq!(number(&got["qtyMantissa"]), want.qty);
            assert_eq!(mantissa(&got["price"]), want.price);
            assert_eq!(mantissa(&got["qty"]), want.qty);
            assert_eq!(got["isBuyerMaker"], want.buyer_maker);
            assert_eq!(number(&got["time"]), want.time_us);
        }
        let from = all[5].id;
        let some = body(&get(
            &ex,
            &format!("/admin/trades?symbol=BTCUSDT&fromId={from}&limit=2"),
        ));
        let ids: Vec<i64> = some
            .as_array()
            .expect("array")
            .iter()
            .map(|t| number(&t["id"]))
            .collect();
        assert_eq!(ids, [from, from + 1]);
        assert_eq!(get(&ex, "/admin/trades").status, 400);
    }

    #[test]
    fn admin_book_is_exact_at_any_journaled_id() {
        let ex = exchange();
        let market = ex.market(1);
        let current = body(&get(&ex, "/admin/book?symbol=ETHUSDT"));
        assert_eq!(number(&current["updateId"]), market.update_id());
        let levels: Vec<(i64, i64)> =
            serde_json::from_value(current["bids"].clone()).expect("pairs");
        assert_eq!(levels, market.book().levels(Side::Bid, usize::MAX));
        let old_id = market.update_id() - 100;
        let old = body(&get(
            &ex,
            &format!("/admin/book?symbol=ETHUSDT&updateId={old_id}"),
        ));
        let truth = market.book_at(old_id).expect("journaled");
        let asks: Vec<(i64, i64)> = serde_json::from_value(old["asks"].clone()).expect("pairs");
        assert_eq!(asks, truth.asks);
        let future = market.update_id() + 1;
        assert_error(
            &get(
                &ex,
                &format!("/admin/book?symbol=ETHUSDT&updateId={future}"),
            ),
            404,
            -1,
            "update id not in the journal",
        );
    }

    #[test]
    fn admin_symbols_list_ids() {
        let ex = exchange();
        let symbols = body(&get(&ex, "/admin/symbols"));
        let expected: Vec<Value> = (0..2)
            .map(|i| {
                let m = ex.market(i);
                json!({ "symbol": m.spec().symbol, "updateId": m.update_id(),
                        "nextTradeId": m.next_trade_id() })
            })
            .collect();
        assert_eq!(symbols, Value::Array(expected));
    }
}
