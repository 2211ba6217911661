//! Binance's regular JSON market streams, transcoded into the SBE frames everything downstream
//! consumes. A combined-stream text frame (`{"stream":"btcusdt@trade","data":{..}}`) is parsed
//! with borrowed fields (serde visitors over the text, no `String`, no `Value`), its decimal
//! strings are kept exact as mantissa and exponent, and the event is encoded with the generated
//! SBE encoders straight into the reader's [`FramePool`] ([`FramePool::start`] and
//! [`FramePool::finish`]), so a frame costs no allocation and is never copied again: the frame
//! path queues a pooled frame as it is ([`super::frame_path::Origin::Pooled`]).
//!
//! How each SBE field is filled (the JSON payloads are in `sim/encode.rs` and PROTOCOL.md):
//!
//! | SBE message | from JSON |
//! |---|---|
//! | `TradesStreamEvent` (one trade per frame: JSON sends one message per trade) | `eventTime` = `E` x 1000, `transactTime` = `T` x 1000, `id` = `t`, `price`/`qty` = `p`/`q`, `isBuyerMaker` = `m` |
//! | `BestBidAskStreamEvent` (`bookTicker`) | `bookUpdateId` = `u`, `b`/`B`/`a`/`A`; **`eventTime` = the local receive time** (Unix us): JSON bookTicker has no event time |
//! | `DepthDiffStreamEvent` (`depth@100ms`) | `eventTime` = `E` x 1000, `U`/`u`, `b`/`a` levels |
//! | `DepthSnapshotStreamEvent` (`depth20@100ms`) | `bookUpdateId` = `lastUpdateId`, `bids`/`asks`; **`eventTime` = the local receive time**: the partial book has no event time |
//!
//! Kline streams (`<s>@kline_<interval>`, subscribed when `[klines] intervals` is set) have no
//! SBE form: their event is parsed the same way (borrowed fields, exact decimals as `i128`
//! mantissas at [`crate::kline::EXPONENT`]) into the transcoder's [`KlineEvent`]
//! ([`Transcoded::Kline`], read with [`Transcoder::kline`]); the reader hands the closed ones
//! to the sidecar, which checks them against the trades the sinks delivered. They never reach
//! a sink: published candles are built from the delivered trades ([`crate::kline`]).
//!
//! The symbol is the stream name's (upper-cased; the partial book carries none). Times are
//! JSON milliseconds, so an SBE field filled from JSON is a whole millisecond in microseconds.
//! Each frame's price exponent is minus the most decimals any price of the message has, and at
//! most -8 (the same for quantities), so no value is rounded and every frame of a stream says
//! the same exponents whatever it holds (Binance prints 8 decimals, giving -8 like the SBE
//! streams; a depth diff without levels, or a value printed with fewer decimals, says -8 too:
//! consumers take a symbol's exponents from each frame). A value that does not fit an `i64` mantissa, a missing field or anything
//! else out of form makes the frame [`Transcoded::Malformed`]: counted and skipped by the
//! reader, never guessed at; [`Transcoder::malformed`] says why (the first one per reader is
//! logged).

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use sbe_runtime::EncodeError;

use super::pool::FramePool;
use crate::kline::{Candle, Interval};
use crate::sbe::spot_stream::{
    BestBidAskStreamEventEncoder, BoolEnum, DepthDiffStreamEventBidsEncoder,
    DepthDiffStreamEventEncoder, DepthSnapshotStreamEventEncoder, HEADER_LENGTH,
    TradesStreamEventEncoder, TradesStreamEventTradesEncoder,
};
use crate::stream::StreamKind;

/// The longest symbol a frame carries (`varString8`).
const SYMBOL_BYTES_MAX: usize = u8::MAX as usize;

/// Most decimals a value may have: 10^18 still fits an `i64`.
const DECIMALS_MAX: u8 = 18;
/// Fewest decimals a frame says (its exponents are at most minus this): Binance's 8.
const DECIMALS_MIN: u8 = 8;

const GROUP_SIZE_BYTES: usize = 6;
const GROUP_SIZE16_BYTES: usize = 4;
const LEVEL_BYTES: usize = DepthDiffStreamEventBidsEncoder::BLOCK_LENGTH;
const TRADE_FRAME_BYTES: usize = HEADER_LENGTH
    + TradesStreamEventEncoder::BLOCK_LENGTH
    + GROUP_SIZE_BYTES
    + TradesStreamEventTradesEncoder::BLOCK_LENGTH
    + 1;
