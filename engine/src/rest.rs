//! A small async Binance REST client for the market-data endpoints the engine needs: depth
//! snapshots, to anchor or re-anchor a local book (PROTOCOL.md 4.4), and historical trades, to
//! fill a trade-id gap. It speaks to Binance (`https://api.binance.com`,
//! `https://data-api.binance.vision`) and to hotpath's simulator (`http://127.0.0.1:PORT`, or
//! `https://localhost:PORT` with the simulator's certificate trusted), which serves REST on the
//! same port as its WebSockets.
//!
//! # Transport
//!
//! HTTP/1.1 `GET` over one kept-alive connection (plain TCP or rustls), opened on first use and
//! reopened transparently when the server closed it between requests (GETs are idempotent, so
//! a request that got no byte back on a reused connection is sent again once, on a fresh one).
//! Bodies come with `Content-Length`, `Transfer-Encoding: chunked` (Binance's) or up to the end
//! of the connection, and are capped ([`BODY_MAX_BYTES`] by default). Every request, connect and
//! TLS handshake included, has a deadline ([`DEFAULT_TIMEOUT`] by default).
//!
//! # Request weight (PROTOCOL.md 4.3)
//!
//! Binance counts `REQUEST_WEIGHT` per IP in fixed minutes aligned to the clock and reports the
//! minute's total in `X-MBX-USED-WEIGHT-1M` on every response. The client keeps the last value
//! it saw (for the minute it arrived in), adds the weight of each request before sending it,
//! and refuses locally, with [`RestError::WouldExceed`] and without sending, a request that
//! would take the minute past its budget ([`DEFAULT_WEIGHT_BUDGET`], Binance's 6000 minus a
//! margin for other users of the IP). Weights are known before sending ([`Endpoint::weight`]).
//!
//! # 429 and 418
//!
//! HTTP 429 is [`RestError::RateLimited`] and HTTP 418 (an IP ban) [`RestError::Banned`], both
//! timed by `Retry-After` (seconds). Until that time has passed, every weighted request is
//! refused locally with [`RestError::BackingOff`]: Binance bans IPs that keep sending after a
//! 429, so the client never does. Requests of weight 0 (the simulator's `/admin/...` ground
//! truth, see [`crate::sim::rest`]) are neither budgeted nor held back.
//!
//! # Prices and quantities
//!
//! Binance sends decimals as strings (`"69769.88000000"`). The engine keeps them as `i64`
//! mantissas at the SBE frames' exponents: [`parse_decimal`] converts one exactly, refusing
//! anything that would round, and [`mantissas`] converts a side of a [`DepthSnapshot`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The deadline of one request unless [`RestClient::set_timeout`] changes it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The request weight the client lets itself use per minute unless
/// [`RestClient::set_weight_budget`] changes it: Binance allows 6000, the rest is a margin
/// for other processes on the same IP.
pub const DEFAULT_WEIGHT_BUDGET: u32 = 5_000;
/// The largest response body accepted unless [`RestClient::set_body_limit`] changes it (a
/// 5000-level depth snapshot is about 0.4 MB).
pub const BODY_MAX_BYTES: usize = 64 << 20;
/// The response header carrying the weight used in the current minute.
pub const USED_WEIGHT_HEADER: &str = "X-MBX-USED-WEIGHT-1M";
/// The largest `limit` of `/api/v3/depth`.
pub const DEPTH_LIMIT_MAX: u32 = 5_000;
/// The largest `limit` of `/api/v3/historicalTrades` (and the other trade lists).
pub const TRADES_LIMIT_MAX: u32 = 1_000;

/// The largest response head accepted.
const HEAD_MAX_BYTES: usize = 64 * 1024;
/// Response headers parsed at most.
const HEADERS_MAX: usize = 100;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// The longest chunk-size line of a chunked body.
const CHUNK_LINE_MAX: usize = 1024;
/// Binance's rate-limit window.
const WINDOW_MS: i64 = 60_000;
/// The shortest Binance IP ban, assumed when a 418 comes without `Retry-After`.
const BAN_DEFAULT: Duration = Duration::from_secs(2 * 60);
/// Symbols as Binance spells them: `^[A-Z0-9]{1,20}$`.
const SYMBOL_LEN_MAX: usize = 20;
/// `/api/v3/depth` weight by limit: (largest limit, weight), ascending.
const DEPTH_WEIGHTS: [(u32, u32); 4] = [(100, 5), (500, 25), (1_000, 50), (5_000, 250)];
const _: () = assert!(DEPTH_WEIGHTS[DEPTH_WEIGHTS.len() - 1].0 == DEPTH_LIMIT_MAX);
/// `limit` of `/api/v3/depth` when absent.
const DEPTH_LIMIT_DEFAULT: u32 = 100;
/// Response text kept in an error message.
const ERROR_TEXT_MAX: usize = 200;
/// Where Linux distributions and macOS keep their CA bundle, tried in order when
/// `SSL_CERT_FILE` is not set.
const CA_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

