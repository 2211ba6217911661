//! The async Binance REST client for the market-data endpoints the engine needs: depth
//! snapshots, to anchor or re-anchor a local book (PROTOCOL.md 4.4), historical trades, to
//! fill a trade-id gap, klines and aggregate trades for the sidecar's kline check, and
//! exchangeInfo and 24 h tickers for pair discovery. It speaks to Binance (`https://api.binance.com`,
//! `https://data-api.binance.vision`) and to hotpath's simulator (`http://127.0.0.1:PORT`, or
//! `https://localhost:PORT` with the simulator's certificate trusted), which serves REST on the
//! same port as its WebSockets.
//!
//! # Transport
//!
//! HTTP/1.1 `GET`s through hyper's connection API (`hyper::client::conn::http1`) over one
//! kept-alive connection, plain TCP or rustls (ARCHITECTURE.md says why hyper, and why not its
//! pooled client). The connection is opened on first use and again when the server closed it;
//! a request that finds its kept connection closed before any answer is sent again once, on a
//! fresh one (GETs are idempotent). Bodies are capped ([`BODY_MAX_BYTES`] by default) and every
//! request, connect and TLS handshake included, has a deadline ([`DEFAULT_TIMEOUT`] by default).
//!
//! # Wire format: SBE, JSON as the fall back
//!
//! Depth, historicalTrades, klines, aggTrades and exchangeInfo are asked for in SBE by default
//! ([`RestFormat`], `[rest] format`): `Accept: application/sbe` and `X-MBX-SBE: 3:5`
//! (PROTOCOL.md 4.5), decoded by [`super::rest_sbe`] with codecs generated from
//! `schemas/binance_spot_3_5.xml`; the result is the same value the JSON answer gives. An answer
//! is read as SBE when its `Content-Type` says so, else as JSON. A 406 (SBE disabled) switches
//! the client to JSON for good at once; an SBE answer that does not decode, or an SBE-encoded
//! error, is asked again in JSON, and if that succeeds the client stays on JSON (a genuine error
//! such as an unknown symbol fails in JSON too: it is reported, and SBE stays). Either switch is
//! logged once, at warn. `X-MBX-SBE-DEPRECATED` is warned about once; the answer, encoded by
//! Binance in the newest compatible version, still decodes. Ping, time, ticker/24hr and
//! [`RestClient::get_json`] are JSON.
//!
//! # Request weight and bans
//!
//! [`super::rate_limit`] has Binance's rules. The client keeps the last `X-MBX-USED-WEIGHT-1M`
//! it saw (for the minute it arrived in), adds the weight of each request ([`super::weights`])
//! before sending it, and refuses locally, with [`RestError::WouldExceed`] and without sending,
//! a request that would take the minute past its budget ([`DEFAULT_WEIGHT_BUDGET`], Binance's
//! 6000 minus a margin for other users of the IP). HTTP 429 is [`RestError::RateLimited`] and
//! HTTP 418 [`RestError::Banned`]; until their `Retry-After` has passed every weighted request is
//! refused locally with [`RestError::BackingOff`], since Binance bans IPs that keep sending after
//! a 429. Requests of weight 0 (the simulator's `/admin/...` ground truth) are neither budgeted
//! nor held back.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, USER_AGENT};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::clock::unix_ms;

use super::rate_limit::{self, RETRY_AFTER_HEADER, USED_WEIGHT_HEADER, WeightWindow};
use super::rest_sbe;
use super::weights::{DEPTH_LIMIT_MAX, Endpoint, LIST_LIMIT_MAX};

/// The deadline of one request unless [`RestClient::set_timeout`] changes it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The request weight the client lets itself use per minute unless
/// [`RestClient::set_weight_budget`] changes it: Binance allows 6000, the rest is a margin
/// for other processes on the same IP.
pub const DEFAULT_WEIGHT_BUDGET: u32 = 5_000;
const _: () = assert!(DEFAULT_WEIGHT_BUDGET < rate_limit::REQUEST_WEIGHT_PER_MINUTE);
/// The largest response body accepted unless [`RestClient::set_body_limit`] changes it (a
/// 5000-level depth snapshot is about 0.4 MB).
pub const BODY_MAX_BYTES: usize = 64 << 20;
/// The largest `limit` of `/api/v3/historicalTrades`.
pub const TRADES_LIMIT_MAX: u32 = LIST_LIMIT_MAX;

/// What Binance answers an SBE request when SBE is disabled.
const HTTP_NOT_ACCEPTABLE: u16 = 406;
/// Symbols as Binance spells them: `^[A-Z0-9]{1,20}$`.
const SYMBOL_LEN_MAX: usize = 20;
/// Response text kept in an error message.
const ERROR_TEXT_MAX: usize = 200;

/// Why a request failed. The variants that say "nothing was sent" were decided locally.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// A bad argument (base URL, symbol, limit, path); nothing was sent.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Sending would take the minute's used weight past the budget; nothing was sent.
    #[error(
        "request weight {weight} on top of {used} used would exceed the budget of {budget} per \
         minute (not sent; the minute ends in {retry_after:?})"
    )]
    WouldExceed {
        /// The request's weight.
        weight: u32,
        /// The weight already used in this minute, as far as the client knows.
        used: u32,
        /// The budget per minute.
        budget: u32,
        /// Time to the next minute, when the used weight starts from 0 again (a request
        /// heavier than the whole budget never fits).
        retry_after: Duration,
    },
    /// HTTP 429: over Binance's limit. Weighted requests are refused locally until
    /// `retry_after` has passed.
    #[error("HTTP 429: request rate limit reached; retry after {retry_after:?}")]
    RateLimited {
        /// How long Binance asked to wait (`Retry-After`).
        retry_after: Duration,
    },
    /// HTTP 418: the IP is banned. Weighted requests are refused locally until the ban ends.
    #[error(
        "HTTP 418: IP banned until {} ms since the epoch (in {retry_after:?})",
        epoch_ms(until)
    )]
    Banned {
        /// When the ban ends (now plus `Retry-After`).
        until: SystemTime,
        /// How long Binance asked to wait (`Retry-After`).
        retry_after: Duration,
    },
    /// An earlier 429 or 418 asked to wait and that wait is not over; nothing was sent.
    #[error("not sent: {} asks to wait {retry_after:?} more", hold_name(*banned))]
    BackingOff {
        /// Time left.
        retry_after: Duration,
        /// Whether the wait is a ban (418) rather than a 429.
        banned: bool,
    },
    /// Any other non-2xx answer, with Binance's `{"code":..,"msg":..}` when the body is one.
    #[error("HTTP {status}: {}", code_and_msg(*code, msg))]
    Http {
        /// HTTP status.
        status: u16,
        /// Binance's error code, if the body carried one.
        code: Option<i64>,
        /// Binance's message, or the start of the body.
        msg: String,
    },
    /// The connection failed: connect, TLS, reset, deadline, malformed or oversized response.
    #[error("REST transport error: {0}")]
    Io(String),
    /// A 2xx body that is not what the endpoint returns.
    #[error("unexpected REST response: {0}")]
    Decode(String),
}