const BBO_FRAME_BYTES: usize = HEADER_LENGTH + BestBidAskStreamEventEncoder::BLOCK_LENGTH + 1;
const DIFF_FIXED_BYTES: usize =
    HEADER_LENGTH + DepthDiffStreamEventEncoder::BLOCK_LENGTH + 2 * GROUP_SIZE16_BYTES + 1;
const SNAPSHOT_FIXED_BYTES: usize =
    HEADER_LENGTH + DepthSnapshotStreamEventEncoder::BLOCK_LENGTH + 2 * GROUP_SIZE16_BYTES + 1;

// PROTOCOL.md 2.2: one trade is 33 + 25 + L, bestBidAsk 59 + L, depth 43 / 35 + 16 per level + L.
const _: () = assert!(TRADE_FRAME_BYTES == 58 && BBO_FRAME_BYTES == 59 && LEVEL_BYTES == 16);
const _: () = assert!(DIFF_FIXED_BYTES == 43 && SNAPSHOT_FIXED_BYTES == 35);

/// What one text frame was.
#[derive(Debug)]
pub enum Transcoded {
    /// A market-data event, as the SBE frame of the same event.
    Frame(Bytes),
    /// Not market data (a control reply, `serverShutdown`): the slot's business.
    Control,
    /// A market-data frame that does not parse or convert: count it and skip it
    /// ([`Transcoder::malformed`] says why).
    Malformed,
    /// A kline event, held in the transcoder until the next frame ([`Transcoder::kline`]).
    Kline,
}

/// The longest symbol a kline event may name (Binance's are at most 20 characters).
pub const KLINE_SYMBOL_MAX: usize = 32;

/// One kline event (`<s>@kline_<interval>`) as parsed: exact values, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KlineEvent {
    symbol: [u8; KLINE_SYMBOL_MAX],
    symbol_len: u8,
    /// The stream's interval (the payload's `i` must be the same).
    pub interval: Interval,
    /// `x`: the candle is closed (its last update).
    pub closed: bool,
    /// `E`, Unix ms.
    pub event_ms: i64,
    /// `k`: `t`, `T`, `o`, `h`, `l`, `c`, `v`, `q`, `V`, `Q`, `n`, `f`, `L` (mantissas at
    /// [`crate::kline::EXPONENT`]).
    pub candle: Candle,
}

impl KlineEvent {
    /// The stream name's symbol, upper case.
    pub fn symbol(&self) -> &[u8] {
        &self.symbol[..usize::from(self.symbol_len).min(KLINE_SYMBOL_MAX)]
    }
}

impl Default for KlineEvent {
    fn default() -> Self {
        KlineEvent {
            symbol: [0; KLINE_SYMBOL_MAX],
            symbol_len: 0,
            interval: Interval {
                name: "1m",
                ms: 60_000,
            },
            closed: false,
            event_ms: 0,
            candle: Candle::flat(
                0,
                Interval {
                    name: "1m",
                    ms: 60_000,
                },
                0,
            ),
        }
    }
}

/// Why the last frame was [`Transcoded::Malformed`].
#[derive(Debug)]
pub enum Malformed {
    /// It does not parse (the parser's message: which field, what was expected).
    Parse(serde_json::Error),
    /// It parsed but does not convert: a field missing or out of range.
    Convert(&'static str),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Parse(e) => write!(f, "{e}"),
            Malformed::Convert(why) => f.write_str(why),
        }
    }
}

/// An exact decimal: `mantissa x 10^-decimals`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dec {
    /// The digits as an integer.
    pub mantissa: i64,
    /// Digits after the point.
    pub decimals: u8,
}