/// Why a request failed. The variants that say "nothing was sent" were decided locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestError {
    /// A bad argument (symbol, limit, path); nothing was sent.
    Invalid(String),
    /// Sending would take the minute's used weight past the budget; nothing was sent.
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
    RateLimited {
        /// How long Binance asked to wait (`Retry-After`).
        retry_after: Duration,
    },
    /// HTTP 418: the IP is banned. Weighted requests are refused locally until the ban ends.
    Banned {
        /// When the ban ends (now plus `Retry-After`).
        until: SystemTime,
        /// How long Binance asked to wait (`Retry-After`).
        retry_after: Duration,
    },
    /// An earlier 429 or 418 asked to wait and that wait is not over; nothing was sent.
    BackingOff {
        /// Time left.
        retry_after: Duration,
        /// Whether the wait is a ban (418) rather than a 429.
        banned: bool,
    },
    /// Any other non-2xx answer, with Binance's `{"code":..,"msg":..}` when the body is one.
    Http {
        /// HTTP status.
        status: u16,
        /// Binance's error code, if the body carried one.
        code: Option<i64>,
        /// Binance's message, or the start of the body.
        msg: String,
    },
    /// The connection failed: connect, TLS, reset, deadline, malformed or oversized response.
    Io(String),
    /// A 2xx body that is not what the endpoint returns.
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

impl fmt::Display for RestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestError::Invalid(msg) => write!(f, "invalid request: {msg}"),
            RestError::WouldExceed {
                weight,
                used,
                budget,
                retry_after,
            } => write!(
                f,
                "request weight {weight} on top of {used} used would exceed the budget of \
                 {budget} per minute (not sent; the minute ends in {retry_after:?})"
            ),
            RestError::RateLimited { retry_after } => write!(
                f,
                "HTTP 429: request rate limit reached; retry after {retry_after:?}"
            ),
            RestError::Banned { until, retry_after } => {
                let until_ms = until
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                write!(
                    f,
                    "HTTP 418: IP banned until {until_ms} ms since the epoch \
                     (in {retry_after:?})"
                )
            }
            RestError::BackingOff {
                retry_after,
                banned,
            } => write!(
                f,
                "not sent: {} asks to wait {retry_after:?} more",
                if *banned { "an IP ban (418)" } else { "a 429" }
            ),
            RestError::Http { status, code, msg } => match code {
                Some(code) => write!(f, "HTTP {status}: code {code}: {msg}"),
                None => write!(f, "HTTP {status}: {msg}"),
            },
            RestError::Io(msg) => write!(f, "REST transport error: {msg}"),
            RestError::Decode(msg) => write!(f, "unexpected REST response: {msg}"),
        }
    }
}

impl std::error::Error for RestError {}

/// A Binance market-data endpoint, for its request weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/v3/ping`: 1.
    Ping,
    /// `/api/v3/time`: 1.
    Time,
    /// `/api/v3/exchangeInfo`: 20.
    ExchangeInfo,
    /// `/api/v3/depth`: by `limit`, see [`depth_weight`].
    Depth {
        /// The `limit` asked for.
        limit: u32,
    },
    /// `/api/v3/trades`: 25.
    Trades,
    /// `/api/v3/historicalTrades`: 25.
    HistoricalTrades,
    /// `/api/v3/aggTrades`: 4.
    AggTrades,
    /// `/api/v3/klines`: 2.
    Klines,
    /// `/api/v3/ticker/24hr`: 2 for one `symbol`, 80 otherwise (the most a `symbols` list
    /// costs, and every symbol).
    Ticker24hr {
        /// Whether one `symbol` was given.
        one_symbol: bool,
    },
}

impl Endpoint {
    /// Binance's request weight.
    pub fn weight(self) -> u32 {
        match self {
            Endpoint::Ping | Endpoint::Time => 1,
            Endpoint::ExchangeInfo => 20,
            Endpoint::Depth { limit } => depth_weight(limit),
            Endpoint::Trades | Endpoint::HistoricalTrades => 25,
            Endpoint::AggTrades => 4,
            Endpoint::Klines => 2,
            Endpoint::Ticker24hr { one_symbol: true } => 2,
            Endpoint::Ticker24hr { one_symbol: false } => 80,
        }
    }

    /// The endpoint of a request target such as `/api/v3/depth?symbol=BTCUSDT&limit=500`;
    /// `None` for paths this client does not know the weight of.
    pub fn parse(path_and_query: &str) -> Option<Endpoint> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .filter(|v| !v.is_empty())
        };
        Some(match path {
            "/api/v3/ping" => Endpoint::Ping,
            "/api/v3/time" => Endpoint::Time,
            "/api/v3/exchangeInfo" => Endpoint::ExchangeInfo,
            // Binance charges an absent or unparsable limit as the default, and clamps a
            // larger one to the maximum.
            "/api/v3/depth" => Endpoint::Depth {
                limit: param("limit")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(DEPTH_LIMIT_DEFAULT, |l| {
                        u32::try_from(l.min(u64::from(DEPTH_LIMIT_MAX))).unwrap_or(DEPTH_LIMIT_MAX)
                    }),
            },
            "/api/v3/trades" => Endpoint::Trades,
            "/api/v3/historicalTrades" => Endpoint::HistoricalTrades,
            "/api/v3/aggTrades" => Endpoint::AggTrades,
            "/api/v3/klines" => Endpoint::Klines,
            "/api/v3/ticker/24hr" => Endpoint::Ticker24hr {
                one_symbol: param("symbol").is_some(),
            },
            _ => return None,
        })
    }
}