impl RestError {
    /// How long to wait before the request may succeed, for the variants that say so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RestError::WouldExceed { retry_after, .. }
            | RestError::RateLimited { retry_after }
            | RestError::Banned { retry_after, .. }
            | RestError::BackingOff { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

fn epoch_ms(time: &SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn hold_name(banned: bool) -> &'static str {
    if banned { "an IP ban (418)" } else { "a 429" }
}

fn code_and_msg(code: Option<i64>, msg: &str) -> String {
    match code {
        Some(code) => format!("code {code}: {msg}"),
        None => msg.to_string(),
    }
}

/// One symbol of an `/api/v3/exchangeInfo` answer, as pair discovery needs it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SymbolListing {
    /// Upper-case symbol.
    pub symbol: String,
    /// `TRADING`, `HALT`, `BREAK`, ...
    pub status: String,
    /// The asset prices are quoted in (`USDT`).
    #[serde(rename = "quoteAsset")]
    pub quote_asset: String,
}

/// One symbol of an `/api/v3/ticker/24hr` answer, as pair discovery needs it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Ticker24hr {
    /// Upper-case symbol.
    pub symbol: String,
    /// The 24 h volume in the quote asset, a decimal string.
    #[serde(rename = "quoteVolume")]
    pub quote_volume: String,
}

/// A `/api/v3/depth` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepthSnapshot {
    /// The book's update id: the snapshot is the book after this diff.
    pub last_update_id: i64,
    /// Bids, best (highest price) first.
    pub bids: Levels,
    /// Asks, best (lowest price) first.
    pub asks: Levels,
}

/// One side of a depth snapshot as it came: decimal strings from JSON, mantissas from SBE.
/// [`super::decimal::mantissas`] turns either into mantissas at the exponents the book keeps,
/// exactly or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Levels {
    /// `(price, quantity)` as the JSON answer prints them.
    Text(Vec<(String, String)>),
    /// `(price, quantity)` mantissas at the SBE answer's exponents.
    Exact {
        /// The prices' exponent.
        price_exponent: i8,
        /// The quantities' exponent.
        qty_exponent: i8,
        /// The levels.
        levels: Vec<(i64, i64)>,
    },
}

impl Levels {
    /// How many levels.
    pub fn len(&self) -> usize {
        match self {
            Levels::Text(levels) => levels.len(),
            Levels::Exact { levels, .. } => levels.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'de> Deserialize<'de> for DepthSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Json {
            #[serde(rename = "lastUpdateId")]
            last_update_id: i64,
            bids: Vec<(String, String)>,
            asks: Vec<(String, String)>,
        }
        let json = Json::deserialize(deserializer)?;
        Ok(DepthSnapshot {
            last_update_id: json.last_update_id,
            bids: Levels::Text(json.bids),
            asks: Levels::Text(json.asks),
        })
    }
}

/// One trade of `/api/v3/historicalTrades`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RestTrade {
    /// Trade id (per symbol, increasing).
    pub id: i64,
    /// Price, as Binance prints it.
    pub price: String,
    /// Quantity, as Binance prints it.
    pub qty: String,
    /// Trade time, milliseconds since the epoch.
    #[serde(rename = "time")]
    pub time_ms: i64,
    /// Whether the buyer was the maker (the taker sold).
    #[serde(rename = "isBuyerMaker")]
    pub is_buyer_maker: bool,
}

/// One aggregate of `/api/v3/aggTrades`, as the kline check needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestAggTrade {
    /// Aggregate id (`a`).
    pub agg_id: i64,
    /// Its first trade id (`f`).
    pub first_trade_id: i64,
    /// Its last trade id (`l`).
    pub last_trade_id: i64,
    /// Time, milliseconds since the epoch (`T`).
    pub time_ms: i64,
}

impl<'de> Deserialize<'de> for RestAggTrade {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Json {
            a: i64,
            f: i64,
            l: i64,
            #[serde(rename = "T")]
            time: i64,
        }
        let json = Json::deserialize(deserializer)?;
        Ok(RestAggTrade {
            agg_id: json.a,
            first_trade_id: json.f,
            last_trade_id: json.l,
            time_ms: json.time,
        })
    }
}

/// One kline of `/api/v3/klines`, as the kline check needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestKline {
    /// Open time, milliseconds since the epoch.
    pub open_ms: i64,
    /// Close time, milliseconds since the epoch (the interval's last millisecond).
    pub close_ms: i64,
    /// Open, high, low and close prices, as Binance prints them.
    pub open: String,
    /// High price.
    pub high: String,
    /// Low price.
    pub low: String,
    /// Close price.
    pub close: String,
    /// Base asset volume, as Binance prints it.
    pub volume: String,
    /// Quote asset volume.
    pub quote_volume: String,
    /// Number of trades.
    pub count: u64,
    /// Taker buy base asset volume.
    pub taker_buy_volume: String,
    /// Taker buy quote asset volume.
    pub taker_buy_quote_volume: String,
}

impl<'de> Deserialize<'de> for RestKline {
    /// A JSON kline is an array: `[openTime, open, high, low, close, volume, closeTime,
    /// quoteVolume, numTrades, takerBuyBaseVolume, takerBuyQuoteVolume, ignore]`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let row = Vec::<Value>::deserialize(deserializer)?;
        let field = |i: usize| row.get(i).ok_or_else(|| D::Error::custom("a short kline"));
        let int = |i: usize| {
            field(i)?
                .as_i64()
                .ok_or_else(|| D::Error::custom(format!("kline field {i} is no integer")))
        };
        let text = |i: usize| {
            field(i)?
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| D::Error::custom(format!("kline field {i} is no string")))
        };
        let count = field(8)?
            .as_u64()
            .ok_or_else(|| D::Error::custom("a kline trade count that is no integer"))?;
        Ok(RestKline {
            open_ms: int(0)?,
            close_ms: int(6)?,
            open: text(1)?,
            high: text(2)?,
            low: text(3)?,
            close: text(4)?,
            volume: text(5)?,
            quote_volume: text(7)?,
            count,
            taker_buy_volume: text(9)?,
            taker_buy_quote_volume: text(10)?,
        })
    }
}

/// The wire format the market-data answers are asked in (`[rest] format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestFormat {
    /// SBE (`Accept: application/sbe`, `X-MBX-SBE: 3:5`), falling back to JSON on a 406 or an
    /// SBE failure (see [`RestClient`]).
    #[default]
    Sbe,
    /// JSON only.
    Json,
}