impl Dec {
    /// Parses `-?[0-9]+(\.[0-9]+)?` exactly; `None` when out of form or over an `i64`.
    pub fn parse(text: &str) -> Option<Dec> {
        let bytes = text.as_bytes();
        let (negative, digits) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        let mut magnitude: i64 = 0;
        let mut decimals: Option<u8> = None;
        let mut int_digits = 0usize;
        for &b in digits {
            match b {
                b'0'..=b'9' => {
                    magnitude = magnitude
                        .checked_mul(10)?
                        .checked_add(i64::from(b - b'0'))?;
                    match decimals.as_mut() {
                        Some(d) => *d = d.checked_add(1)?,
                        None => int_digits += 1,
                    }
                }
                b'.' if decimals.is_none() && int_digits > 0 => decimals = Some(0),
                _ => return None,
            }
        }
        if int_digits == 0 || decimals == Some(0) || decimals.unwrap_or(0) > DECIMALS_MAX {
            return None;
        }
        let mantissa = if negative { -magnitude } else { magnitude };
        Some(Dec {
            mantissa,
            decimals: decimals.unwrap_or(0),
        })
    }

    /// The mantissa at `decimals` (at least this value's), exactly; `None` on overflow.
    fn at(self, decimals: u8) -> Option<i64> {
        let shift = u32::from(decimals.checked_sub(self.decimals)?);
        self.mantissa.checked_mul(10i64.checked_pow(shift)?)
    }
}

/// Turns JSON text frames into SBE frames. One per connection task: it owns the depth scratch,
/// reused; the frames go into the pool it is given (the reader's), so the steady state
/// allocates nothing per frame.
pub struct Transcoder {
    scratch: Scratch,
    kline: KlineEvent,
    malformed: Option<Malformed>,
}

impl Default for Transcoder {
    fn default() -> Self {
        Transcoder::new()
    }
}

impl fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transcoder").finish_non_exhaustive()
    }
}

impl Transcoder {
    /// A transcoder with an empty scratch (its first depth frames size it).
    pub fn new() -> Transcoder {
        Transcoder {
            scratch: Scratch::default(),
            kline: KlineEvent::default(),
            malformed: None,
        }
    }

    /// Transcodes one text frame with serde_json (the crate chosen by the decode bench), `now_us`
    /// being the receive time (Unix us) for the events JSON gives no time, into `pool`.
    pub fn transcode(&mut self, text: &str, now_us: i64, pool: &mut FramePool) -> Transcoded {
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = self.parse(&mut de).and_then(|p| match de.end() {
            Ok(()) => Ok(p),
            Err(e) => Err(e),
        });
        match parsed {
            Ok(Some(head)) => self.encode(&head, now_us, pool),
            Ok(None) => Transcoded::Control,
            Err(e) => {
                self.malformed = Some(Malformed::Parse(e));
                Transcoded::Malformed
            }
        }
    }

    /// The kline event of the last frame that was [`Transcoded::Kline`].
    pub fn kline(&self) -> &KlineEvent {
        &self.kline
    }

    /// Why the last [`Transcoded::Malformed`] frame was (kept until the next one).
    pub fn malformed(&self) -> Option<&Malformed> {
        self.malformed.as_ref()
    }

    /// Parses one envelope from any serde deserializer (the decode bench compares crates with
    /// it): `Ok(None)` for a frame that is not market data. Follow with [`Transcoder::encode`].
    pub fn parse<'de, D: Deserializer<'de>>(
        &mut self,
        deserializer: D,
    ) -> Result<Option<Head<'de>>, D::Error> {
        self.scratch.clear();
        deserializer.deserialize_map(EnvelopeVisitor {
            scratch: &mut self.scratch,
        })
    }

    /// Encodes a parsed event as its SBE frame, written in place in `pool`.
    pub fn encode(&mut self, head: &Head<'_>, now_us: i64, pool: &mut FramePool) -> Transcoded {
        let kind = match head.stream {
            JsonStream::Market(kind) => kind,
            JsonStream::Kline(interval) => return self.take_kline(head.symbol, interval),
        };
        let mut symbol = [0u8; SYMBOL_BYTES_MAX];
        let Some(symbol) = symbol.get_mut(..head.symbol.len()) else {
            return self.bad("a symbol longer than 255 bytes");
        };
        for (to, from) in symbol.iter_mut().zip(head.symbol.bytes()) {
            *to = from.to_ascii_uppercase();
        }
        let symbol: &[u8] = symbol;
        let scratch = &self.scratch;
        let frame = match kind {
            StreamKind::Trade => pool.frame(TRADE_FRAME_BYTES + symbol.len(), |out| {
                put_trade(out, scratch, symbol)
            }),
            StreamKind::BestBidAsk => pool.frame(BBO_FRAME_BYTES + symbol.len(), |out| {
                put_bbo(out, scratch, symbol, now_us)
            }),
            StreamKind::Depth => {
                let len = DIFF_FIXED_BYTES + scratch.levels_bytes() + symbol.len();
                pool.frame(len, |out| put_diff(out, scratch, symbol))
            }
            StreamKind::Depth20 => {
                let len = SNAPSHOT_FIXED_BYTES + scratch.levels_bytes() + symbol.len();
                pool.frame(len, |out| put_snapshot(out, scratch, symbol, now_us))
            }
        };
        match frame {
            Some(frame) => Transcoded::Frame(frame),
            None => self.bad("a field is missing, or a value does not fit its SBE field"),
        }
    }

    fn bad(&mut self, why: &'static str) -> Transcoded {
        self.malformed = Some(Malformed::Convert(why));
        Transcoded::Malformed
    }

    /// The parsed kline into [`Transcoder::kline`].
    fn take_kline(&mut self, symbol: &str, interval: Interval) -> Transcoded {
        match self.scratch.kline.event(symbol, interval) {
            Ok(event) => {
                self.kline = event;
                Transcoded::Kline
            }
            Err(why) => self.bad(why),
        }
    }
}