/// The weight of `/api/v3/depth` at `limit`: 5 for 1-100, 25 for 101-500, 50 for 501-1000,
/// 250 above (Binance serves at most 5000 levels).
pub fn depth_weight(limit: u32) -> u32 {
    DEPTH_WEIGHTS
        .iter()
        .find(|(max, _)| limit <= *max)
        .map_or(DEPTH_WEIGHTS[DEPTH_WEIGHTS.len() - 1].1, |&(_, w)| w)
}

/// A `/api/v3/depth` answer, prices and quantities as the decimal strings Binance sends.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DepthSnapshot {
    /// The book's update id: the snapshot is the book after this diff.
    #[serde(rename = "lastUpdateId")]
    pub last_update_id: i64,
    /// Bids, best (highest price) first: `(price, quantity)`.
    pub bids: Vec<(String, String)>,
    /// Asks, best (lowest price) first: `(price, quantity)`.
    pub asks: Vec<(String, String)>,
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

/// Parses a decimal such as `"12345.67000000"` or `"-0.5"` exactly into its mantissa at
/// `exponent` (`"12345.67000000"` at -8 is 1234567000000). `None` when the text is not
/// `-?[0-9]+(\.[0-9]+)?`, when it has a non-zero digit finer than `10^exponent`, or when the
/// mantissa does not fit an `i64`. Trailing and leading zeros are free.
pub fn parse_decimal(text: &str, exponent: i8) -> Option<i64> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((int_part, frac_part)) => (int_part, frac_part),
        None => (unsigned, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let has_point = unsigned.len() != int_part.len();
    if int_part.is_empty()
        || (has_point && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return None;
    }
    // value = digits * 10^-frac_len, so mantissa = digits * 10^(-frac_len - exponent).
    let digits = int_part.bytes().chain(frac_part.bytes());
    let len = int_part.len() + frac_part.len();
    let shift = -i64::try_from(frac_part.len()).ok()? - i64::from(exponent);
    // A negative shift drops that many trailing digits, which must all be zeros (digits
    // beyond the text's length are leading zeros: nothing to check there).
    let dropped = usize::try_from(-shift).unwrap_or(0);
    let kept = len.saturating_sub(dropped);
    // The magnitude of i64::MIN.
    let limit = u128::from(i64::MIN.unsigned_abs());
    let mut magnitude: u128 = 0;
    for (i, digit) in digits.enumerate() {
        let digit = u128::from(digit - b'0');
        if i < kept {
            magnitude = magnitude * 10 + digit;
            if magnitude > limit {
                return None;
            }
        } else if digit != 0 {
            return None;
        }
    }
    if magnitude != 0 {
        for _ in 0..shift.max(0) {
            magnitude *= 10;
            if magnitude > limit {
                return None;
            }
        }
    }
    if negative {
        // 0 ..= 2^63 fits i128; its negation fits i64.
        i64::try_from(-i128::try_from(magnitude).ok()?).ok()
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Converts `(price, quantity)` levels as Binance sends them into mantissas at the given
/// exponents (the SBE frames': -8 for the simulator), exactly, or says which level does not
/// convert.
pub fn mantissas(
    levels: &[(String, String)],
    price_exponent: i8,
    qty_exponent: i8,
) -> Result<Vec<(i64, i64)>, String> {
    levels
        .iter()
        .enumerate()
        .map(|(i, (price, qty))| {
            let exact = |text: &str, exponent: i8, what: &str| {
                parse_decimal(text, exponent).ok_or_else(|| {
                    format!(
                        "level {i}: {what} {text:?} is not a decimal exact at exponent \
                         {exponent} within i64"
                    )
                })
            };
            Ok((
                exact(price, price_exponent, "price")?,
                exact(qty, qty_exponent, "quantity")?,
            ))
        })
        .collect()
}

/// A rustls client configuration trusting the system's CA bundle: the file named by
/// `SSL_CERT_FILE`, else the first of the usual Linux and macOS bundle paths that exists.
/// [`RestClient::new`] uses it for `https://` when given no configuration.
///
/// The feed's WebSocket connector trusts the webpki roots compiled into tokio-tungstenite;
/// those are not reachable from here, so the REST client trusts the system's instead.
pub fn system_tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let paths: Vec<PathBuf> = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => vec![PathBuf::from(file)],
        None => CA_BUNDLES.iter().map(PathBuf::from).collect(),
    };
    tls_config_from_bundles(&paths).map(Arc::new)
}