impl RestFormat {
    /// `"sbe"` or `"json"`.
    pub fn parse(text: &str) -> Option<RestFormat> {
        match text {
            "sbe" => Some(RestFormat::Sbe),
            "json" => Some(RestFormat::Json),
            _ => None,
        }
    }
}

/// Where requests go: a validated `http://host[:port]` or `https://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    /// `https`?
    tls: bool,
    /// The host as connected to: a DNS name, an IPv4 or a bare IPv6 address.
    host: String,
    port: u16,
    /// The `Host` header: the host, bracketed if IPv6, with the port unless the default.
    authority: String,
}

impl Target {
    /// Parses `http://host[:port]` or `https://host[:port]`, with an optional trailing `/`.
    fn parse(base_url: &str) -> Result<Target, String> {
        let fail = |why: &str| {
            Err(format!(
                "REST base URL {base_url:?}: {why}; expected http://host[:port] or \
                 https://host[:port], such as https://api.binance.com"
            ))
        };
        let (tls, rest) = if let Some(rest) = base_url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = base_url.strip_prefix("http://") {
            (false, rest)
        } else {
            return fail("the scheme must be http:// or https://");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return fail("no path, query, fragment or user is allowed");
        }
        let (shown_host, port_text) = match split_host_port(authority) {
            Ok(parts) => parts,
            Err(why) => return fail(why),
        };
        let default_port = if tls { 443 } else { 80 };
        let port = match port_text {
            None => default_port,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return fail("the port must be a number from 1 to 65535"),
            },
        };
        let authority = if port == default_port {
            shown_host.to_string()
        } else {
            format!("{shown_host}:{port}")
        };
        let host = shown_host.trim_start_matches('[').trim_end_matches(']');
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            authority,
        })
    }

    fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority
        )
    }
}

/// `host[:port]` or `[ipv6][:port]` -> (host as written, brackets kept; port text).
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if authority.starts_with('[') {
        let Some(close) = authority.find(']') else {
            return Err("an IPv6 address needs its closing ]");
        };
        let (host, after) = authority.split_at(close + 1);
        if host[1..close].parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address between [ and ]");
        }
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|port| (host, Some(port)))
                .ok_or("only :port may follow ]"),
        };
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let name_like = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    if host.is_empty() || !host.bytes().all(name_like) {
        return Err("the host must be a name or an address");
    }
    Ok((host, port))
}

/// A wait a 429 or 418 imposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hold {
    until: Instant,
    banned: bool,
}

/// A 2xx-or-not answer with its whole body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// The sending half of the kept connection; hyper's connection task owns the socket.
type Sender = SendRequest<Empty<Bytes>>;

/// The async Binance REST client: one kept-alive connection, weight budgeting and 429/418
/// back-off (see the module doc). Requests take `&mut self`: one at a time.
pub struct RestClient {
    target: Target,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conn: Option<Sender>,
    connects: u64,
    timeout: Duration,
    budget: u32,
    body_max: usize,
    weight: WeightWindow,
    hold: Option<Hold>,
    format: RestFormat,
    /// A 406 or an SBE failure turned SBE off for good (said once in the log).
    fell_back: bool,
    /// `X-MBX-SBE-DEPRECATED` was seen (said once in the log).
    deprecated_seen: bool,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field("base_url", &self.target.base_url())
            .field("connected", &self.conn.is_some())
            .field("timeout", &self.timeout)
            .field("budget", &self.budget)
            .field("weight", &self.weight)
            .field("hold", &self.hold)
            .field("connects", &self.connects)
            .field("format", &self.format)
            .field("fell_back", &self.fell_back)
            .finish()
    }
}