/// Encoding into the pool: the frame is written in place and handed out whole, or abandoned.
trait Arena {
    fn frame(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<usize, Bad>,
    ) -> Option<Bytes>;
}

impl Arena for FramePool {
    fn frame(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<usize, Bad>,
    ) -> Option<Bytes> {
        let buf = self.start(len);
        // Within the room `start` made: no allocation.
        buf.resize(len, 0);
        match write(&mut buf[..]) {
            Ok(written) => {
                buf.truncate(written);
                Some(self.finish())
            }
            Err(Bad) => {
                self.cancel();
                None
            }
        }
    }
}

/// A value that does not convert, or an encode that failed.
struct Bad;

impl From<EncodeError> for Bad {
    fn from(_: EncodeError) -> Bad {
        Bad
    }
}

/// What the envelope and payload said, besides the depth levels (in the scratch).
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    /// The stream.
    pub stream: JsonStream,
    /// The stream name's symbol (lower case).
    pub symbol: &'a str,
}

/// What a JSON stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonStream {
    /// A market-data stream with an SBE form.
    Market(StreamKind),
    /// `kline_<interval>`.
    Kline(Interval),
}

impl JsonStream {
    /// The stream of a JSON stream name's suffix ([`json_kind`], or `kline_<interval>`).
    pub fn of(suffix: &str) -> Option<JsonStream> {
        if let Some(kind) = json_kind(suffix) {
            return Some(JsonStream::Market(kind));
        }
        let interval = Interval::of(suffix.strip_prefix("kline_")?)?;
        Some(JsonStream::Kline(interval))
    }
}

/// Every field the four payloads have, filled as parsed; reused between frames.
#[derive(Default)]
struct Scratch {
    event_ms: Option<i64>,
    trade_ms: Option<i64>,
    id: Option<i64>,
    first_id: Option<i64>,
    maker: Option<bool>,
    price: Option<Dec>,
    qty: Option<Dec>,
    bid: (Option<Dec>, Option<Dec>),
    ask: (Option<Dec>, Option<Dec>),
    bids: Levels,
    asks: Levels,
    kline: KlineScratch,
}

/// A kline payload's fields, as parsed.
#[derive(Default)]
struct KlineScratch {
    event_ms: Option<i64>,
    open_ms: Option<i64>,
    close_ms: Option<i64>,
    /// `i` named the stream's interval.
    interval_agrees: Option<bool>,
    first_id: Option<i64>,
    last_id: Option<i64>,
    trades: Option<u64>,
    closed: Option<bool>,
    /// `o`, `h`, `l`, `c`.
    prices: [Option<i128>; 4],
    /// `v`, `q`, `V`, `Q`.
    volumes: [Option<i128>; 4],
}