/// A client configuration trusting every certificate of the first bundle in `paths` that
/// exists.
fn tls_config_from_bundles(paths: &[PathBuf]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let Some(path) = paths.iter().find(|p| p.is_file()) else {
        return Err(format!(
            "no CA bundle found (tried {}); set SSL_CERT_FILE or pass a TLS configuration",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Unparsable entries are skipped, as system bundles may hold a few odd ones.
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable CA certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Where requests go.
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
        let (host, port_text, ipv6) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((address, after)) = bracketed.split_once(']') else {
                return fail("an IPv6 address needs its closing ]");
            };
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return fail("not an IPv6 address between [ and ]");
            }
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return fail("only :port may follow ]"),
                },
            };
            (address, port, true)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port), false),
                None => (authority, None, false),
            }
        };
        if !ipv6
            && (host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        {
            return fail("the host must be a name or an address");
        }
        let default_port = if tls { 443 } else { 80 };
        let port = match port_text {
            None => default_port,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return fail("the port must be a number from 1 to 65535"),
            },
        };
        let shown_host = if ipv6 {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let authority = if port == default_port {
            shown_host
        } else {
            format!("{shown_host}:{port}")
        };
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

/// The weight used in the current minute, as far as the client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WeightWindow {
    /// The minute (`ms / 60000`) `used` belongs to.
    minute: i64,
    used: u32,
}

impl WeightWindow {
    fn new() -> WeightWindow {
        WeightWindow {
            minute: i64::MIN,
            used: 0,
        }
    }

    fn used_at(&self, now_ms: i64) -> u32 {
        if now_ms.div_euclid(WINDOW_MS) == self.minute {
            self.used
        } else {
            0
        }
    }

    /// Counts a request of `weight` at `now_ms`, or refuses it if it would pass `budget`.
    fn admit(&mut self, weight: u32, budget: u32, now_ms: i64) -> Result<(), RestError> {
        let used = self.used_at(now_ms);
        let after = used.saturating_add(weight);
        if after > budget {
            let to_next_minute = WINDOW_MS - now_ms.rem_euclid(WINDOW_MS);
            return Err(RestError::WouldExceed {
                weight,
                used,
                budget,
                retry_after: Duration::from_millis(to_next_minute.unsigned_abs()),
            });
        }
        self.minute = now_ms.div_euclid(WINDOW_MS);
        self.used = after;
        Ok(())
    }

    /// Takes the server's count, received at `now_ms`, over the local estimate. (A count
    /// received just after a minute boundary may belong to the minute before: keeping it for
    /// the new minute errs on the safe side.)
    fn observe(&mut self, used: u32, now_ms: i64) {
        self.minute = now_ms.div_euclid(WINDOW_MS);
        self.used = used;
    }
}

/// A wait a 429 or 418 imposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hold {
    until: Instant,
    banned: bool,
}

/// A byte stream the client can speak HTTP over.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One open connection and the bytes read from it but not used yet.
struct Conn {
    io: Box<dyn Stream>,
    buf: BytesMut,
    /// Whether any byte of the current response arrived.
    received: bool,
}

/// A response head, as far as the client needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    /// The server will close (or HTTP/1.0 without keep-alive).
    close: bool,
    used_weight: Option<u32>,
    retry_after: Option<Duration>,
}

/// A complete response.
#[derive(Clone, Debug)]
struct Response {
    head: Head,
    body: Bytes,
}

/// A failed exchange on one connection; `stale` when it may be retried on a fresh one (the
/// request could not be written, or the connection ended before any byte came back).
struct Failure {
    error: RestError,
    stale: bool,
}

impl Failure {
    fn fatal(msg: String) -> Failure {
        Failure {
            error: RestError::Io(msg),
            stale: false,
        }
    }
}

/// The async Binance REST client: one kept-alive connection, weight budgeting and 429/418
/// back-off (see the module doc). Requests take `&mut self`: one at a time.
pub struct RestClient {
    target: Target,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conn: Option<Conn>,
    timeout: Duration,
    budget: u32,
    body_max: usize,
    weight: WeightWindow,
    hold: Option<Hold>,
    connects: u64,
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
            .finish()
    }
}