impl RestClient {
    /// A client for `base_url`: `https://host[:port]` (Binance) or `http://host[:port]` (the
    /// simulator), nothing after the authority but an optional `/`. `tls` is the rustls
    /// configuration for `https://` (e.g. [`crate::tls::client_config_trusting`] the
    /// simulator's certificate); `None` takes [`crate::tls::default_client_config`]. It is
    /// ignored for `http://`. Nothing is connected yet.
    pub fn new(
        base_url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<RestClient, RestError> {
        let target = Target::parse(base_url).map_err(RestError::Invalid)?;
        let invalid =
            |why: String| RestError::Invalid(format!("REST base URL {base_url:?}: {why}"));
        let tls = if target.tls {
            let config = match tls {
                Some(config) => config,
                None => crate::tls::default_client_config().map_err(|e| invalid(e.to_string()))?,
            };
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| invalid(format!("bad TLS server name: {e}")))?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(RestClient {
            target,
            tls,
            conn: None,
            connects: 0,
            timeout: DEFAULT_TIMEOUT,
            budget: DEFAULT_WEIGHT_BUDGET,
            body_max: BODY_MAX_BYTES,
            weight: WeightWindow::new(),
            hold: None,
            format: RestFormat::default(),
            fell_back: false,
            deprecated_seen: false,
        })
    }

    /// The base URL, normalised (`https://api.binance.com`).
    pub fn base_url(&self) -> String {
        self.target.base_url()
    }

    /// Sets the deadline of each request (connect, TLS handshake, send and whole response).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The deadline of each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the request weight the client lets itself use per minute.
    pub fn set_weight_budget(&mut self, budget: u32) {
        self.budget = budget;
    }

    /// The request weight the client lets itself use per minute.
    pub fn weight_budget(&self) -> u32 {
        self.budget
    }

    /// Sets the largest response body accepted; a larger one fails with [`RestError::Io`].
    pub fn set_body_limit(&mut self, bytes: usize) {
        self.body_max = bytes;
    }

    /// The weight used in the current minute: the last `X-MBX-USED-WEIGHT-1M` received this
    /// minute, plus requests sent since without an answer carrying it; 0 in a new minute.
    pub fn used_weight(&self) -> u32 {
        self.weight.used_at(unix_ms())
    }

    /// Time left of the wait an earlier 429 or 418 imposed, if any.
    pub fn backoff_remaining(&self) -> Option<Duration> {
        self.hold
            .and_then(|hold| hold.until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    /// Sets the wire format of the market-data answers (SBE by default).
    pub fn set_format(&mut self, format: RestFormat) {
        self.format = format;
        self.fell_back = false;
    }

    /// The format market-data answers are asked in now: [`RestFormat::Json`] after a fall
    /// back from SBE.
    pub fn format(&self) -> RestFormat {
        if self.fell_back {
            RestFormat::Json
        } else {
            self.format
        }
    }

    /// Whether SBE was asked for and a 406 or an SBE failure made the client fall back to
    /// JSON for good.
    pub fn fell_back(&self) -> bool {
        self.fell_back
    }

    /// Whether an answer carried `X-MBX-SBE-DEPRECATED` (warned once).
    pub fn sbe_deprecated(&self) -> bool {
        self.deprecated_seen
    }

    /// Connections opened so far (1 while keep-alive holds).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// `/api/v3/ping` (weight 1).
    pub async fn ping(&mut self) -> Result<(), RestError> {
        let _: Value = self.get_typed("/api/v3/ping", Endpoint::Ping).await?;
        Ok(())
    }

    /// `/api/v3/time` (weight 1): the server's time, milliseconds since the epoch.
    pub async fn server_time_ms(&mut self) -> Result<i64, RestError> {
        #[derive(Deserialize)]
        struct Time {
            #[serde(rename = "serverTime")]
            server_time: i64,
        }
        let time: Time = self.get_typed("/api/v3/time", Endpoint::Time).await?;
        Ok(time.server_time)
    }

    /// `/api/v3/depth?symbol=..&limit=..`: the top `limit` (1-5000) levels of each side and
    /// the book's update id. Weight: [`super::weights::depth_weight`].
    pub async fn depth(&mut self, symbol: &str, limit: u32) -> Result<DepthSnapshot, RestError> {
        check_symbol(symbol)?;
        if !(1..=DEPTH_LIMIT_MAX).contains(&limit) {
            return Err(RestError::Invalid(format!(
                "depth limit {limit}: must be from 1 to {DEPTH_LIMIT_MAX}"
            )));
        }
        let path = format!("/api/v3/depth?symbol={symbol}&limit={limit}");
        self.fetch(&path, Endpoint::Depth { limit }, rest_sbe::depth)
            .await
    }

    /// `/api/v3/historicalTrades?symbol=..[&fromId=..]&limit=..` (weight 25): up to `limit`
    /// (1-1000) trades from id `from_id` on, oldest first, or the most recent ones without
    /// `from_id`. No API key is needed (Binance, 2023-07-11).
    pub async fn historical_trades(
        &mut self,
        symbol: &str,
        from_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RestTrade>, RestError> {
        check_symbol(symbol)?;
        if !(1..=TRADES_LIMIT_MAX).contains(&limit) {
            return Err(RestError::Invalid(format!(
                "historicalTrades limit {limit}: must be from 1 to {TRADES_LIMIT_MAX}"
            )));
        }
        let path = match from_id {
            Some(id) if id < 0 => {
                return Err(RestError::Invalid(format!(
                    "historicalTrades fromId {id}: must not be negative"
                )));
            }
            Some(id) => {
                format!("/api/v3/historicalTrades?symbol={symbol}&fromId={id}&limit={limit}")
            }
            None => format!("/api/v3/historicalTrades?symbol={symbol}&limit={limit}"),
        };
        self.fetch(&path, Endpoint::HistoricalTrades, rest_sbe::trades)
            .await
    }

    /// `/api/v3/klines?symbol=..&interval=..&startTime=..&limit=..` (weight 2): up to `limit`
    /// (1-1000) klines of `interval` (`1m`, `1h`, ...) opening at or after `start_ms`.
    pub async fn klines(
        &mut self,
        symbol: &str,
        interval: &str,
        start_ms: i64,
        limit: u32,
    ) -> Result<Vec<RestKline>, RestError> {
        check_symbol(symbol)?;
        check_list_limit("klines", limit)?;
        if interval.is_empty() || !interval.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(RestError::Invalid(format!(
                "klines interval {interval:?}: must be such as 1m or 1h"
            )));
        }
        let path = format!(
            "/api/v3/klines?symbol={symbol}&interval={interval}&startTime={start_ms}&limit={limit}"
        );
        self.fetch(&path, Endpoint::Klines, rest_sbe::klines).await
    }

    /// `/api/v3/aggTrades?symbol=..&startTime=..&endTime=..&limit=..` (weight 4): up to
    /// `limit` (1-1000) aggregates traded from `start_ms` to `end_ms`, oldest first.
    pub async fn agg_trades(
        &mut self,
        symbol: &str,
        start_ms: i64,
        end_ms: i64,
        limit: u32,
    ) -> Result<Vec<RestAggTrade>, RestError> {
        check_symbol(symbol)?;
        check_list_limit("aggTrades", limit)?;
        let path = format!(
            "/api/v3/aggTrades?symbol={symbol}&startTime={start_ms}&endTime={end_ms}&limit={limit}"
        );
        self.fetch(&path, Endpoint::AggTrades, rest_sbe::agg_trades)
            .await
    }

    /// `/api/v3/exchangeInfo` (weight 20): every symbol's name, trading status and quote
    /// asset (the rest of the answer, filters and rate limits, is not kept).
    pub async fn exchange_info(&mut self) -> Result<Vec<SymbolListing>, RestError> {
        #[derive(Deserialize)]
        struct Info {
            symbols: Vec<SymbolListing>,
        }
        let endpoint = Endpoint::ExchangeInfo;
        let sbe = |body: &[u8]| rest_sbe::exchange_info(body).map(|symbols| Info { symbols });
        let info: Info = self.fetch("/api/v3/exchangeInfo", endpoint, sbe).await?;
        Ok(info.symbols)
    }

    /// `/api/v3/ticker/24hr` for every symbol (weight 80): each symbol's 24 h quote volume.
    pub async fn tickers_24hr(&mut self) -> Result<Vec<Ticker24hr>, RestError> {
        let endpoint = Endpoint::Ticker24hr { one_symbol: false };
        self.get_typed("/api/v3/ticker/24hr", endpoint).await
    }

    /// A raw GET of `path_and_query` (e.g. `/api/v3/trades?symbol=BTCUSDT&limit=10`), its body
    /// as JSON. The weight comes from [`Endpoint::parse`]; the simulator's `/admin/...`
    /// ground-truth paths weigh 0; other paths are refused, as their weight is unknown.
    pub async fn get_json(&mut self, path_and_query: &str) -> Result<Value, RestError> {
        let printable =
            path_and_query.starts_with('/') && path_and_query.bytes().all(|b| b.is_ascii_graphic());
        if !printable {
            return Err(RestError::Invalid(format!(
                "request target {path_and_query:?}: must start with / and hold only printable \
                 ASCII"
            )));
        }
        let weight = if path_and_query.starts_with("/admin/") {
            0
        } else {
            match Endpoint::parse(path_and_query) {
                Some(endpoint) => endpoint.weight(),
                None => {
                    return Err(RestError::Invalid(format!(
                        "request target {path_and_query:?}: unknown endpoint, so unknown weight"
                    )));
                }
            }
        };
        let body = self.get(path_and_query, weight, false).await?;
        decode(path_and_query, &body)
    }

    async fn get_typed<T: DeserializeOwned>(
        &mut self,
        path_and_query: &str,
        endpoint: Endpoint,
    ) -> Result<T, RestError> {
        let body = self.get(path_and_query, endpoint.weight(), false).await?;
        decode(path_and_query, &body)
    }

    /// A market-data GET in the client's format: SBE decoded by `sbe`, or JSON. Asked in SBE,
    /// a 406 (SBE disabled) falls back to JSON at once; an SBE answer that does not decode, or
    /// an SBE-encoded error, is asked again in JSON, and if that answer is good the client
    /// stays on JSON. Either fall back is said once in the log.
    async fn fetch<T: DeserializeOwned>(
        &mut self,
        path_and_query: &str,
        endpoint: Endpoint,
        sbe: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, RestError> {
        let weight = endpoint.weight();
        if self.format() == RestFormat::Json {
            return self.get_typed(path_and_query, endpoint).await;
        }
        let answer = self.answer(path_and_query, weight, true).await?;
        if answer.status == HTTP_NOT_ACCEPTABLE {
            self.fall_back(path_and_query, "HTTP 406: SBE is not accepted");
            return self.get_typed(path_and_query, endpoint).await;
        }
        if !is_sbe(&answer.headers) {
            // Binance answers JSON when it cannot answer SBE for this request.
            let body = checked(answer)?;
            return decode(path_and_query, &body);
        }
        let failure = if (200..300).contains(&answer.status) {
            match sbe(&answer.body) {
                Ok(value) => return Ok(value),
                Err(why) => why,
            }
        } else {
            http_error(answer.status, &answer.body).to_string()
        };
        let value = self.get_typed(path_and_query, endpoint).await?;
        self.fall_back(path_and_query, &failure);
        Ok(value)
    }

    fn fall_back(&mut self, path_and_query: &str, why: &str) {
        if !self.fell_back {
            self.fell_back = true;
            tracing::warn!(
                server = %self.target.authority,
                path = path_and_query,
                "REST: SBE failed ({why}); using JSON from now on"
            );
        }
    }

    /// Sends one GET of `weight` unless refused locally; the body of a 2xx answer.
    async fn get(
        &mut self,
        path_and_query: &str,
        weight: u32,
        sbe: bool,
    ) -> Result<Bytes, RestError> {
        let answer = self.answer(path_and_query, weight, sbe).await?;
        checked(answer)
    }

    /// Sends one GET of `weight` unless refused locally, asking for SBE if `sbe`; the whole
    /// answer, whatever its status but 429 and 418, which start a hold and are errors.
    async fn answer(
        &mut self,
        path_and_query: &str,
        weight: u32,
        sbe: bool,
    ) -> Result<Answer, RestError> {
        if let Err(e) = path_and_query.parse::<http::uri::PathAndQuery>() {
            return Err(RestError::Invalid(format!(
                "request target {path_and_query:?}: {e}"
            )));
        }
        if weight > 0 {
            self.admit(weight)?;
        }
        let timeout = self.timeout;
        let round_trip = self.round_trip(path_and_query, sbe);
        let answer = match tokio::time::timeout(timeout, round_trip).await {
            Ok(result) => result?,
            Err(_) => {
                // The connection may still owe the answer: never reuse it.
                self.conn = None;
                return Err(RestError::Io(format!(
                    "GET {path_and_query}: no complete answer within {:?}",
                    self.timeout
                )));
            }
        };
        let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
        let used_weight = rate_limit::parse_used_weight(header(USED_WEIGHT_HEADER));
        if let Some(used) = used_weight {
            self.weight.observe(used, unix_ms());
        }
        tracing::debug!(
            path = path_and_query,
            status = answer.status,
            used_weight = ?used_weight,
            bytes = answer.body.len(),
            sbe = is_sbe(&answer.headers),
            "REST response"
        );
        if sbe && !self.deprecated_seen && answer.headers.contains_key(rest_sbe::DEPRECATED_HEADER)
        {
            self.deprecated_seen = true;
            tracing::warn!(
                server = %self.target.authority,
                schema = %rest_sbe::schema_header_value(),
                "REST: Binance marks this SBE schema deprecated (X-MBX-SBE-DEPRECATED); answers \
                 still decode, but update schemas/binance_spot_3_5.xml to the current schema"
            );
        }
        let retry_after = rate_limit::parse_retry_after(header(RETRY_AFTER_HEADER));
        match rate_limit::hold_after(answer.status, retry_after, unix_ms()) {
            Some(rule) => Err(self.hold_for(rule)),
            None => Ok(answer),
        }
    }

    /// Refuses a weighted request while a 429 or 418 holds, or when it would pass the budget;
    /// counts it otherwise.
    fn admit(&mut self, weight: u32) -> Result<(), RestError> {
        if let Some(hold) = self.hold {
            let left = hold.until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(RestError::BackingOff {
                    retry_after: left,
                    banned: hold.banned,
                });
            }
            self.hold = None;
        }
        self.weight
            .admit(weight, self.budget, unix_ms())
            .map_err(|over| RestError::WouldExceed {
                weight: over.weight,
                used: over.used,
                budget: over.budget,
                retry_after: over.retry_after,
            })
    }

    fn hold_for(&mut self, rule: rate_limit::HoldRule) -> RestError {
        let rate_limit::HoldRule {
            retry_after,
            banned,
        } = rule;
        tracing::warn!(?retry_after, banned, "REST requests held back");
        self.hold = Some(Hold {
            until: Instant::now() + retry_after,
            banned,
        });
        if banned {
            RestError::Banned {
                until: SystemTime::now() + retry_after,
                retry_after,
            }
        } else {
            RestError::RateLimited { retry_after }
        }
    }

    /// Sends the GET on the kept connection, or on a fresh one if there is none or it is
    /// closed, and reads the whole answer. A kept connection that closes before answering gets
    /// the request once more on a fresh one.
    async fn round_trip(&mut self, path_and_query: &str, sbe: bool) -> Result<Answer, RestError> {
        let kept = match self.conn.take() {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let (sender, response) = match kept {
            Some(mut sender) => match sender
                .send_request(self.request(path_and_query, sbe)?)
                .await
            {
                Ok(response) => (sender, response),
                Err(e) if closed_before_answer(&e) => {
                    tracing::debug!(error = %chain(&e), "kept REST connection closed; resending");
                    self.send_fresh(path_and_query, sbe).await?
                }
                Err(e) => return Err(io_error(&e)),
            },
            None => self.send_fresh(path_and_query, sbe).await?,
        };
        // Any failure below drops the sender: a connection with an unread rest is not reused.
        let answer = read_answer(response, self.body_max).await?;
        self.conn = Some(sender);
        Ok(answer)
    }

    async fn send_fresh(
        &mut self,
        path_and_query: &str,
        sbe: bool,
    ) -> Result<(Sender, http::Response<hyper::body::Incoming>), RestError> {
        let mut sender = self.connect().await?;
        let response = sender
            .send_request(self.request(path_and_query, sbe)?)
            .await
            .map_err(|e| io_error(&e))?;
        Ok((sender, response))
    }

    /// The GET; `sbe` asks for SBE only (PROTOCOL.md 4.5: with JSON also accepted, Binance
    /// answers JSON).
    fn request(
        &self,
        path_and_query: &str,
        sbe: bool,
    ) -> Result<http::Request<Empty<Bytes>>, RestError> {
        let builder = http::Request::get(path_and_query)
            .header(HOST, self.target.authority.as_str())
            .header(USER_AGENT, concat!("hotpath/", env!("CARGO_PKG_VERSION")));
        let builder = if sbe {
            builder
                .header(ACCEPT, rest_sbe::ACCEPT_SBE)
                .header(rest_sbe::SBE_HEADER, rest_sbe::schema_header_value())
        } else {
            builder.header(ACCEPT, "application/json")
        };
        builder
            .body(Empty::new())
            .map_err(|e| RestError::Invalid(format!("request target {path_and_query:?}: {e}")))
    }

    /// Opens a connection (TCP, TLS for `https://`) and starts hyper's connection task on it.
    async fn connect(&mut self) -> Result<Sender, RestError> {
        let target = &self.target;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| RestError::Io(format!("cannot connect to {}: {e}", target.authority)))?;
        // Latency over throughput; failing to set it changes nothing else.
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
                    RestError::Io(format!(
                        "TLS handshake with {} failed: {e}",
                        target.authority
                    ))
                })?;
                if let Some(protocol) = stream.get_ref().1.alpn_protocol()
                    && protocol != b"http/1.1"
                {
                    return Err(RestError::Io(format!(
                        "{} negotiated ALPN {:?}; only HTTP/1.1 is spoken",
                        target.authority,
                        String::from_utf8_lossy(protocol)
                    )));
                }
                handshake(TokioIo::new(stream)).await
            }
        }
        .map_err(|e| RestError::Io(format!("HTTP with {}: {}", target.authority, chain(&e))))?;
        self.connects += 1;
        tracing::debug!(server = %target.authority, tls = target.tls, "REST connection opened");
        Ok(sender)
    }
}