impl KlineScratch {
    /// The event, every field present and the candle's times its interval's.
    fn event(&self, symbol: &str, interval: Interval) -> Result<KlineEvent, &'static str> {
        const MISSING: &str =
            "a kline field is missing (t, T, i, f, L, o, h, l, c, v, n, x, q, V, Q)";
        let need = |v: Option<i64>| v.ok_or(MISSING);
        let [open, high, low, close] = self.prices.map(|p| p.ok_or(MISSING));
        let [volume, quote, buy, buy_quote] = self.volumes.map(|v| v.ok_or(MISSING));
        if !self.interval_agrees.ok_or(MISSING)? {
            return Err("the kline's interval (i) is not its stream's");
        }
        let open_ms = need(self.open_ms)?;
        let close_ms = need(self.close_ms)?;
        if interval.open_of(open_ms) != open_ms
            || close_ms != open_ms.saturating_add(interval.ms - 1)
        {
            return Err("the kline's open and close times (t, T) are not an interval's");
        }
        if symbol.len() > KLINE_SYMBOL_MAX {
            return Err("a kline symbol longer than 32 bytes");
        }
        let mut name = [0u8; KLINE_SYMBOL_MAX];
        for (to, from) in name.iter_mut().zip(symbol.bytes()) {
            *to = from.to_ascii_uppercase();
        }
        Ok(KlineEvent {
            symbol: name,
            // At most KLINE_SYMBOL_MAX (32).
            symbol_len: symbol.len() as u8,
            interval,
            closed: self.closed.ok_or(MISSING)?,
            event_ms: need(self.event_ms)?,
            candle: Candle {
                open_ms,
                close_ms,
                open: open?,
                high: high?,
                low: low?,
                close: close?,
                volume: volume?,
                quote_volume: quote?,
                taker_buy_volume: buy?,
                taker_buy_quote_volume: buy_quote?,
                trades: self.trades.ok_or(MISSING)?,
                first_id: need(self.first_id)?,
                last_id: need(self.last_id)?,
                inexact: false,
                missing_trades: 0,
            },
        })
    }
}

/// One side's levels as parsed, and the most decimals seen, so the frame's exponent keeps
/// every value exact.
#[derive(Default)]
struct Levels {
    levels: Vec<(Dec, Dec)>,
    seen: bool,
}

impl Scratch {
    fn clear(&mut self) {
        let (mut bids, mut asks) = (
            std::mem::take(&mut self.bids),
            std::mem::take(&mut self.asks),
        );
        bids.levels.clear();
        asks.levels.clear();
        (bids.seen, asks.seen) = (false, false);
        *self = Scratch {
            bids,
            asks,
            ..Scratch::default()
        };
    }

    fn levels_bytes(&self) -> usize {
        LEVEL_BYTES * (self.bids.levels.len() + self.asks.levels.len())
    }

    /// The decimals of the depth levels' prices and quantities.
    fn level_decimals(&self) -> (u8, u8) {
        let all = self.bids.levels.iter().chain(&self.asks.levels);
        all.fold((DECIMALS_MIN, DECIMALS_MIN), |(p, q), (price, qty)| {
            (p.max(price.decimals), q.max(qty.decimals))
        })
    }
}

fn exponent(decimals: u8) -> i8 {
    // DECIMALS_MAX (18) keeps this in range.
    -(decimals as i8)
}

fn need<T>(value: Option<T>) -> Result<T, Bad> {
    value.ok_or(Bad)
}

fn put_trade(out: &mut [u8], s: &Scratch, symbol: &[u8]) -> Result<usize, Bad> {
    let (price, qty) = (need(s.price)?, need(s.qty)?);
    let p = price.decimals.max(DECIMALS_MIN);
    let q = qty.decimals.max(DECIMALS_MIN);
    let maker = if need(s.maker)? {
        BoolEnum::True
    } else {
        BoolEnum::False
    };
    let mut encoder = TradesStreamEventEncoder::wrap(out)?;
    encoder
        .event_time(need(s.event_ms)?.checked_mul(1000).ok_or(Bad)?)
        .transact_time(need(s.trade_ms)?.checked_mul(1000).ok_or(Bad)?)
        .price_exponent(exponent(p))
        .qty_exponent(exponent(q));
    let mut group = encoder.trades(1)?;
    group
        .next_entry()?
        .id(need(s.id)?)
        .price(need(price.at(p))?)
        .qty(need(qty.at(q))?)
        .is_buyer_maker(maker);
    encoder.symbol(symbol)?;
    Ok(encoder.finish())
}