impl RestClient {
    /// A client for `base_url`: `https://host[:port]` (Binance) or `http://host[:port]` (the
    /// simulator), nothing after the authority but an optional `/`. `tls` is the rustls
    /// configuration for `https://` (e.g. trusting the simulator's certificate, see
    /// [`crate::tls::client_config_trusting`]); `None` trusts the system's CA bundle
    /// ([`system_tls_config`]). It is ignored for `http://`. Nothing is connected yet.
    pub fn new(
        base_url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<RestClient, String> {
        let target = Target::parse(base_url)?;
        let tls = if target.tls {
            let config = match tls {
                Some(config) => config,
                None => system_tls_config()?,
            };
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("REST base URL {base_url:?}: bad TLS server name: {e}"))?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(RestClient {
            target,
            tls,
            conn: None,
            timeout: DEFAULT_TIMEOUT,
            budget: DEFAULT_WEIGHT_BUDGET,
            body_max: BODY_MAX_BYTES,
            weight: WeightWindow::new(),
            hold: None,
            connects: 0,
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
    /// the book's update id. Weight: [`depth_weight`].
    pub async fn depth(&mut self, symbol: &str, limit: u32) -> Result<DepthSnapshot, RestError> {
        check_symbol(symbol)?;
        if !(1..=DEPTH_LIMIT_MAX).contains(&limit) {
            return Err(RestError::Invalid(format!(
                "depth limit {limit}: must be from 1 to {DEPTH_LIMIT_MAX}"
            )));
        }
        let path = format!("/api/v3/depth?symbol={symbol}&limit={limit}");
        self.get_typed(&path, Endpoint::Depth { limit }).await
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
        self.get_typed(&path, Endpoint::HistoricalTrades).await
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
        let body = self.get(path_and_query, weight).await?;
        decode(path_and_query, &body)
    }

    async fn get_typed<T: DeserializeOwned>(
        &mut self,
        path_and_query: &str,
        endpoint: Endpoint,
    ) -> Result<T, RestError> {
        let body = self.get(path_and_query, endpoint.weight()).await?;
        decode(path_and_query, &body)
    }

    /// Sends one GET of `weight` unless refused locally; the body of a 2xx answer.
    async fn get(&mut self, path_and_query: &str, weight: u32) -> Result<Bytes, RestError> {
        if weight > 0 {
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
            self.weight.admit(weight, self.budget, unix_ms())?;
        }
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hotpath/{}\r\n\
             Accept: application/json\r\nConnection: keep-alive\r\n\r\n",
            self.target.authority,
            env!("CARGO_PKG_VERSION"),
        );
        let response = match tokio::time::timeout(self.timeout, self.round_trip(&request)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(RestError::Io(format!(
                    "GET {path_and_query}: no complete answer within {:?}",
                    self.timeout
                )));
            }
        };
        let head = &response.head;
        if let Some(used) = head.used_weight {
            self.weight.observe(used, unix_ms());
        }
        tracing::debug!(
            path = path_and_query,
            status = head.status,
            used_weight = ?head.used_weight,
            bytes = response.body.len(),
            "REST response"
        );
        match head.status {
            200..=299 => Ok(response.body),
            429 => {
                let retry_after = head.retry_after.unwrap_or_else(|| {
                    let to_next_minute = WINDOW_MS - unix_ms().rem_euclid(WINDOW_MS);
                    Duration::from_millis(to_next_minute.unsigned_abs())
                });
                self.hold_for(retry_after, false);
                Err(RestError::RateLimited { retry_after })
            }
            418 => {
                let retry_after = head.retry_after.unwrap_or(BAN_DEFAULT);
                self.hold_for(retry_after, true);
                Err(RestError::Banned {
                    until: SystemTime::now() + retry_after,
                    retry_after,
                })
            }
            status => Err(http_error(status, &response.body)),
        }
    }

    fn hold_for(&mut self, retry_after: Duration, banned: bool) {
        tracing::warn!(?retry_after, banned, "REST requests held back");
        self.hold = Some(Hold {
            until: Instant::now() + retry_after,
            banned,
        });
    }

    /// Sends `request` on the kept connection, or on a fresh one if there is none or it turned
    /// out closed; keeps the connection if it may serve another request.
    async fn round_trip(&mut self, request: &str) -> Result<Response, RestError> {
        if let Some(mut conn) = self.conn.take() {
            match exchange(&mut conn, request, self.body_max).await {
                Ok(response) => return Ok(self.keep(conn, response)),
                Err(failure) if failure.stale => {
                    tracing::debug!(error = %failure.error, "kept REST connection closed; reconnecting");
                }
                Err(failure) => return Err(failure.error),
            }
        }
        let mut conn = self.connect().await?;
        match exchange(&mut conn, request, self.body_max).await {
            Ok(response) => Ok(self.keep(conn, response)),
            Err(failure) => Err(failure.error),
        }
    }

    fn keep(&mut self, conn: Conn, response: Response) -> Response {
        if !response.head.close && conn.buf.is_empty() {
            self.conn = Some(conn);
        }
        response
    }

    async fn connect(&mut self) -> Result<Conn, RestError> {
        let target = &self.target;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| RestError::Io(format!("cannot connect to {}: {e}", target.authority)))?;
        // Latency over throughput; failing to set it changes nothing else.
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
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
                Box::new(stream)
            }
        };
        self.connects += 1;
        tracing::debug!(server = %target.authority, tls = target.tls, "REST connection opened");
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            received: false,
        })
    }
}

/// Milliseconds since the epoch.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

/// Writes `request` and reads its complete response.
async fn exchange(conn: &mut Conn, request: &str, body_max: usize) -> Result<Response, Failure> {
    conn.received = false;
    if !conn.buf.is_empty() {
        return Err(Failure::fatal(
            "bytes arrived before the request was sent".to_string(),
        ));
    }
    let written = async {
        conn.io.write_all(request.as_bytes()).await?;
        conn.io.flush().await
    };
    if let Err(e) = written.await {
        return Err(Failure {
            error: RestError::Io(format!("cannot send the request: {e}")),
            stale: true,
        });
    }
    let mut head = read_head(conn).await?;
    // Interim 1xx answers precede the real one.
    while (100..200).contains(&head.status) {
        head = read_head(conn).await?;
    }
    let body = read_body(conn, &mut head, body_max).await?;
    Ok(Response { head, body })
}

/// Reads more bytes into the connection's buffer; 0 at the end of the stream.
async fn fill(conn: &mut Conn) -> Result<usize, Failure> {
    conn.buf.reserve(READ_CHUNK);
    match conn.io.read_buf(&mut conn.buf).await {
        Ok(n) => {
            conn.received |= n > 0;
            Ok(n)
        }
        Err(e) => Err(Failure {
            stale: !conn.received,
            error: RestError::Io(format!("cannot read the response: {e}")),
        }),
    }
}