/// Starts HTTP/1.1 on `io`: hyper's connection task runs on the current runtime until the
/// sender is dropped or the server closes.
async fn handshake<T>(io: T) -> Result<Sender, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "REST connection ended");
        }
    });
    Ok(sender)
}

/// The status, headers and whole body of `response`, refusing a body over `body_max` bytes.
async fn read_answer(
    response: http::Response<hyper::body::Incoming>,
    body_max: usize,
) -> Result<Answer, RestError> {
    let (parts, body) = response.into_parts();
    let too_large = || RestError::Io(format!("response body over {body_max} bytes"));
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| usize::try_from(length).map_or(true, |l| l > body_max)) {
        return Err(too_large());
    }
    let body = match Limited::new(body, body_max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(RestError::Io(format!(
                "cannot read the response body: {}",
                chain(e.as_ref())
            )));
        }
    };
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Whether the request failed because the connection closed before any answer: a kept
/// connection the server had closed meanwhile.
fn closed_before_answer(error: &hyper::Error) -> bool {
    error.is_canceled() || error.is_incomplete_message()
}

fn io_error(error: &hyper::Error) -> RestError {
    RestError::Io(format!("GET failed: {}", chain(error)))
}

/// An error and its sources, `: `-separated.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Whether the answer is SBE (`Content-Type: application/sbe`).
fn is_sbe(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(rest_sbe::ACCEPT_SBE))
}