fn put_bbo(out: &mut [u8], s: &Scratch, symbol: &[u8], now_us: i64) -> Result<usize, Bad> {
    let (bid_price, bid_qty) = (need(s.bid.0)?, need(s.bid.1)?);
    let (ask_price, ask_qty) = (need(s.ask.0)?, need(s.ask.1)?);
    let p = bid_price.decimals.max(ask_price.decimals).max(DECIMALS_MIN);
    let q = bid_qty.decimals.max(ask_qty.decimals).max(DECIMALS_MIN);
    let mut encoder = BestBidAskStreamEventEncoder::wrap(out)?;
    encoder
        .event_time(now_us)
        .book_update_id(need(s.id)?)
        .price_exponent(exponent(p))
        .qty_exponent(exponent(q))
        .bid_price(need(bid_price.at(p))?)
        .bid_qty(need(bid_qty.at(q))?)
        .ask_price(need(ask_price.at(p))?)
        .ask_qty(need(ask_qty.at(q))?);
    encoder.symbol(symbol)?;
    Ok(encoder.finish())
}

/// Writes one side into a group encoder begun with its count (the four depth group encoders
/// are distinct generated types, hence a macro).
macro_rules! put_levels {
    ($group:expr, $levels:expr, $p:expr, $q:expr) => {{
        let mut group = $group;
        for &(price, qty) in $levels {
            group
                .next_entry()?
                .price(need(price.at($p))?)
                .qty(need(qty.at($q))?);
        }
    }};
}

fn count(levels: &Levels) -> Result<u16, Bad> {
    if !levels.seen {
        return Err(Bad);
    }
    u16::try_from(levels.levels.len()).map_err(|_| Bad)
}

fn put_diff(out: &mut [u8], s: &Scratch, symbol: &[u8]) -> Result<usize, Bad> {
    let (p, q) = s.level_decimals();
    let (bids, asks) = (count(&s.bids)?, count(&s.asks)?);
    let mut encoder = DepthDiffStreamEventEncoder::wrap(out)?;
    encoder
        .event_time(need(s.event_ms)?.checked_mul(1000).ok_or(Bad)?)
        .first_book_update_id(need(s.first_id)?)
        .last_book_update_id(need(s.id)?)
        .price_exponent(exponent(p))
        .qty_exponent(exponent(q));
    put_levels!(encoder.bids(bids)?, &s.bids.levels, p, q);
    put_levels!(encoder.asks(asks)?, &s.asks.levels, p, q);
    encoder.symbol(symbol)?;
    Ok(encoder.finish())
}

fn put_snapshot(out: &mut [u8], s: &Scratch, symbol: &[u8], now_us: i64) -> Result<usize, Bad> {
    let (p, q) = s.level_decimals();
    let (bids, asks) = (count(&s.bids)?, count(&s.asks)?);
    let mut encoder = DepthSnapshotStreamEventEncoder::wrap(out)?;
    encoder
        .event_time(now_us)
        .book_update_id(need(s.id)?)
        .price_exponent(exponent(p))
        .qty_exponent(exponent(q));
    put_levels!(encoder.bids(bids)?, &s.bids.levels, p, q);
    put_levels!(encoder.asks(asks)?, &s.asks.levels, p, q);
    encoder.symbol(symbol)?;
    Ok(encoder.finish())
}

/// The stream kind of a JSON stream name's suffix (`trade`, `bookTicker`, `depth@100ms`,
/// `depth20@100ms`, and the 1000 ms and bare forms of both depths).
pub fn json_kind(suffix: &str) -> Option<StreamKind> {
    match suffix {
        "trade" => Some(StreamKind::Trade),
        "bookTicker" => Some(StreamKind::BestBidAsk),
        "depth" | "depth@100ms" | "depth@1000ms" => Some(StreamKind::Depth),
        "depth20" | "depth20@100ms" | "depth20@1000ms" => Some(StreamKind::Depth20),
        _ => None,
    }
}

/// The JSON stream name hotpath subscribes for a stream kind's suffix.
pub fn json_suffix(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Trade => "trade",
        StreamKind::BestBidAsk => "bookTicker",
        StreamKind::Depth => "depth@100ms",
        StreamKind::Depth20 => "depth20@100ms",
    }
}