async fn fill_or_eof(conn: &mut Conn, inside: &str) -> Result<(), Failure> {
    if fill(conn).await? == 0 {
        return Err(Failure::fatal(format!(
            "connection closed inside the response {inside}"
        )));
    }
    Ok(())
}

async fn read_head(conn: &mut Conn) -> Result<Head, Failure> {
    loop {
        if !conn.buf.is_empty()
            && let Some((head, len)) = parse_head(&conn.buf).map_err(Failure::fatal)?
        {
            conn.buf.advance(len);
            return Ok(head);
        }
        if conn.buf.len() >= HEAD_MAX_BYTES {
            return Err(Failure::fatal(format!(
                "response head over {HEAD_MAX_BYTES} bytes"
            )));
        }
        if fill(conn).await? == 0 {
            return Err(Failure {
                stale: !conn.received,
                error: RestError::Io(if conn.received {
                    "connection closed inside the response head".to_string()
                } else {
                    "connection closed before any response".to_string()
                }),
            });
        }
    }
}

/// The head at the start of `buf` and its length, `None` if incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let http_10 = response.version == Some(0);
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        close: http_10,
        used_weight: None,
        retry_after: None,
    };
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| format!("header {} is not UTF-8", header.name))?
            .trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<u64>()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if head.content_length.is_some_and(|l| l != length) {
                return Err("conflicting Content-Length headers".to_string());
            }
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(format!("unsupported Transfer-Encoding {value:?}"));
            }
            head.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http_10 {
                    head.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case(USED_WEIGHT_HEADER) {
            // A malformed count is ignored: the local estimate stands.
            head.used_weight = value.parse().ok();
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = value.parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    if head.chunked && head.content_length.is_some() {
        // RFC 9112 6.3: chunked wins, and the connection must not be reused.
        head.content_length = None;
        head.close = true;
    }
    Ok(Some((head, len)))
}

async fn read_body(conn: &mut Conn, head: &mut Head, body_max: usize) -> Result<Bytes, Failure> {
    if head.status == 204 || head.status == 304 {
        return Ok(Bytes::new());
    }
    let too_large = || Failure::fatal(format!("response body over {body_max} bytes"));
    if head.chunked {
        return read_chunked(conn, body_max).await;
    }
    if let Some(length) = head.content_length {
        let length = usize::try_from(length)
            .ok()
            .filter(|&l| l <= body_max)
            .ok_or_else(too_large)?;
        if conn.buf.len() < length {
            conn.buf.reserve(length - conn.buf.len());
        }
        while conn.buf.len() < length {
            fill_or_eof(conn, "body").await?;
        }
        return Ok(conn.buf.split_to(length).freeze());
    }
    // Neither: the body lasts until the server closes.
    head.close = true;
    while fill(conn).await? > 0 {
        if conn.buf.len() > body_max {
            return Err(too_large());
        }
    }
    Ok(conn.buf.split().freeze())
}

/// One line (without its line end) from the buffer, reading as needed.
async fn read_line(conn: &mut Conn, max: usize) -> Result<Bytes, Failure> {
    loop {
        if let Some(end) = conn.buf.iter().position(|&b| b == b'\n') {
            let mut line = conn.buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            return Ok(line.freeze());
        }
        if conn.buf.len() > max {
            return Err(Failure::fatal(format!(
                "chunked body: a line over {max} bytes"
            )));
        }
        fill_or_eof(conn, "body").await?;
    }
}

async fn read_chunked(conn: &mut Conn, body_max: usize) -> Result<Bytes, Failure> {
    let mut body = BytesMut::new();
    loop {
        let line = read_line(conn, CHUNK_LINE_MAX).await?;
        let size_text = line.split(|&b| b == b';').next().unwrap_or(&[]);
        let size_text = std::str::from_utf8(size_text)
            .map_err(|_| Failure::fatal("chunked body: a bad chunk size".to_string()))?
            .trim();
        let hex = !size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_hexdigit());
        let size = hex
            .then(|| usize::from_str_radix(size_text, 16).ok())
            .flatten()
            .ok_or_else(|| Failure::fatal(format!("chunked body: bad chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers up to an empty line, ignored.
            let mut trailers = 0usize;
            loop {
                let line = read_line(conn, HEAD_MAX_BYTES).await?;
                if line.is_empty() {
                    return Ok(body.freeze());
                }
                trailers += line.len();
                if trailers > HEAD_MAX_BYTES {
                    return Err(Failure::fatal(format!(
                        "chunked body: trailers over {HEAD_MAX_BYTES} bytes"
                    )));
                }
            }
        }
        if size > body_max.saturating_sub(body.len()) {
            return Err(Failure::fatal(format!(
                "response body over {body_max} bytes"
            )));
        }
        let mut left = size;
        while left > 0 {
            if conn.buf.is_empty() {
                fill_or_eof(conn, "body").await?;
            }
            let take = left.min(conn.buf.len());
            body.extend_from_slice(&conn.buf[..take]);
            conn.buf.advance(take);
            left -= take;
        }
        while conn.buf.len() < 2 {
            fill_or_eof(conn, "body").await?;
        }
        if &conn.buf[..2] != b"\r\n" {
            return Err(Failure::fatal(
                "chunked body: a chunk does not end with CRLF".to_string(),
            ));
        }
        conn.buf.advance(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sbe_runtime::Decimal;
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    #[test]
    fn decimals_parse_exactly_at_the_exponent() {
        let cases: [(&str, i8, Option<i64>); 27] = [
            ("12345.67000000", -8, Some(1_234_567_000_000)),
            ("12345.67", -8, Some(1_234_567_000_000)),
            ("12345.67", -2, Some(1_234_567)),
            ("12345.670000000000000000000", -2, Some(1_234_567)),
            ("12345.671", -2, None),
            ("0.00000001", -8, Some(1)),
            ("0.000000001", -8, None),
            ("0.000000000", -8, Some(0)),
            ("-0.5", -1, Some(-5)),
            ("-0", -8, Some(0)),
            ("007.50", -2, Some(750)),
            ("1200", 2, Some(12)),
            ("1234", 2, None),
            ("12", 3, None),
            ("000", 5, Some(0)),
            ("92233720368.54775807", -8, Some(i64::MAX)),
            ("92233720368.54775808", -8, None),
            ("-92233720368.54775808", -8, Some(i64::MIN)),
            ("-92233720368.54775809", -8, None),
            ("99999999999999999999999999999999", 0, None),
            ("", -8, None),
            ("-", -8, None),
            ("1.", -8, None),
            (".5", -8, None),
            ("+1", -8, None),
            ("1e5", -8, None),
            (" 1", -8, None),
        ];
        for (text, exponent, want) in cases {
            assert_eq!(
                parse_decimal(text, exponent),
                want,
                "{text:?} at {exponent}"
            );
        }
        for bad in ["1 ", "1,5", "--1", "-.5", "1.2.3", "0x10", "１", "1.-2"] {
            assert_eq!(parse_decimal(bad, -8), None, "{bad:?}");
        }
        // Extreme exponents: many zeros, and no shift overflow.
        let zeros = "0".repeat(127);
        assert_eq!(parse_decimal(&format!("1{zeros}"), 127), Some(1));
        assert_eq!(parse_decimal(&format!("0.{zeros}1"), -128), Some(1));
        assert_eq!(parse_decimal("1", -128), None);
        assert_eq!(parse_decimal("0", -128), Some(0));
        assert_eq!(parse_decimal("1", 127), None);
    }

    fn pow10(k: u32) -> Option<i128> {
        10i128.checked_pow(k)
    }

    proptest! {
        #[test]
        fn decimals_round_trip_through_their_display(mantissa: i64, exponent: i8) {
            let text = Decimal::new(mantissa, exponent).to_string();
            prop_assert_eq!(parse_decimal(&text, exponent), Some(mantissa), "{}", text);
        }

        #[test]
        fn finer_and_coarser_exponents_scale_or_refuse(
            mantissa: i64,
            exponent in -20i8..=20,
            k in 0u32..=20,
        ) {
            let text = Decimal::new(mantissa, exponent).to_string();
            let shift = i8::try_from(k).expect("small");
            let scale = pow10(k).expect("10^20 fits i128");
            let finer = i128::from(mantissa)
                .checked_mul(scale)
                .and_then(|m| i64::try_from(m).ok());
            prop_assert_eq!(parse_decimal(&text, exponent - shift), finer, "{}", text);
            let coarser = (i128::from(mantissa) % scale == 0)
                .then(|| i64::try_from(i128::from(mantissa) / scale).ok())
                .flatten();
            prop_assert_eq!(parse_decimal(&text, exponent + shift), coarser, "{}", text);
        }
    }

    #[test]
    fn levels_convert_or_name_the_bad_one() {
        let levels = vec![
            ("69769.88000000".to_string(), "0.00100000".to_string()),
            ("69769.87".to_string(), "2".to_string()),
        ];
        assert_eq!(
            mantissas(&levels, -8, -8),
            Ok(vec![
                (6_976_988_000_000, 100_000),
                (6_976_987_000_000, 200_000_000)
            ])
        );
        assert_eq!(
            mantissas(&levels, -2, 0).map_err(|e| e.contains("level 0: quantity")),
            Err(true)
        );
        let bad = vec![
            ("1".to_string(), "1".to_string()),
            ("x".to_string(), "1".to_string()),
        ];
        let error = mantissas(&bad, -8, -8).expect_err("not a decimal");
        assert!(error.contains("level 1: price \"x\""), "{error}");
    }

    #[test]
    fn weights_are_binances() {
        let cases = [
            (1, 5),
            (100, 5),
            (101, 25),
            (500, 25),
            (501, 50),
            (1_000, 50),
            (1_001, 250),
            (5_000, 250),
            (9_999, 250),
        ];
        for (limit, weight) in cases {
            assert_eq!(depth_weight(limit), weight, "limit {limit}");
        }
        let parsed = [
            ("/api/v3/ping", Some(1)),
            ("/api/v3/time", Some(1)),
            ("/api/v3/exchangeInfo?symbol=BTCUSDT", Some(20)),
            ("/api/v3/depth?symbol=BTCUSDT", Some(5)),
            ("/api/v3/depth?symbol=BTCUSDT&limit=500", Some(25)),
            ("/api/v3/depth?limit=1000&symbol=BTCUSDT", Some(50)),
            ("/api/v3/depth?symbol=BTCUSDT&limit=99999999999", Some(250)),
            ("/api/v3/depth?symbol=BTCUSDT&limit=x", Some(5)),
            ("/api/v3/trades?symbol=BTCUSDT", Some(25)),
            ("/api/v3/historicalTrades?symbol=BTCUSDT&fromId=3", Some(25)),
            ("/api/v3/aggTrades?symbol=BTCUSDT", Some(4)),
            ("/api/v3/klines?symbol=BTCUSDT&interval=1m", Some(2)),
            ("/api/v3/ticker/24hr?symbol=BTCUSDT", Some(2)),
            ("/api/v3/ticker/24hr", Some(80)),
            ("/api/v3/order", None),
            ("/admin/book", None),
        ];
        for (target, weight) in parsed {
            assert_eq!(
                Endpoint::parse(target).map(Endpoint::weight),
                weight,
                "{target}"
            );
        }
    }

    #[test]
    fn base_urls_parse_or_are_refused_clearly() {
        let ok = [
            (
                "https://api.binance.com",
                true,
                "api.binance.com",
                443,
                "api.binance.com",
            ),
            (
                "https://api.binance.com/",
                true,
                "api.binance.com",
                443,
                "api.binance.com",
            ),
            (
                "http://127.0.0.1:9443",
                false,
                "127.0.0.1",
                9443,
                "127.0.0.1:9443",
            ),
            ("http://localhost:80", false, "localhost", 80, "localhost"),
            (
                "https://localhost:8443",
                true,
                "localhost",
                8443,
                "localhost:8443",
            ),
            ("http://[::1]:8080", false, "::1", 8080, "[::1]:8080"),
            ("http://[::1]", false, "::1", 80, "[::1]"),
        ];
        for (url, tls, host, port, authority) in ok {
            let target = Target::parse(url).expect(url);
            assert_eq!(
                (
                    target.tls,
                    target.host.as_str(),
                    target.port,
                    target.authority.as_str()
                ),
                (tls, host, port, authority),
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
        assert!(RestClient::new("ws://localhost", None).is_err());
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
    fn the_weight_window_budgets_per_clock_minute() {
        let mut window = WeightWindow::new();
        let minute = 29_000_000 * WINDOW_MS;
        assert_eq!(window.admit(40, 50, minute + 1_000), Ok(()));
        assert_eq!(window.used_at(minute + 1_000), 40);
        let refused = window.admit(25, 50, minute + 45_000);
        assert_eq!(
            refused,
            Err(RestError::WouldExceed {
                weight: 25,
                used: 40,
                budget: 50,
                retry_after: Duration::from_secs(15),
            })
        );
        assert_eq!(window.admit(10, 50, minute + 45_000), Ok(()));
        // The server's count replaces the estimate.
        window.observe(7, minute + 46_000);
        assert_eq!(window.used_at(minute + 46_000), 7);
        assert_eq!(window.admit(25, 50, minute + 47_000), Ok(()));
        // A new minute starts from 0.
        assert_eq!(window.used_at(minute + WINDOW_MS), 0);
        assert_eq!(window.admit(50, 50, minute + WINDOW_MS), Ok(()));
        assert!(window.admit(1, 50, minute + WINDOW_MS + 1).is_err());
        // Heavier than the whole budget: never.
        assert!(WeightWindow::new().admit(51, 50, minute).is_err());
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

    #[test]
    fn heads_are_parsed_for_what_the_client_needs() {
        let text = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 3\r\n\
                     x-mbx-used-weight-1m: 6011\r\nRetry-After: 17\r\n\r\nabc";
        let (head, len) = parse_head(text).expect("valid").expect("complete");
        assert_eq!(len, text.len() - 3);
        assert_eq!(
            head,
            Head {
                status: 429,
                content_length: Some(3),
                chunked: false,
                close: false,
                used_weight: Some(6011),
                retry_after: Some(Duration::from_secs(17)),
            }
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        let old = parse_head(b"HTTP/1.0 200 OK\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(old.0.close);
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n";
        let both = parse_head(both).expect("valid").expect("complete").0;
        assert!(both.chunked && both.close && both.content_length.is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn the_bundle_loader_trusts_a_pem_file() {
        let (_, pem) = crate::sim::tls::self_signed_acceptor().expect("a certificate");
        let dir = std::env::temp_dir().join(format!("hotpath-rest-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("bundle.pem");
        std::fs::write(&file, &pem).expect("written");
        let missing = dir.join("missing.pem");
        assert!(!missing.is_file());
        assert!(tls_config_from_bundles(&[missing.clone(), file.clone()]).is_ok());
        let none = tls_config_from_bundles(std::slice::from_ref(&missing)).expect_err("none");
        assert!(none.contains("no CA bundle found"), "{none}");
        std::fs::write(&file, "not a certificate").expect("written");
        let empty = tls_config_from_bundles(std::slice::from_ref(&file)).expect_err("empty");
        assert!(empty.contains("no usable CA certificate"), "{empty}");
        std::fs::remove_dir_all(&dir).expect("cleaned up");
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
            [("4.00000200".to_string(), "12.00000000".to_string())]
        );
        assert_eq!(client.weight.used, 30);
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
        assert_eq!(client.weight.used, 25);
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