/// The body of a 2xx answer, or the error of another: Binance's code and message, from JSON
/// or from an SBE `ErrorResponse`.
fn checked(answer: Answer) -> Result<Bytes, RestError> {
    if (200..300).contains(&answer.status) {
        return Ok(answer.body);
    }
    if is_sbe(&answer.headers)
        && let Some((code, msg)) = rest_sbe::error(&answer.body)
    {
        return Err(RestError::Http {
            status: answer.status,
            code: Some(code),
            msg,
        });
    }
    Err(http_error(answer.status, &answer.body))
}

fn check_list_limit(what: &str, limit: u32) -> Result<(), RestError> {
    if (1..=LIST_LIMIT_MAX).contains(&limit) {
        Ok(())
    } else {
        Err(RestError::Invalid(format!(
            "{what} limit {limit}: must be from 1 to {LIST_LIMIT_MAX}"
        )))
    }
}

fn check_symbol(symbol: &str) -> Result<(), RestError> {
    let valid = (1..=SYMBOL_LEN_MAX).contains(&symbol.len())
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(RestError::Invalid(format!(
            "symbol {symbol:?}: must match ^[A-Z0-9]{{1,20}}$"
        )))
    }
}

fn decode<T: DeserializeOwned>(path_and_query: &str, body: &[u8]) -> Result<T, RestError> {
    serde_json::from_slice(body)
        .map_err(|e| RestError::Decode(format!("GET {path_and_query}: {e}")))
}

/// The start of `body` as text, for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(ERROR_TEXT_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