/// The JSON stream name for an SBE stream name (`btcusdt@bestBidAsk` -> `btcusdt@bookTicker`);
/// other text is returned as it is.
pub fn json_name(name: &str) -> String {
    match name
        .rsplit_once('@')
        .and_then(|(symbol, suffix)| Some((symbol, StreamKind::from_suffix(suffix)?)))
    {
        Some((symbol, kind)) => format!("{symbol}@{}", json_suffix(kind)),
        None => name.to_string(),
    }
}

/// The JSON stream names of a connection's SBE stream names: each symbol's trade stream is
/// followed by its kline streams of `intervals` (`btcusdt@kline_1m`).
pub fn json_names(streams: &[String], intervals: &[Interval]) -> Vec<String> {
    let mut names = Vec::with_capacity(streams.len() * (1 + intervals.len()));
    for stream in streams {
        names.push(json_name(stream));
        if let Some(symbol) = trade_symbol(stream) {
            names.extend(intervals.iter().map(|i| kline_name(symbol, *i)));
        }
    }
    names
}

/// The symbol of an SBE trade stream name (`btcusdt@trade`).
fn trade_symbol(name: &str) -> Option<&str> {
    name.strip_suffix("@trade")
        .filter(|s| !s.is_empty() && !s.contains('@'))
}

/// The kline stream name of `symbol` (lower case) and `interval`.
pub fn kline_name(symbol: &str, interval: Interval) -> String {
    format!("{symbol}@kline_{}", interval.name)
}

/// A SUBSCRIBE/UNSUBSCRIBE request with its SBE stream names replaced by the JSON ones, each
/// trade stream followed by its kline streams of `intervals` (so a symbol added or removed at
/// run time gets or loses them with it).
pub fn json_control(text: &str, intervals: &[Interval]) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    // Stream names are the quoted strings containing '@'.
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let close = rest.find('"').unwrap_or(rest.len());
        let quoted = &rest[..close];
        if quoted.contains('@') {
            out.push_str(&json_name(quoted));
            if let Some(symbol) = trade_symbol(quoted) {
                for interval in intervals {
                    out.push_str("\",\"");
                    out.push_str(&kline_name(symbol, *interval));
                }
            }
        } else {
            out.push_str(quoted);
        }
        rest = &rest[close..];
        if let Some(after) = rest.strip_prefix('"') {
            out.push('"');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

// ---- serde visitors: borrowed keys and values, levels straight into the scratch ----

struct EnvelopeVisitor<'s> {
    scratch: &'s mut Scratch,
}

impl<'de> Visitor<'de> for EnvelopeVisitor<'_> {
    type Value = Option<Head<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a combined-stream envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut head = None;
        let mut data = false;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "stream" if head.is_none() && !data => {
                    let name: &'de str = map.next_value()?;
                    if name.starts_with('!') {
                        return drain(map).map(|()| None);
                    }
                    let (symbol, suffix) = name
                        .split_once('@')
                        .ok_or_else(|| de::Error::custom("stream name without '@'"))?;
                    let stream = JsonStream::of(suffix)
                        .ok_or_else(|| de::Error::custom("unknown stream kind"))?;
                    head = Some(Head { stream, symbol });
                }
                "data" => {
                    // Binance sends "stream" first; the payload's form depends on it.
                    let Some(Head { stream, .. }) = head else {
                        return Err(de::Error::custom("data before stream"));
                    };
                    match stream {
                        JsonStream::Market(kind) => map.next_value_seed(PayloadSeed {
                            kind,
                            scratch: self.scratch,
                        })?,
                        JsonStream::Kline(interval) => map.next_value_seed(KlinePayloadSeed {
                            interval,
                            kline: &mut self.scratch.kline,
                        })?,
                    }
                    data = true;
                }
                "result" | "id" | "code" | "msg" | "e" if head.is_none() => {
                    // Not a combined-stream event: a control reply or a raw event.
                    map.next_value::<IgnoredAny>()?;
                    return drain(map).map(|()| None);
                }
                _ if head.is_none() => return Err(de::Error::custom("not an envelope")),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !data {
            return Err(de::Error::custom("no data"));
        }
        Ok(head)
    }
}