/// A non-2xx answer other than 429 and 418.
fn http_error(status: u16, body: &[u8]) -> RestError {
    #[derive(Deserialize)]
    struct BinanceError {
        code: Option<i64>,
        msg: Option<String>,
    }
    match serde_json::from_slice::<BinanceError>(body) {
        Ok(BinanceError {
            code,
            msg: Some(msg),
        }) => RestError::Http { status, code, msg },
        Ok(BinanceError { code, msg: None }) => RestError::Http {
            status,
            code,
            msg: excerpt(body),
        },
        Err(_) => RestError::Http {
            status,
            code: None,
            msg: excerpt(body),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::decimal::mantissas;
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn base_urls_parse_or_are_refused_clearly() {
        let ok = [
            ("https://api.binance.com", true, "api.binance.com"),
            ("https://api.binance.com/", true, "api.binance.com"),
            ("https://api.binance.com:443", true, "api.binance.com"),
            ("http://127.0.0.1:9443", false, "127.0.0.1:9443"),
            ("http://localhost:80", false, "localhost"),
            ("https://localhost:8443", true, "localhost:8443"),
            ("http://[::1]:8080", false, "[::1]:8080"),
            ("http://[::1]", false, "[::1]"),
        ];
        for (url, tls, authority) in ok {
            let target = Target::parse(url).expect(url);
            assert_eq!(
                (target.tls, target.authority.as_str()),
                (tls, authority),
                "{url}"
            );
        }
        let bad = [
            "ftp://example.com",
            "api.binance.com",
            "HTTPS://api.binance.com",
            "https://",
            "https://api.binance.com/api/v3",
            "https://api.binance.com?x=1",
            "https://user@api.binance.com",
            "http://host:0",
            "http://host:65536",
            "http://host:+80",
            "http://host:",
            "http://ho st",
            "http://[::1",
            "http://[zz]:80",
            "http://[::1]x",
        ];
        for url in bad {
            let error = Target::parse(url).expect_err(url);
            assert!(error.contains("REST base URL"), "{error}");
        }
        assert!(matches!(
            RestClient::new("ws://localhost", None),
            Err(RestError::Invalid(ref m)) if m.contains("REST base URL")
        ));
    }

    #[test]
    fn symbols_are_checked_before_anything_is_sent() {
        assert!(check_symbol("BTCUSDT").is_ok());
        assert!(check_symbol("1000SATSUSDT").is_ok());
        for bad in [
            "",
            "btcusdt",
            "BTC-USDT",
            "BTC&limit=1",
            "ABCDEFGHIJKLMNOPQRSTU",
        ] {
            assert!(
                matches!(check_symbol(bad), Err(RestError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_display_what_happened() {
        let cases = [
            (RestError::Invalid("x".into()), "invalid request: x"),
            (
                RestError::RateLimited {
                    retry_after: Duration::from_secs(3),
                },
                "HTTP 429: request rate limit reached; retry after 3s",
            ),
            (
                RestError::Http {
                    status: 400,
                    code: Some(-1121),
                    msg: "Invalid symbol.".into(),
                },
                "HTTP 400: code -1121: Invalid symbol.",
            ),
            (
                RestError::BackingOff {
                    retry_after: Duration::from_secs(1),
                    banned: true,
                },
                "not sent: an IP ban (418) asks to wait 1s more",
            ),
            (
                RestError::Banned {
                    until: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                    retry_after: Duration::from_secs(120),
                },
                "HTTP 418: IP banned until 1700000000123 ms since the epoch (in 120s)",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
        let exceed = RestError::WouldExceed {
            weight: 5,
            used: 4998,
            budget: 5000,
            retry_after: Duration::from_secs(2),
        };
        assert!(
            exceed
                .to_string()
                .contains("would exceed the budget of 5000")
        );
        assert_eq!(exceed.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(RestError::Io("x".into()).retry_after(), None);
    }

    /// A scripted HTTP server: answers each request head with the next canned response, in
    /// 7-byte writes; closes each connection after one response if `close_each`, and stops
    /// answering when the script runs out.
    struct Script {
        addr: SocketAddr,
        accepts: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl Script {
        async fn start(responses: Vec<String>, close_each: bool) -> Script {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
            let addr = listener.local_addr().expect("an address");
            let accepts = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let responses = Arc::new(Mutex::new(VecDeque::from(responses)));
            let (a, r) = (accepts.clone(), requests.clone());
            tokio::spawn(async move {
                while let Ok((mut tcp, _)) = listener.accept().await {
                    a.fetch_add(1, Ordering::SeqCst);
                    let (requests, responses) = (r.clone(), responses.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                                let mut chunk = [0u8; 1024];
                                match tcp.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                                continue;
                            };
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            crate::sync::lock(&requests)
                                .push(String::from_utf8_lossy(&head).into_owned());
                            let Some(response) = crate::sync::lock(&responses).pop_front() else {
                                // Silent: never answers.
                                std::future::pending::<()>().await;
                                return;
                            };
                            for piece in response.as_bytes().chunks(7) {
                                if tcp.write_all(piece).await.is_err() {
                                    return;
                                }
                            }
                            if close_each {
                                return;
                            }
                        }
                    });
                }
            });
            Script {
                addr,
                accepts,
                requests,
            }
        }

        fn client(&self) -> RestClient {
            RestClient::new(&format!("http://{}", self.addr), None).expect("a client")
        }

        fn requests(&self) -> Vec<String> {
            crate::sync::lock(&self.requests).clone()
        }
    }

    fn response(status: &str, headers: &[&str], body: &str) -> String {
        let mut text = format!("HTTP/1.1 {status}\r\n");
        for header in headers {
            text.push_str(header);
            text.push_str("\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        text
    }

    fn chunked(body: &str, sizes: &[usize]) -> String {
        let mut text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                        X-MBX-USED-WEIGHT-1M: 30\r\n\r\n"
            .to_string();
        let mut rest = body;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, after) = rest.split_at(size.min(rest.len()));
            text.push_str(&format!("{:x};ext=1\r\n{chunk}\r\n", chunk.len()));
            rest = after;
        }
        text.push_str("0\r\nX-Trailer: t\r\n\r\n");
        text
    }

    const DEPTH_BODY: &str = r#"{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"],["3.99","1"]],"asks":[["4.00000200","12.00000000"]]}"#;

    #[tokio::test]
    async fn chunked_bodies_decode_and_the_connection_is_kept() {
        let script = Script::start(
            vec![chunked(DEPTH_BODY, &[1, 5, 17, 3]), chunked("[]", &[64])],
            false,
        )
        .await;
        let mut client = script.client();
        let depth = client.depth("BNBBTC", 100).await.expect("a snapshot");
        assert_eq!(depth.last_update_id, 1_027_024);
        assert_eq!(
            mantissas(&depth.bids, -8, -8),
            Ok(vec![
                (400_000_000, 43_100_000_000),
                (399_000_000, 100_000_000)
            ])
        );
        assert_eq!(
            depth.asks,
            Levels::Text(vec![("4.00000200".to_string(), "12.00000000".to_string())])
        );
        assert_eq!(client.weight.last_used(), 30);
        let trades = client
            .historical_trades("BNBBTC", Some(7), 3)
            .await
            .expect("trades");
        assert!(trades.is_empty());
        assert_eq!(script.accepts.load(Ordering::SeqCst), 1);
        assert_eq!(client.connects(), 1);
        let requests = script.requests();
        assert!(
            requests[0].starts_with("GET /api/v3/depth?symbol=BNBBTC&limit=100 HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(
            requests[0].contains("\r\nHost: 127.0.0.1:"),
            "{}",
            requests[0]
        );
        assert!(
            requests[1].starts_with("GET /api/v3/historicalTrades?symbol=BNBBTC&fromId=7&limit=3 "),
            "{}",
            requests[1]
        );
    }

    #[tokio::test]
    async fn the_client_works_from_a_spawned_task() {
        let ok = response(
            "200 OK",
            &["X-MBX-USED-WEIGHT-1M: 2"],
            r#"{"serverTime":1700000000000}"#,
        );
        let script = Script::start(vec![ok], false).await;
        let mut client = script.client();
        let task = tokio::spawn(async move { client.server_time_ms().await });
        assert_eq!(task.await.expect("joined"), Ok(1_700_000_000_000));
    }

    #[tokio::test]
    async fn trades_decode_with_their_fields() {
        let body = r#"[{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}]"#;
        let script = Script::start(vec![response("200 OK", &[], body)], false).await;
        let mut client = script.client();
        let trades = client
            .historical_trades("BNBBTC", None, 500)
            .await
            .expect("trades");
        assert_eq!(
            trades,
            [RestTrade {
                id: 28457,
                price: "4.00000100".into(),
                qty: "12.00000000".into(),
                time_ms: 1_499_865_549_590,
                is_buyer_maker: true,
            }]
        );
        // Without a header the local estimate stands.
        assert_eq!(client.weight.last_used(), 25);
    }

    #[tokio::test]
    async fn a_closed_keep_alive_connection_is_reopened_transparently() {
        let ok = response("200 OK", &["X-MBX-USED-WEIGHT-1M: 1"], "{}");
        let script = Script::start(vec![ok.clone(), ok.clone(), ok], true).await;
        let mut client = script.client();
        for _ in 0..3 {
            client.ping().await.expect("pong");
        }
        assert_eq!(script.accepts.load(Ordering::SeqCst), 3);
        assert_eq!(client.connects(), 3);
        assert_eq!(script.requests().len(), 3, "each request sent once");
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let close = response("200 OK", &["Connection: close"], "{}");
        let script = Script::start(vec![close.clone(), close], false).await;
        let mut client = script.client();
        client.ping().await.expect("pong");
        client.ping().await.expect("pong");
        assert_eq!(client.connects(), 2);
        assert_eq!(script.requests().len(), 2);
    }

    #[tokio::test]
    async fn a_ban_is_reported_and_honoured_locally() {
        let body = r#"{"code":-1003,"msg":"Way too much request weight used; IP banned until 1700000120000."}"#;
        let banned = response(
            "418 I'm a teapot",
            &["Retry-After: 120", "X-MBX-USED-WEIGHT-1M: 0"],
            body,
        );
        let script = Script::start(vec![banned], false).await;
        let mut client = script.client();
        let before = SystemTime::now();
        let error = client.ping().await.expect_err("banned");
        let RestError::Banned { until, retry_after } = error else {
            panic!("{error:?}");
        };
        assert_eq!(retry_after, Duration::from_secs(120));
        assert!(until >= before + retry_after, "{until:?}");
        let again = client.depth("BTCUSDT", 5).await.expect_err("held back");
        assert!(
            matches!(again, RestError::BackingOff { banned: true, retry_after }
                if retry_after <= Duration::from_secs(120) && retry_after > Duration::from_secs(100)),
            "{again:?}"
        );
        assert!(client.backoff_remaining().is_some());
        assert_eq!(
            script.requests().len(),
            1,
            "the second request was not sent"
        );
    }

    #[tokio::test]
    async fn a_429_is_reported_and_honoured_locally() {
        let limited = response(
            "429 Too Many Requests",
            &["Retry-After: 7", "X-MBX-USED-WEIGHT-1M: 6005"],
            r#"{"code":-1003,"msg":"Too much request weight used"}"#,
        );
        let script = Script::start(vec![limited], false).await;
        let mut client = script.client();
        let error = client.depth("BTCUSDT", 5).await.expect_err("limited");
        assert_eq!(
            error,
            RestError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
        let again = client.ping().await.expect_err("held back");
        assert!(
            matches!(again, RestError::BackingOff { banned: false, .. }),
            "{again:?}"
        );
        // Ground truth stays reachable (weight 0) ... but the script has run out, so only
        // check it is not refused locally: it times out instead.
        client.set_timeout(Duration::from_millis(200));
        let admin = client.get_json("/admin/symbols").await.expect_err("silent");
        assert!(
            matches!(admin, RestError::Io(ref m) if m.contains("within")),
            "{admin:?}"
        );
        assert_eq!(script.requests().len(), 2);
    }

    #[tokio::test]
    async fn other_statuses_carry_binances_code_and_message() {
        let script = Script::start(
            vec![
                response(
                    "400 Bad Request",
                    &[],
                    r#"{"code":-1121,"msg":"Invalid symbol."}"#,
                ),
                response("404 Not Found", &[], "{}"),
                response("502 Bad Gateway", &[], "<html>upstream</html>"),
                response("200 OK", &[], "{\"lastUpdateId\":"),
            ],
            false,
        )
        .await;
        let mut client = script.client();
        assert_eq!(
            client.depth("NOSUCH", 5).await,
            Err(RestError::Http {
                status: 400,
                code: Some(-1121),
                msg: "Invalid symbol.".into()
            })
        );
        assert_eq!(
            client.ping().await,
            Err(RestError::Http {
                status: 404,
                code: None,
                msg: "{}".into()
            })
        );
        assert_eq!(
            client.ping().await,
            Err(RestError::Http {
                status: 502,
                code: None,
                msg: "<html>upstream</html>".into()
            })
        );
        let truncated = client.depth("BTCUSDT", 5).await.expect_err("bad JSON");
        assert!(matches!(truncated, RestError::Decode(_)), "{truncated:?}");
        assert_eq!(client.connects(), 1);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_fail() {
        let big = "x".repeat(1000);
        let script = Script::start(
            vec![
                response("200 OK", &[], &big),
                chunked(&big, &[300]),
                response("200 OK", &[], "{}"),
            ],
            false,
        )
        .await;
        let mut client = script.client();
        client.set_body_limit(999);
        for _ in 0..2 {
            let error = client.ping().await.expect_err("too large");
            assert!(
                matches!(error, RestError::Io(ref m) if m.contains("over 999 bytes")),
                "{error:?}"
            );
        }
        // The connection with the unread rest was dropped; a new one serves on.
        client.ping().await.expect("pong");
        assert_eq!(client.connects(), 3);
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let script = Script::start(Vec::new(), false).await;
        let mut client = script.client();
        client.set_timeout(Duration::from_millis(100));
        assert_eq!(client.timeout(), Duration::from_millis(100));
        let error = client.ping().await.expect_err("no answer");
        assert!(
            matches!(error, RestError::Io(ref m) if m.contains("no complete answer within")),
            "{error:?}"
        );
        assert_eq!(script.requests().len(), 1);
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_before_connecting() {
        let mut client = RestClient::new("http://127.0.0.1:9", None).expect("a client");
        let refused = [
            client.depth("btcusdt", 100).await,
            client.depth("BTCUSDT", 0).await,
            client.depth("BTCUSDT", 5_001).await,
        ];
        for result in refused {
            assert!(matches!(result, Err(RestError::Invalid(_))), "{result:?}");
        }
        for result in [
            client.historical_trades("BTCUSDT", Some(-1), 10).await,
            client.historical_trades("BTCUSDT", None, 1_001).await,
        ] {
            assert!(matches!(result, Err(RestError::Invalid(_))), "{result:?}");
        }
        for target in ["api/v3/ping", "/api/v3/ping\r\nX: y", "/api/v3/order?x=1"] {
            let result = client.get_json(target).await;
            assert!(matches!(result, Err(RestError::Invalid(_))), "{target:?}");
        }
        client.set_weight_budget(4);
        assert_eq!(client.weight_budget(), 4);
        let result = client.depth("BTCUSDT", 100).await;
        assert!(
            matches!(
                result,
                Err(RestError::WouldExceed {
                    weight: 5,
                    used: 0,
                    budget: 4,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(client.connects(), 0);
        assert_eq!(client.used_weight(), 0);
    }
}