fn drain<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct PayloadSeed<'s> {
    kind: StreamKind,
    scratch: &'s mut Scratch,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Binance market-data payload")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let s = self.scratch;
        let depth = matches!(self.kind, StreamKind::Depth | StreamKind::Depth20);
        while let Some(key) = map.next_key::<&'de str>()? {
            match (self.kind, key) {
                (_, "E") => s.event_ms = Some(map.next_value()?),
                (StreamKind::Trade, "T") => s.trade_ms = Some(map.next_value()?),
                (StreamKind::Trade, "t") | (_, "u") | (StreamKind::Depth20, "lastUpdateId") => {
                    s.id = Some(map.next_value()?)
                }
                (StreamKind::Depth, "U") => s.first_id = Some(map.next_value()?),
                (StreamKind::Trade, "m") => s.maker = Some(map.next_value()?),
                (StreamKind::Trade, "p") => s.price = Some(decimal(map.next_value()?)?),
                (StreamKind::Trade, "q") => s.qty = Some(decimal(map.next_value()?)?),
                (StreamKind::BestBidAsk, "b") => s.bid.0 = Some(decimal(map.next_value()?)?),
                (StreamKind::BestBidAsk, "B") => s.bid.1 = Some(decimal(map.next_value()?)?),
                (StreamKind::BestBidAsk, "a") => s.ask.0 = Some(decimal(map.next_value()?)?),
                (StreamKind::BestBidAsk, "A") => s.ask.1 = Some(decimal(map.next_value()?)?),
                (_, "b" | "bids") if depth => map.next_value_seed(LevelsSeed(&mut s.bids))?,
                (_, "a" | "asks") if depth => map.next_value_seed(LevelsSeed(&mut s.asks))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

fn decimal<E: de::Error>(text: &str) -> Result<Dec, E> {
    Dec::parse(text).ok_or_else(|| E::custom("not an exact decimal"))
}

/// A kline event's payload: `E`, and the candle `k` (other fields ignored).
struct KlinePayloadSeed<'s> {
    interval: Interval,
    kline: &'s mut KlineScratch,
}

impl<'de> DeserializeSeed<'de> for KlinePayloadSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KlinePayloadSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Binance kline event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "E" => self.kline.event_ms = Some(map.next_value()?),
                "k" => map.next_value_seed(CandleSeed {
                    interval: self.interval,
                    kline: &mut *self.kline,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A kline event's `k` object.
struct CandleSeed<'s> {
    interval: Interval,
    kline: &'s mut KlineScratch,
}

impl<'de> DeserializeSeed<'de> for CandleSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CandleSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a kline object (k)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let k = self.kline;
        while let Some(key) = map.next_key::<&'de str>()? {
            let at = match key {
                "o" | "v" => 0,
                "h" | "q" => 1,
                "l" | "V" => 2,
                "c" | "Q" => 3,
                _ => 4,
            };
            match key {
                "t" => k.open_ms = Some(map.next_value()?),
                "T" => k.close_ms = Some(map.next_value()?),
                "i" => {
                    k.interval_agrees = Some(map.next_value::<&'de str>()? == self.interval.name)
                }
                "f" => k.first_id = Some(map.next_value()?),
                "L" => k.last_id = Some(map.next_value()?),
                "n" => k.trades = Some(map.next_value()?),
                "x" => k.closed = Some(map.next_value()?),
                "o" | "h" | "l" | "c" => {
                    k.prices[at] = Some(kline_decimal(key, map.next_value()?)?)
                }
                "v" | "q" | "V" | "Q" => {
                    k.volumes[at] = Some(kline_decimal(key, map.next_value()?)?)
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A kline's decimal text as a mantissa at [`crate::kline::EXPONENT`], exactly.
fn kline_decimal<E: de::Error>(key: &str, text: &str) -> Result<i128, E> {
    crate::kline::parse(text).ok_or_else(|| {
        E::custom(format_args!(
            "kline field {key}: {text:?} is not an exact non-negative decimal of at most 18 decimals"
        ))
    })
}

struct LevelsSeed<'s>(&'s mut Levels);

impl<'de> DeserializeSeed<'de> for LevelsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for LevelsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of [price, quantity] levels")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.seen = true;
        while let Some((price, qty)) = seq.next_element::<(&'de str, &'de str)>()? {
            self.0.levels.push((decimal(price)?, decimal(qty)?));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
